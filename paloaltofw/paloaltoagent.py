#!/usr/bin/env python3
"""paloaltoagent: Sectigo Certificate Manager certificates for Palo Alto Networks firewalls.

Run `paloaltoagent.py --help`. The code lives in the `connector` package next to this file;
this entry point makes that package importable wherever the script is started from, and hands
the CLI the `lab` and `demo` commands, which live with the lab (the connector never imports it).
"""

import os
import sys
from typing import Dict

if sys.version_info < (3, 9):
    sys.exit("paloaltoagent needs Python 3.9 or later")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from connector.cli import LabCommand, exit_without_teardown, main  # noqa: E402


def lab_commands() -> Dict[str, LabCommand]:
    from lab.commands import COMMANDS  # the lab is loaded only by the lab and demo commands
    return COMMANDS


if __name__ == "__main__":
    exit_without_teardown(main(lab_commands=lab_commands))
