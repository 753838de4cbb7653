"""A stand-in for ``ssh HOST systemctl restart ticker``: ``python systemctl_restart.py RUN HOST``.

What systemd does with deploy/README.md's unit: its ``KillSignal`` to every
process of the service (``KillMode=control-group``, the default: here the
process group hypercorn leads, its workers included), a wait of up to
``TimeoutStopSec`` for the main process to exit (then SIGKILL to them all),
and a new start. The test's supervisor (``fleet.py``) runs
each host as systemd runs a service and starts it again once it has exited;
this returns when the new main process exists, as ``systemctl restart`` returns
once a ``Type=simple`` service's process is forked. ``RUN/HOST.pid`` holds the
main pid, written by the supervisor; each step is appended to ``RUN/journal``
(wall-clock time first), which the test reads.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

#: How long the supervisor may take to start the next process once the old one is gone.
START_TIMEOUT = 30.0


def journal(run: Path, line: str) -> None:
    with (run / "journal").open("a") as file:
        file.write(f"{time.time():.6f} {line}\n")


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def restart(run: Path, host: str) -> int:
    pidfile = run / f"{host}.pid"
    kill_signal = signal.Signals[(run / "KillSignal").read_text().strip()]
    stop_timeout = float((run / "TimeoutStopSec").read_text())
    old = int(pidfile.read_text())
    journal(run, f"{host} {kill_signal.name} {old}")
    os.killpg(old, kill_signal)
    deadline = time.monotonic() + stop_timeout
    # Until the supervisor has reaped it (then the pid file changes too).
    while running(old) and pidfile.read_text().strip() == str(old):
        if time.monotonic() > deadline:
            journal(run, f"{host} SIGKILL {old} (TimeoutStopSec={stop_timeout:g})")
            os.killpg(old, signal.SIGKILL)
            break
        time.sleep(0.02)
    deadline = time.monotonic() + START_TIMEOUT
    while (new := pidfile.read_text().strip()) == str(old):
        if time.monotonic() > deadline:
            journal(run, f"{host} not started again")
            return 1
        time.sleep(0.02)
    journal(run, f"{host} started {new}")
    return 0


if __name__ == "__main__":
    sys.exit(restart(Path(sys.argv[1]), sys.argv[2]))
