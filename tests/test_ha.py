"""HA pairs end to end (issue 14; panorama-ha-bindings.md §3): the agent's `main()` against
two lab firewalls paired active/passive (lab/ha.py), each firewall entry naming the other as
`ha_peer`. What the passive peer holds is read from its own running configuration, which only
the lab's sync writes (the passive peer refuses changes, code 15).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Any, Iterator, List, Optional

import pytest

from conftest import Workdir, edit_yaml, running_lab
from lab.ha import HaSettings
from lab.lab import MANAGEMENT_PROFILE, SEED_PROFILE, seed_consumers

PORTAL = "portal-dv-rsa2048"
DEVICE = "devices/entry[@name='localhost.localdomain']"


def entry(root: ET.Element, name: str) -> Optional[ET.Element]:
    return next((e for e in root.findall("shared/certificate/entry")
                 if e.get("name") == name), None)


def bound(root: ET.Element, profile: str) -> Optional[str]:
    return next((e.findtext("certificate") for e in
                 root.findall("shared/ssl-tls-service-profile/entry")
                 if e.get("name") == profile), None)


def on_both(work: Workdir, name: str) -> None:
    """Each peer's running configuration holds `name` with its key, and the portal uses it."""
    for firewall in work.lab.firewalls[:2]:
        running = firewall.running_tree()
        found = entry(running, name)
        assert found is not None and found.find("private-key") is not None, firewall.hostname
        assert bound(running, SEED_PROFILE) == name, firewall.hostname


def writes_to(work: Workdir, hostname: str) -> List[dict]:
    return [e for e in work.panos_requests() if e.get("firewall") == hostname
            and e.get("write")]


@pytest.fixture()
def pair(tmp_path: Any, tls_pki: Any, scm_pki: Any) -> Iterator[Workdir]:
    with running_lab(str(tmp_path / "pair"), tls_pki, scm_pki, ha_pair=True, keep=[PORTAL],
                     ha_settings=HaSettings(sync_duration=0.1)) as work:
        for name in ("lab-fw-01", "lab-fw-02"):  # a failing sync fails in 2 s, not 120
            edit_yaml(os.path.join(work.profiles, "fw_paloalto_config.yaml"), name,
                      ha_sync_timeout=2)
        yield work


def test_enroll_and_renew_on_the_active_peer_and_the_passive_one_gets_it_by_sync(
        pair: Workdir) -> None:
    code, out = pair.run("enroll", "--dry-run")
    assert "commit lab-fw-01 (the active peer of HA pair lab-fw-01/lab-fw-02; partial, " \
           "admin certbot), then wait until lab-fw-02 is synchronized" in out, out
    assert pair.run("enroll")[0] == 0
    on_both(pair, "portal-example-com")
    code, out = pair.run("renew", "--force")
    assert code == 0, out
    renewed = pair.state_of(PORTAL)["object"]
    on_both(pair, renewed)
    assert entry(pair.lab.firewalls[1].running_tree(), "portal-example-com") is None
    assert writes_to(pair, "lab-fw-02") == []  # the passive peer was only asked its state
    assert len(pair.orders()) == 2


def test_the_passive_peer_named_as_the_target_works_through_the_active_one(
        pair: Workdir) -> None:
    pair.profile("via-passive", firewall="lab-fw-02", ssl_tls_service_profiles=["Other-TLS"])
    assert pair.run("enroll", "via-passive")[0] == 0
    for firewall in pair.lab.firewalls[:2]:
        assert bound(firewall.running_tree(), "Other-TLS") == "via-passive"
    assert writes_to(pair, "lab-fw-02") == []


def test_a_failover_between_runs_with_an_order_pending_leads_to_one_order(
        pair: Workdir) -> None:
    """The key is committed and synchronized before the order, so the new active peer has
    it when the certificate is issued."""
    pair.lab.scm.settings.pending_polls = 1000
    pair.edit_config("scm", poll_timeout=1, poll_interval=0.2)
    code, out = pair.run("enroll")
    assert code == 0 and pair.state_of(PORTAL)["pending"]["stage"] == "ordered", out
    pair.lab.ha.failover()
    pair.lab.scm.control("issue_now", {"id": int(pair.state_of(PORTAL)["pending"]["order_id"])})
    code, out = pair.run("enroll")
    assert code == 0, out
    assert len(pair.orders()) == 1
    on_both(pair, "portal-example-com")
    assert writes_to(pair, "lab-fw-01")  # the first run's work, before the failover
    assert pair.lab.ha.active().hostname == "lab-fw-02"


