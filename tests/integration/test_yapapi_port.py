"""What a port of yapapi's examples writes, run on the local network: each test is code as yapapi has it.

Each test closes one of the port blockers listed in ``docs/yapapi.md`` (the ones that need a provider; the
others are in ``tests/unit/test_yapapi_names.py``): handlers that await what their ``yield`` gives, scripts with
a ``timedelta`` timeout or ``wait_for_results=False``, the usage, cost and raw state the examples print, a
service's ``id`` and ``super().__init__()``, an ``async def reset``, ``download_bytes(src, on_download, limit)``,
``run(stdout=…, stderr=…)`` capture modes, and the low-level path from an agreement to a work context.
Waits are bounded and synchronised on events, never on sleeps.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest

from golem_api import (
    ActivityUsage,
    BatchTimeoutError,
    CaptureContext,
    CommandExecutionError,
    ConfigurationError,
    Golem,
    LocalNetworkConfig,
    Payload,
    Service,
    ServiceState,
    VmPayload,
    WorkContext,
)
from golem_api.events import ServiceRespawned, ServiceStateChanged

pytestmark = pytest.mark.integration

BOUND = 30.0
NETWORK = LocalNetworkConfig.with_providers(2)


def golem() -> Golem:
    return Golem(budget=1.0, local_network=NETWORK, invoice_timeout=10)


class VmService(Service):
    @staticmethod
    async def get_payload() -> Payload:
        return VmPayload(min_mem_gib=0.5, min_storage_gib=1.0)


async def run_until(golem: Golem, service_class: type[Service], state: str, **kwargs: Any) -> list[Service]:
    """Run one instance of ``service_class`` and wait (bounded) until it reaches ``state``."""
    reached = asyncio.Event()

    def watch(event: Any) -> None:
        if isinstance(event, ServiceStateChanged) and event.new == state:
            reached.set()

    golem.bus.subscribe(watch, ServiceStateChanged)
    cluster = await golem.run_service(service_class, **kwargs)
    await asyncio.wait_for(reached.wait(), BOUND)
    return list(cluster.instances)


def format_usage(usage: Any) -> dict[str, Any]:
    """yapapi's ``examples/utils.format_usage``, unchanged."""
    return {
        "current_usage": usage.current_usage,
        "timestamp": usage.timestamp.isoformat(sep=" ") if usage.timestamp else None,
    }


async def test_a_service_handler_awaits_the_future_results_of_its_yield() -> None:
    seen: list[str] = []

    class Stats(VmService):
        async def run(self) -> Any:
            script = self._ctx.new_script()
            script.run("/bin/sh", "-c", "echo '{\"size\": 3}'")
            script.run("/bin/echo", "plot.png")
            future_results = yield script
            results = await future_results
            stats = results[0].stdout.strip()
            plot = results[1].stdout.strip().strip('"')
            seen.extend([stats, plot])

    async with golem() as engine:
        await run_until(engine, Stats, "terminated")

    assert seen == ['{"size": 3}', "plot.png"]


async def test_a_timedelta_timeout_raises_batch_timeout_error_at_the_yield() -> None:
    caught: list[BatchTimeoutError] = []

    class Slow(VmService):
        async def run(self) -> Any:
            script = self._ctx.new_script(timeout=timedelta(milliseconds=300))
            script.run("/bin/sleep", "2")
            try:
                yield script
            except BatchTimeoutError as exc:
                caught.append(exc)

    async with golem() as engine:
        await run_until(engine, Slow, "terminated")

    (error,) = caught
    assert error.timeout == pytest.approx(0.3)
    assert "0.3 s" in str(error)


@pytest.mark.slow  # over a second of real processes and waits (the quick run keeps its minute)
async def test_wait_for_results_false_resumes_at_once_and_the_results_come_later() -> None:
    checks: list[Any] = []

    class Async(VmService):
        async def run(self) -> Any:
            script = self._ctx.new_script(wait_for_results=False)
            script.run("/bin/sh", "-c", "sleep 1; echo done")
            future_results = yield script
            checks.append(future_results.done())  # the provider is still sleeping
            results = await future_results
            checks.append(results[0].stdout)

    async with golem() as engine:
        await run_until(engine, Async, "terminated")

    assert checks == [False, "done\n"]


