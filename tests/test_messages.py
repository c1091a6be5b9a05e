"""What the agent says (issue 11, item 8): messages that tell the truth and say what happens
next, a terminal kept to progress, warnings and the table, texts that match the code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import pytest


from conftest import AGENT_DIR, ROOT, in_pty
from lab.server import FaultRule

AGENT = os.path.join(AGENT_DIR, "paloaltoagent.py")


def test_a_401_on_an_order_with_a_working_token_does_not_blame_the_token_url(
        work: Any, capsys: Any) -> None:
    work.remove_sample_profiles()
    work.profile("first")
    work.profile("second")
    # The first order goes through (after the 401 that tells where tokens come from, the
    # token works); SCM answers both attempts of the second with 401.
    work.lab.scm_endpoint.faults.add(FaultRule(kind="status", status=401, skip=2, count=2,
                                               match="POST /api/v1/certificates"))
    code, out = work.run("enroll")
    assert code == 1
    message = next(line for line in out.splitlines() if line.startswith("second:"))
    assert "token_url" not in message, message
    assert "just issued a token" in message and "Nothing was done" in message, message
    assert work.state_of("second")["pending"]["stage"] == "generated"
    assert work.run("enroll")[0] == 0
    assert len(work.orders()) == 2


def test_a_401_that_names_no_token_endpoint_says_exactly_that(work: Any) -> None:
    work.remove_sample_profiles()
    work.profile("site")
    work.lab.scm_endpoint.faults.add(FaultRule(kind="status", status=401, count=1,
                                               match="POST /api/v1/certificates"))
    code, out = work.run("enroll")
    assert code == 1 and "without naming its token endpoint" in out, out
    assert "nothing was done" in out
    assert work.state_of("site")["pending"]["stage"] == "generated"
    assert work.run("enroll")[0] == 0 and len(work.orders()) == 1


@pytest.mark.parametrize("lookup", [True, False])
def test_a_lost_order_answer_says_an_order_may_exist_and_what_comes_next(work: Any,
                                                                        lookup: bool) -> None:
    if not lookup:
        work.without_lookup()
    work.remove_sample_profiles()
    work.profile("site")
    # skip=1: the first POST is answered 401 (no token yet); the order itself is placed and
    # its answer lost.
    work.lab.scm_endpoint.faults.add(FaultRule(kind="lose", match="POST /api/v1/certificates",
                                               skip=1))
    code, out = work.run("enroll")
    assert code == 1 and "SCM may have placed the order" in out, out
    assert len(work.orders()) == 1
    if lookup:
        assert "searches SCM's orders" in out
        code, out = work.run("enroll")
    else:
        assert "renew site --adopt ID" in out and "renew site --force" in out, out
        # Look in SCM as the message says; there is one, so adopt it.
        found = [o["id"] for o in work.lab.scm.control("orders", {})]
        code, out = work.run("renew", "site", "--adopt", str(found[0]))
    # Either way it does what it said: one order in all.
    assert code == 0, out
    assert len(work.orders()) == 1 and work.state_of("site")["pending"] is None


def test_on_a_terminal_only_progress_warnings_and_the_table(work: Any) -> None:
    code, output = in_pty(["enroll", "--config", work.config, "--accept-eula"], None)
    assert code == 0, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert not [line for line in lines if " INFO " in line or " DEBUG " in line], lines
    assert lines[0].startswith("[1/3] "), lines
    assert any(line.startswith("PROFILE ") for line in lines)
    # The INFO lines went to the log file, and -v shows them.
    with open(os.path.join(work.root, "logs", "paloaltoagent.log")) as handle:
        assert " INFO " in handle.read()
    code, output = in_pty(["renew", "-v", "--config", work.config], None)
    assert code == 0 and " INFO " in output


def test_encrypt_names_each_file_once(work: Any) -> None:
    # On a terminal, where the duplicate (a log line beside the printed line) showed.
    passphrase = os.path.join(work.root, "gpg-passphrase")
    with open(passphrase, "w") as handle:
        handle.write("a passphrase\n")
    os.chmod(passphrase, 0o600)
    home = os.path.join(work.root, "gnupg")
    work.edit_config("encryption", mode="symmetric", gpg_home=home, passphrase_file=passphrase)
    code, output = in_pty(["encrypt", "--config", work.config], None)
    assert code == 0, output
    for name in ("sectigo_credentials.yaml", "fw_paloalto_config.yaml"):
        assert output.count(name) == 1, output


def test_status_and_dry_runs_need_no_eula(work: Any) -> None:
    # A monitoring check on a fresh host: no terminal, nothing accepted, nothing sent to SCM.
    env = {k: v for k, v in os.environ.items() if k != "sectigo_pycert_config"}
    for args in (["status"], ["renew", "--dry-run"], ["status", "--json"]):
        result = subprocess.run([sys.executable, AGENT, *args, "--config", work.config],
                                capture_output=True, text=True, timeout=120, env=env,
                                stdin=subprocess.DEVNULL)
        assert result.returncode in (0, 1), (args, result.returncode, result.stderr)
        assert "has not been accepted" not in result.stderr
    assert work.scm_requests() == []
    assert not os.path.exists(os.path.join(work.state, "eula-accepted.json"))
    result = subprocess.run([sys.executable, AGENT, "enroll", "--config", work.config],
                            capture_output=True, text=True, timeout=120, env=env,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 3  # ordering still needs it


def read(*parts: str) -> str:
    with open(os.path.join(ROOT, *parts)) as handle:
        return handle.read()


def test_the_shipped_texts_match_the_code() -> None:
    # config.yaml's comment gives the lookup order the code uses (cli.config_path).
    comment = read("paloaltofw", "config.yaml").split("profiles_dir:")[0]
    assert "--config" in comment and "sectigo_pycert_config" in comment
    assert comment.index("--config") < comment.index("sectigo_pycert_config") < \
        comment.index("next to paloaltoagent.py")
    # The sample's object_name limit is the one config.py enforces.
    from connector.checks import MAX_OBJECT_NAME, RENEWAL_SUFFIX_ROOM
    sample = read("paloaltofw", "profiles_sample", "certificate.yaml")
    limit = re.search(r"object_name:.*max (\d+)", sample)
    assert limit and int(limit.group(1)) == MAX_OBJECT_NAME - RENEWAL_SUFFIX_ROOM
    # --help and the README install into the same directory.
    from connector.cli import EPILOG
    help_dirs = set(re.findall(r"cd (/opt/\S+)", EPILOG))
    readme_dirs = set(re.findall(r"cd (/opt/\S+)", read("README.md")))
    assert help_dirs and help_dirs == readme_dirs, (help_dirs, readme_dirs)
    assert "FIREWALL OBJECT" not in read("paloaltofw", "lab", "demo.py")


def test_api_classic_is_documented_and_the_sample_block_loads_as_classic(tmp_path: Any) -> None:
    from connector.config import load_credentials
    readme = read("README.md")
    section = readme.split("### SCM credentials")[1].split("## Encrypted credentials")[0]
    assert "`api`" in section and "`classic`" in section and "`enrollment`" in section
    sample = os.path.join(AGENT_DIR, "profiles_sample", "sectigo_credentials.yaml")
    assert "api: classic" in read("paloaltofw", "profiles_sample", "sectigo_credentials.yaml")
    copy = tmp_path / "creds.yaml"
    copy.write_text(open(sample).read())
    copy.chmod(0o600)
    assert load_credentials(str(copy), "ADMIN_API_1", None).api == "classic"
    assert load_credentials(str(copy), "ENROLLMENT_API_1", None).api == "enrollment"


def test_the_panorama_samples_load_as_the_three_targets_the_readme_describes(
        tmp_path: Any) -> None:
    """profiles_sample/panorama, copied next to the firewall samples as the README says,
    loads into a Panorama, a template and a firewall through it, each used by a sample
    certificate profile."""
    import shutil

    from connector.config import load_config
    from connector.settings import DeviceKind
    sample = os.path.join(AGENT_DIR, "profiles_sample")
    profiles = tmp_path / "profiles"
    shutil.copytree(sample, profiles, ignore=shutil.ignore_patterns("panorama"))
    for name in os.listdir(os.path.join(sample, "panorama")):
        shutil.copy(os.path.join(sample, "panorama", name), profiles / name)
    for path in profiles.iterdir():
        path.chmod(0o600)
    (tmp_path / "config.yaml").write_text(
        "profiles_dir: profiles\nscm:\n  credentials_label: ENROLLMENT_API_1\n")
    config = load_config(str(tmp_path / "config.yaml"))
    kinds = {p.name: (config.firewalls[p.firewall].kind, config.firewalls[p.firewall].serial)
             for p in config.certificates.values()}
    assert kinds == {"certificate": (DeviceKind.FIREWALL, None),
                     "panorama-certificate": (DeviceKind.PANORAMA, None),
                     "template-certificate": (DeviceKind.TEMPLATE, None),
                     "remote-firewall-certificate": (DeviceKind.FIREWALL, "007951000123456")}
    template = config.firewalls["branch-template"]
    assert template.url == "https://panorama.example.com" and template.template == "Branch"
    # The README's Panorama section points at each of these files.
    section = read("README.md").split("\n## Panorama\n")[1].split("\n## ")[0]
    for name in os.listdir(os.path.join(sample, "panorama")):
        assert f"profiles_sample/panorama/{name}" in section, name
