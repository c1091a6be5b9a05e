"""The agent's `lab` and `demo` commands. `paloaltoagent.py` hands them to the CLI, so that
the agent package never imports the lab; only these two commands load it."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Dict, TextIO

from connector import logs
from connector.cli import EXIT_CONFIG, LabCommand, stderr_level


def lab(args: argparse.Namespace, out: TextIO) -> int:
    """Serve the lab until SIGINT/SIGTERM (one JSON line on stdout says where)."""
    from .run import serve

    logging.basicConfig(level=stderr_level(args) if args.verbose or args.quiet else
                        logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return serve(args.workdir, args.host, args.panos_port, args.scm_port, args.set,
                     args.fault, args.api, firewalls=args.firewalls, panorama=args.panorama,
                     ha_pair=args.ha_pair)
    except ValueError as exc:
        print(f"paloaltoagent: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def demo(args: argparse.Namespace, out: TextIO) -> int:
    """The whole lifecycle against an in-process lab."""
    from .demo import run_demo

    logs.setup("INFO", logging.DEBUG if args.verbose else logging.WARNING)
    return run_demo(out)


COMMANDS: Dict[str, LabCommand] = {"lab": lab, "demo": demo}
