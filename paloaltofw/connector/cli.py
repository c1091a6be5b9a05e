"""The command line: parse arguments, load the configuration, run a command, map errors to
exit codes. This is the only module that prints; heavy imports happen inside the commands, so
that `--help` and `--version` start fast.

Exit codes: 0 done or nothing to do; 1 one or more certificates failed (the others were still
processed); 2 configuration or usage error (nothing sent); 3 EULA not accepted.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
from typing import TYPE_CHECKING, Callable, Dict, List, NoReturn, Optional, Sequence, TextIO

from . import __version__

if TYPE_CHECKING:  # pragma: no cover
    from .logs import RedactSecrets
    from .results import Report
    from .settings import Config
    from .signals import Signals
    from .text import Progress

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_EULA = 0, 1, 2, 3
CONFIG_ENV = "sectigo_pycert_config"
AGENT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EPILOG = """\
examples:
  paloaltoagent.py demo                          the whole lifecycle against the offline lab
  paloaltoagent.py enroll                        certificates for every profile that has none
  paloaltoagent.py renew                         renew what is due (run this from cron)
  paloaltoagent.py renew www-example --force     renew one certificate now
  paloaltoagent.py renew --dry-run               what a renewal run would do, changing nothing
  paloaltoagent.py status                        every certificate, its expiry and state
  paloaltoagent.py -a renew -p www,mail          the same, in Sectigo connector style
  paloaltoagent.py encrypt                       GPG-encrypt the secrets in the credential files
  paloaltoagent.py lab --workdir /tmp/lab        run the lab (emulated firewall + SCM)

crontab (every night at 03:17, as the user who owns the configuration):
  17 3 * * * cd /opt/paloaltoagent && .venv/bin/python paloaltofw/paloaltoagent.py renew -q

