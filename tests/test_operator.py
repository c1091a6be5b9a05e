"""Operator experience: status, dry runs, JSON reports, metrics, alerts, terminal vs cron."""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from typing import Any, Dict, Iterator, List

import jsonschema
import pytest
import yaml

from conftest import AGENT_DIR, Webhook, edit_yaml, in_pty
from connector.report import SCHEMA_FILE
from lab.lab import SEED_PROFILE
from lab.server import Endpoint, server_ssl_context

AGENT = os.path.join(AGENT_DIR, "paloaltoagent.py")
SCHEMA = json.load(open(SCHEMA_FILE))
PORTAL = "portal-dv-rsa2048"


def valid(document: Dict[str, Any]) -> Dict[str, Any]:
    jsonschema.validate(document, SCHEMA, format_checker=jsonschema.FormatChecker())
    return document


# --- status ---------------------------------------------------------------------------------

def test_status_reads_each_firewall_once_orders_nothing_and_reports_every_certificate(
        work: Any) -> None:
    assert work.run("enroll")[0] == 0
    before = (len(work.panos_requests()), len(work.scm_requests()), len(work.orders()))
    code, report = work.run_json("status")
    assert code == 0
    valid(report)
    new = work.panos_requests()[before[0]:]
    assert [e.get("type") for e in new if e.get("type") != "keygen"] == ["config"]
    assert not any(e["write"] for e in new)
    assert len(work.scm_requests()) == before[1] and len(work.orders()) == before[2]
    rows = {c["profile"]: c for c in report["certificates"]}
    assert set(rows) == {PORTAL, "intranet-ov-p384", "shop-ev-rsa4096"}
    shop = rows["shop-ev-rsa4096"]
    assert shop["state"] == "ok" and shop["key"] == "RSA-4096" and shop["scm_id"]
    assert shop["issuer"] == "Lab Sectigo RSA Extended Validation Secure Server CA"
    assert 190 <= shop["days_left"] <= 200 and shop["object"] == "shop-example-com"
    # status only looks: it did nothing, and has nothing to say of a good certificate.
    assert {(c["action"], c["message"], c["result"]) for c in report["certificates"]} == \
        {("none", None, "ok")}


def test_status_exit_1_and_the_reason_when_something_needs_attention(work: Any) -> None:
    assert work.run("enroll")[0] == 0
    work.lab.panos.set_certificate_status("shop-example-com", "revoked")
    work.profile("not-yet")
    code, out = work.run("status")
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split() == ["PROFILE", "FIREWALL", "OBJECT", "COMMON", "NAME", "KEY",
                                "ISSUER", "NOT", "AFTER", "DAYS", "STATE", "SCM", "ID"]
    states = {line.split()[0]: line.split()[-2] for line in lines[1:] if line.strip()
              and len(line.split()) > 8}
    assert states["shop-ev-rsa4096"] == "revoked" and states["not-yet"] == "missing"
    assert states[PORTAL] == "ok"
    assert work.orders() and len(work.orders()) == 3  # status ordered nothing
    # What is due or missing, status only reports: it did nothing for any certificate.
    code, report = work.run_json("status")
    assert code == 1
    valid(report)
    assert {c["action"] for c in report["certificates"]} == {"none"}


def test_status_shows_pending_orders_and_unreachable_firewalls(work: Any) -> None:
    work.lab.scm.settings.pending_polls = 5
    work.edit_config("scm", poll_timeout=0)
    assert work.run("enroll")[0] == 0
    code, report = work.run_json("status")
    assert code == 1 and {c["state"] for c in valid(report)["certificates"]} == {"pending"}
    assert report["summary"]["pending"] == 3 and report["summary"]["ok"] == 0
    assert report["summary"]["attention"] == 3
    edit_yaml(os.path.join(work.profiles, "fw_paloalto_config.yaml"), "lab-fw-01",
              url="https://127.0.0.1:9")
    code, report = work.run_json("status")
    assert code == 1 and {c["state"] for c in valid(report)["certificates"]} == {"error"}
    assert "connection failed" in report["certificates"][0]["error"]


def test_status_with_an_unreadable_state_file_says_error(work: Any) -> None:
    assert work.run("enroll")[0] == 0
    with open(os.path.join(work.state, f"{PORTAL}.json"), "w") as handle:
        handle.write("{not json")
    code, report = work.run_json("status")
    row = next(c for c in valid(report)["certificates"] if c["profile"] == PORTAL)
    assert code == 1 and row["state"] == "error" and "unreadable" in row["error"]
    code, out = work.run("status")
    assert f"{PORTAL}: " in out and "unreadable" in out


