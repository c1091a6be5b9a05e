"""`paloaltoagent.py lab --workdir D` as a user runs it: a real process, its JSON line, and
independent clients (pan-python, cert_manager) using nothing but the values in that line."""

from __future__ import annotations

import json
import os
import select
import signal
import ssl
import subprocess
import sys
import time
from typing import Any, Dict, Iterator

import pytest
import requests
from cryptography import x509

from conftest import AGENT_DIR

AGENT = os.path.join(AGENT_DIR, "paloaltoagent.py")


def start_lab(workdir: str, *extra: str) -> "tuple[subprocess.Popen, Dict[str, Any], float]":
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, AGENT, "lab", "--workdir", workdir, *extra],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready, _, _ = select.select([process.stdout], [], [], 30)
    assert ready, "the lab printed nothing within 30 s"
    line = process.stdout.readline()
    elapsed = time.monotonic() - started
    return process, json.loads(line), elapsed


@pytest.fixture()
def lab_process(tmp_path: Any) -> Iterator["tuple[subprocess.Popen, Dict[str, Any], float]"]:
    process, info, elapsed = start_lab(str(tmp_path / "lab"))
    yield process, info, elapsed
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)


def test_lab_prints_one_json_line_with_everything_a_client_needs(lab_process: Any) -> None:
    process, info, elapsed = lab_process
    assert elapsed < 5, f"the JSON line took {elapsed:.1f} s"
    assert set(info) >= {"config", "ca_bundle", "panos", "scm", "logs"}
    assert set(info["panos"]) >= {"url", "api_key", "username", "password", "admin"}
    assert set(info["scm"]) >= {"enrollment_url", "token_url", "client_id", "client_secret",
                                "classic_url", "login", "password", "customer_uri", "org_id",
                                "cert_types"}
    assert set(info["scm"]["cert_types"]) == {"DV", "OV", "EV"}
    assert set(info["logs"]) >= {"panos_requests", "scm_requests", "scm_orders"}
    for path in (info["config"], info["ca_bundle"], *info["logs"].values()):
        assert os.path.exists(path), path
    for url in (info["panos"]["url"], info["scm"]["enrollment_url"], info["scm"]["classic_url"]):
        assert url.startswith("https://127.0.0.1:")


def test_lab_stops_cleanly_on_sigterm(lab_process: Any) -> None:
    process, _, _ = lab_process
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    assert process.stdout.read() == ""  # exactly one line on stdout


def test_pan_python_and_cert_manager_complete_a_certificate_from_the_json_line(
        lab_process: Any, monkeypatch: Any) -> None:
    cert_manager = pytest.importorskip("cert_manager")
    pan_xapi = pytest.importorskip("pan.xapi")
    _, info, _ = lab_process
    panos, scm = info["panos"], info["scm"]
    host, port = panos["url"][len("https://"):].rsplit(":", 1)
    xapi = pan_xapi.PanXapi(hostname=host, port=int(port), api_username=panos["username"],
                            api_password=panos["password"],
                            ssl_context=ssl.create_default_context(cafile=info["ca_bundle"]))
    # 1. pan-python: key pair and CSR on the firewall, then export the CSR.
    xapi.op(cmd="<request><certificate><generate><certificate-name>fidelity</certificate-name>"
                "<name>fidelity.example.com</name><algorithm><RSA><rsa-nbits>2048</rsa-nbits>"
                "</RSA></algorithm><digest>sha256</digest><signed-by>external</signed-by>"
                "<ca>no</ca></generate></certificate></request>")
    xapi.export(category="certificate", extra_qs={"certificate-name": "fidelity",
                                                  "format": "pkcs10"})
    csr_pem = xapi.export_result["content"].decode()
    # 2. cert_manager (classic API): enroll and collect.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", info["ca_bundle"])
    client = cert_manager.Client(base_url=scm["classic_url"], login_uri=scm["customer_uri"],
                                 username=scm["login"], password=scm["password"])
    ssl_api = cert_manager.SSL(client=client)
    dv = next(name for name, t in ssl_api.types.items() if t["id"] == scm["cert_types"]["DV"])
    term = ssl_api.types[dv]["terms"][0]
    enrolled = ssl_api.enroll(cert_type_name=dv, csr=csr_pem, term=term, org_id=scm["org_id"],
                              subject_alt_names=["fidelity.example.com"])
    leaf_pem = ssl_api.collect(enrolled["sslId"], "x509CO")
    leaf = x509.load_pem_x509_certificate(leaf_pem.encode())
    assert leaf.public_key().public_numbers() == \
        x509.load_pem_x509_csr(csr_pem.encode()).public_key().public_numbers()
    # 3. pan-python: import under the same name, partial commit, show the running config.
    xapi.import_file(category="certificate", file=leaf_pem.encode(), filename="f.pem",
                     extra_qs={"certificate-name": "fidelity", "format": "pem"})
    xapi.commit(cmd=f"<commit><partial><admin><member>{panos['admin']}</member></admin>"
                    "</partial></commit>", action="partial", sync=True, interval=0.2,
                timeout=60)
    assert xapi.element_root.findtext("./result/job/result") == "OK"
    xapi.show(xpath="/config/shared/certificate/entry[@name='fidelity']")
    entry = xapi.element_result.find("entry")
    assert x509.load_pem_x509_certificate(entry.findtext("public-key").encode()) == leaf
    assert entry.findtext("private-key").startswith("-AQ==")
    # The lab's logs saw it all, with one billable order.
    orders = [json.loads(line) for line in open(info["logs"]["scm_orders"])]
    assert len(orders) == 1 and orders[0]["common_name"] == "fidelity.example.com"


