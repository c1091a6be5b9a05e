"""Panorama end to end (issue 13): the agent's real `main()` against a lab Panorama managing
three firewalls, in two template stacks (stack-a: lab-fw-01 and lab-fw-02; stack-b:
lab-fw-03), over HTTPS.

The three targets: a certificate in template `branch` (key made on Panorama, pushed to every
firewall of both stacks), Panorama's own certificate, and a firewall reached through
Panorama with target=SERIAL. What each firewall holds is read from its own running
configuration, never from the agent's report alone.
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from typing import Any, Dict, Iterator, List, Optional

import pytest
import requests
import yaml
from cryptography import x509

from conftest import Webhook, Workdir, edit_yaml, running_lab
from lab.lab import PANORAMA_PROFILE, STACKS, TEMPLATE, TEMPLATE_PROFILE
from lab.server import Endpoint, FaultRule, server_ssl_context

BRANCH, OWN, REMOTE = "branch-portal", "panorama-ui", "remote-portal"
BASE = "devices/entry[@name='localhost.localdomain']"
TEMPLATE_SHARED = f"{BASE}/template/entry[@name='{TEMPLATE}']/config/shared"


@pytest.fixture()
def pano(tmp_path: Any, tls_pki: Any, scm_pki: Any) -> Iterator[Workdir]:
    with running_lab(str(tmp_path / "pano"), tls_pki, scm_pki, panorama=3,
                     keep=[BRANCH]) as work:
        yield work


def entry(root: ET.Element, store: str, name: str) -> Optional[ET.Element]:
    return next((e for e in root.findall(f"{store}/certificate/entry") if e.get("name") == name),
                None)


def bound(root: ET.Element, store: str, profile: str) -> Optional[str]:
    node = next((p for p in root.findall(f"{store}/ssl-tls-service-profile/entry")
                 if p.get("name") == profile), None)
    return node.findtext("certificate") if node is not None else None


def leaf(work: Workdir, profile: str) -> x509.Certificate:
    state = work.state_of(profile)
    return work.lab.scm.orders[int(state["cert_id"])].leaf


def assert_on_every_firewall(work: Workdir, name: str, stacks: Any = STACKS) -> None:
    """Each managed firewall runs the certificate with its key, from the template, and the
    template's SSL/TLS service profile points at it."""
    issued = leaf(work, BRANCH)
    for firewall in work.lab.firewalls:
        running = firewall.running_tree()
        found = entry(running, "shared", name)
        assert found is not None, f"{name} not on {firewall.hostname}"
        assert found.get("src") == "tpl" and found.get("ptpl") in stacks
        assert found.find("private-key") is not None
        assert x509.load_pem_x509_certificate(found.findtext("public-key").encode()) == issued
        assert bound(running, "shared", TEMPLATE_PROFILE) == name, firewall.hostname


def pushes(work: Workdir) -> List[dict]:
    return [e for e in work.panos_requests()
            if e.get("type") == "commit" and e.get("action") == "all"]


def serial(work: Workdir, index: int) -> str:
    return work.lab.firewalls[index].serial


# --- the template certificate ------------------------------------------------------------------

