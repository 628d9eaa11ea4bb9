"""Benchmark 6, yapapi's side: yapapi 0.13.1 runs the trivial service on a node and times what a user waits for.

Run by yapapi's own interpreter (``.venv-yapapi/bin/python bench/yapapi_side.py``), never imported by golem-api;
``YAGNA_APPKEY`` and ``YAGNA_API_URL`` name the node and ``gftp`` must be on ``PATH`` (yapapi starts it even
when no file moves). :mod:`bench.golem_side` is the same program written with golem-api, step for step:

1. one ``Golem``: ``run_service`` of 1 instance, until its ``run`` handler is entered (time to running, N=1);
   then ``--batches`` one-command batches (``run /bin/true``) from ``run``, each timed from ``yield`` to the
   handler resuming; with ``--big N``, then one batch of N such commands, timed the same way; leave ``Golem``.
2. another ``Golem``: ``run_service`` of ``--instances`` instances until every ``run`` is entered (time to
   running, N=10); then ``cluster.stop()`` until ``Golem`` is exited with its invoices accepted (shutdown).

The demand is the same on both sides: ``golem.runtime.name=vm``, at least 0.5 GiB of memory and 2 GiB of
storage, no image (the node's default). Prints one JSON line with the figures; every wait is bounded.
"""

import argparse
import asyncio
import json
import os
import statistics
import time
from dataclasses import dataclass
from datetime import timedelta

from yapapi import Golem, events
from yapapi.payload import Payload
from yapapi.props import inf
from yapapi.props.base import constraint
from yapapi.services import Service

COMMAND = "/bin/true"


@dataclass
class TrivialPayload(Payload):
    """The vm runtime with the default image of the node: no package to download."""

    runtime: str = constraint(inf.INF_RUNTIME_NAME, default=inf.RUNTIME_VM)
    min_mem_gib: float = constraint(inf.INF_MEM, operator=">=", default=0.5)
    min_storage_gib: float = constraint(inf.INF_STORAGE, operator=">=", default=2.0)


class Progress:
    """Instances that entered ``run``, batch times, and an event when enough of either is reached."""

    def __init__(self, instances: int, batches: int, big: int = 0) -> None:
        self.instances, self.batches = instances, batches
        self.big = big  # commands of one batch sent after the one-command batches (0: none)
        self.big_s = 0.0
        self.big_done = asyncio.Event()
        self.running = 0
        self.times = []
        self.all_running = asyncio.Event()
        self.batches_done = asyncio.Event()

    def entered_run(self) -> None:
        self.running += 1
        if self.running == self.instances:
            self.all_running.set()

    def batch(self, seconds: float) -> None:
        self.times.append(seconds)
        if len(self.times) == self.batches:
            self.batches_done.set()


class Trivial(Service):
    """Default ``start`` (deploy, start) and ``shutdown``; ``run`` sends the wanted batches, then waits."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress

    @staticmethod
    async def get_payload():
        return TrivialPayload()

    async def run(self):
        self.progress.entered_run()
        for _ in range(self.progress.batches):
            script = self._ctx.new_script()
            script.run(COMMAND)
            began = time.perf_counter()
            yield script
            self.progress.batch(time.perf_counter() - began)
        if self.progress.big:
            script = self._ctx.new_script(timeout=timedelta(seconds=60 + self.progress.big))
            for _ in range(self.progress.big):
                script.run(COMMAND)
            began = time.perf_counter()
            yield script
            self.progress.big_s = time.perf_counter() - began
            self.progress.big_done.set()
        await asyncio.Event().wait()  # runs until the cluster stops it


async def main(args: argparse.Namespace) -> dict:
    subnet = os.environ.get("YAGNA_SUBNET", "public")
    progress = Progress(1, args.batches, args.big)
    async with Golem(budget=100.0, subnet_tag=subnet, event_consumer=lambda event: None) as golem:
        began = time.perf_counter()
        await golem.run_service(Trivial, instance_params=[{"progress": progress}])
        await asyncio.wait_for(progress.all_running.wait(), args.timeout)
        ttr_1 = time.perf_counter() - began
        await asyncio.wait_for(progress.batches_done.wait(), args.timeout)
        if args.big:
            await asyncio.wait_for(progress.big_done.wait(), args.timeout + args.big)
    big_s = progress.big_s
    batch_ms = 1000 * statistics.median(progress.times)

    accepted, confirmed = set(), set()

    def count(event: events.Event) -> None:
        if isinstance(event, events.InvoiceAccepted):
            accepted.add(event.agreement.id)
        elif isinstance(event, events.AgreementConfirmed):
            confirmed.add(event.agreement.id)

    progress = Progress(args.instances, 0)
    async with Golem(budget=100.0, subnet_tag=subnet, event_consumer=count) as golem:
        began = time.perf_counter()
        params = [{"progress": progress} for _ in range(args.instances)]
        cluster = await golem.run_service(Trivial, instance_params=params)
        await asyncio.wait_for(progress.all_running.wait(), args.timeout)
        ttr_n = time.perf_counter() - began
        stop_began = time.perf_counter()
        cluster.stop()
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=60.0, help="bound of each wait, in seconds")
    parser.add_argument("--big", type=int, default=0, help="commands of one more batch after the others")
    print(json.dumps(asyncio.run(main(parser.parse_args()))), flush=True)
