"""Candidate and running configuration of the emulated firewall.

The model (panos.md §2.1, §4 and §9):

* Every change an administrator makes (`set`, `edit`, `delete`, `rename`, and the entries
  written by `request certificate generate` and `type=import`) is applied to the **candidate**
  at once and also recorded as a `Change` tagged with the admin's name.
* Changed candidate nodes carry `admin`, `dirtyId` and `time` attributes, as `get` shows on a
  real device.
* A commit replays changes onto the **running** tree: a full commit replays every pending change,
  a partial commit only the named admins' (so another admin's pending change stays in the
  candidate). The candidate is then rebuilt as running + the changes still pending.
* References (an SSL/TLS service profile's certificate, a certificate profile's CA, decryption
  trust, GlobalProtect and management-interface profile selection) are found by
  `reference_sites`; they block deletes (code 10), follow renames, and are validated at commit
  (a dangling reference, or a service profile pointing at a certificate without both key and
  certificate, makes the commit FAIL).
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from defusedxml import ElementTree as SafeET

from . import xpath as xp

DEVICE = "localhost.localdomain"
MAX_NAME = 63
# Certificate names on Panorama, its own and its templates' (panos.md §3.11).
PANORAMA_MAX_CERTIFICATE_NAME = 31
DIRTY_ATTRS = ("admin", "dirtyId", "time")

# Containers whose entries are named objects with PAN-OS name rules (panos.md §3.11).
NAMED_CONTAINERS = {"certificate", "ssl-tls-service-profile", "certificate-profile"}
# Letters, digits, space, '.', '_', '-', '(', ')', starting with a letter or digit: the
# conservative reading of panos.md §3.11 (predefined names contain '.', '_', '(' and ')';
# peers.md §2: names starting with '*' or '_' are rejected).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._()\-]*")

# Children an SSL/TLS service profile entry may have (pango v2 device/profile/ssltls).
SSL_PROFILE_CHILDREN = {"certificate", "protocol-settings"}
SSL_PROTOCOL_CHILDREN = {"min-version", "max-version", "enc-algo-3des", "enc-algo-rc4",
                         "enc-algo-aes-128-cbc", "enc-algo-aes-256-cbc",
                         "enc-algo-aes-128-gcm", "enc-algo-aes-256-gcm",
                         "enc-algo-chacha20-poly1305", "keyxchg-algo-rsa",
                         "keyxchg-algo-dhe", "keyxchg-algo-ecdhe", "auth-algo-sha1",
                         "auth-algo-sha256", "auth-algo-sha384"}
TLS_VERSIONS = {"tls1-0", "tls1-1", "tls1-2", "tls1-3", "max"}


class RawXml(str):
    """A message line that is already XML (real devices wrap names in CDATA sections)."""


_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    """Drop characters XML 1.0 cannot carry (clients may echo anything back into messages)."""
    return _NOT_XML.sub("?", text)


def cdata(text: str) -> RawXml:
    return RawXml("<![CDATA[" + xml_safe(text).replace("]]>", "]]]]><![CDATA[>") + "]]>")


def plain(line: str) -> str:
    """A message line as text, CDATA markers removed."""
    if isinstance(line, RawXml):
        return re.sub(r"<!\[CDATA\[(.*?)\]\]>", r"\1", line, flags=re.S)
    return line


class ConfigError(Exception):
    """A request the device refuses: `code` and message lines for the envelope."""

    def __init__(self, code: int, *lines: str, status: str = "error") -> None:
        super().__init__(" ".join(plain(line) for line in lines))
        self.code = code
        self.lines = list(lines)
        self.status = status


@dataclass
class Change:
    admin: str
    action: str  # set | edit | delete | rename
    xpath: str
    element: Optional[str] = None
    newname: Optional[str] = None
    dirty_id: int = 0
    time: str = ""


@dataclass
class Site:
    """One place in the configuration that names another object."""

    kind: str  # "certificate" or "ssl-tls-service-profile"
    value: str
    scope: str  # "shared", "panorama" or a vsys name: where the name is resolved
    description: str
    holder: ET.Element  # element whose text (or @name) is the reference
    attr: Optional[str] = None
    config: Optional[ET.Element] = None  # the configuration tree the name resolves in

    def tree(self, root: ET.Element) -> ET.Element:
        """Where the name resolves: `config`, else the whole tree (`is not None`: an element
        with no children is false, and Python 3.12 warns of that test)."""
        return self.config if self.config is not None else root

    def set_value(self, value: str) -> None:
        if self.attr:
            self.holder.set(self.attr, value)
        else:
            self.holder.text = value


def panos_time(when: Optional[dt.datetime] = None) -> str:
    return (when or dt.datetime.now()).strftime("%Y/%m/%d %H:%M:%S")


def initial_config(hostname: str, vsys: Sequence[str]) -> ET.Element:
    vsys_entries = "".join(f'<entry name="{v}"><display-name>{v}</display-name></entry>'
                           for v in vsys)
    return SafeET.fromstring(
        '<config version="11.1.0" urldb="paloaltonetworks" detail-version="11.1.4">'
        "<mgt-config><users/></mgt-config>"
        "<shared><certificate/><ssl-tls-service-profile/></shared>"
        f'<devices><entry name="{DEVICE}"><deviceconfig><system><hostname>{hostname}'
        "</hostname></system></deviceconfig>"
        f"<vsys>{vsys_entries}</vsys></entry></devices></config>")


# --- references ------------------------------------------------------------------------------

def config_roots(root: ET.Element) -> Iterator[Tuple[str, ET.Element]]:
    """The configuration trees a device holds: its own and, on Panorama, each template's and
    template stack's (a firewall configuration in miniature, panorama-ha-bindings.md §1.1),
    with the words a reference path in an error starts with (pan-chainguard #4:
    `template -> T -> config -> ...`)."""
    yield "", root
    for device in root.findall("devices/entry"):
        for kind in ("template", "template-stack"):
            for entry in device.findall(f"{kind}/entry"):
                config = entry.find("config")
                if config is not None:
                    yield f"{kind} -> {entry.get('name')} -> config -> ", config


def scopes(root: ET.Element) -> Iterator[Tuple[str, ET.Element]]:
    """The stores of one configuration tree: shared, Panorama's own, each vsys."""
    shared = root.find("shared")
    if shared is not None:
        yield "shared", shared
    panorama = root.find("panorama")
    if panorama is not None:
        yield "panorama", panorama
    for device in root.findall("devices/entry"):
        for vsys in device.findall("vsys/entry"):
            yield vsys.get("name", ""), vsys


