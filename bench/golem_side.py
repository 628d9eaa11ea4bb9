"""Benchmark 6, golem-api's side: :mod:`bench.yapapi_side` step for step, written with golem-api.

    python -m bench.golem_side --instances 10 --batches 50     # YAGNA_APPKEY and YAGNA_API_URL name the node

See :mod:`bench.yapapi_side` for the steps; the demand, the service and the figures are the same. Prints one
JSON line with the figures; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import time
from decimal import Decimal

from bench.services import COMMAND
from golem_api import Golem, Service, VmPayload
from golem_api.events import AgreementConfirmed, Event, InvoiceAccepted
from golem_api.payload import Payload
from golem_api.services.service import Handler

__all__ = ["Progress", "Trivial", "main", "measure"]


class Progress:
    """Instances that entered ``run``, batch times, and an event when enough of either is reached."""

    def __init__(self, instances: int, batches: int, big: int = 0) -> None:
        self.instances, self.batches = instances, batches
        self.big = big  # commands of one batch sent after the one-command batches (0: none)
        self.big_s = 0.0
        self.big_done = asyncio.Event()
        self.running = 0
        self.times: list[float] = []
        self.all_running = asyncio.Event()
        self.batches_done = asyncio.Event()

    def entered_run(self) -> None:
        """One more instance is running."""
        self.running += 1
        if self.running == self.instances:
            self.all_running.set()

    def batch(self, seconds: float) -> None:
        """One more batch took ``seconds``."""
        self.times.append(seconds)
        if len(self.times) == self.batches:
            self.batches_done.set()


class Trivial(Service):
    """Default ``start`` (deploy, start) and ``shutdown``; ``run`` sends the wanted batches, then waits."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    @staticmethod
    async def get_payload() -> Payload | None:
        """The vm runtime with the default image of the node (0.5 GiB memory, 2 GiB storage)."""
        return VmPayload(min_mem_gib=0.5, min_storage_gib=2.0)

    async def run(self) -> Handler:
        """Enter, send the batches one after the other, then wait to be stopped."""
        self.progress.entered_run()
        for _ in range(self.progress.batches):
            script = self.ctx.new_script()
            script.run(COMMAND)
            began = time.perf_counter()
            yield script
            self.progress.batch(time.perf_counter() - began)
        if self.progress.big:
            script = self.ctx.new_script(timeout=60 + self.progress.big)
            for _ in range(self.progress.big):
                script.run(COMMAND)
            began = time.perf_counter()
            yield script
            self.progress.big_s = time.perf_counter() - began
            self.progress.big_done.set()
        await asyncio.get_running_loop().create_future()  # runs until the cluster stops it


async def measure(instances: int, batches: int, timeout: float, big: int = 0) -> dict[str, float]:
    """The two sessions of the module docstring of :mod:`bench.yapapi_side`; the figures."""
    subnet = os.environ.get("YAGNA_SUBNET", "public")
    progress = Progress(1, batches, big)
    async with Golem(budget=Decimal(100), subnet_tag=subnet, event_consumer=None) as golem:
        began = time.perf_counter()
        await golem.run_service(Trivial, instance_params=[{"progress": progress}])
        await asyncio.wait_for(progress.all_running.wait(), timeout)
        ttr_1 = time.perf_counter() - began
        await asyncio.wait_for(progress.batches_done.wait(), timeout)
        if big:
            await asyncio.wait_for(progress.big_done.wait(), timeout + big)
    big_s = progress.big_s
    batch_ms = 1000 * statistics.median(progress.times)

    accepted: set[str] = set()
    confirmed: set[str] = set()

    def count(event: Event) -> None:
        if isinstance(event, InvoiceAccepted):
            accepted.add(event.agreement_id)
        elif isinstance(event, AgreementConfirmed):
            confirmed.add(event.agreement_id)

    progress = Progress(instances, 0)
    async with Golem(budget=Decimal(100), subnet_tag=subnet, event_consumer=count) as golem:
        began = time.perf_counter()
        params = [{"progress": progress} for _ in range(instances)]
        cluster = await golem.run_service(Trivial, instance_params=params)
        await asyncio.wait_for(progress.all_running.wait(), timeout)
        ttr_n = time.perf_counter() - began
        stop_began = time.perf_counter()
        await cluster.stop()
    shutdown = time.perf_counter() - stop_began
    return {
        "ttr_1": ttr_1,
        "ttr_n": ttr_n,
        "batch_ms": batch_ms,
        "big_s": big_s,
        "shutdown": shutdown,
        "agreements": len(confirmed),
        "invoices": len(accepted & confirmed),
    }


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, measure, print the JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.golem_side", description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=60.0, help="bound of each wait, in seconds")
    parser.add_argument("--big", type=int, default=0, help="commands of one more batch after the others")
    args = parser.parse_args(argv)
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    print(json.dumps(asyncio.run(measure(args.instances, args.batches, args.timeout, args.big))), flush=True)


if __name__ == "__main__":
    main()
