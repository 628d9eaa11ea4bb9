#!/usr/bin/env python3
"""Start or stop the simulated source of observations in the background, through a pid file.

    simulate_observations_ctl.py --start    start simulate_observations.py detached; prints its pid as JSON
    simulate_observations_ctl.py --stop     stop it (SIGTERM, SIGKILL after a few seconds) and remove the pid file

Both are safe to repeat: starting a running simulation and stopping a stopped one say so and succeed.
The pid file is ``/var/run/simulate_observations.pid``, where daemons keep theirs (``SIMPLE_SERVICE_RUN`` names
another directory, to try the scripts outside an image).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIMULATION = HERE / "simulate_observations.py"
RUN_DIR = Path(os.environ.get("SIMPLE_SERVICE_RUN", "/var/run"))
STOP_TIMEOUT = 5.0  # seconds the simulation has to end after SIGTERM before it is killed


def pid_file() -> Path:
    return RUN_DIR / "simulate_observations.pid"


def running_pid() -> int | None:
    """The pid of the running simulation, or ``None`` (a stale pid file is removed)."""
    path = pid_file()
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        pid = None
    if pid is None or not _alive(pid):
        path.unlink(missing_ok=True)
        return None
    return pid


def start() -> int:
    pid = running_pid()
    if pid is not None:
        print(json.dumps({"running": pid, "note": "already running"}))
        return 0
    process = subprocess.Popen(
        [sys.executable, str(SIMULATION)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not in this command's process group: it outlives the command
    )
    pid_file().write_text(f"{process.pid}\n")
    print(json.dumps({"running": process.pid}))
    return 0


def _alive(pid: int) -> bool:
    try:
        finished, _status = os.waitpid(pid, os.WNOHANG)  # only our own child; elsewhere ChildProcessError
    except ChildProcessError:
        finished = 0
    if finished:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"  # a zombie has ended; only its parent's reaping is left


def stop() -> int:
    pid = running_pid()
    if pid is None:
        print(json.dumps({"stopped": None, "note": "not running"}))
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling a process that is not our child: there is nothing to wait on
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    pid_file().unlink(missing_ok=True)
    print(json.dumps({"stopped": pid}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="start or stop the simulated observations")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--start", action="store_true", help="start the simulation in the background")
    action.add_argument("--stop", action="store_true", help="stop the simulation")
    args = parser.parse_args(argv)
    return start() if args.start else stop()


if __name__ == "__main__":
    sys.exit(main())
