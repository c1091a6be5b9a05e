"""Refusals that must not cost money or leave a certificate stuck (issue 11).

A refused order leaves no request behind and no stage that re-sends the same CSR; a request
that no longer matches its profile is made again before anything is ordered with it; the
renewal window never orders on every run; with the classic API, what SCM would refuse is
found out before the firewall makes a key. Everything runs the real CLI against the lab.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Any, List

from conftest import edit_yaml
from lab.server import FaultRule

SHARED = "shared/certificate/entry"


def request_objects(work: Any) -> List[str]:
    """Objects that hold a key and CSR but no certificate, in running and in candidate."""
    found = []
    for label, tree in (("running", work.running()),
                        ("candidate", work.lab.panos.candidate_tree())):
        for node in tree.findall(SHARED):
            if node.find("private-key") is not None and node.find("public-key") is None:
                found.append(f"{label}:{node.get('name')}")
    return found


def profile_file(work: Any, name: str) -> str:
    return os.path.join(work.profiles, f"{name}.yaml")


def generates(work: Any) -> List[ET.Element]:
    return [e for e in work.panos_requests() if "generate" in e.get("summary", "")]


def test_a_refused_key_type_is_fixed_in_the_profile_and_ordered_once(work: Any) -> None:
    # The lab's EV profile, like public EV CAs, offers no P-521 key: SCM answers -13.
    work.remove_sample_profiles()
    work.profile("shop", validation="EV", key="ECDSA-P521")
    code, out = work.run("enroll")
    assert code == 1 and "-13" in out and "renew shop --force" in out, out
    state = work.state_of("shop")
    assert state["pending"] is None and state["rejected"]["order_id"] is None
    assert request_objects(work) == [], "the refused request was left on the firewall"
    assert work.orders() == []

    assert "was refused by SCM" in out
    code, out = work.run("status")
    assert code == 1 and "the last order was refused" in out and "renew shop --force" in out
    # Without --force the refusal stands: no new key, nothing sent to SCM.
    before = len(generates(work)), len(work.scm_requests())
    code, out = work.run("renew")
    assert code == 1 and "the last order was refused" in out, out
    assert (len(generates(work)), len(work.scm_requests())) == before

    edit_yaml(profile_file(work, "shop"), key="ECDSA-P384")
    code, out = work.run("renew", "shop", "--force")
    assert code == 0, out
    assert len(work.orders()) == 1 and work.orders()[0]["key"] == "EC-P384"
    assert work.state_of("shop")["object"] == "shop"
    assert request_objects(work) == []
    assert work.run("renew")[0] == 0 and len(work.orders()) == 1


def test_an_unordered_request_is_made_again_when_the_profile_changes(work: Any) -> None:
    # SCM turns the order away without placing it (403: not the CSR's fault, so the request
    # waits for the next run). The profile changes meanwhile; the next run must not order
    # the old CSR.
    work.remove_sample_profiles()
    work.profile("site", key="RSA-2048")
    work.lab.scm_endpoint.faults.add(FaultRule(kind="status", status=403,
                                               match="POST /api/v1/certificates", count=99))
    code, out = work.run("enroll")
    assert code == 1, out
    assert work.state_of("site")["pending"]["stage"] == "generated"
    code, out = work.run("status")
    assert "not ordered yet" in out and "being placed" not in out, out
    work.lab.scm_endpoint.faults.clear()
    edit_yaml(profile_file(work, "site"), key="ECDSA-P256",
              subject_alt_names=["www.site.example.com"])
    code, out = work.run("status")
    assert "changed since the request" in out, out
    code, out = work.run("renew")
    assert code == 0, out
    assert len(work.orders()) == 1
    order = work.orders()[0]
    assert order["key"] == "EC-P256" and "www.site.example.com" in order["names"]
    assert request_objects(work) == []
    assert work.state_of("site")["object"] == "site"


def test_force_makes_a_new_request_instead_of_resending_the_old_one(work: Any) -> None:
    work.remove_sample_profiles()
    work.profile("site")
    work.lab.scm_endpoint.faults.add(FaultRule(kind="status", status=403,
                                               match="POST /api/v1/certificates", count=99))
    assert work.run("enroll")[0] == 1
    first = work.state_of("site")["pending"]
    work.lab.scm_endpoint.faults.clear()
    code, out = work.run("renew", "site", "--force", "--dry-run")
    assert f"delete the unused request {first['object']}" in out, out
    code, out = work.run("renew", "site", "--force")
    assert code == 0, out
    assert len(generates(work)) == 2 and len(work.orders()) == 1
    assert request_objects(work) == []


def test_a_window_longer_than_the_lifetime_does_not_order_every_run(work: Any,
                                                                      capsys: Any) -> None:
    # With SCM's default term (200 days in the lab) the window cannot be checked when the
    # profile is loaded; it is found at run time, and must not order on every run.
    work.remove_sample_profiles()
    work.profile("site", scm={"profile_id": work.lab.accounts.profile_for("DV").id},
                 renew_before_days=400)
    assert work.run("enroll")[0] == 0
    capsys.readouterr()
    for _ in range(2):
        assert work.run("renew")[0] == 0
    err = capsys.readouterr().err
    assert len(work.orders()) == 1
    # A standing misconfiguration: said on every run, naming the field to fix.
    assert err.count("not shorter than this certificate's lifetime") == 2, err
    assert "renew_before_days" in err and "WARNING" in err


def test_the_window_alone_never_replaces_a_young_certificate_and_says_so_once(
        work: Any, capsys: Any) -> None:
    # A 90-day certificate that is due by its window (as if SCM had dated it 30 days back)
    # but was installed just now: the window alone waits for a tenth of the lifetime.
    work.remove_sample_profiles()
    work.profile("site", renew_before="90%")
    work.lab.scm.settings.backdate_days = 30
    assert work.run("enroll")[0] == 0
    capsys.readouterr()
    assert work.run("renew")[0] == 0 and work.run("renew")[0] == 0
    err = capsys.readouterr().err
    assert len(work.orders()) == 1
    assert err.count("issued less than 9 days ago") == 1, err  # warned once, not nightly
    work.age("site", 8)
    assert work.run("renew")[0] == 0 and len(work.orders()) == 1
    work.age("site", 1)
    assert work.run("renew")[0] == 0
    assert len(work.orders()) == 2


def test_classic_checks_the_scm_profile_before_the_firewall_makes_a_key(
        classic_work: Any) -> None:
    work = classic_work
    work.remove_sample_profiles()
    ev = work.lab.accounts.profile_for("EV").id
    dv = work.lab.accounts.profile_for("DV").id
    work.profile("wrong-level", validation="EV", scm={"profile_id": dv, "term": 90})
    work.profile("unknown", scm={"profile_id": 99999, "term": 90})
    work.profile("p521", validation="EV", key="ECDSA-P521", scm={"profile_id": ev, "term": 90})
    work.profile("term", scm={"profile_id": dv, "term": 45})
    work.lab.scm.settings.mandatory_custom_fields = ["Cost Center"]
    work.profile("fields", scm={"profile_id": dv, "term": 90})
    work.profile("good", scm={"profile_id": dv, "term": 90,
                              "custom_fields": {"Cost Center": "4711"}})
    code, out = work.run("enroll")
    assert code == 1, out
    messages = {line.split(":")[0]: line for line in out.splitlines() if ": " in line}
    assert "DV" in messages["wrong-level"] and "EV" in messages["wrong-level"]
    assert "99999" in messages["unknown"] and "not found" in messages["unknown"]
    assert "ECDSA-P521" in messages["p521"] and "P-384" in messages["p521"]
    assert "45" in messages["term"] and "90" in messages["term"]
    assert "Cost Center" in messages["fields"] and "custom_fields" in messages["fields"]
    # Only the good profile got a key on the firewall and an order at SCM.
    assert len(generates(work)) == 1 and [o["common_name"] for o in work.orders()] == [
        "good.example.com"]
    lookups = [e for e in work.scm_requests() if e["method"] == "GET" and (
        "/types" in e["path"] or "/customFields" in e["path"])]
    assert len(lookups) == 2, lookups  # once per run, not per certificate


def test_a_run_with_nothing_due_asks_scm_nothing_with_the_classic_api(
        classic_work: Any) -> None:
    assert classic_work.run("enroll")[0] == 0
    before = len(classic_work.scm_requests())
    assert classic_work.run("renew")[0] == 0
    assert len(classic_work.scm_requests()) == before


def test_status_and_dry_runs_do_not_record_warnings_given_once(
        work: Any) -> None:
    # status and dry runs look; they never record the "once" warnings.
    work.remove_sample_profiles()
    work.profile("site", renew_before="90%")
    work.lab.scm.settings.backdate_days = 30
    assert work.run("enroll")[0] == 0
    assert work.run("status")[0] == 0
    assert work.run("renew", "--dry-run")[0] == 0
    assert not os.path.exists(os.path.join(work.state, "notices.json"))
    assert work.run("renew")[0] == 0
    assert os.path.exists(os.path.join(work.state, "notices.json"))


def test_an_account_that_may_not_list_profiles_still_orders(classic_work: Any,
                                                            capsys: Any) -> None:
    # Some classic accounts may order but not list certificate types: the check is skipped,
    # said once, and the order itself is SCM's answer.
    work = classic_work
    work.lab.scm_endpoint.faults.add(FaultRule(kind="status", status=403, count=None,
                                               match="GET /api/ssl/v1/types"))
    capsys.readouterr()
    assert work.run("enroll")[0] == 0
    err = capsys.readouterr().err
    assert err.count("cannot check certificate profiles before ordering") == 1, err
    assert len(work.orders()) == 3


def order_posts(work: Any) -> int:
    """Orders SCM answered (not the 401 that makes the client discover its token URL)."""
    return sum(1 for e in work.scm_requests()
               if e.get("summary", "").startswith("POST /api/v1/certificates")
               and e.get("status") != 401)


def test_force_after_a_refusal_that_still_stands_asks_scm_once_per_run(work: Any) -> None:
    # The cause is not fixed: --force may try once more, but one refusal ends the run's
    # attempts (the same request would be refused again, and again).
    work.remove_sample_profiles()
    work.profile("shop", validation="EV", key="ECDSA-P521")
    assert work.run("enroll")[0] == 1
    posts, keys = order_posts(work), len(generates(work))
    code, out = work.run("renew", "shop", "--force")
    assert code == 1 and "-13" in out and "renew shop --force" in out, out
    assert order_posts(work) - posts == 1 and len(generates(work)) - keys == 1
    assert work.state_of("shop")["rejected"] is not None
    assert request_objects(work) == [], "the refused request was left on the firewall"


def test_force_after_a_decline_at_collection_orders_once_per_run(work: Any) -> None:
    # Both the first order and the forced one are declined when collected: the forced run
    # reports the second decline; it does not place a third order behind it.
    work.remove_sample_profiles()
    work.profile("site")
    work.lab.scm.settings.decline_next = 2
    assert work.run("enroll")[0] == 1 and len(work.orders()) == 1
    code, out = work.run("renew", "site", "--force")
    assert code == 1 and "-1112" in out and "renew site --force" in out, out
    assert len(work.orders()) == 2
    assert request_objects(work) == []
    code, out = work.run("renew", "site", "--force")  # SCM issues again: installed
    assert code == 0 and len(work.orders()) == 3, out
    assert work.state_of("site")["object"] == "site"
