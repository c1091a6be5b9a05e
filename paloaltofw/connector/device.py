"""Devices: what the workflow asks of a certificate's home, behind one interface.

A device reads its inventory once (the certificates and every binding of its store's scope),
makes a key pair and CSR, imports certificates, points bindings at a certificate, deletes
objects and commits; it keeps its own view of its contents in step with each change, so the
workflow never edits that view. `Firewall` is the first implementation: one PAN-OS firewall,
its shared store or one vsys store. A Panorama template (a template path, a commit followed
by a push with per-device results), an HA pair (the active peer, then a sync check) or a
firewall reached through Panorama are further implementations of the same methods.
"""

from __future__ import annotations

import abc
import hashlib
import ipaddress
import logging
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional
from xml.sax.saxutils import escape

from cryptography import x509

from . import certs, http
from .bindings import (SSL_TLS_SERVICE_PROFILE, Binding, BindingKind, consumer_xpath,
                       find_bindings)
from .errors import AgentError, PanosError
from .panos import Target, XmlApi
from .settings import CertificateProfile, FirewallProfile

log = logging.getLogger(__name__)

DEVICE_XPATH = "/config/devices/entry[@name='localhost.localdomain']"


@dataclass(frozen=True)
class Notice:
    """A warning said once per `key` in a state directory (later runs log it at INFO)."""

    key: str
    message: str


@dataclass
class CertificateEntry:
    """A certificate object as the device holds it (panos.md §3.2)."""

    name: str
    has_key: bool
    cert: Optional[x509.Certificate] = None
    status: str = "valid"
    _facts: Optional[certs.Facts] = field(default=None, init=False, repr=False, compare=False)

    @property
    def facts(self) -> Optional[certs.Facts]:
        """Read from the certificate on first use. (Not functools.cached_property: before
        Python 3.12 it takes one lock for all instances, which the firewall threads contend
        for.) An entry belongs to one device's thread, so no lock is needed here."""
        if self._facts is None and self.cert is not None:
            self._facts = certs.Facts(self.cert)
        return self._facts

    @property
    def is_request(self) -> bool:
        """A key and CSR, no certificate: nothing can use it."""
        return self.has_key and self.cert is None


@dataclass
class DeviceView:
    """What the device holds in its candidate configuration, as one read showed it and as the
    device's own writes have changed it since."""

    certificates: Dict[str, CertificateEntry] = field(default_factory=dict)
    bindings: List[Binding] = field(default_factory=list)

    def references(self, certificate: str) -> List[Binding]:
        """Every consumer that names `certificate`."""
        return [b for b in self.bindings if b.certificate == certificate]

    def binding(self, kind: BindingKind, location: str) -> Optional[Binding]:
        return next((b for b in self.bindings if b.kind == kind and b.location == location),
                    None)

    def ca_by_fingerprint(self) -> Dict[bytes, str]:
        return {certs.fingerprint(e.cert): e.name for e in self.certificates.values()
                if e.cert is not None and not e.has_key}

    def anchors(self) -> List[x509.Certificate]:
        """CA certificates on the device, to complete a chain SCM sent short of its root."""
        return [e.cert for e in self.certificates.values()
                if e.cert is not None and not e.has_key and certs.is_ca(e.cert)]


