"""No work is left stuck on a provider: a script timeout ends the commands still running (the activity API cannot
kill a batch, so the activity is ended), and nothing queues silently behind a command that will not end.

Real HTTP to a real local node whose providers run commands in bubblewrap sandboxes; synchronised on events
and on the instances' states (bounded waits), never on sleeps. The bounds are the assertions: before, a timed-out
``run`` made ``shutdown`` queue behind the dead command for its whole 15 s, and a stop with a hung command took
as long.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

from golem_api.errors import BatchTimeoutError
from golem_api.events import ScriptSent, ServiceRespawned, ServiceStateChanged
from golem_api.golem import Golem
from golem_api.payload import Payload, VmPayload
from golem_api.services.service import Handler, Service
from golem_local.config import LocalNetworkConfig

pytestmark = pytest.mark.integration

_NETWORK = LocalNetworkConfig.with_providers(2)
_SHUTDOWN_BOUND = 3.0  # the user's shutdown_timeout in the stop test: a cut script may finish within it
_QUICK = _SHUTDOWN_BOUND + 4.0  # seconds: what stopping with a dead command may take (the bound + ending the activity)


class _Base(Service):
    shutdowns: ClassVar[list[str]] = []

    @staticmethod
    async def get_payload() -> Payload:
        return VmPayload(min_mem_gib=0.5, min_storage_gib=1.0)

    async def shutdown(self) -> Handler:
        script = self._ctx.new_script(timeout=10)
        script.run("/bin/true")
        yield script
        self.shutdowns.append(self.name)


class TimesOutInRun(_Base):
    async def run(self) -> Handler:
        script = self._ctx.new_script(timeout=0.5)
        script.run("/bin/sleep", "1000")
        yield script


class TimesOutInStart(_Base):
    async def start(self) -> Handler:
        script = self._ctx.new_script(timeout=0.5)
        script.deploy()
        script.start()
        script.run("/bin/sleep", "1000")
        yield script


class HangsWhenStopped(_Base):
    async def run(self) -> Handler:
        script = self._ctx.new_script()
        script.run("/bin/sleep", "1000")
        yield script


def _running_commands(golem: Golem) -> list[Any]:
    node = golem.local_node
    assert node is not None
    return [command for activity in node.activities.activities() for command in activity.running_commands()]


async def test_a_script_timeout_in_run_ends_its_commands_and_the_instance_fails_at_once() -> None:
    _Base.shutdowns = []
    async with Golem(budget=1, local_network=_NETWORK) as golem:
        running = asyncio.ensure_future(
            golem.bus.wait_for(ServiceStateChanged, lambda e: e.new == "running", timeout=30)
        )
        terminated = asyncio.ensure_future(
            golem.bus.wait_for(ServiceStateChanged, lambda e: e.new == "terminated", timeout=30 + _QUICK)
        )
        cluster = await golem.run_service(TimesOutInRun)
        (instance,) = cluster.instances
        elapsed = ((await terminated).timestamp - (await running).timestamp).total_seconds()
        node = golem.local_node
        assert node is not None
        (activity,) = node.activities.activities()
        assert activity.state.value == "Terminated", "the activity was ended to stop the command"
        assert _running_commands(golem) == []

    assert elapsed < _QUICK
    assert isinstance(instance.exc_info[1], BatchTimeoutError)
    assert "the activity was ended" in str(instance.exc_info[1])
    assert _Base.shutdowns == [], "shutdown could not run anything on the ended activity: it was skipped"


async def test_a_script_timeout_in_start_is_a_failed_start_and_the_instance_is_respawned() -> None:
    _Base.shutdowns = []
    async with Golem(budget=1, local_network=_NETWORK) as golem:
        respawned_event = asyncio.ensure_future(golem.bus.wait_for(ServiceRespawned, timeout=30))
        terminated = asyncio.ensure_future(
            golem.bus.wait_for(ServiceStateChanged, lambda e: e.new == "terminated", timeout=60)
        )
        cluster = await golem.run_service(TimesOutInStart, start_attempts=2)
        respawned = await respawned_event
        await terminated
        node = golem.local_node
        assert node is not None
        activities = node.activities.activities()
        assert len(activities) == 2, "one activity per start attempt"
        assert all(activity.state.value == "Terminated" for activity in activities)
        assert _running_commands(golem) == []
        (instance,) = cluster.instances

    assert "BatchTimeoutError" in respawned.reason
    assert "the activity was ended" in respawned.reason
    assert isinstance(instance.exc_info[1], BatchTimeoutError)


async def test_stopping_with_a_hung_command_ends_it_within_the_shutdown_bound_instead_of_queueing_behind_it() -> None:
    _Base.shutdowns = []
    async with Golem(budget=1, local_network=_NETWORK, shutdown_timeout=_SHUTDOWN_BOUND) as golem:
        sent = asyncio.ensure_future(golem.bus.wait_for(ScriptSent, lambda e: e.commands == ("run",), timeout=30))
        cluster = await golem.run_service(HangsWhenStopped)
        await cluster.wait_running(timeout=30)
        await sent  # the script with the command that never ends is on the provider before the stop comes
        loop = asyncio.get_running_loop()
        stopping_at = loop.time()
        await asyncio.wait_for(cluster.stop(), _QUICK + 5)
        elapsed = loop.time() - stopping_at
        assert _running_commands(golem) == []

    print(f"\nstop with a hung command took {elapsed:.2f} s")
    assert elapsed < _QUICK
    assert [i.state.id for i in cluster.instances] == ["terminated"]
    assert _Base.shutdowns == []
