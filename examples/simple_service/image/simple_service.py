#!/usr/bin/env python3
"""The simple service's back-end: a small store of observations that answers with statistics and plots.

It runs on the provider, inside the image built from the ``Dockerfile`` beside it::

    simple_service.py --init                create the database (once, when the image is built)
    simple_service.py --add 14.2            store one observation, stamped with the current time
    simple_service.py --stats               print statistics of every observation so far, as one JSON object
    simple_service.py --plot {time,dist}    draw the observations (over time, or their distribution) into a
                                            PNG under /golem/out and print its path as a JSON string
    simple_service.py --dump                print every observation as JSON

The observations live in an SQLite database beside this script (``/golem/run``), where ``--init`` made it when
the image was built: each activity gets a writable copy of the image's files, on a Golem VM as on the local
network. ``SIMPLE_SERVICE_DATA`` and ``SIMPLE_SERVICE_OUT`` move the database and the plots elsewhere (to try
the scripts outside an image; ``SIMPLE_SERVICE_RUN`` moves the simulation's pid file from ``/var/run``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sqlite3
import sys
import time
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DB_NAME = "simple_service.db"
OUT_DIR = Path(os.environ.get("SIMPLE_SERVICE_OUT", "/golem/out"))


def data_dir() -> Path:
    """Where the database (and the simulation's pid file) live: see the module docstring."""
    chosen = os.environ.get("SIMPLE_SERVICE_DATA")
    if chosen:
        path = Path(chosen)
    elif os.access(HERE, os.W_OK):
        return HERE
    else:
        path = OUT_DIR / ".simple_service"
    path.mkdir(parents=True, exist_ok=True)
    return path


def connect() -> sqlite3.Connection:
    """Open the database, creating it (or copying the image's one) and its table when they are missing."""
    where = data_dir()
    db_path = where / DB_NAME
    built = HERE / DB_NAME
    if not db_path.exists() and built.exists() and built != db_path:
        shutil.copyfile(built, db_path)
    connection = sqlite3.connect(db_path, timeout=10)
    connection.execute("CREATE TABLE IF NOT EXISTS observations (value REAL NOT NULL, time REAL NOT NULL)")
    connection.commit()
    return connection


def observations() -> list[tuple[float, float]]:
    """Every ``(value, time)`` stored so far, oldest first."""
    with closing(connect()) as connection:
        rows = connection.execute("SELECT value, time FROM observations ORDER BY time").fetchall()
    return [(float(value), float(moment)) for value, moment in rows]


def add(value: float) -> None:
    if not math.isfinite(value):
        raise SystemExit(f"simple_service: --add needs a finite number, got {value!r}")
    with closing(connect()) as connection, connection:
        connection.execute("INSERT INTO observations (value, time) VALUES (?, ?)", (value, time.time()))


def stats() -> dict[str, Any]:
    """min, max, median, mean, variance, std dev and size of the observations (``None`` while there are none)."""
    import numpy as np

    values = np.array([value for value, _ in observations()], dtype=float)
    if values.size == 0:
        empty: dict[str, Any] = dict.fromkeys(("min", "max", "median", "mean", "variance", "std dev"))
        return {**empty, "size": 0}
    return {
        "min": float(values.min()),
        "max": float(values.max()),
        "median": float(np.median(values)),
        "mean": float(values.mean()),
        "variance": float(values.var()),
        "std dev": float(values.std()),
        "size": int(values.size),
    }


def plot(kind: str) -> Path:
    """Draw the observations into a new PNG under the output directory and return its path."""
    os.environ.setdefault("MPLCONFIGDIR", str(data_dir() / "matplotlib"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = observations()
    values = [value for value, _ in rows]
    figure, axes = plt.subplots(figsize=(6, 4), dpi=80)
    if kind == "time":
        start = rows[0][1] if rows else 0.0
        axes.plot([t - start for _, t in rows], values, marker=".")
        axes.set_xlabel("seconds since the first observation")
        axes.set_ylabel("value")
    else:
        axes.hist(values, bins=20)
        axes.set_xlabel("value")
        axes.set_ylabel("observations")
    axes.set_title(f"{len(values)} observations")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{kind}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}.png"
    figure.savefig(path, format="png")
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="simple service: stores observations, reports on them")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--add", type=float, metavar="VALUE", help="store one observation")
    action.add_argument("--init", action="store_true", help="create the database")
    action.add_argument("--plot", choices=["time", "dist"], help="draw a PNG; prints its path as JSON")
    action.add_argument("--dump", action="store_true", help="print every observation as JSON")
    action.add_argument("--stats", action="store_true", help="print statistics as JSON")
    args = parser.parse_args(argv)
    if args.init:
        connect().close()
        print(json.dumps({"database": str(data_dir() / DB_NAME)}))
    elif args.add is not None:
        add(args.add)
    elif args.stats:
        print(json.dumps(stats()))
    elif args.plot:
        print(json.dumps(str(plot(args.plot))))
    elif args.dump:
        print(json.dumps([{"value": value, "time": moment} for value, moment in observations()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