def test_a_template_certificate_reaches_every_firewall_and_renews_within_31_characters(
        pano: Workdir) -> None:
    code, report = pano.run_json("enroll")
    assert code == 0, report
    assert_on_every_firewall(pano, BRANCH)
    assert len(pushes(pano)) == 2  # one per stack
    # The report says, per firewall, what the push did.
    row = report["certificates"][0]
    assert sorted((p["hostname"], p["stack"], p["result"]) for p in row["pushes"]) == [
        ("lab-fw-01", "stack-a", "OK"), ("lab-fw-02", "stack-a", "OK"),
        ("lab-fw-03", "stack-b", "OK")]
    assert report["summary"]["pushes"] == 3 and report["schema_version"] == "1.2"
    # Panorama holds it in the template, committed.
    panorama = pano.lab.panorama.running_tree()
    assert entry(panorama, TEMPLATE_SHARED, BRANCH).find("private-key") is not None

    code, out = pano.run("renew", BRANCH, "--force")
    assert code == 0, out
    renewed = pano.state_of(BRANCH)["object"]
    assert renewed != BRANCH and len(renewed) <= 31
    assert_on_every_firewall(pano, renewed)
    for firewall in pano.lab.firewalls:
        assert entry(firewall.running_tree(), "shared", BRANCH) is None, "old object kept"
    assert entry(pano.lab.panorama.running_tree(), TEMPLATE_SHARED, BRANCH) is None
    assert len(pano.orders()) == 2 and len(pushes(pano)) == 4

    # A second run orders nothing and pushes nothing.
    before = (len(pano.orders()), len(pushes(pano)), len(pano.commits()))
    assert pano.run("renew")[0] == 0
    assert (len(pano.orders()), len(pushes(pano)), len(pano.commits())) == before


def test_the_dry_run_names_the_template_stacks_and_firewalls_a_push_reaches(
        pano: Workdir) -> None:
    code, out = pano.run("enroll", "--dry-run")
    assert code == 0, out
    assert "branch-portal on lab-template (missing)" in out
    assert "commit Panorama lab-panorama (partial, admin certbot), then push template stacks " \
           "stack-a (lab-fw-01, lab-fw-02) and stack-b (lab-fw-03)" in out, out
    assert pushes(pano) == [] and pano.orders() == []


def as_alice(work: Workdir, **params: str) -> ET.Element:
    """One XML API request to the lab's Panorama as another administrator, alice."""
    answer = requests.post(work.lab.panorama_endpoint.url + "/api/", data=dict(
        params, key=work.lab.panorama.api_key("alice")), verify=work.lab.paths["ca_bundle"],
        timeout=30)
    root = ET.fromstring(answer.text)
    assert root.get("status") == "success", answer.text
    return root


def alice_adds_a_profile(work: Workdir) -> None:
    """alice starts an SSL/TLS service profile in the agent's template."""
    as_alice(work, type="config", action="set",
             xpath=f"/config/{TEMPLATE_SHARED}/ssl-tls-service-profile",
             element="<entry name='Alice-TLS'><certificate>branch-selfsigned</certificate>"
                     "</entry>")


def test_another_admins_pending_change_on_panorama_is_neither_committed_nor_pushed(
        pano: Workdir) -> None:
    alice_adds_a_profile(pano)  # and does not commit it
    assert pano.run("enroll")[0] == 0
    assert_on_every_firewall(pano, BRANCH)
    panorama = pano.lab.panorama
    assert bound(panorama.running_tree(), TEMPLATE_SHARED, "Alice-TLS") is None
    assert bound(panorama.candidate_tree(), TEMPLATE_SHARED, "Alice-TLS") == "branch-selfsigned"
    for firewall in pano.lab.firewalls:
        assert bound(firewall.running_tree(), "shared", "Alice-TLS") is None
    commits = [e for e in pano.commits() if e.get("firewall") == "lab-panorama" and
               e.get("action") == "partial"]
    assert commits and all(e.get("admin") == "certbot" for e in commits)
    assert [c.admin for c in panorama.store.pending] == ["alice"]


