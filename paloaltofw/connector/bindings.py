"""Bindings: every place in a device's configuration that names a certificate, as data.

A binding is a kind, a scope, a location and a name: "SSL/TLS service profile GP-Portal-TLS
in shared uses portal-example-com". A kind says where its consumers live, which node of each
holds the name, what that name is (a certificate, or an SSL/TLS service profile that in turn
names one), and whether the agent repoints it (a *managed* kind) or only respects it (a
reference that keeps an old object from being deleted). Finding, counting and repointing are
the same code for every kind: a new consumer is a new entry in KINDS.

Where consumers live (panorama-ha-bindings.md §4, §5):

* `store` kinds sit in a certificate store's scope: `/config/shared` and each vsys. A vsys
  object may name a shared certificate, so a shared certificate's consumers are looked for
  in shared and in every vsys; a vsys certificate's only in its vsys.
* `vsys` kinds sit only in a vsys: decryption rules, GlobalProtect portals and gateways.
* `device` kinds sit under `/config/devices/entry[@name='localhost.localdomain']`: IKE
  gateways (`network/ike`) and the management interface (`deviceconfig/system`).

A template on Panorama holds the same tree under its `config` (§1.1).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from html import escape  # &, <, > (and quotes): xml.sax.saxutils would load urllib.request
from typing import Iterable, List, Optional, Tuple

STORE, VSYS, DEVICE = "store", "vsys", "device"  # where a kind's consumers live
DEVICE_SCOPE = "device"  # the scope label of device-level consumers
PEER_SCOPE = "peer"  # an HA pair's passive peer's own device-level settings


@dataclass(frozen=True)
class BindingKind:
    """Where consumers of one kind name a certificate (or a profile), relative to their
    scope's element."""

    name: str  # how messages and status name it: "ssl-tls-service-profile"
    title: str  # how a plan says it: "SSL/TLS service profile"
    consumers: str  # path to the consumer elements: "ssl-tls-service-profile/entry"
    value: str  # path, under a consumer, to the node(s) holding the name
    attribute: Optional[str] = None  # the name is this attribute (else the text)
    managed: bool = False  # the agent points it at a new certificate
    # A consumer the agent may create when a profile names it and the device has none:
    # the consumer's XML around `{certificate}`.
    template: Optional[str] = None
    lives: str = STORE  # STORE, VSYS or DEVICE (module docstring)
    via_profile: bool = False  # it names an SSL/TLS service profile, not a certificate
    listed: bool = False  # a <member> list: several certificates, one node each

    def element(self, name: str) -> str:
        """What `set` writes at the consumer's xpath to make it name `name`: the value path
        spelled out as nested elements (a `set` replaces the leaf)."""
        if self.attribute is not None or self.listed:
            raise ValueError(f"{self.name}: not a kind the agent sets by value")
        tags = self.value.split("/")
        return "".join(f"<{t}>" for t in tags) + escape(name) + \
            "".join(f"</{t}>" for t in reversed(tags))

    def list_path(self) -> str:
        """For a listed kind: the node holding the <member> list, under the consumer."""
        return self.value.rsplit("/", 1)[0]

    def list_element(self, names: Iterable[str]) -> str:
        tag = self.list_path().rsplit("/", 1)[-1]
        return f"<{tag}>" + "".join(f"<member>{escape(n)}</member>" for n in names) + \
            f"</{tag}>"

    def created(self, location: str, certificate: str) -> Tuple[str, str]:
        """(parent path, XML) that creates consumer `location` pointing at `certificate`."""
        if self.template is None:
            raise ValueError(f"{self.name}: the agent does not create these")
        parent = self.consumers.rsplit("/entry", 1)[0]
        return parent, self.template.format(name=_attribute(location),
                                            certificate=escape(certificate))

    @property
    def single(self) -> bool:
        """One consumer node (the management interface), not a list of named entries."""
        return not self.consumers.endswith("/entry")


SSL_TLS_SERVICE_PROFILE = BindingKind(
    name="ssl-tls-service-profile", title="SSL/TLS service profile",
    consumers="ssl-tls-service-profile/entry",
    value="certificate", managed=True,
    template=("<entry name={name}><protocol-settings><min-version>tls1-2</min-version>"
              "<max-version>max</max-version></protocol-settings>"
              "<certificate>{certificate}</certificate></entry>"))

# SSL inbound inspection names its server certificate as text before PAN-OS 10.2 and as a
# <certificates><member> list from 10.2 (pan-os-python #521, pan-os-ansible #401). The agent
# writes the form the rule already has, which is the form the device's version takes.
INBOUND_INSPECTION = BindingKind(
    name="decryption-rule", title="decryption rule (SSL inbound inspection)",
    consumers="rulebase/decryption/rules/entry", value="type/ssl-inbound-inspection",
    managed=True, lives=VSYS)
