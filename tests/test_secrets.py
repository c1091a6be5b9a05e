"""GPG encryption of credentials at rest, with the real gpg in a temporary GNUPGHOME."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, Iterator, List, Tuple

import gnupg
import pytest
import yaml

from conftest import AGENT_DIR

AGENT = os.path.join(AGENT_DIR, "paloaltoagent.py")
GPG = shutil.which("gpg")
pytestmark = pytest.mark.skipif(GPG is None, reason="gpg is not installed")
KEY_PASSPHRASE = "correct horse battery staple"


@pytest.fixture(scope="session")
def gnupg_home() -> Iterator[str]:
    """One GnuPG home per test session (short path: gpg-agent sockets have a length limit),
    with two ed25519/cv25519 keys: one without a passphrase, one with."""
    home = tempfile.mkdtemp(prefix="gpg-", dir="/tmp")
    gpg = gnupg.GPG(gnupghome=home)
    for email, passphrase in (("agent@example.com", None), ("locked@example.com",
                                                             KEY_PASSPHRASE)):
        params = dict(key_type="EDDSA", key_curve="ed25519", subkey_type="ECDH",
                      subkey_curve="cv25519", name_email=email, expire_date=0)
        if passphrase:
            params["passphrase"] = passphrase
        else:
            params["no_protection"] = True
        assert gpg.gen_key(gpg.gen_key_input(**params)).fingerprint
    yield home
    subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True)
    shutil.rmtree(home, ignore_errors=True)


def secrets_of(work: Any) -> Dict[str, str]:
    with open(os.path.join(work.profiles, "sectigo_credentials.yaml")) as handle:
        creds = yaml.safe_load(handle)
    with open(os.path.join(work.profiles, "fw_paloalto_config.yaml")) as handle:
        firewalls = yaml.safe_load(handle)
    return {"client_secret": creds["ENROLLMENT_API_1"]["client_secret"],
            "scm_password": creds["ADMIN_API_1"]["scm_password"],
            "fw_password": firewalls["lab-fw-01"]["password"]}


def files_of(work: Any) -> Tuple[str, str]:
    return (os.path.join(work.profiles, "sectigo_credentials.yaml"),
            os.path.join(work.profiles, "fw_paloalto_config.yaml"))


def read(path: str) -> str:
    with open(path) as handle:
        return handle.read()


def symmetric(work: Any, home: str, passphrase: str = "s3cret passphrase!") -> str:
    path = os.path.join(work.root, "gpg-passphrase")
    with open(path, "w") as handle:
        handle.write(passphrase + "\n")
    os.chmod(path, 0o600)
    work.edit_config("encryption", mode="symmetric", gpg_home=home, passphrase_file=path)
    return path


def public_key(work: Any, home: str, recipient: str = "agent@example.com") -> None:
    work.edit_config("encryption", mode="public-key", gpg_home=home, recipient=recipient)


@pytest.mark.parametrize("mode", ["symmetric", "public-key"])
def test_round_trip_restores_values_and_keeps_comments(work: Any, gnupg_home: str,
                                                       mode: str) -> None:
    (symmetric if mode == "symmetric" else public_key)(work, gnupg_home)
    creds, firewall = files_of(work)
    with open(firewall, "a") as handle:
        handle.write("# a comment the administrator wrote\n")
    before = secrets_of(work)
    originals = {p: read(p) for p in (creds, firewall)}
    code, out = work.run("encrypt", accept_eula=False)
    assert code == 0, out
    for path in (creds, firewall):
        text = read(path)
        assert "-----BEGIN PGP MESSAGE-----" in text
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        for value in before.values():
            assert value not in text
    assert "# a comment the administrator wrote" in read(firewall)
    assert "# Written by `paloaltoagent.py lab`" in read(creds)
    assert yaml.safe_load(read(creds))["ENROLLMENT_API_1"]["client_id"] == \
        work.lab.accounts.client_id
    code, out = work.run("decrypt", accept_eula=False)
    assert code == 0, out
    assert secrets_of(work) == before
    assert "# a comment the administrator wrote" in read(firewall)
    # Everything but the secret values themselves is byte for byte as it was.
    for path, text in originals.items():
        for line in text.splitlines():
            if not any(v in line for v in before.values()) and "password" not in line \
                    and "secret" not in line:
                assert line in read(path)


def test_passphrase_protected_key_via_environment(work: Any, gnupg_home: str,
                                                   monkeypatch: Any) -> None:
    public_key(work, gnupg_home, "locked@example.com")
    work.edit_config("encryption", passphrase_env="PALOALTOAGENT_GPG_PASSPHRASE")
    before = secrets_of(work)
    assert work.run("encrypt", accept_eula=False)[0] == 0
    monkeypatch.delenv("PALOALTOAGENT_GPG_PASSPHRASE", raising=False)
    code, _ = work.run("decrypt", accept_eula=False)
    assert code == 2  # the variable is not set: clear error, nothing changed
    assert "BEGIN PGP MESSAGE" in read(files_of(work)[0])
    monkeypatch.setenv("PALOALTOAGENT_GPG_PASSPHRASE", KEY_PASSPHRASE)
    assert work.run("decrypt", accept_eula=False)[0] == 0
    assert secrets_of(work) == before


def test_encrypt_twice_is_a_no_op_and_decrypt_of_plain_is_refused(work: Any,
                                                                  gnupg_home: str,
                                                                  capsys: Any) -> None:
    symmetric(work, gnupg_home)
    creds, firewall = files_of(work)
    plain = {p: read(p) for p in (creds, firewall)}
    code, _ = work.run("decrypt", accept_eula=False)
    assert code == 2 and "already plain text" in capsys.readouterr().err
    assert {p: read(p) for p in (creds, firewall)} == plain
    assert work.run("encrypt", accept_eula=False)[0] == 0
    encrypted = {p: read(p) for p in (creds, firewall)}
    capsys.readouterr()
    code, _ = work.run("encrypt", accept_eula=False)
    err = capsys.readouterr().err
    assert code == 2 and "already encrypted" in err
    assert "sectigo_credentials.yaml" in err and "client_secret" in err
    assert {p: read(p) for p in (creds, firewall)} == encrypted


def test_errors_name_file_and_field_and_change_nothing(work: Any, gnupg_home: str,
                                                      capsys: Any) -> None:
    creds, firewall = files_of(work)
    plain = {p: read(p) for p in (creds, firewall)}

    work.edit_config("encryption", mode="symmetric", gpg_home=gnupg_home,
                     gpg_binary="/nonexistent/gpg", passphrase_env="X")
    assert work.run("encrypt", accept_eula=False)[0] == 2
    err = capsys.readouterr().err
    assert "encryption.gpg_binary" in err and "not found" in err

    work.edit_config("encryption", mode="public-key", gpg_binary="gpg",
                     recipient="nobody@example.com", passphrase_env=None)
    assert work.run("encrypt", accept_eula=False)[0] == 2
    err = capsys.readouterr().err
    assert "no usable public key for recipient 'nobody@example.com'" in err
    assert "sectigo_credentials.yaml" in err
    assert {p: read(p) for p in (creds, firewall)} == plain

    passphrase_file = symmetric(work, gnupg_home, "first passphrase")
    work.edit_config("encryption", recipient=None)
    assert work.run("encrypt", accept_eula=False)[0] == 0
    encrypted = {p: read(p) for p in (creds, firewall)}
    with open(passphrase_file, "w") as handle:
        handle.write("another passphrase\n")
    capsys.readouterr()
    assert work.run("decrypt", accept_eula=False)[0] == 2
    err = capsys.readouterr().err
    assert "wrong or missing passphrase" in err and "client_secret" in err
    assert {p: read(p) for p in (creds, firewall)} == encrypted

    with open(passphrase_file, "w") as handle:
        handle.write("first passphrase\n")
    text = read(firewall)
    lines = text.splitlines()
    body = next(i for i, line in enumerate(lines) if "BEGIN PGP MESSAGE" in line) + 2
    lines[body] = lines[body][:8] + "AAAA" + lines[body][12:]
    with open(firewall, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    corrupt = {p: read(p) for p in (creds, firewall)}
    assert work.run("decrypt", accept_eula=False)[0] == 2
    err = capsys.readouterr().err
    assert "fw_paloalto_config.yaml" in err and "cannot decrypt" in err
    assert {p: read(p) for p in (creds, firewall)} == corrupt


def test_a_secret_in_a_flow_style_mapping_is_refused_clearly(work: Any, gnupg_home: str,
                                                              capsys: Any) -> None:
    # An armored block cannot go inside {...}: one clear error, and no file changed.
    creds, firewall = files_of(work)
    with open(firewall) as handle:
        data = yaml.safe_load(handle)
    with open(firewall, "w") as handle:
        yaml.safe_dump(data, handle, default_flow_style=True)
    plain = {p: read(p) for p in (creds, firewall)}
    symmetric(work, gnupg_home)
    capsys.readouterr()
    assert work.run("encrypt", accept_eula=False)[0] == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "fw_paloalto_config.yaml" in errors[0]
    assert "block style" in errors[0] and "lab-fw-01." in errors[0]
    assert {p: read(p) for p in (creds, firewall)} == plain


def test_mode_and_owner_are_kept(work: Any, gnupg_home: str) -> None:
    symmetric(work, gnupg_home)
    creds, _ = files_of(work)
    os.chmod(creds, 0o400)
    before = os.stat(creds)
    assert work.run("encrypt", accept_eula=False)[0] == 0
    after = os.stat(creds)
    assert stat.S_IMODE(after.st_mode) == 0o400
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)


def locked_with_file(work: Any, home: str, passphrase: str) -> str:
    public_key(work, home, "locked@example.com")
    path = os.path.join(work.root, "passphrase")
    with open(path, "w") as handle:
        handle.write(passphrase + "\n")
    os.chmod(path, 0o600)
    work.edit_config("encryption", passphrase_file=path)
    return path


def cron_env(home: str) -> Dict[str, str]:
    """What cron gives a job: PATH and HOME, nothing else."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home}


