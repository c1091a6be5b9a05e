"""The agent end to end: its real main() against the lab over HTTPS (issue: enroll and renew)."""

from __future__ import annotations

import datetime as dt
import os
import xml.etree.ElementTree as ET
from typing import Any, Optional

import pytest
from cryptography import x509

from lab import pki
from lab.lab import SEED_PROFILE
from lab.panos_certs import certificate_entry

SHARED = "shared/certificate/entry"


def running_entry(work: Any, name: str) -> Optional[ET.Element]:
    for entry in work.running().findall(SHARED):
        if entry.get("name") == name:
            return entry
    return None


def running_cert(work: Any, name: str) -> x509.Certificate:
    entry = running_entry(work, name)
    assert entry is not None, f"{name} is not in the running configuration"
    assert entry.findtext("private-key", "").startswith("-AQ=="), f"{name} has no on-box key"
    return x509.load_pem_x509_certificate(entry.findtext("public-key").encode())


def service_target(work: Any, profile: str) -> Optional[str]:
    for entry in work.running().findall("shared/ssl-tls-service-profile/entry"):
        if entry.get("name") == profile:
            return entry.findtext("certificate")
    return None


def test_enroll_installs_every_sample_certificate_with_one_order_each(work: Any) -> None:
    code, report = work.run_json("enroll")
    assert code == 0, report
    assert len(work.orders()) == 3
    for name, cn, key in (("portal-example-com", "portal.example.com", "RSA"),
                          ("intranet-example-com", "intranet.example.com", "EC"),
                          ("shop-example-com", "shop.example.com", "RSA")):
        cert = running_cert(work, name)
        assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == cn
    # CA objects went in once each, as certificate-only entries.
    cas = [e for e in work.running().findall(SHARED) if e.findtext("ca") == "yes"
           and e.find("private-key") is None]
    issuers = {pki.openssl_oneline(c.subject) for c in work.lab.scm.hierarchy.all_ca_certs()}
    assert {e.findtext("subject") for e in cas} <= issuers
    assert len(cas) == len({e.findtext("subject") for e in cas})
    assert service_target(work, SEED_PROFILE) == "portal-example-com"
    assert len([c for c in work.commits()]) == 1  # one commit for the firewall
    assert {c["profile"]: (c["action"], c["result"]) for c in report["certificates"]} == {
        name: ("enroll", "changed") for name in ("portal-dv-rsa2048", "intranet-ov-p384",
                                                 "shop-ev-rsa4096")}
    assert report["summary"]["orders"] == 3 and report["summary"]["commits"] == 1


KEYS = ["RSA-2048", "RSA-3072", "RSA-4096", "ECDSA-P256", "ECDSA-P384", "ECDSA-P521"]


@pytest.mark.parametrize("api", ["enrollment", "classic"])
def test_every_key_type_and_validation_with_both_apis(api: str, request: Any) -> None:
    work = request.getfixturevalue("work" if api == "enrollment" else "classic_work")
    work.remove_sample_profiles()
    # Each validation with two key types; P-521 on DV (the lab's EV profile, like public EV
    # CAs, does not offer it).
    validations = ["OV", "EV", "DV"]
    for index, key in enumerate(KEYS):
        validation = validations[index % 3]
        work.profile(f"k{index}", key=key, validation=validation,
                     digest="sha384" if "P384" in key else "sha256",
                     subject_alt_names=[f"alt{index}.example.com"])
    code, out = work.run("enroll")
    assert code == 0, out
    assert len(work.orders()) == 6
    assert {o["api"] for o in work.orders()} == {api}
    for index, key in enumerate(KEYS):
        cert = running_cert(work, f"k{index}")
        public = cert.public_key()
        family, size = key.split("-")
        assert pki.key_family(public) == ("RSA" if family == "RSA" else "EC")
        assert pki.key_bits(public) == int(size.lstrip("P"))
        names = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        assert names == [f"k{index}.example.com", f"alt{index}.example.com"]
        assert validations[index % 3] in \
            [o["validation"] for o in work.orders() if o["common_name"] == f"k{index}.example.com"]


def test_pending_issuance_across_two_runs_collects_without_a_new_order(work: Any) -> None:
    work.remove_sample_profiles()
    work.profile("slow")
    work.lab.scm.settings.pending_polls = 3
    work.edit_config("scm", poll_timeout=0)
    code, report = work.run_json("enroll")
    assert code == 0, report
    assert report["certificates"][0]["result"] == "pending"
    assert len(work.orders()) == 1
    assert running_entry(work, "slow") is None
    state = work.state_of("slow")
    assert state["pending"]["stage"] == "ordered"
    order_id = state["pending"]["order_id"]
    import base64
    ids = open(f"{work.state}/slow.ids").read().strip()
    assert base64.b64decode(ids).decode() == order_id
    work.edit_config("scm", poll_timeout=30, poll_interval=0.05)
    code, out = work.run("enroll")
    assert code == 0, out
    assert len(work.orders()) == 1  # collected, not ordered again
    running_cert(work, "slow")
    assert work.state_of("slow")["cert_id"] == order_id


def test_renew_twice_second_run_sends_nothing_to_scm_and_does_not_commit(work: Any) -> None:
    assert work.run("renew")[0] == 0
    scm_before, commits_before = len(work.scm_requests()), len(work.commits())
    panos_before = len(work.panos_requests())
    code, report = work.run_json("renew")
    assert code == 0, report
    assert len(work.scm_requests()) == scm_before
    assert len(work.commits()) == commits_before
    new = work.panos_requests()[panos_before:]
    assert [e["write"] for e in new] == [False] * len(new)
    assert len(new) <= 2  # keygen and one configuration read
    assert {c["message"] for c in report["certificates"]} == {"up to date"}
    assert report["summary"]["orders"] == 0 and report["summary"]["commits"] == 0


