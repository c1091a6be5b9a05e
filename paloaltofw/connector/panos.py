"""PAN-OS XML API client (panos.md). The workflow never sees XML; it calls these methods.

Transport rules: every call is a POST to `https://host/api/` with the parameters in a form body
(so nothing is logged in the device's web access log), the API key in the `X-PAN-KEY` header
(never in a URL, panos.md §1.3), and file uploads as multipart with the parameters in the query
string, as pan-python does. Replies are parsed with defusedxml.
"""

from __future__ import annotations

import ipaddress
import logging
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple
from xml.sax.saxutils import escape, quoteattr

import requests
from cryptography import x509
from defusedxml import ElementTree as SafeET

from . import certs, http
from .settings import CertificateProfile, FirewallProfile
from .errors import Interrupted, PanosError

log = logging.getLogger(__name__)

DEVICE_XPATH = "/config/devices/entry[@name='localhost.localdomain']"
BUSY_RETRIES, BUSY_WAIT = 6, 5.0  # "another commit in progress": about 3 minutes in all
BUSY_MARKERS = ("Another commit", "commit is in progress", "Please try again later",
                "Another sync is in progress")


@dataclass
class CertificateEntry:
    """A certificate object as the firewall holds it (panos.md §3.2)."""

    name: str
    has_key: bool
    cert: Optional[x509.Certificate] = None
    status: str = "valid"
    _facts: Optional[certs.Facts] = field(default=None, init=False, repr=False, compare=False)

    @property
    def facts(self) -> Optional[certs.Facts]:
        """Read from the certificate on first use. (Not functools.cached_property: before
        Python 3.12 it takes one lock for all instances, which the firewall threads contend
        for.) An entry belongs to one firewall's thread, so no lock is needed here."""
        if self._facts is None and self.cert is not None:
            self._facts = certs.Facts(self.cert)
        return self._facts


@dataclass
class Inventory:
    """What one configuration read tells about a certificate store and its consumers."""

    certificates: Dict[str, CertificateEntry] = field(default_factory=dict)
    # SSL/TLS service profile name -> certificate name it points at ("" when none)
    service_profiles: Dict[str, str] = field(default_factory=dict)
    # (description, certificate name) of every other place that names a certificate
    other_references: List[Tuple[str, str]] = field(default_factory=list)

    def references(self, certificate: str) -> List[str]:
        """Where `certificate` is in use, as readable descriptions."""
        out = [f"ssl-tls-service-profile {p}" for p, c in self.service_profiles.items()
               if c == certificate]
        return out + [d for d, c in self.other_references if c == certificate]

    def ca_by_fingerprint(self) -> Dict[bytes, str]:
        return {certs.fingerprint(e.cert): e.name for e in self.certificates.values()
                if e.cert is not None and not e.has_key}


