"""What a run shows a person: the tables and lines the CLI prints (the CLI does the printing).
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Callable, Sequence, TextIO

from .report import days_left
from .results import Action, Outcome, Result, State


class Progress:
    """A line per certificate as each firewall finishes, on a terminal."""

    def __init__(self, out: TextIO, redact: Callable[[str], str], total: int) -> None:
        self.out, self.redact, self.total, self.done = out, redact, total, 0
        self.lock = threading.Lock()

    def line(self, result: Result) -> None:
        with self.lock:
            self.done += 1
            what = {Outcome.CHANGED: f"{outcome_word(result)} as {result.object}",
                    Outcome.PENDING: "order pending at SCM",
                    Outcome.INTERRUPTED: result.message,
                    Outcome.FAILED: "FAILED: " + result.message}.get(result.outcome,
                                                                     outcome_word(result))
            self.out.write(self.redact(f"[{self.done}/{self.total}] {result.profile} on "
                                       f"{result.firewall}: {what} "
                                       f"({result.seconds:.1f} s)") + "\n")
            self.out.flush()


def isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def table(rows: Sequence[Sequence[str]], indent: str = "") -> str:
    """Left-aligned columns, one line per row."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join(indent + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n"
                   for row in rows)


def outcome_word(r: Result) -> str:
    if r.outcome is Outcome.CHANGED:
        return {Action.ENROLL: "enrolled", Action.RENEW: "renewed"}.get(r.action, "installed")
    if r.outcome is Outcome.OK:
        return r.message or "ok"
    return r.outcome


def print_results(results: Sequence[Result], out: TextIO,
                  redact: Callable[[str], str] = lambda s: s) -> None:
    rows = [("PROFILE", "FIREWALL", "OBJECT", "RESULT", "EXPIRES", "SCM ID")]
    for r in results:
        rows.append((r.profile, r.firewall, r.object or "-", outcome_word(r),
                     f"{r.not_after:%Y-%m-%d}" if r.not_after else "-", r.cert_id or "-"))
    out.write(redact(table(rows)))
    for r in results:
        if r.failed or r.outcome is Outcome.PENDING:
            out.write(redact(f"{r.profile}: {r.message}") + "\n")
    out.flush()


def status_table(results: Sequence[Result]) -> str:
    now = dt.datetime.now(dt.timezone.utc)
    rows = [("PROFILE", "FIREWALL", "OBJECT", "COMMON NAME", "KEY", "ISSUER", "NOT AFTER",
             "DAYS", "STATE", "SCM ID")]
    for r in results:
        rows.append((r.profile, r.firewall, r.object or "-", r.common_name or "-",
                     r.key or "-", r.issuer or "-",
                     f"{r.not_after:%Y-%m-%d}" if r.not_after else "-",
                     str(days_left(r, now)) if r.not_after else "-", r.state,
                     r.cert_id or "-"))
    notes = [f"{r.profile}: {r.message}" for r in results if r.message and (
        r.state is not State.OK or r.failed) and r.message != "up to date"]
    return table(rows) + "".join(n + "\n" for n in notes)


def plan_text(results: Sequence[Result]) -> str:
    lines = ["Dry run: nothing was changed and nothing was ordered."]
    for r in results:
        head = f"{r.profile} on {r.firewall} ({r.state})"
        if r.failed:
            lines.append(f"{head}: would stop: {r.message}")
        elif not r.plan:
            lines.append(f"{head}: nothing to do")
        else:
            lines.append(f"{head}:")
            lines += [f"  {n}. {step}" for n, step in enumerate(r.plan, 1)]
    return "\n".join(lines) + "\n"