@pytest.mark.parametrize("scoped", [True, False], ids=["10.2+", "before-10.2"])
def test_another_admins_committed_but_unpushed_change_stays_on_panorama(
        pano: Workdir, capsys: Any, scoped: bool) -> None:
    """The push is limited to the agent's admin (`<admin>` in commit-all, PAN-OS 10.2+).
    Where Panorama refuses that, the push carries every committed change, and the
    administrator is told so once."""
    pano.lab.panorama.settings.commit_all_admin = scoped
    alice_adds_a_profile(pano)
    job = as_alice(pano, type="commit", cmd="<commit><partial><admin><member>alice</member>"
                                            "</admin></partial></commit>").findtext(
        "result/job")
    assert job
    pano.lab.panorama.control("finish_jobs", {})
    assert bound(pano.lab.panorama.running_tree(), TEMPLATE_SHARED, "Alice-TLS") == \
        "branch-selfsigned"
    capsys.readouterr()
    assert pano.run("enroll")[0] == 0
    assert_on_every_firewall(pano, BRANCH)
    warned = [line for line in capsys.readouterr().err.splitlines() if " WARNING " in line
              and "refuses a push limited to admin certbot" in line]
    for firewall in pano.lab.firewalls:
        alice_on_it = bound(firewall.running_tree(), "shared", "Alice-TLS")
        assert alice_on_it == (None if scoped else "branch-selfsigned")
    assert len(warned) == (0 if scoped else 1), warned
    assert pano.run("renew", "--force")[0] == 0  # said once, not on every run
    assert not [line for line in capsys.readouterr().err.splitlines()
                if "refuses a push limited to admin" in line and " WARNING " in line]


def push_metrics(work: Workdir) -> Dict[str, float]:
    """hostname -> paloaltoagent_push_device_success, from the run's metrics file."""
    from prometheus_client.parser import text_string_to_metric_families
    with open(os.path.join(work.root, "metrics.prom")) as handle:
        families = {f.name: f for f in text_string_to_metric_families(handle.read())}
    return {s.labels["hostname"]: s.value
            for s in families["paloaltoagent_push_device_success"].samples}


def test_a_push_that_fails_on_one_firewall_fails_the_run_and_is_pushed_again_next_run(
        pano: Workdir, tls_files: Dict[str, str]) -> None:
    pano.edit_config("", metrics={"file": "metrics.prom"})
    hook = Webhook()
    endpoint = Endpoint(hook, server_ssl_context(tls_files["cert"], tls_files["key"])).start()
    path = os.path.join(pano.profiles, "notifications.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump({"webhook": {"url": f"{endpoint.url}/hook",
                                    "ca_bundle": tls_files["ca_bundle"]}}, handle)
    os.chmod(path, 0o600)
    pano.lab.panorama.settings.push_fail = serial(pano, 1)
    try:
        code, out = pano.run("enroll")
    finally:
        endpoint.stop()
    assert code == 1
    assert "the push of template 'branch' failed on 1 of 3 firewalls" in out, out
    assert f"lab-fw-02 ({serial(pano, 1)}): commit failed" in out, out
    assert "lab: injected push failure" in out and "the next run pushes again" in out
    for index in (0, 2):  # the others were updated
        assert entry(pano.lab.firewalls[index].running_tree(), "shared", BRANCH) is not None
    assert entry(pano.lab.firewalls[1].running_tree(), "shared", BRANCH) is None
    assert pano.state_of(BRANCH)["pending"]["stage"] == "installed"
    # The alert names the firewall and its own words; the metrics say which one failed.
    assert len(hook.received) == 1
    alert = json.dumps(hook.received[0])
    assert "FAILED branch-portal" in alert and "lab-fw-02" in alert and \
        "lab: injected push failure" in alert, alert
    assert push_metrics(pano) == {"lab-fw-01": 1, "lab-fw-02": 0, "lab-fw-03": 1}
    code, out = pano.run("status")
    assert code == 1 and "not yet committed on Panorama and pushed to every firewall (the " \
        "next run does it)" in out, out

    code, report = pano.run_json("renew")
    assert code == 0, report
    assert len(pano.orders()) == 1  # pushed again, not ordered again
    assert_on_every_firewall(pano, BRANCH)
    assert pano.state_of(BRANCH)["pending"] is None
    assert push_metrics(pano) == {"lab-fw-01": 1, "lab-fw-02": 1, "lab-fw-03": 1}


