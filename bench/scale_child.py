"""Benchmark 5, the measured process: a requestor with many running instances, on a node in another process.

    python -m bench.scale_child --url URL --app-key KEY --instances 200 --windows 5 --window 3

Starts ``Golem`` against the node (whose runtime spawns nothing), runs the trivial service on every instance
until all are ``running``, then measures this process while it idles: its resident memory (RSS) and its CPU
use (user + system seconds over wall seconds, in % of one core) in each of ``--windows`` windows. Prints one
JSON line with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from decimal import Decimal

import psutil  # type: ignore[import-untyped]

from bench.services import Trivial
from golem_api import Golem
from golem_api.events import ActivityCreated, AgreementTerminated, AllocationCreated, Event, ServiceRespawned

__all__ = ["main", "measure"]


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def _window(window: float, *processes: psutil.Process) -> list[float]:
    """Sleep ``window`` s; the CPU of each process over it, in % of a core."""
    before = [_cpu_seconds(p) for p in processes]
    start = time.perf_counter()
    await asyncio.sleep(window)  # the idle window being measured, not a wait for an event
    spent = time.perf_counter() - start
    return [max(0.0, 100 * (_cpu_seconds(p) - b) / spent) for p, b in zip(processes, before, strict=True)]


async def _floor(
    url: str, app_key: str, allocation: str, activities: list[str], windows: int, window: float, node: psutil.Process
) -> tuple[list[float], list[float], list[float]]:
    """Run ``bench.idle_floor`` on the same activities beside this requestor for ``windows`` windows (after one
    of warm-up); per window the CPU of the floor process, of this process and of the node."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.idle_floor",
        *("--url", url, "--app-key", app_key, "--allocation", allocation),
        stdin=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None
    process.stdin.write("".join(f"{a}\n" for a in activities).encode())
    await process.stdin.drain()
    process.stdin.close()
    floor_cpu: list[float] = []
    mine: list[float] = []
    node_cpu: list[float] = []
    try:
        polling = psutil.Process(process.pid)
        await _window(window, polling)  # warm-up: the floor's connections open
        for _ in range(windows):
            floor, me, at_node = await _window(window, polling, psutil.Process(), node)
            floor_cpu.append(floor)
            mine.append(me)
            node_cpu.append(at_node)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), 30)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
    return floor_cpu, mine, node_cpu


async def measure(
    url: str,
    app_key: str,
    instances: int,
    windows: int,
    window: float,
    budget: Decimal = Decimal(1000),
    node_pid: int | None = None,
    floor_windows: int = 0,
) -> dict[str, object]:
    """Run the instances, then sample RSS (MB) and CPU (% of a core) over each idle window.

    ``budget`` must cover the whole run: a thousand providers of the default network cost some 5 GLM a second
    together, and every instance is ended once the budget is spent (as the requestor should). With
    ``node_pid`` the node's CPU and RSS are sampled in the same windows, and ``floor_windows`` more windows
    then run the bare polling floor (:mod:`bench.idle_floor`) beside the requestor.
    """
    me = psutil.Process()
    node = psutil.Process(node_pid) if node_pid is not None else None
    rss_before = me.memory_info().rss / 1e6
    lost: list[str] = []  # why each instance that failed to start did (it was tried again elsewhere)
    ended_idle: list[str] = []  # why each agreement that ended while the instances idled did
    activities: list[str] = []
    allocations: list[str] = []

    def count_lost(event: Event) -> None:
        if isinstance(event, ServiceRespawned):
            lost.append(event.reason)
        elif isinstance(event, AgreementTerminated) and idling:
            ended_idle.append(event.reason)
        elif isinstance(event, ActivityCreated):
            activities.append(event.activity_id)
        elif isinstance(event, AllocationCreated):
            allocations.append(event.allocation_id)

    idling = False
    async with Golem(budget=budget, app_key=app_key, api_url=url, event_consumer=count_lost) as golem:
        began, cpu_began = time.perf_counter(), time.process_time()
        cluster = await golem.run_service(Trivial, num_instances=instances)
        await cluster.wait_running(timeout=300)
        running_after = time.perf_counter() - began
        start_cpu = time.process_time() - cpu_began
        idling = True
        rss: list[float] = []
        cpu: list[float] = []
        node_cpu: list[float] = []
        node_rss: list[float] = []
        running: list[int] = []  # instances running at the end of each window
        for _ in range(windows):
            measured = await _window(window, me, *([node] if node else []))
            cpu.append(measured[0])
            rss.append(me.memory_info().rss / 1e6)
            if node is not None:
                node_cpu.append(measured[1])
                node_rss.append(node.memory_info().rss / 1e6)
            running.append(sum(1 for i in cluster.instances if i.state.id == "running"))
        floor: tuple[list[float], list[float], list[float]] = ([], [], [])
        if node is not None and floor_windows:
            live = [i.ctx.activity.activity_id for i in cluster.instances if i.state.id == "running"]
            floor = await _floor(url, app_key, allocations[0], live, floor_windows, window, node)
        idling = False
        stop_began = time.perf_counter()
        await cluster.stop()
    return {
        "instances": instances,
        "running_after_s": running_after,
        "start_cpu_s": start_cpu,
        "lost": len(lost),
        "lost_reasons": sorted(set(lost))[:5],
        "running": running,
        "lost_idle": instances - min(running, default=instances),
        "ended_idle": len(ended_idle),
        "ended_idle_reasons": sorted(set(ended_idle))[:5],
        "spent": str(golem.spent),
        "rss_mb": rss,
        "node_cpu_percent": node_cpu,
        "node_rss_mb": node_rss,
        "floor_cpu_percent": floor[0],
        "cpu_beside_floor_percent": floor[1],
        "node_cpu_beside_floor_percent": floor[2],
        "cpu_percent": cpu,
        "rss_before_mb": rss_before,
        "stopped_after_s": time.perf_counter() - stop_began,
    }


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, measure, print the JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.scale_child", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--app-key", required=True)
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--window", type=float, default=3.0, help="seconds of each idle window")
    parser.add_argument("--budget", type=Decimal, default=Decimal(1000), help="GLM for the whole run")
    parser.add_argument("--node-pid", type=int, default=None, help="the node's process, sampled in the same windows")
    parser.add_argument("--floor-windows", type=int, default=0, help="windows of the bare polling floor beside")
    args = parser.parse_args(argv)
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    figures = asyncio.run(
        measure(
            args.url,
            args.app_key,
            args.instances,
            args.windows,
            args.window,
            args.budget,
            node_pid=args.node_pid,
            floor_windows=args.floor_windows,
        )
    )
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