INBOUND_INSPECTION_LIST = BindingKind(
    name="decryption-rule", title="decryption rule (SSL inbound inspection)",
    consumers="rulebase/decryption/rules/entry",
    value="type/ssl-inbound-inspection/certificates/member", managed=True, lives=VSYS,
    listed=True)
IKE_GATEWAY = BindingKind(
    name="ike-gateway", title="IKE gateway", consumers="network/ike/gateway/entry",
    value="authentication/certificate/local-certificate/name", managed=True, lives=DEVICE)
GLOBALPROTECT_PORTAL = BindingKind(
    name="globalprotect-portal", title="GlobalProtect portal",
    consumers="global-protect/global-protect-portal/entry",
    value="portal-config/ssl-tls-service-profile", managed=True, lives=VSYS,
    via_profile=True)
GLOBALPROTECT_GATEWAY = BindingKind(
    name="globalprotect-gateway", title="GlobalProtect gateway",
    consumers="global-protect/global-protect-gateway/entry", value="ssl-tls-service-profile",
    managed=True, lives=VSYS, via_profile=True)
# Its selection (deviceconfig/system) does not sync in an HA pair (§3.3): set on each peer.
MANAGEMENT_UI = BindingKind(
    name="management-ui", title="management interface", consumers="deviceconfig/system",
    value="ssl-tls-service-profile", managed=True, lives=DEVICE, via_profile=True)

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
    INBOUND_INSPECTION,
    INBOUND_INSPECTION_LIST,
    IKE_GATEWAY,
    GLOBALPROTECT_PORTAL,
    GLOBALPROTECT_GATEWAY,
    MANAGEMENT_UI,
)


@dataclass(frozen=True)
class Binding:
    """One consumer naming one certificate (or, `kind.via_profile`, one SSL/TLS profile)."""

    kind: BindingKind
    location: str  # the consumer's name ("" for a consumer that is a single node)
    certificate: str  # the name it holds
    # The scope it sits in: "shared", "vsys1", "panorama", "device" ("" in tests: shared).
    scope: str = ""
    # "": in the device the certificate is on. Otherwise where else the consumer sits (e.g.
    # "template-stack S", a scope merged with the certificate's on the firewalls): it holds
    # the object, but is never repointed.
    where: str = ""

    def describe(self) -> str:
        """How messages name the consumer: `ssl-tls-service-profile GP-Portal-TLS`, and for
        one in a vsys `vsys2 ssl-tls-service-profile GP-Portal-TLS`."""
        vsys = self.scope if self.scope.startswith("vsys") else ""
        return " ".join(p for p in (self.where and f"{self.where}:", vsys, self.kind.name,
                                    self.location) if p)

    def consumer(self) -> str:
        """describe(), naming a single-node consumer (the management interface) by its kind,
        and an HA peer's own by whose it is."""
        if self.scope == PEER_SCOPE:
            return f"{self.kind.title} of the HA peer"
        return self.describe() if self.location else self.kind.title


def find_bindings(scope: Optional[ET.Element], where: str = "", label: str = "",
                  lives: Iterable[str] = (STORE,)) -> List[Binding]:
    """Every binding of the kinds that live in `lives` under one scope element (`label`
    names it; `where`: see Binding)."""
    found: List[Binding] = []
    if scope is None:
        return found
    wanted = set(lives)
    for kind in KINDS:
        if kind.lives not in wanted:
            continue
        consumers = [scope.find(kind.consumers)] if kind.single else \
            scope.findall(kind.consumers)
        for consumer in (c for c in consumers if c is not None):
            location = consumer.get("name", "")
            for node in consumer.findall(kind.value):
                if kind.attribute:
                    name = node.get(kind.attribute, "")
                elif len(node):  # the list form's parent, read by the listed kind
                    continue
                else:
                    name = (node.text or "").strip()
                found.append(Binding(kind, location, name, label, where))
        if kind.managed and (kind.template or kind.via_profile) and not where:
            # A managed consumer that names nothing yet is still one to know about.
            found += [Binding(kind, c.get("name", ""), "", label)
                      for c in consumers if c is not None and not c.findall(kind.value)]
    return found


def consumer_xpath(root: str, kind: BindingKind, location: str) -> str:
    """The consumer's xpath under its scope's xpath `root`."""
    if kind.single:
        return f"{root}/{kind.consumers}"
    return f"{root}/{kind.consumers}[@name={_literal(location)}]"


def _literal(value: str) -> str:
    """Quote a name for an xpath predicate; names are validated, but be safe anyway."""
    return f"'{value}'" if "'" not in value else f'"{value}"'


def _attribute(value: str) -> str:
    return f'"{escape(value)}"'