def test_a_disconnected_firewall_is_named_and_the_push_is_repeated_once_it_is_back(
        pano: Workdir) -> None:
    pano.lab.panorama.settings.disconnected = serial(pano, 2)
    code, report = pano.run_json("enroll")
    assert code == 1
    row = report["certificates"][0]
    failed = [p for p in row["pushes"] if p["result"] != "OK"]
    assert [(p["hostname"], p["status"]) for p in failed] == [("lab-fw-03", "not connected")]
    assert "lab-fw-03" in row["error"] and "not connected" in row["error"]
    pano.lab.panorama.settings.disconnected = ""
    assert pano.run("renew")[0] == 0 and len(pano.orders()) == 1
    assert_on_every_firewall(pano, BRANCH)


def test_a_stack_without_firewalls_is_a_warning_not_a_success(pano: Workdir,
                                                              capsys: Any) -> None:
    pano.lab.panorama.seed_stack("stack-empty", [TEMPLATE], [])
    devices = os.path.join(pano.profiles, "fw_panorama.yaml")
    edit_yaml(devices, "lab-template", template_stacks=["stack-empty"])
    capsys.readouterr()
    code, report = pano.run_json("enroll")
    warnings = [line for line in capsys.readouterr().err.splitlines() if " WARNING " in line]
    assert any("stack-empty holds no firewall" in line for line in warnings), warnings
    assert any("pushed to no firewall" in line for line in warnings), warnings
    row = report["certificates"][0]
    assert code == 0 and row["pushes"] == [] and "pushed to no firewall" in row["message"]
    # Not a success: the certificate waits, status flags it, and each run pushes again.
    assert pano.state_of(BRANCH)["pending"]["stage"] == "installed"
    code, out = pano.run("status")
    assert code == 1 and "not yet committed on Panorama and pushed to every firewall" in out
    before = len(pushes(pano))
    assert pano.run("renew")[0] == 0
    assert len(pushes(pano)) == before + 1 and len(pano.orders()) == 1
    # Once the template's stacks reach firewalls, the next run completes it, ordering nothing.
    edit_yaml(devices, "lab-template", template_stacks=None)
    code, out = pano.run("renew")
    assert code == 0, out
    assert_on_every_firewall(pano, BRANCH)
    assert pano.state_of(BRANCH)["pending"] is None and len(pano.orders()) == 1


@pytest.mark.parametrize("mode,words", [("error", "it refused"),
                                        ("panorama-store",
                                         "made the key in Panorama's own store")])
def test_a_template_that_will_not_make_a_key_fails_clearly_and_leaves_nothing(
        pano: Workdir, mode: str, words: str) -> None:
    pano.lab.panorama.settings.template_generate = mode
    code, out = pano.run("enroll")
    assert code == 1
    assert words in out and "via: lab-panorama" in out and "Nothing was ordered" in out, out
    assert pano.orders() == []
    assert not any(e["summary"].startswith("POST /api/v1/certificates")
                   for e in pano.scm_requests())
    for tree in (pano.lab.panorama.candidate_tree(), pano.lab.panorama.running_tree()):
        assert entry(tree, TEMPLATE_SHARED, BRANCH) is None
        assert entry(tree, "panorama", BRANCH) is None
    assert pano.state_of(BRANCH)["pending"] is None  # no request waits for an order
    code, report = pano.run_json("status")
    assert report["certificates"][0]["state"] == "missing"