def reference_sites(root: ET.Element) -> Iterator[Site]:
    for prefix, config in config_roots(root):
        # A template stack's own nodes resolve in the stack as its firewalls get it: its
        # config merged with its member templates' (so a stack profile may name a template's
        # certificate, §1.1).
        resolve = stack_config(root, prefix.split(" -> ")[1]) \
            if prefix.startswith("template-stack -> ") else config
        for site in _sites(config, prefix):
            site.config = resolve
            yield site


def _sites(root: ET.Element, head: str) -> Iterator[Site]:
    def text_sites(kind: str, scope: str, elements: List[ET.Element],
                   describe: str) -> Iterator[Site]:
        for element in elements:
            value = (element.text or "").strip()
            if value:
                yield Site(kind, value, scope, describe, element)

    # A firewall names shared objects bare (panos.md §2.2); a template path spells the tree
    # out (pan-chainguard #4: `template -> T -> config -> devices -> localhost.localdomain ->
    # vsys -> V -> ...`).
    prefix = {"shared": f"{head}shared -> " if head else "", "panorama": f"{head}panorama -> "}
    vsys_lead = f"{head}devices -> {DEVICE} -> vsys -> " if head else "vsys -> "
    for scope, node in scopes(root):
        lead = prefix.get(scope, f"{vsys_lead}{scope} -> ")
        for profile in node.findall("ssl-tls-service-profile/entry"):
            yield from text_sites("certificate", scope, profile.findall("certificate"),
                                  f"{lead}ssl-tls-service-profile -> {profile.get('name')} "
                                  "-> certificate")
        for cert_profile in node.findall("certificate-profile/entry"):
            for ca in cert_profile.findall("CA/entry"):
                yield Site("certificate", ca.get("name", ""), scope,
                           f"{lead}certificate-profile -> {cert_profile.get('name')} -> CA -> "
                           f"{ca.get('name')}", ca, "name")
        yield from text_sites("certificate", scope,
                              node.findall("ssl-decrypt/trusted-root-CA/member"),
                              f"{lead}ssl-decrypt -> trusted-root-CA")
        for which in ("forward-trust-certificate", "forward-untrust-certificate"):
            for algo in ("rsa", "ecdsa"):
                yield from text_sites("certificate", scope,
                                      node.findall(f"ssl-decrypt/{which}/{algo}"),
                                      f"{lead}ssl-decrypt -> {which} -> {algo}")
        for portal in node.findall("global-protect/global-protect-portal/entry"):
            yield from text_sites("ssl-tls-service-profile", scope,
                                  portal.findall("portal-config/ssl-tls-service-profile"),
                                  f"{lead}global-protect-portal -> {portal.get('name')} -> "
                                  "portal-config -> ssl-tls-service-profile")
        for gateway in node.findall("global-protect/global-protect-gateway/entry"):
            yield from text_sites("ssl-tls-service-profile", scope,
                                  gateway.findall("ssl-tls-service-profile"),
                                  f"{lead}global-protect-gateway -> {gateway.get('name')} -> "
                                  "ssl-tls-service-profile")
        for rule in node.findall("rulebase/decryption/rules/entry"):
            inbound = rule.find("type/ssl-inbound-inspection")
            if inbound is None:
                continue
            where = f"{lead}rulebase -> decryption -> rules -> {rule.get('name')} -> type -> " \
                    "ssl-inbound-inspection"
            members = inbound.findall("certificates/member")
            yield from text_sites("certificate", scope, members, f"{where} -> certificates") \
                if members else text_sites("certificate", scope, [inbound], where)
    # IKE gateways are device-level network configuration; their local certificate is a
    # shared one (the lab's choice: the reference names no vsys for it).
    for device in root.findall("devices/entry"):
        for gateway in device.findall("network/ike/gateway/entry"):
            yield from text_sites(
                "certificate", "shared",
                gateway.findall("authentication/certificate/local-certificate/name"),
                f"{head}network -> ike -> gateway -> {gateway.get('name')} -> authentication "
                "-> certificate -> local-certificate -> name")
    # The management interface's profile: on Panorama its own (/config/panorama), on a
    # firewall or in a template the shared one.
    system_scope = "panorama" if root.find("panorama") is not None else "shared"
    for device in root.findall("devices/entry"):
        yield from text_sites("ssl-tls-service-profile", system_scope,
                              device.findall("deviceconfig/system/ssl-tls-service-profile"),
                              f"{head}deviceconfig -> system -> ssl-tls-service-profile")


