"""`paloaltoagent.py demo`: the whole lifecycle against the lab, offline, in a few seconds.

1. Start the lab (emulated firewall and SCM on loopback) in this process, in a temporary
   directory, with the sample profiles it writes (DV/RSA-2048 bound to an SSL/TLS service
   profile, OV/ECDSA-P384, EV/RSA-4096).
2. Enroll them all with the real agent, and show what the firewall now runs.
3. Force a renewal of the bound certificate, which also feeds a GlobalProtect portal and an
   SSL inbound inspection rule, and show the new object, every repointed consumer and the
   removal of the old object.
4. Enroll a certificate in a Panorama template and show it on both firewalls the push reached
   (the lab's Panorama manages the two firewalls, one per template stack).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from typing import List, Sequence, TextIO, Tuple

import yaml

from connector import certs
from connector.bindings import SSL_TLS_SERVICE_PROFILE
from connector.config import load_config
from connector.device import DeviceView, parse_config, parse_view
from connector.lifecycle import RunOptions, run
from connector.results import Mode
from connector.text import table

from .lab import (INBOUND_RULE, PORTAL, SEED_PROFILE, TEMPLATE, TEMPLATE_PROFILE, Lab,
                  seed_consumers)
from .panorama import PanoramaSettings
from .panos import PanosSettings
from .workdir import CERTIFICATE_PROFILES, write_workdir

BOUND_PROFILE = "portal-dv-rsa2048"
TEMPLATE_CERTIFICATE = "branch-portal"


def service(view: DeviceView, name: str) -> str:
    """The certificate SSL/TLS service profile `name` points at."""
    bound = view.binding(SSL_TLS_SERVICE_PROFILE, name)
    return bound.certificate if bound else "-"


def inbound(config: ET.Element) -> List[str]:
    """The certificates the demo's SSL inbound inspection rule presents."""
    return [b.certificate for b in parse_config(config, None).bindings
            if b.location == INBOUND_RULE and b.certificate]


def _table(rows: Sequence[Tuple[str, ...]], out: TextIO) -> None:
    out.write(table(rows, indent="  "))