class PanosClient:
    """One firewall. Methods raise PanosError with the device's own message lines."""

    def __init__(self, profile: FirewallProfile,
                 sleep: Callable[[float], None] = time.sleep,
                 shared: Optional[http.Shared] = None,
                 stopping: Callable[[], bool] = lambda: False) -> None:
        self.profile = profile
        self.url = profile.url + "/api/"
        # Reads may be repeated after a lost answer; writes (a commit, a generate) may not.
        # The writer is made on the first write: a run with nothing to change needs none.
        self._shared = shared or http.Shared()
        self.session = http.Session(profile.tls, http.SAFE, host=profile.url,
                                    shared=self._shared)
        self._writer: Optional[http.Session] = None
        self._key = profile.api_key.reveal() if profile.api_key else None
        self._sleep = sleep
        self._stopping = stopping  # a signal asked the run to stop: waits end early
        # The configured api_key was refused and replaced by keygen in this run.
        self.stale_api_key = False

    # -- transport ------------------------------------------------------------------------

    def _post(self, params: Dict[str, str], files: Optional[Dict[str, Tuple[str, bytes]]] = None,
              auth: bool = True, write: bool = False) -> requests.Response:
        headers = {}
        if auth:
            headers["X-PAN-KEY"] = self._api_key()
        if write and self._writer is None:
            self._writer = http.Session(self.profile.tls, http.WRITE, host=self.profile.url,
                                        shared=self._shared)
        session = self._writer if write else self.session
        try:
            if files:
                return session.post(self.url, params=params, files=files, headers=headers,
                                    timeout=self.profile.timeout)
            return session.post(self.url, data=params, headers=headers,
                                timeout=self.profile.timeout)
        except requests.RequestException as exc:
            raise PanosError(f"firewall {self.profile.name}: "
                             f"{http.describe(exc, self.profile.url)}") from None

    def call(self, params: Dict[str, str], files: Optional[Dict[str, Tuple[str, bytes]]] = None,
             accept_codes: Tuple[str, ...] = (), write: bool = False) -> ET.Element:
        """One API call; returns the <response> element. A stale key (403) is renewed once
        by keygen when a username and password are configured (a 403 changed nothing)."""
        response = self._post(params, files, write=write)
        if response.status_code == 403 and self.profile.username and self.profile.password:
            log.info("firewall %s: API key refused; generating a new one", self.profile.name)
            if self.profile.api_key and self._key == self.profile.api_key.reveal():
                self.stale_api_key = True  # the workflow tells the administrator, once
            self._key = None
            response = self._post(params, files, write=write)
        root = self._parse(response)
        status, code = root.get("status"), root.get("code")
        if status == "success" or (code is not None and code in accept_codes):
            return root
        lines = message_lines(root)
        raise PanosError(f"firewall {self.profile.name}: {' '.join(lines) or 'error'}"
                         + (f" (code {code})" if code else ""), code, lines)

    def _parse(self, response: requests.Response) -> ET.Element:
        ctype = response.headers.get("Content-Type", "")
        if "xml" not in ctype:
            raise PanosError(f"firewall {self.profile.name}: HTTP {response.status_code} "
                             f"without an XML API answer ({ctype or 'no content type'})")
        try:
            root = SafeET.fromstring(response.content)
        except Exception as exc:  # defusedxml raises several types for refused input
            raise PanosError(f"firewall {self.profile.name}: unreadable XML answer "
                             f"({type(exc).__name__})") from None
        if response.status_code == 403:
            raise PanosError(f"firewall {self.profile.name}: authentication failed "
                             f"({' '.join(message_lines(root)) or 'HTTP 403'}); check api_key "
                             "or username/password", "403", message_lines(root))
        return root

    def _api_key(self) -> str:
        if self._key is None:
            self._key = self.keygen()
        return self._key

    def keygen(self) -> str:
        """type=keygen with the profile's username and password (POST body, never a URL)."""
        assert self.profile.username and self.profile.password
        response = self._post({"type": "keygen", "user": self.profile.username,
                               "password": self.profile.password.reveal()}, auth=False)
        if response.status_code == 403:
            raise PanosError(f"firewall {self.profile.name}: keygen refused: invalid "
                             f"username or password for '{self.profile.username}'", "403")
        root = self._parse(response)
        key = root.findtext("result/key")
        if root.get("status") != "success" or not key:
            raise PanosError(f"firewall {self.profile.name}: keygen failed: "
                             f"{' '.join(message_lines(root))}")
        return key.strip()

    # -- reading ----------------------------------------------------------------------------

    def store_xpath(self) -> str:
        vsys = self.profile.vsys
        return f"{DEVICE_XPATH}/vsys/entry[@name='{vsys}']" if vsys else "/config/shared"

    def read_inventory(self) -> Inventory:
        """One `get` of the certificate store's scope (shared or the vsys): certificates,
        SSL/TLS service profiles and other certificate references, from the candidate."""
        root = self.call({"type": "config", "action": "get", "xpath": self.store_xpath()},
                         accept_codes=("7",))
        scope = root.find("result/*")
        return parse_inventory(scope)

    # -- certificates -------------------------------------------------------------------------

    def generate_csr(self, name: str, profile: CertificateProfile) -> None:
        """`request certificate generate ... signed-by external` (panos.md §3.3). No vsys
        parameter for shared placement: with vsys= the CSR lands in the vsys store."""
        parts = [f"<certificate-name>{escape(name)}</certificate-name>",
                 f"<name>{escape(profile.common_name)}</name>"]
        if profile.key.algorithm == "RSA":
            parts.append(f"<algorithm><RSA><rsa-nbits>{profile.key.bits}</rsa-nbits></RSA>"
                         "</algorithm>")
        else:
            parts.append(f"<algorithm><ECDSA><ecdsa-nbits>{profile.key.bits}</ecdsa-nbits>"
                         "</ECDSA></algorithm>")
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
        params = {"type": "op", "cmd": "<request><certificate><generate>" + "".join(parts) +
                  "</generate></certificate></request>"}
        if self.profile.vsys:
            params["vsys"] = self.profile.vsys
        self.call(params, write=True)

    def export_csr(self, name: str) -> str:
        params = {"type": "export", "category": "certificate", "certificate-name": name,
                  "format": "pkcs10"}
        if self.profile.vsys:
            params["vsys"] = self.profile.vsys
        response = self._post(params)
        if response.status_code == 200 and "xml" not in response.headers.get(
                "Content-Type", ""):
            text = response.content.decode("ascii", "replace")
            if "CERTIFICATE REQUEST" not in text:
                raise PanosError(f"firewall {self.profile.name}: export of {name} returned no "
                                 "CSR")
            return text
        root = self._parse(response)
        raise PanosError(f"firewall {self.profile.name}: CSR export of {name} failed: "
                         f"{' '.join(message_lines(root))}")

    def import_certificate(self, name: str, pem: str) -> None:
        """Multipart upload, parameters in the query (pan-python's style, panos.md §3.5)."""
        params = {"type": "import", "category": "certificate", "certificate-name": name,
                  "format": "pem"}
        if self.profile.vsys:
            params["vsys"] = self.profile.vsys
        self.call(params, files={"file": (f"{name}.pem", pem.encode("ascii"))}, write=True)

    def set_service_certificate(self, service_profile: str, certificate: str) -> None:
        xpath = (f"{self.store_xpath()}/ssl-tls-service-profile/entry"
                 f"[@name={_xpath_literal(service_profile)}]")
        self.call({"type": "config", "action": "set", "xpath": xpath,
                   "element": f"<certificate>{escape(certificate)}</certificate>"}, write=True)

    def create_service_profile(self, service_profile: str, certificate: str) -> None:
        xpath = f"{self.store_xpath()}/ssl-tls-service-profile"
        element = (f"<entry name={quoteattr(service_profile)}><protocol-settings><min-version>"
                   "tls1-2</min-version><max-version>max</max-version></protocol-settings>"
                   f"<certificate>{escape(certificate)}</certificate></entry>")
        self.call({"type": "config", "action": "set", "xpath": xpath, "element": element},
                  write=True)

    def delete_certificate(self, name: str) -> None:
        xpath = f"{self.store_xpath()}/certificate/entry[@name={_xpath_literal(name)}]"
        self.call({"type": "config", "action": "delete", "xpath": xpath}, accept_codes=("7",),
                  write=True)

    def read_certificate(self, name: str) -> Optional[CertificateEntry]:
        xpath = f"{self.store_xpath()}/certificate/entry[@name={_xpath_literal(name)}]"
        root = self.call({"type": "config", "action": "get", "xpath": xpath},
                         accept_codes=("7",))
        entry = root.find("result/entry")
        return parse_entry(entry) if entry is not None else None

    # -- commit ---------------------------------------------------------------------------

    def commit(self) -> Optional[str]:
        """Partial commit of this admin's changes (panos.md §4.1); the job id, or None when
        there is nothing to commit. "Another commit in progress" is retried with backoff."""
        admin = escape(self.profile.admin)
        cmd = (f"<commit><partial><admin><member>{admin}</member></admin></partial>"
               f"<description>{escape(self.profile.commit_description)}</description>"
               "</commit>")
        wait = BUSY_WAIT
        for attempt in range(BUSY_RETRIES + 1):
            try:
                root = self.call({"type": "commit", "action": "partial", "cmd": cmd},
                                 write=True)
            except PanosError as exc:
                busy = exc.code == "13" or any(m in str(exc) for m in BUSY_MARKERS)
                if not busy or attempt == BUSY_RETRIES:
                    raise
                log.info("firewall %s: another commit is running; retrying in %.0f s",
                         self.profile.name, wait)
                self._sleep(wait)
                if self._stopping():
                    raise Interrupted(f"firewall {self.profile.name}: not committed (another "
                                      "commit was running when the run was interrupted)")
                wait = min(wait * 2, 60)
                continue
            job = root.findtext("result/job")
            return job.strip() if job else None  # None: "There are no changes to commit."
        raise AssertionError("unreachable: the last attempt returns or raises")

    def wait_job(self, job: str) -> List[str]:
        """Poll `show jobs id` until FIN (bounded by commit_timeout); return the detail lines
        of an OK job, raise with them on FAIL. `progress` is not parsed: after FIN it may be a
        timestamp (panos.md §4.3)."""
        deadline = time.monotonic() + self.profile.commit_timeout
        # From 0.1 s, growing by half up to 5 s: a quick commit is seen quickly, a slow one
        # cheaply, and the end of a job is noticed at most a third of its time late.
        interval = 0.1
        while True:
            root = self.call({"type": "op", "cmd": f"<show><jobs><id>{escape(job)}</id></jobs>"
                                                   "</show>"})
            status = root.findtext("result/job/status")
            if status == "FIN":
                result = root.findtext("result/job/result")
                details = [(line.text or "").strip() for line in
                           root.findall("result/job/details/line")]
                if result == "OK":
                    return details
                raise PanosError(f"firewall {self.profile.name}: commit job {job} failed: "
                                 f"{' / '.join(d for d in details if d) or result}",
                                 lines=details)
            if time.monotonic() + interval > deadline:
                raise PanosError(f"firewall {self.profile.name}: commit job {job} did not "
                                 f"finish within {self.profile.commit_timeout:.0f} s "
                                 f"(status {status}); it may still complete on the device")
            self._sleep(interval)
            if self._stopping():
                # The job goes on by itself on the device; the next run sees its outcome.
                raise Interrupted(f"firewall {self.profile.name}: commit job {job} still "
                                  "running on the device when the run was interrupted")
            interval = min(interval * 1.5, 5.0)