configuration: --config PATH, else $sectigo_pycert_config, else config.yaml next to
paloaltoagent.py. Exit codes: 0 ok, 1 a certificate failed, 2 configuration error,
3 EULA not accepted.
"""


def global_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """The options every command takes, before or after the command name. The top-level
    parser holds their defaults; the commands' copies default to SUPPRESS, so that an option
    given before the command is not overwritten by the command's own default (argparse copies
    every attribute of the command's namespace over the top-level one)."""
    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--config", metavar="PATH", default=default(None),
                        help="config.yaml to use")
    parser.add_argument("--accept-eula", action="store_true", default=default(False),
                        help="accept the SCM Client EULA without asking")
    parser.add_argument("-v", "--verbose", action="store_true", default=default(False),
                        help="debug logging on the terminal")
    parser.add_argument("-q", "--quiet", action="store_true", default=default(False),
                        help="only warnings and errors on the terminal")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    global_options(common, defaults=False)

    parser = argparse.ArgumentParser(
        prog="paloaltoagent.py",
        description="Sectigo Certificate Manager certificates for Palo Alto Networks "
                    "firewalls: the key pair and CSR are made on the firewall, the certificate "
                    "comes from SCM, the chain is imported, bound and committed.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    global_options(parser, defaults=True)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    status = commands.add_parser(
        "status", parents=[common], help="show every managed certificate (for monitoring)",
        description="One row per certificate: firewall, object, names, key, issuer, expiry, "
                    "days left, state (ok, due, pending, missing, expired, revoked, error) and "
                    "SCM id. Reads each firewall once; orders and writes nothing. Exit code 0 "
                    "when all are ok, 1 when any needs attention.")
    enroll = commands.add_parser(
        "enroll", parents=[common], help="get certificates for profiles that have none",
        description="For each certificate profile (or the named ones) whose certificate is "
                    "missing from its firewall: generate key and CSR on the firewall, order at "
                    "SCM, import, bind and commit. Also finishes pending orders.")
    renew = commands.add_parser(
        "renew", parents=[common], help="renew certificates that are due (for cron)",
        description="Replace every certificate that is missing, expired, revoked, within its "
                    "renewal window, or no longer matching its profile. Also finishes pending "
                    "orders. --force replaces the named certificates now.")
    for sub in (status, enroll, renew):
        sub.add_argument("profiles", nargs="*", metavar="PROFILE",
                         help="certificate profile names (default: all)")
        sub.add_argument("--json", action="store_true", help="one JSON document on stdout")
    renew.add_argument("--force", action="store_true",
                       help="replace even if not due, or after a refused/interrupted order")
    renew.add_argument("--adopt", metavar="ORDER_ID",
                       help="after a run was interrupted while ordering: the SCM order id "
                            "you found for it; the agent collects that order (one PROFILE)")
    for sub in (enroll, renew):
        sub.add_argument("--dry-run", action="store_true",
                         help="only read: print what would be done, order and write nothing")
    for verb, action in (("encrypt", "replace plaintext secrets with GPG ciphertext"),
                         ("decrypt", "restore plaintext secrets for editing")):
        sub = commands.add_parser(
            verb, parents=[common], help=f"{action}, in place",
            description=f"{action[0].upper()}{action[1:]}, in place: SCM client_secret and "
                        "scm_password, firewall api_key and password. Comments and other values "
                        "are kept. Default files: the SCM credentials file and every fw_*.yaml. "
                        "Settings: the encryption section of config.yaml.")
        sub.add_argument("files", nargs="*", metavar="FILE", help="files to change")
    commands.add_parser(
        "demo", parents=[common], help="run the whole lifecycle against the offline lab",
        description="Start the lab in this process, enroll its sample profiles, then force a "
                    "renewal of a certificate bound to an SSL/TLS service profile, and show "
                    "what changed. Offline; takes a few seconds.")
    lab = commands.add_parser(
        "lab", parents=[common],
        help="run the lab: an emulated firewall and SCM on loopback (offline)",
        description="Start an emulated PAN-OS firewall and Sectigo Certificate Manager over "
                    "HTTPS, write a ready config.yaml and profiles wired to them into "
                    "--workdir, print one JSON line describing them, and serve until "
                    "interrupted (SIGINT/SIGTERM).")
    lab.add_argument("--workdir", required=True, help="directory for config, profiles, logs")
    lab.add_argument("--host", default="127.0.0.1", help="address to listen on")
    lab.add_argument("--panos-port", type=int, default=0, help="firewall port (0: any free)")
    lab.add_argument("--scm-port", type=int, default=0, help="SCM port (0: any free)")
    lab.add_argument("--api", choices=["enrollment", "classic"], default="enrollment",
                     help="which SCM API the written config uses")
    lab.add_argument("--firewalls", type=int, default=1, metavar="N",
                     help="emulated firewalls (each on its own port; default 1)")
    lab.add_argument("--panorama", type=int, default=0, metavar="N",
                     help="also a Panorama managing N of the firewalls (at least N are made), "
                          "with profiles for its template, itself and a firewall through it")
    lab.add_argument("--ha-pair", action="store_true",
                     help="lab-fw-01 and lab-fw-02 are an HA pair (lab-fw-01 active), each "
                          "profile naming the other as ha_peer")
    lab.add_argument("--set", action="append", default=[], metavar="SERVICE.NAME=VALUE",
                     help="a lab setting, e.g. panos.commit_duration=5, scm.pending_polls=2, "
                          "panorama.push_fail=SERIAL, ha.sync_fail=true")
    lab.add_argument("--fault", action="append", default=[], metavar="SERVICE:RULE",
                     help="a fault rule, e.g. scm:kind=status,status=429,retry_after=2,count=3 "
                          "(services: panos, panorama, scm)")
    return parser


def parse(parser: argparse.ArgumentParser, argv: List[str]) -> argparse.Namespace:
    """parse_args, except that names may also follow options (`renew www --force mail`):
    argparse stops collecting a positional list at the first option."""
    args, extra = parser.parse_known_args(argv)
    names = "profiles" if hasattr(args, "profiles") else "files" if hasattr(args, "files") \
        else None
    stray = [a for a in extra if a.startswith("-") or names is None]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra and names:
        setattr(args, names, getattr(args, names) + extra)
    return args


