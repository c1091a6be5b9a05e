"""The orders the emulated SCM holds (Pebble's "db"): one id space for both APIs, ids that
start at a random 7-digit number and grow by random steps (clients must not guess ids), and
the order log, one JSON line per billable operation."""

from __future__ import annotations

import json
import logging
import random
import secrets
import string
import threading
import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from cryptography import x509

from .. import pki
from .accounts import CertProfile
from .checks import ParsedCsr, merge_names
from .wire import ApiError

if TYPE_CHECKING:  # pragma: no cover
    from .service import ScmService

log = logging.getLogger("lab.scm")


@dataclass
class Order:
    """One SSL certificate order (an sslId / certId; both APIs share the id space)."""

    id: int
    api: str  # "enrollment" | "classic"
    profile: CertProfile
    org_id: int
    common_name: str
    names: List[str]  # CN first, then the requested SANs; what the leaf should carry
    term: int
    public_key: pki.PublicKey
    renew_id: str
    client: str
    requested: dt.datetime
    status: str = "Requested"  # Requested | Issued | Declined | Revoked | Expired
    pending_left: int = 0
    polls: int = 0
    decline: bool = False
    comments: str = ""
    external_requester: str = ""
    custom_fields: Dict[str, str] = field(default_factory=dict)
    leaf: Optional[x509.Certificate] = None
    chain: List[x509.Certificate] = field(default_factory=list)  # issuer ... root
    defect: str = ""
    renewed: bool = False
    renewed_date: Optional[dt.datetime] = None
    renew_of: Optional[int] = None
    issued: Optional[dt.datetime] = None
    declined: Optional[dt.datetime] = None
    revoked: Optional[dt.datetime] = None
    replaced: Optional[dt.datetime] = None
    reason_code: Optional[int] = None

    @property
    def validation(self) -> str:
        return self.profile.validation

    @property
    def key_type(self) -> str:
        """'RSA-2048' or 'EC-P384' (the order log's spelling)."""
        if pki.key_family(self.public_key) == "RSA":
            return f"RSA-{pki.key_bits(self.public_key)}"
        return f"EC-P{pki.key_bits(self.public_key)}"

    def summary(self) -> Dict[str, Any]:
        return {"id": self.id, "api": self.api, "status": self.status,
                "validation": self.validation, "profile_id": self.profile.id,
                "common_name": self.common_name, "names": list(self.names), "term": self.term,
                "key": self.key_type, "renewed": self.renewed, "renew_of": self.renew_of,
                "pending_left": self.pending_left, "defect": self.defect}


class Orders:
    """Every order, behind one lock (the service's: handlers hold it while they act)."""

    def __init__(self, scm: "ScmService", order_log: Optional[str]) -> None:
        self.scm = scm
        self.lock = threading.RLock()
        self.by_id: Dict[int, Order] = {}
        self.log_path = order_log
        self.log: List[Dict[str, Any]] = []
        self._random = random.Random(secrets.randbits(64))
        self._next_id = self._random.randint(1_000_000, 8_999_999)
        if order_log:
            open(order_log, "a", encoding="utf-8").close()

    def get(self, order_id: int) -> Order:
        """The order (its state brought up to date), or -5101."""
        order = self.by_id.get(order_id)
        if order is None:
            raise ApiError(404, -5101, f"Id: {order_id}")
        self.scm.ca.refresh(order)
        return order

    def by_renew_id(self, renew_id: str) -> Optional[Order]:
        return next((o for o in self.by_id.values() if o.renew_id == renew_id), None)

    def all(self) -> List[Order]:
        for order in self.by_id.values():
            self.scm.ca.refresh(order)
        return sorted(self.by_id.values(), key=lambda o: o.id)

    def new(self, api: str, profile: CertProfile, org_id: int, common_name: str,
                   names: List[str], term: int, public_key: pki.PublicKey, client: str,
                   comments: str = "", external_requester: str = "",
                   custom_fields: Optional[Dict[str, str]] = None,
                   renew_of: Optional[int] = None) -> Order:
        """Creates and stores an order, and writes the billing line. Caller holds the lock."""
        order_id = self._next_id
        self._next_id += self._random.randint(1, 9)
        renew_id = "".join(self._random.choice(string.ascii_letters + string.digits + "-_")
                           for _ in range(20))
        decline = False
        if self.scm.settings.decline_next > 0:
            self.scm.settings.decline_next = self.scm.settings.decline_next - 1
            decline = True
        order = Order(order_id, api, profile, org_id, common_name, names, term, public_key,
                      renew_id, client, pki.utcnow(), pending_left=int(self.scm.settings.pending_polls),
                      decline=decline, comments=comments, external_requester=external_requester,
                      custom_fields=dict(custom_fields or {}), renew_of=renew_of)
        self.by_id[order_id] = order
        self.bill(order, "renew" if renew_of is not None else "enroll")
        return order

    def bill(self, order: Order, op: str) -> None:
        now = pki.utcnow()
        entry = {"ts": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
                 "api": order.api, "op": op, "id": order.id, "renew_of": order.renew_of,
                 "validation": order.validation, "profile_id": order.profile.id,
                 "common_name": order.common_name, "names": list(order.names),
                 "key": order.key_type, "client": order.client}
        self.log.append(entry)
        if self.log_path:
            with open(self.log_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry, sort_keys=True) + "\n")
        log.info("order %s: %s %s %s for %s", order.id, order.api, op, order.validation,
                 ", ".join(order.names))

    def renew(self, old: Order, api: str, client: str, parsed: Optional[ParsedCsr],
                     profile: Optional[CertProfile] = None, term: Optional[int] = None,
                     sans: Optional[List[str]] = None, comments: Optional[str] = None,
                     external_requester: Optional[str] = None,
                     custom_fields: Optional[Dict[str, str]] = None) -> Order:
        """A renewal of `old` (caller holds the lock and has checked its state)."""
        profile = profile or old.profile
        names = old.names if sans is None else merge_names(old.common_name, sans)
        self.scm.checks.check_names(names, profile)
        fields = old.custom_fields if custom_fields is None else custom_fields
        self.scm.checks.check_custom_fields(fields)
        order = self.new(api, profile, old.org_id, old.common_name, list(names),
                                self.scm.checks.term(profile, term, old.term),
                                parsed.public_key if parsed else old.public_key, client,
                                old.comments if comments is None else comments,
                                old.external_requester if external_requester is None
                                else external_requester, fields, renew_of=old.id)
        old.renewed = True
        old.renewed_date = pki.utcnow()
        return order


    def revoke(self, order_id: int, code: int) -> None:
        """Revoke an issued order (both APIs' revoke routes)."""
        order = self.get(order_id)
        if order.status == "Revoked":
            raise ApiError(400, -159)
        if order.status != "Issued":
            raise ApiError(400, -102)
        order.status = "Revoked"
        order.revoked = pki.utcnow()
        order.reason_code = code