def test_not_synchronized_fails_with_the_devices_words_and_the_next_run_orders_nothing(
        pair: Workdir) -> None:
    pair.lab.ha.settings.sync_fail = True
    code, out = pair.run("enroll")
    assert code == 1
    assert "committed on lab-fw-01, but HA pair lab-fw-01/lab-fw-02 is not synchronized: " \
           "lab-fw-01 says running-sync 'not synchronized' (peer lab-fw-02: passive), also " \
           "after sync-to-remote, for 2 s (the next run commits and checks again; it orders " \
           "nothing)" in out, out
    # It failed before the order (the new key must be on both peers first).
    assert pair.state_of(PORTAL)["pending"]["stage"] == "generated" and pair.orders() == []
    pair.lab.ha.settings.sync_fail = False
    code, out = pair.run("enroll")
    assert code == 0, out
    assert len(pair.orders()) == 1
    on_both(pair, pair.state_of(PORTAL)["object"])


def test_a_commit_that_fails_to_synchronize_is_committed_again_without_a_new_order(
        pair: Workdir) -> None:
    pair.lab.ha.settings.commit_sync_fail = 2
    for _ in range(2):  # the commit before the order, then (next run) the last one
        code, out = pair.run("enroll")
        assert code == 1 and "Failed to synchronize running configuration with HA peer" in out
    code, out = pair.run("enroll")
    assert code == 0, out
    assert len(pair.orders()) == 1
    on_both(pair, "portal-example-com")


def test_with_no_active_peer_nothing_is_changed(pair: Workdir) -> None:
    for peer in pair.lab.ha.peers:
        pair.lab.ha.state[peer.serial] = "suspended"
    code, out = pair.run("enroll")
    assert code == 1
    assert "HA pair lab-fw-01/lab-fw-02: no peer active (lab-fw-01: suspended, lab-fw-02: " \
           "suspended); nothing was changed" in out, out
    assert writes_to(pair, "lab-fw-01") == [] and pair.orders() == []
    # README, Troubleshooting: once a peer is active again, the next run does the work.
    pair.lab.ha.state[pair.lab.firewalls[1].serial] = "active"
    assert pair.run("enroll")[0] == 0
    on_both(pair, "portal-example-com")


def test_the_management_interface_choice_which_does_not_sync_is_set_on_each_peer(
        pair: Workdir) -> None:
    seed_consumers(pair.lab.firewalls[0])
    for firewall in pair.lab.firewalls[:2]:  # neither peer has chosen a profile yet
        for tree in firewall.store.direct():
            system = tree.find(f"{DEVICE}/deviceconfig/system")
            for node in system.findall("ssl-tls-service-profile"):
                system.remove(node)
    pair.profile("mgmt", ssl_tls_service_profiles=[MANAGEMENT_PROFILE],
                 bindings={"management_ui": True})
    code, out = pair.run("enroll", "mgmt")
    assert code == 0, out
    for firewall in pair.lab.firewalls[:2]:
        running = firewall.running_tree()
        assert running.findtext(f"{DEVICE}/deviceconfig/system/ssl-tls-service-profile") == \
            MANAGEMENT_PROFILE, firewall.hostname
        assert bound(running, MANAGEMENT_PROFILE) == "mgmt", firewall.hostname
    # On the passive peer the agent wrote only what does not sync.
    assert {e["summary"].split("xpath=")[-1] for e in writes_to(pair, "lab-fw-02")
            if e.get("type") == "config"} == {
        f"/config/{DEVICE}/deviceconfig/system"}


