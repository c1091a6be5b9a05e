#!/usr/bin/env python3
"""Fleet benchmark: the agent against a lab fleet, with counts, wall time against the lower
bound, peak memory, and parallelism 1 as the baseline in the same invocation.

    .venv/bin/python bench/fleet.py                 # scenarios a, b and c (several minutes)
    .venv/bin/python bench/fleet.py --scenario a    # only the no-op fleet
    .venv/bin/python bench/fleet.py --scenario a --firewalls 50 --certificates 2
    .venv/bin/python bench/fleet.py --curve         # the no-op run at 25 ... 400 firewalls
    .venv/bin/python bench/fleet.py --curve --scenario ac   # the curve, then scenarios a and c

Scenarios (issues "Fleet scale" and "Fleet cost"):
  a  no-op: 200 firewalls x 5 certificates, none due, 20 ms added to every firewall request;
  b  renewal: 50 firewalls x 4 due certificates, 2 s commits, 2 pending polls per order
     (scm.poll_interval 1 s);
  c  real networks: the no-op run over 400 firewalls x 5 certificates with 100 ms per
     firewall request and parallelism 64, against its latency bound (no parallelism-1
     baseline: it would take minutes and show nothing new).
`--firewalls` and `--certificates` change the size of the chosen scenario.

The scale curve (`--curve`) runs scenario a's no-op at each of `--sizes` (default 25, 50,
100, 200, 400 firewalls) against one lab, the floor measured at each size, and fits the
agent's CPU time to a line over the sizes: its slope is the CPU per firewall, its intercept
the fixed cost (interpreter start, imports, reading the configuration, teardown). The same fit of
the lab's CPU and of the floor client's (below) gives what this machine takes per firewall to
answer and to merely read: the agent's slope is judged against those, measured in the same
run, rather than against milliseconds that hold only on the machine they were taken on.

The lab runs as its own process (`paloaltoagent.py lab --firewalls N`), so lab and agent do
not share an interpreter. Certificates are first enrolled (not measured); then the lab is set
to the scenario and the agent runs `renew` as cron would, once with the configured
parallelism and once with parallelism 1. Counts come from the lab's request and order logs;
peak memory is the agent process's maximum resident set (wait4, taken by bench/rusage.py,
which says why): `peak_rss_mb` of the first run, which learns the facts of every certificate
it has not seen (each parsed once, with cryptography), `steady_rss_mb` the largest of the
later runs, as on any night after. The lower bound per firewall is what latency, pending
polls and commit time alone force:

    requests x latency + pending polls x poll_interval + commits x commit time

and the fleet's bound is that times ceil(firewalls / parallelism).

That bound counts no CPU at all, and here the lab's 200 emulated firewalls share this
machine's cores with the agent. So the no-op scenario also runs a floor in the same
invocation, against the same lab: `bench/floor_client.py`, a fresh interpreter that only
reads each firewall once (one TLS connection and one config `get`, nothing parsed), with the
same parallelism. `wall_over_floor` is the agent's wall time over the floor's: what
everything the agent does beyond reaching the firewalls costs (interpreter and library
imports, loading and validating the profiles, state files, reading the certificates). Wall
times are medians of --repeat runs, agent and floor alternating. The agent's modules are
byte-compiled before anything is measured, as on any installation after its first run.
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
RUSAGE = os.path.join(ROOT, "bench", "rusage.py")

SCENARIOS = {
    "a": {"firewalls": 200, "certificates": 5, "due": False, "latency": 0.020,
          "commit_duration": 2.0, "pending_polls": 0, "poll_interval": 1.0},
    "b": {"firewalls": 50, "certificates": 4, "due": True, "latency": 0.0,
          "commit_duration": 2.0, "pending_polls": 2, "poll_interval": 1.0},
    "c": {"firewalls": 400, "certificates": 5, "due": False, "latency": 0.100,
          "commit_duration": 2.0, "pending_polls": 0, "poll_interval": 1.0, "parallel": 64},
}
CURVE_SIZES = (25, 50, 100, 200, 400)


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
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a lab that does not stop must not hang the bench
            self.process.kill()
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


def measured(command: List[str]) -> Dict[str, Any]:
    """Exit code, wall and CPU seconds and peak RSS of `command`, run by bench/rusage.py (its
    docstring: the peak RSS of a child of this process would include this process's own).
    The command's stderr is shown when it fails."""
    with tempfile.TemporaryDirectory(prefix="bench-run-") as scratch:
        result, errors = os.path.join(scratch, "result.json"), os.path.join(scratch, "stderr")
        with open(errors, "wb") as stderr:
            subprocess.run([sys.executable, "-S", RUSAGE, result, sys.executable, *command],
                           stdout=subprocess.DEVNULL, stderr=stderr, check=True)
        with open(result) as handle:
            outcome: Dict[str, Any] = json.load(handle)
        if outcome["exit"] != 0:
            with open(errors, "rb") as handle:
                sys.stderr.write(handle.read().decode(errors="replace")[-3000:])
    return outcome


def run_agent(config_path: str, *args: str) -> Tuple[int, float, int, float]:
    """(exit code, wall seconds, peak RSS in MB, CPU seconds) of one agent process."""
    run = measured([AGENT, *args, "--accept-eula", "-q", "--config", config_path])
    return run["exit"], run["wall_s"], run["peak_rss_mb"], run["cpu_s"]


def run_floor(lab: LabProcess, parallel: int,
              firewalls: Optional[int] = None) -> Tuple[float, float]:
    """(wall seconds, CPU seconds) of the floor client (module docstring) against the lab's
    firewalls (the first `firewalls` of them)."""
    path = lab.info_path
    if firewalls is not None and firewalls < len(lab.info["firewalls"]):
        path = f"{lab.info_path}.{firewalls}"
        with open(path, "w") as handle:
            json.dump(dict(lab.info, firewalls=lab.info["firewalls"][:firewalls]), handle)
    run = measured([FLOOR, path, str(parallel)])
    if run["exit"] != 0:
        raise SystemExit(f"the floor client failed ({run['exit']})")
    return run["wall_s"], run["cpu_s"]


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
    floor_cpu: Optional[float] = None
    steady_rss: Optional[int] = None  # of the later runs: the first learns what it meets new
    if not scenario["due"]:
        # Medians of alternating runs; the counts above are from the first agent run.
        walls, cpus = [wall], [cpu]
        floors = [run_floor(lab, parallel, firewalls)]
        for _ in range(repeat - 1):
            _, again, later_rss, used = run_agent(config_path, "renew")
            walls.append(again)
            cpus.append(used)
            steady_rss = max(steady_rss or 0, later_rss)
            floors.append(run_floor(lab, parallel, firewalls))
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        floor = statistics.median(f[0] for f in floors)
        floor_cpu = statistics.median(f[1] for f in floors)
    return {"parallel": parallel, "exit": code, "firewall_requests": len(fw),
            "keygen_requests": sum(1 for e in fw if e.get("type") == "keygen"),
            "scm_requests": len(scm), "orders": len(orders), "commits": len(commits),
            "wall_s": round(wall, 2), "bound_s": round(bound, 2),
            "wall_over_bound": round(wall / bound, 2) if bound else None,
            "floor_s": round(floor, 2) if floor else None,
            "wall_over_floor": round(wall / floor, 2) if floor else None,
            "peak_rss_mb": rss, "steady_rss_mb": steady_rss, "agent_cpu_s": round(cpu, 2),
            "lab_cpu_s": round(lab_cpu, 2),
            "floor_cpu_s": round(floor_cpu, 2) if floor_cpu is not None else None}


def fit(points: List[Tuple[float, float]]) -> Tuple[float, float]:
    """Least-squares line through (x, y) points: (slope, intercept)."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


def only_firewalls(lab: LabProcess, workdir: str, keep: int) -> None:
    """Profiles for the first `keep` firewalls only: their firewall entries, and their
    certificate profiles (the others' move aside), so the run neither loads nor reads the
    rest."""
    profiles, aside = os.path.join(workdir, "profiles"), os.path.join(workdir, "aside")
    os.makedirs(aside, exist_ok=True)
    for name in os.listdir(aside):
        os.rename(os.path.join(aside, name), os.path.join(profiles, name))
    kept = {f["hostname"] for f in lab.info["firewalls"][:keep]}
    for name in os.listdir(profiles):
        if name.startswith("lab-fw-") and name.split("-c")[0] not in kept:
            os.rename(os.path.join(profiles, name), os.path.join(aside, name))
    path = os.path.join(profiles, "fw_fleet.yaml")
    if not os.path.exists(path + ".all"):
        shutil.copy(path, path + ".all")
    with open(path + ".all") as handle:
        entries = yaml.safe_load(handle)
    with open(path, "w") as handle:
        yaml.safe_dump({k: v for k, v in entries.items() if k in kept}, handle)
    os.chmod(path, 0o600)


def curve_run(sizes: List[int], certificates: int, parallel: int,
              repeat: int) -> Dict[str, Any]:
    """Scenario a's no-op at each size against one lab of the largest size (module
    docstring)."""
    spec = dict(SCENARIOS["a"], certificates=certificates)
    workdir = tempfile.mkdtemp(prefix="bench-curve-")
    lab = LabProcess(workdir, max(sizes))
    try:
        config = write_profiles(lab, workdir, certificates, 64, spec["poll_interval"])
        print(f"curve: enrolling {max(sizes) * certificates} certificates (setup, not "
              "measured) ...", file=sys.stderr, flush=True)
        code, wall, _, _ = run_agent(config, "enroll")
        if code != 0:
            raise SystemExit(f"setup enrollment failed ({code})")
        lab.set_firewalls(latency=spec["latency"], commit_duration=spec["commit_duration"])
        set_parallel(config, parallel)
        points = []
        for size in sizes:
            only_firewalls(lab, workdir, size)
            print(f"  measuring {size} firewalls ...", file=sys.stderr, flush=True)
            run = measure(lab, config, dict(spec, firewalls=size), parallel, repeat)
            points.append(dict(run, firewalls=size))
        slope, intercept = fit([(p["firewalls"], p["agent_cpu_s"]) for p in points])
        # The same fit of the lab's CPU (its answers to the first agent run at each size)
        # and the floor client's: what this machine takes per firewall to answer and to
        # merely read, the yardsticks of the agent's own slope on any machine.
        lab_slope, _ = fit([(p["firewalls"], p["lab_cpu_s"]) for p in points])
        floor_slope, floor_fixed = fit([(p["firewalls"], p["floor_cpu_s"]) for p in points])
        return {"spec": spec, "sizes": sizes, "runs": points,
                "cpu_per_firewall_ms": round(slope * 1000, 2),
                "fixed_cpu_s": round(intercept, 3),
                "lab_cpu_per_firewall_ms": round(lab_slope * 1000, 2),
                "floor_cpu_per_firewall_ms": round(floor_slope * 1000, 2),
                "floor_fixed_cpu_s": round(floor_fixed, 3),
                "peak_rss_mb": max(p["peak_rss_mb"] for p in points),
                "steady_rss_mb": max(p["steady_rss_mb"] or 0 for p in points)}
    finally:
        lab.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def scenario_run(name: str, parallel: int, repeat: int,
                 size: Optional[Tuple[int, int]] = None) -> List[Dict[str, Any]]:
    spec = dict(SCENARIOS[name])
    if size is not None:
        spec["firewalls"], spec["certificates"] = size
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
        # Scenario c is about latency: its parallelism-1 baseline (400 x 100 ms a run) adds
        # nothing but minutes.
        for p in (spec["parallel"],) if "parallel" in spec else (parallel, 1):
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
    parser.add_argument("--scenario", choices=["a", "b", "c", "ac", "all"],
                        help="the scenarios to run (default all; with --curve: none, unless "
                             "given, so that the curve and scenarios come from one run)")
    parser.add_argument("--firewalls", type=int, help="firewalls of the scenario (or of the "
                                                       "curve's largest size)")
    parser.add_argument("--certificates", type=int, help="certificates per firewall")
    parser.add_argument("--curve", action="store_true",
                        help="the scale curve instead of the scenarios (module docstring)")
    parser.add_argument("--sizes", type=lambda text: [int(n) for n in text.split(",")],
                        default=list(CURVE_SIZES),
                        help="firewall counts of the curve (default 25,50,100,200,400)")
    parser.add_argument("--parallel", type=int, default=16,
                        help="max_parallel_firewalls for the measured run (default 16, the "
                             "agent's default)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per wall-time figure of the no-op scenario, agent and floor "
                             "alternating; the median is reported (default 3)")
    args = parser.parse_args()
    started = time.monotonic()
    # Byte-compiled first, as Python does on the first run of any installation where it may
    # write __pycache__ (the floor's standard library is compiled too). A machine that sets
    # PYTHONDONTWRITEBYTECODE would otherwise compile the agent from source at every run.
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.dirname(AGENT)],
                   stdout=subprocess.DEVNULL, check=True)
    help_runs = []
    for _ in range(5):
        t0 = time.monotonic()
        subprocess.run([sys.executable, AGENT, "--help"], stdout=subprocess.DEVNULL, check=True)
        help_runs.append(time.monotonic() - t0)
    report: Dict[str, Any] = {"cpus": os.cpu_count(),
                              "help_start_s": round(min(help_runs), 3)}
    if args.curve:
        curve = curve_run(args.sizes, args.certificates or 5, args.parallel,
                          max(1, args.repeat))
        for run in curve["runs"]:
            print(json.dumps({"curve": True, **run}))
        report["curve"] = curve
        if args.scenario is None:
            print(json.dumps({"summary": report}, indent=None))
            print(f"benchmark took {time.monotonic() - started:.0f} s", file=sys.stderr)
            return 0
    chosen = args.scenario or "all"
    for name in (["a", "b", "c"] if chosen == "all" else list(chosen)):
        size = None
        if args.firewalls or args.certificates:
            size = (args.firewalls or SCENARIOS[name]["firewalls"],
                    args.certificates or SCENARIOS[name]["certificates"])
        runs = scenario_run(name, args.parallel, max(1, args.repeat), size)
        spec = SCENARIOS[name]
        report[name] = {"spec": spec, "runs": runs}
        if len(runs) > 1:
            report[name]["speedup_vs_parallel_1"] = round(runs[1]["wall_s"] /
                                                          runs[0]["wall_s"], 1)
        for run in runs:
            print(json.dumps({"scenario": name, **run}))
    print(json.dumps({"summary": report}, indent=None))
    print(f"benchmark took {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
