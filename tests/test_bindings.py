"""Every place a firewall uses a certificate (issue 14; panorama-ha-bindings.md §4, §5), end
to end through the agent's `main()` against the lab: the management interface, a
GlobalProtect portal and gateway (through their SSL/TLS service profiles), an SSL inbound
inspection rule in both of its forms, an IKE gateway, and a vsys profile that names a shared
certificate. What each consumer names is read from the firewall's running configuration; the
lab refuses any commit in which a consumer names an object without certificate and key, so
every commit the agent makes is checked for that too.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any, Dict, Iterator, List, Optional

import pytest

from conftest import Workdir, running_lab
from lab.lab import (GATEWAY, GATEWAY_PROFILE, IKE_GATEWAY, INBOUND_RULE, MANAGEMENT_PROFILE,
                     PORTAL, SEED_CERTIFICATE, SEED_PROFILE, seed_consumers)

SITE = "site"
DEVICE = "devices/entry[@name='localhost.localdomain']"
VSYS1 = f"{DEVICE}/vsys/entry[@name='vsys1']"


def named(root: ET.Element, path: str) -> List[str]:
    """The text of every node at `path` (relative to <config>)."""
    return [(n.text or "").strip() for n in root.findall(path)]


def profile_cert(root: ET.Element, scope: str, profile: str) -> Optional[str]:
    for entry in root.findall(f"{scope}/ssl-tls-service-profile/entry"):
        if entry.get("name") == profile:
            return entry.findtext("certificate")
    return None


def uses(root: ET.Element, list_form: bool) -> Dict[str, Any]:
    """What each consumer ends up with: the certificate it presents."""
    inbound = f"{VSYS1}/rulebase/decryption/rules/entry[@name='{INBOUND_RULE}']/type/" \
              "ssl-inbound-inspection"
    return {
        "management": profile_cert(root, "shared", named(
            root, f"{DEVICE}/deviceconfig/system/ssl-tls-service-profile")[0]),
        "portal": profile_cert(root, "shared", named(
            root, f"{VSYS1}/global-protect/global-protect-portal/entry/portal-config/"
                  "ssl-tls-service-profile")[0]),
        "gateway": profile_cert(root, VSYS1, named(
            root, f"{VSYS1}/global-protect/global-protect-gateway/entry/"
                  "ssl-tls-service-profile")[0]),
        "inbound": named(root, f"{inbound}/certificates/member") if list_form
        else named(root, inbound),
        "ike": named(root, f"{DEVICE}/network/ike/gateway/entry/authentication/certificate/"
                           "local-certificate/name"),
    }


@pytest.fixture(params=["10.1.9", "11.1.4"], ids=["text-form", "member-list"])
def site(request: Any, tmp_path: Any, tls_pki: Any, scm_pki: Any) -> Iterator[Workdir]:
    with running_lab(str(tmp_path / "work"), tls_pki, scm_pki, keep=[]) as work:
        work.lab.panos.settings.sw_version = request.param
        seed_consumers(work.lab.panos)
        work.profile(SITE, bindings={
            "management_ui": True, "globalprotect_portals": [PORTAL],
            "globalprotect_gateways": [GATEWAY], "decryption_rules": [INBOUND_RULE],
            "ike_gateways": [IKE_GATEWAY]})
        yield work


def test_every_consumer_is_pointed_at_the_certificate_and_renewal_repoints_them_all(
        site: Workdir) -> None:
    list_form = site.lab.panos.settings.list_form()
    code, out = site.run("enroll", "--dry-run")
    assert code == 0, out
    for words in (f"point SSL/TLS service profile {MANAGEMENT_PROFILE} at site (used by "
                  "management interface)",
                  f"point SSL/TLS service profile {SEED_PROFILE} at site (used by vsys1 "
                  f"globalprotect-portal {PORTAL})",
                  f"point SSL/TLS service profile {GATEWAY_PROFILE} in vsys1 at site (used by "
                  f"vsys1 globalprotect-gateway {GATEWAY})",
                  f"point decryption rule (SSL inbound inspection) {INBOUND_RULE} in vsys1 at "
                  "site", f"point IKE gateway {IKE_GATEWAY} at site"):
        assert words in out, (words, out)
    assert site.run("enroll")[0] == 0
    running = site.lab.panos.running_tree()
    # A first certificate joins an inbound rule's list (the rule may serve other sites).
    assert uses(running, list_form) == {
        "management": SITE, "portal": SITE, "gateway": SITE,
        "inbound": [SEED_CERTIFICATE, SITE] if list_form else [SITE], "ike": [SITE]}
    assert len(site.commits()) == 1

    code, out = site.run("renew", "--force")
    assert code == 0, out
    renewed = site.state_of(SITE)["object"]
    running = site.lab.panos.running_tree()
    assert uses(running, list_form) == {
        "management": renewed, "portal": renewed, "gateway": renewed,
        "inbound": [SEED_CERTIFICATE, renewed] if list_form else [renewed], "ike": [renewed]}
    # All in one commit, and the old object went with it.
    assert len(site.commits()) == 2
    assert not [e for e in running.findall("shared/certificate/entry") if e.get("name") == SITE]
    assert site.state_of(SITE)["superseded"] == []


def test_status_json_lists_every_consumer_of_each_certificate(site: Workdir) -> None:
    assert site.run("enroll")[0] == 0
    code, report = site.run_json("status")
    assert code == 0
    consumers = {c["consumer"]: c["managed"] for c in report["certificates"][0]["consumers"]}
    assert consumers == {
        f"ssl-tls-service-profile {MANAGEMENT_PROFILE}": True,
        f"management interface (through ssl-tls-service-profile {MANAGEMENT_PROFILE})": True,
        f"ssl-tls-service-profile {SEED_PROFILE}": True,
        f"vsys1 globalprotect-portal {PORTAL} (through ssl-tls-service-profile "
        f"{SEED_PROFILE})": True,
        f"vsys1 ssl-tls-service-profile {GATEWAY_PROFILE}": True,
        f"vsys1 globalprotect-gateway {GATEWAY} (through vsys1 ssl-tls-service-profile "
        f"{GATEWAY_PROFILE})": True,
        f"vsys1 decryption-rule {INBOUND_RULE}": True,
        f"ike-gateway {IKE_GATEWAY}": True}, consumers


def test_a_named_consumer_the_firewall_lacks_stops_before_anything_is_made(
        site: Workdir) -> None:
    site.profile(SITE, bindings={"decryption_rules": ["Inbound-Typo"]})
    code, out = site.run("enroll")
    assert code == 1
    assert "lab-fw-01 has no decryption rule (SSL inbound inspection) 'Inbound-Typo' " \
           "(bindings.decryption_rules), which " in out, out
    assert "site.yaml names; fix the name (nothing was generated)" in out, out
    assert site.orders() == [] and site.commits() == []
    # README, Troubleshooting: fix the name, and the next run does it.
    site.profile(SITE, bindings={"decryption_rules": [INBOUND_RULE]})
    assert site.run("enroll")[0] == 0
    assert SITE in uses(site.lab.panos.running_tree(), site.lab.panos.settings.list_form()
                        )["inbound"]


# --- vsys: a vsys profile may use a shared certificate ---------------------------------------

@pytest.fixture()
def vsys_work(tmp_path: Any, tls_pki: Any, scm_pki: Any) -> Iterator[Workdir]:
    with running_lab(str(tmp_path / "work"), tls_pki, scm_pki, keep=[]) as work:
        work.profile(SITE, ssl_tls_service_profiles=[SEED_PROFILE])
        yield work


def enroll_then_add_a_vsys_profile(work: Workdir) -> None:
    """The shared certificate enrolled, then a vsys1 SSL/TLS profile that names it."""
    assert work.run("enroll")[0] == 0
    work.lab.panos.seed(f"/config/{VSYS1}/ssl-tls-service-profile",
                        f"<entry name='Vsys-TLS'><certificate>{SITE}</certificate></entry>")


def test_a_vsys_profile_naming_a_shared_certificate_is_repointed_and_the_old_one_removed(
        vsys_work: Workdir, capsys: Any) -> None:
    enroll_then_add_a_vsys_profile(vsys_work)
    capsys.readouterr()
    code, out = vsys_work.run("renew", "--force")
    assert code == 0, out
    renewed = vsys_work.state_of(SITE)["object"]
    running = vsys_work.lab.panos.running_tree()
    assert profile_cert(running, VSYS1, "Vsys-TLS") == renewed
    assert profile_cert(running, "shared", SEED_PROFILE) == renewed
    assert not [e for e in running.findall("shared/certificate/entry") if e.get("name") == SITE]
    assert "keeping old" not in capsys.readouterr().err
    assert vsys_work.state_of(SITE)["superseded"] == []


def test_with_follow_off_only_the_named_consumers_move_and_the_others_keep_the_old_one(
        vsys_work: Workdir, capsys: Any) -> None:
    enroll_then_add_a_vsys_profile(vsys_work)
    vsys_work.profile(SITE, ssl_tls_service_profiles=[SEED_PROFILE],
                      bindings={"follow": False})
    capsys.readouterr()
    code, out = vsys_work.run("renew", "--force", "--dry-run")
    assert f"keep {SITE}: still used by vsys1 ssl-tls-service-profile Vsys-TLS" in out, out
    assert vsys_work.run("renew", "--force")[0] == 0
    running = vsys_work.lab.panos.running_tree()
    assert profile_cert(running, VSYS1, "Vsys-TLS") == SITE
    assert f"keeping old {SITE}, still used by vsys1 ssl-tls-service-profile Vsys-TLS" in \
        capsys.readouterr().err
    # status names what keeps the old object, and what uses the new one.
    code, report = vsys_work.run_json("status")
    row = report["certificates"][0]
    assert row["object"] == vsys_work.state_of(SITE)["object"]
    assert row["message"] == f"old {SITE} kept, still used by vsys1 ssl-tls-service-profile " \
                             "Vsys-TLS", row
    assert row["consumers"] == [{"consumer": f"ssl-tls-service-profile {SEED_PROFILE}",
                                 "managed": True}]


def test_a_vsys_certificate_for_a_portal_on_a_shared_profile_stops_before_anything_is_made(
        tmp_path: Any, tls_pki: Any, scm_pki: Any) -> None:
    """A shared profile cannot name a vsys certificate: said before a key is made."""
    from conftest import edit_yaml
    with running_lab(str(tmp_path / "work"), tls_pki, scm_pki, keep=[]) as work:
        seed_consumers(work.lab.panos)
        edit_yaml(f"{work.profiles}/fw_paloalto_config.yaml", "lab-fw-01", vsys="vsys1")
        work.profile(SITE, bindings={"globalprotect_portals": [PORTAL]})
        code, out = work.run("enroll")
        assert code == 1
        assert f"has vsys1 globalprotect-portal {PORTAL} using SSL/TLS service profile " \
               f"{SEED_PROFILE} of shared, which cannot name a certificate of vsys1" in out, out
        assert work.orders() == [] and work.commits() == []


def test_a_new_shared_object_never_takes_a_name_a_vsys_certificate_has(
        vsys_work: Workdir) -> None:
    """A vsys consumer naming `site` means the vsys's own `site` if there is one: the shared
    certificate must be called something else."""
    vsys_work.lab.panos.seed(f"/config/{VSYS1}/certificate",
                             vsys_work.lab.panos.self_signed(SITE, "other.example.com"))
    assert vsys_work.run("enroll")[0] == 0
    name = vsys_work.state_of(SITE)["object"]
    assert name.startswith(f"{SITE}-")
    running = vsys_work.lab.panos.running_tree()
    assert profile_cert(running, "shared", SEED_PROFILE) == name
