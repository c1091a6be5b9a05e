"""The PAN-OS XML API (panos.md), one method per request type, as pan-python's xapi does.

Transport rules: every call is a POST to `https://host/api/` with the parameters in a form body
(so nothing is logged in the device's web access log), the API key in the `X-PAN-KEY` header
(never in a URL, panos.md §1.3), and file uploads as multipart with the parameters in the query
string, as pan-python does; sent by `http.Server` (urllib3). Replies are parsed by `parse_xml`,
which refuses any document type declaration (so no entity is ever expanded or fetched). Where a
request is aimed (`vsys`, and later a template or a managed firewall's serial) is applied in one
place, `Target.params`, for the request types that take it.

This module knows the wire, not the workflow: what to read or write is device.py's.
"""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from html import escape  # &, <, > (and quotes): xml.sax.saxutils would load urllib.request
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from . import http
from .errors import Interrupted, PanosError
from .settings import FirewallProfile

log = logging.getLogger(__name__)

BUSY_RETRIES, BUSY_WAIT = 6, 5.0  # "another commit in progress": about 3 minutes in all
BUSY_MARKERS = ("Another commit", "commit is in progress", "Please try again later",
                "Another sync is in progress")


@dataclass(frozen=True)
class Target:
    """Where requests are aimed, applied in one place. `serial`: a firewall reached through
    Panorama, on every request (`target=SERIAL`, panos.md §6.1). `vsys` (on op, import and
    export; None: shared) and `template` (on import: `target-tpl`, panorama-ha-bindings.md
    §1.3). Config requests carry absolute xpaths and need nothing else."""

    vsys: Optional[str] = None
    serial: Optional[str] = None
    template: Optional[str] = None

    def params(self) -> Dict[str, str]:
        out = {"vsys": self.vsys} if self.vsys else {}
        if self.template:
            out["target-tpl"] = self.template  # target-tpl-vsys is ignored (PAN-257229)
        return out

    def device(self) -> Dict[str, str]:
        return {"target": self.serial} if self.serial else {}


@dataclass(frozen=True)
class Job:
    """A finished job (`show jobs id`)."""

    id: str
    result: str  # OK | FAIL
    details: List[str]
    element: ET.Element


