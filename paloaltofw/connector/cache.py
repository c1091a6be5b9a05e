"""What the agent derives from content and may keep between runs, keyed by that content's
SHA-256, in `state_dir/cache/`. Never a source of truth: an entry can only be found again by
the very bytes it was derived from, so it cannot go stale; a missing, unreadable or foreign
cache file is ignored and rebuilt, and deleting the directory at any time only costs the
next run the work again.

* `facts.json`: the facts of a certificate (certs.Facts) by the hash of the PEM the device
  holds. A nightly no-op run asks them of every certificate of the fleet, and reading them
  from the X.509 costs about as much again as the firewall's whole answer (issue "Fleet
  cost").

A run writes the file only when it learned something; a run over every profile then keeps
only what it used, so certificates long replaced do not pile up.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import threading
from typing import Any, Dict, Optional, Set

from .certs import Facts, load_pem
from .state import atomic_write

log = logging.getLogger(__name__)

CACHE_DIR = "cache"
VERSION = 1  # of the entries' form: another version's file is ignored


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class KnownFacts:
    """Certificate facts by PEM hash, shared by the run's device threads."""

    FILE = "facts.json"

    def __init__(self, state_dir: Optional[str]) -> None:
        self.path = os.path.join(state_dir, CACHE_DIR, self.FILE) if state_dir else None
        self._lock = threading.Lock()
        self._entries: Dict[str, Dict[str, Any]] = self._read()
        self._used: Set[str] = set()
        self._learned = False

    def _read(self) -> Dict[str, Dict[str, Any]]:
        if self.path is None:
            return {}
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return {}  # none yet, or unreadable: rebuilt as the run goes
        entries = data.get("facts") if isinstance(data, dict) and \
            data.get("version") == VERSION else None
        return entries if isinstance(entries, dict) else {}

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
                with self._lock:
                    self._used.add(key)
                return found
        cert = load_pem(pem)
        if cert is None:
            return None
        facts = Facts.of(cert)
        with self._lock:
            self._entries[key] = _entry(facts)
            self._used.add(key)
            self._learned = True
        return facts

    def save(self, complete: bool) -> None:
        """Write what the run learned (`complete`: the run saw every profile, so what it did
        not use is dropped). A cache that cannot be written costs the next run time, never
        a result: the problem is logged, the run goes on."""
        if self.path is None or not self._learned:
            return
        with self._lock:
            entries = {k: v for k, v in self._entries.items() if k in self._used} \
                if complete else dict(self._entries)
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            atomic_write(self.path, json.dumps({"version": VERSION, "facts": entries},
                                               separators=(",", ":")) + "\n")
        except OSError as exc:
            log.info("certificate facts not cached (%s): %s", exc.strerror or exc, self.path)


def _entry(facts: Facts) -> Dict[str, Any]:
    return {"not_before": facts.not_before.isoformat(), "not_after": facts.not_after.isoformat(),
            "key": facts.key_label, "subject_cn": facts.subject_cn,
            "issuer_cn": facts.issuer_cn,
            "names": list(facts.names) if facts.names is not None else None}


def _facts(entry: Dict[str, Any]) -> Facts:
    names = entry["names"]
    return Facts(not_before=_utc(entry["not_before"]), not_after=_utc(entry["not_after"]),
                 key_label=str(entry["key"]), subject_cn=str(entry["subject_cn"]),
                 issuer_cn=str(entry["issuer_cn"]),
                 names=tuple(str(n) for n in names) if names is not None else None)


def _utc(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("a time without its zone")
    return moment

