"""Stopping a run: SIGINT (Ctrl-C) and SIGTERM (systemd's stop) become a stop event the run
checks at its safe points (README, "Stopping a run")."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Dict, Optional, Tuple

from .text import isatty


class Signals:
    """SIGINT (Ctrl-C) and SIGTERM (systemd's stop) ask the run to stop at a safe point: no new
    step starts, steps that may have reached a device or SCM finish, the state, the report
    and the metrics are written. A second signal stops at once (the state files are written
    atomically, and an interrupted order is found again by the next run).

    The Python-level handler only counts and notes (it runs in the main thread, which may be
    holding the lock of `event` in a wait: setting the event there could deadlock). The C
    handler also writes the signal number to a pipe (`signal.set_wakeup_fd`); a watcher
    thread reads it and sets `event`, which wakes the workers' waits."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: Optional[int] = None
        self._handled = 0
        self._previous: Dict[int, Any] = {}
        self._pipe: Optional[Tuple[int, int]] = None
        self._previous_wakeup = -1
        self._watcher: Optional[threading.Thread] = None

    def __enter__(self) -> "Signals":
        if threading.current_thread() is not threading.main_thread():
            return self  # signals only reach the main thread: nothing to take over
        read, write = os.pipe()
        os.set_blocking(write, False)
        self._pipe = (read, write)
        self._previous_wakeup = signal.set_wakeup_fd(write)
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        self._watcher = threading.Thread(target=self._watch, name="signals", daemon=True)
        self._watcher.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self._pipe is not None:
            signal.set_wakeup_fd(self._previous_wakeup)
            os.write(self._pipe[1], b"\0")  # 0 is no signal: it tells the watcher to end
            if self._watcher is not None:
                self._watcher.join(timeout=5)
            for fd in self._pipe:
                os.close(fd)

    def _watch(self) -> None:
        assert self._pipe is not None
        while True:
            data = os.read(self._pipe[0], 64)
            for number in data:
                if number in (signal.SIGINT, signal.SIGTERM):
                    if self.signum is None:
                        self.signum = number
                    self.event.set()
            if not data or 0 in data:
                return

    def _handle(self, signum: int, frame: Any) -> None:
        self._handled += 1
        if self._handled > 1:
            os.write(2, b"paloaltoagent: stopping at once\n")
            os._exit(128 + (self.signum or signum))
        if self.signum is None:
            self.signum = signum
        if isatty(sys.stderr):
            os.write(2, f"paloaltoagent: {self.name}: finishing the steps in progress, then "
                        "stopping (press Ctrl-C again to stop at once)\n".encode())

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    @property
    def exit_code(self) -> int:
        """130 for SIGINT, 143 for SIGTERM: the shell's convention, 128 + the signal."""
        return 128 + (self.signum or 0)
