#!/usr/bin/env python3
"""How many simple requests per second one lab process serves over one keep-alive connection.

    .venv/bin/python bench/lab_throughput.py [--seconds 5]

Starts the lab in this process and, from one client thread with one requests.Session (so one
TLS connection, kept alive), sends `show system info` to the emulated firewall and
`GET /api/ssl/v1/types` to the emulated SCM for the given time each. Prints one JSON line per
target with the request count, the rate, and the median and 99th-percentile latency.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict

import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "paloaltofw"))

from lab.lab import Lab  # noqa: E402


def measure(send: Callable[[], requests.Response], seconds: float) -> Dict[str, float]:
    latencies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        response = send()
        latencies.append(time.monotonic() - started)
        if response.status_code != 200:
            raise SystemExit(f"unexpected HTTP {response.status_code}")
    latencies.sort()
    return {"requests": len(latencies), "per_second": round(len(latencies) / seconds, 1),
            "median_ms": round(statistics.median(latencies) * 1000, 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir, Lab(workdir) as lab:
        info = lab.info()
        ca = info["ca_bundle"]
        session = requests.Session()
        panos_key = info["panos"]["api_key"]
        result = measure(lambda: session.post(
            info["panos"]["url"] + "/api/", data={"type": "op",
                                                  "cmd": "<show><system><info/></system></show>"},
            headers={"X-PAN-KEY": panos_key}, verify=ca), args.seconds)
        print(json.dumps({"target": "panos show system info", "cpus": os.cpu_count(),
                          **result}))
        scm = info["scm"]
        headers = {"login": scm["login"], "password": scm["password"],
                   "customerUri": scm["customer_uri"]}
        result = measure(lambda: session.get(scm["classic_url"] + "/ssl/v1/types",
                                             headers=headers, verify=ca), args.seconds)
        print(json.dumps({"target": "scm GET /api/ssl/v1/types", "cpus": os.cpu_count(),
                          **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
