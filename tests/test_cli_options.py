"""Global options work wherever the help shows them: before the command, after it, after the
profile names, and around Sectigo-style `-a ACTION -p NAMES` (issue 11, item 1).

The parser is checked for every option in every position; the positions that once silently
ran against the default configuration are then run for real, as separate processes."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Dict, List, Optional

import pytest

from conftest import AGENT_DIR, in_pty
from connector.cli import build_parser, parse, translate_legacy

AGENT = os.path.join(AGENT_DIR, "paloaltoagent.py")

# (what the user types, the attribute it sets, the value it must have)
OPTIONS = [
    (["--config", "/etc/x/config.yaml"], "config", "/etc/x/config.yaml"),
    (["--config=/etc/x/config.yaml"], "config", "/etc/x/config.yaml"),
    (["--accept-eula"], "accept_eula", True),
    (["-v"], "verbose", True),
    (["--verbose"], "verbose", True),
    (["-q"], "quiet", True),
    (["--quiet"], "quiet", True),
]


def positions(option: List[str]) -> Dict[str, List[str]]:
    return {
        "before the command": option + ["renew"],
        "after the command": ["renew"] + option,
        "after the profiles": ["renew", "www", "mail"] + option,
        "between the profiles": ["renew", "www"] + option + ["mail"],
        "before -a": option + ["-a", "renew", "-p", "www,mail"],
        "after -a": ["-a", "renew"] + option + ["-p", "www"],
        "after -p": ["-a", "renew", "-p", "www"] + option,
        "before status": option + ["status", "--json"],
        "before enroll --dry-run": option + ["enroll", "--dry-run"],
    }


CASES = [(name, argv, attribute, value) for option, attribute, value in OPTIONS
         for name, argv in positions(option).items()]


@pytest.mark.parametrize("where,argv,attribute,value", CASES,
                         ids=[f"{' '.join(c[1])}" for c in CASES])
def test_every_global_option_in_every_position(where: str, argv: List[str], attribute: str,
                                               value: Any) -> None:
    args = parse(build_parser(), translate_legacy(argv))
    assert getattr(args, attribute) == value, (where, vars(args))
    names = [a for a in ",".join(argv).split(",") if a in ("www", "mail")]
    assert args.profiles == names, (where, vars(args))  # no name lost, none invented
    # ... and the other global options keep their defaults.
    for other, default in (("config", None), ("accept_eula", False), ("verbose", False),
                           ("quiet", False)):
        if other != attribute:
            assert getattr(args, other) == default, (where, other)


def test_options_on_both_sides_of_the_command_all_count() -> None:
    args = build_parser().parse_args(["-v", "--config", "/a.yaml", "renew", "--accept-eula",
                                      "-q", "www"])
    assert (args.verbose, args.config, args.accept_eula, args.quiet, args.profiles) == \
        (True, "/a.yaml", True, True, ["www"])


def test_the_help_shows_the_options_before_the_command() -> None:
    usage = build_parser().format_usage()
    assert usage.index("--config") < usage.index("COMMAND")


def agent(*args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "sectigo_pycert_config"}
    return subprocess.run([sys.executable, AGENT, *args], capture_output=True, text=True,
                          timeout=180, env=env or clean)


def test_config_and_accept_eula_before_the_command_are_used(work: Any) -> None:
    # The cron line written this way once ran against the default configuration.
    result = agent("--config", work.config, "--accept-eula", "enroll")
    assert result.returncode == 0, result.stderr
    assert len(work.orders()) == 3
    result = agent(f"--config={work.config}", "-a", "list")
    assert result.returncode == 0, result.stderr
    assert "portal-dv-rsa2048" in result.stdout


def test_verbose_before_the_command_shows_debug_lines(work: Any) -> None:
    result = agent("-v", "--config", work.config, "status")
    assert result.returncode == 1, result.stderr  # nothing enrolled yet: attention
    assert " DEBUG " in result.stderr or " INFO " in result.stderr, result.stderr
    quiet = agent("--config", work.config, "status")
    assert " DEBUG " not in quiet.stderr and " INFO " not in quiet.stderr


def test_quiet_before_the_command_keeps_the_terminal_to_warnings(work: Any) -> None:
    code, output = in_pty(["-q", "--config", work.config, "--accept-eula", "enroll"], None)
    assert code == 0, output
    assert "[1/3]" not in output and "PROFILE" not in output, output
    code, output = in_pty(["--config", work.config, "renew", "--force", "portal-dv-rsa2048"],
                          None)
    assert code == 0, output
    assert "[1/1] portal-dv-rsa2048" in output and "PROFILE" in output
