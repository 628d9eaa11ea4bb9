#!/usr/bin/env python3
"""The simple service's source of data: one normally distributed observation every second, until stopped.

A stand-in for a sensor or a web API that a real service would watch. Each value is stored by calling the
back-end (``simple_service.py --add VALUE``), as any other client of it would. SIGTERM or SIGINT ends the loop
between two observations. ``simulate_observations_ctl.py`` starts and stops it in the background.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

MEAN = 14.0
STANDARD_DEVIATION = 3.0
INTERVAL = 1.0  # seconds between two observations
SERVICE = Path(__file__).resolve().parent / "simple_service.py"


def main() -> int:
    stopped = threading.Event()

    def stop(_signal: int, _frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopped.is_set():
        value = random.normalvariate(MEAN, STANDARD_DEVIATION)
        done = subprocess.run([sys.executable, str(SERVICE), "--add", repr(value)], check=False, timeout=30)
        if done.returncode != 0:
            print(f"simulate_observations: storing {value} failed with code {done.returncode}", file=sys.stderr)
        stopped.wait(INTERVAL)  # the pace of the simulated source; a signal ends the wait at once
    return 0


if __name__ == "__main__":
    sys.exit(main())