LEGACY_ACTIONS = {"enroll": "enroll", "renew": "renew", "replace": "renew", "list": "status"}


class UsageError(Exception):
    """A command line that cannot be understood (exit code 2, like argparse's own)."""


def translate_legacy(argv: List[str]) -> List[str]:
    """Accept Sectigo connector style `-a ACTION [-p NAME[,NAME]]` (sectigo.md §3.2)."""
    if not any(a in ("-a", "--action") or a.startswith("--action=") for a in argv):
        return argv
    out: List[str] = []
    action: Optional[str] = None
    names: List[str] = []
    items = iter(argv)
    for arg in items:
        if arg in ("-a", "--action"):
            action = next(items, "")
        elif arg.startswith("--action="):
            action = arg.split("=", 1)[1]
        elif arg in ("-p", "--profile"):
            names += [n for n in next(items, "").split(",") if n]
        elif arg.startswith("--profile="):
            names += [n for n in arg.split("=", 1)[1].split(",") if n]
        else:
            out.append(arg)
    if action not in LEGACY_ACTIONS:
        raise UsageError(f"unknown action {action!r} for -a; use enroll, renew, replace or "
                         "list")
    extra = ["--force"] if action == "replace" else []
    return [LEGACY_ACTIONS[action]] + out + extra + [_profile_name(n) for n in names]


def _profile_name(name: str) -> str:
    base = os.path.basename(name)
    for suffix in (".yaml", ".yml"):
        if base.lower().endswith(suffix):
            return base[:-len(suffix)]
    return base


def config_path(explicit: Optional[str]) -> str:
    """--config, else $sectigo_pycert_config, else config.yaml next to paloaltoagent.py."""
    if explicit:
        return explicit
    return os.environ.get(CONFIG_ENV) or os.path.join(AGENT_DIR, "config.yaml")


def stderr_level(args: argparse.Namespace) -> int:
    """Warnings and errors only, on a terminal too: there a run shows its progress lines and
    table, and the INFO lines go to the log file (-v shows them, with the debug lines)."""
    return logging.DEBUG if args.verbose else logging.WARNING


def load(args: argparse.Namespace) -> "Config":
    from .config import load_config
    from .secrets import decryptor
    adopt = getattr(args, "adopt", None)
    if adopt is not None and (len(args.profiles) != 1 or not re.fullmatch(r"\d{1,12}", adopt)):
        from .errors import ConfigError
        raise ConfigError("--adopt takes one SCM order id (digits) and exactly one PROFILE: "
                          "paloaltoagent.py renew NAME --adopt ID")
    config = load_config(config_path(args.config), make_decryptor=decryptor)
    unknown = [n for n in args.profiles if n not in config.certificates]
    if unknown:
        from .fields import did_you_mean
        from .errors import ConfigError
        raise ConfigError(f"no certificate profile '{unknown[0]}' in {config.profiles_dir}"
                          f"{did_you_mean(unknown[0], list(config.certificates))}")
    return config


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    """status, enroll and renew: configuration, EULA, the run, then what it reports."""
    from . import eula, logs
    from .errors import ConfigError, EulaNotAccepted
    from .results import Report
    from .signals import Signals
    from .state import StateStore
    from .text import Progress, isatty

    redact = logs.setup("INFO", stderr_level(args))
    log = logging.getLogger("paloaltoagent")
    dry_run = getattr(args, "dry_run", False)
    signals = Signals()  # taken over from here to the end, once something may be sent

    def stop(code: int, message: str) -> int:
        """A run that does nothing: one line on stderr, and with --json a document too."""
        log.error("%s", message)
        if args.json:
            from .report import document, to_json
            out.write(redact.redact(to_json(document(Report([]), args.command, dry_run, code,
                                                     error=message, signal=signals.name))))
        return code

    try:
        config = load(args)
    except ConfigError as exc:
        return stop(EXIT_CONFIG, str(exc))
    redact.add(config.secrets())
    try:
        logs.setup("DEBUG" if args.verbose else config.logging.level, stderr_level(args),
                   config.logging.file, config.logging.max_bytes, config.logging.backup_count,
                   redact)
    except OSError as exc:
        return stop(EXIT_CONFIG, str(ConfigError(f"cannot write the log file "
                                                 f"{config.logging.file} ({exc.strerror}); "
                                                 "fix the path or its permissions",
                                                 config.path, "logging.file")))
    try:
        StateStore(config.state_dir).ensure_writable()
        # The EULA is SCM's: status and dry runs send SCM nothing, so a monitoring check on a
        # fresh host works before anyone accepted it.
        if args.command != "status" and not dry_run:
            eula.ensure_accepted(config.state_dir, args.accept_eula, sys.stdin,
                                 sys.stderr if args.json else out)
    except EulaNotAccepted as exc:
        return stop(EXIT_EULA, str(exc))
    except ConfigError as exc:
        return stop(EXIT_CONFIG, str(exc))
    if not config.certificates:
        log.warning("no certificate profiles in %s; copy one from profiles_sample/",
                    config.profiles_dir)
    log.info("%s%s: %s %s", args.command, " (dry run)" if dry_run else "", __version__,
             ", ".join(args.profiles) or "all certificate profiles")
    interactive = not args.json and isatty(out) and not args.quiet
    count = len(dict.fromkeys(args.profiles)) or len(config.certificates)
    progress = Progress(out, redact.redact, count) \
        if interactive and args.command != "status" else None
    with signals:
        return _run_and_report(args, out, config, signals, progress, interactive, redact, stop)


