"""The README's troubleshooting table, row by row: a test produces each message, then does
what the row (and the message) advises, and checks that it works.

`ROWS` names, for every row, the test that does so; rows covered by a test elsewhere point
there. `test_every_row_has_a_test_that_shows_its_message` keeps the table and the tests in
step: a new row without a test, or a test that no longer checks the row's words, fails it.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import shlex
import subprocess
import sys
import threading
from typing import Any, Dict, List

import pytest
import yaml

from conftest import AGENT_DIR, ROOT, edit_yaml
from lab.server import FaultRule

AGENT = os.path.join(AGENT_DIR, "paloaltoagent.py")
FW = "fw_paloalto_config.yaml"

# symptom (the first quoted words of a row) -> the test that drives it and follows its advice
ROWS: Dict[str, str] = {
    "has not been accepted": "test_troubleshooting::test_eula_not_accepted",
    "readable by group or others": "test_troubleshooting::test_readable_by_others",
    "connection through the proxy failed": "test_troubleshooting::test_proxy_failed",
    "TLS verification failed": "test_troubleshooting::test_tls_verification_failed",
    "TLS handshake failed": "test_troubleshooting::test_tls_handshake_failed",
    "is not a PEM CA bundle": "test_troubleshooting::test_ca_bundle_not_pem",
    "authentication failed": "test_troubleshooting::test_authentication_failed",
    "the firewall refuses the api_key":
        "test_agent_faults::test_stale_api_key_is_replaced_by_keygen_once",
    "another paloaltoagent run … is working on": "test_troubleshooting::test_another_run",
    "SCM may have placed the order":
        "test_messages::test_a_lost_order_answer_says_an_order_may_exist_and_what_comes_next",
    "a previous run was interrupted while ordering":
        "test_troubleshooting::test_interrupted_while_ordering",
    "was refused by SCM":
        "test_refusals::test_a_refused_key_type_is_fixed_in_the_profile_and_ordered_once",
    "SCM certificate profile … not found":
        "test_troubleshooting::test_classic_profile_not_offered",
    "still being processed by SCM": "test_troubleshooting::test_still_being_processed",
    "commit job … failed":
        "test_agent_faults::test_commit_fail_then_the_next_run_commits_without_ordering",
    "the push of template … failed on":
        "test_panorama::test_a_push_that_fails_on_one_firewall_fails_the_run_and_is_pushed_"
        "again_next_run",
    "did not make the key and CSR":
        "test_panorama::test_after_a_refused_template_generate_the_advice_given_works",
    "is not synchronized":
        "test_ha::test_not_synchronized_fails_with_the_devices_words_and_the_next_run_orders_"
        "nothing",
    "no peer active": "test_ha::test_with_no_active_peer_nothing_is_changed",
    "has no … which … names":
        "test_bindings::test_a_named_consumer_the_firewall_lacks_stops_before_anything_is_made",
    "keeping old …, still used by": "test_troubleshooting::test_keeping_old_still_used_by",
    "not shorter than this certificate's lifetime":
        "test_troubleshooting::test_window_longer_than_the_lifetime",
    "wrong or missing passphrase":
        "test_secrets::test_a_run_leaves_no_gpg_agent_and_checks_the_passphrase_every_time",
    "interrupted by SIGTERM": "test_signals::test_a_signal_while_waiting_for_the_commits",
}


def readme_rows() -> List[List[str]]:
    with open(os.path.join(ROOT, "README.md")) as handle:
        text = handle.read()
    table = text.split("## Troubleshooting")[1].split("\n## ")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and
            not line.startswith("| symptom") and not line.startswith("| ---")]
    return [re.findall(r'"([^"]+)"', row.split(" | ")[0]) for row in rows]


def test_every_row_has_a_test_that_shows_its_message() -> None:
    rows = readme_rows()
    assert len(rows) == len(ROWS), "a README row has no test in ROWS, or ROWS a stale one"
    for phrases in rows:
        assert phrases and phrases[0] in ROWS, phrases
        module_name, test_name = ROWS[phrases[0]].split("::")
        source = inspect.getsource(getattr(importlib.import_module(module_name), test_name))
        for phrase in phrases:  # the test checks every quoted message of its row
            for part in (p.strip(" ,") for p in phrase.split("…")):
                assert part in source, (test_name, part)


def agent(*args: str, env: Any = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "sectigo_pycert_config"}
    return subprocess.run([sys.executable, AGENT, *args], capture_output=True, text=True,
                          timeout=180, env=env or clean, stdin=subprocess.DEVNULL)


@pytest.fixture()
def site(work: Any) -> Any:
    work.remove_sample_profiles()
    work.profile("site")
    return work


def test_eula_not_accepted(site: Any) -> None:
    result = agent("enroll", "--config", site.config)
    assert result.returncode == 3 and "has not been accepted" in result.stderr
    assert "--accept-eula" in result.stderr
    result = agent("enroll", "--config", site.config, "--accept-eula")
    assert result.returncode == 0, result.stderr
    assert len(site.orders()) == 1


def test_readable_by_others(site: Any, capsys: Any) -> None:
    os.chmod(os.path.join(site.profiles, FW), 0o644)
    code, _ = site.run("enroll")
    err = capsys.readouterr().err
    assert code == 2 and "readable by group or others" in err
    command = re.search(r"run: (chmod 600 '[^']+')", err)
    assert command, err
    subprocess.run(shlex.split(command.group(1)), check=True)
    assert site.run("enroll")[0] == 0


def test_proxy_failed(site: Any, monkeypatch: Any) -> None:
    import socket
    for name in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy",
                 "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{port}")
    code, out = site.run("enroll")
    assert code == 1 and "connection through the proxy failed" in out, out
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{port}:99999")  # unusable
    code, out = site.run("enroll")
    assert code == 1 and "request not sent" in out, out
    assert site.panos_requests() == [] and site.orders() == []
    # The row's advice: name the firewall (and here SCM, on the same host) in no_proxy.
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    code, out = site.run("enroll")
    assert code == 0, out
    assert len(site.orders()) == 1


def test_tls_verification_failed(site: Any) -> None:
    fw = os.path.join(site.profiles, FW)
    edit_yaml(fw, "lab-fw-01", ca_bundle=None)  # the system's trust: not the lab's CA
    code, out = site.run("enroll")
    assert code == 1 and "TLS verification failed" in out, out
    # The README's command, with the firewall's address for fw:443.
    readme = open(os.path.join(ROOT, "README.md")).read()
    command = re.search(r"`(openssl s_client -connect fw:443 .*?-sha256)`", readme).group(1)
    address = site.lab.panos_endpoint.url.split("//")[1]
    result = subprocess.run(command.replace("fw:443", address).replace("\\|", "|"),
                            shell=True, capture_output=True, text=True, timeout=30)
    fingerprint = result.stdout.strip().split("=")[-1]
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", fingerprint), result.stdout
    edit_yaml(fw, "lab-fw-01", fingerprint=fingerprint)
    code, out = site.run("enroll")
    assert code == 0, out


def test_tls_handshake_failed(site: Any) -> None:
    # The usual cause: the profile's url names a port that answers in plain HTTP.
    import http.server
    plain = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    fw = os.path.join(site.profiles, FW)
    https_url = site.lab.panos_endpoint.url
    try:
        edit_yaml(fw, "lab-fw-01", url=f"https://127.0.0.1:{plain.server_address[1]}")
        code, out = site.run("enroll")
    finally:
        plain.shutdown()
        plain.server_close()
    assert code == 1 and "TLS handshake failed" in out and "ca_bundle" not in out, out
    assert "HTTPS port" in out
    assert site.panos_requests() == [] and site.orders() == []
    # The advice: the firewall's HTTPS port in url. Nothing else changes.
    edit_yaml(fw, "lab-fw-01", url=https_url)
    code, out = site.run("enroll")
    assert code == 0, out
    assert len(site.orders()) == 1


def test_ca_bundle_not_pem(site: Any, capsys: Any, tmp_path: Any) -> None:
    der = tmp_path / "fw-ca.crt"
    subprocess.run(["openssl", "x509", "-in", site.lab.paths["ca_bundle"], "-outform", "der",
                    "-out", str(der)], check=True)
    fw = os.path.join(site.profiles, FW)
    edit_yaml(fw, "lab-fw-01", ca_bundle=str(der))
    assert site.run("enroll")[0] == 2
    err = capsys.readouterr().err
    assert "is not a PEM CA bundle" in err
    advice = re.search(r"(openssl x509 -inform der -in FILE -out FILE\.pem)", err).group(1)
    pem = f"{der}.pem"
    subprocess.run(shlex.split(advice.replace("FILE.pem", pem).replace("FILE", str(der))),
                   check=True)
    edit_yaml(fw, "lab-fw-01", ca_bundle=pem)
    assert site.run("enroll")[0] == 0


def test_authentication_failed(site: Any) -> None:
    fw = os.path.join(site.profiles, FW)
    with open(fw) as handle:
        right = yaml.safe_load(handle)["lab-fw-01"]
    edit_yaml(fw, "lab-fw-01", api_key="LUFRPT-not-a-key", username=None, password=None,
              admin="certbot")
    code, out = site.run("enroll")
    assert code == 1 and "authentication failed" in out and "check api_key" in out, out
    edit_yaml(fw, "lab-fw-01", api_key=None, username="certbot", password="wrong")
    code, out = site.run("enroll")
    assert code == 1 and "keygen refused" in out, out
    edit_yaml(fw, "lab-fw-01", password=right["password"])
    assert site.run("enroll")[0] == 0
    assert len(site.orders()) == 1


def test_another_run(site: Any) -> None:
    from connector.state import StateStore
    holding, release = threading.Event(), threading.Event()

    store = StateStore(site.state)
    store.ensure_writable()

    def other_run() -> None:
        with store.lock():
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=other_run)
    thread.start()
    holding.wait(10)
    try:
        result = agent("renew", "--config", site.config, "--accept-eula")
    finally:
        release.set()
        thread.join()
    assert result.returncode == 1 and "another paloaltoagent run" in result.stderr
    assert "is working on" in result.stderr and "without doing anything" in result.stderr
    assert site.panos_requests() == []
    # When the other run is done, the next run works normally.
    assert site.run("renew")[0] == 0 and len(site.orders()) == 1


@pytest.mark.parametrize("kind", ["lose", "drop"])
def test_interrupted_while_ordering(site: Any, kind: str) -> None:
    # Without classic credentials the agent cannot look; the administrator does. With
    # "lose" SCM placed the order and its answer was lost; with "drop" it never saw it.
    site.without_lookup()
    site.lab.scm_endpoint.faults.add(FaultRule(kind=kind, match="POST /api/v1/certificates",
                                               skip=1))
    assert site.run("enroll")[0] == 1
    code, out = site.run("renew")
    assert code == 1 and "a previous run was interrupted while ordering" in out, out
    found = [o for o in site.lab.scm.control("orders", {})
             if o["common_name"] == "site.example.com"]  # what "look in SCM" finds
    assert bool(found) == (kind == "lose")
    if found:
        assert "--adopt ID" in out
        code, out = site.run("renew", "site", "--adopt", str(found[0]["id"]))
    else:
        assert "--force" in out
        code, out = site.run("renew", "site", "--force")
    assert code == 0, out
    assert len(site.orders()) == 1
    assert site.state_of("site")["pending"] is None


def test_adopting_an_order_that_is_not_ours_is_refused(site: Any) -> None:
    site.without_lookup()
    site.profile("other")
    assert site.run("enroll", "other")[0] == 0
    theirs = site.state_of("other")["cert_id"]
    site.lab.scm_endpoint.faults.add(FaultRule(kind="lose", match="POST /api/v1/certificates"))
    assert site.run("enroll", "site")[0] == 1
    code, out = site.run("renew", "site", "--adopt", theirs)
    assert code == 1 and "does not carry the key" in out, out
    assert site.state_of("site")["rejected"] and site.state_of("site")["pending"] is None


def test_classic_profile_not_offered(classic_work: Any) -> None:
    work = classic_work
    work.remove_sample_profiles()
    path = work.profile("site", scm={"profile_id": 4242, "term": 90})
    code, out = work.run("enroll")
    assert code == 1 and "SCM certificate profile 4242 not found" in out, out
    assert "scm.profile_id" in out and work.orders() == []
    assert not [e for e in work.panos_requests() if "generate" in e["summary"]]
    edit_yaml(path, validation="EV", scm={"profile_id": work.lab.accounts.profile_for("DV").id,
                                          "term": 90})
    code, out = work.run("enroll")
    assert code == 1 and "is DV, but validation is EV" in out, out
    edit_yaml(path, validation="DV")
    assert work.run("enroll")[0] == 0 and len(work.orders()) == 1


def test_still_being_processed(site: Any) -> None:
    site.lab.scm.settings.pending_polls = 2
    site.edit_config("scm", poll_timeout=0)
    code, report = site.run_json("enroll")
    assert code == 0 and "still being processed by SCM" in report["certificates"][0]["message"]
    assert site.run("enroll")[0] == 0  # one more "pending" answer
    code, out = site.run("enroll")
    assert code == 0 and site.state_of("site")["pending"] is None, out
    assert len(site.orders()) == 1


def test_keeping_old_still_used_by(site: Any, capsys: Any) -> None:
    assert site.run("enroll")[0] == 0
    site.lab.panos.seed("/config/shared/certificate-profile",
                        "<entry name='Clients'><CA><entry name='site'/></CA></entry>")
    capsys.readouterr()
    assert site.run("renew", "--force")[0] == 0
    err = capsys.readouterr().err
    assert "keeping old site, still used by certificate-profile Clients" in err, err
    # Repoint it by hand (here: the profile no longer names it); the next run deletes it.
    for tree in site.lab.panos.store.direct():
        parent = tree.find("shared/certificate-profile")
        parent.remove(parent.find("entry"))
    assert site.run("renew")[0] == 0
    assert site.state_of("site")["superseded"] == []
    assert "keeping old" not in capsys.readouterr().err


def test_window_longer_than_the_lifetime(site: Any, capsys: Any) -> None:
    path = site.profile("site", scm={"profile_id": site.lab.accounts.profile_for("DV").id},
                        renew_before_days=400)
    assert site.run("enroll")[0] == 0
    capsys.readouterr()
    assert site.run("renew")[0] == 0
    assert "not shorter than this certificate's lifetime" in capsys.readouterr().err
    edit_yaml(path, renew_before_days=None, renew_before="33%")
    assert site.run("renew")[0] == 0
    assert "WARNING" not in capsys.readouterr().err
    assert len(site.orders()) == 1