def find_object(root: ET.Element, kind: str, scope: str, name: str) -> Optional[ET.Element]:
    """Resolve a name as PAN-OS does: the vsys's own object first, then shared. `root` is the
    configuration tree the reference sits in (a template's, on Panorama)."""
    order = [scope, "shared"] if scope != "shared" else ["shared"]
    by_scope = dict(scopes(root))
    for where in order:
        node = by_scope.get(where)
        if node is None:
            continue
        for entry in node.findall(f"{kind}/entry"):
            if entry.get("name") == name:
                return entry
    return None


# Consumers that present the certificate, so it must hold its private key.
SERVES_WITH_KEY = ("ssl-tls-service-profile", "ssl-inbound-inspection", "local-certificate")


def inbound_form_problems(root: ET.Element, list_form: bool) -> List[str]:
    """SSL inbound inspection names its certificate as text before PAN-OS 10.2, as a
    <certificates> member list from 10.2; each release refuses the other form (the 10.2
    error: pan-os-ansible #401)."""
    problems = []
    for rule in root.iter("entry"):
        inbound = rule.find("type/ssl-inbound-inspection")
        if inbound is None:
            continue
        name = rule.get("name")
        listed = inbound.find("certificates") is not None
        if list_form and not listed and (inbound.text or "").strip():
            problems += [f"{name} -> type -> ssl-inbound-inspection unexpected here",
                         f"{name} -> type -> ssl-inbound-inspection is unexpected",
                         f"{name} -> type is invalid"]
        elif not list_form and listed:
            problems += [f"{name} -> type -> ssl-inbound-inspection -> certificates unexpected "
                         "here", f"{name} -> type is invalid"]
    return problems


