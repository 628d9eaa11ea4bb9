"""Benchmarks 1-4: ``Golem`` on its embedded local network (sandboxed providers), against plain host spawns.

Each function takes the number of runs and returns a :class:`~bench.stats.Result`. A run is timed with
``time.perf_counter``; all waits are bounded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

from bench.host import spawn_rate, spawn_times
from bench.services import BatchLoop, Probe, Trivial
from bench.stats import Figure, Result, Target, medians
from golem_api import Golem
from golem_api.events import Event, InvoiceAccepted, UnpaidAgreementsWarning
from golem_local.config import LocalNetworkConfig

__all__ = ["big_batch", "command_overhead", "shutdown", "throughput", "time_to_running"]

BUDGET = Decimal(100)
RUNNING_TIMEOUT = 120.0  # seconds for every instance of a run to be running
BATCH_TIMEOUT = 120.0  # seconds for a round of batches


@asynccontextmanager
async def _golem(providers: int, **config: Any) -> AsyncIterator[Golem]:
    network = LocalNetworkConfig.with_providers(providers, **config)
    async with Golem(budget=BUDGET, local_network=network, event_consumer=None) as golem:
        yield golem


async def time_to_running(runs: int, sizes: tuple[int, ...] = (1, 10, 50)) -> Result:
    """Benchmark 2: ``run_service`` of N trivial instances on N providers until all are ``running``."""
    samples: dict[int, list[float]] = {n: [] for n in sizes}
    for _ in range(runs):
        for n in sizes:
            async with _golem(n) as golem:
                began = time.perf_counter()
                cluster = await golem.run_service(Trivial, num_instances=n)
                await cluster.wait_running(timeout=RUNNING_TIMEOUT)
                samples[n].append(time.perf_counter() - began)
                await cluster.stop()
    return Result(
        key="time_to_running",
        title="Time to running",
        figures=[Figure(f"N={n}", "s", samples[n]) for n in sizes],
        targets=[Target("N=10", "at most", 2.0), Target("N=50", "at most", 6.0)],
        notes=(
            "From `golem.run_service(Trivial, num_instances=N)` to `cluster.wait_running()` returning, on a fresh "
            "local network of N providers (node start-up not counted): demand, offers, negotiation, agreements, "
            "activities, and each instance's `deploy` + `start` (a bubblewrap sandbox with its agent)."
        ),
    )


async def command_overhead(runs: int, batches: int = 100) -> Result:
    """Benchmark 1: a one-command batch through ``Golem`` → local node → sandbox, against a host spawn."""
    golem_ms: list[float] = []
    host_ms: list[float] = []
    overhead_ms: list[float] = []
    ratio: list[float] = []
    probe = Probe()
    async with _golem(1) as golem:
        cluster = await golem.run_service(BatchLoop, instance_params=[{"probe": probe}])
        await cluster.wait_running(timeout=RUNNING_TIMEOUT)
        await probe.measure(10, BATCH_TIMEOUT)  # warm-up
        for _ in range(runs):
            batch = medians(await probe.measure(batches, BATCH_TIMEOUT)) * 1000
            host = medians(await spawn_times(batches)) * 1000
            golem_ms.append(batch)
            host_ms.append(host)
            overhead_ms.append(batch - host)
            ratio.append(batch / host)
        await cluster.stop()
    return Result(
        key="command_overhead",
        title="Command overhead",
        figures=[
            Figure("batch", "ms", golem_ms),
            Figure("host spawn", "ms", host_ms),
            Figure("overhead", "ms", overhead_ms),
            Figure("ratio", "×", ratio),
        ],
        targets=[Target("overhead", "at most", 5.0), Target("ratio", "at most", 1.5)],
        notes=(
            f"Per run: the median of {batches} one-command batches (`run /bin/true`) sent one after the other from "
            "a service's `run` handler (from `yield script` to the handler resuming with the result), and the "
            f"median of {batches} plain `asyncio.create_subprocess_exec('/bin/true')` on the host, measured right "
            "after. Overhead = batch − host spawn; ratio = batch / host spawn."
        ),
    )


async def big_batch(runs: int, commands: int = 1000) -> Result:
    """One batch of ``commands`` commands, against as many one-command batches and as many host spawns."""
    big_s: list[float] = []
    singles_s: list[float] = []
    host_s: list[float] = []
    probe = Probe()
    async with _golem(1) as golem:
        cluster = await golem.run_service(BatchLoop, instance_params=[{"probe": probe}])
        await cluster.wait_running(timeout=RUNNING_TIMEOUT)
        await probe.measure(10, BATCH_TIMEOUT)  # warm-up
        for _ in range(runs):
            probe.commands = commands
            big_s.append(sum(await probe.measure(1, BATCH_TIMEOUT + commands)))
            probe.commands = 1
            singles_s.append(sum(await probe.measure(commands, BATCH_TIMEOUT + commands)))
            host_s.append(sum(await spawn_times(commands)))
        await cluster.stop()
    return Result(
        key="big_batch",
        title=f"One batch of {commands} commands",
        figures=[
            Figure("one batch", "s", big_s),
            Figure(f"{commands} one-command batches", "s", singles_s),
            Figure(f"{commands} host spawns", "s", host_s),
            Figure("batch / one-command batches", "×", [b / s for b, s in zip(big_s, singles_s, strict=True)]),
            Figure("batch / host spawns", "×", [b / h for b, h in zip(big_s, host_s, strict=True)]),
        ],
        targets=[Target("batch / one-command batches", "at most", 1.0)],
        notes=(
            f"Per run, on one instance: one batch of {commands} `run /bin/true` commands (from `yield script` to the "
            f"handler resuming with the {commands} results), then {commands} one-command batches one after the "
            f"other (summed), then {commands} host spawns of `/bin/true` one after the other (summed). The agent in "
            "the sandbox spawns each command, so the host spawns are a floor below the agent's own."
        ),
    )


async def throughput(runs: int, activities: int = 10, per_activity: int = 50) -> Result:
    """Benchmark 3: one-command batches per second across concurrent activities, against host spawns."""
    golem_rate: list[float] = []
    host_rate: list[float] = []
    fraction: list[float] = []
    probes = [Probe() for _ in range(activities)]
    async with _golem(activities) as golem:
        cluster = await golem.run_service(BatchLoop, instance_params=[{"probe": p} for p in probes])
        await cluster.wait_running(timeout=RUNNING_TIMEOUT)
        await _all(probes, 3)  # warm-up, of both sides
        await spawn_rate(activities, 3)
        for _ in range(runs):
            began = time.perf_counter()
            await _all(probes, per_activity)
            rate = activities * per_activity / (time.perf_counter() - began)
            host = await spawn_rate(activities, per_activity)
            golem_rate.append(rate)
            host_rate.append(host)
            fraction.append(100 * rate / host)
        await cluster.stop()
    return Result(
        key="throughput",
        title="Throughput",
        figures=[
            Figure("golem-api", "batches/s", golem_rate),
            Figure("host spawns", "spawns/s", host_rate),
            Figure("fraction", "%", fraction),
        ],
        targets=[Target("fraction", "at least", 50.0)],
        notes=(
            f"Per run: {activities} instances (one activity each, on {activities} providers) each send "
            f"{per_activity} one-command batches (`run /bin/true`) back to back, all at once; the rate is the "
            f"batches over the wall time until the last one is back. The host baseline spawns `/bin/true` from "
            f"{activities} concurrent workers, {per_activity} each, right after. Fraction = rate / host rate."
        ),
    )


async def _all(probes: list[Probe], count: int) -> None:
    await asyncio.gather(*(probe.measure(count, BATCH_TIMEOUT) for probe in probes))


class _Payments:
    """An event consumer that keeps the agreements whose invoice was accepted, and unpaid warnings."""

    def __init__(self) -> None:
        self.accepted: set[str] = set()
        self.unpaid: list[Event] = []

    def __call__(self, event: Event) -> None:
        if isinstance(event, InvoiceAccepted):
            self.accepted.add(event.agreement_id)
        elif isinstance(event, UnpaidAgreementsWarning):
            self.unpaid.append(event)


async def shutdown(runs: int, instances: int = 10) -> Result:
    """Benchmark 4: from ``cluster.stop()`` with running instances to ``Golem`` exited, every invoice accepted."""
    seconds: list[float] = []
    for _ in range(runs):
        payments = _Payments()
        network = LocalNetworkConfig.with_providers(instances)
        golem = Golem(budget=BUDGET, local_network=network, event_consumer=payments)
        async with golem:
            cluster = await golem.run_service(Trivial, num_instances=instances)
            await cluster.wait_running(timeout=RUNNING_TIMEOUT)
            began = time.perf_counter()
            await cluster.stop()
        seconds.append(time.perf_counter() - began)
        agreements = {a.agreement_id for a in golem.agreements}
        if payments.unpaid or not agreements or payments.accepted != agreements:
            raise RuntimeError(
                f"shutdown run ended with {len(payments.accepted)} of {len(agreements)} invoices accepted "
                f"({payments.unpaid}); "
                "the figure would not be a complete shutdown"
            )
    return Result(
        key="shutdown",
        title="Shutdown",
        figures=[Figure("shutdown", "s", seconds)],
        targets=[Target("shutdown", "at most", 2.0)],
        notes=(
            f"From `await cluster.stop()` with {instances} running instances (on {instances} providers) to the end "
            "of `async with Golem(...)`: each instance's `shutdown` (`terminate`), activities destroyed, "
            "agreements terminated, every invoice received and accepted (checked: one `InvoiceAccepted` per "
            "agreement, no unpaid warning), the allocation released and the local network stopped."
        ),
    )
