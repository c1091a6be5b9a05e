"""What the agent remembers between runs, per certificate profile, in `state_dir`.

Two files per certificate profile, both written atomically (temporary file, fsync, rename,
fsync of the directory):

* `<profile>.ids`: the SCM certificate ID of the newest order, Base64-encoded, as Sectigo's
  connector keeps it (one line).
* `<profile>.json`: everything else (documented in the README, "State files"):

      {"version": 1,
       "object": "www-20261128",          # object on the firewall holding the current certificate
       "cert_id": "1234",                 # SCM id of the installed certificate (renewals use it)
       "api": "enrollment",               # the SCM API that issued it
       "pending": {                       # an order in progress, until its commit succeeds
           "stage": "generated|ordering|ordered|installed",
           "object": "www-20261128",      # where its key and CSR live on the firewall
           "order_id": "1235",            # once SCM answered
           "kind": "enroll|renew", "api": "...", "since": "ISO time",
           "replaces": "www",             # the object it supersedes
           "ids_before": "1234",          # .ids when the order went out (see below)
           "csr": "-----BEGIN CERTIFICATE REQUEST-----...",
           "request": {"key": "RSA-2048", "names": [...], ...}},  # what it was made for
       "superseded": ["www"],             # old objects to delete once nothing references them
       "rejected": {...},                 # an order refused at verification or by SCM, kept
       "history": [{"time", "event", ...}]}

The `ordering` stage is written *before* the order is sent, so a run interrupted between
sending it and recording SCM's answer is noticed and never silently ordered again. SCM's
answer goes to `.ids` first, so an interruption after that is resumed from `.ids`.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import json
import os
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Set

from .errors import AgentError, ConfigError
from .results import Action, Word

VERSION = 1
HISTORY_LIMIT = 50


class Stage(Word):
    """How far a certificate on its way got; each stage is saved before the step that leaves
    it, so a run interrupted anywhere is resumed from here."""

    GENERATED = "generated"  # key and CSR made on the device, not ordered
    ORDERING = "ordering"  # the order is being sent: its answer may not have been recorded
    ORDERED = "ordered"  # SCM gave the order's id
    INSTALLED = "installed"  # imported and bound on the device, not committed yet


@dataclass
class Pending:
    stage: Stage
    object: str
    kind: Action = Action.ENROLL  # ENROLL or RENEW
    api: str = ""
    order_id: Optional[str] = None
    since: str = ""
    replaces: Optional[str] = None  # the object this certificate supersedes, if any
    ids_before: Optional[str] = None  # the .ids content when the order went out
    csr: Optional[str] = None  # the CSR (PEM, not secret): its key is what the order must carry
    # What the key and CSR were made for (key, names, validation, subject): a request that no
    # longer matches its profile is made again before anything is ordered with it.
    request: Optional[Dict[str, Any]] = None


@dataclass
class CertState:
    profile: str
    object: Optional[str] = None
    cert_id: Optional[str] = None
    api: Optional[str] = None
    pending: Optional[Pending] = None
    superseded: List[str] = field(default_factory=list)
    rejected: Optional[Dict[str, Any]] = None
    history: List[Dict[str, Any]] = field(default_factory=list)

    def note(self, event: str, **details: Any) -> None:
        self.history.append({"time": now_iso(), "event": event, **details})
        del self.history[:-HISTORY_LIMIT]


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


class StateStore:
    """Reads and writes the state files of one state directory."""

    NOTICES = "notices.json"

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._notices_lock = threading.Lock()  # firewall threads share the store

    def first_notice(self, key: str) -> bool:
        """True the first time `key` is noticed in this state directory (and records it):
        for warnings a person needs once, not from every nightly run by cron mail."""
        path = os.path.join(self.directory, self.NOTICES)
        with self._notices_lock:
            try:
                with open(path, encoding="utf-8") as handle:
                    seen = json.load(handle)
            except (OSError, ValueError):
                seen = {}
            if not isinstance(seen, dict):
                seen = {}
            if key in seen:
                return False
            seen[key] = now_iso()
            atomic_write(path, json.dumps(seen, indent=1, sort_keys=True) + "\n")
            return True

    def ensure_writable(self) -> None:
        """Create the directory (0700) and prove it is writable, before anything is sent."""
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.directory, prefix=".probe-",
                                                delete=True)
            probe.close()
        except OSError as exc:
            raise ConfigError(f"state directory is not writable ({exc.strerror}); fix its "
                              "permissions or set state_dir in config.yaml",
                              self.directory) from None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One run at a time per state directory (cron overlap): an exclusive flock on
        `.lock`, which the kernel releases even when the process is killed."""
        path = os.path.join(self.directory, ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
                raise AgentError(f"another paloaltoagent run ({holder or 'unknown'}) is "
                                 f"working on {self.directory}; this run stops without doing "
                                 "anything") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} since {now_iso()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)

    def _path(self, profile: str, suffix: str) -> str:
        return os.path.join(self.directory, f"{profile}{suffix}")

    def load(self, profile: str) -> CertState:
        path = self._path(profile, ".json")
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            state = CertState(profile)
            ids = self.read_ids(profile)
            if ids:
                # Only a .ids file (e.g. from Sectigo's connector): the id of the last order.
                state.cert_id = ids
            return state
        except (OSError, ValueError) as exc:
            raise ConfigError(f"state file is unreadable ({exc}); restore it from backup or "
                              "move it away to start this certificate afresh", path) from None
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ConfigError(f"state file has an unknown format (version "
                              f"{data.get('version') if isinstance(data, dict) else '?'})",
                              path)
        pending = data.get("pending")
        try:
            parsed = Pending(**dict(pending, stage=Stage(pending["stage"]),
                                    kind=Action(pending.get("kind", Action.ENROLL)))) \
                if pending else None
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"state file has an unreadable pending order ({exc}); restore it "
                              "from backup or move it away to start this certificate afresh",
                              path) from None
        return CertState(profile=profile, object=data.get("object"),
                         cert_id=data.get("cert_id"), api=data.get("api"), pending=parsed,
                         superseded=list(data.get("superseded") or []),
                         rejected=data.get("rejected"),
                         history=list(data.get("history") or []))

    def save(self, state: CertState) -> None:
        data = {"version": VERSION, "profile": state.profile, "object": state.object,
                "cert_id": state.cert_id, "api": state.api,
                "pending": asdict(state.pending) if state.pending else None,
                "superseded": state.superseded, "rejected": state.rejected,
                "history": state.history}
        atomic_write(self._path(state.profile, ".json"),
                     json.dumps(data, indent=2, sort_keys=True) + "\n")

    def known_order_ids(self) -> Set[str]:
        """Every order id any certificate profile's state mentions (so that a search for an
        interrupted run's order never picks another profile's)."""
        known: Set[str] = set()
        try:
            names = [f for f in os.listdir(self.directory) if f.endswith(".json")]
        except OSError:
            return known
        for name in names:
            try:
                with open(os.path.join(self.directory, name), encoding="utf-8") as handle:
                    data = json.load(handle)
            except (OSError, ValueError):
                continue
            if not isinstance(data, dict):
                continue
            pending = data.get("pending") or {}
            rejected = data.get("rejected") or {}
            known.update(str(v) for v in (data.get("cert_id"), pending.get("order_id"),
                                          pending.get("ids_before"),
                                          rejected.get("order_id")) if v)
            known.update(str(h["order_id"]) for h in data.get("history") or []
                         if isinstance(h, dict) and h.get("order_id"))
        return known

    def write_ids(self, profile: str, cert_id: str) -> None:
        encoded = base64.b64encode(cert_id.encode("ascii")).decode("ascii")
        atomic_write(self._path(profile, ".ids"), encoded + "\n")

    def read_ids(self, profile: str) -> Optional[str]:
        try:
            with open(self._path(profile, ".ids"), encoding="ascii") as handle:
                text = handle.read().strip()
        except FileNotFoundError:
            return None
        try:
            return base64.b64decode(text, validate=True).decode("ascii") if text else None
        except ValueError:
            raise ConfigError("not a Base64-encoded certificate ID",
                              self._path(profile, ".ids")) from None


def atomic_write(path: str, text: str, mode: int = 0o600) -> None:
    """Write all or nothing: a crash leaves either the old file or the new one."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
