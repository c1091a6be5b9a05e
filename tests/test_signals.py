"""Ctrl-C and SIGTERM (systemd's stop) with several firewalls (issue 11, item 6).

The agent runs as a real process against the lab; the signal arrives while it orders, while
it polls SCM, and while it waits for commit jobs. Each time it must stop at a safe point: no
new step, the state, the JSON report and the metrics written, one line on stderr, exit 130
(SIGINT) or 143 (SIGTERM). A rerun then ends with exactly one order per certificate.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List

import pytest

from conftest import AGENT_DIR
from lab.server import FaultRule

AGENT = os.path.join(AGENT_DIR, "paloaltoagent.py")


def start(work: Any) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, AGENT, "renew", "--json", "--accept-eula",
                             "--config", work.config], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def interrupted(work: Any, process: subprocess.Popen, signum: int) -> Dict[str, Any]:
    """Send the signal; check the exit, the one line, the report and the metrics."""
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    code = 128 + signum
    assert process.returncode == code, (process.returncode, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    name = signal.Signals(signum).name
    assert len(lines) == 1 and f"interrupted by {name}" in lines[0], lines
    report = json.loads(out)
    assert report["exit_code"] == code and report["signal"] == name
    with open(os.path.join(work.root, "metrics.prom")) as handle:
        metrics = handle.read()
    assert 'paloaltoagent_run_success{command="renew"} 0' in metrics
    report["line"] = lines[0]
    return report


def rerun_and_check(work: Any, names: List[str]) -> None:
    code, out = work.run("renew")
    assert code == 0, out
    orders = [o["common_name"] for o in work.orders()]
    assert sorted(orders) == sorted(f"{n}.example.com" for n in names), orders
    for name in names:
        state = work.state_of(name)
        assert state["pending"] is None and state["object"] == name, state
    assert work.run("renew")[0] == 0 and len(work.orders()) == len(names)


@pytest.fixture()
def fleet4(fleet: Any) -> Any:
    """Two firewalls, two certificates on each, a metrics file."""
    fleet.profile("site3", firewall="lab-fw-01")
    fleet.profile("site4", firewall="lab-fw-02")
    fleet.edit_config("metrics", file="metrics.prom")
    fleet.edit_config("scm", poll_interval=0.2)
    return fleet


NAMES = ["site1", "site2", "site3", "site4"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_ordering(fleet4: Any, signum: int) -> None:
    arrived = threading.Event()
    fleet4.lab.scm_endpoint.arrival_observers.append(
        lambda request: request.method == "POST" and request.path == "/api/v1/certificates"
        and arrived.set())
    # The order takes a while to answer: the signal comes while it is on its way.
    fleet4.lab.scm_endpoint.faults.add(FaultRule(kind="delay", seconds=1.5,
                                                 match="POST /api/v1/certificates", count=2))
    process = start(fleet4)
    wait_for(arrived.is_set, "the first order")
    report = interrupted(fleet4, process, signum)
    # The orders on their way were placed and recorded; no further step was started.
    placed = fleet4.orders()
    assert 1 <= len(placed) <= 2
    states = {n: fleet4.state_of(n) for n in NAMES if os.path.exists(
        os.path.join(fleet4.state, f"{n}.json"))}
    pendings = [s["pending"] for s in states.values() if s["pending"]]
    assert all(p["stage"] in ("generated", "ordered") for p in pendings), pendings
    recorded = [p["order_id"] for p in pendings if p["stage"] == "ordered"]
    assert sorted(recorded) == sorted(str(o["id"]) for o in placed)
    assert report["summary"]["interrupted"] >= 2 and report["summary"]["failed"] == 0
    assert fleet4.commits() == []
    rerun_and_check(fleet4, NAMES)


def test_a_signal_while_polling_scm(fleet4: Any) -> None:
    fleet4.lab.scm.settings.pending_polls = 1000
    process = start(fleet4)
    def collects() -> int:
        return len([e for e in fleet4.scm_requests() if e["method"] == "GET"])

    wait_for(lambda: len(fleet4.orders()) == 4 and collects() >= 6, "polling")
    before = collects()
    report = interrupted(fleet4, process, signal.SIGTERM)
    # It stopped polling at once: at most the collect each firewall had on its way.
    assert collects() - before <= 2, collects() - before
    assert report["summary"]["interrupted"] == 4, report["certificates"]
    assert all("waits at SCM" in c["message"] for c in report["certificates"])
    for order in fleet4.orders():
        fleet4.lab.scm.control("issue_now", {"id": order["id"]})
    rerun_and_check(fleet4, NAMES)


def test_a_signal_while_waiting_for_the_commits(fleet4: Any) -> None:
    for service in fleet4.lab.firewalls:
        service.settings.commit_duration = 30
    process = start(fleet4)
    wait_for(lambda: len(fleet4.commits()) == 2, "both commits")
    report = interrupted(fleet4, process, signal.SIGTERM)
    assert "interrupted by SIGTERM" in report["line"] and report["exit_code"] == 143
    # The jobs run on by themselves on the devices: the agent did not wait for them.
    for service in fleet4.lab.firewalls:
        assert [job.status for job in service.jobs.values()] == ["ACT"]
    assert report["summary"]["interrupted"] == 4
    for name in NAMES:
        assert fleet4.state_of(name)["pending"]["stage"] == "installed"
    for service in fleet4.lab.firewalls:
        service.control("finish_jobs", {})
    rerun_and_check(fleet4, NAMES)


def test_ctrl_c_before_the_run_starts_says_so(work: Any) -> None:
    # At the EULA question: nothing was sent, one line, exit 130, no traceback.
    from conftest import in_pty
    code, output = in_pty(["enroll", "--config", work.config], None, interrupt_on=b"[yes/no]")
    assert code == 130, output
    assert "Traceback" not in output and "nothing was done" in output
    assert work.panos_requests() == [] and work.scm_requests() == []
    # With --json the document still comes, saying why nothing was done.
    code, output = in_pty(["enroll", "--json", "--config", work.config], None,
                          interrupt_on=b"[yes/no]")
    report = json.loads(output[output.index("{"):output.rindex("}") + 1])
    assert code == 130 and report["exit_code"] == 130 and report["signal"] == "SIGINT"
    assert "nothing was done" in report["error"]


def test_a_stop_between_two_collects_leaves_every_order_for_the_next_run(fleet4: Any) -> None:
    # In-process and deterministic: the stop comes while the first of a firewall's orders is
    # being collected; the one already polled and the ones not yet polled are all reported.
    from connector.config import load_config
    from connector.lifecycle import RunOptions, run
    stop = threading.Event()
    fleet4.edit_config("", max_parallel_firewalls=1)
    fleet4.lab.scm.settings.pending_polls = 1000
    fleet4.lab.scm_endpoint.arrival_observers.append(
        lambda request: request.method == "GET" and "/api/v1/certificates/" in request.path
        and stop.set())
    report = run(load_config(fleet4.config), [], RunOptions(stop=stop))
    outcomes = {r.profile: (r.outcome, r.message) for r in report.results}
    assert all(o == "interrupted" for o, _ in outcomes.values()), outcomes
    assert sum("waits at SCM" in m for _, m in outcomes.values()) == 2, outcomes  # fw-01
    assert sum("not started" in m for _, m in outcomes.values()) == 2, outcomes  # fw-02


def test_a_stop_after_the_key_is_made_orders_nothing(fleet4: Any) -> None:
    # The stop comes while the firewall makes the key: the order, a new step, is not placed;
    # the request waits for the next run, which orders once.
    from connector.config import load_config
    from connector.lifecycle import RunOptions, run
    stop = threading.Event()
    fleet4.edit_config("", max_parallel_firewalls=1)
    fleet4.lab.panos_endpoint.arrival_observers.append(
        lambda request: b"generate" in request.body and stop.set())
    report = run(load_config(fleet4.config), [], RunOptions(stop=stop))
    assert fleet4.orders() == []
    assert all(r.outcome == "interrupted" for r in report.results), report.results
    first = next(r for r in report.results if r.profile == "site1")
    assert first.message == f"interrupted: key and CSR made in {first.object}, not ordered; " \
                            "the next run orders", first.message
    assert fleet4.state_of("site1")["pending"]["stage"] == "generated"
    rerun_and_check(fleet4, NAMES)
