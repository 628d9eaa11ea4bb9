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
import time
from decimal import Decimal

import psutil  # type: ignore[import-untyped]

from bench.services import Trivial
from golem_api import Golem
from golem_api.events import AgreementTerminated, Event, ServiceRespawned

__all__ = ["main", "measure"]


async def measure(
    url: str, app_key: str, instances: int, windows: int, window: float, budget: Decimal = Decimal(1000)
) -> dict[str, object]:
    """Run the instances, then sample RSS (MB) and CPU (% of a core) over each idle window.

    ``budget`` must cover the whole run: a thousand providers of the default network cost some 5 GLM a second
    together, and every instance is ended once the budget is spent (as the requestor should).
    """
    me = psutil.Process()
    rss_before = me.memory_info().rss / 1e6
    lost: list[str] = []  # why each instance that failed to start did (it was tried again elsewhere)
    ended_idle: list[str] = []  # why each agreement that ended while the instances idled did

    def count_lost(event: Event) -> None:
        if isinstance(event, ServiceRespawned):
            lost.append(event.reason)
        elif isinstance(event, AgreementTerminated) and idling:
            ended_idle.append(event.reason)

    idling = False
    async with Golem(budget=budget, app_key=app_key, api_url=url, event_consumer=count_lost) as golem:
        began = time.perf_counter()
        cluster = await golem.run_service(Trivial, num_instances=instances)
        await cluster.wait_running(timeout=300)
        running_after = time.perf_counter() - began
        idling = True
        rss: list[float] = []
        cpu: list[float] = []
        running: list[int] = []  # instances running at the end of each window
        for _ in range(windows):
            before = me.cpu_times()
            start = time.perf_counter()
            await asyncio.sleep(window)  # the idle window being measured, not a wait for an event
            spent = time.perf_counter() - start
            after = me.cpu_times()
            cpu.append(max(0.0, 100 * (after.user + after.system - before.user - before.system) / spent))
            rss.append(me.memory_info().rss / 1e6)
            running.append(sum(1 for i in cluster.instances if i.state.id == "running"))
        idling = False
        stop_began = time.perf_counter()
        await cluster.stop()
    return {
        "instances": instances,
        "running_after_s": running_after,
        "lost": len(lost),
        "lost_reasons": sorted(set(lost))[:5],
        "running": running,
        "lost_idle": instances - min(running, default=instances),
        "ended_idle": len(ended_idle),
        "ended_idle_reasons": sorted(set(ended_idle))[:5],
        "spent": str(golem.spent),
        "rss_mb": rss,
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
    args = parser.parse_args(argv)
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    figures = asyncio.run(measure(args.url, args.app_key, args.instances, args.windows, args.window, args.budget))
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