def test_lab_faults_and_settings_from_the_command_line(tmp_path: Any) -> None:
    process, info, _ = start_lab(str(tmp_path / "lab"), "--set", "panos.commit_busy=1",
                                 "--fault", "scm:kind=status,status=429,retry_after=1,count=1")
    try:
        response = requests.get(info["scm"]["classic_url"] + "/ssl/v1/types",
                                headers={"login": info["scm"]["login"],
                                         "password": info["scm"]["password"],
                                         "customerUri": info["scm"]["customer_uri"]},
                                verify=info["ca_bundle"])
        assert response.status_code == 429 and response.headers["Retry-After"] == "1"
        state = requests.get(info["panos"]["url"] + "/_lab/state", verify=info["ca_bundle"],
                             headers={"X-Lab-Control": info["control_token"]}).json()
        assert state["settings"]["commit_busy"] == 1
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)


def test_lab_rejects_bad_settings(tmp_path: Any) -> None:
    result = subprocess.run([sys.executable, AGENT, "lab", "--workdir", str(tmp_path),
                             "--set", "panos.nonsense=1"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "unknown setting" in result.stderr


def test_lab_panorama_writes_working_profiles_for_its_three_targets(tmp_path: Any) -> None:
    workdir = str(tmp_path / "lab")
    process, info, _ = start_lab(workdir, "--panorama", "2", "--set",
                                 "panorama.device_push_duration=0.1")
    try:
        panorama = info["panorama"]
        assert len(panorama["managed"]) == 2 and len(info["firewalls"]) == 2
        state = requests.get(panorama["url"] + "/_lab/state", verify=info["ca_bundle"],
                             headers={"X-Lab-Control": info["control_token"]}).json()
        assert state["settings"]["device_push_duration"] == 0.1
        written = open(os.path.join(workdir, "profiles", "fw_panorama.yaml")).read()
        assert f'serial: "{panorama["managed"][-1]}"' in written  # as the README asks
        env = dict(os.environ, sectigo_pycert_config=info["config"])
        run = subprocess.run([sys.executable, AGENT, "enroll", "--accept-eula", "--json",
                              "branch-portal", "panorama-ui", "remote-portal"],
                             capture_output=True, text=True, timeout=120, env=env)
        assert run.returncode == 0, run.stderr
        report = json.loads(run.stdout)
        assert [c["result"] for c in report["certificates"]] == ["changed"] * 3
        # The template's certificate went to both managed firewalls.
        template = next(c for c in report["certificates"] if c["profile"] == "branch-portal")
        assert sorted(p["serial"] for p in template["pushes"]) == sorted(panorama["managed"])
        assert all(p["result"] == "OK" for p in template["pushes"])
        status = subprocess.run([sys.executable, AGENT, "status", "branch-portal",
                                 "panorama-ui", "remote-portal"], capture_output=True,
                                text=True, timeout=120, env=env)
        assert status.returncode == 0, status.stdout + status.stderr
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)


def test_lab_ha_pair_writes_profiles_that_work_through_the_active_peer(tmp_path: Any) -> None:
    workdir = str(tmp_path / "lab")
    process, info, _ = start_lab(workdir, "--ha-pair", "--set", "ha.sync_duration=0.1")
    try:
        assert info["ha_pair"] == {"peers": ["lab-fw-01", "lab-fw-02"], "active": "lab-fw-01"}
        env = dict(os.environ, sectigo_pycert_config=info["config"])
        run = subprocess.run([sys.executable, AGENT, "enroll", "--accept-eula",
                              "portal-dv-rsa2048"], capture_output=True, text=True,
                             timeout=120, env=env)
        assert run.returncode == 0, run.stderr
        # A failover, then the passive peer's entry still reaches the pair: nothing to do.
        control = {"X-Lab-Control": info["control_token"]}
        answer = requests.post(info["firewalls"][0]["url"] + "/_lab/action/failover",
                               json={}, headers=control, verify=info["ca_bundle"])
        assert answer.status_code == 200 and "lab-fw-02 is now active" in answer.text
        status = subprocess.run([sys.executable, AGENT, "status", "--json",
                                 "portal-dv-rsa2048"], capture_output=True, text=True,
                                timeout=120, env=env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert json.loads(status.stdout)["certificates"][0]["state"] == "ok"
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)


def test_lab_ha_pair_with_panorama_writes_a_through_panorama_profile_outside_the_pair(
        tmp_path: Any) -> None:
    """The agent does not reach HA pairs through Panorama, so the lab's profile for a
    firewall through Panorama names one outside the pair, and refuses a Panorama with too
    few firewalls for that."""
    refused = subprocess.run([sys.executable, AGENT, "lab", "--ha-pair", "--panorama", "2",
                              "--workdir", str(tmp_path / "small")], capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2 and "--ha-pair with --panorama N needs N of at least 3" \
        in refused.stderr, refused.stderr
    process, info, _ = start_lab(str(tmp_path / "lab"), "--ha-pair", "--panorama", "3")
    try:
        written = open(os.path.join(str(tmp_path / "lab"), "profiles",
                                    "fw_panorama.yaml")).read()
        assert "lab-fw-03-via-panorama" in written, written
        env = dict(os.environ, sectigo_pycert_config=info["config"])
        run = subprocess.run([sys.executable, AGENT, "enroll", "--accept-eula",
                              "remote-portal", "portal-dv-rsa2048"], capture_output=True,
                             text=True, timeout=120, env=env)
        assert run.returncode == 0, run.stderr
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