def validate_references(root: ET.Element) -> List[str]:
    """Commit-time validation: the detail lines of every problem, empty when valid."""
    problems = []
    for site in reference_sites(root):
        target = find_object(site.tree(root), site.kind, site.scope, site.value)
        if target is None:
            problems.append(f"{site.description} '{site.value}' is not a valid reference")
        elif site.kind == "certificate" and any(
                word in site.description for word in SERVES_WITH_KEY):
            if target.find("public-key") is None or target.find("private-key") is None:
                problems.append(f"{site.description}: certificate '{site.value}' has no "
                                "certificate and private key pair")
    return problems


# --- the store -------------------------------------------------------------------------------

def _strip_dirty(element: ET.Element) -> None:
    for node in element.iter():
        for attr in DIRTY_ATTRS:
            node.attrib.pop(attr, None)


def name_limit(root: ET.Element, container: str) -> int:
    """63 characters, but 31 for a certificate on Panorama (a tree with /config/panorama)."""
    return PANORAMA_MAX_CERTIFICATE_NAME if container == "certificate" and \
        root.find("panorama") is not None else MAX_NAME


def _check_name(container: str, name: str, limit: int = MAX_NAME) -> None:
    if len(name) > limit:
        raise ConfigError(12, cdata(f" {container} -> {name}  {name} can be at most "
                                    f"{limit} characters, but current length: {len(name)}"))
    if not NAME_RE.fullmatch(name):
        raise ConfigError(12, f" {container} -> {name}  '{name}' is not a valid name: use "
                              "letters, digits, spaces, '.', '_', '-', '(' and ')', starting "
                              "with a letter or digit")


def _check_names(element: ET.Element, parent_tag: Optional[str], root: ET.Element) -> None:
    """Name rules for entries under named containers, and the SSL/TLS profile schema."""
    if element.tag == "entry" and parent_tag in NAMED_CONTAINERS:
        _check_name(parent_tag, element.get("name", ""), name_limit(root, parent_tag))
        if parent_tag == "ssl-tls-service-profile":
            _check_ssl_profile(element)
    for child in element:
        _check_names(child, element.tag, root)


def _check_ssl_profile(entry: ET.Element) -> None:
    name = entry.get("name")
    for child in entry:
        if child.tag not in SSL_PROFILE_CHILDREN:
            raise ConfigError(12, f" ssl-tls-service-profile -> {name} -> {child.tag} "
                                  "is unexpected")
        if child.tag == "protocol-settings":
            for setting in child:
                if setting.tag not in SSL_PROTOCOL_CHILDREN:
                    raise ConfigError(12, f" ssl-tls-service-profile -> {name} -> "
                                          f"protocol-settings -> {setting.tag} is unexpected")
                if setting.tag.endswith("-version") and (setting.text or "") not in \
                        TLS_VERSIONS:
                    raise ConfigError(12, f" ssl-tls-service-profile -> {name} -> "
                                          f"protocol-settings -> {setting.tag} "
                                          f"'{setting.text}' is not a valid value")
        elif child.tag == "certificate" and len(child):
            raise ConfigError(12, f" ssl-tls-service-profile -> {name} -> certificate "
                                  "must be a name")


