"""What the lifecycle asks of a certificate the device already holds, and name matching.

Kept apart from certs.py, which reads and verifies X.509 with cryptography: a nightly no-op
run finds the facts of every installed certificate in the cache (cache.py), by the hash of its
PEM, and so never needs cryptography, whose import was about a tenth of such a run's fixed cost
(bench/fleet.py, issue "Fleet cost"). Nothing here imports it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple


@dataclass(frozen=True)
class Facts:
    """What the lifecycle asks of an installed certificate: a nightly run asks it of every
    certificate of the fleet, so it is read from the X.509 once (certs.facts_of), and kept
    (cache.py) by the hash of the PEM it came from. `names` is None when the subjectAltName
    cannot be read: an expired or revoked certificate is still reported, and `covers` raises
    for the rest."""

    not_before: dt.datetime
    not_after: dt.datetime
    key_label: str
    subject_cn: str
    issuer_cn: str
    names: Optional[Tuple[str, ...]]

    def covers(self, name: str) -> bool:
        if self.names is None:
            raise ValueError(f"the subjectAltName of '{self.subject_cn}' cannot be read")
        return names_cover(self.names, name)


def names_cover(present: Sequence[str], name: str) -> bool:
    """Whether a certificate with subjectAltNames `present` is valid for `name`."""
    try:
        address = ipaddress.ip_address(name)
        return any(p == str(address) for p in present)
    except ValueError:
        return any(dns_matches(p, name) for p in present if ":" not in p)


def dns_matches(pattern: str, name: str) -> bool:
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern == name:
        return True
    if pattern.startswith("*.") and not name.startswith("*."):
        return name.split(".", 1)[-1] == pattern[2:] and "." in name
    return False