def test_a_lost_generate_answer_is_not_taken_for_a_refusal_and_the_rerun_cleans_up(
        pano: Workdir) -> None:
    """Panorama made the request in its own store, and the answer was lost: the run cannot
    know, so it keeps the request in its state; the rerun removes the stray it finds there,
    probes again, and only then gives up, leaving nothing."""
    pano.lab.panorama.settings.template_generate = "panorama-store"
    pano.lab.panorama_endpoint.faults.add(FaultRule(kind="lose",
                                                    match="request certificate generate"))
    code, out = pano.run("enroll")
    assert code == 1 and "did not make the key" not in out, out
    assert pano.state_of(BRANCH)["pending"]["stage"] == "generated"
    assert entry(pano.lab.panorama.candidate_tree(), "panorama", BRANCH) is not None
    code, out = pano.run("enroll")
    assert code == 1 and "did not make the key and CSR" in out, out
    assert entry(pano.lab.panorama.candidate_tree(), "panorama", BRANCH) is None
    assert pano.state_of(BRANCH)["pending"] is None and pano.orders() == []


def test_a_name_panorama_itself_uses_is_not_taken_for_a_template_certificate(
        pano: Workdir) -> None:
    """A template certificate and Panorama's own may share an object_name in their profiles;
    the new template object takes a name free in Panorama's store too (§1.5: a generate
    could land there)."""
    panorama = pano.lab.panorama
    panorama.seed("/config/panorama/certificate",
                  panorama.self_signed(BRANCH, "panorama.example.com"))
    before = ET.tostring(entry(panorama.running_tree(), "panorama", BRANCH))
    code, out = pano.run("enroll")
    assert code == 0, out
    name = pano.state_of(BRANCH)["object"]
    assert name.startswith(f"{BRANCH}-") and len(name) <= 31
    assert_on_every_firewall(pano, name)
    assert ET.tostring(entry(panorama.running_tree(), "panorama", BRANCH)) == before


def test_a_reference_from_a_stack_keeps_the_old_template_object(pano: Workdir,
                                                               capsys: Any) -> None:
    """The stack's own configuration is merged with the template on the firewalls (§1.1):
    a service profile there that names the old object keeps it, and is named."""
    assert pano.run("enroll")[0] == 0
    pano.lab.panorama.seed(
        f"/config/{BASE}/template-stack/entry[@name='stack-a']/config/shared/"
        "ssl-tls-service-profile",
        f"<entry name='Stack-TLS'><certificate>{BRANCH}</certificate></entry>")
    capsys.readouterr()
    code, out = pano.run("renew", BRANCH, "--force")
    assert code == 0, out
    err = capsys.readouterr().err
    assert "keeping old branch-portal, still used by template-stack stack-a: " \
           "ssl-tls-service-profile Stack-TLS" in err, err
    assert entry(pano.lab.panorama.running_tree(), TEMPLATE_SHARED, BRANCH) is not None
    assert_on_every_firewall(pano, pano.state_of(BRANCH)["object"])


def test_after_a_refused_template_generate_the_advice_given_works(pano: Workdir) -> None:
    """README, Troubleshooting: "did not make the key and CSR": an entry with `via:` and
    `serial` per firewall of the template's stacks, and a certificate profile for each in
    place of the template's."""
    pano.lab.panorama.settings.template_generate = "error"
    code, out = pano.run("enroll")
    assert code == 1 and "did not make the key and CSR" in out
    assert "give each firewall of the template's stacks an entry with 'via: lab-panorama' " \
           "and its 'serial', and a certificate profile for each in place of this one" in out
    with open(os.path.join(pano.profiles, "fw_panorama.yaml")) as handle:
        devices = yaml.safe_load(handle)
    for firewall in pano.lab.firewalls:
        devices[f"{firewall.hostname}-direct"] = {"via": "lab-panorama",
                                                  "serial": firewall.serial}
        pano.profile(f"portal-{firewall.hostname}", firewall=f"{firewall.hostname}-direct",
                     ssl_tls_service_profiles=["GP-Portal-TLS"])
    with open(os.path.join(pano.profiles, "fw_panorama.yaml"), "w") as handle:
        yaml.safe_dump(devices, handle)
    os.remove(os.path.join(pano.profiles, f"{BRANCH}.yaml"))
    code, out = pano.run("enroll")
    assert code == 0, out
    assert len(pano.orders()) == 3
    for firewall in pano.lab.firewalls:  # each made its own key, and uses it
        running = firewall.running_tree()
        name = f"portal-{firewall.hostname}"
        found = entry(running, "shared", name)
        assert found is not None and found.find("private-key") is not None
        assert bound(running, "shared", "GP-Portal-TLS") == name


