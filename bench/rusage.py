"""Run a command and write its exit code, wall time, CPU time and peak RSS to a JSON file.

    python -S bench/rusage.py RESULT.json COMMAND [ARG...]

Why a process of its own: Linux carries a process's peak RSS over fork and exec, so a child
started by bench/fleet.py reports at least the bench's own resident set at that moment (which
grows with the lab logs it reads), whatever the child itself used. Started from this small
interpreter (-S: no site packages), the child's figure is its own: measured with `python -c
pass`, 13 MB from here and 213 MB from a parent holding 200 MB.
"""

import json
import os
import sys
import time


def main() -> int:
    result, command = sys.argv[1], sys.argv[2:]
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.execv(command[0], command)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.monotonic() - started
    with open(result, "w") as handle:
        json.dump({"exit": os.waitstatus_to_exitcode(status), "wall_s": wall,
                   "cpu_s": usage.ru_utime + usage.ru_stime,
                   "peak_rss_mb": usage.ru_maxrss // 1024}, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
