"""Crash at every step: the real agent process is killed (SIGKILL) right after each distinct
API call of the enroll flow and of the renew flow (on a firewall, and of a Panorama template
certificate, and on an HA pair), then run again.

Every case must end with exactly one billable order per certificate (per renewal), the
certificate installed, bound and committed, no request object left over on the firewall, no
uncommitted change of the agent's admin, and readable state files.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from conftest import AGENT_DIR, Workdir, running_lab
from connector import panos as panos_client
from lab.lab import AGENT_ADMIN, SEED_PROFILE, Lab

AGENT = os.path.join(AGENT_DIR, "paloaltoagent.py")
PROFILE = "portal-dv-rsa2048"
TEMPLATE_PROFILE_NAME = "branch-portal"  # on the Panorama template (api "panorama" below)


class Killer:
    """Kills the agent process right after the lab has answered its `target`-th request.

    Calls are numbered as they arrive (the agent makes one at a time), and the kill comes once
    the answer to call number `target` has been sent: whatever the agent does with that
    answer, it may not finish."""

    def __init__(self, lab: Lab, target: Optional[int]) -> None:
        self.target = target
        self.calls: Dict[int, str] = {}
        self.killed_after: Optional[str] = None
        self.process: Optional[subprocess.Popen] = None
        self._lock = threading.Lock()
        for endpoint in lab.endpoints:
            endpoint.arrival_observers.append(self.arrived)
            endpoint.observers.append(self.answered)

    def arrived(self, request: Any) -> None:
        with self._lock:
            request.meta["call"] = len(self.calls) + 1
            self.calls[len(self.calls) + 1] = ""

    def answered(self, entry: Dict[str, Any]) -> None:
        with self._lock:
            number = entry.get("call")
            if number is None:
                return
            self.calls[number] = f"{entry['service']}: {entry['summary']}"
            if number == self.target and self.process:
                self.killed_after = self.calls[number]
                os.kill(self.process.pid, signal.SIGKILL)

    @property
    def seen(self) -> List[str]:
        return [self.calls[n] for n in sorted(self.calls)]

    def run(self, config: str, *args: str) -> int:
        self.process = subprocess.Popen([sys.executable, AGENT, *args, "--accept-eula",
                                         "--config", config], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        _, err = self.process.communicate(timeout=120)
        self.stderr = err
        return self.process.returncode


def distinct_points(calls: List[str]) -> List[int]:
    """1-based indexes of the calls to kill after: the first of each run of identical calls
    (job polls repeat), and the very last call."""
    points = [i + 1 for i, call in enumerate(calls) if i == 0 or call != calls[i - 1]]
    if len(calls) not in points:
        points.append(len(calls))
    return points


def check_outcome(work: Workdir, expected_orders: int, case: str) -> None:
    if work.lab.panorama is not None:
        return check_panorama_outcome(work, expected_orders, case)
    lab = work.lab
    assert len(lab.scm.order_log) == expected_orders, (case, lab.scm.order_log)
    with open(os.path.join(work.state, f"{PROFILE}.json")) as handle:
        state = json.load(handle)
    assert state["pending"] is None, (case, state["pending"])
    assert state["superseded"] == [], (case, state)
    with open(os.path.join(work.state, f"{PROFILE}.ids")) as handle:
        assert base64.b64decode(handle.read().strip()).decode() == state["cert_id"], case
    assert state["cert_id"] == str(lab.scm.order_log[-1]["id"]), case
    running = lab.panos.running_tree()
    entries = {e.get("name"): e for e in running.findall("shared/certificate/entry")}
    installed = entries[state["object"]]
    assert installed.find("private-key") is not None and \
        installed.find("public-key") is not None, case
    leaf = lab.scm.orders[int(state["cert_id"])].leaf
    from cryptography import x509
    assert x509.load_pem_x509_certificate(installed.findtext("public-key").encode()) == leaf
    bound = running.find(f"shared/ssl-tls-service-profile/entry[@name='{SEED_PROFILE}']")
    assert bound.findtext("certificate") == state["object"], case
    with_keys = sorted(n for n, e in entries.items() if e.find("private-key") is not None)
    assert with_keys == sorted(["gp-portal-selfsigned", state["object"]]), (case, with_keys)
    candidate = lab.panos.candidate_tree()
    assert not candidate.findall("shared/certificate/entry/csr"), (case, "request left over")
    assert [c for c in lab.panos.store.pending if c.admin == AGENT_ADMIN] == [], \
        (case, "uncommitted changes")
    if lab.ha is not None:  # the passive peer holds the same, by sync alone
        passive = lab.firewalls[1].running_tree()
        assert ET.tostring(passive.find("shared")) == ET.tostring(running.find("shared")), case
        assert lab.firewalls[1].store.pending == [], case


def check_panorama_outcome(work: Workdir, expected_orders: int, case: str) -> None:
    """The template certificate: one order, committed on Panorama with its key, the template's
    profile pointing at it, pushed to every firewall; no request left in the template and no
    uncommitted change of the agent's admin on Panorama."""
    from cryptography import x509
    from lab.lab import TEMPLATE, TEMPLATE_CERTIFICATE, TEMPLATE_PROFILE
    lab = work.lab
    assert lab.panorama is not None
    assert len(lab.scm.order_log) == expected_orders, (case, lab.scm.order_log)
    state = work.state_of(TEMPLATE_PROFILE_NAME)
    assert state["pending"] is None and state["superseded"] == [], (case, state)
    assert state["cert_id"] == str(lab.scm.order_log[-1]["id"]), case
    leaf = lab.scm.orders[int(state["cert_id"])].leaf
    shared = f"devices/entry[@name='localhost.localdomain']/template/entry[@name='{TEMPLATE}']" \
             "/config/shared"
    trees = [lab.panorama.running_tree().find(shared)] + \
        [f.running_tree().find("shared") for f in lab.firewalls]
    for tree in trees:
        entries = {e.get("name"): e for e in tree.findall("certificate/entry")}
        installed = entries[state["object"]]
        assert installed.find("private-key") is not None, case
        assert x509.load_pem_x509_certificate(
            installed.findtext("public-key").encode()) == leaf, case
        profile = next(p for p in tree.findall("ssl-tls-service-profile/entry")
                       if p.get("name") == TEMPLATE_PROFILE)
        assert profile.findtext("certificate") == state["object"], case
        with_keys = sorted(n for n, e in entries.items() if e.find("private-key") is not None
                           and e.get("ptpl", "x") != "" and n != "gp-portal-selfsigned")
        assert with_keys == sorted([TEMPLATE_CERTIFICATE, state["object"]]), (case, with_keys)
    candidate = lab.panorama.candidate_tree().find(shared)
    assert not candidate.findall("certificate/entry/csr"), (case, "request left over")
    assert not lab.panorama.candidate_tree().findall("panorama/certificate/entry/csr"), case
    assert [c for c in lab.panorama.store.pending if c.admin == AGENT_ADMIN] == [], \
        (case, "uncommitted changes")


