"""What a run found and did, per certificate and in all: the words status, the JSON report,
the metrics and the alerts are made of."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import Enum
from typing import Dict, List, Optional, Tuple

from .bindings import BindingKind


class Word(str, Enum):
    """An enum whose members are their (lower-case) words: compared with, printed and
    serialized as the plain strings the reports and state files have always used."""

    def __str__(self) -> str:
        return str(self.value)


class Mode(Word):
    """What the run was asked to do (the command)."""

    ENROLL = "enroll"  # only certificates that are missing
    RENEW = "renew"  # whatever is due (and finish what is pending)
    STATUS = "status"  # only look


class State(Word):
    """A certificate's condition when the run looked."""

    OK = "ok"
    DUE = "due"
    PENDING = "pending"
    MISSING = "missing"
    EXPIRED = "expired"
    REVOKED = "revoked"
    ERROR = "error"  # not looked at (yet), or its last order was refused


class Action(Word):
    """What the run did, or in a dry run would do, for a certificate."""

    NONE = "none"
    ENROLL = "enroll"
    RENEW = "renew"
    COLLECT = "collect"  # an order placed by an earlier run
    COMMIT = "commit"  # a certificate an earlier run imported


class Outcome(Word):
    OK = "ok"  # nothing to do
    CHANGED = "changed"  # a new certificate installed and committed
    PENDING = "pending"  # waiting at SCM
    FAILED = "failed"
    PLANNED = "planned"  # dry run
    INTERRUPTED = "interrupted"  # a signal stopped the run at a safe point


class StepKind(Word):
    """The steps a run takes for a certificate (plan.decide decides them)."""

    DISCARD = "discard"  # delete a request object that was never ordered with
    GENERATE = "generate"  # the device makes a key pair and CSR
    ORDER = "order"  # place the order at SCM (enroll, or renew by the previous id)
    RESUME = "resume"  # an interrupted order's id was recorded in .ids
    ADOPT = "adopt"  # an interrupted order's id given with --adopt
    LOOKUP = "lookup"  # search SCM's orders for an interrupted order
    REORDER = "reorder"  # order again after an interrupted order (--force)
    COLLECT = "collect"  # fetch the issued chain (SCM may still be processing)
    INSTALL = "install"  # verify the chain, import CAs and the certificate, read it back
    BIND = "bind"  # point a consumer at the new object (or create it)
    DELETE = "delete"  # delete a superseded object nothing uses any more
    KEEP = "keep"  # a superseded object still in use: kept, said
    COMMIT = "commit"  # the device's one commit of the run


@dataclass(frozen=True)
class Step:
    kind: StepKind
    object: str  # the certificate object (for COMMIT: the device) the step is about
    text: str  # how a plan and a report say it
    reason: str = ""  # GENERATE, DISCARD: why
    order_id: Optional[str] = None  # RESUME, ADOPT, COLLECT (once known)
    renew_of: Optional[str] = None  # ORDER: renew this SCM certificate (else enroll)
    binding: Optional[BindingKind] = None  # BIND
    location: str = ""  # BIND: the consumer
    users: Tuple[str, ...] = ()  # KEEP: what still uses the object
    scope: str = ""  # BIND: the consumer's scope (shared, vsys1, device)
    value: str = ""  # BIND: what it is made to name, when not `object` (an SSL/TLS profile)
    replaces: Optional[str] = None  # BIND of a listed consumer: the member it replaces

    @property
    def key(self) -> Tuple[str, str, str, str]:
        """What the step is, whatever the run learns on the way (a dry run knows no order id):
        how a planned and an executed step are compared."""
        return (self.kind.value, self.object, self.location, self.scope)

    def as_dict(self) -> Dict[str, Optional[str]]:
        return {"step": self.kind.value, "object": self.object,
                "consumer": self.location or None, "text": self.text}


@dataclass(frozen=True)
class DevicePush:
    """One managed firewall's share of a Panorama push (its entry in the CommitAll job)."""

    stack: str
    serial: str
    hostname: str
    result: str  # OK, or FAIL (Panorama's word); a device never reached is FAIL too
    status: str = ""  # Panorama's: "commit succeeded", "not connected", ...
    details: Tuple[str, ...] = ()  # the device's own lines

    @property
    def ok(self) -> bool:
        return self.result == "OK"

    def describe(self) -> str:
        return f"{self.hostname} ({self.serial})" if self.hostname != self.serial \
            else self.serial

    def as_dict(self) -> Dict[str, object]:
        return {"stack": self.stack, "serial": self.serial, "hostname": self.hostname,
                "result": self.result, "status": self.status, "details": list(self.details)}


@dataclass
class Result:
    """What happened to one certificate profile in this run (or, in a dry run, would)."""

    profile: str
    firewall: str
    object: Optional[str] = None
    state: State = State.ERROR
    action: Action = Action.NONE
    outcome: Outcome = Outcome.OK
    message: str = ""
    cert_id: Optional[str] = None
    not_after: Optional[dt.datetime] = None
    common_name: str = ""
    key: str = ""
    issuer: str = ""
    planned: List["Step"] = field(default_factory=list)  # dry run: the steps it would take
    done: List["Step"] = field(default_factory=list)  # real run: the steps it took
    ordered: bool = False  # a billable order was placed in this run
    pushes: List[DevicePush] = field(default_factory=list)  # Panorama: per managed firewall
    # What uses the certificate's object after the run: (consumer, managed by the agent).
    consumers: List[Tuple[str, bool]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAILED

    def fail(self, message: str) -> None:
        self.outcome, self.message = Outcome.FAILED, message

    def interrupt(self, message: str) -> None:
        """A signal stopped the run before this certificate was done; its state is saved."""
        self.outcome, self.message = Outcome.INTERRUPTED, f"interrupted: {message}"

    @property
    def plan(self) -> List[str]:
        """The planned steps as text (the JSON report's `plan`)."""
        return [step.text for step in self.planned]


@dataclass
class Report:
    """A whole run: every certificate's result, and what it cost."""

    results: List[Result]
    commits: int = 0
    started: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    seconds: float = 0.0

    @property
    def orders(self) -> int:
        return sum(1 for r in self.results if r.ordered)
