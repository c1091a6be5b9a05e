#!/usr/bin/env python3
"""The floor for a no-op fleet run on this machine: the least a Python client must do to read
each firewall once. One fresh interpreter; per firewall one TLS connection (a context built
once and shared) and one `type=config&action=get` of the certificate store, answered by the
same lab the agent talks to; `parallel` firewalls at a time. Nothing is parsed or decided.

    python bench/floor_client.py LAB_INFO.json PARALLEL

`bench/fleet.py` runs it in the same invocation as the agent and reports the agent's wall
time over this one: the price of everything the agent does beyond reaching the firewalls
(profiles, state, verification), under the same latency and CPU contention.
"""

import http.client
import json
import ssl
import sys
import urllib.parse
from concurrent.futures import ThreadPoolExecutor


def main() -> int:
    with open(sys.argv[1]) as handle:
        info = json.load(handle)
    parallel = int(sys.argv[2])
    context = ssl.create_default_context(cafile=info["ca_bundle"])
    body = urllib.parse.urlencode({"type": "config", "action": "get",
                                   "xpath": "/config"})  # the agent's one read

    def read(firewall: dict) -> int:
        url = urllib.parse.urlsplit(firewall["url"])
        connection = http.client.HTTPSConnection(url.hostname, url.port, context=context,
                                                 timeout=30)
        try:
            connection.request("POST", "/api/", body, {
                "X-PAN-KEY": firewall["api_key"],
                "Content-Type": "application/x-www-form-urlencoded"})
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        if response.status != 200 or b'status="success"' not in data:
            raise SystemExit(f"{firewall['hostname']}: unexpected answer {response.status}")
        return len(data)

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        sizes = list(pool.map(read, info["firewalls"]))
    print(json.dumps({"firewalls": len(sizes), "bytes": sum(sizes)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
