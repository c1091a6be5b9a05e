"""The emulated Panorama (`paloaltofw/lab/panorama.py`), driven by pan-python 0.26 unchanged,
as panorama-ha-bindings.md §7 models it: stores and targets, template generation in its three
settings, the 31-character limit, commit scopes, commit-all with a job that reads FIN before its
devices, per-device results, the merged template pushed into each firewall, target=SERIAL.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from typing import Any, Iterator, Optional

import pan.xapi
import pytest

from conftest import running_lab
from lab.lab import AGENT_ADMIN, STACKS, TEMPLATE, TEMPLATE_CERTIFICATE, TEMPLATE_PROFILE
from lab.panorama import PanoramaSettings

BASE = "/config/devices/entry[@name='localhost.localdomain']"
SHARED = f"{BASE}/template/entry[@name='{TEMPLATE}']/config/shared"
SET_TARGET = (f"<set><system><setting><target><template><name>{TEMPLATE}</name></template>"
              "</target></setting></system></set>")
CLEAR = "<set><system><setting><target><none/></target></setting></system></set>"


def generate(name: str) -> str:
    return (f"<request><certificate><generate><certificate-name>{name}</certificate-name>"
            "<name>x.example.com</name><algorithm><RSA><rsa-nbits>2048</rsa-nbits></RSA>"
            "</algorithm><digest>sha256</digest><signed-by>external</signed-by><ca>no</ca>"
            "</generate></certificate></request>")


@pytest.fixture()
def lab(tmp_path: Any, tls_pki: Any, scm_pki: Any) -> Iterator[Any]:
    settings = PanoramaSettings(commit_duration=0.05, push_duration=0.05,
                                device_push_duration=0.3)
    with running_lab(str(tmp_path / "lab"), tls_pki, scm_pki, panorama=3, keep=[],
                     panorama_settings=settings) as work:
        yield work.lab


def xapi(lab: Any, user: str = AGENT_ADMIN, serial: Optional[str] = None) -> pan.xapi.PanXapi:
    host, port = lab.panorama_endpoint.url[len("https://"):].rsplit(":", 1)
    return pan.xapi.PanXapi(hostname=host, port=port, api_username=user,
                            api_password=lab.admin_passwords[user],
                            ssl_context=lab.client_ssl_context(), serial=serial)


def root(api: pan.xapi.PanXapi) -> ET.Element:
    return ET.fromstring(api.xml_document)


def names(tree: ET.Element, store: str) -> list:
    return [e.get("name") for e in tree.findall(f"{store.lstrip('/')[len('config/'):]}"
                                                 "/certificate/entry")]


def test_panorama_says_it_is_one_and_lists_its_stacks(lab: Any) -> None:
    api = xapi(lab)
    api.op("<show><system><info/></system></show>")
    assert root(api).findtext("result/system/model") == "Panorama"
    api.op("<show><template-stack/></show>")
    stacks = root(api).findall("result/template-stack/entry")
    assert [s.get("name") for s in stacks] == list(STACKS)
    assert [d.findtext("hostname") for d in stacks[0].findall("devices/entry")] == \
        ["lab-fw-01", "lab-fw-02"]
    assert {d.findtext("template-status") for s in stacks
            for d in s.findall("devices/entry")} == {"In Sync"}


def test_the_session_target_is_per_administrator_until_reset(lab: Any) -> None:
    certbot, alice = xapi(lab), xapi(lab, "alice")
    certbot.op(SET_TARGET)
    certbot.op(generate("in-template"))
    alice.op(generate("on-panorama"))  # alice has no target: Panorama's own store
    certbot.op(CLEAR)
    certbot.op(generate("after-reset"))
    tree = lab.panorama.candidate_tree()
    assert "in-template" in names(tree, SHARED)
    assert {"on-panorama", "after-reset"} <= set(names(tree, "/config/panorama"))


@pytest.mark.parametrize("mode,store", [("supported", SHARED), ("panorama-store",
                                                                 "/config/panorama")])
def test_template_generation_lands_where_the_setting_says(lab: Any, mode: str,
                                                          store: str) -> None:
    lab.panorama.settings.template_generate = mode
    api = xapi(lab)
    api.op(SET_TARGET)
    api.op(generate("probe"))
    assert "probe" in names(lab.panorama.candidate_tree(), store)


def test_template_generation_can_be_refused(lab: Any) -> None:
    lab.panorama.settings.template_generate = "error"
    api = xapi(lab)
    api.op(SET_TARGET)
    with pytest.raises(pan.xapi.PanXapiError, match="not supported in a template context"):
        api.op(generate("probe"))


def test_certificate_names_on_panorama_stop_at_31_characters(lab: Any) -> None:
    api = xapi(lab)
    api.op(generate("n" * 31))
    with pytest.raises(pan.xapi.PanXapiError, match="at most 31 characters"):
        api.op(generate("n" * 32))


def test_import_with_target_tpl_goes_to_the_template_and_target_tpl_vsys_is_ignored(
        lab: Any, tmp_path: Any) -> None:
    from lab import pki
    ca = lab.scm.hierarchy.roots["RSA"]
    path = tmp_path / "root.pem"
    path.write_text(pki.cert_pem(ca.cert))
    api = xapi(lab)
    api.import_file("certificate", str(path), "root.pem", extra_qs={
        "certificate-name": "tpl-root", "format": "pem", "target-tpl": TEMPLATE,
        "target-tpl-vsys": "vsys1"})
    api.import_file("certificate", str(path), "root.pem", extra_qs={
        "certificate-name": "own-root", "format": "pem"})
    tree = lab.panorama.candidate_tree()
    assert "tpl-root" in names(tree, SHARED)  # in shared, not in vsys1 (PAN-257229)
    assert "own-root" in names(tree, "/config/panorama")


def test_a_template_certificate_in_use_cannot_be_deleted(lab: Any) -> None:
    api = xapi(lab)
    with pytest.raises(pan.xapi.PanXapiError) as raised:
        api.delete(f"{SHARED}/certificate/entry[@name='{TEMPLATE_CERTIFICATE}']")
    assert "cannot be deleted because of references from" in str(raised.value)
    assert f"template -> {TEMPLATE} -> config -> shared -> ssl-tls-service-profile -> " \
           f"{TEMPLATE_PROFILE} -> certificate" in str(raised.value)


def test_a_commit_excluding_device_and_network_leaves_panoramas_own_changes(lab: Any) -> None:
    api = xapi(lab)
    api.op(generate("own-cert"))
    api.commit(cmd=f"<commit><partial><admin><member>{AGENT_ADMIN}</member></admin>"
                   "<device-and-network>excluded</device-and-network></partial></commit>")
    assert "There are no changes to commit" in api.xml_document
    assert "own-cert" not in names(lab.panorama.running_tree(), "/config/panorama")
    api.commit(cmd=f"<commit><partial><admin><member>{AGENT_ADMIN}</member></admin></partial>"
                   "</commit>", sync=True)
    assert "own-cert" in names(lab.panorama.running_tree(), "/config/panorama")


def push_job(api: pan.xapi.PanXapi, stack: str, extra: str = "") -> str:
    api.commit(action="all", cmd=f"<commit-all><template-stack><name>{stack}</name>{extra}"
                                 "</template-stack></commit-all>")
    job = root(api).findtext("result/job")
    assert job and "Push job enqueued" in api.xml_document
    return job


def job_xml(api: pan.xapi.PanXapi, job: str) -> ET.Element:
    api.op(f"<show><jobs><id>{job}</id></jobs></show>")
    found = root(api).find("result/job")
    assert found is not None
    return found


def test_a_push_reads_fin_before_its_devices_finish_then_each_has_the_template(
        lab: Any) -> None:
    api = xapi(lab)
    api.set(f"{SHARED}/ssl-tls-service-profile",
            f"<entry name='New-TLS'><certificate>{TEMPLATE_CERTIFICATE}</certificate></entry>")
    api.commit(cmd=f"<commit><partial><admin><member>{AGENT_ADMIN}</member></admin></partial>"
                   "</commit>", sync=True)
    api.op("<show><template-stack><name>stack-a</name></template-stack></show>")
    assert "Out of Sync" in api.xml_document  # committed on Panorama, not pushed yet
    # pan-python's sync commit returns at FIN: the devices are still pending then.
    api.commit(action="all", sync=True, interval=0.05,
               cmd="<commit-all><template-stack><name>stack-a</name></template-stack>"
                   "</commit-all>")
    job = root(api).find("result/job")
    assert job is not None and job.findtext("type") == "CommitAll"
    assert job.findtext("status") == "FIN"
    assert [d.findtext("result") for d in job.findall("devices/entry")] == ["PEND", "PEND"]
    time.sleep(0.35)
    done = job_xml(api, job.findtext("id") or "")
    devices = done.findall("devices/entry")
    assert [d.findtext("result") for d in devices] == ["OK", "OK"]
    # The success line sits under errors (panorama-ha-bindings.md §2.3).
    assert devices[0].findtext("details/msg/errors/line") == \
        "Configuration committed successfully"
    for firewall in lab.firewalls[:2]:
        node = next(p for p in firewall.running_tree().findall(
            "shared/ssl-tls-service-profile/entry") if p.get("name") == "New-TLS")
        assert (node.get("ptpl"), node.get("src")) == ("stack-a", "tpl")
    assert all(p.get("name") != "New-TLS" for p in lab.firewalls[2].running_tree().findall(
        "shared/ssl-tls-service-profile/entry"))  # stack-b was not pushed


def test_a_push_sends_panoramas_running_configuration_never_a_pending_change(
        lab: Any) -> None:
    alice = xapi(lab, "alice")
    alice.set(f"{SHARED}/ssl-tls-service-profile",
              f"<entry name='Pending-TLS'><certificate>{TEMPLATE_CERTIFICATE}</certificate>"
              "</entry>")
    job = push_job(xapi(lab), "stack-b")
    time.sleep(0.35)
    assert job_xml(xapi(lab), job).findtext("devices/entry/result") == "OK"
    assert all(p.get("name") != "Pending-TLS" for p in lab.firewalls[2].running_tree()
               .findall("shared/ssl-tls-service-profile/entry"))


def test_one_failing_and_one_disconnected_device_are_reported_each(lab: Any) -> None:
    lab.panorama.settings.push_fail = lab.firewalls[0].serial
    lab.panorama.settings.disconnected = lab.firewalls[1].serial
    api = xapi(lab)
    job = push_job(api, "stack-a")
    time.sleep(0.35)
    done = job_xml(api, job)
    entries = {d.findtext("devicename"): d for d in done.findall("devices/entry")}
    assert entries["lab-fw-01"].findtext("result") == "FAIL"
    assert "lab: injected push failure" in ET.tostring(entries["lab-fw-01"], encoding="unicode")
    assert (entries["lab-fw-02"].findtext("result"), entries["lab-fw-02"].findtext("status")) \
        == ("FAIL", "not connected")
    assert done.findtext("result") == "OK"  # by default the job says OK: judge each device
    lab.panorama.settings.push_failure_fails_job = True
    lab.panorama.settings.push_fail = lab.firewalls[0].serial
    job = push_job(api, "stack-a")
    time.sleep(0.35)
    assert job_xml(api, job).findtext("result") == "FAIL"


def test_admin_inside_commit_all_is_refused_as_before_pan_os_10_2(lab: Any) -> None:
    lab.panorama.settings.commit_all_admin = False
    api = xapi(lab)
    with pytest.raises(pan.xapi.PanXapiError, match="admin +unexpected here"):
        push_job(api, "stack-a", f"<admin><member>{AGENT_ADMIN}</member></admin>")


def test_target_serial_reaches_the_managed_firewall_unless_it_is_disconnected(
        lab: Any) -> None:
    remote = lab.firewalls[2]
    api = xapi(lab, serial=remote.serial)
    api.op("<show><system><info/></system></show>")
    assert root(api).findtext("result/system/hostname") == remote.hostname
    api.get("/config/shared/certificate")
    assert "gp-portal-selfsigned" in api.xml_document
    with pytest.raises(pan.xapi.PanXapiError, match="not a device managed"):
        xapi(lab, serial="000000000000000").op("<show><system><info/></system></show>")
    lab.panorama.settings.disconnected = remote.serial
    with pytest.raises(pan.xapi.PanXapiError, match="not connected"):
        api.op("<show><system><info/></system></show>")


def test_a_firewalls_own_object_wins_over_a_pushed_one_of_the_same_name(lab: Any) -> None:
    firewall = lab.firewalls[0]
    for tree in firewall.store.direct():  # the firewall's administrator made it local
        parent = tree.find("shared/ssl-tls-service-profile")
        parent.remove(next(p for p in parent if p.get("name") == TEMPLATE_PROFILE))
    firewall.seed("/config/shared/ssl-tls-service-profile",
                  f"<entry name='{TEMPLATE_PROFILE}'><certificate>gp-portal-selfsigned"
                  "</certificate></entry>")
    job = push_job(xapi(lab), "stack-a")
    time.sleep(0.35)
    assert job_xml(xapi(lab), job).findtext("devices/entry/result") == "OK"
    node = next(p for p in firewall.running_tree().findall(
        "shared/ssl-tls-service-profile/entry") if p.get("name") == TEMPLATE_PROFILE)
    assert node.findtext("certificate") == "gp-portal-selfsigned" and node.get("src") is None
