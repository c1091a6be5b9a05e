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
import contextlib
import dataclasses
import hashlib
import ipaddress
import logging
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from html import escape  # &, <, > (and quotes): xml.sax.saxutils would load urllib.request
from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from . import http
from .bindings import (DEVICE, DEVICE_SCOPE, MANAGEMENT_UI, PEER_SCOPE, SSL_TLS_SERVICE_PROFILE, STORE,
                       VSYS, Binding, BindingKind, consumer_xpath, find_bindings)
from .cache import KnownFacts
from .errors import AgentError, PanosError
from .facts import Facts
from .panos import Target, XmlApi
from .results import DevicePush
from .settings import CertificateProfile, DeviceKind, FirewallProfile

if TYPE_CHECKING:
    from cryptography import x509

# certs (X.509, cryptography) is imported where a certificate itself is needed: a no-op run
# reads every installed certificate's facts from the cache and never loads it (facts.py).

log = logging.getLogger(__name__)

DEVICE_PATH = "/devices/entry[@name='localhost.localdomain']"
DEVICE_XPATH = f"/config{DEVICE_PATH}"
PANORAMA_STORE = "/config/panorama/certificate"  # Panorama's own (panorama-ha-bindings §1.6)


@dataclass(frozen=True)
class Notice:
    """A warning said once per `key` in a state directory (later runs log it at INFO)."""

    key: str
    message: str


class CertificateEntry:
    """A certificate object as the device holds it (panos.md §3.2): with a certificate given
    as parsed (`cert`, after an import) or as the device's PEM text (`pem`, from a read),
    which is parsed only when the X.509 itself is needed: its facts come from `known`, the
    run's cache, without parsing. An entry belongs to one device's thread: no lock here."""

    def __init__(self, name: str, has_key: bool, cert: Optional[x509.Certificate] = None,
                 status: str = "valid", pem: Optional[str] = None,
                 known: Optional[KnownFacts] = None) -> None:
        self.name = name
        self.has_key = has_key
        self.status = status
        self._cert = cert
        self._pem = pem if cert is None and pem and "BEGIN CERTIFICATE" in pem else None
        self._known = known
        self._facts: Optional[Facts] = None

    def __repr__(self) -> str:
        return f"CertificateEntry({self.name!r}, has_key={self.has_key}, " \
               f"certificate={self.has_certificate}, status={self.status!r})"

    @property
    def cert(self) -> Optional[x509.Certificate]:
        if self._cert is None and self._pem is not None:
            from .certs import load_pem
            self._cert = load_pem(self._pem)
            if self._cert is None:
                self._pem = None
                log.warning("certificate %s: public-key is not a readable certificate",
                            self.name)
        return self._cert

    @property
    def facts(self) -> Optional[Facts]:
        if self._facts is None:
            if self._cert is None and self._pem is not None and self._known is not None:
                self._facts = self._known.facts(self._pem)
                if self._facts is None:
                    _ = self.cert  # unreadable: said once, and forgotten
            elif self.cert is not None:
                from .certs import facts_of
                self._facts = facts_of(self.cert)
        return self._facts

    @property
    def has_certificate(self) -> bool:
        try:
            return self.facts is not None
        except Exception:  # noqa: BLE001 - facts it cannot read; assess says so, not this
            return self.cert is not None

    @property
    def is_request(self) -> bool:
        """A key and CSR, no certificate: nothing can use it."""
        return self.has_key and not self.has_certificate


@dataclass
class DeviceView:
    """What the device holds in its candidate configuration, as one read showed it and as the
    device's own writes have changed it since."""

    certificates: Dict[str, CertificateEntry] = field(default_factory=dict)
    bindings: List[Binding] = field(default_factory=list)
    # Names a new object must not take although this store lacks them: where the device
    # might put a request it was asked to make here (a template's, on Panorama).
    taken: Set[str] = field(default_factory=set)
    store_scope: str = ""  # the certificates' scope: "shared", "vsys1", "panorama"
    # For a shared store: each vsys's own certificate names. A vsys consumer naming one of
    # those means the vsys's certificate, not the shared one of the same name.
    vsys_names: Dict[str, Set[str]] = field(default_factory=dict)

    def _means_ours(self, binding: Binding, name: str) -> bool:
        if binding.certificate != name or name in self.vsys_names.get(binding.scope, set()):
            return False
        # Shared objects cannot name a vsys's certificate (§5).
        return not (self.store_scope.startswith("vsys") and binding.scope == "shared")

    def references(self, certificate: str) -> List[Binding]:
        """Every consumer that names `certificate` (directly; see `profile_users`)."""
        return [b for b in self.bindings
                if not b.kind.via_profile and self._means_ours(b, certificate)]

    def binding(self, kind: BindingKind, location: str,
                scope: Optional[str] = None) -> Optional[Binding]:
        """Consumer `location` of `kind` (of a listed kind: its first member) in `scope`
        (default: the certificates' own scope), on this device."""
        scope = self.store_scope if scope is None else scope
        return next((b for b in self.bindings if b.kind == kind and b.location == location
                     and b.scope == scope and not b.where), None)

    def members(self, kind: BindingKind, location: str, scope: str) -> List[str]:
        """What a listed consumer names, in order."""
        return [b.certificate for b in self.bindings if b.kind == kind and not b.where
                and b.location == location and b.scope == scope and b.certificate]

    def find(self, kinds: Sequence[BindingKind], location: str) -> List[Binding]:
        """The consumers named `location` of any of `kinds`, in any scope of this device."""
        return [b for b in self.bindings if b.kind in kinds and b.location == location
                and not b.where]

    def profile_scope(self, consumer_scope: str, profile: str) -> str:
        """Where the SSL/TLS profile a consumer names lives: its own vsys's, else shared."""
        if self.binding(SSL_TLS_SERVICE_PROFILE, profile, consumer_scope) is not None:
            return consumer_scope
        return "shared" if self.store_scope != "" else ""

    def profile_users(self, scope: str, profile: str) -> List[Binding]:
        """The consumers that use SSL/TLS profile `profile` of `scope`."""
        return [b for b in self.bindings if b.kind.via_profile and not b.where and
                b.certificate == profile and
                self.profile_scope(b.scope if b.scope != DEVICE_SCOPE else "shared",
                                   profile) == scope]

    def consumers(self, certificate: str) -> List[Tuple[str, bool]]:
        """(consumer, managed) for everything that uses `certificate`: what names it, and
        what uses an SSL/TLS profile that names it (`status` lists them)."""
        found: List[Tuple[str, bool]] = []
        for binding in self.references(certificate):
            found.append((binding.describe(), binding.kind.managed and not binding.where))
            if binding.kind == SSL_TLS_SERVICE_PROFILE:
                found += [(f"{user.consumer()} (through {binding.describe()})", True)
                          for user in self.profile_users(binding.scope, binding.location)]
        return found

    def ca_by_fingerprint(self) -> Dict[bytes, str]:
        from .certs import fingerprint
        return {fingerprint(e.cert): e.name for e in self.certificates.values()
                if e.cert is not None and not e.has_key}

    def anchors(self) -> List[x509.Certificate]:
        """CA certificates on the device, to complete a chain SCM sent short of its root."""
        from .certs import is_ca
        return [e.cert for e in self.certificates.values()
                if e.cert is not None and not e.has_key and is_ca(e.cert)]