def _run_and_report(args: argparse.Namespace, out: TextIO, config: "Config",
                    signals: "Signals", progress: Optional["Progress"], interactive: bool,
                    redact: "RedactSecrets", stop: Callable[[int, str], int]) -> int:
    from .errors import AgentError, ConfigError
    from .lifecycle import RunOptions, run
    from .results import Mode, Outcome, State
    from .text import plan_text, print_results, status_table

    log = logging.getLogger("paloaltoagent")
    dry_run = getattr(args, "dry_run", False)
    try:
        report = run(config, args.profiles, RunOptions(
            mode=Mode(args.command), force=getattr(args, "force", False), dry_run=dry_run,
            progress=progress.line if progress else None, stop=signals.event,
            adopt=getattr(args, "adopt", None)))
    except ConfigError as exc:
        return stop(EXIT_CONFIG, str(exc))
    except AgentError as exc:  # another run holds the lock
        return stop(EXIT_FAILED, str(exc))
    failed = [r for r in report.results if r.failed]
    attention = [r for r in report.results if r.state is not State.OK]
    code = EXIT_FAILED if failed or (args.command == "status" and attention) else EXIT_OK
    for result in failed:
        log.error("FAILED %s (%s): %s", result.profile, result.firewall, result.message)
    if signals.signum:
        code = signals.exit_code
        stopped = [r for r in report.results if r.outcome is Outcome.INTERRUPTED]
        log.error("interrupted by %s: %d of %d certificates were finished; %d stopped at a "
                  "safe point with their state saved, and the next run continues them",
                  signals.name, len(report.results) - len(stopped), len(report.results),
                  len(stopped))
    if args.json:
        from .report import document, to_json
        out.write(redact.redact(to_json(document(report, args.command, dry_run, code,
                                                 signal=signals.name))))
    elif args.command == "status":
        out.write(redact.redact(status_table(report.results)))
    elif dry_run:
        out.write(redact.redact(plan_text(report.results)))
    elif (interactive or failed) and not signals.signum:
        # On a terminal, the whole table; from cron, only what went wrong (cron mails it).
        print_results(report.results if interactive else failed, out, redact.redact)
    out.flush()
    if args.command != "status" and not dry_run:
        after_run(config, report, args.command, not failed and not signals.signum,
                  redact.redact)
    return code