def _merge(target: ET.Element, new: ET.Element) -> None:
    """`set` semantics: add or merge children; lists (`member`) are unions; leaves replace."""
    for child in new:
        if child.tag == "entry":
            existing = next((e for e in target.findall("entry")
                             if e.get("name") == child.get("name")), None)
            if existing is None:
                target.append(copy.deepcopy(child))
            else:
                _merge(existing, child)
        elif child.tag == "member":
            if not any((m.text or "") == (child.text or "") for m in target.findall("member")):
                target.append(copy.deepcopy(child))
        else:
            existing = target.find(child.tag)
            if existing is None:
                target.append(copy.deepcopy(child))
            elif len(child) and len(existing):
                _merge(existing, child)
            else:
                index = list(target).index(existing)
                target.remove(existing)
                target.insert(index, copy.deepcopy(child))
    if not len(new) and (new.text or "").strip():
        for child in list(target):
            target.remove(child)
        target.text = new.text


def parse_fragment(text: str) -> ET.Element:
    """Client XML (an `element` parameter) into a wrapper element; refuses entities/DTDs."""
    try:
        wrapper = SafeET.fromstring(f"<fragment>{text}</fragment>")
    except Exception as exc:  # defusedxml raises several types; all mean "malformed"
        raise ConfigError(18, f"Malformed Request: {exc}") from None
    for node in wrapper.iter():
        for attr in DIRTY_ATTRS:
            node.attrib.pop(attr, None)
    return wrapper


def parse_xpath(text: Optional[str]) -> xp.XPath:
    if not text:
        raise ConfigError(400, "Missing parameter xpath", status="error")
    try:
        return xp.parse(text)
    except xp.XPathError as exc:
        raise ConfigError(6, f"Bad Xpath: {exc}") from None


def _parent_tag(root: ET.Element, path: xp.XPath) -> Optional[str]:
    return path.steps[-2].tag if len(path.steps) >= 2 else None


def apply_change(root: ET.Element, change: Change, stamp: bool) -> None:
    """Apply one change to a tree; raises ConfigError when the device would refuse it."""
    path = parse_xpath(change.xpath)
    if change.action == "set":
        fragment = parse_fragment(change.element or "")
        if path.attribute:
            raise ConfigError(6, "Bad Xpath: cannot set an attribute")
        for child in fragment:
            _check_names(child, path.last.tag, root)
        if path.last.entry_name is not None and _parent_tag(root, path) in NAMED_CONTAINERS:
            container = _parent_tag(root, path) or ""
            _check_name(container, path.last.entry_name, name_limit(root, container))
        try:
            node = xp.ensure(root, path)
        except xp.XPathError as exc:
            raise ConfigError(12, f"Invalid object: {exc}") from None
        _merge(node, fragment)
        if node.tag == "entry" and _parent_tag(root, path) == "ssl-tls-service-profile":
            _check_ssl_profile(node)
        _stamp(node, change, stamp)
    elif change.action == "edit":
        fragment = parse_fragment(change.element or "")
        if len(fragment) != 1 or not path.last.matches(fragment[0]):
            raise ConfigError(12, f"Invalid object: edit element must be the node "
                                  f"'{path.last.tag}' the xpath names")
        new = fragment[0]
        _check_names(new, _parent_tag(root, path), root)
        parent_path = xp.XPath(path.steps[:-1])
        try:
            parent = xp.ensure(root, parent_path)
        except xp.XPathError as exc:
            raise ConfigError(12, f"Invalid object: {exc}") from None
        existing = [c for c in parent if path.last.matches(c)]
        if len(existing) > 1:
            raise ConfigError(8, "Object not unique")
        if existing:
            index = list(parent).index(existing[0])
            parent.remove(existing[0])
            parent.insert(index, new)
        else:
            parent.append(new)
        _stamp(new, change, stamp)
    elif change.action == "delete":
        pairs = xp.select_with_parents(root, path)
        if not pairs:
            raise ConfigError(7, "Object doesn't exist", status="success")
        doomed: Set[int] = {id(n) for _, node in pairs for n in node.iter()}
        blocking: Dict[str, List[str]] = {}
        for site in reference_sites(root):
            if id(site.holder) in doomed:
                continue
            target = find_object(site.tree(root), site.kind, site.scope, site.value)
            if target is not None and id(target) in doomed:
                blocking.setdefault(site.value, []).append(site.description)
        if blocking:
            lines: List[str] = []
            for name, where in blocking.items():
                lines.append(RawXml(cdata(f" {name}") +
                                    " cannot be deleted because of references from:"))
                lines.extend(f" {w}" for w in where)
            raise ConfigError(10, *lines)
        for parent, node in pairs:
            parent.remove(node)
            _stamp(parent, change, stamp)
    elif change.action == "rename":
        pairs = xp.select_with_parents(root, path)
        if not pairs:
            raise ConfigError(7, "Object doesn't exist")
        if len(pairs) > 1:
            raise ConfigError(8, "Object not unique")
        parent, node = pairs[0]
        new_name = change.newname or ""
        if not new_name:
            raise ConfigError(400, "Missing parameter newname")
        if parent.tag in NAMED_CONTAINERS:
            _check_name(parent.tag, new_name, name_limit(root, parent.tag))
        if any(c.get("name") == new_name for c in parent if c is not node):
            raise ConfigError(12, f" {parent.tag} -> {new_name} already exists")
        # References follow a rename, as in the web interface.
        followers = [s for s in reference_sites(root)
                     if find_object(s.tree(root), s.kind, s.scope, s.value) is node]
        node.set("name", new_name)
        for site in followers:
            site.set_value(new_name)
        _stamp(node, change, stamp)
    else:
        raise ConfigError(400, f"unknown action {change.action}")


