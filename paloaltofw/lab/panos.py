"""The emulated PAN-OS firewall: the XML API at `/api/` (panos.md §1–4, behaviour model §9).

Request handling, in the order a client meets it:

1. Parameters come from the query string, a form-urlencoded body or a multipart body (pan-python
   puts import parameters in the query and the file in the body; pango and acme.sh put them all
   in the multipart form). `type=keygen&user=&password=` needs no key and answers in the
   device's quirky `status = 'success'` spelling.
2. Every other request authenticates with `X-PAN-KEY`, `key=` (taken raw, as pan-python sends
   it) or HTTP Basic. A missing, wrong or expired key gets HTTP 403 with the real envelope.
3. `type=config` (get/show/set/edit/delete/rename), `type=op` (certificate generate, jobs,
   system info, config), `type=import`, `type=export`, `type=commit`, `type=version`.

Answers use the device's envelopes: HTTP 200 with `status="error"` and a code for refused
operations, HTTP 400/403 with `<result><msg>` for malformed or unauthenticated requests, and
attachments (`application/octet-stream` + `Content-Disposition`) for exports.

Choices where panos.md §10 leaves the real device's behaviour open (documented in the README):
generate answers `<msg><line>Successfully generated certificate and key pair</line></msg>`;
generating on an existing name is refused; a CSR entry carries common-name, algorithm, ca,
subject, subject-hash, csr and private-key; `vsys=shared` or no vsys places in shared;
`format=pem` on a CSR-only entry is refused; delete of a missing node answers success with
code 7; a commit while another runs answers code 13 (no queueing); a partial commit accepts
only the `<admin>` scope.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple
from xml.sax.saxutils import escape as _escape
from xml.sax.saxutils import quoteattr

from defusedxml import ElementTree as SafeET

from . import panos_certs as certs
from . import pki
from . import xpath as xp
from .panos_config import (DEVICE, Change, ConfigError, ConfigStore, RawXml, apply_change,
                           cdata, initial_config, panos_time, parse_xpath, plain, push_layer,
                           inbound_form_problems, validate_references, xml_safe)
from .server import Request, Response, Service

if TYPE_CHECKING:
    from .ha import HaLink

XML = "application/xml; charset=utf-8"
_ENVELOPE = re.compile(rb"""<response status ?= ?['"](\w+)['"](?: code ?= ?['"](\d+)['"])?""")
SW_VERSION = "11.1.4"


@dataclass
class PanosSettings:
    """Knobs of one emulated firewall (change them live via `/_lab/settings`)."""

    latency: float = 0.0  # seconds added to every request
    commit_duration: float = 1.0  # seconds a commit job stays ACT
    commit_busy: int = 0  # the next N commit requests answer code 13 (another commit running)
    commit_fail: int = 0  # the next N commit jobs finish FIN/FAIL
    commit_hang: int = 0  # the next N commit jobs never finish
    # The release the device reports; before 10.2 SSL inbound inspection names its
    # certificate as text, from 10.2 as a member list (and each refuses the other form).
    sw_version: str = SW_VERSION

    def list_form(self) -> bool:
        parts = [int(p) for p in re.findall(r"\d+", self.sw_version)[:2]] + [0, 0]
        return (parts[0], parts[1]) >= (10, 2)


@dataclass
class Admin:
    name: str
    password: str
    superuser: bool = True


@dataclass
class Job:
    id: int
    user: str
    description: str
    enqueued: dt.datetime
    started: float
    duration: float
    changes: List[Change]
    admins: Optional[List[str]] = None  # the partial commit's scope; None: full commit
    outcome: str = "OK"  # OK | FAIL | HANG
    status: str = "ACT"
    result: str = "PEND"
    finished: Optional[dt.datetime] = None
    details: List[str] = field(default_factory=list)


@dataclass
class CommitRecord:
    """A finished commit job, with the running configuration it produced (for tests)."""

    job: int
    admins: Optional[List[str]]  # None for a full commit
    result: str
    running: str


def envelope(status: str, code: Optional[int] = None, result: Optional[str] = None,
             lines: Sequence[str] = (), msg: Optional[str] = None) -> bytes:
    """`<response status="…" code="…">` with a `<result>` body or a `<msg>`."""
    code_attr = f' code="{code}"' if code is not None else ""
    if result is not None:
        inner = f"<result>{result}</result>" if not result.startswith("<result") else result
    elif lines:
        inner = "<msg>" + "".join(
            f"<line>{line if isinstance(line, RawXml) else escape(line)}</line>"
            for line in lines) + "</msg>"
    elif msg is not None:
        inner = f"<msg>{escape(msg)}</msg>"
    else:
        inner = ""
    return f'<response status="{status}"{code_attr}>{inner}</response>'.encode("utf-8")


def quirky(status: str, code: int, message: str) -> bytes:
    """The keygen / 400 / 403 shape: odd spacing, single quotes, `<result><msg>`."""
    return (f"<response status = '{status}' code = '{code}'><result><msg>{escape(message)}"
            f"</msg></result></response>").encode("utf-8")


def error_response(exc: ConfigError) -> Response:
    if exc.code in (400, 403):
        return Response(exc.code, quirky("error", exc.code, " ".join(plain(x) for x in
                                                                     exc.lines)), XML)
    if exc.status == "success":
        return Response(200, envelope("success", exc.code, msg=" ".join(plain(x) for x in
                                                                        exc.lines)), XML)
    return Response(200, envelope("error", exc.code, lines=exc.lines), XML)


class PanosService(Service):
    """One emulated firewall."""

    name = "panos"

    def __init__(self, admins: Sequence[Admin], hostname: str = "lab-fw-01",
                 serial: str = "007951000123456", vsys: Sequence[str] = ("vsys1",),
                 settings: Optional[PanosSettings] = None) -> None:
        self.settings = settings or PanosSettings()
        self.hostname = hostname
        self.serial = serial
        self.admins: Dict[str, Admin] = {a.name: a for a in admins}
        self.store = ConfigStore(initial_config(hostname, list(vsys)))
        self.store.schema = lambda tree: inbound_form_problems(tree,
                                                               self.settings.list_form())
        self.master = certs.MasterKey()
        self.ha: Optional["HaLink"] = None  # set by lab.ha.pair_up
        self.jobs: Dict[int, Job] = {}
        self.commits: List[CommitRecord] = []
        self._lock = threading.RLock()
        self._next_job = 1
        self._key_secret = secrets.token_bytes(32)
        self._key_epoch = 0
        for admin in admins:
            self._seed_admin(admin)

    # -- API keys -------------------------------------------------------------------------

    def api_key(self, user: str) -> str:
        """The key keygen returns: derived from the credentials (so it is stable across keygen
        calls) and invalidated by a password change or by expiring all keys."""
        admin = self.admins[user]
        mac = hmac.new(self._key_secret, f"{admin.name}\0{admin.password}\0{self._key_epoch}"
                       .encode(), hashlib.sha256).digest()
        # Letters, digits and '=' only, like real keys: pan-python sends `key=` unencoded in
        # a form body, where '+' would turn into a space.
        return "LUFRPT" + base64.b64encode(mac + admin.name.encode()[:8], altchars=b"Xz") \
            .decode()

    def _admin_for_key(self, key: str) -> Optional[Admin]:
        for admin in self.admins.values():
            if hmac.compare_digest(self.api_key(admin.name), key):
                return admin
        return None

    def _authenticate(self, request: Request, params: Dict[str, List[str]]) -> Optional[Admin]:
        key = request.header("X-PAN-KEY") or _first(params, "key")
        if key:
            return self._admin_for_key(key.strip())
        basic = request.header("Authorization") or ""
        if basic.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            admin = self.admins.get(user)
            if admin and hmac.compare_digest(admin.password, password):
                return admin
        return None

    # -- dispatch -------------------------------------------------------------------------

    def summary(self, request: Request) -> str:
        try:
            params, _ = request.form()
        except ValueError:
            params = {}
        parts = [request.method, f"type={_first(params, 'type') or ''}"]
        for name in ("action", "category", "certificate-name", "format", "xpath"):
            value = _first(params, name)
            if value:
                parts.append(f"{name}={value}")
        cmd = _first(params, "cmd")
        if cmd:
            parts.append("cmd=" + _cmd_words(cmd))
        return " ".join(parts)

    def handle(self, request: Request) -> Response:
        self.advance()
        if request.path.rstrip("/") != "/api":
            return Response(404, b"<html><body><h1>404 Not Found</h1></body></html>",
                            "text/html")
        try:
            params, files = request.form()
        except ValueError as exc:
            return self._logged(error_response(ConfigError(400, f"Malformed request: {exc}")),
                                None, {})
        kind = _first(params, "type")
        if kind == "keygen":
            return self._logged(self._keygen(params), None, params)
        admin = self._authenticate(request, params)
        if admin is None:
            return self._logged(Response(403, quirky("error", 403, "Invalid Credential"), XML),
                                None, params)
        return self._logged(self.dispatch(admin, params, files), admin, params)

    def dispatch(self, admin: Admin, params: Dict[str, List[str]],
                 files: Dict[str, Tuple[str, bytes]]) -> Response:
        """An authenticated request (also one Panorama forwards with `target=SERIAL`)."""
        kind = _first(params, "type")
        try:
            if self.ha is not None:
                refused = self.ha.refusal(self, kind, _first(params, "action"),
                                          _first(params, "xpath"), _op_words(params))
                if refused is not None:
                    raise refused
            if kind == "config":
                response = self._config(admin, params)
            elif kind == "op":
                response = self._op(admin, params)
            elif kind == "commit":
                response = self._commit(admin, params)
            elif kind == "import":
                response = self._import(admin, params, files)
            elif kind == "export":
                response = self._export(admin, params)
            elif kind == "version":
                response = Response(200, envelope("success", result=self._version_xml()), XML)
            elif not kind:
                raise ConfigError(400, 'Parameter "type" is required')
            else:
                raise ConfigError(400, f'Illegal value for parameter "type" [{kind}].')
        except ConfigError as exc:
            response = error_response(exc)
        return response

    def _logged(self, response: Response, admin: Optional[Admin],
                params: Dict[str, List[str]]) -> Response:
        kind, action = _first(params, "type"), _first(params, "action")
        response.log.update({"type": kind, "action": action, "firewall": self.hostname,
                             "admin": admin.name if admin else None,
                             "write": _is_write(kind, action, _first(params, "cmd"))})
        # The envelope's opening tag is all the log needs (this lab writes it, in two styles).
        head = _ENVELOPE.match(response.body) if response.content_type == XML else None
        if head:
            response.log["result"] = head.group(1).decode()
            if head.group(2):
                response.log["code"] = head.group(2).decode()
        return response

    # -- keygen ---------------------------------------------------------------------------

    def _keygen(self, params: Dict[str, List[str]]) -> Response:
        user, password = _first(params, "user"), _first(params, "password")
        if not user or password is None:
            return Response(400, quirky("error", 400, "Parameters user and password are "
                                                      "required for keygen"), XML)
        admin = self.admins.get(user)
        if admin is None or not hmac.compare_digest(admin.password, password):
            return Response(403, quirky("error", 403, "Invalid Credential"), XML)
        return Response(200, f"<response status = 'success'><result><key>"
                             f"{self.api_key(user)}</key></result></response>".encode(), XML)

    # -- type=config ----------------------------------------------------------------------

    def _config(self, admin: Admin, params: Dict[str, List[str]]) -> Response:
        action = _first(params, "action")
        path_text = _first(params, "xpath")
        if action in ("get", "show"):
            path = parse_xpath(path_text or "/config")
            with self.store.lock:  # serialised under the lock: a snapshot, no copy needed
                tree = self.store.candidate if action == "get" else self.store.running
                nodes = [_render(n, path.attribute) for n in xp.select(tree, path)]
            if action == "get":
                if not nodes:
                    return Response(200, envelope("success", 7, result=""), XML)
                return Response(200, envelope("success", 19, result=(
                    f'<result total-count="{len(nodes)}" count="{len(nodes)}">'
                    f'{"".join(nodes)}</result>')), XML)
            if not nodes:
                return Response(200, envelope("error", 7, lines=["No such node"]), XML)
            if len(nodes) > 1:
                raise ConfigError(8, "show: the xpath selects more than one node; "
                                     "use get or a more specific xpath")
            return Response(200, envelope("success", result=nodes[0]),
                            XML)
        if action in ("set", "edit"):
            element = _first(params, "element")
            if element is None:
                raise ConfigError(400, 'Parameter "element" is required')
            self.store.change(admin.name, action, path_text or "", element)
        elif action == "delete":
            self.store.change(admin.name, "delete", path_text or "")
        elif action == "rename":
            self.store.change(admin.name, "rename", path_text or "",
                              newname=_first(params, "newname"))
        elif not action:
            raise ConfigError(400, 'Parameter "action" is required')
        elif action in ("clone", "move", "override", "multi-config", "complete"):
            raise ConfigError(17, f"lab: config action '{action}' is not emulated")
        else:
            raise ConfigError(400, f'Illegal value for parameter "action" [{action}].')
        return Response(200, envelope("success", 20, msg="command succeeded"), XML)

    # -- type=op --------------------------------------------------------------------------

    def _op(self, admin: Admin, params: Dict[str, List[str]]) -> Response:
        cmd = _first(params, "cmd")
        if not cmd:
            raise ConfigError(400, 'Parameter "cmd" is required')
        try:
            root = SafeET.fromstring(cmd)
        except Exception:
            raise ConfigError(18, "Malformed Request: cmd must be an XML document "
                                  "(e.g. <show><system><info/></system></show>)") from None
        words = _path_words(root)
        if words[:3] == ["request", "certificate", "generate"]:
            return self._generate(admin, root.find("certificate/generate"),
                                  self.generate_store(admin, params))
        if words[:2] == ["show", "jobs"]:
            return self._show_jobs(root.find("jobs"))
        if words == ["show", "system", "info"]:
            return Response(200, envelope("success", result=self._system_xml()), XML)
        if words == ["show", "high-availability", "state"]:
            state = self.ha.state_xml(self) if self.ha else \
                "<enabled>no</enabled><local-info><encrypt-imported>no</encrypt-imported>" \
                "</local-info>"
            return Response(200, envelope("success", result=state), XML)
        if words == ["request", "high-availability", "sync-to-remote"] and \
                root.find("high-availability/sync-to-remote/running-config") is not None \
                and self.ha is not None:
            self.ha.start_sync(self)
            return Response(200, envelope("success", msg=(
                "HA synchronization job has been queued on peer. Please check job status "
                "on peer.")), XML)
        if words[:2] == ["show", "config"] and len(words) == 3 and \
                words[2] in ("running", "candidate"):
            with self.store.lock:
                tree = self.store.running if words[2] == "running" else self.store.candidate
                body = ET.tostring(tree, encoding="unicode")
            return Response(200, envelope("success", result=body), XML)
        known = {"request": ["certificate", "high-availability"],
                 "show": ["jobs", "system", "config", "high-availability"]}
        bad = words[0] if words[0] not in known else " -> ".join(words[:2])
        raise ConfigError(17, cdata(f" {bad}  is unexpected"))

    # Where certificates go: the hooks a Panorama overrides (its own store, a template's).
    def generate_store(self, admin: Admin, params: Dict[str, List[str]]) -> str:
        return self._store_path(_first(params, "vsys"))

    def import_store(self, admin: Admin, params: Dict[str, List[str]]) -> str:
        return self._store_path(_first(params, "vsys"))

    def _store_path(self, vsys: Optional[str]) -> str:
        if not vsys or vsys == "shared":
            return "/config/shared/certificate"
        with self.store.lock:
            names = [v.get("name") for v in self.store.candidate.findall(
                f"devices/entry[@name='{DEVICE}']/vsys/entry")]
        if vsys not in names:
            raise ConfigError(17, cdata(f" vsys {vsys} is not a valid virtual system"))
        return (f"/config/devices/entry[@name='{DEVICE}']/vsys/entry[@name='{vsys}']"
                "/certificate")

    def _find_entry(self, store_path: str, name: str, tree: str = "candidate",
                    fallback_shared: bool = False) -> Optional[ET.Element]:
        with self.store.lock:
            root = self.store.candidate if tree == "candidate" else self.store.running
            paths = [store_path] + (["/config/shared/certificate"] if fallback_shared else [])
            for path in paths:
                for entry in xp.select(root, xp.parse(path + "/entry")):
                    if entry.get("name") == name:
                        return _copy(entry)
        return None

    def _generate(self, admin: Admin, generate: Optional[ET.Element],
                  store_path: str) -> Response:
        if generate is None:
            raise ConfigError(17, cdata(" request -> certificate -> generate  is missing"))
        request = certs.GenerateRequest.parse(generate)
        if self._find_entry(store_path, request.name) is not None:
            raise ConfigError(17, cdata(f" certificate {request.name} already exists; "
                                        "generate needs a new certificate-name"))
        signer = None
        if request.signed_by:
            ca = self._find_entry(store_path, request.signed_by, fallback_shared=True)
            cert = certs.entry_certificate(ca) if ca is not None else None
            sealed = ca.findtext("private-key") if ca is not None else None
            if ca is None or cert is None or not sealed or ca.findtext("ca") != "yes":
                raise ConfigError(17, cdata(f" signed-by {request.signed_by} is not a CA "
                                            "certificate with a private key on this device"))
            signer = (cert, self.master.open(sealed))
        entry = certs.generate_entry(request, self.master, signer)  # slow: outside the lock
        with self.store.lock:
            if self._find_entry(store_path, request.name) is not None:
                raise ConfigError(17, cdata(f" certificate {request.name} already exists"))
            self.store.change(admin.name, "edit",
                              f"{store_path}/entry[@name='{request.name}']",
                              ET.tostring(entry, encoding="unicode"))
        return Response(200, envelope("success", lines=[
            "Successfully generated certificate and key pair"]), XML)

    # -- type=import / type=export ------------------------------------------------------

    def _import(self, admin: Admin, params: Dict[str, List[str]],
                files: Dict[str, Tuple[str, bytes]]) -> Response:
        category = _first(params, "category")
        name = _first(params, "certificate-name")
        fmt = (_first(params, "format") or "pem").lower()
        if not category:
            raise ConfigError(400, 'Parameter "category" is required')
        if category not in ("certificate", "keypair", "private-key"):
            raise ConfigError(400, f"lab: import category '{category}' is not emulated")
        if not name:
            raise ConfigError(400, 'Parameter "certificate-name" is required')
        if "file" not in files or not files["file"][1]:
            raise ConfigError(400, "File is missing: send it as the multipart part 'file'")
        if fmt not in ("pem", "pkcs12", "der"):
            raise ConfigError(400, f'Illegal value for parameter "format" [{fmt}].')
        data = files["file"][1]
        store_path = self.import_store(admin, params)
        passphrase = _first(params, "passphrase")
        with self.store.lock:
            existing = self._find_entry(store_path, name)
            now = pki.utcnow()
            if category == "certificate":
                entry = certs.import_certificate(name, data, existing, self.master, now)
            elif category == "keypair":
                entry = certs.import_keypair(name, data, fmt, passphrase, self.master, now)
            else:
                entry = certs.import_private_key(name, data, passphrase, existing, self.master)
            self.store.change(admin.name, "edit", f"{store_path}/entry[@name='{name}']",
                              ET.tostring(entry, encoding="unicode"))
        return Response(200, envelope("success", result=escape(
            f"Successfully imported {name} into candidate configuration")), XML)

    def _export(self, admin: Admin, params: Dict[str, List[str]]) -> Response:
        category = _first(params, "category")
        name = _first(params, "certificate-name")
        if category != "certificate":
            raise ConfigError(400, f"lab: export category '{category}' is not emulated"
                              if category else 'Parameter "category" is required')
        if not name:
            raise ConfigError(400, 'Parameter "certificate-name" is required')
        entry = self._find_entry(self.import_store(admin, params), name)
        if entry is None:
            raise ConfigError(400, f"Certificate {name} does not exist")
        filename, content = certs.export(entry, _first(params, "format"),
                                         _first(params, "include-key") == "yes",
                                         _first(params, "passphrase"), self.master)
        return Response(200, content, "application/octet-stream",
                        [("Content-Disposition", f"attachment; filename={filename}")])

    # -- type=commit and jobs -----------------------------------------------------------

    def _commit(self, admin: Admin, params: Dict[str, List[str]]) -> Response:
        action = _first(params, "action")
        if action not in (None, "partial"):
            raise ConfigError(17, cdata(f" commit action '{action}' is unexpected on a "
                                        "firewall"))
        try:
            root = SafeET.fromstring(_first(params, "cmd") or "<commit/>")
        except Exception:
            raise ConfigError(18, "Malformed Request: cmd is not XML") from None
        if root.tag != "commit":
            raise ConfigError(17, cdata(f" {root.tag}  is unexpected"))
        body = root.find("force")
        force = body is not None
        if body is None:
            body = root
        partial = body.find("partial")
        admins: Optional[List[str]] = None
        description = root.findtext("description") or body.findtext("description") or ""
        excluded: Callable[[Change], bool] = lambda change: False
        if partial is not None:
            description = description or partial.findtext("description") or ""
            excluded = self.partial_exclusions(partial)
            admins = [(m.text or "").strip() for m in partial.findall("admin/member")]
            if not admins:
                raise ConfigError(17, cdata(" commit -> partial  needs <admin><member>NAME"
                                            "</member></admin>"))
        with self._lock:
            if self.settings.commit_busy > 0 or any(j.status == "ACT" for j in
                                                    self.jobs.values()):
                self.settings.commit_busy = max(0, self.settings.commit_busy - 1)
                raise ConfigError(13, "Another commit/validate is in progress. "
                                      "Please try again later")
            with self.store.lock:
                changes = [c for c in self.store.pending
                           if (admins is None or c.admin in admins) and not excluded(c)]
            if not changes and not force:
                return Response(200, envelope("success", 19,
                                              msg="There are no changes to commit."), XML)
            outcome = "OK"
            if self.settings.commit_hang > 0:
                self.settings.commit_hang -= 1
                outcome = "HANG"
            elif self.settings.commit_fail > 0:
                self.settings.commit_fail -= 1
                outcome = "FAIL"
            job = Job(self._next_job, admin.name, description, dt.datetime.now(),
                      time.monotonic(), self.settings.commit_duration, changes, admins, outcome)
            self.jobs[job.id] = job
            self._next_job += 1
        return Response(200, envelope("success", 19, result=(
            f"<msg><line>Commit job enqueued with jobid {job.id}</line></msg>"
            f"<job>{job.id}</job>")), XML)

    def partial_exclusions(self, partial: ET.Element) -> Callable[[Change], bool]:
        """The scopes a partial commit may name besides the admin; a firewall here: none."""
        for child in partial:
            if child.tag not in ("admin", "description"):
                raise ConfigError(17, cdata(f" lab: partial commit scope '{child.tag}' "
                                            "is not emulated (only <admin>)"))
        return lambda change: False

    def advance(self) -> None:
        """Finish commit jobs whose time has come (jobs progress as time passes)."""
        if self.ha is not None:
            self.ha.advance()
        with self._lock:
            now = time.monotonic()
            for job in self.jobs.values():
                if job.status != "ACT" or job.outcome == "HANG" or \
                        now < job.started + job.duration:
                    continue
                self._finish(job)

    def committed(self, changes: List[Change]) -> None:
        """Called with the changes a commit has just made running (Panorama keeps them)."""

    def _finish(self, job: Job) -> None:
        job.status = "FIN"
        job.finished = dt.datetime.now()
        if job.outcome == "FAIL":
            job.result = "FAIL"
            job.details = ["Validation Error:", "lab: injected commit failure", "Commit failed"]
        else:
            new_running, problems = self.store.build_running(job.changes)
            if problems:
                job.result = "FAIL"
                job.details = ["Validation Error:"] + problems + ["Commit failed"]
            else:
                self.store.install(new_running, job.changes)
                self.committed(job.changes)
                job.result = "OK"
                size = len(ET.tostring(new_running)) // 1024 + 1
                job.details = [f"Local configuration size: {size} KB",
                               "Configuration committed successfully"]
                if self.ha is not None and self.ha.commit_fails_sync(self):
                    job.result = "FAIL"
                    job.details = ["Failed to synchronize running configuration with HA peer",
                                   "Commit failed"]
                elif self.ha is not None:
                    self.ha.committed(self)
        with self.store.lock:
            running = ET.tostring(self.store.running, encoding="unicode")
        self.commits.append(CommitRecord(job.id, job.admins, job.result,
                                         running))
        del self.commits[:-200]

    def _job_xml(self, job: Job) -> str:
        if job.status == "ACT":
            elapsed = time.monotonic() - job.started
            progress = str(min(99, int(100 * elapsed / job.duration))) if job.duration else "99"
            tfin = "Still Active"
        else:
            assert job.finished is not None
            # Quirk (panos.md §4.3): after FIN, progress holds the completion time.
            progress = tfin = job.finished.strftime("%H:%M:%S")
        details = "".join(f"<line>{escape(d)}</line>" for d in job.details)
        return (f"<job><tenq>{panos_time(job.enqueued)}</tenq>"
                f"<tdeq>{job.enqueued:%H:%M:%S}</tdeq><id>{job.id}</id>"
                f"<user>{escape(job.user)}</user><type>Commit</type>"
                f"<status>{job.status}</status><queued>NO</queued>"
                f"<stoppable>{'yes' if job.status == 'ACT' else 'no'}</stoppable>"
                f"<result>{job.result}</result><tfin>{tfin}</tfin>"
                f"<description>{escape(job.description)}</description>"
                f"<positionInQ>0</positionInQ><progress>{progress}</progress>"
                f"<details>{details}</details><warnings/></job>")

    def _show_jobs(self, jobs: Optional[ET.Element]) -> Response:
        assert jobs is not None
        wanted = (jobs.findtext("id") or "").strip()
        with self._lock:
            if jobs.find("all") is not None or jobs.find("processed") is not None:
                body = "".join(self._job_xml(j) for j in self.jobs.values())
                return Response(200, envelope("success", result=body), XML)
            if not wanted:
                raise ConfigError(17, cdata(" show -> jobs  needs <id>N</id> or <all/>"))
            numeric = wanted.lstrip("-").isdigit() and len(wanted) < 12
            job = self.jobs.get(int(wanted)) if numeric else None
            if job is None:
                raise ConfigError(7, f"job {wanted} not found")
            return Response(200, envelope("success", result=self._job_xml(job)), XML)

    # -- device facts -----------------------------------------------------------------

    def _system_xml(self) -> str:
        return (f"<system><hostname>{escape(self.hostname)}</hostname>"
                "<ip-address>127.0.0.1</ip-address><model>PA-VM</model>"
                f"<serial>{self.serial}</serial><sw-version>{self.settings.sw_version}"
                "</sw-version><family>vm</family><multi-vsys>off</multi-vsys>"
                "<operational-mode>normal</operational-mode></system>")

    def _version_xml(self) -> str:
        return (f"<sw-version>{self.settings.sw_version}</sw-version><multi-vsys>off</multi-vsys>"
                f"<model>PA-VM</model><serial>{self.serial}</serial><family>vm</family>")

    # -- the lab's own controls ---------------------------------------------------------

    def control(self, action: str, body: Dict[str, object]) -> object:
        """Actions for tests and the lab CLI (POST /_lab/action/<name>)."""
        if action == "expire_api_keys":
            self._key_epoch += 1
            return "all API keys expired"
        if action == "set_password":
            admin = self.admins[str(body["user"])]
            admin.password = str(body["password"])
            return f"password of {admin.name} changed; its API key is now stale"
        if action == "set_certificate_status":
            return self.set_certificate_status(str(body["name"]), str(body["status"]))
        if action == "finish_jobs":
            with self._lock:
                for job in self.jobs.values():
                    if job.status == "ACT":
                        job.outcome = "OK" if job.outcome == "HANG" else job.outcome
                        self._finish(job)
            return "done"
        if action == "failover" and self.ha is not None:
            return self.ha.failover()
        raise ValueError(f"unknown action {action!r}")

    def set_certificate_status(self, name: str, status: str) -> str:
        """Mark a certificate `valid` or `revoked` in both trees, as a device shows a revoked
        certificate (panos.md §3.2 `status`, `revoke-date-epoch`)."""
        if status not in ("valid", "revoked"):
            raise ValueError("status must be valid or revoked")
        found = 0
        with self.store.lock:
            for tree in self.store.direct():
                for entry in tree.iter("entry"):
                    if entry.get("name") == name and entry.find("public-key") is not None:
                        node = entry.find("status")
                        if node is None:
                            node = ET.SubElement(entry, "status")
                        node.text = status
                        if status == "revoked":
                            ET.SubElement(entry, "revoke-date-epoch").text = str(int(time.time()))
                        found += 1
        if not found:
            raise ValueError(f"no certificate named {name}")
        return f"{name}: {status}"

    def receive_push(self, layer: ET.Element, source: str) -> List[str]:
        """A Panorama push: the template layer goes into the running configuration (and the
        candidate). The firewall's own validation problems, empty when it took the layer."""
        with self.store.lock:
            trial = _copy(self.store.running)
            push_layer(trial, layer, source)
            problems = validate_references(trial)
            if not problems:
                for tree in self.store.direct():
                    push_layer(tree, layer, source)
        return problems

    def seed(self, xpath: str, element: str) -> None:
        """Put configuration in place as if it had been committed long ago."""
        with self.store.lock:
            for tree in self.store.direct():
                apply_change(tree, Change("lab", "set", xpath, element), stamp=False)

    def seed_self_signed(self, name: str, common_name: str) -> None:
        self.seed("/config/shared/certificate", self.self_signed(name, common_name))

    def self_signed(self, name: str, common_name: str) -> str:
        """A self-signed certificate entry with a key sealed by this device (XML)."""
        request = certs.GenerateRequest(name, common_name, days=3650)
        entry = certs.generate_entry(request, self.master, None)
        return ET.tostring(entry, encoding="unicode")

    def _seed_admin(self, admin: Admin) -> None:
        role = "<superuser>yes</superuser>" if admin.superuser else \
            "<custom><profile>api-certificates</profile></custom>"
        self.seed("/config/mgt-config/users",
                  f"<entry name={quoteattr(admin.name)}><phash>*</phash><permissions>"
                  f"<role-based>{role}</role-based></permissions></entry>")

    def running_tree(self) -> ET.Element:
        self.advance()
        with self.store.lock:
            return _copy(self.store.running)

    def candidate_tree(self) -> ET.Element:
        self.advance()
        with self.store.lock:
            return _copy(self.store.candidate)

    def fault_response(self, status: int, retry_after: Optional[float]) -> Response:
        # A management web server in trouble answers with a bare HTML page, not the XML API.
        headers = [("Retry-After", str(int(retry_after)))] if retry_after else []
        return Response(status, f"<html><body><h1>{status}</h1></body></html>".encode(),
                        "text/html", headers)

    def internal_error(self) -> Response:
        return Response(200, envelope("error", 21, lines=["Internal error"]), XML)


# --- helpers ------------------------------------------------------------------------------

def escape(text: str) -> str:
    return _escape(xml_safe(text))


def _first(params: Dict[str, List[str]], name: str) -> Optional[str]:
    values = params.get(name)
    return values[0] if values else None


def _copy(element: ET.Element) -> ET.Element:
    copy: ET.Element = SafeET.fromstring(ET.tostring(element))
    return copy


def _render(node: ET.Element, attribute: Optional[str]) -> str:
    if attribute:
        value = node.get(attribute)
        return "" if value is None else f"<{node.tag} {attribute}={quoteattr(value)}/>"
    return ET.tostring(node, encoding="unicode")


def _path_words(root: ET.Element) -> List[str]:
    words, node = [root.tag], root
    while len(node) == 1 and node[0].tag not in ("id",):
        node = node[0]
        words.append(node.tag)
        if len(words) >= 3:
            break
    return words


def _cmd_words(cmd: str) -> str:
    try:
        return " ".join(_path_words(SafeET.fromstring(cmd)))
    except Exception:
        return "?"


def _op_words(params: Dict[str, List[str]]) -> List[str]:
    cmd = _first(params, "cmd")
    return _cmd_words(cmd).split() if cmd else []


def _is_write(kind: Optional[str], action: Optional[str], cmd: Optional[str]) -> bool:
    if kind in ("commit", "import"):
        return True
    if kind == "config":
        return action in ("set", "edit", "delete", "rename", "clone", "move", "override",
                          "multi-config")
    if kind == "op" and cmd:
        return _cmd_words(cmd).startswith("request")
    return False