# --- Panorama's own certificate, and a firewall through Panorama ---------------------------------

@pytest.fixture()
def own(tmp_path: Any, tls_pki: Any, scm_pki: Any) -> Iterator[Workdir]:
    with running_lab(str(tmp_path / "own"), tls_pki, scm_pki, panorama=3,
                     keep=[OWN, REMOTE]) as work:
        yield work


def test_panoramas_own_certificate_is_enrolled_and_renewed_without_a_push(own: Workdir) -> None:
    assert own.run("enroll", OWN)[0] == 0
    panorama = own.lab.panorama.running_tree()
    name = own.state_of(OWN)["object"]
    found = entry(panorama, "panorama", name)
    assert found is not None and found.find("private-key") is not None
    assert bound(panorama, "panorama", PANORAMA_PROFILE) == name
    code, out = own.run("renew", OWN, "--force")
    assert code == 0, out
    renewed = own.state_of(OWN)["object"]
    panorama = own.lab.panorama.running_tree()
    assert renewed != name and len(renewed) <= 31
    assert bound(panorama, "panorama", PANORAMA_PROFILE) == renewed
    assert entry(panorama, "panorama", name) is None
    assert pushes(own) == []
    # The Panorama commit did not exclude device-and-network (acme.sh PR #6915).
    assert own.lab.panorama.store.pending == []


def test_a_firewall_reached_only_through_panorama_is_enrolled_and_renewed(
        own: Workdir) -> None:
    remote = own.lab.firewalls[2]
    direct = len([e for e in own.panos_requests() if e.get("firewall") == remote.hostname and
                  "proxied_to" not in e])
    assert own.run("enroll", REMOTE)[0] == 0
    code, out = own.run("renew", REMOTE, "--force")
    assert code == 0, out
    name = own.state_of(REMOTE)["object"]
    running = remote.running_tree()
    found = entry(running, "shared", name)
    assert found is not None and found.find("private-key") is not None
    assert bound(running, "shared", "GP-Portal-TLS") == name
    assert entry(running, "shared", "remote-portal") is None
    # Everything went to Panorama, forwarded with target=SERIAL; nothing to the firewall.
    sent = [e for e in own.panos_requests() if e.get("proxied_to") == remote.hostname]
    assert sent and all(e.get("firewall") == "lab-panorama" for e in sent)
    assert len([e for e in own.panos_requests() if e.get("firewall") == remote.hostname and
                "proxied_to" not in e]) == direct
    assert pushes(own) == []


# --- one unit: what a template generate may delete -------------------------------------------

class _FakePanorama:
    """Panorama as PanoramaTemplate.generate sees it: answers for the entries in `held`
    (xpath prefix -> XML), and the generate "succeeds" without a CSR in the template
    (§1.5 leaves this open)."""

    label = "Panorama lab-panorama template branch"

    def __init__(self, held: Dict[str, str]) -> None:
        self.held = held
        self.deleted: List[str] = []
        self.ops: List[str] = []

    def get(self, xpath: str) -> Optional[ET.Element]:
        return next((ET.fromstring(xml) for prefix, xml in self.held.items()
                     if xpath.startswith(prefix) and xpath not in self.deleted), None)

    def op(self, cmd: str, write: bool = False) -> ET.Element:
        self.ops.append(cmd)
        return ET.fromstring("<response status='success'/>")

    def delete(self, xpath: str) -> None:
        self.deleted.append(xpath)