def test_json_document_also_when_nothing_could_run(work: Any) -> None:
    with open(work.config, "a") as handle:
        handle.write("bogus_field: 1\n")
    code, report = work.run_json("renew")
    assert code == 2 and valid(report)["certificates"] == []
    assert "bogus_field" in report["error"] and report["exit_code"] == 2


def test_enroll_says_why_it_leaves_a_revoked_certificate(work: Any) -> None:
    assert work.run("enroll")[0] == 0
    work.lab.panos.set_certificate_status("shop-example-com", "revoked")
    code, report = work.run_json("enroll")
    row = next(c for c in report["certificates"] if c["profile"] == "shop-ev-rsa4096")
    assert code == 0 and row["state"] == "revoked" and row["action"] == "none"
    assert "renew replaces it" in row["message"] and report["summary"]["attention"] == 1


# --- dry runs ---------------------------------------------------------------------------------

def writes(entries: List[Dict[str, Any]]) -> List[str]:
    return [e["summary"] for e in entries if e["write"]]


def check_plan_covers_real_run(work: Any, *args: str) -> None:
    """Dry run, then the real run: the plan named every write the real run made."""
    before = (len(work.panos_requests()), len(work.scm_requests()), len(work.orders()))
    code, plan = work.run_json(*args, "--dry-run")
    assert code == 0, plan
    valid(plan)
    assert plan["dry_run"] is True and plan["summary"]["orders"] == 0
    dry = work.panos_requests()[before[0]:]
    assert writes(dry) == [], "a dry run wrote to the firewall"
    assert work.scm_requests()[before[1]:] == [] and len(work.orders()) == before[2]
    steps = {c["profile"]: " | ".join(c["plan"]) for c in plan["certificates"]}
    mark = len(work.panos_requests())
    code, report = work.run_json(*args)
    assert code == 0, report
    real = work.panos_requests()[mark:]
    planned_commits = sum(s.count("commit lab-fw-01") for s in steps.values())
    everything = " | ".join(steps.values())
    for summary in writes(real):
        name = re.search(r"(?:certificate-name=|entry\[@name=')([^' ]+)", summary)
        if "type=commit" in summary:
            continue
        if "generate" in summary:
            generated = next(c["object"] for c in report["certificates"]
                             if c["action"] in ("enroll", "renew") and c["result"] == "changed"
                             and f"as {c['object']}" in steps[c["profile"]])
            assert f"CSR on lab-fw-01 as {generated}" in everything
        elif "type=import" in summary:
            target = name.group(1)
            assert f"into {target}" in everything or "CA certificates" in everything, summary
        elif "ssl-tls-service-profile" in summary:
            assert f"service profile {name.group(1)} at" in everything or \
                f"service profile {name.group(1)} for" in everything, summary
        elif "action=delete" in summary:
            assert f"delete {name.group(1)}" in everything, summary
        else:
            raise AssertionError(f"unexpected write {summary}")
    commits = [e for e in real if e.get("type") == "commit" and e.get("code") == "19"]
    # Commits are per firewall: every planned commit (one per certificate line) is one job.
    assert len(commits) == len({s for s in everything.split(" | ") if s.startswith("commit")})
    assert planned_commits >= len(commits)


def test_dry_run_first_enrollment_plans_every_action(work: Any) -> None:
    check_plan_covers_real_run(work, "enroll")


def test_dry_run_renewal_of_a_bound_certificate_plans_repoint_delete_and_one_commit(
        work: Any) -> None:
    assert work.run("enroll")[0] == 0
    work.lab.panos.set_certificate_status("portal-example-com", "revoked")
    code, plan = work.run_json("renew", "--dry-run")
    steps = next(c["plan"] for c in plan["certificates"] if c["profile"] == PORTAL)
    new = next(c["object"] for c in plan["certificates"] if c["profile"] == PORTAL)
    assert new.startswith("portal-example-com-")
    assert steps[0].startswith(f"generate RSA-2048 key and CSR on lab-fw-01 as {new} (revoked")
    assert steps[1].startswith("renew SCM certificate ")
    # The old object goes in the same commit as the new certificate and its binding.
    assert steps[-3:] == [f"point SSL/TLS service profile {SEED_PROFILE} at {new}",
                          "delete portal-example-com",
                          "commit lab-fw-01 (partial, admin certbot)"]
    check_plan_covers_real_run(work, "renew")
    assert work.state_of(PORTAL)["object"] == new