def test_bound_certificate_renewal_repoints_then_removes_the_old_object(work: Any) -> None:
    assert work.run("enroll")[0] == 0
    assert service_target(work, SEED_PROFILE) == "portal-example-com"
    old = running_cert(work, "portal-example-com")
    orders = len(work.orders())
    code, out = work.run("renew", "portal-dv-rsa2048", "--force")
    assert code == 0, out
    assert len(work.orders()) == orders + 1
    assert work.orders()[-1]["op"] == "renew"
    new_name = service_target(work, SEED_PROFILE)
    assert new_name and new_name.startswith("portal-example-com-")
    new = running_cert(work, new_name)
    assert new != old and new.public_key().public_numbers() != old.public_key().public_numbers()
    assert running_entry(work, "portal-example-com") is None
    # No committed configuration ever had the profile pointing at an incomplete object.
    for record in work.lab.panos.commits:
        tree = ET.fromstring(record.running)
        for profile in tree.findall("shared/ssl-tls-service-profile/entry"):
            target = profile.findtext("certificate")
            entry = next(e for e in tree.findall(SHARED) if e.get("name") == target)
            assert entry.find("public-key") is not None and entry.find("private-key") is not None
    state = work.state_of("portal-dv-rsa2048")
    assert state["object"] == new_name and state["superseded"] == []
    # One commit took in the new certificate, the repointed profile and the removal, and the
    # removal is a main event: in the state's history and in the log.
    assert len(work.commits()) == 2  # the enrollment's and the renewal's
    events = [h["event"] for h in state["history"]]
    assert events[-2:] == ["committed", "removed"], events
    assert state["history"][-1]["object"] == "portal-example-com"
    with open(os.path.join(work.root, "logs", "paloaltoagent.log")) as handle:
        assert "portal-dv-rsa2048: removed superseded portal-example-com" in handle.read()


def seed_certificate(work: Any, name: str, not_before: dt.datetime,
                     not_after: dt.datetime, cn: str) -> None:
    """Put a certificate with an on-box key under `name`, as if installed long ago."""
    key = pki.generate_key("RSA", 2048)
    ca = work.lab.scm.hierarchy.issuers[("DV", "RSA")]
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])
    cert = pki.issue_leaf(ca, key.public_key(), subject, [cn], not_before, not_after)
    entry = certificate_entry(name, cert, work.lab.panos.master.seal(key))
    work.lab.panos.seed("/config/shared/certificate", ET.tostring(entry, encoding="unicode"))


def test_expired_certificate_on_the_firewall_is_replaced(work: Any) -> None:
    work.remove_sample_profiles()
    work.profile("old-site")
    now = pki.utcnow()
    seed_certificate(work, "old-site", now - dt.timedelta(days=100), now - dt.timedelta(days=1),
                     "old-site.example.com")
    work.lab.panos.seed("/config/shared/ssl-tls-service-profile",
                        "<entry name='Site'><certificate>old-site</certificate></entry>")
    code, out = work.run("renew")
    assert code == 0, out
    new_name = service_target(work, "Site")
    assert new_name != "old-site" and running_cert(work, new_name).not_valid_after_utc > now
    assert running_entry(work, "old-site") is None
    assert len(work.orders()) == 1


def test_revoked_on_the_firewall_is_replaced_next_run(work: Any) -> None:
    work.remove_sample_profiles()
    work.profile("rev")
    assert work.run("enroll")[0] == 0
    work.lab.panos.set_certificate_status("rev", "revoked")
    code, out = work.run("renew")
    assert code == 0, out
    assert len(work.orders()) == 2
    assert work.state_of("rev")["object"].startswith("rev-")


def test_inside_the_window_renewed_outside_untouched(work: Any) -> None:
    work.remove_sample_profiles()
    work.lab.scm.settings.backdate_days = 40  # 90-day certificates with 50 days left
    work.profile("inside", renew_before_days=60)
    work.profile("outside", renew_before="30%")  # 27 days
    assert work.run("enroll")[0] == 0
    work.age("inside", 40)
    work.age("outside", 40)
    assert len(work.orders()) == 2
    code, out = work.run("renew")
    assert code == 0, out
    assert len(work.orders()) == 3
    assert work.orders()[-1]["common_name"] == "inside.example.com"
    assert work.state_of("outside")["object"] == "outside"


def test_enroll_leaves_due_certificates_to_renew(work: Any) -> None:
    work.remove_sample_profiles()
    work.lab.scm.settings.backdate_days = 40
    work.profile("inside", renew_before_days=60)
    assert work.run("enroll")[0] == 0
    assert work.run("enroll")[0] == 0
    assert len(work.orders()) == 1


def test_legacy_style_arguments(work: Any) -> None:
    code, out = work.run("-a", "enroll", "-p", "portal-dv-rsa2048.yaml,shop-ev-rsa4096")
    assert code == 0, out
    assert sorted(o["common_name"] for o in work.orders()) == ["portal.example.com",
                                                              "shop.example.com"]


def test_unknown_profile_name_is_a_usage_error_and_sends_nothing(work: Any) -> None:
    code, _ = work.run("renew", "portal-dv-rsa2O48")
    assert code == 2
    assert work.panos_requests() == [] and work.scm_requests() == []


def test_failure_of_one_certificate_does_not_stop_the_others(work: Any) -> None:
    work.remove_sample_profiles()
    work.profile("good")
    work.profile("bad", common_name="bad.example.net")
    work.lab.scm.settings.validated_domains = ["example.com"]
    code, out = work.run("enroll")
    assert code == 1
    assert "bad" in out and "-737" in out
    running_cert(work, "good")
    assert [o["common_name"] for o in work.orders()] == ["good.example.com"]