def run_demo(out: TextIO) -> int:
    started = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="paloaltoagent-demo-")
    try:
        out.write("Starting the lab: two emulated PAN-OS firewalls, a Panorama managing them "
                  "and Sectigo Certificate Manager on 127.0.0.1 ...\n")
        lab = Lab(workdir, panos_settings=PanosSettings(commit_duration=0.3), panorama=2,
                  panorama_settings=PanoramaSettings(commit_duration=0.3, push_duration=0.3,
                                                     device_push_duration=0.6)).start()
        try:
            path = write_workdir(lab, workdir)
            for other in ("panorama-ui", "remote-portal"):  # the README shows those
                os.remove(os.path.join(workdir, "profiles", f"{other}.yaml"))
            # The portal certificate also feeds a GlobalProtect portal (through its SSL/TLS
            # profile) and an inbound inspection rule, as set up on the firewall.
            seed_consumers(lab.panos)
            bound_path = os.path.join(workdir, "profiles", f"{BOUND_PROFILE}.yaml")
            with open(bound_path) as handle:
                bound_profile = yaml.safe_load(handle)
            bound_profile["bindings"] = {"globalprotect_portals": [PORTAL],
                                         "decryption_rules": [INBOUND_RULE]}
            with open(bound_path, "w") as handle:
                yaml.safe_dump(bound_profile, handle, sort_keys=False)
            config = load_config(path)
            assert lab.panorama_endpoint is not None
            out.write(f"  firewall {lab.panos_endpoint.url}, Panorama "
                      f"{lab.panorama_endpoint.url}, SCM {lab.scm_endpoint.url}\n\n")

            out.write("1. Enroll every sample certificate profile (keys made on the firewall):\n")
            results = run(config, list(CERTIFICATE_PROFILES),
                          RunOptions(mode=Mode.ENROLL)).results
            failed = [r for r in results if r.failed]
            running = parse_view(lab.panos.running_tree().find("shared"))
            rows: List[Tuple[str, ...]] = [("PROFILE", "OBJECT", "COMMON NAME", "KEY",
                                            "ISSUER", "NOT AFTER")]
            for result in results:
                entry = running.certificates.get(result.object or "")
                cert = entry.cert if entry else None
                rows.append((result.profile, result.object or "-", result.common_name,
                             certs.key_label(cert) if cert else "-",
                             certs.issuer_cn(cert) if cert else "-",
                             f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC" if cert else
                             result.message))
            _table(rows, out)
            orders = len(lab.scm.order_log)
            out.write(f"  SCM orders placed: {orders}; commits: "
                      f"{len([c for c in lab.panos.commits if c.result == 'OK'])}\n\n")
            if failed:
                for result in failed:
                    out.write(f"FAILED {result.profile}: {result.message}\n")
                return 1

            old = service(running, SEED_PROFILE)
            before = inbound(lab.panos.running_tree())
            out.write(f"2. Force a renewal of {BOUND_PROFILE}, whose certificate "
                      f"SSL/TLS service profile {SEED_PROFILE} (GlobalProtect portal {PORTAL})"
                      f" and decryption rule {INBOUND_RULE} use:\n")
            renewed = run(config, [BOUND_PROFILE], RunOptions(mode=Mode.RENEW, force=True)).results[0]
            if renewed.failed:
                out.write(f"FAILED {renewed.profile}: {renewed.message}\n")
                return 1
            after = parse_view(lab.panos.running_tree().find("shared"))
            new = service(after, SEED_PROFILE)
            entry = after.certificates.get(new)
            _table([("new object", f"{new} (key on the firewall: "
                                   f"{'yes' if entry and entry.has_key else 'no'}, SCM id "
                                   f"{renewed.cert_id})"),
                    (f"{SEED_PROFILE} (portal {PORTAL})", f"{old} -> {new}"),
                    (f"{INBOUND_RULE} (inbound inspection)",
                     f"{', '.join(before)} -> {', '.join(inbound(lab.panos.running_tree()))}"),
                    ("old object", f"{old}: "
                                   f"{'removed' if old not in after.certificates else 'kept'}")],
                   out)
            out.write(f"\n3. Enroll {TEMPLATE_CERTIFICATE}, a certificate in Panorama template "
                      f"'{TEMPLATE}' (key made on Panorama, pushed to every stack):\n")
            pushed = run(config, [TEMPLATE_CERTIFICATE],
                         RunOptions(mode=Mode.ENROLL)).results[0]
            if pushed.failed:
                out.write(f"FAILED {pushed.profile}: {pushed.message}\n")
                return 1
            rows = [("FIREWALL", "STACK", "PUSH", f"{TEMPLATE_PROFILE} ->", "KEY")]
            for push in pushed.pushes:
                firewall = next(f for f in lab.firewalls if f.serial == push.serial)
                view = parse_view(firewall.running_tree().find("shared"))
                bound = service(view, TEMPLATE_PROFILE)
                entry = view.certificates.get(bound)
                rows.append((push.hostname, push.stack, push.status or push.result, bound,
                             "yes" if entry is not None and entry.has_key else "no"))
            _table(rows, out)
            placed, expected = len(lab.scm.order_log), len(results) + 2
            out.write(f"\n  SCM orders placed in total: {placed} (one per certificate, one "
                      "for the renewal)\n")
            if placed != expected or len(pushed.pushes) != 2:
                out.write(f"FAILED: expected {expected} orders and 2 pushes\n")
                return 1
            out.write(f"Demo finished in {time.monotonic() - started:.1f} s. Try your own "
                      "profiles: paloaltoagent.py lab --workdir DIR (see the README).\n")
            return 0
        finally:
            lab.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