def test_dry_run_of_an_interrupted_order_says_what_the_real_run_will_do(work: Any) -> None:
    from lab.server import FaultRule
    work.remove_sample_profiles()
    work.profile("site")
    work.lab.scm_endpoint.faults.add(FaultRule(kind="lose", skip=1,
                                               match="POST /api/v1/certificates"))
    assert work.run("enroll")[0] == 1  # the order's answer is lost
    code, plan = work.run_json("renew", "--dry-run")
    steps = plan["certificates"][0]["plan"]
    assert code == 0 and steps[0].startswith("search SCM's orders for site.example.com")
    with open(work.config) as handle:
        data = yaml.safe_load(handle)
    data["scm"].pop("lookup_label")
    with open(work.config, "w") as handle:
        yaml.safe_dump(data, handle)
    code, plan = work.run_json("renew", "--dry-run")
    error = plan["certificates"][0]["error"]
    assert code == 1 and "a previous run was interrupted while ordering" in error
    assert "--adopt ID" in error and "--force" in error
    code, plan = work.run_json("renew", "--dry-run", "--force")
    assert plan["certificates"][0]["plan"][0].startswith("order again at SCM")
    assert len(work.orders()) == 1  # dry runs ordered nothing


def test_dry_run_text_on_a_terminal_free_output(work: Any) -> None:
    code, out = work.run("enroll", "--dry-run")
    assert code == 0
    assert out.startswith("Dry run: nothing was changed and nothing was ordered.")
    assert f"{PORTAL} on lab-fw-01 (missing):" in out
    assert work.orders() == [] and writes(work.panos_requests()) == []


# --- JSON, metrics ------------------------------------------------------------------------------

def test_json_reports_validate_for_every_command(work: Any) -> None:
    work.edit_config("", metrics={"file": "metrics/paloaltoagent.prom"})
    for args in (("enroll", "--dry-run"), ("enroll",), ("renew",), ("renew", "--force"),
                 ("status",)):
        code, report = work.run_json(*args)
        assert code == 0, (args, report)
        valid(report)
        assert report["command"] == args[0]
    assert report["summary"]["certificates"] == 3


def test_metrics_file_is_prometheus_text(work: Any) -> None:
    from prometheus_client.parser import text_string_to_metric_families
    work.edit_config("", metrics={"file": "metrics/paloaltoagent.prom"})
    assert work.run("enroll")[0] == 0
    text = open(os.path.join(work.root, "metrics", "paloaltoagent.prom")).read()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    not_after = families["paloaltoagent_certificate_not_after_timestamp_seconds"].samples
    assert {s.labels["profile"] for s in not_after} == {PORTAL, "intranet-ov-p384",
                                                       "shop-ev-rsa4096"}
    assert all(s.value > time.time() + 80 * 86400 for s in not_after)
    states = [s for s in families["paloaltoagent_certificate_state"].samples if s.value == 1]
    assert {s.labels["state"] for s in states} == {"ok"}  # after the run: all installed
    code, _ = work.run("status")
    assert code == 0 and open(os.path.join(work.root, "metrics", "paloaltoagent.prom")
                              ).read() == text  # status does not touch the run's metrics
    assert families["paloaltoagent_run_success"].samples[0].value == 1
    assert families["paloaltoagent_run_orders"].samples[0].value == 3
    assert families["paloaltoagent_run_commits"].samples[0].value == 1
    assert families["paloaltoagent_run_duration_seconds"].samples[0].value > 0


# --- alerts -------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def smtp_server(tls_files: Dict[str, str]) -> Iterator[Dict[str, Any]]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    received: List[bytes] = []
    password = "smtp-" + os.urandom(6).hex()

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope.content)
            return "250 OK"

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                     data: Any) -> Any:
        return AuthResult(success=isinstance(data, LoginPassword) and data.login == b"alerts"
                          and data.password == password.encode())

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files["cert"], tls_files["key"])
    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=context,
                            require_starttls=True, authenticator=authenticate,
                            auth_require_tls=True)
    controller.start()
    yield {"port": port, "password": password, "received": received}
    controller.stop()


def test_alerts_by_email_and_webhook_on_failure_without_secrets(work: Any, smtp_server: Any,
                                                                tls_files: Dict[str, str]) -> None:
    hook = Webhook()
    endpoint = Endpoint(hook, server_ssl_context(tls_files["cert"], tls_files["key"])).start()
    token = "T0K3N" + os.urandom(6).hex()
    path = os.path.join(work.profiles, "notifications.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump({"expiry_warning_days": 14,
                        "email": {"host": "127.0.0.1", "port": smtp_server["port"],
                                  "username": "alerts", "password": smtp_server["password"],
                                  "from": "paloaltoagent@example.com",
                                  "to": ["pki@example.com"],
                                  "ca_bundle": tls_files["ca_bundle"]},
                        "webhook": {"url": f"{endpoint.url}/services/{token}",
                                    "ca_bundle": tls_files["ca_bundle"]}}, handle)
    os.chmod(path, 0o600)
    try:
        assert work.run("enroll")[0] == 0
        assert smtp_server["received"] == [] and hook.received == []  # nothing to report
        work.lab.scm.settings.validated_domains = ["example.org"]  # SCM now refuses orders
        code, _ = work.run("renew", "--force")
        assert code == 1
    finally:
        endpoint.stop()
    assert len(smtp_server["received"]) == 1 and len(hook.received) == 1
    mail = smtp_server["received"][0].decode()
    assert "need attention" in mail and "FAILED portal-dv-rsa2048" in mail and "-737" in mail
    assert "FAILED" in hook.received[0]["text"] and len(hook.received[0]["lines"]) == 3
    secrets = [smtp_server["password"], token, work.lab.accounts.client_secret,
               work.lab.admin_passwords["certbot"], work.lab.panos_api_key()]
    for value in secrets:
        assert value not in mail and value not in json.dumps(hook.received)