def cron_run(work: Any, *args: str) -> subprocess.CompletedProcess:
    """The agent as cron starts it: no terminal, only PATH and HOME in the environment."""
    return subprocess.run([sys.executable, AGENT, *args, "--config", work.config],
                          capture_output=True, text=True, timeout=180,
                          env=cron_env(work.root), stdin=subprocess.DEVNULL)


def test_enroll_with_encrypted_credentials_under_a_cron_environment(work: Any,
                                                                    gnupg_home: str) -> None:
    locked_with_file(work, gnupg_home, KEY_PASSPHRASE)
    assert work.run("encrypt", accept_eula=False)[0] == 0
    result = cron_run(work, "enroll", "--accept-eula")
    assert result.returncode == 0, result.stderr
    assert len(work.orders()) == 3


def test_no_secret_in_logs_output_or_child_process_arguments(work: Any, gnupg_home: str,
                                                            tmp_path: Any) -> None:
    """Unique secret strings everywhere; run enroll, encrypt and decrypt with -v; look for
    them in the log file, stdout, stderr and the arguments of every gpg process."""
    lab = work.lab
    work.remove_sample_profiles()
    work.profile("site", key="ECDSA-P256", ssl_tls_service_profiles=["Site-TLS"])
    unique = {"scm_secret": lab.accounts.client_secret, "scm_password": lab.accounts.password,
              "fw_password": lab.admin_passwords["certbot"],
              "fw_key": lab.panos_api_key("certbot")}
    passphrase = "passphrase-" + os.urandom(6).hex()
    unique["gpg_passphrase"] = passphrase
    # A gpg wrapper that records its command line, then runs the real gpg.
    argv_log = tmp_path / "gpg-argv.log"
    wrapper = tmp_path / "gpg-wrapper"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{argv_log}"\nexec {GPG} "$@"\n')
    wrapper.chmod(0o755)
    passphrase_file = symmetric(work, gnupg_home, passphrase)
    work.edit_config("encryption", gpg_binary=str(wrapper))
    work.edit_config("logging", level="DEBUG")
    env = dict(os.environ)
    outputs = []
    for args in (["encrypt"], ["enroll", "--accept-eula"], ["renew", "--force"], ["decrypt"],
                 ["encrypt"], ["renew", "--force"]):
        result = subprocess.run([sys.executable, AGENT, *args, "-v", "--config", work.config],
                                capture_output=True, text=True, timeout=180, env=env)
        assert result.returncode == 0, (args, result.stderr[-2000:])
        outputs += [result.stdout, result.stderr]
    assert len(work.orders()) == 3  # enrolled, then renewed twice
    log_text = read(os.path.join(work.root, "logs", "paloaltoagent.log"))
    assert "DEBUG" in log_text
    argv_text = read(str(argv_log))
    assert "--passphrase-fd" in argv_text  # the passphrase went through a pipe
    haystacks = {"log file": log_text, "child arguments": argv_text,
                 "stdout/stderr": "\n".join(outputs)}
    found = [(name, where) for name, value in unique.items()
             for where, text in haystacks.items() if value in text]
    assert found == []
    assert os.path.exists(passphrase_file)


