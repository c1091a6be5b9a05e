"""`paloaltoagent.py lab`: run the lab until SIGINT/SIGTERM.

Prints exactly one JSON line on stdout once both systems listen (everything else goes to
stderr), so a script can do `read -r line < <(paloaltoagent.py lab --workdir D)`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import sys
import threading
from typing import Dict, List, Optional, Sequence, Tuple

from .lab import Lab
from .ha import HaSettings
from .panorama import PanoramaSettings
from .panos import PanosSettings
from .scm import ScmSettings
from .server import FaultRule, apply_setting
from .workdir import write_workdir

log = logging.getLogger("lab")


def parse_settings(items: Sequence[str]) -> Dict[str, Dict[str, str]]:
    """`panos.commit_duration=2` / `scm.pending_polls=3` / `panorama.push_fail=SERIAL` into
    {service: {name: value}}."""
    out: Dict[str, Dict[str, str]] = {"panos": {}, "scm": {}, "panorama": {}, "ha": {}}
    for item in items:
        key, sep, value = item.partition("=")
        service, dot, name = key.partition(".")
        if not sep or not dot or service not in out:
            raise ValueError(f"--set {item!r}: expected panos.NAME=VALUE, scm.NAME=VALUE, "
                             "panorama.NAME=VALUE or ha.NAME=VALUE")
        out[service][name] = value
    return out


def parse_faults(items: Sequence[str]) -> List[Tuple[str, FaultRule]]:
    """`scm:kind=status,status=429,retry_after=2,count=3` into (service, FaultRule) pairs."""
    out: List[Tuple[str, FaultRule]] = []
    for item in items:
        service, sep, rule = item.partition(":")
        if not sep or service not in ("panos", "panorama", "scm"):
            raise ValueError(f"--fault {item!r}: expected panos:RULE, panorama:RULE or "
                             "scm:RULE")
        out.append((service, FaultRule.parse(rule)))
    return out


def serve(workdir: str, host: str = "127.0.0.1", panos_port: int = 0, scm_port: int = 0,
          settings: Sequence[str] = (), faults: Sequence[str] = (), api: str = "enrollment",
          stop: Optional[threading.Event] = None, firewalls: int = 1,
          panorama: int = 0, ha_pair: bool = False) -> int:
    parsed = parse_settings(settings)
    rules = parse_faults(faults)
    panos_settings, scm_settings = PanosSettings(), ScmSettings()
    panorama_settings = PanoramaSettings()
    for name, value in parsed["panos"].items():
        apply_setting(panos_settings, name, value)
    for name, value in parsed["scm"].items():
        apply_setting(scm_settings, name, value)
    for name, value in parsed["panorama"].items():
        apply_setting(panorama_settings, name, value)
    ha_settings = HaSettings()
    for name, value in parsed["ha"].items():
        apply_setting(ha_settings, name, value)
    if parsed["ha"] and not ha_pair:
        raise ValueError("ha settings need --ha-pair")
    if not 1 <= firewalls <= 1000:
        raise ValueError("--firewalls must be between 1 and 1000")
    if not 0 <= panorama <= 1000:
        raise ValueError("--panorama must be between 0 and 1000")
    if not panorama and (parsed["panorama"] or any(s == "panorama" for s, _ in rules)):
        raise ValueError("panorama settings and faults need --panorama N")
    lab = Lab(workdir, host, panos_port, scm_port, panos_settings, scm_settings,
              firewalls=firewalls, panorama=panorama,
              panorama_settings=panorama_settings, ha_pair=ha_pair,
              ha_settings=ha_settings).start()
    for service, rule in rules:
        endpoints = {"panos": lab.panos_endpoints, "scm": [lab.scm_endpoint],
                     "panorama": [lab.panorama_endpoint] if lab.panorama_endpoint else []}
        for endpoint in endpoints[service]:
            endpoint.faults.add(dataclasses.replace(rule))
    config = write_workdir(lab, workdir, api)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    sys.stdout.write(json.dumps(lab.info(config)) + "\n")
    sys.stdout.flush()
    log.info("lab: firewall %s, SCM %s; agent config %s; stop with Ctrl-C",
             lab.panos_endpoint.url, lab.scm_endpoint.url, config)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        lab.stop()
        log.info("lab: stopped")
    return 0
