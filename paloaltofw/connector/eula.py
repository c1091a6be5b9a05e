"""First-run EULA: show `SCM Client EULA v1.0.1.txt`, ask, and record the acceptance.

The record is `<state_dir>/eula-accepted.json` with the EULA's version, so a new version asks
again. Without a terminal (cron) and without a record, nothing is sent: the run stops with exit
code 3 and says how to accept (`--accept-eula`, or one interactive run).
"""

from __future__ import annotations

import json
import os
from typing import TextIO

from .errors import ConfigError, EulaNotAccepted
from .state import atomic_write, now_iso

EULA_VERSION = "1.0.1"
EULA_FILENAME = f"SCM Client EULA v{EULA_VERSION}.txt"
RECORD = "eula-accepted.json"


def eula_path() -> str:
    """The EULA ships at the top of the project, one level above paloaltoagent.py; a copy next
    to paloaltoagent.py (a flattened install) is found too."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for candidate in (os.path.join(os.path.dirname(here), EULA_FILENAME),
                      os.path.join(here, EULA_FILENAME)):
        if os.path.isfile(candidate):
            return candidate
    raise ConfigError(f"the licence text '{EULA_FILENAME}' is missing from the installation",
                      here)


def accepted(state_dir: str) -> bool:
    try:
        with open(os.path.join(state_dir, RECORD), encoding="utf-8") as handle:
            return bool(json.load(handle).get("version") == EULA_VERSION)
    except (OSError, ValueError, AttributeError):
        return False


def record(state_dir: str, how: str) -> None:
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    atomic_write(os.path.join(state_dir, RECORD), json.dumps(
        {"eula": EULA_FILENAME, "version": EULA_VERSION, "accepted_at": now_iso(),
         "how": how}, indent=2) + "\n", mode=0o644)


def ensure_accepted(state_dir: str, accept_flag: bool, stdin: TextIO, stdout: TextIO) -> None:
    """Return when the EULA is accepted (now or before); raise EulaNotAccepted otherwise."""
    if accepted(state_dir):
        return
    if accept_flag:
        record(state_dir, "--accept-eula")
        return
    if not (stdin.isatty() and stdout.isatty()):
        raise EulaNotAccepted(
            f"the End-User Licence Agreement ({EULA_FILENAME}) has not been accepted. Read "
            "it, then accept it once: run paloaltoagent.py interactively, or add "
            "--accept-eula to this command")
    with open(eula_path(), encoding="utf-8") as handle:
        stdout.write(handle.read().rstrip() + "\n\n")
    stdout.flush()
    stdout.write(f"Do you accept the SCM Client EULA v{EULA_VERSION}? [yes/no]: ")
    stdout.flush()
    if stdin.readline().strip().lower() not in ("y", "yes"):
        raise EulaNotAccepted("the End-User Licence Agreement was not accepted; nothing was done")
    record(state_dir, "interactive")