def agents_of(home: str) -> List[int]:
    """Live gpg-agent processes serving `home` (zombies have no command line)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"gpg-agent") and home.encode() in argv:
            found.append(int(pid))
    return found


@pytest.fixture()
def own_home() -> Iterator[str]:
    """A GnuPG home of this test alone, with a passphrase-protected key and no agent
    running for it."""
    home = tempfile.mkdtemp(prefix="gpg-", dir="/tmp")
    gpg = gnupg.GPG(gnupghome=home)
    assert gpg.gen_key(gpg.gen_key_input(
        key_type="EDDSA", key_curve="ed25519", subkey_type="ECDH", subkey_curve="cv25519",
        name_email="locked@example.com", expire_date=0, passphrase=KEY_PASSPHRASE)).fingerprint
    subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True)
    deadline = time.monotonic() + 10
    while agents_of(home) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert agents_of(home) == []
    yield home
    subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True)
    shutil.rmtree(home, ignore_errors=True)


def test_a_run_leaves_no_gpg_agent_and_checks_the_passphrase_every_time(
        work: Any, own_home: str) -> None:
    passphrase_file = locked_with_file(work, own_home, KEY_PASSPHRASE)
    assert cron_run(work, "encrypt").returncode == 0
    assert agents_of(own_home) == []
    result = cron_run(work, "enroll", "--accept-eula")
    assert result.returncode == 0, result.stderr
    assert agents_of(own_home) == [], "a gpg-agent was left behind"
    # A rotated or mistyped passphrase file fails at once, not when a cache expires.
    with open(passphrase_file, "w") as handle:
        handle.write("not the passphrase\n")
    result = cron_run(work, "renew")
    assert result.returncode == 2 and "wrong or missing passphrase" in result.stderr, \
        result.stderr
    assert agents_of(own_home) == []
    with open(passphrase_file, "w") as handle:
        handle.write(KEY_PASSPHRASE + "\n")
    assert cron_run(work, "decrypt").returncode == 0
    assert agents_of(own_home) == []


def test_an_agent_that_ran_before_is_kept_but_its_cache_is_not_trusted(
        work: Any, own_home: str) -> None:
    passphrase_file = locked_with_file(work, own_home, KEY_PASSPHRASE)
    assert cron_run(work, "encrypt").returncode == 0
    # Someone's own agent, with the key's passphrase in its cache.
    ciphertext = read(files_of(work)[0]).split("client_secret: |")[1].split("scm_url")[0]
    armored = "\n".join(line.strip() for line in ciphertext.strip().splitlines())
    primed = subprocess.run(["gpg", "--homedir", own_home, "--batch", "--pinentry-mode",
                             "loopback", "--passphrase-fd", "0", "--decrypt"],
                            input=KEY_PASSPHRASE + "\n" + armored, capture_output=True,
                            text=True)
    assert primed.returncode == 0, primed.stderr
    running = agents_of(own_home)
    assert len(running) == 1
    with open(passphrase_file, "w") as handle:
        handle.write("not the passphrase\n")
    result = cron_run(work, "enroll", "--accept-eula")
    assert result.returncode == 2 and "wrong or missing passphrase" in result.stderr, \
        result.stderr
    assert agents_of(own_home) == running, "an agent the run did not start was stopped"
