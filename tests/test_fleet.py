"""A small fleet, by counts only (timing is the benchmark's job, bench/fleet.py): one
configuration read per firewall and nothing else when nothing is due, no SCM request then,
one order per due certificate, one commit per firewall (two when old objects are removed)."""

from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List

import pytest

from conftest import Workdir, edit_yaml, running_lab

FIREWALLS, PER_FIREWALL = 3, 2


@pytest.fixture()
def small_fleet(tmp_path: Any, tls_pki: Any, scm_pki: Any) -> Iterator[Workdir]:
    with running_lab(str(tmp_path / "fleet"), tls_pki, scm_pki, firewalls=FIREWALLS,
                     commit_duration=0.05, keep=[]) as work:
        for number in range(1, FIREWALLS + 1):
            for index in range(PER_FIREWALL):
                work.profile(f"fw{number}-c{index}", firewall=f"lab-fw-{number:02d}",
                             object_name=f"c{index}", key="ECDSA-P256")
        work.edit_config("", max_parallel_firewalls=2)
        yield work


def per_firewall(entries: List[Dict[str, Any]], key: str = "firewall") -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for entry in entries:
        counts[entry.get(key)] = counts.get(entry.get(key), 0) + 1
    return counts


def new_entries(work: Any, run: Any) -> Dict[str, List[Dict[str, Any]]]:
    before = (len(work.panos_requests()), len(work.scm_requests()), len(work.orders()))
    code, out = run()
    assert code == 0, out
    return {"panos": work.panos_requests()[before[0]:], "scm": work.scm_requests()[before[1]:],
            "orders": work.orders()[before[2]:]}


def successful_commits(entries: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [e for e in entries if e.get("type") == "commit" and e.get("code") == "19"]


def test_first_enrollment_one_order_per_certificate_one_commit_per_firewall(
        small_fleet: Any) -> None:
    got = new_entries(small_fleet, lambda: small_fleet.run("enroll"))
    assert len(got["orders"]) == FIREWALLS * PER_FIREWALL
    commits = successful_commits(got["panos"])
    assert per_firewall(commits) == {f"lab-fw-{n:02d}": 1 for n in range(1, FIREWALLS + 1)}
    reads = [e for e in got["panos"] if e.get("action") == "get"
             and e["summary"].endswith("xpath=/config")]
    assert len(reads) == FIREWALLS


@pytest.mark.parametrize("credentials", ["api_key", "username"])
def test_nothing_due_one_read_per_firewall_and_no_scm_request(small_fleet: Any,
                                                               credentials: str) -> None:
    assert small_fleet.run("enroll")[0] == 0
    if credentials == "api_key":
        fw_file = os.path.join(small_fleet.profiles, "fw_paloalto_config.yaml")
        for service in small_fleet.lab.firewalls:
            edit_yaml(fw_file, service.hostname, api_key=service.api_key("certbot"),
                      username=None, password=None, admin="certbot")
    got = new_entries(small_fleet, lambda: small_fleet.run("renew"))
    assert got["scm"] == [] and got["orders"] == []
    keygens = [e for e in got["panos"] if e.get("type") == "keygen"]
    reads = [e for e in got["panos"] if e.get("type") != "keygen"]
    assert len(reads) == FIREWALLS
    assert all(e.get("action") == "get" and not e["write"] for e in reads)
    assert len(keygens) == (0 if credentials == "api_key" else FIREWALLS)


def test_renewal_of_every_certificate_one_commit_per_firewall(small_fleet: Any) -> None:
    small_fleet.lab.scm.settings.backdate_days = 40  # 50 of 90 days left
    assert small_fleet.run("enroll")[0] == 0
    for name in [p for p in os.listdir(small_fleet.profiles) if p.startswith("fw") and
                 "-c" in p]:
        edit_yaml(os.path.join(small_fleet.profiles, name), renew_before_days=60)
        small_fleet.age(name[:-len(".yaml")], 40)
    small_fleet.lab.scm.settings.pending_polls = 2
    small_fleet.edit_config("scm", poll_interval=0.05)
    got = new_entries(small_fleet, lambda: small_fleet.run("renew"))
    assert len(got["orders"]) == FIREWALLS * PER_FIREWALL
    assert all(o["op"] == "renew" for o in got["orders"])
    commits = successful_commits(got["panos"])
    # One commit takes the new certificates, their bindings and the removal of the old ones.
    assert per_firewall(commits) == {f"lab-fw-{n:02d}": 1 for n in range(1, FIREWALLS + 1)}
    deletes = [e for e in got["panos"] if e.get("action") == "delete"]
    assert len(deletes) == FIREWALLS * PER_FIREWALL
    reads = [e for e in got["panos"] if e["summary"].endswith("xpath=/config")]
    assert len(reads) == FIREWALLS
    collects = [e for e in got["scm"] if e["method"] == "GET"]
    assert len(collects) == 3 * FIREWALLS * PER_FIREWALL  # two pending answers, then issued


def test_a_ca_bundle_is_loaded_once_per_run_not_once_per_connection(small_fleet: Any,
                                                                    monkeypatch: Any) -> None:
    # urllib3 would build a context and read the bundle for every new connection: 30 ms of
    # CPU each for the system bundle, paid per firewall (http.Shared).
    import shutil
    import ssl
    assert small_fleet.run("enroll")[0] == 0
    # The firewalls' own copy of the lab CA, so that SCM's connections are not counted.
    bundle = os.path.join(small_fleet.lab.workdir, "firewalls-ca.pem")
    shutil.copy(small_fleet.lab.paths["ca_bundle"], bundle)
    fw_file = os.path.join(small_fleet.profiles, "fw_paloalto_config.yaml")
    for service in small_fleet.lab.firewalls:
        edit_yaml(fw_file, service.hostname, ca_bundle=bundle)
    loaded: List[str] = []
    original = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, cafile: Any = None, *args: Any, **kwargs: Any) -> None:
        loaded.append(str(cafile))
        original(self, cafile, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    got = new_entries(small_fleet, lambda: small_fleet.run("renew", "--force"))
    # Every firewall was read and written (two sessions each), and each is a new connection.
    assert len({e["firewall"] for e in got["panos"] if e["write"]}) == FIREWALLS
    # Once when the configuration is checked (config.pem_bundle_problem), once for every
    # connection of the run; it was once per connection (6 here) before.
    assert loaded.count(bundle) == 2
