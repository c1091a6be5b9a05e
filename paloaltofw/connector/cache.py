"""What the agent derives from content and may keep between runs, keyed by that content's
SHA-256, in `state_dir/cache/`. Never a source of truth: an entry can only be found again by
the very bytes it was derived from, so it cannot go stale; a missing, unreadable or foreign
cache file is ignored and rebuilt, and deleting the directory at any time only costs the
next run the work again.

* `facts.json`: the facts of a certificate (facts.Facts) by the hash of the PEM the device
  holds. A nightly no-op run asks them of every certificate of the fleet, and reading them
  from the X.509 costs about as much again as the firewall's whole answer (issue "Fleet
  cost").

* `profiles.json`: certificate profile files as YAML parsed them, by the hash of the file's
  bytes (and PyYAML's version): parsing a fleet's thousand profiles cost more than all the
  checks made on them. Checking is not cached; it is done on every run, on what was parsed.
  Only certificate profiles: they hold no secret (firewall profiles and credentials are
  never written here), and only documents that JSON keeps exactly (no dates, no
  non-text keys).

A run writes a file only when it learned something; a run over every profile then keeps
only what it used, so certificates long replaced and profiles long edited do not pile up.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Dict, Optional, Set

import yaml

from . import __version__
from .facts import Facts
from .state import atomic_write

log = logging.getLogger(__name__)

CACHE_DIR = "cache"
VERSION = 1  # of the entries and what derives them: bump it when either changes


def facts_header() -> Dict[str, Any]:
    """What else the facts derive from: the agent's code reading them, and the library under
    it. A file written under another header is ignored (and rebuilt). The library's version
    is read from its installed metadata: importing cryptography only to ask it would cost a
    no-op run, which finds every certificate here, what the cache saves (facts.py)."""
    try:
        library = importlib.metadata.version("cryptography")
    except importlib.metadata.PackageNotFoundError:  # no metadata (vendored, a source tree)
        import cryptography
        library = cryptography.__version__
    return {"version": VERSION, "agent": __version__, "cryptography": library}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: str, version: Dict[str, Any], key: str) -> Dict[str, Any]:
    """The entries of a cache file written with `version`; {} for none, a damaged or a
    foreign one (rebuilt as the run goes)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or any(data.get(k) != v for k, v in version.items()):
        return {}
    entries = data.get(key)
    return entries if isinstance(entries, dict) else {}


def _write(path: str, version: Dict[str, Any], key: str, entries: Dict[str, Any]) -> None:
    """All or nothing, in the state directory's cache/ (0700, as the state directory). A
    cache that cannot be written costs the next run time, never a result: logged, no more."""
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        atomic_write(path, json.dumps({**version, key: entries}, separators=(",", ":")) + "\n")
    except OSError as exc:
        log.info("not cached (%s): %s", exc.strerror or exc, path)


class _Cache:
    """Entries by content hash in one file of `state_dir/cache/`, under a header naming what
    derived them; what a run used, and whether it learned anything. Device threads share
    one (KnownFacts): additions and the record of use take the lock."""

    def __init__(self, state_dir: str, file: str, header: Dict[str, Any], key: str) -> None:
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, CACHE_DIR, file)
        self.header, self.key = header, key
        self._entries: Dict[str, Any] = _read(self.path, header, key)
        self._used: Set[str] = set()
        self._learned = False
        self._lock = threading.Lock()

    def _found(self, key: str) -> None:
        with self._lock:
            self._used.add(key)

    def _learn(self, key: str, entry: Any) -> None:
        with self._lock:
            self._entries[key] = entry
            self._used.add(key)
            self._learned = True

    def save(self, complete: bool) -> None:
        """Write what the run learned (`complete`: the run saw every profile, so what it did
        not use is dropped). Not before the state directory exists: the run makes it, with
        its mode."""
        if not self._learned or not os.path.isdir(self.state_dir):
            return
        with self._lock:
            entries = {k: v for k, v in self._entries.items() if k in self._used} \
                if complete else dict(self._entries)
        _write(self.path, self.header, self.key, entries)


@dataclass(frozen=True)
class Parsed:
    value: object  # a YAML document (None for an empty file)


class KnownFiles(_Cache):
    """Parsed certificate profile files by the hash of their bytes (module docstring)."""

    FILE = "profiles.json"

    def __init__(self, state_dir: str, loader: str = "") -> None:
        super().__init__(state_dir, self.FILE, {"version": VERSION, "agent": __version__,
                                                "yaml": yaml.__version__, "loader": loader},
                         "files")

    def parsed(self, data: bytes) -> Optional[Parsed]:
        # Each entry is kept as JSON text, so every hit is a new object of its own.
        key = digest(data)
        text = self._entries.get(key)
        if not isinstance(text, str):
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return None  # damaged: parsed again, and learned again
        self._found(key)
        return Parsed(value)

    def learn(self, data: bytes, document: object) -> None:
        try:
            text = json.dumps(document, separators=(",", ":"))
        except (TypeError, ValueError):
            return  # a date, bytes, a set: JSON would not give it back
        kept = json.loads(text)
        if kept == document and _same_types(kept, document):
            self._learn(digest(data), text)


def _same_types(a: object, b: object) -> bool:
    """`1 == 1.0 == True` in Python: what JSON gives back must have the very same types."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict) and isinstance(b, dict):
        return all(_same_types(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return all(_same_types(x, y) for x, y in zip(a, b))
    return True


class KnownFacts(_Cache):
    """Certificate facts by PEM hash, shared by the run's device threads."""

    FILE = "facts.json"

    def __init__(self, state_dir: str) -> None:
        super().__init__(state_dir, self.FILE, facts_header(), "facts")

    def facts(self, pem: str) -> Optional[Facts]:
        """The facts of the certificate `pem` holds; None if it is not a readable one."""
        key = digest(pem.strip().encode("utf-8", "replace"))
        known = self._entries.get(key)
        if known is not None:
            try:
                found = _facts(known)
            except (KeyError, TypeError, ValueError):
                found = None  # a damaged entry: read the certificate again
            if found is not None:
                self._found(key)
                return found
        from .certs import facts_of, load_pem  # only now: cryptography (facts.py)
        cert = load_pem(pem)
        if cert is None:
            return None
        facts = facts_of(cert)
        self._learn(key, _entry(facts))
        return facts


def _entry(facts: Facts) -> Dict[str, Any]:
    return {"not_before": facts.not_before.isoformat(), "not_after": facts.not_after.isoformat(),
            "key": facts.key_label, "subject_cn": facts.subject_cn,
            "issuer_cn": facts.issuer_cn,
            "names": list(facts.names) if facts.names is not None else None}


def _facts(entry: Dict[str, Any]) -> Facts:
    """An entry as _entry wrote it; anything else is damage (ValueError): never a guess."""
    texts = [entry[k] for k in ("not_before", "not_after", "key", "subject_cn", "issuer_cn")]
    names = entry["names"]
    if not all(isinstance(t, str) for t in texts) or not (
            names is None or (isinstance(names, list) and
                              all(isinstance(n, str) for n in names))):
        raise ValueError("not an entry of this cache")
    return Facts(not_before=_utc(texts[0]), not_after=_utc(texts[1]), key_label=texts[2],
                 subject_cn=texts[3], issuer_cn=texts[4],
                 names=tuple(names) if names is not None else None)


def _utc(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("a time without its zone")
    return moment

