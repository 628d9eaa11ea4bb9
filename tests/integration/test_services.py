"""Services end to end on the embedded local network: lifecycle, failing commands, respawn, lost activities.

Every test talks real HTTP to a real local node whose providers run commands in bubblewrap sandboxes, and
synchronises on events and futures (a bounded wait each), never on sleeps.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import pytest

from golem_api.errors import CommandExecutionError, ConfigurationError, GolemError
from golem_api.events import (
    AgreementTerminated,
    DebitNoteAccepted,
    DocumentRefused,
    Event,
    InvoiceAccepted,
    ServiceRespawned,
    ServiceStateChanged,
    UnpaidAgreementsWarning,
)
from golem_api.golem import Golem
from golem_api.payload import Payload, VmPayload
from golem_api.services.service import Handler, Service
from golem_api.services.state import ServiceState
from golem_local.config import LocalNetworkConfig

pytestmark = pytest.mark.integration

_NETWORK = LocalNetworkConfig.with_providers(3, debit_note_interval_sec=1)
_LIFECYCLE = [
    ("pending", "starting"),
    ("starting", "running"),
    ("running", "stopping"),
    ("stopping", "terminated"),
]


class _Recorder:
    """Collects events of some classes, and lets a test wait (bounded) for one that matches."""

    def __init__(self, golem: Golem, *kinds: type[Event]) -> None:
        self.events: list[Event] = []
        self._waiters: list[tuple[Callable[[Event], bool], asyncio.Future[Event]]] = []
        golem.bus.subscribe(self._take, *kinds)

    def _take(self, event: Event) -> None:
        self.events.append(event)
        for predicate, future in self._waiters:
            if not future.done() and predicate(event):
                future.set_result(event)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def states(self, instance: str) -> list[tuple[str, str]]:
        return [(e.old, e.new) for e in self.of(ServiceStateChanged) if e.instance == instance]

    def expect(self, predicate: Callable[[Any], bool]) -> Awaitable[Any]:
        """A future for the first event (already seen or to come) that matches ``predicate``."""
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        seen = next((e for e in self.events if predicate(e)), None)
        if seen is not None:
            future.set_result(seen)
        else:
            self._waiters.append((predicate, future))
        return future


def _state(instance: str, new: str) -> Callable[[Any], bool]:
    return lambda e: isinstance(e, ServiceStateChanged) and e.instance == instance and e.new == new


class _VmService(Service):
    @staticmethod
    async def get_payload() -> Payload:
        return VmPayload(min_mem_gib=0.5, min_storage_gib=1.0)


class Ticker(_VmService):
    """Starts a daemon that appends a line every 0.1 s; ``run`` reads how many lines it has written so far."""

    read_every: ClassVar[float] = 0.3  # seconds between two reads

    def __init__(self, *, instance_name: str, reads: asyncio.Queue[int]) -> None:
        self.name = instance_name
        self.reads = reads
        self.daemon_stopped: str | None = None

    async def start(self) -> Handler:
        script = self._ctx.new_script(timeout=30)
        script.deploy()
        script.start()
        script.run(
            "/bin/sh",
            "-c",
            "(while :; do date +%s%N >> /golem/out/log; sleep 0.1; done) > /dev/null 2>&1 & "
            "echo $! > /golem/out/daemon.pid",
        )
        yield script

    async def run(self) -> Handler:
        while True:
            script = self._ctx.new_script(timeout=10)
            count = script.run("/bin/sh", "-c", "test -f /golem/out/log && wc -l < /golem/out/log || echo 0")
            yield script
            result = await count
            assert result.stdout is not None
            self.reads.put_nowait(int(result.stdout.strip()))
            await asyncio.sleep(self.read_every)  # the service's own pace, not a wait for an event

    async def shutdown(self) -> Handler:
        script = self._ctx.new_script(timeout=10)
        stopped = script.run("/bin/sh", "-c", 'kill "$(cat /golem/out/daemon.pid)" && echo stopped')
        yield script
        self.daemon_stopped = (await stopped).stdout


@pytest.mark.slow  # over a second of real processes and waits (the quick run keeps its minute)
async def test_a_service_runs_a_daemon_reads_its_output_and_stops_cleanly() -> None:
    reads: asyncio.Queue[int] = asyncio.Queue()
    golem = Golem(budget=1.0, local_network=_NETWORK, health_check_interval=0.5)
    async with golem:
        recorder = _Recorder(golem, ServiceStateChanged, DebitNoteAccepted, InvoiceAccepted)
        cluster = await golem.run_service(Ticker, instance_params=[{"instance_name": "ticker", "reads": reads}])
        (instance,) = cluster.instances
        assert instance.name == "ticker"
        counts = [await asyncio.wait_for(reads.get(), 30) for _ in range(4)]
        assert instance.state == ServiceState.running
        assert instance.is_available
        assert "running: 1" in repr(cluster)
        agreement_id = instance.ctx.agreement.agreement_id
        # The provider bills every second while the service runs, and each note passes the checks.
        await asyncio.wait_for(
            recorder.expect(lambda e: isinstance(e, DebitNoteAccepted) and e.agreement_id == agreement_id), 15
        )
        await cluster.stop()
        assert instance.state == ServiceState.terminated
        assert not instance.is_available
        assert instance.provider_name in {p.name for p in _NETWORK.providers}

    assert counts == sorted(counts), f"the daemon's log shrank: {counts}"
    assert counts[-1] > counts[0], f"the daemon wrote nothing between reads: {counts}"
    assert instance.daemon_stopped == "stopped\n"
    assert recorder.states("ticker") == _LIFECYCLE
    assert instance.exc_info == (None, None, None)
    node = golem.local_node
    assert node is not None
    invoices = node.ledger.invoices()
    assert [i.agreement_id for i in invoices] == [agreement_id]
    assert [(i.accept_calls, i.status) for i in invoices] == [(1, "SETTLED")]
    assert [e.agreement_id for e in recorder.of(InvoiceAccepted)] == [agreement_id]
    assert golem.spent == invoices[0].amount > 0
    assert golem.spent <= golem.budget


class Resilient(_VmService):
    """A command of ``start`` fails; the handler catches the error at its ``yield`` and goes on."""

    def __init__(self) -> None:
        self.caught: CommandExecutionError | None = None
        self.after: str | None = None

    async def start(self) -> Handler:
        script = self._ctx.new_script(timeout=30)
        script.deploy()
        script.start()
        yield script
        failing = self._ctx.new_script(timeout=10)
        failing.run("/bin/sh", "-c", "echo 'no such thing' >&2; exit 3")
        try:
            yield failing
        except CommandExecutionError as exc:
            self.caught = exc

    async def run(self) -> Handler:
        script = self._ctx.new_script(timeout=10)
        script.run("/bin/echo", "still here")
        results = yield script
        self.after = results[-1].stdout


async def test_a_failed_command_raises_at_the_yield_and_the_handler_goes_on() -> None:
    golem = Golem(budget=1.0, local_network=_NETWORK)
    async with golem:
        recorder = _Recorder(golem, ServiceStateChanged)
        cluster = await golem.run_service(Resilient)
        (instance,) = cluster.instances
        # ``run`` returns after one script: the instance stops by itself.
        await asyncio.wait_for(recorder.expect(_state(instance.name, "terminated")), 30)

    assert instance.caught is not None
    assert instance.caught.stderr is not None
    assert "no such thing" in instance.caught.stderr
    assert instance.after == "still here\n"
    assert recorder.states(instance.name) == _LIFECYCLE
    assert instance.exc_info == (None, None, None)
    assert instance.name == "Resilient-1"


async def test_a_start_that_fails_is_respawned_on_another_provider() -> None:
    class FlakyStart(_VmService):
        attempts: ClassVar[int] = 0

        async def start(self) -> Handler:
            type(self).attempts += 1
            script = self._ctx.new_script(timeout=30)
            script.deploy()
            script.start()
            if type(self).attempts == 1:
                script.run("/bin/sh", "-c", "echo 'first start breaks' >&2; exit 1")
            yield script

    golem = Golem(budget=1.0, local_network=_NETWORK)
    async with golem:
        recorder = _Recorder(golem, ServiceStateChanged, ServiceRespawned, AgreementTerminated)
        cluster = await golem.run_service(FlakyStart)
        (instance,) = cluster.instances
        await cluster.wait_running(timeout=40)
        (respawned,) = recorder.of(ServiceRespawned)
        assert respawned.instance == instance.name
        assert respawned.failed_provider_name is not None
        assert instance.provider_name is not None
        assert instance.provider_name != respawned.failed_provider_name
        assert "first start breaks" in respawned.reason
        failed_exc = instance.exc_info[1]
        assert isinstance(failed_exc, CommandExecutionError)
        await cluster.stop()

    assert FlakyStart.attempts == 2
    assert recorder.states(instance.name) == [
        ("pending", "starting"),
        ("starting", "pending"),
        ("pending", "starting"),
        ("starting", "running"),
        ("running", "stopping"),
        ("stopping", "terminated"),
    ]
    # The failed agreement was ended and, like the good one, invoiced and paid once.
    ended = [e.provider_name for e in recorder.of(AgreementTerminated)]
    assert ended == [respawned.failed_provider_name, instance.provider_name]
    node = golem.local_node
    assert node is not None
    invoices = node.ledger.invoices()
    assert len(invoices) == 2
    assert all(i.accept_calls == 1 for i in invoices)


async def test_a_killed_sandbox_makes_the_instance_unresponsive_within_the_check_interval() -> None:
    interval = 0.5
    golem = Golem(budget=1.0, local_network=_NETWORK, health_check_interval=interval)
    async with golem:
        recorder = _Recorder(golem, ServiceStateChanged, AgreementTerminated, DocumentRefused)
        cluster = await golem.run_service(_VmService)  # default handlers: deploy + start, then wait
        (instance,) = cluster.instances
        await cluster.wait_running(timeout=30)
        node = golem.local_node
        assert node is not None
        activity_id = instance.ctx.activity.activity_id
        agreement_id = instance.ctx.agreement.agreement_id
        runtime: Any = node.activities.get(activity_id).runtime
        assert runtime.sandbox_pid is not None
        unresponsive = recorder.expect(_state(instance.name, "unresponsive"))
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        os.kill(runtime.sandbox_pid, signal.SIGKILL)
        event = await asyncio.wait_for(unresponsive, 4 * interval + 1)
        noticed_after = loop.time() - killed_at
        terminated = await asyncio.wait_for(
            recorder.expect(lambda e: isinstance(e, AgreementTerminated) and e.agreement_id == agreement_id), 10
        )
        assert instance.state == ServiceState.unresponsive
        assert not instance.is_available
        assert repr(cluster).endswith("(unresponsive: 1)>")
        await cluster.stop()  # nothing left to stop: it stays unresponsive
        assert instance.state == ServiceState.unresponsive

    print(f"unresponsive noticed {noticed_after:.2f} s after the kill (interval {interval} s)")
    assert noticed_after <= 2 * interval + 1
    assert "Unresponsive" in (event.reason or "")
    assert terminated.by == "requestor"
    assert recorder.states(instance.name) == [
        ("pending", "starting"),
        ("starting", "running"),
        ("running", "unresponsive"),
    ]
    assert node.activities.get(activity_id).state.value == "Terminated"
    (invoice,) = node.ledger.invoices()
    assert invoice.agreement_id == agreement_id
    assert invoice.accept_calls == 1
    assert recorder.of(DocumentRefused) == []


class Recorded(_VmService):
    """Default start and run; ``shutdown`` leaves a mark, so that a test can tell it ran."""

    shut_down: ClassVar[list[str]] = []

    async def shutdown(self) -> Handler:
        script = self._ctx.new_script(timeout=10)
        script.run("/bin/true")
        yield script
        self.shut_down.append(self.name)


async def test_leaving_golem_stops_running_instances_through_their_shutdown() -> None:
    Recorded.shut_down = []
    golem = Golem(budget=1.0, local_network=_NETWORK)
    async with golem:
        recorder = _Recorder(golem, ServiceStateChanged, UnpaidAgreementsWarning)
        cluster = await golem.run_service(Recorded, num_instances=2)
        await cluster.wait_running(timeout=30)
        assert repr(cluster) == "<Cluster Recorded: 2 instance(s) (running: 2)>"
        providers = {i.provider_name for i in cluster.instances}
        # no cluster.stop(): leaving `async with` must stop it

    assert len(providers) == 2
    assert sorted(Recorded.shut_down) == ["Recorded-1", "Recorded-2"]
    for instance in cluster.instances:
        assert recorder.states(instance.name) == _LIFECYCLE
    assert recorder.of(UnpaidAgreementsWarning) == []
    node = golem.local_node
    assert node is not None
    assert sorted(i.accept_calls for i in node.ledger.invoices()) == [1, 1]


async def test_stopping_a_cluster_at_once_ends_every_instance_and_settles_every_agreement() -> None:
    golem = Golem(budget=1.0, local_network=_NETWORK)
    async with golem:
        recorder = _Recorder(golem, ServiceStateChanged, UnpaidAgreementsWarning)
        cluster = await golem.run_service(_VmService, num_instances=3)
        stopping = cluster.stop()  # yapapi style: a plain call schedules the stop
        assert cluster.stop() is stopping
        await asyncio.wait_for(stopping, 30)
        assert all(i.state == ServiceState.terminated for i in cluster.instances)
        with pytest.raises(GolemError, match="was stopped"):
            cluster.spawn_instances(1)

    for instance in cluster.instances:  # stopped before any got an agreement
        assert recorder.states(instance.name) == [("pending", "terminated")]
    assert recorder.of(UnpaidAgreementsWarning) == []
    assert golem.spent == 0


class SlowStart(Recorded):
    """Deploys, then waits in ``start`` until it is stopped."""

    deployed: ClassVar[asyncio.Future[str] | None] = None

    async def start(self) -> Handler:
        script = self._ctx.new_script(timeout=30)
        script.deploy()
        script.start()
        yield script
        assert self.deployed is not None
        self.deployed.set_result(self.name)
        await asyncio.get_running_loop().create_future()  # never resolved: cancelled by the stop
        yield script


async def test_an_instance_stopped_while_starting_runs_its_shutdown_and_ends_terminated() -> None:
    Recorded.shut_down = []
    SlowStart.deployed = asyncio.get_running_loop().create_future()
    golem = Golem(budget=1.0, local_network=_NETWORK)
    async with golem:
        recorder = _Recorder(golem, ServiceStateChanged, UnpaidAgreementsWarning)
        cluster = await golem.run_service(SlowStart)
        (instance,) = cluster.instances
        assert await asyncio.wait_for(SlowStart.deployed, 30) == instance.name
        assert instance.state == ServiceState.starting
        await cluster.stop_instance(instance)
        assert instance.state == ServiceState.terminated
        await cluster.stop()

    assert recorder.states(instance.name) == [
        ("pending", "starting"),
        ("starting", "stopping"),
        ("stopping", "terminated"),
    ]
    assert Recorded.shut_down == [instance.name]
    assert recorder.of(UnpaidAgreementsWarning) == []
    node = golem.local_node
    assert node is not None
    assert [i.accept_calls for i in node.ledger.invoices()] == [1]


class BrokenRun(Recorded):
    async def run(self) -> Handler:
        script = self._ctx.new_script(timeout=10)
        script.run("/bin/true")
        yield script
        raise RuntimeError("the service broke")


async def test_a_failing_run_shuts_down_and_ends_terminated_without_respawn() -> None:
    Recorded.shut_down = []
    golem = Golem(budget=1.0, local_network=_NETWORK)
    async with golem:
        recorder = _Recorder(golem, ServiceStateChanged, ServiceRespawned)
        cluster = await golem.run_service(BrokenRun)
        (instance,) = cluster.instances
        event = await asyncio.wait_for(recorder.expect(_state(instance.name, "stopping")), 30)
        await asyncio.wait_for(recorder.expect(_state(instance.name, "terminated")), 30)

    assert recorder.states(instance.name) == _LIFECYCLE
    assert "the service broke" in (event.reason or "")
    assert isinstance(instance.exc_info[1], RuntimeError)
    assert Recorded.shut_down == [instance.name]
    assert recorder.of(ServiceRespawned) == []


async def test_a_start_that_keeps_failing_gives_up_after_its_attempts() -> None:
    class NeverStarts(_VmService):
        async def start(self) -> Handler:
            script = self._ctx.new_script(timeout=30)
            script.deploy()
            script.start()
            script.run("/bin/false")
            yield script

    golem = Golem(budget=1.0, local_network=_NETWORK)
    async with golem:
        recorder = _Recorder(golem, ServiceStateChanged, ServiceRespawned)
        cluster = await golem.run_service(NeverStarts, start_attempts=2)
        (instance,) = cluster.instances
        with pytest.raises(GolemError, match="ended before running"):
            await cluster.wait_running(timeout=30)

    assert instance.state == ServiceState.terminated
    assert isinstance(instance.exc_info[1], CommandExecutionError)
    (respawned,) = recorder.of(ServiceRespawned)
    assert respawned.failed_provider_name != instance.provider_name or instance.provider_name is None
    path = recorder.states(instance.name)
    assert path == [
        ("pending", "starting"),
        ("starting", "pending"),
        ("pending", "starting"),
        ("starting", "terminated"),
    ]
    node = golem.local_node
    assert node is not None
    assert [i.accept_calls for i in node.ledger.invoices()] == [1, 1]


async def test_run_service_refuses_bad_arguments_before_publishing_a_demand() -> None:
    class NotAGenerator(_VmService):
        async def run(self) -> None:  # type: ignore[override]
            return None

    golem = Golem(budget=1.0, local_network=_NETWORK)
    async with golem:
        with pytest.raises(TypeError, match=r"NotAGenerator\.run must be an asynchronous generator"):
            await golem.run_service(NotAGenerator)
        with pytest.raises(ConfigurationError, match=r"instance_params\[0\]"):
            await golem.run_service(_VmService, instance_params=[{"colour": "red"}])
        with pytest.raises(ValueError, match="instance_params iterable depleted after 1 spawned instances"):
            await golem.run_service(Recorded, num_instances=2, instance_params=iter([{}]))
        with pytest.raises(ConfigurationError, match=r"Service\.get_payload\(\) returned None"):
            await golem.run_service(Service)
        with pytest.raises(ConfigurationError, match="health_check_interval"):
            await golem.run_service(_VmService, health_check_interval=0)
        assert golem.clusters == []
        node = golem.local_node
        assert node is not None
        assert node.market.subscriptions("demand", node.requestor_id) == []