@pytest.mark.parametrize("refuses", [True, False], ids=["passive-refuses", "passive-takes"])
def test_a_failover_during_a_run_commits_nothing_there_and_the_next_run_finishes(
        pair: Workdir, refuses: bool) -> None:
    """The peers swap right after the certificate's import on lab-fw-01: whether the now
    passive peer refuses the binds or takes them, nothing is committed on it, and the next
    run finishes on lab-fw-02 with the key it got before the order: one order."""
    pair.lab.ha.settings.passive_refuses = refuses
    swapped: List[bool] = []

    def failover_after_the_import(entry: dict) -> None:
        if not swapped and "type=import" in entry["summary"] and \
                "certificate-name=portal-example-com" in entry["summary"]:
            swapped.append(True)
            pair.lab.ha.failover()
    pair.lab.panos_endpoint.observers.append(failover_after_the_import)
    code, out = pair.run("enroll")
    assert swapped and code == 1, out
    assert "lab-fw-01 is no longer active" in out or "Operation denied" in out, out
    # Only the request (committed before the order) runs on lab-fw-01; the import did not.
    request = entry(pair.lab.firewalls[0].running_tree(), "portal-example-com")
    assert request is not None and request.find("public-key") is None
    code, out = pair.run("enroll")
    assert code == 0, out
    assert len(pair.orders()) == 1
    on_both(pair, "portal-example-com")


def test_config_sync_off_changes_nothing(pair: Workdir) -> None:
    pair.lab.ha.settings.sync_enabled = False
    code, out = pair.run("enroll")
    assert code == 1 and "configuration sync is off on lab-fw-01 (running-sync-enabled no)" \
        in out, out
    assert writes_to(pair, "lab-fw-01") == [] and pair.orders() == []
    pair.lab.ha.settings.sync_enabled = True  # the advice: turn it on
    assert pair.run("enroll")[0] == 0
    on_both(pair, "portal-example-com")


def test_the_passive_peers_own_management_choice_is_kept_and_an_empty_one_is_filled(
        pair: Workdir) -> None:
    seed_consumers(pair.lab.firewalls[0])  # lab-fw-01 chooses Mgmt-TLS; lab-fw-02 nothing
    pair.profile("mgmt", ssl_tls_service_profiles=[MANAGEMENT_PROFILE],
                 bindings={"management_ui": True})
    code, out = pair.run("enroll", "mgmt", "--dry-run")
    assert "point management interface of the HA peer (it does not sync) at SSL/TLS service " \
           f"profile {MANAGEMENT_PROFILE}" in out, out
    assert pair.run("enroll", "mgmt")[0] == 0
    system = f"{DEVICE}/deviceconfig/system/ssl-tls-service-profile"
    assert pair.lab.firewalls[1].running_tree().findtext(system) == MANAGEMENT_PROFILE
    # A choice of its own is the peer's: left as it is.
    for tree in pair.lab.firewalls[1].store.direct():
        tree.find(system).text = SEED_PROFILE
    assert pair.run("renew", "mgmt", "--force")[0] == 0
    assert pair.lab.firewalls[1].running_tree().findtext(system) == SEED_PROFILE
    assert pair.lab.firewalls[0].running_tree().findtext(system) == MANAGEMENT_PROFILE


def test_ha_peer_on_firewalls_without_ha_is_a_clear_error_and_removing_it_works(
        tmp_path: Any, tls_pki: Any, scm_pki: Any) -> None:
    with running_lab(str(tmp_path / "two"), tls_pki, scm_pki, firewalls=2,
                     keep=[PORTAL]) as work:
        devices = os.path.join(work.profiles, "fw_paloalto_config.yaml")
        edit_yaml(devices, "lab-fw-01", ha_peer="lab-fw-02")
        edit_yaml(devices, "lab-fw-02", ha_peer="lab-fw-01")
        code, out = work.run("enroll")
        assert code == 1 and "its ha_peer entry names an HA pair, but HA is not enabled " \
            "(lab-fw-01: HA not enabled, lab-fw-02: HA not enabled); remove ha_peer, or " \
            "enable HA" in out, out
        assert writes_to(work, "lab-fw-01") == [] and work.orders() == []
        for name in ("lab-fw-01", "lab-fw-02"):  # the advice
            edit_yaml(devices, name, ha_peer=None)
        assert work.run("enroll")[0] == 0