def after_run(config: "Config", report: "Report", command: str, success: bool,
              redact: Callable[[str], str]) -> None:
    """Metrics and alerts of an enroll or renew run; neither changes its exit code."""
    log = logging.getLogger("paloaltoagent")
    try:
        if config.metrics_file:
            from .report import write_metrics
            write_metrics(config.metrics_file, report, command, success)
        if config.notifications:
            from .notify import notify
            notify(config.notifications, report, command, redact)
    except Exception as exc:  # reporting must not turn a good run into a crash
        log.error("after the run: %s: %s", type(exc).__name__, redact(str(exc)))


def cmd_secrets(args: argparse.Namespace, out: TextIO) -> int:
    """encrypt / decrypt: every file is prepared in memory first; any error changes nothing."""
    from . import logs
    from .config import secret_files
    from .errors import ConfigError
    from .secrets import Gpg, decrypt_files, encrypt_files

    logs.setup("INFO", stderr_level(args))
    log = logging.getLogger("paloaltoagent")
    path = os.path.abspath(config_path(args.config))
    try:
        settings, default_files = secret_files(path)
        files = [os.path.abspath(f) for f in args.files] or default_files
        if not files:
            raise ConfigError("no credentials file and no fw_*.yaml files to work on", path)
        gpg = Gpg(settings, path)
        try:
            changed = (encrypt_files if args.command == "encrypt" else decrypt_files)(gpg,
                                                                                     files)
        finally:
            gpg.close()
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    for file, fields in changed.items():
        out.write(f"{file}: {args.command}ed {', '.join(fields)}\n" if fields else
                  f"{file}: nothing to {args.command}\n")
    return EXIT_OK


# The `lab` and `demo` commands live with the lab (`lab/commands.py`), outside this package:
# the entry point hands them in, so that the agent itself never imports the lab.
LabCommand = Callable[[argparse.Namespace, TextIO], int]


def main(argv: Optional[Sequence[str]] = None, out: TextIO = sys.stdout,
         lab_commands: Optional[Callable[[], Dict[str, LabCommand]]] = None) -> int:
    parser = build_parser()
    raw = list(argv) if argv is not None else sys.argv[1:]
    try:
        args = parse(parser, translate_legacy(raw))
    except UsageError as exc:
        parser.error(str(exc))  # prints usage and exits 2
    if args.command in ("status", "enroll", "renew"):
        try:
            return cmd_run(args, out)
        except KeyboardInterrupt:  # before the run started (loading, the EULA question)
            message = "interrupted before anything was sent; nothing was done"
            print(f"paloaltoagent: {message}", file=sys.stderr)
            code = 128 + signal.SIGINT
            if args.json:
                from .results import Report
                from .report import document, to_json
                out.write(to_json(document(Report([]), args.command,
                                           getattr(args, "dry_run", False), code,
                                           error=message, signal="SIGINT")))
            return code
    if args.command in ("encrypt", "decrypt"):
        return cmd_secrets(args, out)
    if args.command in ("lab", "demo"):
        if lab_commands is None:
            print(f"paloaltoagent: the {args.command} command is run by paloaltoagent.py "
                  "(the lab is not part of the connector package)", file=sys.stderr)
            return EXIT_CONFIG
        return lab_commands()[args.command](args, out)
    parser.print_help(sys.stderr)
    return EXIT_CONFIG


def exit_without_teardown(code: int) -> NoReturn:
    """End the process with `code` once its output is out, skipping the interpreter's
    teardown (every object and module freed one by one: about 30 ms after a run over 200
    firewalls, as much as a tenth of a quiet night's run; bench/fleet.py). Nothing here needs
    it: the device threads have been joined, gpg stopped, state files written whole
    (atomic_write), the run lock is released by the kernel with its descriptor. What
    teardown would do that matters, flushing the log files and the standard streams, is
    done first. For the entry point only: tests call main() and go on."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # the reader went away (`| head`), or it is closed
            pass
    os._exit(code)
