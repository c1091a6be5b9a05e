"""The emulated Panorama: the firewall's XML API plus what panorama-ha-bindings.md §7 models.

* **Stores.** Panorama's own certificates live under `/config/panorama`; each template and
  template stack holds a firewall configuration in miniature under
  `/config/devices/entry[@name='localhost.localdomain']/template[-stack]/entry[@name=X]/config`
  (§1.1). References inside a template resolve inside it; deletes and commits check them.
* **Targets.** `set system setting target template <name>T</name> [<vsys>V</vsys>]` sets a
  session target per administrator until `target none` (§1.3, kept per key as the reset
  implies). A target applies to `request certificate generate`, `type=import` and
  `type=export`; `type=import&target-tpl=X` puts into template (or stack) X's shared store,
  and `target-tpl-vsys` is ignored, as on PAN-OS 10.x/11.x (PAN-257229). Without a target,
  generate, import and export use Panorama's own store.
* **Generating in a template** is not confirmed on any real device (§1.5), so it is a
  setting: `template_generate` = `supported` (the CSR lands in the template), `error` (the
  op is refused) or `panorama-store` (the CSR lands in Panorama's own store, as a targetless
  generate would).
* **Commits.** A partial commit by admin works as on the firewall; it may also exclude
  `device-and-network` (which leaves Panorama's own certificates and device settings
  uncommitted, acme.sh PR #6915) and `shared-object` (which leaves /config/shared).
* **Pushes.** `type=commit&action=all` with `<commit-all><template-stack><name>S</name>`
  (or `<template><name>T</name>`: every stack holding T) pushes Panorama's *running*
  configuration, so uncommitted changes of any admin never reach a firewall. With
  `<admin><member>U</member></admin>` (PAN-OS 10.2+, §2.2) it pushes what the stack's last
  push came from plus U's changes committed since: another admin's committed but unpushed
  change stays on Panorama (the lab's model of "push scope: admin"). The CommitAll job
  reads FIN after `push_duration`, before its devices, which finish after
  `device_push_duration` (§2.3: the top-level `tfin` is earlier than the devices'). Each
  device then holds the stack's merged configuration (stack first, then its templates in
  order), marked `ptpl=S src=tpl`, its own local nodes winning.
* **Proxying.** A request with `target=SERIAL` goes to that managed firewall, which sees it
  as coming from the same administrator (§1 of panos.md §6.1); keygen is Panorama's own.

Choices where no public source shows the real behaviour (documented in the README): the
session-target answer `<msg>Session target set to template T</msg>`; the refusal texts for
an unknown target, stack or serial; a disconnected device's push entry (result FAIL, status
`not connected`, detail `device is not connected`); a failed device's entry (status
`commit failed` and the firewall's validation lines under `details/msg/errors`); the job's
top-level result (`OK` unless `push_failure_fails_job`), and `<push_type>template-stack</push_type>`
with `<tsname>S</tsname>` naming what was pushed.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import AbstractSet, Callable, Dict, List, Optional, Sequence, Set, Tuple

from defusedxml import ElementTree as SafeET

from .panos import (SW_VERSION, XML, Admin, PanosService, PanosSettings, _first, envelope,
                    error_response, escape)
from .panos_config import (DEVICE, Change, ConfigError, apply_change, cdata, panos_time,
                           stack_config)
from .server import Response

BASE = f"/config/devices/entry[@name='{DEVICE}']"
PANORAMA_STORE = "/config/panorama/certificate"
GENERATE_MODES = ("supported", "error", "panorama-store")


@dataclass
class PanoramaSettings(PanosSettings):
    """Knobs of the emulated Panorama (`--set panorama.NAME=VALUE`, `/_lab/settings`)."""

    # What `request certificate generate` does under a template target (§1.5, open).
    template_generate: str = "supported"
    push_duration: float = 0.2  # seconds until the CommitAll job reads FIN ...
    device_push_duration: float = 0.4  # ... and until its devices have finished
    push_fail: str = ""  # serials (comma-separated) whose next push fails
    disconnected: str = ""  # serials Panorama cannot reach (comma-separated)
    push_failure_fails_job: bool = False  # a failed device turns the job's result to FAIL
    commit_all_admin: bool = True  # <admin> inside commit-all is accepted (PAN-OS 10.2+)
    push_warnings: bool = True  # job XML carries <warnings> (it may be absent, §2.3)

    def serials(self, field_name: str) -> Set[str]:
        return {s.strip() for s in str(getattr(self, field_name)).split(",") if s.strip()}


@dataclass
class DevicePush:
    serial: str
    hostname: str
    result: str = "PEND"
    status: str = "commit pending"
    details: List[str] = field(default_factory=list)
    started: str = ""
    finished: str = ""


@dataclass
class PushJob:
    id: int
    user: str
    description: str
    kind: str  # template-stack | template
    name: str
    layers: Dict[str, ET.Element]  # serial -> the configuration pushed to it
    sources: Dict[str, str]  # serial -> the stack it gets the layer from
    devices: List[DevicePush]
    enqueued: dt.datetime
    started: float
    status: str = "ACT"
    result: str = "PEND"
    finished: Optional[dt.datetime] = None
    logged: bool = False


class PanoramaService(PanosService):
    """One emulated Panorama managing some emulated firewalls (by serial)."""

    def __init__(self, admins: Sequence[Admin], managed: Sequence[PanosService],
                 hostname: str = "lab-panorama", serial: str = "007959000000001",
                 settings: Optional[PanoramaSettings] = None) -> None:
        chosen = settings or PanoramaSettings()
        super().__init__(admins, hostname=hostname, serial=serial, vsys=(), settings=chosen)
        self.settings: PanoramaSettings = chosen
        self.managed: Dict[str, PanosService] = {fw.serial: fw for fw in managed}
        self.pushes: Dict[int, PushJob] = {}
        self.push_log: List[PushJob] = []  # finished pushes, for tests
        self._targets: Dict[str, Tuple[str, Optional[str]]] = {}
        self._synced: Dict[Tuple[str, str], str] = {}  # (stack, serial) -> pushed digest
        # For pushes limited to admins: every change committed on Panorama, and per stack
        # the Panorama tree its last push came from, with the committed changes in it.
        self._committed_log: List[Change] = []
        self._pushed_from: Dict[str, Tuple[ET.Element, Set[int]]] = {}
        self._push_lock = self._lock  # job ids are shared with the commit jobs
        with self.store.lock:
            for tree in self.store.direct():
                _make_panorama(tree, hostname)

    # -- the seed: templates and stacks as an administrator set them up -------------------

    def seed_template(self, name: str, config: str = "") -> None:
        """A template with `config` (XML children of its <config>) and a vsys1."""
        self.seed(f"{BASE}/template", f"<entry name='{escape(name)}'><settings><default-vsys>"
                                      f"vsys1</default-vsys></settings><config><devices>"
                                      f"<entry name='{DEVICE}'><vsys><entry name='vsys1'/>"
                                      f"</vsys></entry></devices>{config}</config></entry>")

    def seed_stack(self, name: str, templates: Sequence[str], serials: Sequence[str]) -> None:
        members = "".join(f"<member>{escape(t)}</member>" for t in templates)
        devices = "".join(f"<entry name='{escape(s)}'/>" for s in serials)
        self.seed(f"{BASE}/template-stack", f"<entry name='{escape(name)}'><templates>"
                                            f"{members}</templates><devices>{devices}"
                                            f"</devices><config/></entry>")

    def push_now(self) -> None:
        """Every stack pushed at once, without a job: as if done long before the lab started."""
        for stack in self._stack_names():
            for serial in self._stack_serials(stack):
                layer = self._layer(stack, record=True)
                self.managed[serial].receive_push(layer, stack)
                self._synced[(stack, serial)] = _digest(layer)

    # -- dispatch: targets and proxying ---------------------------------------------------

    def dispatch(self, admin: Admin, params: Dict[str, List[str]],
                 files: Dict[str, Tuple[str, bytes]]) -> Response:
        serial = _first(params, "target")
        if serial is None:
            return super().dispatch(admin, params, files)
        try:
            firewall = self._reachable(serial)
        except ConfigError as exc:
            return error_response(exc)
        forwarded = {k: v for k, v in params.items() if k != "target"}
        # The firewall sees the request as coming from the same administrator.
        as_admin = firewall.admins.get(admin.name) or Admin(admin.name, "", admin.superuser)
        firewall.advance()
        response = firewall.dispatch(as_admin, forwarded, files)
        response.log["proxied_to"] = firewall.hostname
        return response

    def _reachable(self, serial: str) -> PanosService:
        firewall = self.managed.get(serial)
        if firewall is None:
            raise ConfigError(17, cdata(f" target {serial}  is not a device managed by this "
                                        "Panorama"))
        if serial in self.settings.serials("disconnected"):
            raise ConfigError(17, f"device {serial} is not connected")
        return firewall

    # -- type=op ----------------------------------------------------------------------------

    def _op(self, admin: Admin, params: Dict[str, List[str]]) -> Response:
        cmd = _first(params, "cmd") or ""
        try:
            root = SafeET.fromstring(cmd)
        except Exception:
            return super()._op(admin, params)  # its own "Malformed Request"
        target = root.find("system/setting/target")
        if root.tag == "set" and target is not None:
            return self._set_target(admin, target)
        if root.tag == "show" and root.find("template-stack") is not None:
            return Response(200, envelope("success", result=self._show_stacks(
                (root.findtext("template-stack/name") or "").strip() or None)), XML)
        if root.tag == "show" and root.find("devices") is not None:
            connected_only = root.find("devices/connected") is not None
            return Response(200, envelope("success", result=self._show_devices(
                connected_only)), XML)
        return super()._op(admin, params)

    def _set_target(self, admin: Admin, target: ET.Element) -> Response:
        if target.find("none") is not None:
            self._targets.pop(admin.name, None)
            return Response(200, envelope("success", msg="Session target reset"), XML)
        name = (target.findtext("template/name") or "").strip()
        vsys = (target.findtext("template/vsys") or "").strip() or None
        if not name:
            raise ConfigError(17, cdata(" set -> system -> setting -> target  needs "
                                        "<template><name>T</name></template> or <none/>"))
        self._template_root(name)  # refuses an unknown template
        self._targets[admin.name] = (name, vsys)
        return Response(200, envelope("success", msg=f"Session target set to template "
                                                     f"{escape(name)}"), XML)

    def generate_store(self, admin: Admin, params: Dict[str, List[str]]) -> str:
        target = self._targets.get(admin.name)
        if target is None:
            return PANORAMA_STORE
        mode = self.settings.template_generate
        if mode == "error":
            raise ConfigError(17, cdata(" request -> certificate -> generate  is not "
                                        "supported in a template context"))
        if mode == "panorama-store":
            return PANORAMA_STORE
        return self._template_store(*target)

    def import_store(self, admin: Admin, params: Dict[str, List[str]]) -> str:
        named = _first(params, "target-tpl")
        if named:  # target-tpl-vsys is ignored: PAN-257229, not fixed before 12.1
            return self._template_store(named, None)
        target = self._targets.get(admin.name)
        return self._template_store(*target) if target else PANORAMA_STORE

    def _template_root(self, name: str) -> str:
        """The xpath of template (or template stack) `name`."""
        with self.store.lock:
            for kind in ("template", "template-stack"):
                for entry in self.store.candidate.findall(f"devices/entry/{kind}/entry"):
                    if entry.get("name") == name:
                        return f"{BASE}/{kind}/entry[@name='{name}']"
        raise ConfigError(17, cdata(f" template {name}  does not exist"))

    def _template_store(self, name: str, vsys: Optional[str]) -> str:
        root = self._template_root(name)
        if not vsys:
            return f"{root}/config/shared/certificate"
        with self.store.lock:
            known = [v.get("name") for v in self.store.candidate.findall(
                f"{root[len('/config/'):]}/config/devices/entry/vsys/entry")]
        if vsys not in known:
            raise ConfigError(17, cdata(f" vsys {vsys} is not a virtual system of template "
                                        f"{name}"))
        return f"{root}/config/devices/entry[@name='{DEVICE}']/vsys/entry[@name='{vsys}']" \
               "/certificate"

    # -- commits: exclusions, and the push ----------------------------------------------------

    def partial_exclusions(self, partial: ET.Element) -> Callable[[Change], bool]:
        excluded: List[str] = []
        for child in partial:
            if child.tag in ("admin", "description"):
                continue
            if child.tag not in ("device-and-network", "shared-object") or \
                    (child.text or "").strip() != "excluded":
                raise ConfigError(17, cdata(f" lab: partial commit scope '{child.tag}' is not "
                                            "emulated (only <admin>, <device-and-network> and "
                                            "<shared-object>)"))
            excluded += ["/config/panorama", f"{BASE}/deviceconfig"] \
                if child.tag == "device-and-network" else ["/config/shared"]
        return lambda change: any(change.xpath.startswith(p) for p in excluded)

    def _commit(self, admin: Admin, params: Dict[str, List[str]]) -> Response:
        if _first(params, "action") != "all":
            return super()._commit(admin, params)
        try:
            root = SafeET.fromstring(_first(params, "cmd") or "")
        except Exception:
            raise ConfigError(18, "Malformed Request: cmd is not XML") from None
        if root.tag != "commit-all" or len(root) != 1 or \
                root[0].tag not in ("template-stack", "template"):
            what = root[0].tag if root.tag == "commit-all" and len(root) else root.tag
            raise ConfigError(17, cdata(f" commit-all -> {what}  lab: only template-stack "
                                        "and template pushes are emulated"))
        scope = root[0]
        if scope.find("admin") is not None and not self.settings.commit_all_admin:
            # PAN-OS before 10.2 (pan-os-python #515).
            raise ConfigError(17, cdata(f" commit-all -> {scope.tag} -> admin  unexpected here"),
                              cdata(f" commit-all -> {scope.tag}  is unexpected"),
                              cdata(" commit-all  is unexpected"))
        name = (scope.findtext("name") or "").strip()
        stacks = [name] if scope.tag == "template-stack" else self._stacks_with(name)
        if scope.tag == "template-stack" and name not in self._stack_names():
            raise ConfigError(17, cdata(f" template-stack {name}  does not exist"))
        if scope.tag == "template":
            self._template_root(name)
        only = {(m.text or "").strip() for m in scope.findall("device/member")}
        admins = {(m.text or "").strip() for m in scope.findall("admin/member")}
        layers: Dict[str, ET.Element] = {}
        sources: Dict[str, str] = {}
        for stack in stacks:
            for serial in self._stack_serials(stack):
                if (not only or serial in only) and serial not in layers:
                    layers[serial] = self._layer(stack, admins, record=True)
                    sources[serial] = stack
        devices = [DevicePush(s, self.managed[s].hostname if s in self.managed else s)
                   for s in layers]
        with self._push_lock:
            job = PushJob(self._next_job, admin.name, scope.findtext("description") or "",
                          scope.tag, name, layers, sources, devices, dt.datetime.now(),
                          time.monotonic())
            self._next_job += 1
            self.pushes[job.id] = job
        return Response(200, envelope("success", 19, result=(
            f"<msg><line>Push job enqueued with jobid {job.id}</line></msg>"
            f"<job>{job.id}</job>")), XML)

    def committed(self, changes: List[Change]) -> None:
        with self.store.lock:
            self._committed_log.extend(changes)

    def _layer(self, stack: str, admins: AbstractSet[str] = frozenset(),
               record: bool = False) -> ET.Element:
        """What a push of `stack` gives its firewalls. A full push: Panorama's running
        configuration. Limited to `admins`: what the stack's last push came from, plus the
        changes those admins committed since; others' committed changes stay unpushed.
        `record`: this is the push (its source is kept for the next one)."""
        with self.store.lock:
            if not admins or stack not in self._pushed_from:
                tree = copy.deepcopy(self.store.running)
                seen = {id(c) for c in self._committed_log}
            else:
                base, included = self._pushed_from[stack]
                tree, seen = copy.deepcopy(base), set(included)
                for change in self._committed_log:
                    if change.admin in admins and id(change) not in seen:
                        try:
                            apply_change(tree, change, stamp=False)
                        except ConfigError:
                            pass  # overtaken by a change already pushed
                        seen.add(id(change))
            if record:
                self._pushed_from[stack] = (tree, seen)
            return stack_config(tree, stack)

    def _stack_names(self) -> List[str]:
        with self.store.lock:
            return [e.get("name", "") for e in self.store.running.findall(
                "devices/entry/template-stack/entry")]

    def _stacks_with(self, template: str) -> List[str]:
        with self.store.lock:
            return [e.get("name", "") for e in self.store.running.findall(
                "devices/entry/template-stack/entry")
                if template in [(m.text or "").strip() for m in e.findall("templates/member")]]

    def _stack_serials(self, stack: str) -> List[str]:
        with self.store.lock:
            for entry in self.store.running.findall("devices/entry/template-stack/entry"):
                if entry.get("name") == stack:
                    return [d.get("name", "") for d in entry.findall("devices/entry")]
        return []

    def advance(self) -> None:
        super().advance()
        now = time.monotonic()
        with self._push_lock:
            for job in self.pushes.values():
                if job.status == "ACT" and now >= job.started + self.settings.push_duration:
                    job.status, job.result, job.finished = "FIN", "OK", dt.datetime.now()
                if now >= job.started + self.settings.device_push_duration:
                    for device in job.devices:
                        if device.result == "PEND":
                            self._push_to(job, device)
                    if not job.logged and job.status == "FIN":
                        job.logged = True
                        self.push_log.append(job)

    def _push_to(self, job: PushJob, device: DevicePush) -> None:
        device.started = device.finished = f"{dt.datetime.now():%H:%M:%S}"
        failing = self.settings.serials("push_fail")
        if device.serial in self.settings.serials("disconnected") or \
                device.serial not in self.managed:
            device.result, device.status = "FAIL", "not connected"
            device.details = ["device is not connected"]
        elif device.serial in failing:
            failing.discard(device.serial)
            self.settings.push_fail = ",".join(sorted(failing))
            device.result, device.status = "FAIL", "commit failed"
            device.details = ["Validation Error:", f"lab: injected push failure on "
                                                   f"{device.serial}", "Commit failed"]
        else:
            layer = job.layers[device.serial]
            problems = self.managed[device.serial].receive_push(
                layer, job.sources[device.serial])
            if problems:
                device.result, device.status = "FAIL", "commit failed"
                device.details = ["Validation Error:"] + problems + ["Commit failed"]
            else:
                device.result, device.status = "OK", "commit succeeded"
                device.details = ["Configuration committed successfully"]
                self._synced[(job.sources[device.serial], device.serial)] = _digest(layer)
        if device.result == "FAIL" and self.settings.push_failure_fails_job:
            job.result = "FAIL"

    # -- what `show jobs`, `show template-stack` and `show devices` say -------------------------

    def _show_jobs(self, jobs: Optional[ET.Element]) -> Response:
        wanted = (jobs.findtext("id") or "").strip() if jobs is not None else ""
        if wanted.isdigit() and int(wanted) in self.pushes:
            with self._push_lock:
                return Response(200, envelope("success", result=self._push_xml(
                    self.pushes[int(wanted)])), XML)
        return super()._show_jobs(jobs)

    def _push_xml(self, job: PushJob) -> str:
        if job.status == "ACT":
            progress, tfin = "50", "Still Active"
        else:
            assert job.finished is not None
            progress = tfin = f"{job.finished:%H:%M:%S}"
        entries = []
        for d in job.devices:
            lines = "".join(f"<line>{escape(line)}</line>" for line in d.details)
            outcome = "success" if d.result == "OK" else "failure"
            details = (f"<details><msg cmd=\"push-data\" dname=\"{d.serial}\" "
                       f"jobid=\"{job.id}\" result=\"{outcome}\"><errors>{lines}</errors>"
                       f"<warnings/></msg></details>") if d.result != "PEND" else "<details/>"
            entries.append(f"<entry><serial-no>{d.serial}</serial-no>"
                           f"<devicename>{escape(d.hostname)}</devicename>"
                           f"<multi-vsys>no</multi-vsys><vsys/><status>{escape(d.status)}"
                           f"</status><result>{d.result}</result><tstart>{d.started}</tstart>"
                           f"<tfin>{d.finished or 'Still Active'}</tfin>{details}</entry>")
        warnings = "<warnings/>" if self.settings.push_warnings else ""
        return (f"<job><tenq>{panos_time(job.enqueued)}</tenq>"
                f"<tdeq>{job.enqueued:%H:%M:%S}</tdeq><id>{job.id}</id>"
                f"<user>{escape(job.user)}</user><type>CommitAll</type>"
                f"<status>{job.status}</status><queued>NO</queued><stoppable>no</stoppable>"
                f"<result>{job.result}</result><tfin>{tfin}</tfin>"
                f"<description>{escape(job.description)}</description>"
                f"<positionInQ>0</positionInQ><progress>{progress}</progress>"
                f"<push_type>{job.kind}</push_type><tsname>{escape(job.name)}</tsname>"
                f"{warnings}<devices>{''.join(entries)}</devices></job>")

    def _show_stacks(self, only: Optional[str]) -> str:
        out = []
        disconnected = self.settings.serials("disconnected")
        for stack in self._stack_names():
            if only and stack != only:
                continue
            with self.store.lock:
                entry = next(e for e in self.store.running.findall(
                    "devices/entry/template-stack/entry") if e.get("name") == stack)
                templates = "".join(f"<member>{escape(m.text or '')}</member>"
                                    for m in entry.findall("templates/member"))
            current = _digest(self._layer(stack))
            devices = []
            for serial in self._stack_serials(stack):
                fw = self.managed.get(serial)
                sync = "In Sync" if self._synced.get((stack, serial)) == current else \
                    "Out of Sync"
                devices.append(f"<entry name=\"{serial}\"><serial>{serial}</serial>"
                               f"<connected>{'no' if serial in disconnected else 'yes'}"
                               f"</connected><template-status>{sync}</template-status>"
                               f"<hostname>{escape(fw.hostname if fw else serial)}</hostname>"
                               "<model>PA-VM</model><multi-vsys>no</multi-vsys></entry>")
            out.append(f"<entry name=\"{escape(stack)}\"><templates>{templates}</templates>"
                       f"<devices>{''.join(devices)}</devices></entry>")
        if only and not out:
            raise ConfigError(17, cdata(f" template-stack {only}  does not exist"))
        return f"<template-stack>{''.join(out)}</template-stack>"

    def _show_devices(self, connected_only: bool) -> str:
        disconnected = self.settings.serials("disconnected")
        entries = []
        for serial, fw in self.managed.items():
            connected = serial not in disconnected
            if connected_only and not connected:
                continue
            entries.append(f"<entry name=\"{serial}\"><serial>{serial}</serial>"
                           f"<connected>{'yes' if connected else 'no'}</connected>"
                           f"<hostname>{escape(fw.hostname)}</hostname><model>PA-VM</model>"
                           f"<sw-version>{SW_VERSION}</sw-version><ha><state>no</state></ha>"
                           "<vsys><entry name=\"vsys1\"/></vsys></entry>")
        return f"<devices>{''.join(entries)}</devices>"

    def _system_xml(self) -> str:
        return (f"<system><hostname>{escape(self.hostname)}</hostname>"
                "<ip-address>127.0.0.1</ip-address><model>Panorama</model>"
                f"<serial>{self.serial}</serial><sw-version>{SW_VERSION}</sw-version>"
                "<family>vm</family><system-mode>panorama</system-mode>"
                "<multi-vsys>off</multi-vsys><operational-mode>normal</operational-mode>"
                "</system>")

    def _version_xml(self) -> str:
        return (f"<sw-version>{SW_VERSION}</sw-version><model>Panorama</model>"
                f"<serial>{self.serial}</serial><family>vm</family>")

    def control(self, action: str, body: Dict[str, object]) -> object:
        if action == "finish_pushes":
            with self._push_lock:
                for job in self.pushes.values():
                    job.started = min(job.started, time.monotonic() - 3600)
            self.advance()
            return "done"
        return super().control(action, body)


def _make_panorama(tree: ET.Element, hostname: str) -> None:
    """A firewall's initial tree made Panorama's: its own store, templates, stacks, groups."""
    for vsys in tree.findall("devices/entry/vsys"):
        tree.find("devices/entry").remove(vsys)  # type: ignore[union-attr]
    ET.SubElement(tree, "panorama").extend(
        [ET.Element("certificate"), ET.Element("ssl-tls-service-profile")])
    device = tree.find(f"devices/entry[@name='{DEVICE}']")
    assert device is not None
    for container in ("template", "template-stack", "device-group"):
        ET.SubElement(device, container)


def _digest(config: ET.Element) -> str:
    return hashlib.sha256(ET.tostring(copy.deepcopy(config))).hexdigest()
