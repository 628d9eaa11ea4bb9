"""What moving a file costs: upload and download of one file through the local node, against a local copy.

Uploads a file of ``MB`` megabytes (random bytes, 256 by default) into an activity with ``upload_file``, then
downloads it back with ``download_file``, in one process (the node and the requestor together), and prints
each one's throughput, the growth of the process's peak resident memory (``ru_maxrss``) over each, and the
floor measured right after: the same file copied on the host and hashed with SHA3-256.

Run: ``.venv/bin/python -m bench.bench_transfer [MB]`` (needs bubblewrap).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from golem_api import Golem, LocalNetworkConfig, VmPayload

__all__ = ["main", "measure"]


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def measure(megabytes: int) -> dict[str, float]:
    """Upload and download throughputs (MB/s), peak memory growth (MiB) of each, and the host floors (MB/s)."""
    size = megabytes * 1_000_000
    network = LocalNetworkConfig.with_providers(1, debit_note_interval_sec=3600)
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "source"
        with source.open("wb") as file:
            for _ in range(megabytes):
                file.write(os.urandom(1_000_000))
        back = Path(scratch) / "back"
        async with Golem(budget=1.0, local_network=network, event_consumer=None) as golem:
            agreement = await (await golem.create_demand(VmPayload())).agreement(timeout=30)
            activity = await agreement.create_activity()
            ctx = golem.work_context(activity)
            script = ctx.new_script(timeout=60)
            script.deploy()
            script.start()
            await ctx.run_script(script)
            figures: dict[str, float] = {}
            for name, add in (
                ("upload", lambda s: s.upload_file(source, "/golem/work/file")),
                ("download", lambda s: s.download_file("/golem/work/file", back)),
            ):
                script = ctx.new_script(timeout=600)
                add(script)
                before = _peak_mib()
                began = time.perf_counter()
                await ctx.run_script(script)
                figures[f"{name} MB/s"] = megabytes / (time.perf_counter() - began)
                figures[f"{name} peak +MiB"] = _peak_mib() - before
            await agreement.terminate()
        if back.stat().st_size != size:
            raise RuntimeError(f"downloaded {back.stat().st_size} bytes of {size}")
        began = time.perf_counter()
        shutil.copyfile(source, Path(scratch) / "copy")
        figures["host copy MB/s"] = megabytes / (time.perf_counter() - began)
        began = time.perf_counter()
        digest = hashlib.sha3_256()
        with source.open("rb") as file:
            while block := file.read(1 << 20):
                digest.update(block)
        figures["host SHA3-256 MB/s"] = megabytes / (time.perf_counter() - began)
    return figures


def main() -> None:
    """Measure and print one line per figure."""
    megabytes = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    for name, value in asyncio.run(measure(megabytes)).items():
        print(f"{name}: {value:.1f}")


if __name__ == "__main__":
    main()
