"""Baselines on the host: the same command spawned plainly, one at a time or from several workers at once."""

from __future__ import annotations

import asyncio
import time

from bench.services import COMMAND

__all__ = ["spawn_rate", "spawn_times"]


async def _spawn() -> None:
    process = await asyncio.create_subprocess_exec(COMMAND)
    code = await asyncio.wait_for(process.wait(), 10)
    if code != 0:
        raise RuntimeError(f"{COMMAND} exited with {code} on the host; the baseline needs a working {COMMAND}")


async def spawn_times(count: int) -> list[float]:
    """``count`` plain spawns of the command, one after the other: each one's time in seconds."""
    times = []
    for _ in range(count):
        began = time.perf_counter()
        await _spawn()
        times.append(time.perf_counter() - began)
    return times


async def spawn_rate(workers: int, per_worker: int) -> float:
    """Spawns per second with ``workers`` concurrent workers, each spawning the command ``per_worker`` times."""

    async def worker() -> None:
        for _ in range(per_worker):
            await _spawn()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return workers * per_worker / (time.perf_counter() - began)
