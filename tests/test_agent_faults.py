"""The agent under faults and interruptions: the lab's switches, injected crashes, reruns.

Each case ends with the promises checked: one order per certificate in the lab's order log,
the certificate installed and committed, nothing left behind, the exit code telling the truth.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Any, List, Optional, Tuple

import pytest
from cryptography import x509

from conftest import edit_yaml
from connector import panos as panos_client
from connector.config import load_config
from connector.scm import make_client
from connector.state import StateStore
from lab.server import FaultRule

SHARED = "shared/certificate/entry"


@pytest.fixture()
def one(work: Any) -> Any:
    """A lab workdir with a single DV certificate profile, bound to a service profile."""
    work.remove_sample_profiles()
    work.profile("site", ssl_tls_service_profiles=["Site-TLS"],
                 subject_alt_names=["www.site.example.com"])
    return work


def entry(work: Any, name: str, tree: str = "running") -> Optional[ET.Element]:
    root = work.running() if tree == "running" else work.lab.panos.candidate_tree()
    return next((e for e in root.findall(SHARED) if e.get("name") == name), None)


def installed(work: Any, profile: str = "site") -> x509.Certificate:
    state = work.state_of(profile)
    assert state["pending"] is None, state["pending"]
    node = entry(work, state["object"])
    assert node is not None and node.find("private-key") is not None
    target = next(p.findtext("certificate") for p in work.running().findall(
        "shared/ssl-tls-service-profile/entry") if p.get("name") == "Site-TLS")
    assert target == state["object"]
    return x509.load_pem_x509_certificate(node.findtext("public-key").encode())


def objects(work: Any) -> list:
    return sorted(e.get("name") for e in work.lab.panos.candidate_tree().findall(SHARED)
                  if e.find("private-key") is not None)


class Crash(BaseException):
    """Stands for the process being killed: no `except Exception` catches it."""


def test_scm_unreachable_when_ordering_places_nothing_and_the_next_run_orders(one: Any) -> None:
    creds = os.path.join(one.profiles, "sectigo_credentials.yaml")
    good = one.lab.info()["scm"]["enrollment_url"]
    edit_yaml(creds, "ENROLLMENT_API_1", scm_url="https://127.0.0.1:9/api/v1")
    code, out = one.run("enroll")
    assert code == 1 and "connection failed" in out
    assert one.state_of("site")["pending"]["stage"] == "generated"
    edit_yaml(creds, "ENROLLMENT_API_1", scm_url=good)
    assert one.run("enroll")[0] == 0
    assert len(one.orders()) == 1
    installed(one)
    assert objects(one) == ["gp-portal-selfsigned", "site"]  # the first CSR was reused


@pytest.mark.parametrize("kind,placed", [("drop", 0), ("lose", 1)])
def test_lost_order_answer_without_lookup_is_never_reordered_silently(one: Any, kind: str,
                                                                      placed: int) -> None:
    one.without_lookup()
    # skip=1: the first POST is answered 401 (no token yet); the second one is the order.
    one.lab.scm_endpoint.faults.add(FaultRule(kind=kind, match="POST /api/v1/certificates",
                                              skip=1))
    code, out = one.run("enroll")
    assert code == 1
    assert one.state_of("site")["pending"]["stage"] == "ordering"
    assert len(one.orders()) == placed
    code, out = one.run("enroll")
    assert code == 1 and "interrupted while ordering" in out and "--force" in out
    assert len(one.orders()) == placed
    code, out = one.run("renew", "site", "--force")
    assert code == 0, out
    assert len(one.orders()) == placed + 1
    installed(one)


@pytest.mark.parametrize("api", ["enrollment", "classic"])
@pytest.mark.parametrize("kind", ["drop", "lose"])
@pytest.mark.parametrize("rerun", [("enroll",), ("renew", "site", "--force")])
def test_lost_order_answer_is_resolved_by_looking_the_order_up(api: str, kind: str,
                                                              rerun: Tuple[str, ...],
                                                              request: Any) -> None:
    """With classic credentials to search with, the next run finds the order the lost answer
    would have named (or that none was placed) and ends with exactly one order; --force (the
    everyday "renew now") does not skip that search."""
    work = request.getfixturevalue("work" if api == "enrollment" else "classic_work")
    work.remove_sample_profiles()
    work.profile("site", ssl_tls_service_profiles=["Site-TLS"])
    match = "POST /api/v1/certificates" if api == "enrollment" else "POST /api/ssl/v1/enroll"
    work.lab.scm_endpoint.faults.add(FaultRule(kind=kind, match=match,
                                               skip=1 if api == "enrollment" else 0))
    assert work.run("enroll")[0] == 1
    code, out = work.run(*rerun)
    assert code == 0, out
    assert len(work.orders()) == 1
    installed(work)
    events = [h for h in work.state_of("site")["history"] if h["event"] == "ordered"]
    assert events[-1].get("recovered") == ("found at SCM" if kind == "lose" else None)


def test_an_order_whose_date_cannot_be_read_is_still_found_not_placed_again(
        classic_work: Any, monkeypatch: Any) -> None:
    # SCM answers dates as MM/DD/YYYY unless dateFormat=ISO is honoured (sectigo.md §5.6):
    # an order the search cannot date must stay a candidate, not count as "never placed".
    import json

    from connector.scm import ClassicClient
    classic_work.remove_sample_profiles()
    classic_work.profile("site", ssl_tls_service_profiles=["Site-TLS"])
    classic_work.lab.scm_endpoint.faults.add(FaultRule(kind="lose",
                                                       match="POST /api/ssl/v1/enroll"))
    assert classic_work.run("enroll")[0] == 1
    real_request = ClassicClient.request

    def us_dates(self: ClassicClient, method: str, url: str, what: str, *args: Any,
                 **kwargs: Any) -> Any:
        response = real_request(self, method, url, what, *args, **kwargs)
        if what == "order details" and response.status_code == 200:
            body = response.json()
            body["requested"] = "11/28/2026"
            response._content = json.dumps(body).encode()
        return response

    monkeypatch.setattr(ClassicClient, "request", us_dates)
    code, out = classic_work.run("enroll")
    assert code == 0, out
    assert len(classic_work.orders()) == 1
    installed(classic_work)


def test_crash_after_scm_answered_resumes_from_the_ids_file(one: Any, monkeypatch: Any) -> None:
    real_save = StateStore.save

    def save(self: StateStore, state: Any) -> None:
        if state.pending is not None and state.pending.stage == "ordered":
            raise Crash()  # killed after .ids was written, before the state file
        real_save(self, state)

    monkeypatch.setattr(StateStore, "save", save)
    with pytest.raises(Crash):
        one.run("enroll")
    monkeypatch.setattr(StateStore, "save", real_save)
    assert one.state_of("site")["pending"]["stage"] == "ordering"
    code, out = one.run("enroll")
    assert code == 0, out
    assert len(one.orders()) == 1
    installed(one)


def test_commit_fail_then_the_next_run_commits_without_ordering(one: Any) -> None:
    one.lab.panos.settings.commit_fail = 1
    code, out = one.run("enroll")
    assert code == 1 and "Commit failed" in out  # the device's own words
    assert "commit job" in out and "failed" in out and "the next run commits again" in out
    assert one.state_of("site")["pending"]["stage"] == "installed"
    assert entry(one, "site") is None
    code, out = one.run("enroll")
    assert code == 0, out
    assert len(one.orders()) == 1
    installed(one)


def test_commit_busy_is_retried(one: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(panos_client, "BUSY_WAIT", 0.05)
    one.lab.panos.settings.commit_busy = 2
    code, out = one.run("enroll")
    assert code == 0, out
    assert [e.get("code") for e in one.commits()][:3] == ["13", "13", "19"]
    installed(one)


def test_commit_that_never_finishes_is_bounded_and_the_next_run_completes(one: Any) -> None:
    edit_yaml(os.path.join(one.profiles, "fw_paloalto_config.yaml"), "lab-fw-01",
              commit_timeout=1)
    one.lab.panos.settings.commit_hang = 1
    code, out = one.run("enroll")
    assert code == 1 and "commit job" in out and "did not finish" in out
    one.lab.panos.control("finish_jobs", {})
    code, out = one.run("enroll")
    assert code == 0, out
    assert len(one.orders()) == 1
    installed(one)


def test_scm_429_with_retry_after_is_waited_out(one: Any) -> None:
    one.lab.scm_endpoint.faults.add(FaultRule(kind="status", status=429, retry_after=1,
                                              count=2, match="POST /api/v1/certificates"))
    code, out = one.run("enroll")
    assert code == 0, out
    enrolls = [e for e in one.scm_requests() if e["summary"] == "POST /api/v1/certificates"]
    # Faults come before authentication: twice 429, then the 401 that leads to a token.
    assert [e["status"] for e in enrolls] == [429, 429, 401, 200]
    assert len(one.orders()) == 1


def test_token_expired_at_scm_is_refreshed_once(one: Any) -> None:
    config = load_config(one.config)
    client = make_client(config.scm)
    profile = config.certificates["site"]
    from lab import pki
    from cryptography.hazmat.primitives import hashes, serialization
    key = pki.generate_key("EC", 256)
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
        x509.NameAttribute(x509.NameOID.COMMON_NAME, "site.example.com")])).sign(
        key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()
    order = client.enroll(csr, profile)
    one.lab.scm.control("expire_tokens", {})
    assert client.collect(order) is not None
    statuses = [e["status"] for e in one.scm_requests() if "/certificates/" in e["summary"]]
    assert statuses == [401, 200]


def test_declined_order_is_reported_cleaned_up_and_reordered_only_with_force(one: Any) -> None:
    one.lab.scm.settings.decline_next = 1
    code, out = one.run("enroll")
    assert code == 1 and "refused by SCM" in out and "-1112" in out
    assert one.run("enroll")[0] == 1  # no new order without --force
    assert len(one.orders()) == 1
    code, out = one.run("renew", "site", "--force")
    assert code == 0, out
    assert len(one.orders()) == 2
    installed(one)
    state = one.state_of("site")
    # The declined order's request object was removed, so the name was free again.
    assert state["object"] == "site" and state["superseded"] == []
    assert objects(one) == ["gp-portal-selfsigned", "site"]
    assert [h["event"] for h in state["history"]].count("removed") == 1


@pytest.mark.parametrize("defect,words", [("wrong_key", "does not carry the key"),
                                          ("missing_names", "does not cover"),
                                          ("broken_chain", "signature"),
                                          ("expired", "expired")])
def test_defective_certificate_is_refused_before_import(one: Any, defect: str,
                                                        words: str) -> None:
    one.lab.scm.settings.bad_issuance = defect
    one.lab.scm.settings.bad_issuance_count = 1
    code, out = one.run("enroll")
    assert code == 1 and words in out and "nothing was imported" in out
    assert entry(one, "site", "candidate") is None or \
        entry(one, "site", "candidate").find("public-key") is None
    state = one.state_of("site")
    assert state["rejected"]["order_id"] and state["pending"] is None
    assert len(one.orders()) == 1


def test_not_yet_valid_waits_for_the_next_run_without_reordering(one: Any) -> None:
    one.lab.scm.settings.bad_issuance = "not_yet_valid"
    one.lab.scm.settings.bad_issuance_count = 1
    code, out = one.run("enroll")
    assert code == 1 and "not valid before" in out
    assert one.state_of("site")["pending"]["stage"] == "ordered"
    assert one.run("enroll")[0] == 1
    assert len(one.orders()) == 1


def test_old_object_still_referenced_elsewhere_is_kept_until_released(one: Any) -> None:
    assert one.run("enroll")[0] == 0
    one.lab.panos.seed("/config/shared/certificate-profile",
                       "<entry name='Clients'><CA><entry name='site'/></CA></entry>")
    code, out = one.run("renew", "--force")
    assert code == 0, out
    new = one.state_of("site")["object"]
    assert new != "site" and entry(one, "site") is not None
    assert one.state_of("site")["superseded"] == ["site"]
    for tree in one.lab.panos.store.direct():
        parent = tree.find("shared/certificate-profile")
        parent.remove(parent.find("entry"))
    assert one.run("renew")[0] == 0
    assert entry(one, "site") is None and one.state_of("site")["superseded"] == []


def test_a_crash_before_the_one_commit_is_completed_by_the_next_run(one: Any) -> None:
    # The new certificate, its binding and the deletion of the old object wait together in
    # the candidate for the device's one commit; the run dies before it.
    from connector import device
    assert one.run("enroll")[0] == 0
    orders = len(one.orders())
    real_commit = device.Firewall.commit

    def crash(self: Any) -> Any:
        raise Crash()

    device.Firewall.commit = crash  # type: ignore[method-assign]
    try:
        with pytest.raises(Crash):
            one.run("renew", "--force")
    finally:
        device.Firewall.commit = real_commit  # type: ignore[method-assign]
    state = one.state_of("site")
    assert state["pending"]["stage"] == "installed" and state["pending"]["replaces"] == "site"
    assert entry(one, "site") is not None  # deleted in the candidate only
    assert entry(one, "site", "candidate") is None
    assert one.run("renew")[0] == 0
    new = installed(one)
    assert entry(one, "site") is None and one.state_of("site")["superseded"] == []
    assert len(one.orders()) == orders + 1 and new.serial_number
    commits = [c for c in one.lab.panos.commits if c.result == "OK"]
    assert len(commits) == 2  # the enrollment's and the renewal's: one each


def test_stale_api_key_is_replaced_by_keygen_once(one: Any, capsys: Any) -> None:
    fw = os.path.join(one.profiles, "fw_paloalto_config.yaml")
    edit_yaml(fw, "lab-fw-01", api_key=one.lab.panos_api_key())
    one.lab.panos.control("expire_api_keys", {})
    capsys.readouterr()
    code, out = one.run("enroll")
    assert code == 0, out
    keygens = [e for e in one.panos_requests() if e.get("type") == "keygen"]
    assert len(keygens) == 1
    installed(one)
    # Said once, naming the field; the nightly runs after it do not repeat it (cron mail).
    first = [line for line in capsys.readouterr().err.splitlines() if "WARNING" in line]
    assert len(first) == 1 and "lab-fw-01.api_key" in first[0] and fw in first[0], first
    assert "the firewall refuses the api_key" in first[0]
    assert one.run("renew")[0] == 0 and one.run("renew")[0] == 0
    assert "WARNING" not in capsys.readouterr().err
    # The advice works: with api_key deleted, nothing is refused and nothing is said.
    edit_yaml(fw, "lab-fw-01", api_key=None)
    before = len(one.panos_requests())
    assert one.run("renew")[0] == 0
    assert all(e["status"] == 200 for e in one.panos_requests()[before:])
    assert "WARNING" not in capsys.readouterr().err


def test_api_key_only_firewall_profile(one: Any) -> None:
    fw = os.path.join(one.profiles, "fw_paloalto_config.yaml")
    edit_yaml(fw, "lab-fw-01", api_key=one.lab.panos_api_key(), username=None, password=None)
    assert one.run("enroll")[0] == 0
    assert not [e for e in one.panos_requests() if e.get("type") == "keygen"]
    installed(one)


def test_unreachable_firewall_fails_only_its_certificates(one: Any) -> None:
    fw = os.path.join(one.profiles, "fw_paloalto_config.yaml")
    with open(fw, "a") as handle:
        handle.write("dead-fw:\n  url: https://127.0.0.1:9\n  api_key: LUFRPTx\n"
                     "  admin: certbot\n  timeout: 2\n")
    one.profile("other", firewall="dead-fw")
    code, out = one.run("enroll")
    assert code == 1
    assert "dead-fw" in out and "connection failed" in out
    installed(one)
    assert [o["common_name"] for o in one.orders()] == ["site.example.com"]


def test_vsys_certificate_store(one: Any) -> None:
    edit_yaml(os.path.join(one.profiles, "fw_paloalto_config.yaml"), "lab-fw-01",
              vsys="vsys1")
    code, out = one.run("enroll")
    assert code == 0, out
    vsys = one.running().find("devices/entry/vsys/entry")
    names = [e.get("name") for e in vsys.findall("certificate/entry")]
    assert "site" in names
    assert vsys.find("ssl-tls-service-profile/entry[@name='Site-TLS']/certificate").text == \
        "site"
    assert entry(one, "site") is None  # not in shared


def test_classic_api_pending_across_runs_then_renew_by_id(classic_work: Any) -> None:
    work = classic_work
    work.remove_sample_profiles()
    work.profile("site", ssl_tls_service_profiles=["Site-TLS"])
    work.lab.scm.settings.pending_polls = 3
    work.edit_config("scm", poll_timeout=0)
    assert work.run("enroll")[0] == 0
    assert work.state_of("site")["pending"]["stage"] == "ordered"
    work.edit_config("scm", poll_timeout=30, poll_interval=0.05)
    assert work.run("enroll")[0] == 0
    first = installed(work)
    work.lab.scm.settings.pending_polls = 0
    code, out = work.run("renew", "--force")
    assert code == 0, out
    assert [o["op"] for o in work.orders()] == ["enroll", "renew"]
    assert any("/renewById/" in e["summary"] for e in work.scm_requests())
    assert installed(work) != first


# --- a fleet: a fault on one firewall or at SCM leaves the others unaffected -----------------

def failed_lines(capsys: Any) -> List[str]:
    return [line for line in capsys.readouterr().err.splitlines() if "FAILED" in line]


def cert_on(work: Any, firewall: int, name: str) -> Optional[ET.Element]:
    tree = work.lab.firewalls[firewall].running_tree()
    return next((e for e in tree.findall(SHARED) if e.get("name") == name
                 and e.find("public-key") is not None), None)


def test_firewall_timeout_fails_only_that_firewall(fleet: Any, capsys: Any) -> None:
    edit_yaml(os.path.join(fleet.profiles, "fw_paloalto_config.yaml"), "lab-fw-01", timeout=1)
    fleet.lab.firewalls[0].settings.latency = 1.5
    capsys.readouterr()
    code, out = fleet.run("enroll")
    lines = failed_lines(capsys)
    assert code == 1 and len(lines) == 1 and "site1" in lines[0] and "in time" in lines[0]
    assert cert_on(fleet, 1, "site2") is not None
    fleet.lab.firewalls[0].settings.latency = 0
    assert fleet.run("enroll")[0] == 0
    assert cert_on(fleet, 0, "site1") is not None
    assert len(fleet.orders()) == 2


def test_connection_reset_on_a_firewall_write_is_not_repeated_blindly(fleet: Any,
                                                                      capsys: Any) -> None:
    fleet.lab.panos_endpoints[0].faults.add(FaultRule(kind="drop", match="generate"))
    code, _ = fleet.run("enroll")
    lines = failed_lines(capsys)
    assert code == 1 and len(lines) == 1 and "site1" in lines[0]
    port = fleet.lab.panos_endpoints[0].port
    generates = [e for e in fleet.panos_requests()
                 if e["port"] == port and "generate" in e["summary"]]
    assert len(generates) == 1  # a write is not retried after sending
    assert cert_on(fleet, 1, "site2") is not None
    assert fleet.run("enroll")[0] == 0
    assert cert_on(fleet, 0, "site1") is not None and len(fleet.orders()) == 2


def test_scm_5xx_on_collect_is_retried(fleet: Any) -> None:
    fleet.lab.scm_endpoint.faults.add(FaultRule(kind="status", status=503, count=2,
                                                match="GET /api/v1/certificates/"))
    fleet.lab.scm_endpoint.faults.add(FaultRule(kind="status", status=502, count=1,
                                                match="GET /api/v1/certificates/"))
    code, out = fleet.run("enroll")
    assert code == 0, out
    assert len(fleet.orders()) == 2


def test_scm_500_on_an_order_is_ambiguous_and_resolved_without_a_second_order(
        fleet: Any, capsys: Any) -> None:
    fleet.lab.scm_endpoint.faults.add(FaultRule(kind="status", status=500, count=1,
                                                skip=1, match="POST /api/v1/certificates"))
    code, _ = fleet.run("enroll")
    lines = failed_lines(capsys)
    assert code == 1 and len(lines) == 1 and "HTTP 500" in lines[0]
    failed = "site1" if "site1" in lines[0] else "site2"
    assert fleet.state_of(failed)["pending"]["stage"] == "ordering"
    assert fleet.run("enroll")[0] == 0
    assert len(fleet.orders()) == 2


def test_scm_timeout_on_download_is_retried(fleet: Any) -> None:
    fleet.edit_config("scm", timeout=1)
    fleet.lab.scm_endpoint.faults.add(FaultRule(kind="delay", seconds=1.5, count=1,
                                                match="GET /api/v1/certificates/"))
    code, out = fleet.run("enroll")
    assert code == 0, out
    assert len(fleet.orders()) == 2


def test_certificate_revoked_at_scm_before_collection(fleet: Any, capsys: Any) -> None:
    fleet.lab.scm.settings.pending_polls = 1
    fleet.edit_config("scm", poll_timeout=0)
    assert fleet.run("enroll")[0] == 0  # both pending
    order = int(fleet.state_of("site1")["pending"]["order_id"])
    fleet.lab.scm.control("issue_now", {"id": order})
    fleet.lab.scm.control("revoke", {"id": order})
    capsys.readouterr()
    code, _ = fleet.run("enroll")
    lines = failed_lines(capsys)
    assert code == 1 and len(lines) == 1 and "-110" in lines[0]
    assert cert_on(fleet, 1, "site2") is not None
    assert fleet.state_of("site1")["rejected"]["order_id"] == str(order)


@pytest.mark.parametrize("where", ["generate", "collect"])
def test_a_surprise_in_one_certificate_leaves_the_others_of_its_firewall_committed(
        work: Any, monkeypatch: Any, where: str) -> None:
    # An unexpected exception (a bug, a device answer nobody foresaw) while one certificate
    # is worked on fails that certificate only: the others on the same firewall are still
    # installed, and the device's one commit takes them in.
    from connector.device import Firewall
    from connector.ordering import OrderDesk
    victim = "intranet-ov-p384"
    if where == "generate":
        real_generate = Firewall.generate

        def generate(self: Any, name: str, profile: Any, again: bool = False) -> None:
            if profile.name == victim:
                raise ValueError("a surprise")
            real_generate(self, name, profile, again)
        monkeypatch.setattr(Firewall, "generate", generate)
    else:
        real_collect = OrderDesk.collect

        def collect(self: Any, profile: Any, state: Any, anchors: Any) -> Any:
            if profile.name == victim:
                raise ValueError("a surprise")
            return real_collect(self, profile, state, anchors)
        monkeypatch.setattr(OrderDesk, "collect", collect)
    code, out = work.run("enroll")
    assert code == 1 and "unexpected error: ValueError: a surprise" in out, out
    others = ("portal-dv-rsa2048", "shop-ev-rsa4096")
    for name in others:
        state = work.state_of(name)
        assert state["pending"] is None and state["cert_id"], (name, state)
        assert entry(work, state["object"]) is not None, f"{name} was not committed"
    assert len(work.commits()) == 1
    monkeypatch.undo()
    code, out = work.run("renew")  # the next run finishes the victim
    assert code == 0, out
    assert work.state_of(victim)["pending"] is None
    assert len(work.orders()) == 3


def test_an_import_lost_before_its_commit_is_replaced_by_the_advised_force(work: Any) -> None:
    # The commit failed after the import; then another administrator deleted the imported
    # object (key and all) in the candidate. The run stops and advises --force, and --force
    # must then work: a new key, a new order, installed.
    import requests
    work.remove_sample_profiles()
    work.profile("site")
    work.lab.panos.settings.commit_fail = 1
    assert work.run("enroll")[0] == 1
    assert work.state_of("site")["pending"]["stage"] == "installed"
    answer = requests.get(work.lab.panos_endpoint.url + "/api/", params={
        "type": "config", "action": "delete", "key": work.lab.panos_api_key("alice"),
        "xpath": "/config/shared/certificate/entry[@name='site']"},
        verify=work.lab.paths["ca_bundle"], timeout=30)
    assert 'status="success"' in answer.text, answer.text
    code, out = work.run("renew")
    assert code == 1 and "renew site --force" in out, out
    code, out = work.run("renew", "site", "--force")
    assert code == 0, out
    state = work.state_of("site")
    assert state["pending"] is None and state["cert_id"] == str(work.orders()[-1]["id"])
    assert len(work.orders()) == 2
    installed = entry(work, state["object"])
    assert installed is not None and installed.find("private-key") is not None
    assert work.run("renew")[0] == 0