@dataclass(frozen=True)
class CommitOutcome:
    """What a device's commit did: whether a commit job ran (False: nothing to commit), and
    for a Panorama template, every managed firewall's share of the push."""

    committed: bool
    pushes: Tuple[DevicePush, ...] = ()
    unreached: Optional[str] = None  # committed, but pushed to no firewall: why


class PushFailed(PanosError):
    """The commit succeeded on Panorama, but the push did not reach every firewall."""

    def __init__(self, message: str, pushes: Sequence[DevicePush]) -> None:
        super().__init__(message)
        self.pushes = tuple(pushes)


class NothingMade(AgentError):
    """The device made no key and left nothing behind: the request can be forgotten."""


class Device(abc.ABC):
    """A certificate store and the consumers that use it, on one device (or a pair, or a
    template): the interface the workflow uses."""

    name: str
    view: DeviceView
    name_limit: int  # the longest certificate object name the device takes

    @abc.abstractmethod
    def read(self) -> DeviceView:
        """Read the inventory (one request, or a few); later reads come from `view`."""

    @abc.abstractmethod
    def generate(self, name: str, profile: CertificateProfile, again: bool = False) -> None:
        """Have the device make the key pair and CSR for `profile` under `name`; `again`:
        a run that saved this request was stopped before it knew the answer."""

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
    def bind(self, kind: BindingKind, location: str, name: str, scope: str = "",
             replaces: Optional[str] = None) -> None:
        """Make consumer `location` of `kind` in `scope` (default: the store's) name `name`
        (creating it if the kind allows and the device has none); in a listed consumer, in
        place of `replaces`."""

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Delete the certificate object `name` (nothing may reference it)."""

    @abc.abstractmethod
    def commit(self) -> CommitOutcome:
        """Commit the agent's own changes (and push them where they go) and wait for the
        result; raises PanosError (with the device's detail lines) when it failed, PushFailed
        when the commit took but a push did not reach every firewall."""

    @abc.abstractmethod
    def commit_text(self) -> str:
        """How the commit reads in a plan: `commit lab-fw-01 (partial, admin certbot)`."""

    # What an imported certificate still waits for, as `status` tells it.
    awaits: str = "committed"

    @abc.abstractmethod
    def notices(self) -> List[Notice]:
        """What the administrator must fix about the device's own configuration, learnt
        during the run; each is said once per key (cron would mail it nightly otherwise)."""


def make_device(profile: FirewallProfile, sleep: Callable[[float], None] = time.sleep,
                shared: Optional[http.Shared] = None,
                stopping: Callable[[], bool] = lambda: False,
                known: Optional[KnownFacts] = None) -> Device:
    """The device a profile names: the one place that knows the kinds. `known`: the
    run's certificate facts (cache.py)."""
    if profile.peer is not None:
        return HaPair(profile, sleep=sleep, shared=shared, stopping=stopping, known=known)
    kind = {DeviceKind.FIREWALL: Firewall, DeviceKind.PANORAMA: PanoramaOwn,
            DeviceKind.TEMPLATE: PanoramaTemplate}[profile.kind]
    return kind(profile, sleep=sleep, shared=shared, stopping=stopping, known=known)


class PanosDevice(Device):
    """A certificate store reached through the PAN-OS XML API: everything the kinds share."""

    def __init__(self, profile: FirewallProfile, target: Target, store: str,
                 sleep: Callable[[float], None] = time.sleep,
                 shared: Optional[http.Shared] = None,
                 stopping: Callable[[], bool] = lambda: False,
                 known: Optional[KnownFacts] = None) -> None:
        self.profile = profile
        self.name = profile.name
        self.api = XmlApi(profile, target, sleep=sleep, shared=shared, stopping=stopping)
        self.known = known
        self.store = store  # xpath of the store's scope: its certificates and consumers
        self.config_root = "/config"  # xpath of the configuration tree the store is in
        self.view = DeviceView()
        self.name_limit = profile.object_name_limit

    def notices(self) -> List[Notice]:
        if not self.api.stale_api_key:
            return []
        # The configured API key was refused and keygen made a new one: which field to change.
        fw = self.profile
        assert fw.api_key is not None
        digest = hashlib.sha256(fw.api_key.reveal().encode()).hexdigest()[:16]
        where = fw.panorama or fw.name  # a linked entry uses its Panorama's key
        own = where == fw.name
        device = "firewall" if own and fw.kind is DeviceKind.FIREWALL else "Panorama"
        return [Notice(
            f"stale api_key {where} {digest}",
            f"{fw.label}: the {device} refuses the api_key of "
            f"{fw.path if own else 'Panorama ' + where} "
            f"({where}.api_key; a password change or key expiry invalidates keys), so the "
            f"agent generates a key from username '{fw.username}' on every run instead. "
            "Replace api_key with a new key for that user (type=keygen), or delete api_key to "
            "always log in with username and password. (Said once for this key.)")]

    # -- reading --------------------------------------------------------------------------

    def read(self) -> DeviceView:
        """One `get` of the configuration: the store's certificates, and every consumer
        that can name them (parse_config)."""
        self.view = parse_config(self.api.get(self.config_root), self.profile.vsys,
                                 self.known)
        return self.view

    # -- certificates -------------------------------------------------------------------------

    def generate(self, name: str, profile: CertificateProfile, again: bool = False) -> None:
        """`request certificate generate ... signed-by external` (panos.md §3.3); the target's
        vsys places it (without one the CSR goes to shared)."""
        self.api.op(generate_command(name, profile), write=True, targeted=True)
        self.view.certificates[name] = CertificateEntry(name, has_key=True)

    def export_csr(self, name: str) -> str:
        text = self.api.export("certificate", name, "pkcs10").decode("ascii", "replace")
        if "CERTIFICATE REQUEST" not in text:
            raise PanosError(f"{self.api.label}: export of {name} returned no CSR")
        return text

    def import_certificate(self, name: str, cert: x509.Certificate) -> CertificateEntry:
        current = self.view.certificates.get(name)
        if current is None or current.cert != cert:
            self.api.import_file("certificate", name, _pem(cert))
        entry = self.read_certificate(name)
        if entry is None or entry.cert != cert:
            raise AgentError(f"{name} on {self.name} does not hold the imported certificate "
                             "with its private key; no service was pointed at it")
        self.view.certificates[name] = entry
        return entry

    def import_ca(self, name: str, cert: x509.Certificate) -> None:
        self.api.import_file("certificate", name, _pem(cert))
        self.view.certificates[name] = CertificateEntry(name, has_key=False, cert=cert)

    def read_certificate(self, name: str) -> Optional[CertificateEntry]:
        element = self._entry(name)
        return parse_entry(element, self.known) if element is not None else None

    def _entry(self, name: str) -> Optional[ET.Element]:
        return self.api.get(f"{self.store}/certificate/entry[@name={_literal(name)}]")

    def delete(self, name: str) -> None:
        self.api.delete(f"{self.store}/certificate/entry[@name={_literal(name)}]")
        self.view.certificates.pop(name, None)

    # -- bindings ---------------------------------------------------------------------------

    def scope_root(self, scope: str) -> str:
        """The xpath of a scope label's element (Binding.scope)."""
        if scope in ("", self.view.store_scope):
            return self.store
        return self.config_root + ("/shared" if scope == "shared" else
                                   DEVICE_PATH if scope == DEVICE_SCOPE else
                                   f"{DEVICE_PATH}/vsys/entry[@name={_literal(scope)}]")

    def bind(self, kind: BindingKind, location: str, name: str, scope: str = "",
             replaces: Optional[str] = None) -> None:
        """Make consumer `location` of `kind` in `scope` name `name` (a certificate, or for
        a via_profile kind an SSL/TLS profile); in a listed consumer, in place of
        `replaces` (or added)."""
        scope = scope or self.view.store_scope
        root = self.scope_root(scope)
        existing = self.view.binding(kind, location, scope)
        if kind.listed:
            members = self.view.members(kind, location, scope)
            names = list(dict.fromkeys(name if m == replaces else m for m in members)) \
                if replaces in members else members + [name]
            xpath = f"{consumer_xpath(root, kind, location)}/{kind.list_path()}"
            self.api.edit(xpath, kind.list_element(names))
            self.view.bindings = [b for b in self.view.bindings if not (
                b.kind == kind and b.location == location and b.scope == scope)]
            self.view.bindings += [Binding(kind, location, n, scope) for n in names]
            return
        if existing is not None:
            self.api.set(consumer_xpath(root, kind, location), kind.element(name))
            self.view.bindings.remove(existing)
        elif kind.template is not None:
            parent, element = kind.created(location, name)
            self.api.set(f"{root}/{parent}", element)
        else:  # an existing consumer that named nothing of this kind yet
            self.api.set(consumer_xpath(root, kind, location), kind.element(name))
        self.view.bindings.append(Binding(kind, location, name, scope))

    # -- commit ---------------------------------------------------------------------------

    def commit(self) -> CommitOutcome:
        return CommitOutcome(self._commit_own())

    def _commit_own(self) -> bool:
        """Partial commit of this admin's changes (panos.md §4.1), then wait for the job."""
        admin = escape(self.profile.admin)
        job = self.api.commit(f"<commit><partial><admin><member>{admin}</member></admin>"
                              f"</partial><description>"
                              f"{escape(self.profile.commit_description)}</description>"
                              "</commit>")
        label = self.api.label
        if job is None:
            log.info("%s: nothing left to commit", label)
            return False
        log.info("%s: commit job %s started", label, job)
        result = self.api.wait_job(job, self.profile.commit_timeout, what="commit job")
        if result.result != "OK":
            raise PanosError(f"{label}: commit job {job} failed: "
                             f"{' / '.join(d for d in result.details if d) or result.result}",
                             lines=result.details)
        log.info("%s: commit job %s succeeded", label, job)
        return True

    def commit_text(self) -> str:
        return f"commit {self.name} (partial, admin {self.profile.admin})"


class Firewall(PanosDevice):
    """A PAN-OS firewall's shared certificate store, or one vsys store (panos.md §3); with
    `via`, reached through Panorama (every request carries target=SERIAL, panos.md §6.1)."""

    def __init__(self, profile: FirewallProfile, sleep: Callable[[float], None] = time.sleep,
                 shared: Optional[http.Shared] = None,
                 stopping: Callable[[], bool] = lambda: False,
                 known: Optional[KnownFacts] = None) -> None:
        # With vsys, the CSR lands in (and imports go to) the vsys store; without, shared.
        store = f"{DEVICE_XPATH}/vsys/entry[@name='{profile.vsys}']" if profile.vsys \
            else "/config/shared"
        super().__init__(profile, Target(vsys=profile.vsys, serial=profile.serial), store,
                         sleep, shared, stopping, known)

    def commit_text(self) -> str:
        through = f" through Panorama {self.profile.panorama}" if self.profile.serial else ""
        return f"commit {self.name}{through} (partial, admin {self.profile.admin})"


@dataclass(frozen=True)
class HaState:
    """One peer's answer to `show high-availability state` (panorama-ha-bindings.md §3.1)."""

    enabled: bool
    local: str = ""  # active, passive, active-primary, suspended, ...
    peer: str = ""
    running_sync: str = ""  # synchronized, synchronization in progress, not synchronized
    sync_enabled: bool = False
    error: str = ""  # the peer did not answer

    @property
    def active(self) -> bool:
        return self.local in ("active", "active-primary")

    def describe(self) -> str:
        return self.error or (self.local if self.enabled else "HA not enabled")


def ha_state(api: XmlApi) -> HaState:
    root = api.op("<show><high-availability><state/></high-availability></show>")
    result = root.find("result")
    if result is None or (result.findtext("enabled") or "").strip() != "yes":
        return HaState(enabled=False)
    # A firewall wraps the pair's state in <group>; Panorama does not (§3.1).
    group = result.find("group")
    group = group if group is not None else result
    return HaState(enabled=True, local=(group.findtext("local-info/state") or "").strip(),
                   peer=(group.findtext("peer-info/state") or "").strip(),
                   running_sync=(group.findtext("running-sync") or "").strip(),
                   sync_enabled=(group.findtext("running-sync-enabled") or "").strip() == "yes")


class SyncFailed(PushFailed):
    """The commit took on the active peer, but its HA peer did not get it."""


SYNC_TO_REMOTE = ("<request><high-availability><sync-to-remote><running-config/>"
                  "</sync-to-remote></high-availability></request>")


class HaPair(Device):
    """An active/passive HA pair (panorama-ha-bindings.md §3): each run asks both peers their
    state and works on the active one only (whichever entry the profile names). Before an
    order, the new key and CSR are committed and synchronized, so that a failover between
    runs finds them on the new active peer. The commit is made only if that peer is still
    active, and is followed by a wait until the running configuration is synchronized and
    the passive peer holds every certificate imported this run. The management interface's
    profile choice, which does not sync, is planned for the passive peer as a binding of its
    own (scope PEER_SCOPE) and set there after the sync."""

    awaits = "committed on the active peer and synchronized to its HA peer"

    def __init__(self, profile: FirewallProfile, sleep: Callable[[float], None] = time.sleep,
                 shared: Optional[http.Shared] = None,
                 stopping: Callable[[], bool] = lambda: False,
                 known: Optional[KnownFacts] = None) -> None:
        assert profile.peer is not None
        self.profile = profile
        self.name = profile.name
        self.name_limit = profile.object_name_limit
        self.peers = (Firewall(profile, sleep, shared, stopping, known),
                      Firewall(profile.peer, sleep, shared, stopping, known))
        self.active, self.passive = self.peers
        self.states: Dict[str, HaState] = {}
        self._on_passive: List[Tuple[BindingKind, str, str]] = []  # set there after the sync
        self._imported: List[str] = []  # the passive peer must hold these after the sync
        self.view = DeviceView()  # the active peer's (the same object, once read)
        self.label = f"HA pair {self.peers[0].name}/{self.peers[1].name}"

    def _ask(self) -> str:
        """Both peers' state into self.states; how they read, for messages."""
        for peer in self.peers:
            try:
                self.states[peer.name] = ha_state(peer.api)
            except PanosError as exc:
                self.states[peer.name] = HaState(enabled=True, error=f"unreachable: {exc}")
        return ", ".join(f"{p.name}: {self.states[p.name].describe()}" for p in self.peers)

    def read(self) -> DeviceView:
        """Both peers' HA state (a peer that does not answer is not active), then the active
        peer's configuration, and the passive peer's own management interface choice."""
        said = self._ask()
        if not all(self.states[p.name].enabled or self.states[p.name].error
                   for p in self.peers):
            raise PanosError(f"firewall {self.name}: its ha_peer entry names an HA pair, but "
                             f"HA is not enabled ({said}); remove ha_peer, or enable HA")
        active = [p for p in self.peers if self.states[p.name].active]
        if len(active) != 1:
            raise PanosError(f"{self.label}: {'no peer' if not active else 'both peers'} "
                             f"active ({said}); nothing was changed")
        self.active = active[0]
        self.passive = self.peers[1] if self.active is self.peers[0] else self.peers[0]
        if not self.states[self.active.name].sync_enabled:
            # The passive peer would never get the certificate: after a failover its order
            # would be stranded (§3.2).
            raise PanosError(f"{self.label}: configuration sync is off on {self.active.name} "
                             "(running-sync-enabled no); turn it on (Device > High "
                             "Availability > General) so that the passive peer gets the "
                             "certificates; nothing was changed")
        log.info("%s: %s is active", self.label, self.active.name)
        self.view = self.active.read()
        # What the passive peer runs (not its candidate: a change a killed run left there
        # uncommitted is made and committed again).
        system = self.passive.api.show(f"{DEVICE_XPATH}/deviceconfig/system")
        chosen = (system.findtext("ssl-tls-service-profile") or "").strip() \
            if system is not None else ""
        self.view.bindings.append(Binding(MANAGEMENT_UI, "", chosen, PEER_SCOPE))
        return self.view

    def generate(self, name: str, profile: CertificateProfile, again: bool = False) -> None:
        self.active.generate(name, profile, again)

    def export_csr(self, name: str) -> str:
        # The order follows: the key must be on both peers first (class docstring).
        self._commit_on_active()
        self._await_sync([name], certificates=False)
        return self.active.export_csr(name)

    def import_certificate(self, name: str, cert: x509.Certificate) -> CertificateEntry:
        entry = self.active.import_certificate(name, cert)
        self._imported.append(name)
        return entry

    def import_ca(self, name: str, cert: x509.Certificate) -> None:
        self.active.import_ca(name, cert)

    def bind(self, kind: BindingKind, location: str, name: str, scope: str = "",
             replaces: Optional[str] = None) -> None:
        if scope == PEER_SCOPE:
            self._on_passive.append((kind, location, name))
            self.view.bindings = [b for b in self.view.bindings if b.scope != PEER_SCOPE]
            self.view.bindings.append(Binding(kind, location, name, PEER_SCOPE))
            return
        self.active.bind(kind, location, name, scope, replaces)

    def delete(self, name: str) -> None:
        self.active.delete(name)

    def commit(self) -> CommitOutcome:
        committed = self._commit_on_active()
        self._await_sync(self._imported)
        for kind, location, name in self._on_passive:
            # deviceconfig/system does not sync (§3.3): the passive peer's own choice.
            try:
                self.passive.bind(kind, location, name, DEVICE_SCOPE)
                self.passive._commit_own()
            except PanosError as exc:
                raise SyncFailed(f"committed on {self.active.name} and synchronized, but "
                                 f"setting the management interface of {self.passive.name} "
                                 f"failed: {exc} (the next run tries again)", ()) from None
        self._on_passive.clear()
        return CommitOutcome(committed)

    def _commit_on_active(self) -> bool:
        """The partial commit, only on a peer that is still the active one: a failover during
        the run leaves this run's changes in the old active peer's candidate, uncommitted
        (the next run works on the new active peer, which has the key: see export_csr)."""
        said = self._ask()
        if not self.states[self.active.name].active:
            raise PanosError(f"{self.label}: {self.active.name} is no longer active ({said}); "
                             "nothing was committed, the next run goes on on the active peer")
        return self.active._commit_own()

    def _await_sync(self, names: Sequence[str], certificates: bool = True) -> None:
        """Until the active peer says its running configuration is synchronized and the
        passive peer holds each of `names` with its key (bounded by ha_sync_timeout); one
        `sync-to-remote` if it says "not synchronized"."""
        requested, why = False, ""
        for _ in self.active.api.polls(self.profile.ha_sync_timeout,
                                       "still synchronizing when the run was interrupted"):
            state = ha_state(self.active.api)
            if state.running_sync == "synchronized":
                lacking = [n for n in names if not _held(self.passive, n, certificates)]
                if not lacking:
                    return
                why = f"{self.passive.name} does not yet hold {', '.join(lacking)}"
            else:
                why = f"{self.active.name} says running-sync '{state.running_sync}' (peer " \
                      f"{self.passive.name}: {state.peer or 'unknown'})"
                if state.running_sync != "synchronization in progress" and not requested:
                    log.info("%s: %s; asking for sync-to-remote", self.label, why)
                    self.active.api.op(SYNC_TO_REMOTE, write=True)
                    requested = True
        raise SyncFailed(
            f"committed on {self.active.name}, but {self.label} is not synchronized: {why}"
            f"{', also after sync-to-remote' if requested else ''}, for "
            f"{self.profile.ha_sync_timeout:.0f} s (the next run commits and checks again; it "
            "orders nothing)", ())

    def commit_text(self) -> str:
        return (f"commit {self.active.name} (the active peer of {self.label}; partial, admin "
                f"{self.profile.admin}), then wait until {self.passive.name} is synchronized")

    def notices(self) -> List[Notice]:
        return self.peers[0].notices() + self.peers[1].notices()


def _held(firewall: "Firewall", name: str, certificate: bool) -> bool:
    """The firewall's running configuration holds `name` with its key (and, with
    `certificate`, its certificate; else a request will do)."""
    element = firewall.api.show(f"{firewall.store}/certificate/entry[@name={_literal(name)}]")
    return element is not None and element.find("private-key") is not None and \
        (not certificate or element.find("public-key") is not None)


class PanoramaOwn(PanosDevice):
    """Panorama's own certificates and SSL/TLS service profiles (`/config/panorama`,
    panorama-ha-bindings.md §1.6): committed on Panorama, pushed nowhere."""

    def __init__(self, profile: FirewallProfile, sleep: Callable[[float], None] = time.sleep,
                 shared: Optional[http.Shared] = None,
                 stopping: Callable[[], bool] = lambda: False,
                 known: Optional[KnownFacts] = None) -> None:
        super().__init__(profile, Target(), "/config/panorama", sleep, shared, stopping, known)

    def read(self) -> DeviceView:
        """Panorama's own store and its profiles, alone: one `get` of /config/panorama."""
        self.view = parse_view(self.api.get(self.store), "panorama", self.known)
        return self.view

    def generate(self, name: str, profile: CertificateProfile, again: bool = False) -> None:
        # A session target left by an interrupted template operation would send the key into
        # that template: clear it first (it is sticky per key, §1.3).
        self.api.op(CLEAR_TARGET)
        super().generate(name, profile, again)

    def export_csr(self, name: str) -> str:
        return _csr_of(self._entry(name), name, self.api.label)

    def import_certificate(self, name: str, cert: x509.Certificate) -> CertificateEntry:
        self.api.op(CLEAR_TARGET)
        return super().import_certificate(name, cert)

    def import_ca(self, name: str, cert: x509.Certificate) -> None:
        self.api.op(CLEAR_TARGET)
        super().import_ca(name, cert)

    def commit_text(self) -> str:
        return f"commit Panorama {self.name} (partial, admin {self.profile.admin})"


@dataclass(frozen=True)
class Stack:
    """A template stack a template's certificates are pushed to, and its firewalls."""

    name: str
    devices: Tuple[Tuple[str, str], ...]  # (serial, hostname)


class PanoramaTemplate(PanosDevice):
    """A template's shared (or vsys) store on Panorama (panorama-ha-bindings.md §1): the key
    and CSR are made on Panorama in the template's context, certificates are imported with
    the template as target, and the commit on Panorama is followed by a push to every
    template stack that holds the template (or the ones the profile names), judged device by
    device (§2.3)."""

    def __init__(self, profile: FirewallProfile, sleep: Callable[[float], None] = time.sleep,
                 shared: Optional[http.Shared] = None,
                 stopping: Callable[[], bool] = lambda: False,
                 known: Optional[KnownFacts] = None) -> None:
        assert profile.template is not None
        self.template = profile.template
        self.root = f"{DEVICE_XPATH}/template/entry[@name={_literal(profile.template)}]"
        store = f"{self.root}/config/devices/entry[@name='localhost.localdomain']/vsys/" \
                f"entry[@name='{profile.vsys}']" if profile.vsys else f"{self.root}/config/shared"
        # Shared-store imports name the template; a vsys store needs the session target
        # instead, as target-tpl-vsys is ignored before PAN-OS 12.1 (§1.3, PAN-257229).
        super().__init__(profile, Target(template=None if profile.vsys else profile.template),
                         store, sleep, shared, stopping, known)
        self.config_root = f"{self.root}/config"
        self.stacks: List[Stack] = []
        self.unscoped_push = False  # Panorama refused <admin> in commit-all

    awaits = "committed on Panorama and pushed to every firewall"

    # -- reading: the template, and where it is pushed ------------------------------------

    def read(self) -> DeviceView:
        # A session target left by a run that was killed mid-generate is sticky per key
        # (§1.3): clear it before anything relies on targets.
        self.api.op(CLEAR_TARGET)
        template = self.api.get(self.root)
        if template is None:
            raise PanosError(f"{self.api.label}: there is no template '{self.template}' on "
                             f"Panorama {self.profile.panorama}")
        # One read of the whole template: it exists, and its store's scope is in it.
        if self.profile.vsys and not any(
                v.get("name") == self.profile.vsys
                for v in template.findall("config/devices/entry/vsys/entry")):
            raise PanosError(f"{self.api.label}: template '{self.template}' has no "
                             f"{self.profile.vsys}")
        self.view = parse_config(template.find("config"), self.profile.vsys, self.known)
        # Where Panorama might put a request meant for the template (§1.5: its own store;
        # for a vsys, the template's shared store, as with target-tpl-vsys, PAN-257229):
        # new objects take names free there too, so a probe never lands on a real one.
        own = self.api.get(PANORAMA_STORE)
        self.view.taken = {e.get("name", "") for e in
                           (own.findall("entry") if own is not None else [])}
        if self.profile.vsys:
            self.view.taken |= {e.get("name", "") for e in
                                template.findall("config/shared/certificate/entry")}
        holding = self._holding()
        self.stacks = self._stacks(holding)
        self.view.bindings += self._merged_references(holding)
        return self.view

    def _holding(self) -> Dict[str, ET.Element]:
        """The template stacks that hold the template, by name."""
        listing = self.api.get(f"{DEVICE_XPATH}/template-stack")
        entries = listing.findall("entry") if listing is not None else []
        return {e.get("name", ""): e for e in entries
                if self.template in [(m.text or "").strip()
                                     for m in e.findall("templates/member")]}

    def _stacks(self, holding: Dict[str, ET.Element]) -> List[Stack]:
        wanted = list(self.profile.template_stacks) or list(holding)
        for name in wanted:
            if name not in holding:
                known = ", ".join(holding) or "none"
                raise PanosError(f"{self.api.label}: template stack '{name}' (in "
                                 f"{self.name}.template_stacks) does not hold template "
                                 f"'{self.template}' (the stacks that do: {known})")
        serials = {name: [d.get("name", "") for d in holding[name].findall("devices/entry")]
                   for name in wanted}
        hostnames = self._hostnames() if any(serials.values()) else {}
        return [Stack(name, tuple((s, hostnames.get(s, s)) for s in serials[name]))
                for name in wanted]

    def _merged_references(self, holding: Dict[str, ET.Element]) -> List[Binding]:
        """Consumers outside the template that its certificates meet on the firewalls: the
        stacks' own configuration and their other member templates (§1.1), which are
        merged with it. They keep an old object alive; the agent never repoints them."""
        found: List[Binding] = []
        others: Dict[str, None] = {}
        for name, stack in holding.items():
            found += _scope_references(stack.find("config"), f"template-stack {name}")
            for member in stack.findall("templates/member"):
                if (member.text or "").strip() != self.template:
                    others[(member.text or "").strip()] = None
        for other in others:
            element = self.api.get(f"{DEVICE_XPATH}/template/entry[@name={_literal(other)}]")
            if element is not None:
                found += _scope_references(element.find("config"), f"template {other}")
        return found

    def _hostnames(self) -> Dict[str, str]:
        """Serial to hostname, for messages: `show devices all` (§1.2)."""
        root = self.api.op("<show><devices><all/></devices></show>")
        return {(e.findtext("serial") or e.get("name") or "").strip():
                (e.findtext("hostname") or "").strip()
                for e in root.findall("result/devices/entry")}

    # -- certificates: in the template's context ------------------------------------------

    def generate(self, name: str, profile: CertificateProfile, again: bool = False) -> None:
        """In the template's context: the session target, then the generate, then the target
        reset (§1.3). Whether real Panorama makes the CSR in the template is not confirmed
        (§1.5): where it landed is checked, and what landed elsewhere is removed. A
        certificate already under that name elsewhere is never touched: the run refuses to
        generate over it (a generate there would replace its key)."""
        elsewhere = self._elsewhere(name)
        for path, where in elsewhere:
            found = self.api.get(path)
            if found is None:
                continue
            if again and found.find("csr") is not None and found.find("public-key") is None:
                # The request an interrupted run of ours made there (the state file says
                # that run asked for it): nothing uses a bare request.
                log.info("%s: deleting %s, left in %s by an interrupted run", self.api.label,
                         name, where)
                self.api.delete(path)
                continue
            raise NothingMade(f"{self.api.label}: {name} is already a certificate in {where}; "
                              "a generate that Panorama put there would replace its key, so "
                              "none was made. Nothing was ordered; give the certificate "
                              "profile another object_name")
        self.api.op(self._target_op())
        try:
            try:
                self.api.op(generate_command(name, profile), write=True)
            except PanosError as exc:
                if not exc.refused:
                    raise  # unanswered: it may have been made; the next run looks again
                raise NothingMade(self._not_made(name, f"it refused: {exc}")) from None
        finally:
            self.api.op(CLEAR_TARGET)
        entry = self._entry(name)
        if entry is not None and entry.find("csr") is not None:
            self.view.certificates[name] = CertificateEntry(name, has_key=True)
            return
        landed = [(path, where) for path, where in elsewhere if self.api.get(path) is not None]
        for path, _ in landed:
            self.api.delete(path)
        raise NothingMade(self._not_made(
            name, f"it made the key in {landed[0][1]}, not in the template's store; that key "
                  "was deleted" if landed else "no request appeared in the template"))

    def _elsewhere(self, name: str) -> List[Tuple[str, str]]:
        """(xpath, description) of where Panorama might put a request meant for the
        template's store (see read)."""
        places = [(f"{PANORAMA_STORE}/entry[@name={_literal(name)}]",
                   "Panorama's own store")]
        if self.profile.vsys:
            places.append((f"{self.root}/config/shared/certificate/entry"
                           f"[@name={_literal(name)}]",
                           f"template '{self.template}' shared"))
        return places

    def _not_made(self, name: str, why: str) -> str:
        return (f"Panorama {self.profile.panorama} did not make the key and CSR for {name} in "
                f"template '{self.template}' ({why}). Nothing was ordered and nothing is left "
                "in the template. Making a CSR in a template is not confirmed on real Panorama "
                "(README, Panorama): instead, give each firewall of the template's stacks an "
                f"entry with 'via: {self.profile.panorama}' and its 'serial', and a certificate "
                "profile for each in place of this one (the key is then made on that "
                "firewall)")

    def _target_op(self) -> str:
        vsys = f"<vsys>{escape(self.profile.vsys)}</vsys>" if self.profile.vsys else ""
        return (f"<set><system><setting><target><template><name>{escape(self.template)}"
                f"</name>{vsys}</template></target></setting></system></set>")

    def export_csr(self, name: str) -> str:
        return _csr_of(self._entry(name), name, self.api.label)

    def import_certificate(self, name: str, cert: x509.Certificate) -> CertificateEntry:
        with self._targeted():
            return super().import_certificate(name, cert)

    def import_ca(self, name: str, cert: x509.Certificate) -> None:
        with self._targeted():
            super().import_ca(name, cert)

    @contextlib.contextmanager
    def _targeted(self) -> Iterator[None]:
        """A vsys store is reached through the session target (target-tpl-vsys is ignored);
        the shared store through target-tpl, with no session state to leave behind."""
        if not self.profile.vsys:
            yield
            return
        self.api.op(self._target_op())
        try:
            yield
        finally:
            self.api.op(CLEAR_TARGET)

    # -- commit, then push ------------------------------------------------------------------

    def commit(self) -> CommitOutcome:
        """Commit this admin's changes on Panorama, then push each stack and require OK from
        the job and from every firewall the stack holds (§2.3, §2.4). The push is made even
        when Panorama had nothing left to commit: an earlier run's push may have failed."""
        committed = self._commit_own()
        pushes: List[DevicePush] = []
        problems: List[str] = []
        for stack in self.stacks:
            try:
                stack_pushes, problem = self._push(stack)
            except PanosError as exc:  # not started, or not finished in push_timeout
                stack_pushes, problem = [], str(exc)
            pushes += stack_pushes
            problems += [problem] if problem else []
        failed = [p for p in pushes if not p.ok]
        if failed or problems:
            counted = f" on {len(failed)} of {len(pushes)} firewalls" if failed else ""
            raise PushFailed(
                f"committed on Panorama {self.profile.panorama}, but the push of template "
                f"'{self.template}' failed{counted}: " +
                "; ".join([f"{p.describe()}: {p.status}: {' / '.join(p.details) or p.result}"
                           for p in failed] + problems) +
                " (the next run pushes again; it orders nothing)", pushes)
        unreached = None
        if not pushes:
            # Committed, but on no firewall: not a success (pan-os-ansible #400), and no
            # failure either; the certificate waits, and each run pushes again.
            unreached = f"template '{self.template}' is in no template stack" \
                if not self.stacks else "its template stacks hold no firewall"
            log.warning("%s: committed on Panorama, but pushed to no firewall: %s",
                        self.api.label, unreached)
        return CommitOutcome(committed, tuple(pushes), unreached)

    def _push(self, stack: Stack) -> Tuple[List[DevicePush], Optional[str]]:
        """Push one stack; its firewalls' results, and what went wrong beyond them."""
        label = self.api.label
        job = self._start_push(stack)
        if job is None:
            return [], f"the push of template stack {stack.name} was not started (no job)"
        log.info("%s: push of template stack %s started (job %s)", label, stack.name, job)
        result = self.api.wait_job(job, self.profile.push_timeout, what="push job",
                                   devices=True)
        pushes = [_device_push(stack.name, entry)
                  for entry in result.element.findall("devices/entry")]
        # A firewall of the stack that the job does not list was not pushed to.
        listed = {p.serial for p in pushes}
        pushes += [DevicePush(stack=stack.name, serial=serial, hostname=hostname,
                              result="", status="not in the push job")
                   for serial, hostname in stack.devices if serial not in listed]
        for push in pushes:
            log.info("%s: push of %s to %s: %s", label, stack.name, push.describe(),
                     push.status or push.result)
        if not pushes:
            log.warning("%s: template stack %s holds no firewall: its push reached none",
                        label, stack.name)
        if result.result != "OK" and all(p.ok for p in pushes):
            # Every firewall fine, yet the job failed: Panorama's own words say why.
            return pushes, f"push job {job} of template stack {stack.name} ended " \
                           f"{result.result or 'without a result'}" + \
                           (f": {' / '.join(d for d in result.details if d)}"
                            if any(result.details) else "")
        return pushes, None

    def _start_push(self, stack: Stack) -> Optional[str]:
        """`commit-all` of one stack, limited to this admin's changes (PAN-OS 10.2+), so
        that what another admin committed on Panorama but did not push stays unpushed
        (§2.2). Older releases refuse `<admin>` there ("unexpected here", pan-os-python
        #515): then the push carries every admin's committed changes, and the
        administrator is told once."""
        name = f"<name>{escape(stack.name)}</name>"
        description = f"<description>{escape(self.profile.commit_description)}</description>"
        if not self.unscoped_push:
            try:
                return self.api.commit(
                    f"<commit-all><template-stack>{name}{description}<admin><member>"
                    f"{escape(self.profile.admin)}</member></admin></template-stack>"
                    "</commit-all>", action="all")
            except PanosError as exc:
                if not exc.refused or "unexpected" not in str(exc):
                    raise
                log.info("%s: Panorama refuses <admin> in commit-all; pushing without it",
                         self.api.label)
                self.unscoped_push = True
        return self.api.commit(f"<commit-all><template-stack>{name}{description}"
                               "</template-stack></commit-all>", action="all")

    def notices(self) -> List[Notice]:
        notices = super().notices()
        if self.unscoped_push:
            notices.append(Notice(
                f"unscoped push {self.profile.panorama}",
                f"{self.api.label}: Panorama refuses a push limited to admin "
                f"{self.profile.admin} (before PAN-OS 10.2), so the agent's pushes carry "
                "every administrator's changes committed on Panorama; push others' changes "
                "before the agent runs, or upgrade Panorama"))
        return notices

    def commit_text(self) -> str:
        text = f"commit Panorama {self.profile.panorama} (partial, admin {self.profile.admin})"
        if not self.stacks:
            return f"{text}; template '{self.template}' is in no template stack, so no push"
        pushes = [f"{s.name} ({', '.join(h for _, h in s.devices) or 'no firewall'})"
                  for s in self.stacks]
        return f"{text}, then push template stack{'s' if len(pushes) > 1 else ''} " + \
            " and ".join(pushes)


CLEAR_TARGET = "<set><system><setting><target><none/></target></setting></system></set>"


def generate_command(name: str, profile: CertificateProfile) -> str:
    """`request certificate generate ... signed-by external` for `profile` (panos.md §3.3)."""
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
    return "<request><certificate><generate>" + "".join(parts) + \
        "</generate></certificate></request>"


def _csr_of(entry: Optional[ET.Element], name: str, label: str) -> str:
    """A request's CSR from its entry's <csr> (panos.md §3.4: read with `get`, before the
    commit), where an export would need a target."""
    text = (entry.findtext("csr") or "") if entry is not None else ""
    if "CERTIFICATE REQUEST" not in text:
        raise PanosError(f"{label}: {name} holds no CSR")
    return text.strip() + "\n"


def _device_push(stack: str, entry: ET.Element) -> DevicePush:
    """One device entry of a CommitAll job; its lines are under details/msg/errors even when
    it succeeded (§2.3)."""
    lines = [" ".join("".join(line.itertext()).split())
             for line in entry.findall("details/msg/errors/line")]
    serial = (entry.findtext("serial-no") or entry.findtext("serial") or "").strip()
    return DevicePush(stack=stack, serial=serial,
                      hostname=(entry.findtext("devicename") or serial).strip(),
                      result=(entry.findtext("result") or "").strip(),
                      status=(entry.findtext("status") or "").strip(),
                      details=tuple(line for line in lines if line))


# --- parsing --------------------------------------------------------------------------------

def parse_entry(entry: ET.Element, known: Optional[KnownFacts] = None) -> CertificateEntry:
    return CertificateEntry(entry.get("name", ""), entry.find("private-key") is not None,
                            status=(entry.findtext("status") or "valid").strip(),
                            pem=entry.findtext("public-key"), known=known)


def _scope_references(config: Optional[ET.Element], where: str) -> List[Binding]:
    """The bindings in a template's (or stack's) `config`, in every scope."""
    if config is None:
        return []
    return [dataclasses.replace(b, where=where) for b in parse_config(config, None).bindings
            if b.certificate]


def parse_view(scope: Optional[ET.Element], label: str = "",
               known: Optional[KnownFacts] = None) -> DeviceView:
    """A store's scope alone: its certificates and the bindings in it (Panorama's own)."""
    view = DeviceView(store_scope=label)
    if scope is None:
        return view
    for element in scope.findall("certificate/entry"):
        entry = parse_entry(element, known)
        view.certificates[entry.name] = entry
    view.bindings = find_bindings(scope, label=label)
    return view


def parse_config(config: Optional[ET.Element], vsys: Optional[str],
                 known: Optional[KnownFacts] = None) -> DeviceView:
    """A firewall's configuration (or a template's): the certificates of the store the
    profile names (shared, or `vsys`), and every consumer that can see them: for shared,
    those in shared, in every vsys (a vsys may name a shared certificate, §5) and at device
    level; for a vsys, those in it and at device level."""
    label = vsys or "shared"
    view = DeviceView(store_scope=label)
    if config is None:
        return view
    shared = config.find("shared")
    device = next((d for d in config.findall("devices/entry")
                   if d.get("name") == "localhost.localdomain"), None)
    vsyses = {v.get("name", ""): v for v in device.findall("vsys/entry")} \
        if device is not None else {}
    store = vsyses.get(vsys) if vsys else shared
    if store is not None:
        for element in store.findall("certificate/entry"):
            entry = parse_entry(element, known)
            view.certificates[entry.name] = entry
    if vsys:
        # The vsys's own consumers; shared profiles only to know where a vsys consumer's
        # profile lives (they cannot name a vsys certificate). Device-level consumers name
        # shared certificates.
        view.bindings = find_bindings(store, label=label, lives=(STORE, VSYS))
        view.bindings += [b for b in find_bindings(shared, label="shared")
                          if b.kind == SSL_TLS_SERVICE_PROFILE]
        return view
    view.bindings = find_bindings(shared, label="shared")
    for name, element in vsyses.items():
        view.bindings += find_bindings(element, label=name, lives=(STORE, VSYS))
        view.vsys_names[name] = {e.get("name", "")
                                 for e in element.findall("certificate/entry")}
    view.bindings += find_bindings(device, label=DEVICE_SCOPE, lives=(DEVICE,))
    return view


def _pem(cert: x509.Certificate) -> bytes:
    from .certs import pem
    return pem(cert).encode("ascii")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def _literal(value: str) -> str:
    return f"'{value}'" if "'" not in value else f'"{value}"'


__all__ = ["CertificateEntry", "CommitOutcome", "Device", "DeviceView", "Firewall",
           "NothingMade", "PanoramaOwn", "PanoramaTemplate", "PushFailed",
           "SSL_TLS_SERVICE_PROFILE", "make_device", "parse_entry", "parse_view"]