async def test_usage_cost_and_raw_state_as_the_examples_print_them() -> None:
    printed: list[dict[str, Any]] = []

    class CustomCounterService(VmService):
        def __init__(self, *args: Any, running_rounds: int, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._running_rounds = running_rounds

        async def run(self) -> Any:
            for _ in range(self._running_rounds):
                script = self._ctx.new_script()
                script.run("/bin/sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done")
                yield script
                usage: ActivityUsage = await self._ctx.get_usage()
                cost = await self._ctx.get_cost()
                raw_state = await self._ctx.get_raw_state()
                printed.append(
                    {
                        "id": self.id,
                        "usage": format_usage(usage),
                        "counters": usage.current_usage,
                        "cost": cost,
                        "state": raw_state.state,
                        "ctx id": self._ctx.id,
                    }
                )

    async with golem() as engine:
        (instance,) = await run_until(
            engine, CustomCounterService, "terminated", instance_params=[{"running_rounds": 2}]
        )

    assert len(printed) == 2
    first, second = printed
    assert first["id"] == second["id"] == instance.id
    assert len(instance.id) == 36, "a UUID, as yapapi's"
    assert set(first["counters"]) == {"golem.usage.duration_sec", "golem.usage.cpu_sec"}
    assert second["counters"]["golem.usage.duration_sec"] >= first["counters"]["golem.usage.duration_sec"]
    assert datetime.fromisoformat(first["usage"]["timestamp"]).tzinfo is not None
    assert 0 < first["cost"] <= second["cost"]
    assert first["state"] == "Ready"
    assert isinstance(first["ctx id"], str)
    assert instance.state.value == "terminated"
    assert {instance.id, instance.state.value} == {instance.id, "terminated"}  # what print_instances shows


async def test_an_async_reset_is_awaited_before_the_instance_starts_again() -> None:
    calls: list[str] = []

    class Flaky(VmService):
        def __init__(self) -> None:
            super().__init__()
            self.starts = 0

        async def start(self) -> Any:
            self.starts += 1
            async for script in super().start():
                yield script
            if self.starts == 1:
                script = self._ctx.new_script()
                script.run("/bin/false")
                yield script

        async def reset(self) -> None:
            await super().reset()  # yapapi's base reset is a coroutine; so is golem-api's awaitable
            await asyncio.sleep(0)
            calls.append(f"reset after {self.starts} start(s)")

    async with golem() as engine:
        respawned: list[Any] = []
        engine.bus.subscribe(respawned.append, ServiceRespawned)
        (instance,) = await run_until(engine, Flaky, "running")
        assert instance.state == ServiceState.running

    assert calls == ["reset after 1 start(s)"]
    assert len(respawned) == 1


async def test_download_bytes_and_json_call_on_download_as_yapapi_passes_it() -> None:
    received: dict[str, Any] = {}
    failures: list[CommandExecutionError] = []

    class Downloads(VmService):
        async def run(self) -> Any:
            async def on_stats(out: bytes) -> None:
                received["bytes"] = out

            def on_plot(value: Any) -> None:  # a plain function works too
                received["json"] = value

            script = self._ctx.new_script()
            script.run("/bin/sh", "-c", "echo stats > /golem/out/stats; echo '[\"a.png\"]' > /golem/out/plot")
            script.download_bytes("/golem/out/stats", on_stats)
            script.download_json("/golem/out/plot", on_plot, 1024)
            yield script

            def broken(_data: bytes) -> None:
                raise ValueError("cannot parse the stats")

            script = self._ctx.new_script()
            script.download_bytes("/golem/out/stats", broken)
            try:
                yield script
            except CommandExecutionError as exc:
                failures.append(exc)

    async with golem() as engine:
        await run_until(engine, Downloads, "terminated")

    assert received == {"bytes": b"stats\n", "json": ["a.png"]}
    (failure,) = failures
    assert "on_download callback" in str(failure)
    assert "cannot parse the stats" in str(failure)


async def test_run_captures_output_in_yapapis_modes() -> None:
    results: dict[str, Any] = {}
    lines: list[str] = []

    class Captures(VmService):
        async def run(self) -> Any:
            script = self._ctx.new_script()
            whole = script.run(
                "/bin/sh",
                "-c",
                "echo one; echo two; echo 'a long error message' >&2",
                stdout=CaptureContext.build("all"),
                stderr=CaptureContext.build(mode="tail", limit=8),
            )
            dropped = script.run("/bin/sh", "-c", "echo gone; echo gone too >&2", stdout="discard", stderr="discard")
            at_end = script.run("/bin/sh", "-c", "echo late line", stdout="all", on_stdout=lines.append)
            yield script
            results["whole"] = await whole
            results["dropped"] = await dropped
            results["at_end"] = await at_end

    async with golem() as engine:
        await run_until(engine, Captures, "terminated")

    assert results["whole"].stdout == "one\ntwo\n"
    assert results["whole"].stderr == "message\n"
    assert (results["dropped"].stdout, results["dropped"].stderr) == (None, None)
    assert results["at_end"].stdout == "late line\n"
    assert lines == ["late line"], "output kept to the end still reaches the line callback"


async def test_the_low_level_path_gives_a_work_context_from_public_names() -> None:
    async with golem() as engine:
        demand = await engine.create_demand(VmPayload())
        agreement = await demand.agreement(timeout=BOUND)
        activity = await agreement.create_activity()
        ctx: WorkContext = engine.work_context(activity)
        script = ctx.new_script(timeout=BOUND)
        script.deploy()
        script.start()
        hello = script.run("/bin/echo", "hello")
        await ctx.run_script(script)
        assert (await hello).stdout == "hello\n"
        assert ctx.id == activity.activity_id
        assert ctx.provider_name == agreement.provider_name
        with pytest.raises(ConfigurationError, match="takes an Activity"):
            engine.work_context(agreement)  # type: ignore[arg-type]
        await agreement.terminate()
