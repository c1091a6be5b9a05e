#!/usr/bin/env python3
"""paloaltoagent: Sectigo Certificate Manager certificates for Palo Alto Networks firewalls.

Run `paloaltoagent.py --help`. The code lives in the `connector` package next to this file;
this entry point only makes that package importable wherever the script is started from.
"""

import os
import sys

if sys.version_info < (3, 9):
    sys.exit("paloaltoagent needs Python 3.9 or later")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from connector.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
