"""Bindings: every place in a device's configuration that names a certificate, as data.

A binding is a kind, a location and a certificate name: "SSL/TLS service profile GP-Portal-TLS
uses portal-example-com". A kind says where its consumers live under the certificate store's
scope, which node of each names the certificate, and whether the agent repoints it (a
*managed* kind) or only respects it (a reference that keeps an old object from being
deleted). Finding, counting and repointing are the same code for every kind: a new consumer
is a new entry in KINDS (panorama-ha-bindings.md §4 lists the candidates).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import List, Optional, Tuple
from xml.sax.saxutils import escape, quoteattr


@dataclass(frozen=True)
class BindingKind:
    """Where consumers of one kind name a certificate, relative to the store's scope
    (`/config/shared` or a vsys entry)."""

    name: str  # how messages and status name it: "ssl-tls-service-profile"
    title: str  # how a plan says it: "SSL/TLS service profile"
    consumers: str  # path to the consumer elements: "ssl-tls-service-profile/entry"
    value: str  # path, under a consumer, to the node(s) naming the certificate
    attribute: Optional[str] = None  # the certificate name is this attribute (else the text)
    managed: bool = False  # the agent points it at a new certificate
    # A consumer the agent may create when a profile names it and the device has none:
    # the consumer's XML around `{certificate}`.
    template: Optional[str] = None

    def element(self, certificate: str) -> str:
        """What `set` writes at the consumer's xpath to point it at `certificate`."""
        if self.attribute is not None or "/" in self.value:
            raise ValueError(f"{self.name}: not a kind the agent repoints")
        return f"<{self.value}>{escape(certificate)}</{self.value}>"

    def created(self, location: str, certificate: str) -> Tuple[str, str]:
        """(parent path, XML) that creates consumer `location` pointing at `certificate`."""
        if self.template is None:
            raise ValueError(f"{self.name}: the agent does not create these")
        parent = self.consumers.rsplit("/entry", 1)[0]
        return parent, self.template.format(name=_attribute(location),
                                            certificate=escape(certificate))


SSL_TLS_SERVICE_PROFILE = BindingKind(
    name="ssl-tls-service-profile", title="SSL/TLS service profile",
    consumers="ssl-tls-service-profile/entry",
    value="certificate", managed=True,
    template=("<entry name={name}><protocol-settings><min-version>tls1-2</min-version>"
              "<max-version>max</max-version></protocol-settings>"
              "<certificate>{certificate}</certificate></entry>"))

# The kinds the agent reads. Only managed kinds are repointed; the others keep the object
# they name (and are listed as its users) until an administrator changes them.
KINDS: Tuple[BindingKind, ...] = (
    SSL_TLS_SERVICE_PROFILE,
    BindingKind(name="certificate-profile", title="certificate profile",
                consumers="certificate-profile/entry", value="CA/entry", attribute="name"),
    BindingKind(name="ssl-decrypt trusted-root-CA", title="trusted root CA",
                consumers="ssl-decrypt", value="trusted-root-CA/member"),
    BindingKind(name="ssl-decrypt forward-trust-certificate", title="forward trust certificate",
                consumers="ssl-decrypt", value="forward-trust-certificate/rsa"),
    BindingKind(name="ssl-decrypt forward-trust-certificate", title="forward trust certificate",
                consumers="ssl-decrypt", value="forward-trust-certificate/ecdsa"),
    BindingKind(name="ssl-decrypt forward-untrust-certificate",
                title="forward untrust certificate", consumers="ssl-decrypt",
                value="forward-untrust-certificate/rsa"),
    BindingKind(name="ssl-decrypt forward-untrust-certificate",
                title="forward untrust certificate", consumers="ssl-decrypt",
                value="forward-untrust-certificate/ecdsa"),
)


@dataclass(frozen=True)
class Binding:
    """One consumer naming one certificate."""

    kind: BindingKind
    location: str  # the consumer's name ("" for a consumer that is a single node)
    certificate: str
    # "": in the certificate's own scope. Otherwise where else the consumer sits (e.g.
    # "template-stack S", a scope merged with the certificate's on the firewalls): it holds
    # the object, but is never repointed.
    where: str = ""

    def describe(self) -> str:
        return " ".join(p for p in (self.where and f"{self.where}:", self.kind.name,
                                    self.location) if p)


def find_bindings(scope: Optional[ET.Element], where: str = "") -> List[Binding]:
    """Every binding of every known kind under a store's scope element (`where`: see
    Binding)."""
    found: List[Binding] = []
    if scope is None:
        return found
    for kind in KINDS:
        for consumer in scope.findall(kind.consumers):
            location = consumer.get("name", "")
            for node in consumer.findall(kind.value):
                name = node.get(kind.attribute, "") if kind.attribute else \
                    (node.text or "").strip()
                found.append(Binding(kind, location, name, where))
        if kind.managed and not where:
            # A managed consumer that names no certificate yet is still one to know about.
            found += [Binding(kind, c.get("name", ""), "") for c in scope.findall(kind.consumers)
                      if not c.findall(kind.value)]
    return found


def consumer_xpath(store: str, kind: BindingKind, location: str) -> str:
    return f"{store}/{kind.consumers}[@name={_literal(location)}]"


def _literal(value: str) -> str:
    """Quote a name for an xpath predicate; names are validated, but be safe anyway."""
    return f"'{value}'" if "'" not in value else f'"{value}"'


def _attribute(value: str) -> str:
    return quoteattr(value)