# Both flows with the Enrollment API (OAuth, lookup through the classic block), the enroll
# flow with the classic API (the classic renewal, renewById, is covered in test_agent_faults),
# and the renewal of a Panorama template certificate: its steps include all of the template's
# enrollment (the key made in the template, the imports) and add the delete and the push.
FLOWS = [("enroll", "enrollment"), ("enroll", "classic"), ("renew", "enrollment"),
         ("renew", "panorama"), ("renew", "ha")]
MAX_POINTS = 30
_CALLS: Dict[Tuple[str, str], List[str]] = {}


@contextlib.contextmanager
def prepare(flow: str, api: str, directory: str, tls: Any, scm: Any) -> Iterator[Workdir]:
    """A lab with the one certificate profile; for the renew flow, already enrolled (by the
    agent, in this process) and then revoked on the firewall so that a renewal is due.
    Commits finish at once, so that each commit job is polled exactly once and every run makes
    the same calls in the same order (the kill points are call numbers)."""
    from lab.ha import HaSettings
    panorama, ha = api == "panorama", api == "ha"
    profile = TEMPLATE_PROFILE_NAME if panorama else PROFILE
    with running_lab(directory, tls, scm, api="enrollment" if panorama or ha else api,
                     commit_duration=0.0, keep=[profile], panorama=3 if panorama else 0,
                     ha_pair=ha, ha_settings=HaSettings(sync_duration=0.0)) as work:
        if flow == "renew":
            assert work.run("enroll")[0] == 0
            with open(os.path.join(work.state, f"{profile}.json")) as handle:
                name = json.load(handle)["object"]
            device = work.lab.panorama if panorama else work.lab.panos
            assert device is not None
            device.set_certificate_status(name, "revoked")
        yield work


def calls_of(flow: str, api: str, tmp_path_factory: Any, tls: Any, scm: Any) -> List[str]:
    """The API calls a clean run of the flow makes (one clean run per worker and flow)."""
    if (flow, api) not in _CALLS:
        with prepare(flow, api, str(tmp_path_factory.mktemp("clean")), tls, scm) as work:
            watcher = Killer(work.lab, None)
            assert watcher.run(work.config, flow) == 0, watcher.stderr
            check_outcome(work, 1 if flow == "enroll" else 2, "clean run")
            _CALLS[(flow, api)] = list(watcher.seen)
    return _CALLS[(flow, api)]


@pytest.mark.parametrize("flow,api", FLOWS)
def test_the_flows_make_enough_distinct_calls(flow: str, api: str, tmp_path_factory: Any,
                                              tls_pki: Any, scm_pki: Any) -> None:
    points = distinct_points(calls_of(flow, api, tmp_path_factory, tls_pki, scm_pki))
    assert 12 <= len(points) <= MAX_POINTS, points


@pytest.mark.parametrize("point", range(1, MAX_POINTS + 1))
@pytest.mark.parametrize("flow,api", FLOWS)
def test_kill_after_an_api_call_then_rerun(flow: str, api: str, point: int, tmp_path: Any,
                                           tmp_path_factory: Any, tls_pki: Any,
                                           scm_pki: Any, monkeypatch: Any) -> None:
    # The rerun starts at once, often while the killed run's commit job is still active:
    # the "busy" retry is exercised, but need not wait five seconds here.
    monkeypatch.setattr(panos_client, "BUSY_WAIT", 0.05)
    calls = calls_of(flow, api, tmp_path_factory, tls_pki, scm_pki)
    points = distinct_points(calls)
    if point > len(points):
        pytest.skip(f"the {flow} flow makes {len(points)} distinct calls")
    with prepare(flow, api, str(tmp_path), tls_pki, scm_pki) as work:
        killer = Killer(work.lab, None)
        killer.target = points[point - 1]
        code = killer.run(work.config, flow)  # the real process, SIGKILLed
        case = f"{flow}/{api}: killed after call {killer.target} ({killer.killed_after})"
        assert killer.killed_after is not None and code == -signal.SIGKILL, case
        # The same call as in the clean run (order ids differ from lab to lab).
        assert re.sub(r"\d{5,}", "ID", killer.killed_after) == \
            re.sub(r"\d{5,}", "ID", calls[killer.target - 1]), case
        code, out = work.run("renew")  # the next cron run
        assert code == 0, (case, out)
        check_outcome(work, 1 if flow == "enroll" else 2, case)
