"""What a run found and did, per certificate and in all: the words status, the JSON report,
the metrics and the alerts are made of."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, List, Optional

if TYPE_CHECKING:  # pragma: no cover
    from .plan import Step


class Word(str, Enum):
    """An enum whose members are their (lower-case) words: compared with, printed and
    serialized as the plain strings the reports and state files have always used."""

    def __str__(self) -> str:
        return str(self.value)


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