class Device(abc.ABC):
    """A certificate store and the consumers that use it, on one device (or a pair, or a
    template): the interface the workflow uses."""

    name: str
    view: DeviceView

    @abc.abstractmethod
    def read(self) -> DeviceView:
        """Read the inventory (one request); later reads come from `view`."""

    @abc.abstractmethod
    def generate(self, name: str, profile: CertificateProfile) -> None:
        """Have the device make the key pair and CSR for `profile` under `name`."""

    @abc.abstractmethod
    def export_csr(self, name: str) -> str:
        """The CSR (PEM) of the request under `name`."""

    @abc.abstractmethod
    def import_certificate(self, name: str, cert: x509.Certificate) -> CertificateEntry:
        """Import `cert` under `name` (pairing with the key there, if any) and read it back."""

    @abc.abstractmethod
    def import_ca(self, name: str, cert: x509.Certificate) -> None:
        """Import a CA certificate (no key) under `name`."""

    @abc.abstractmethod
    def bind(self, kind: BindingKind, location: str, certificate: str) -> None:
        """Point consumer `location` of `kind` at `certificate` (creating it if the kind allows
        and the device has none)."""

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Delete the certificate object `name` (nothing may reference it)."""

    @abc.abstractmethod
    def commit(self) -> bool:
        """Commit the agent's own changes and wait for the result: True when a commit job
        succeeded, False when there was nothing to commit; raises PanosError (with the
        device's detail lines) when it failed."""

    @abc.abstractmethod
    def commit_text(self) -> str:
        """How the commit reads in a plan: `commit lab-fw-01 (partial, admin certbot)`."""

    @abc.abstractmethod
    def notices(self) -> List[Notice]:
        """What the administrator must fix about the device's own configuration, learnt
        during the run; each is said once per key (cron would mail it nightly otherwise)."""


class Firewall(Device):
    """A PAN-OS firewall's shared certificate store, or one vsys store (panos.md §3)."""

    def __init__(self, profile: FirewallProfile, sleep: Callable[[float], None] = time.sleep,
                 shared: Optional[http.Shared] = None,
                 stopping: Callable[[], bool] = lambda: False) -> None:
        self.profile = profile
        self.name = profile.name
        # With vsys, the CSR lands in (and imports go to) the vsys store; without, shared.
        self.api = XmlApi(profile, Target(vsys=profile.vsys), sleep=sleep, shared=shared,
                          stopping=stopping)
        self.store = f"{DEVICE_XPATH}/vsys/entry[@name='{profile.vsys}']" if profile.vsys \
            else "/config/shared"
        self.view = DeviceView()

    def notices(self) -> List[Notice]:
        if not self.api.stale_api_key:
            return []
        # The configured API key was refused and keygen made a new one: which field to change.
        fw = self.profile
        assert fw.api_key is not None
        digest = hashlib.sha256(fw.api_key.reveal().encode()).hexdigest()[:16]
        return [Notice(
            f"stale api_key {fw.name} {digest}",
            f"firewall {fw.name}: the firewall refuses the api_key of {fw.path} "
            f"({fw.name}.api_key; a password change or key expiry invalidates keys), so the "
            f"agent generates a key from username '{fw.username}' on every run instead. "
            "Replace api_key with a new key for that user (type=keygen), or delete api_key to "
            "always log in with username and password. (Said once for this key.)")]

    # -- reading --------------------------------------------------------------------------

    def read(self) -> DeviceView:
        """One `get` of the store's scope: its certificates and every binding in it."""
        self.view = parse_view(self.api.get(self.store))
        return self.view

    # -- certificates -------------------------------------------------------------------------

    def generate(self, name: str, profile: CertificateProfile) -> None:
        """`request certificate generate ... signed-by external` (panos.md §3.3); the target's
        vsys places it (without one the CSR goes to shared)."""
        parts = [f"<certificate-name>{escape(name)}</certificate-name>",
                 f"<name>{escape(profile.common_name)}</name>"]
        algorithm, size = ("RSA", "rsa-nbits") if profile.key.algorithm == "RSA" else \
            ("ECDSA", "ecdsa-nbits")
        parts.append(f"<algorithm><{algorithm}><{size}>{profile.key.bits}</{size}>"
                     f"</{algorithm}></algorithm>")
        parts.append(f"<digest>{profile.digest}</digest>")
        subject = profile.subject
        for tag, value in (("country-code", subject.country), ("state", subject.state),
                           ("locality", subject.locality),
                           ("organization", subject.organization), ("email", subject.email)):
            if value:
                parts.append(f"<{tag}>{escape(value)}</{tag}>")
        if subject.organizational_unit:
            parts.append("<organization-unit>" + "".join(
                f"<member>{escape(u)}</member>" for u in subject.organizational_unit) +
                "</organization-unit>")
        dns = [n for n in profile.names if not _is_ip(n)]
        ips = [n for n in profile.names if _is_ip(n)]
        if dns:
            parts.append("<hostname>" + "".join(f"<member>{escape(n)}</member>" for n in dns) +
                         "</hostname>")
        if ips:
            parts.append("<ip>" + "".join(f"<member>{n}</member>" for n in ips) + "</ip>")
        parts.append("<signed-by>external</signed-by><ca>no</ca>")
        self.api.op("<request><certificate><generate>" + "".join(parts) +
                    "</generate></certificate></request>", write=True, targeted=True)
        self.view.certificates[name] = CertificateEntry(name, has_key=True)

    def export_csr(self, name: str) -> str:
        text = self.api.export("certificate", name, "pkcs10").decode("ascii", "replace")
        if "CERTIFICATE REQUEST" not in text:
            raise PanosError(f"firewall {self.name}: export of {name} returned no CSR")
        return text

    def import_certificate(self, name: str, cert: x509.Certificate) -> CertificateEntry:
        current = self.view.certificates.get(name)
        if current is None or current.cert != cert:
            self.api.import_file("certificate", name, certs.pem(cert).encode("ascii"))
        entry = self.read_certificate(name)
        if entry is None or entry.cert != cert:
            raise AgentError(f"{name} on {self.name} does not hold the imported certificate "
                             "with its private key; no service was pointed at it")
        self.view.certificates[name] = entry
        return entry

    def import_ca(self, name: str, cert: x509.Certificate) -> None:
        self.api.import_file("certificate", name, certs.pem(cert).encode("ascii"))
        self.view.certificates[name] = CertificateEntry(name, has_key=False, cert=cert)

    def read_certificate(self, name: str) -> Optional[CertificateEntry]:
        element = self.api.get(f"{self.store}/certificate/entry[@name={_literal(name)}]")
        return parse_entry(element) if element is not None else None

    def delete(self, name: str) -> None:
        self.api.delete(f"{self.store}/certificate/entry[@name={_literal(name)}]")
        self.view.certificates.pop(name, None)

    # -- bindings ---------------------------------------------------------------------------

    def bind(self, kind: BindingKind, location: str, certificate: str) -> None:
        existing = self.view.binding(kind, location)
        if existing is not None:
            self.api.set(consumer_xpath(self.store, kind, location), kind.element(certificate))
            self.view.bindings.remove(existing)
        else:
            parent, element = kind.created(location, certificate)
            self.api.set(f"{self.store}/{parent}", element)
        self.view.bindings.append(Binding(kind, location, certificate))

    # -- commit ---------------------------------------------------------------------------

    def commit(self) -> bool:
        """Partial commit of this admin's changes (panos.md §4.1), then wait for the job."""
        admin = escape(self.profile.admin)
        job = self.api.commit(f"<commit><partial><admin><member>{admin}</member></admin>"
                              f"</partial><description>"
                              f"{escape(self.profile.commit_description)}</description>"
                              "</commit>")
        if job is None:
            log.info("%s: nothing left to commit", self.name)
            return False
        log.info("%s: commit job %s started", self.name, job)
        result = self.api.wait_job(job, self.profile.commit_timeout, what="commit job")
        if result.result != "OK":
            raise PanosError(f"firewall {self.name}: commit job {job} failed: "
                             f"{' / '.join(d for d in result.details if d) or result.result}",
                             lines=result.details)
        log.info("%s: commit job %s succeeded", self.name, job)
        return True

    def commit_text(self) -> str:
        return f"commit {self.name} (partial, admin {self.profile.admin})"


# --- parsing --------------------------------------------------------------------------------

def parse_entry(entry: ET.Element) -> CertificateEntry:
    pem = entry.findtext("public-key")
    cert = None
    if pem and "BEGIN CERTIFICATE" in pem:
        try:
            cert = x509.load_pem_x509_certificate(pem.strip().encode("ascii"))
        except ValueError:
            log.warning("certificate %s: public-key is not a readable certificate",
                        entry.get("name"))
    return CertificateEntry(entry.get("name", ""), entry.find("private-key") is not None,
                            cert, (entry.findtext("status") or "valid").strip())


def parse_view(scope: Optional[ET.Element]) -> DeviceView:
    view = DeviceView()
    if scope is None:
        return view
    for element in scope.findall("certificate/entry"):
        entry = parse_entry(element)
        view.certificates[entry.name] = entry
    view.bindings = find_bindings(scope)
    return view


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def _literal(value: str) -> str:
    return f"'{value}'" if "'" not in value else f'"{value}"'


__all__ = ["CertificateEntry", "Device", "DeviceView", "Firewall", "SSL_TLS_SERVICE_PROFILE",
           "parse_entry", "parse_view"]