# --- parsing --------------------------------------------------------------------------------

def message_lines(root: ET.Element) -> List[str]:
    """Where the device puts its message (pan-python's search order, panos.md §2.2)."""
    for path in ("msg/line", "result/msg/line", "result/msg", "msg"):
        found = root.findall(path)
        lines = [" ".join("".join(node.itertext()).split()) for node in found]
        lines = [line for line in lines if line]
        if lines:
            return lines
    return []


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


def parse_inventory(scope: Optional[ET.Element]) -> Inventory:
    inventory = Inventory()
    if scope is None:
        return inventory
    for entry in scope.findall("certificate/entry"):
        parsed = parse_entry(entry)
        inventory.certificates[parsed.name] = parsed
    for profile in scope.findall("ssl-tls-service-profile/entry"):
        inventory.service_profiles[profile.get("name", "")] = \
            (profile.findtext("certificate") or "").strip()
    for cert_profile in scope.findall("certificate-profile/entry"):
        for ca in cert_profile.findall("CA/entry"):
            inventory.other_references.append(
                (f"certificate-profile {cert_profile.get('name')}", ca.get("name", "")))
    for member in scope.findall("ssl-decrypt/trusted-root-CA/member"):
        inventory.other_references.append(("ssl-decrypt trusted-root-CA",
                                           (member.text or "").strip()))
    for which in ("forward-trust-certificate", "forward-untrust-certificate"):
        for algo in ("rsa", "ecdsa"):
            for node in scope.findall(f"ssl-decrypt/{which}/{algo}"):
                inventory.other_references.append((f"ssl-decrypt {which}",
                                                   (node.text or "").strip()))
    return inventory


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def _xpath_literal(value: str) -> str:
    """Quote a name for an xpath predicate; names are validated, but be safe anyway."""
    return f"'{value}'" if "'" not in value else f'"{value}"'