def _template_device(fake: _FakePanorama) -> Any:
    from connector.device import PanoramaTemplate
    from connector.settings import DeviceKind, FirewallProfile
    device = PanoramaTemplate(FirewallProfile(
        name="lab-template", path="fw.yaml", url="https://127.0.0.1", admin="certbot",
        kind=DeviceKind.TEMPLATE, panorama="lab-panorama", template=TEMPLATE))
    device.api = fake
    return device


def _branch_profile() -> Any:
    from connector.settings import CertificateProfile, KeySpec, OrderSettings
    return CertificateProfile(name=BRANCH, path="b.yaml", firewall="lab-template",
                              object_name=BRANCH, validation="DV",
                              common_name="branch.example.com", key=KeySpec("RSA", 2048),
                              order=OrderSettings(profile_id=1))


def test_a_template_generate_never_touches_a_panorama_certificate_of_that_name() -> None:
    """Were Panorama to put the template's request in its own store, a generate would
    replace the key of a certificate of that name there: it is not even sent."""
    from connector.device import NothingMade
    fake = _FakePanorama({"/config/panorama/": "<entry name='branch-portal'><public-key>PEM"
                                               "</public-key></entry>"})
    with pytest.raises(NothingMade, match="already a certificate in Panorama's own store"):
        _template_device(fake).generate(BRANCH, _branch_profile(), again=True)
    assert fake.deleted == [] and not any("generate" in op for op in fake.ops)


def test_a_bare_request_an_interrupted_run_left_in_panoramas_store_is_removed() -> None:
    from connector.device import NothingMade
    stray = "<entry name='branch-portal'><csr>REQUEST</csr></entry>"
    fake = _FakePanorama({"/config/panorama/": stray})
    with pytest.raises(NothingMade, match="no request appeared in the template"):
        _template_device(fake).generate(BRANCH, _branch_profile(), again=True)
    assert fake.deleted == ["/config/panorama/certificate/entry[@name='branch-portal']"]
    # Without `again` the same request is someone else's: refused, left alone.
    fake = _FakePanorama({"/config/panorama/": stray})
    with pytest.raises(NothingMade, match="already a certificate"):
        _template_device(fake).generate(BRANCH, _branch_profile())
    assert fake.deleted == []


def _job(result: str, devices: str) -> ET.Element:
    return ET.fromstring(f"<job><status>FIN</status><result>{result}</result><details><line>"
                         f"template validation failed</line></details><devices>{devices}"
                         "</devices></job>")


def _device(serial: str, result: str = "OK") -> str:
    return (f"<entry><serial-no>{serial}</serial-no><devicename>fw-{serial}</devicename>"
            f"<result>{result}</result><status>commit succeeded</status></entry>")


@pytest.mark.parametrize("job,words", [
    (_job("FAIL", _device("1") + _device("2")), "ended FAIL: template validation failed"),
    (_job("OK", _device("1")), "fw-2 (2): not in the push job"),
    (_job("OK", ""), "fw-1 (1): not in the push job"),
], ids=["job-failed", "device-missing", "no-device-listed"])
def test_a_push_is_judged_by_the_job_and_by_every_firewall_of_the_stack(
        job: ET.Element, words: str) -> None:
    """§2.3: success is the job's OK and every firewall's; a firewall of the stack that the
    job does not list was not pushed to."""
    from connector.device import PushFailed, Stack
    from connector.panos import Job
    fake = _FakePanorama({})
    device = _template_device(fake)
    device.stacks = [Stack("stack-a", (("1", "fw-1"), ("2", "fw-2")))]
    fake.commit = lambda cmd, action="": "7"  # type: ignore[attr-defined]
    fake.wait_job = lambda *a, **k: Job(  # type: ignore[attr-defined]
        "7", job.findtext("result") or "", [(e.text or "") for e in job.findall(
            "details/line")], job)
    device._commit_own = lambda: True
    with pytest.raises(PushFailed, match=re.escape(words)):
        device.commit()
