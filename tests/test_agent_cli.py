"""The agent as a process: help, configuration discovery, the EULA, cron-style runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from typing import Any, Dict, Optional

from conftest import AGENT_DIR, in_pty

AGENT = os.path.join(AGENT_DIR, "paloaltoagent.py")


def agent(*args: str, env: Optional[Dict[str, str]] = None,
          stdin: Any = subprocess.DEVNULL) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, AGENT, *args], capture_output=True, text=True,
                          timeout=180, env=env, stdin=stdin)


def test_help_has_examples_and_a_crontab_line() -> None:
    result = agent("--help")
    assert result.returncode == 0
    assert "crontab" in result.stdout and "renew" in result.stdout and "-a renew" in \
        result.stdout
    version = agent("--version")
    assert version.returncode == 0 and version.stdout.startswith("paloaltoagent.py ")


def test_default_config_is_next_to_the_script(tmp_path: Any) -> None:
    env = {k: v for k, v in os.environ.items() if k != "sectigo_pycert_config"}
    result = agent("renew", "--accept-eula", env=env)
    assert result.returncode == 2
    assert os.path.join(AGENT_DIR, "profiles") in result.stderr


def test_env_variable_config_enrolls_every_sample_profile(work: Any) -> None:
    env = dict(os.environ, sectigo_pycert_config=work.config)
    result = agent("enroll", "--accept-eula", env=env)
    assert result.returncode == 0, result.stderr
    assert len(work.orders()) == 3
    assert sorted(o["common_name"] for o in work.orders()) == [
        "intranet.example.com", "portal.example.com", "shop.example.com"]
    log_file = os.path.join(work.root, "logs", "paloaltoagent.log")
    text = open(log_file).read()
    assert "SCM enrollment ordered" in text and "commit job" in text


def test_without_terminal_and_without_acceptance_exit_3_and_nothing_sent(work: Any) -> None:
    result = agent("enroll", "--config", work.config)
    assert result.returncode == 3
    assert "--accept-eula" in result.stderr
    assert work.panos_requests() == [] and work.scm_requests() == []
    assert not os.path.exists(os.path.join(work.state, "eula-accepted.json"))


def test_accept_eula_flag_is_recorded_with_the_version(work: Any) -> None:
    first = agent("enroll", "--config", work.config, "--accept-eula")
    assert first.returncode == 0, first.stderr
    record = json.load(open(os.path.join(work.state, "eula-accepted.json")))
    assert record["version"] == "1.0.1" and record["how"] == "--accept-eula"
    again = agent("renew", "--config", work.config)  # no flag, no terminal: already accepted
    assert again.returncode == 0, again.stderr


def test_interactive_acceptance(work: Any) -> None:
    code, output = in_pty(["enroll", "--config", work.config], b"yes\n")
    assert code == 0, output
    assert "End-User Licence Agreement" in output and "Do you accept" in output
    record = json.load(open(os.path.join(work.state, "eula-accepted.json")))
    assert record["how"] == "interactive"
    assert len(work.orders()) == 3


def test_interactive_refusal_exits_3_and_sends_nothing(work: Any) -> None:
    code, output = in_pty(["enroll", "--config", work.config], b"no\n")
    assert code == 3, output
    assert "not accepted" in output
    assert work.panos_requests() == [] and work.scm_requests() == []
    assert not os.path.exists(os.path.join(work.state, "eula-accepted.json"))


def buffered() -> Dict[str, str]:
    """The environment without PYTHONUNBUFFERED: stdout to a pipe is block-buffered, as under
    cron, so that output still in the buffer when the process ends would be lost."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


def test_demo_runs_offline_and_shows_the_renewal_and_the_panorama_push() -> None:
    started = time.monotonic()
    result = agent("demo", env=buffered())
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 30
    out = result.stdout
    for text in ("portal-dv-rsa2048", "intranet-ov-p384", "shop-ev-rsa4096", "RSA-4096",
                 "ECDSA-P384", "Lab Sectigo", "GP-Portal-TLS", "removed",
                 "SCM orders placed in total: 5 "):
        assert text in out, text
    # The renewal reached the GlobalProtect portal's profile and the inbound inspection rule.
    renewed = re.search(r"new object +(portal-example-com-\d{8})", out)
    assert renewed, out
    for consumer in ("GP-Portal-TLS (portal GP-Portal)", "Inbound-Web (inbound inspection)"):
        line = next(line for line in out.splitlines() if line.strip().startswith(consumer))
        assert line.rstrip().endswith(renewed.group(1)), line
    # The template certificate, on both firewalls, from their stacks, with its key.
    pushed = [line.split() for line in out.splitlines() if "commit succeeded" in line]
    assert sorted((row[0], row[1], row[-2], row[-1]) for row in pushed) == [
        ("lab-fw-01", "stack-a", "branch-portal", "yes"),
        ("lab-fw-02", "stack-b", "branch-portal", "yes")], out
    # Its last line, printed just before the entry point ends the process without teardown.
    assert out.splitlines()[-1].startswith("Demo finished in"), out[-300:]


def test_everything_is_written_out_before_the_process_ends(work: Any) -> None:
    # The entry point skips the interpreter's teardown (cli.exit_without_teardown): the JSON
    # document on a block-buffered stdout and the log file's last lines must still be whole.
    env = dict(buffered(), sectigo_pycert_config=work.config)
    result = agent("enroll", "--accept-eula", "--json", env=env)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert len(document["certificates"]) == 3 and document["exit_code"] == 0
    with open(os.path.join(work.root, "logs", "paloaltoagent.log")) as handle:
        last = handle.read().splitlines()[-1]
    assert "commit job" in last and last.endswith("succeeded")
