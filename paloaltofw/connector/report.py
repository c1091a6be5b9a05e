"""What a run did, for machines: the `--json` document and the Prometheus text file.

The JSON document follows `report.schema.json` (next to this file; documented in the README).
Its `schema` field names the version; fields are only ever added within a version.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from typing import Any, Dict, List, Optional

from .results import DevicePush, Outcome, Report, Result, State
from .state import atomic_write

SCHEMA = "paloaltoagent/report/v1"
SCHEMA_VERSION = "1.2"  # minor versions only add fields (see report.schema.json)
SCHEMA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "report.schema.json")


def days_left(result: Result, now: dt.datetime) -> Optional[int]:
    if result.not_after is None:
        return None
    return int((result.not_after - now).total_seconds() // 86400)


def certificate(result: Result, now: dt.datetime) -> Dict[str, Any]:
    return {"profile": result.profile, "firewall": result.firewall, "object": result.object,
            "common_name": result.common_name or None, "key": result.key or None,
            "issuer": result.issuer or None, "state": result.state, "action": result.action,
            "result": result.outcome, "scm_id": result.cert_id,
            "not_after": result.not_after.isoformat() if result.not_after else None,
            "days_left": days_left(result, now),
            "error": result.message if result.failed else None,
            "message": result.message or None, "plan": list(result.plan),
            "steps": [step.as_dict() for step in result.planned or result.done],
            "pushes": [push.as_dict() for push in result.pushes],
            "consumers": [{"consumer": text, "managed": managed}
                          for text, managed in result.consumers],
            "seconds": round(result.seconds, 3)}


def pushes(results: List[Result]) -> List[DevicePush]:
    """Each managed firewall's share of the run's pushes, once (the certificates of one
    template share their pushes)."""
    return list(dict.fromkeys(p for r in results for p in r.pushes))


def state_after(result: Result) -> State:
    """The certificate's condition once the run is over (what `status` would now show)."""
    if result.outcome is Outcome.CHANGED:
        return State.OK
    if result.outcome is Outcome.PENDING:
        return State.PENDING
    return result.state


def document(report: Report, command: str, dry_run: bool, exit_code: int,
             now: Optional[dt.datetime] = None, error: Optional[str] = None,
             signal: Optional[str] = None) -> Dict[str, Any]:
    """The --json document. For `status` the counts describe states (nothing is done)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    results = report.results
    if command == "status":
        ok = sum(1 for r in results if r.state is State.OK)
        pending = sum(1 for r in results if r.state is State.PENDING)
    else:
        ok = sum(1 for r in results if r.outcome is Outcome.OK)
        pending = sum(1 for r in results if r.outcome is Outcome.PENDING)
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "command": command,
        "dry_run": dry_run,
        "host": socket.gethostname(),
        "started": report.started.replace(microsecond=0).isoformat(),
        "duration_seconds": round(report.seconds, 3), "exit_code": exit_code,
        "error": error, "signal": signal or None,
        "summary": {"certificates": len(results), "ok": ok,
                    "changed": sum(1 for r in results if r.outcome is Outcome.CHANGED),
                    "pending": pending,
                    "planned": sum(1 for r in results if r.outcome is Outcome.PLANNED),
                    "failed": sum(1 for r in results if r.failed),
                    "interrupted": sum(1 for r in results if r.outcome is Outcome.INTERRUPTED),
                    "attention": sum(1 for r in results if state_after(r) is not State.OK
                                     and r.outcome not in (Outcome.PLANNED,
                                                           Outcome.INTERRUPTED)),
                    "orders": report.orders, "commits": report.commits,
                    "pushes": len(pushes(results))},
        "certificates": [certificate(r, now) for r in results],
    }


def to_json(data: Dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


# --- Prometheus text format (for node-exporter's textfile collector) -----------------------

def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


def metrics_text(report: Report, command: str, success: bool) -> str:
    lines: List[str] = []

    def metric(name: str, kind: str, help_text: str, samples: List[str]) -> None:
        lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples])

    results = report.results
    metric("paloaltoagent_certificate_not_after_timestamp_seconds", "gauge",
           "Expiry of the certificate on the firewall (Unix time).",
           [f"paloaltoagent_certificate_not_after_timestamp_seconds"
            f"{_labels(profile=r.profile, firewall=r.firewall, object=r.object or '')} "
            f"{int(r.not_after.timestamp())}" for r in results if r.not_after is not None])
    metric("paloaltoagent_certificate_state", "gauge",
           "1 for the state the certificate is in after the run.",
           [f"paloaltoagent_certificate_state"
            f"{_labels(profile=r.profile, firewall=r.firewall, state=state)} "
            f"{1 if state_after(r) is state else 0}" for r in results for state in State])
    metric("paloaltoagent_push_device_success", "gauge",
           "1 if the last push of a Panorama template stack reached the firewall.",
           [f"paloaltoagent_push_device_success"
            f"{_labels(stack=p.stack, serial=p.serial, hostname=p.hostname)} "
            f"{1 if p.ok else 0}" for p in pushes(results)])
    run_labels = _labels(command=command)
    for name, kind, help_text, value in (
            ("paloaltoagent_run_success", "gauge", "1 if the last run had no failure.",
             1 if success else 0),
            ("paloaltoagent_run_duration_seconds", "gauge", "Duration of the last run.",
             round(report.seconds, 3)),
            ("paloaltoagent_run_orders", "gauge", "Billable SCM orders the last run placed.",
             report.orders),
            ("paloaltoagent_run_commits", "gauge", "Firewall commits the last run made.",
             report.commits),
            ("paloaltoagent_run_timestamp_seconds", "gauge", "When the last run ended.",
             int(report.started.timestamp() + report.seconds))):
        metric(name, kind, help_text, [f"{name}{run_labels} {value}"])
    return "\n".join(lines) + "\n"


def write_metrics(path: str, report: Report, command: str, success: bool) -> None:
    """Atomically, so the textfile collector never reads half a file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write(path, metrics_text(report, command, success), mode=0o644)