def _stamp(node: ET.Element, change: Change, stamp: bool) -> None:
    if stamp and node.tag != "config":
        node.set("admin", change.admin)
        node.set("dirtyId", str(change.dirty_id))
        node.set("time", change.time)


class ConfigStore:
    """Candidate, running and pending changes; every method takes the store lock."""

    def __init__(self, root: ET.Element) -> None:
        self.lock = threading.RLock()
        self.running = root
        self.candidate = copy.deepcopy(root)
        self.pending: List[Change] = []
        self._dirty_counter = 0
        # The device's release's schema beyond names: problems of a candidate (a change
        # that makes any is refused, code 12).
        self.schema: Callable[[ET.Element], List[str]] = lambda tree: []

    def change(self, admin: str, action: str, xpath: str, element: Optional[str] = None,
               newname: Optional[str] = None) -> None:
        """Apply a change to the candidate (all or nothing) and record it for commit."""
        with self.lock:
            self._dirty_counter += 1
            record = Change(admin, action, xpath, element, newname, self._dirty_counter,
                            panos_time())
            trial = copy.deepcopy(self.candidate)
            apply_change(trial, record, stamp=True)
            problems = self.schema(trial)
            if problems:
                raise ConfigError(12, *(cdata(f" {p}") for p in problems))
            self.candidate = trial
            self.pending.append(record)

    def pending_admins(self) -> List[str]:
        with self.lock:
            return sorted({c.admin for c in self.pending})

    def build_running(self, changes: List[Change]) -> Tuple[ET.Element, List[str]]:
        """Running + `changes`, and the commit's validation problems (empty when valid)."""
        with self.lock:
            new = copy.deepcopy(self.running)
        problems = []
        for change in changes:
            try:
                apply_change(new, change, stamp=False)
            except ConfigError as exc:
                problems.append(f"{change.action} {change.xpath}: {exc}")
        _strip_dirty(new)
        problems.extend(validate_references(new))
        return new, problems

    def install(self, new_running: ET.Element, committed: List[Change]) -> None:
        """Make `new_running` the running config and rebuild the candidate from what is left."""
        with self.lock:
            done = {id(c) for c in committed}
            self.pending = [c for c in self.pending if id(c) not in done]
            self.running = new_running
            candidate = copy.deepcopy(new_running)
            for change in self.pending:
                try:
                    apply_change(candidate, change, stamp=True)
                except ConfigError:
                    pass  # conflicts with what was committed; the change is moot
            self.candidate = candidate

    def direct(self, tree: str = "both") -> List[ET.Element]:
        """The trees, for the lab's own seeding (no change record, no stamps)."""
        return [self.candidate, self.running] if tree == "both" else \
            [self.candidate if tree == "candidate" else self.running]