class XmlApi:
    """One device's XML API. Methods raise PanosError with the device's own message lines."""

    def __init__(self, profile: FirewallProfile, target: Target = Target(),
                 sleep: Callable[[float], None] = time.sleep,
                 shared: Optional[http.Shared] = None,
                 stopping: Callable[[], bool] = lambda: False) -> None:
        self.profile = profile
        self.name = profile.name
        self.label = profile.label
        self.target = target
        self._server = http.Server(profile.url, profile.tls, shared or http.Shared())
        self._key = profile.api_key.reveal() if profile.api_key else None
        self._sleep = sleep
        self._stopping = stopping  # a signal asked the run to stop: waits end early
        # The configured api_key was refused and replaced by keygen in this run.
        self.stale_api_key = False

    # -- the request types --------------------------------------------------------------

    def get(self, xpath: str) -> Optional[ET.Element]:
        """`type=config&action=get`: the element at xpath (the candidate), None if absent."""
        root = self._call({"type": "config", "action": "get", "xpath": xpath},
                          accept_codes=("7",))
        result = root.find("result")
        return None if result is None or len(result) == 0 else result[0]

    def show(self, xpath: str) -> Optional[ET.Element]:
        """`type=config&action=show`: the element at xpath in the running configuration, None
        if absent."""
        root = self._call({"type": "config", "action": "show", "xpath": xpath},
                          accept_codes=("7",))
        result = root.find("result")
        return None if result is None or len(result) == 0 else result[0]

    def set(self, xpath: str, element: str) -> None:
        self._call({"type": "config", "action": "set", "xpath": xpath, "element": element},
                   write=True)

    def edit(self, xpath: str, element: str) -> None:
        """`action=edit`: replaces the node at xpath (a `set` would merge a member list)."""
        self._call({"type": "config", "action": "edit", "xpath": xpath, "element": element},
                   write=True)

    def delete(self, xpath: str) -> None:
        """Deleting what is not there (code 7) is success."""
        self._call({"type": "config", "action": "delete", "xpath": xpath},
                   accept_codes=("7",), write=True)

    def op(self, cmd: str, write: bool = False, targeted: bool = False) -> ET.Element:
        params = {"type": "op", "cmd": cmd}
        if targeted:
            params.update(self.target.params())
        return self._call(params, write=write)

    def import_file(self, category: str, name: str, content: bytes,
                    fmt: str = "pem") -> None:
        """Multipart upload, parameters in the query (pan-python's style, panos.md §3.5)."""
        params = {"type": "import", "category": category, "certificate-name": name,
                  "format": fmt, **self.target.params()}
        self._call(params, files={"file": (f"{name}.{fmt}", content)}, write=True)

    def export(self, category: str, name: str, fmt: str) -> bytes:
        """The exported file's bytes; an XML answer is the device's refusal."""
        params = {"type": "export", "category": category, "certificate-name": name,
                  "format": fmt, **self.target.params()}
        answer = self._post(params)
        if answer.status == 403 and self._renew_key():
            answer = self._post(params)
        if answer.status == 200 and "xml" not in answer.content_type:
            return answer.body
        root = self._parse(answer)
        raise PanosError(f"{self.label}: export of {name} failed: "
                         f"{' '.join(message_lines(root)) or 'no file'}")

    def commit(self, cmd: str, action: str = "partial") -> Optional[str]:
        """`type=commit` (`action=all`: a Panorama push): the job id, or None when there is
        nothing to commit. "Another commit in progress" is retried with backoff (panos.md
        §4.2)."""
        wait = BUSY_WAIT
        for attempt in range(BUSY_RETRIES + 1):
            try:
                root = self._call({"type": "commit", "action": action, "cmd": cmd},
                                  write=True)
            except PanosError as exc:
                busy = exc.code == "13" or any(m in str(exc) for m in BUSY_MARKERS)
                if not busy or attempt == BUSY_RETRIES:
                    raise
                log.info("%s: another commit is running; retrying in %.0f s",
                         self.label, wait)
                self._sleep(wait)
                if self._stopping():
                    raise Interrupted(f"{self.label}: not committed (another commit "
                                      "was running when the run was interrupted)") from None
                wait = min(wait * 2, 60)
                continue
            job = root.findtext("result/job")
            return job.strip() if job else None  # None: "There are no changes to commit."
        raise AssertionError("unreachable: the last attempt returns or raises")

    def wait_job(self, job: str, timeout: float, what: str = "job",
                 devices: bool = False) -> Job:
        """Poll `show jobs id` until FIN (bounded by `timeout`). `progress` is not parsed:
        after FIN it may be a timestamp (panos.md §4.3). With `devices` (a push), also until
        no device entry is PEND: the job reads FIN before its devices finish
        (panorama-ha-bindings.md §2.3)."""
        status = None
        # The job goes on by itself on the device if the run stops; the next run sees it.
        for _ in self.polls(timeout, f"{what} {job} still running on the device when the run "
                                     "was interrupted"):
            root = self.op(f"<show><jobs><id>{escape(job)}</id></jobs></show>")
            element = root.find("result/job")
            status = root.findtext("result/job/status")
            pending = devices and element is not None and any(
                (d.findtext("result") or "").strip() == "PEND"
                for d in element.findall("devices/entry"))
            if status == "FIN" and element is not None and not pending:
                details = [(line.text or "").strip() for line in
                           element.findall("details/line")]
                return Job(job, (element.findtext("result") or "").strip(), details, element)
        raise PanosError(f"{self.label}: {what} {job} did not finish within {timeout:.0f} s "
                         f"(status {status}); it may still complete on the device")

    def polls(self, timeout: float, stopped: str) -> Iterator[None]:
        """One step per poll of something the device finishes by itself: at once, then after
        0.1 s growing by half up to 5 s (a quick end is seen quickly, a slow one cheaply and
        at most a third of its time late), while the next poll fits in `timeout`. A signal
        asking the run to stop ends the wait with Interrupted(`stopped`)."""
        deadline = time.monotonic() + timeout
        interval = 0.1
        while True:
            yield
            if time.monotonic() + interval > deadline:
                return
            self._sleep(interval)
            if self._stopping():
                raise Interrupted(f"{self.label}: {stopped}")
            interval = min(interval * 1.5, 5.0)

    def keygen(self) -> str:
        """type=keygen with the profile's username and password (POST body, never a URL)."""
        assert self.profile.username and self.profile.password
        answer = self._post({"type": "keygen", "user": self.profile.username,
                             "password": self.profile.password.reveal()}, auth=False)
        if answer.status == 403:
            raise PanosError(f"{self.label}: keygen refused: invalid username or "
                             f"password for '{self.profile.username}'", "403")
        root = self._parse(answer)
        key = root.findtext("result/key")
        if root.get("status") != "success" or not key:
            raise PanosError(f"{self.label}: keygen failed: "
                             f"{' '.join(message_lines(root))}")
        return key.strip()

    # -- transport ------------------------------------------------------------------------

    def _call(self, params: Dict[str, str],
              files: Optional[Dict[str, Tuple[str, bytes]]] = None,
              accept_codes: Tuple[str, ...] = (), write: bool = False) -> ET.Element:
        """One API call; returns the <response> element. A stale key (403) is renewed once
        by keygen when a username and password are configured (a 403 changed nothing)."""
        answer = self._post(params, files, write=write)
        if answer.status == 403 and self._renew_key():
            answer = self._post(params, files, write=write)
        root = self._parse(answer)
        status, code = root.get("status"), root.get("code")
        if status == "success" or (code is not None and code in accept_codes):
            return root
        lines = message_lines(root)
        raise PanosError(f"{self.label}: {' '.join(lines) or 'error'}"
                         + (f" (code {code})" if code else ""), code, lines, refused=True)

    def _renew_key(self) -> bool:
        """After a 403: forget the key so the next request makes one by keygen (True), when
        a username and password are configured."""
        if not (self.profile.username and self.profile.password):
            return False
        log.info("%s: API key refused; generating a new one", self.label)
        if self.profile.api_key and self._key == self.profile.api_key.reveal():
            self.stale_api_key = True  # the workflow tells the administrator, once
        self._key = None
        return True

    def _post(self, params: Dict[str, str],
              files: Optional[Dict[str, Tuple[str, bytes]]] = None, auth: bool = True,
              write: bool = False) -> http.Answer:
        headers = {}
        if auth:
            if self._key is None:
                self._key = self.keygen()
            headers["X-PAN-KEY"] = self._key
            params = {**params, **self.target.device()}  # keygen is Panorama's own
        # Reads may be repeated after a lost answer; writes (a commit, a generate) may not.
        retry = http.WRITE if write else http.SAFE
        try:
            if files:
                return self._server.post("/api/", retry, self.profile.timeout, headers,
                                         query=params, files=files, write=write)
            return self._server.post("/api/", retry, self.profile.timeout, headers,
                                     form=params, write=write)
        except http.Unanswered as exc:
            raise PanosError(f"{self.label}: {exc}") from None

    def _parse(self, answer: http.Answer) -> ET.Element:
        ctype = answer.content_type
        if "xml" not in ctype:
            raise PanosError(f"{self.label}: HTTP {answer.status} without an "
                             f"XML API answer ({ctype or 'no content type'})")
        try:
            root = parse_xml(answer.body)
        except (ET.ParseError, Refused) as exc:
            raise PanosError(f"{self.label}: unreadable XML answer ({exc})") from None
        if answer.status == 403:
            raise PanosError(f"{self.label}: authentication failed "
                             f"({' '.join(message_lines(root)) or 'HTTP 403'}); check api_key "
                             "or username/password", "403", message_lines(root))
        return root


