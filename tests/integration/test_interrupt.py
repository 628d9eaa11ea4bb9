"""Interrupting a run (Ctrl-C under ``asyncio.run`` cancels the main task): services stop, providers are paid,
and it all ends within seconds, even when a ``shutdown`` handler hangs.

Real HTTP to a real local node with sandboxed providers; synchronised on events and futures, never on sleeps.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

from golem_api.events import InvoiceAccepted, ServiceStateChanged, UnpaidAgreementsWarning
from golem_api.golem import INTERRUPTED_STOP_TIMEOUT, Golem
from golem_api.payload import Payload, VmPayload
from golem_api.services.service import Handler, Service
from golem_api.services.state import ServiceState
from golem_local.config import LocalNetworkConfig

pytestmark = pytest.mark.integration

_NETWORK = LocalNetworkConfig.with_providers(2)
EXIT_BOUND = 5.0  # seconds from the interruption to the end of `async with Golem`


class Cleaner(Service):
    """``shutdown`` runs a command and records that it did; with ``hang=True`` it then never returns."""

    shut_down: ClassVar[list[str]] = []

    def __init__(self, *, instance_name: str, hang: bool) -> None:
        self.name = instance_name
        self.hang = hang

    @staticmethod
    async def get_payload() -> Payload:
        return VmPayload(min_mem_gib=0.5, min_storage_gib=1.0)

    async def shutdown(self) -> Handler:
        script = self._ctx.new_script(timeout=10)
        script.run("/bin/echo", "cleaning up")
        yield script
        self.shut_down.append(self.name)
        if self.hang:
            await asyncio.get_running_loop().create_future()  # never resolved: only the bound ends it


async def test_cancelling_a_run_stops_its_services_and_pays_within_seconds() -> None:
    Cleaner.shut_down = []
    golem = Golem(budget=1.0, local_network=_NETWORK, shutdown_timeout=60)  # the interruption's bound wins
    running = asyncio.Event()
    instances: list[Service] = []
    seen: list[Any] = []

    async def main() -> None:
        async with golem:
            golem.bus.subscribe(seen.append, InvoiceAccepted, ServiceStateChanged, UnpaidAgreementsWarning)
            cluster = await golem.run_service(
                Cleaner,
                instance_params=[{"instance_name": "polite", "hang": False}, {"instance_name": "stuck", "hang": True}],
            )
            await cluster.wait_running(timeout=30)
            instances.extend(cluster.instances)
            running.set()
            await asyncio.get_running_loop().create_future()  # runs until interrupted

    task = asyncio.create_task(main())
    await asyncio.wait_for(running.wait(), 30)
    loop = asyncio.get_running_loop()
    interrupted_at = loop.time()
    task.cancel()
    await asyncio.wait({task}, timeout=EXIT_BOUND + 5)
    elapsed = loop.time() - interrupted_at
    print(f"\ninterrupted run ended {elapsed:.2f} s after the cancellation (stop bound {INTERRUPTED_STOP_TIMEOUT} s)")

    assert task.cancelled(), "the cancellation reaches the caller once everything is cleaned up"
    assert elapsed < EXIT_BOUND
    assert sorted(Cleaner.shut_down) == ["polite", "stuck"], "every shutdown handler ran"
    ended = {e.instance: e.new for e in seen if isinstance(e, ServiceStateChanged) and e.new == "terminated"}
    assert ended == {"polite": "terminated", "stuck": "terminated"}
    node = golem.local_node
    assert node is not None
    invoices = node.ledger.invoices()
    assert len(invoices) == 2
    assert all((i.accept_calls, i.status) == (1, "SETTLED") for i in invoices)
    assert golem.spent == sum(i.amount for i in invoices) > 0
    assert [e for e in seen if isinstance(e, UnpaidAgreementsWarning)] == []
    assert golem.clusters == []
    assert [instance.state for instance in instances] == [ServiceState.terminated] * 2


class SlowCleaner(Service):
    """``shutdown`` takes about a second (a real command), then records that it finished."""

    finished: ClassVar[list[str]] = []

    @staticmethod
    async def get_payload() -> Payload:
        return VmPayload(min_mem_gib=0.5, min_storage_gib=1.0)

    async def shutdown(self) -> Handler:
        script = self._ctx.new_script(timeout=10)
        script.run("/bin/sleep", "1")
        yield script
        self.finished.append(self.name)


async def test_interrupting_await_cluster_stop_still_gives_shutdown_its_documented_bound() -> None:
    SlowCleaner.finished = []
    golem = Golem(budget=1.0, local_network=_NETWORK)
    stopping = asyncio.Event()

    async def main() -> None:
        async with golem:
            cluster = await golem.run_service(SlowCleaner)
            await cluster.wait_running(timeout=30)
            golem.bus.subscribe(lambda e: stopping.set(), ServiceStateChanged)
            await cluster.stop()  # interrupted while the shutdown handler runs

    task = asyncio.create_task(main())
    await asyncio.wait_for(stopping.wait(), 30)
    loop = asyncio.get_running_loop()
    interrupted_at = loop.time()
    task.cancel()
    await asyncio.wait({task}, timeout=EXIT_BOUND + 5)
    elapsed = loop.time() - interrupted_at

    assert task.cancelled()
    assert elapsed < EXIT_BOUND
    assert SlowCleaner.finished == ["SlowCleaner-1"], "the 1 s shutdown finished within the 2.5 s bound"
    node = golem.local_node
    assert node is not None
    assert [(i.accept_calls, i.status) for i in node.ledger.invoices()] == [(1, "SETTLED")]