# --- templates: what Panorama pushes, and how a firewall holds it ------------------------------

TEMPLATE_MARK = {"src": "tpl"}  # panos.md §2.2: template-pushed nodes carry ptpl= and src=


def stack_config(panorama: ET.Element, stack: str) -> ET.Element:
    """The configuration a template stack gives its firewalls: the stack's own config first,
    then each member template's in order, the first to define a node winning (the PAN-OS
    precedence panorama-ha-bindings.md §1.1 names; the lab's choice, open question 6)."""
    base = f"devices/entry[@name='{DEVICE}']"
    merged = ET.Element("config")
    entry = next((e for e in panorama.findall(f"{base}/template-stack/entry")
                  if e.get("name") == stack), None)
    if entry is None:
        return merged
    sources = [entry.find("config")]
    for member in entry.findall("templates/member"):
        template = next((t for t in panorama.findall(f"{base}/template/entry")
                         if t.get("name") == (member.text or "").strip()), None)
        sources.append(template.find("config") if template is not None else None)
    for source in sources:
        if source is not None:
            _fill(merged, source)
    _strip_dirty(merged)
    return merged


def _fill(target: ET.Element, source: ET.Element) -> None:
    """Add what `target` lacks from `source` (entries by name, lists by value)."""
    for child in source:
        if child.tag == "entry":
            existing = next((e for e in target.findall("entry")
                             if e.get("name") == child.get("name")), None)
        elif child.tag == "member":
            if not any((m.text or "") == (child.text or "") for m in target.findall("member")):
                target.append(copy.deepcopy(child))
            continue
        else:
            existing = target.find(child.tag)
        if existing is None:
            target.append(copy.deepcopy(child))
        elif len(child):
            _fill(existing, child)


def push_layer(root: ET.Element, layer: ET.Element, source: str) -> None:
    """Put a pushed template configuration into a firewall's tree: what an earlier push put
    there goes, the new layer comes in marked `ptpl=SOURCE src=tpl`, and the firewall's own
    (local) nodes win over the template's (the lab's choice, open question 6)."""
    _drop_marked(root)
    _overlay(root, layer, source)


def _drop_marked(node: ET.Element) -> None:
    for child in list(node):
        if child.get("src") == "tpl":
            node.remove(child)
        else:
            _drop_marked(child)


def _overlay(target: ET.Element, layer: ET.Element, source: str) -> None:
    for child in layer:
        if child.tag == "member":
            if not any((m.text or "") == (child.text or "") for m in target.findall("member")):
                target.append(_marked(child, source))
            continue
        if child.tag == "entry":
            existing = next((e for e in target.findall("entry")
                             if e.get("name") == child.get("name")), None)
        else:
            existing = target.find(child.tag)
        if existing is None and child.tag != "entry" and len(child):
            # A container the firewall lacks: made unmarked, so that the firewall's own
            # entries added to it later survive the next push.
            existing = ET.SubElement(target, child.tag)
        if existing is None:
            target.append(_marked(child, source))
        elif len(child) and existing.get("src") != "tpl":
            if child.tag != "entry":
                _overlay(existing, child, source)
            # A local entry of the same name wins whole.


def _marked(node: ET.Element, source: str) -> ET.Element:
    copied = copy.deepcopy(node)
    copied.set("ptpl", source)
    copied.set("src", "tpl")
    return copied