class Refused(ValueError):
    """XML that parse_xml does not read."""


def parse_xml(data: bytes) -> ET.Element:
    """The device's answer as an element tree, by the standard library's C parser.

    Entities can be declared only in a document type declaration, so a document without one
    has none to expand (the "billion laughs") and none to fetch from elsewhere (external
    entities): what defusedxml guards against, refused here before parsing. The check is on
    the text, so the document must be UTF-8, as the XML API answers. It is handed to the
    parser as text, which makes the parser read it as UTF-8 whatever its XML declaration
    says; and without NUL characters (which XML does not allow), because the parser would
    take NULs for UTF-16 or UTF-32, where the declaration would not read as such above.
    defusedxml calls back into Python for every element: three times the time here (0.23
    against 0.07 ms for the lab's 16 KB configuration). tests/test_security.py tries the
    encodings."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("it is not UTF-8") from None
    if "\x00" in text:
        raise Refused("it has NUL characters")
    if "<!DOCTYPE" in text:
        raise Refused("it has a document type declaration")
    parser = ET.XMLParser()
    parser.feed(text)
    root: ET.Element = parser.close()
    return root


def message_lines(root: ET.Element) -> List[str]:
    """Where the device puts its message (pan-python's search order, panos.md §2.2)."""
    for path in ("msg/line", "result/msg/line", "result/msg", "msg"):
        found = root.findall(path)
        lines = [" ".join("".join(node.itertext()).split()) for node in found]
        lines = [line for line in lines if line]
        if lines:
            return lines
    return []