def test_alert_for_certificates_near_expiry_that_were_not_renewed(work: Any,
                                                                  smtp_server: Any,
                                                                  tls_files: Any) -> None:
    path = os.path.join(work.profiles, "notifications.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump({"expiry_warning_days": 100,
                        "email": {"host": "127.0.0.1", "port": smtp_server["port"],
                                  "username": "alerts", "password": smtp_server["password"],
                                  "from": "a@example.com", "to": ["b@example.com"],
                                  "ca_bundle": tls_files["ca_bundle"]}}, handle)
    os.chmod(path, 0o600)
    assert work.run("enroll")[0] == 0
    assert smtp_server["received"] == []  # just renewed: no warning
    assert work.run("renew")[0] == 0  # nothing due (90 days left, window 30)
    mail = smtp_server["received"][0].decode()
    assert "EXPIRES in 8" in mail and PORTAL in mail and "shop-ev-rsa4096" not in mail


def test_notification_secrets_are_encrypted_like_the_others(work: Any) -> None:
    import shutil
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed")
    path = os.path.join(work.profiles, "notifications.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump({"webhook": {"url": "https://hooks.example.com/services/SECRET"}},
                       handle)
    os.chmod(path, 0o600)
    passphrase = os.path.join(work.root, "pass")
    with open(passphrase, "w") as handle:
        handle.write("a passphrase\n")
    os.chmod(passphrase, 0o600)
    home = os.path.join("/tmp", "gpg-" + os.urandom(4).hex())
    work.edit_config("encryption", mode="symmetric", gpg_home=home, passphrase_file=passphrase)
    try:
        assert work.run("encrypt", accept_eula=False)[0] == 0
        text = open(path).read()
        assert "SECRET" not in text and "BEGIN PGP MESSAGE" in text
        from connector.config import load_config
        from connector.secrets import decryptor
        config = load_config(work.config, make_decryptor=decryptor)
        assert config.notifications.webhook.url.reveal().endswith("/services/SECRET")
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


# --- terminal and cron --------------------------------------------------------------------------

def test_without_a_terminal_a_good_run_prints_nothing(work: Any) -> None:
    result = subprocess.run([sys.executable, AGENT, "enroll", "--accept-eula", "--config",
                             work.config], capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0
    assert result.stdout == "" and result.stderr == ""
    assert len(work.orders()) == 3


def test_without_a_terminal_a_failure_is_printed(work: Any) -> None:
    work.lab.scm.settings.validated_domains = ["example.org"]
    result = subprocess.run([sys.executable, AGENT, "enroll", "--accept-eula", "--config",
                             work.config], capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert "FAILED portal-dv-rsa2048" in result.stderr and "portal-dv-rsa2048" in result.stdout


def test_on_a_terminal_a_progress_line_per_certificate_with_timings(work: Any) -> None:
    code, text = in_pty(["enroll", "--accept-eula", "--config", work.config], None)
    assert code == 0, text
    progress = re.findall(r"\[(\d)/3\] (\S+) on lab-fw-01: enrolled as \S+ \((\d+\.\d) s\)",
                          text)
    assert sorted(p[1] for p in progress) == sorted([PORTAL, "intranet-ov-p384",
                                                     "shop-ev-rsa4096"])
    assert "PROFILE" in text and "SCM ID" in text  # the table at the end


def test_scheduling_examples_are_shipped() -> None:
    root = os.path.dirname(AGENT_DIR)
    timer = open(os.path.join(root, "contrib", "paloaltoagent.timer")).read()
    service = open(os.path.join(root, "contrib", "paloaltoagent.service")).read()
    cron = open(os.path.join(root, "contrib", "paloaltoagent.cron")).read()
    assert "RandomizedDelaySec=" in timer and "OnCalendar=" in timer
    assert "paloaltoagent.py renew" in service and "Type=oneshot" in service
    assert re.search(r"^\d+ \d+ \* \* \* .*paloaltoagent\.py renew", cron, re.M)
