#!/usr/bin/env python3
"""Fleet benchmark: the agent against a lab fleet, with counts, wall time against the lower
bound, peak memory, and parallelism 1 as the baseline in the same invocation.

    .venv/bin/python bench/fleet.py                 # both scenarios (several minutes)
    .venv/bin/python bench/fleet.py --scenario a    # only the no-op fleet

Scenarios (issue "Fleet scale"):
  a  no-op: 200 firewalls x 5 certificates, none due, 20 ms added to every firewall request;
  b  renewal: 50 firewalls x 4 due certificates, 2 s commits, 2 pending polls per order
     (scm.poll_interval 1 s).

The lab runs as its own process (`paloaltoagent.py lab --firewalls N`), so lab and agent do
not share an interpreter. Certificates are first enrolled (not measured); then the lab is set
to the scenario and the agent runs `renew` as cron would, once with the configured
parallelism and once with parallelism 1. Counts come from the lab's request and order logs;
peak memory is the agent process's maximum resident set (wait4). The lower bound per
firewall is what latency, pending polls and commit time alone force:

    requests x latency + pending polls x poll_interval + commits x commit time

and the fleet's bound is that times ceil(firewalls / parallelism).

That bound counts no CPU at all, and here the lab's 200 emulated firewalls share this
machine's cores with the agent. So the no-op scenario also runs a floor in the same
invocation, against the same lab: `bench/floor_client.py`, a fresh interpreter that only
reads each firewall once (one TLS connection and one config `get`, nothing parsed), with the
same parallelism. `wall_over_floor` is the agent's wall time over the floor's: what
everything the agent does beyond reaching the firewalls costs (interpreter and library
imports, loading and validating the profiles, state files, reading the certificates). Wall
times are medians of --repeat runs, agent and floor alternating.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

import requests
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENT = os.path.join(ROOT, "paloaltofw", "paloaltoagent.py")
FLOOR = os.path.join(ROOT, "bench", "floor_client.py")

SCENARIOS = {
    "a": {"firewalls": 200, "certificates": 5, "due": False, "latency": 0.020,
          "commit_duration": 2.0, "pending_polls": 0, "poll_interval": 1.0},
    "b": {"firewalls": 50, "certificates": 4, "due": True, "latency": 0.0,
          "commit_duration": 2.0, "pending_polls": 2, "poll_interval": 1.0},
}


def lines(path: str) -> List[Dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


class LabProcess:
    def __init__(self, workdir: str, firewalls: int, settings: Tuple[str, ...] = ()) -> None:
        extra = [arg for setting in settings for arg in ("--set", setting)]
        self.process = subprocess.Popen(
            [sys.executable, AGENT, "lab", "--workdir", workdir, "--firewalls", str(firewalls),
             "--set", "panos.commit_duration=0.05", *extra, "-q"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.process.stdout is not None
        self.info = json.loads(self.process.stdout.readline())
        self.info_path = os.path.join(workdir, "lab-info.json")
        with open(self.info_path, "w") as handle:
            json.dump(self.info, handle)
        self.session = requests.Session()

    def control(self, url: str, route: str, body: Dict[str, Any]) -> None:
        response = self.session.post(f"{url}/_lab/{route}", json=body,
                                     headers={"X-Lab-Control": self.info["control_token"]},
                                     verify=self.info["ca_bundle"], timeout=30)
        response.raise_for_status()

    def set_firewalls(self, **settings: Any) -> None:
        for firewall in self.info["firewalls"]:
            self.control(firewall["url"], "settings", settings)

    def set_scm(self, **settings: Any) -> None:
        self.control(self.info["scm"]["classic_url"].rsplit("/api", 1)[0], "settings", settings)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the lab process so far (from /proc)."""
        with open(f"/proc/{self.process.pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=30)


def write_profiles(lab: LabProcess, workdir: str, certificates: int, parallel: int,
                   poll_interval: float) -> str:
    """Firewall profiles with API keys (no keygen), and `certificates` ECDSA-P256 DV
    certificate profiles per firewall (quick to generate on the lab)."""
    info = lab.info
    profiles = os.path.join(workdir, "profiles")
    for name in os.listdir(profiles):
        if name not in ("sectigo_credentials.yaml",):
            os.remove(os.path.join(profiles, name))
    firewalls = {f["hostname"]: {"url": f["url"], "api_key": f["api_key"],
                                 "admin": info["panos"]["admin"],
                                 "ca_bundle": info["ca_bundle"], "commit_timeout": 120}
                 for f in info["firewalls"]}
    path = os.path.join(profiles, "fw_fleet.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(firewalls, handle)
    os.chmod(path, 0o600)
    dv = info["scm"]["cert_types"]["DV"]
    for host in firewalls:
        for number in range(certificates):
            name = f"{host}-c{number}"
            with open(os.path.join(profiles, f"{name}.yaml"), "w") as handle:
                yaml.safe_dump({"firewall": host, "object_name": f"c{number}",
                                "validation": "DV", "common_name": f"c{number}.{host}.example.com",
                                "key": "ECDSA-P256", "scm": {"profile_id": dv, "term": 90}},
                               handle)
    config_path = info["config"]
    with open(config_path) as handle:
        config = yaml.safe_load(handle)
    config["max_parallel_firewalls"] = parallel
    config["scm"].update(poll_interval=poll_interval, poll_timeout=120)
    config["logging"] = {"level": "WARNING", "file": "logs/paloaltoagent.log"}
    with open(config_path, "w") as handle:
        yaml.safe_dump(config, handle)
    return config_path


def set_parallel(config_path: str, parallel: int) -> None:
    with open(config_path) as handle:
        config = yaml.safe_load(handle)
    config["max_parallel_firewalls"] = parallel
    with open(config_path, "w") as handle:
        yaml.safe_dump(config, handle)


def age_states(workdir: str, days: int) -> None:
    """Move the times in every state file's history `days` into the past: with the lab's
    backdated issuance, as if the certificates had been installed that long ago (the window
    alone never replaces a certificate installed less than a day ago)."""
    state_dir = os.path.join(workdir, "state")
    for name in os.listdir(state_dir):
        if not name.endswith(".json") or name in ("eula-accepted.json", "notices.json"):
            continue
        path = os.path.join(state_dir, name)
        with open(path) as handle:
            data = json.load(handle)
        for event in data.get("history", []):
            moved = dt.datetime.fromisoformat(event["time"]) - dt.timedelta(days=days)
            event["time"] = moved.isoformat()
        with open(path, "w") as handle:
            json.dump(data, handle)


def run_agent(config_path: str, *args: str) -> Tuple[int, float, int, float]:
    """(exit code, wall seconds, peak RSS in MB, CPU seconds) of one agent process."""
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, AGENT, *args, "--accept-eula", "-q",
                                "--config", config_path],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.stderr.write(process.stderr.read().decode()[-3000:] if process.stderr else "")
    return process.returncode, wall, usage.ru_maxrss // 1024, usage.ru_utime + usage.ru_stime


def run_floor(lab: LabProcess, parallel: int) -> float:
    """Wall seconds of the floor client (module docstring) against the lab's firewalls."""
    started = time.monotonic()
    subprocess.run([sys.executable, FLOOR, lab.info_path, str(parallel)], check=True,
                   stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def measure(lab: LabProcess, config_path: str, scenario: Dict[str, Any],
            parallel: int, repeat: int) -> Dict[str, Any]:
    logs = lab.info["logs"]
    before = {k: len(lines(v)) for k, v in logs.items()}
    lab_cpu = lab.cpu_seconds()
    code, wall, rss, cpu = run_agent(config_path, "renew")
    lab_cpu = lab.cpu_seconds() - lab_cpu
    after = {k: lines(v) for k, v in logs.items()}
    fw = after["panos_requests"][before["panos_requests"]:]
    scm = after["scm_requests"][before["scm_requests"]:]
    orders = after["scm_orders"][before["scm_orders"]:]
    commits = [e for e in fw if e.get("type") == "commit" and e.get("code") == "19"
               and e.get("result") == "success"]
    firewalls = scenario["firewalls"]
    per_firewall_requests = len(fw) / firewalls
    per_firewall = (per_firewall_requests * scenario["latency"] +
                    scenario["pending_polls"] * scenario["poll_interval"] * scenario["due"] +
                    (len(commits) / firewalls) * scenario["commit_duration"])
    bound = math.ceil(firewalls / parallel) * per_firewall
    floor: Optional[float] = None
    if not scenario["due"]:
        # Medians of alternating runs; the counts above are from the first agent run.
        walls, floors = [wall], [run_floor(lab, parallel)]
        for _ in range(repeat - 1):
            walls.append(run_agent(config_path, "renew")[1])
            floors.append(run_floor(lab, parallel))
        wall, floor = statistics.median(walls), statistics.median(floors)
    return {"parallel": parallel, "exit": code, "firewall_requests": len(fw),
            "keygen_requests": sum(1 for e in fw if e.get("type") == "keygen"),
            "scm_requests": len(scm), "orders": len(orders), "commits": len(commits),
            "wall_s": round(wall, 2), "bound_s": round(bound, 2),
            "wall_over_bound": round(wall / bound, 2) if bound else None,
            "floor_s": round(floor, 2) if floor else None,
            "wall_over_floor": round(wall / floor, 2) if floor else None,
            "peak_rss_mb": rss, "agent_cpu_s": round(cpu, 2), "lab_cpu_s": round(lab_cpu, 2)}


def scenario_run(name: str, parallel: int, repeat: int) -> List[Dict[str, Any]]:
    spec = SCENARIOS[name]
    workdir = tempfile.mkdtemp(prefix=f"bench-{name}-")
    # Scenario b: certificates issued 80 days into their 90-day term, so that the default
    # 30-day window finds every one due (after each renewal too).
    lab = LabProcess(workdir, spec["firewalls"],
                     ("scm.backdate_days=80",) if spec["due"] else ())
    try:
        config = write_profiles(lab, workdir, spec["certificates"], 64, spec["poll_interval"])
        print(f"scenario {name}: enrolling {spec['firewalls'] * spec['certificates']} "
              "certificates (setup, not measured) ...", file=sys.stderr, flush=True)
        code, wall, _, _ = run_agent(config, "enroll")
        if code != 0:
            raise SystemExit(f"setup enrollment failed ({code})")
        print(f"  setup took {wall:.0f} s", file=sys.stderr, flush=True)
        lab.set_firewalls(latency=spec["latency"], commit_duration=spec["commit_duration"])
        lab.set_scm(pending_polls=spec["pending_polls"])
        results = []
        for p in (parallel, 1):
            set_parallel(config, p)
            if spec["due"]:
                age_states(workdir, 80)
            print(f"  measuring with parallelism {p} ...", file=sys.stderr, flush=True)
            results.append(measure(lab, config, spec, p, repeat))
        return results
    finally:
        lab.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="fleet benchmark (see the module docstring)")
    parser.add_argument("--scenario", choices=["a", "b", "all"], default="all")
    parser.add_argument("--parallel", type=int, default=16,
                        help="max_parallel_firewalls for the measured run (default 16, the "
                             "agent's default)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per wall-time figure of the no-op scenario, agent and floor "
                             "alternating; the median is reported (default 3)")
    args = parser.parse_args()
    started = time.monotonic()
    help_runs = []
    for _ in range(5):
        t0 = time.monotonic()
        subprocess.run([sys.executable, AGENT, "--help"], stdout=subprocess.DEVNULL, check=True)
        help_runs.append(time.monotonic() - t0)
    report: Dict[str, Any] = {"cpus": os.cpu_count(),
                              "help_start_s": round(min(help_runs), 3)}
    for name in (["a", "b"] if args.scenario == "all" else [args.scenario]):
        runs = scenario_run(name, args.parallel, max(1, args.repeat))
        spec = SCENARIOS[name]
        report[name] = {"spec": spec, "runs": runs,
                        "speedup_vs_parallel_1": round(runs[1]["wall_s"] / runs[0]["wall_s"],
                                                       1)}
        for run in runs:
            print(json.dumps({"scenario": name, **run}))
    print(json.dumps({"summary": report}, indent=None))
    print(f"benchmark took {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
