"""Chains on the local ``vm`` runtime: consecutive commands the sandbox's agent runs one after the other by itself.

Each starts only once the one before it exited with code 0; after a failure, a kill or a stop, nothing queued runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from golem_local.runtime.base import CommandChain, DeploySettings, RunProcess, RuntimeFailure
from golem_local.runtime.image import Image
from golem_local.runtime.vm import VmRuntime
from tests.integration.test_vm_runtime import Output, needs_bwrap, run

pytestmark = needs_bwrap


def sh(script: str, **env: str) -> RunProcess:
    return RunProcess("/bin/sh", ("-c", script), env=env)


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[VmRuntime]:
    """A started runtime with the default image (the sandbox's own /tmp holds the tests' traces)."""
    vm = VmRuntime(Image(), tmp_path / "activity", stop_grace=2.0)
    await vm.deploy(DeploySettings())
    await vm.start([])
    try:
        yield vm
    finally:
        await vm.stop()


async def chain_of(runtime: VmRuntime, processes: Sequence[RunProcess]) -> tuple[CommandChain, list[Output]]:
    outputs = [Output() for _ in processes]
    return await runtime.run_chain(processes, outputs), outputs


async def traces(runtime: VmRuntime) -> str:
    """What the chained commands wrote to /tmp/log (empty when nothing did)."""
    code, out, _ = await run(runtime, "/bin/sh", "-c", "cat /tmp/log 2>/dev/null; true")
    assert code == 0
    return out


async def test_commands_run_in_order_each_with_its_output_and_environment(runtime: VmRuntime) -> None:
    chain, outputs = await chain_of(
        runtime, [sh("echo one; echo 1 >> /tmp/log"), sh("echo $X >&2; echo 2 >> /tmp/log", X="two"), sh("true")]
    )
    assert [await asyncio.wait_for(chain.result(position), 20) for position in range(3)] == [(0, None)] * 3
    chain.close()
    assert (bytes(outputs[0].stdout), bytes(outputs[1].stderr), bytes(outputs[2].stdout)) == (b"one\n", b"two\n", b"")
    assert await traces(runtime) == "1\n2\n"
    assert runtime._commands == {}  # nothing of the chain is left behind in the runtime


async def test_a_failing_command_ends_the_chain_and_the_rest_never_runs(runtime: VmRuntime) -> None:
    chain, _ = await chain_of(runtime, [sh("echo 1 >> /tmp/log"), sh("exit 3"), sh("echo 3 >> /tmp/log")])
    assert await asyncio.wait_for(chain.result(0), 20) == (0, None)
    assert await asyncio.wait_for(chain.result(1), 20) == (3, None)
    with pytest.raises(RuntimeFailure, match="not run: an earlier command of its chain failed"):
        await chain.result(2)
    chain.close()

    missing = RunProcess("/no/such/program")
    chain, _ = await chain_of(runtime, [sh("echo 4 >> /tmp/log"), missing, sh("echo 6 >> /tmp/log")])
    assert await asyncio.wait_for(chain.result(0), 20) == (0, None)
    with pytest.raises(RuntimeFailure, match="cannot start '/no/such/program'"):
        await asyncio.wait_for(chain.result(1), 20)
    with pytest.raises(RuntimeFailure, match="not run"):
        await chain.result(2)
    chain.close()
    assert await traces(runtime) == "1\n4\n"


async def test_cancelling_the_wait_kills_the_running_command_and_drops_the_queued_ones(runtime: VmRuntime) -> None:
    chain, outputs = await chain_of(
        runtime, [sh("echo $$ > /tmp/pid; echo started; exec sleep 1000"), sh("echo ran >> /tmp/log")]
    )
    waiting = asyncio.create_task(chain.result(0))
    await asyncio.wait_for(outputs[0].first.wait(), 20)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 20)
    chain.close()
    code, out, _ = await run(runtime, "/bin/sh", "-c", "kill -0 $(cat /tmp/pid) 2>/dev/null || echo gone")
    assert (code, out) == (0, "gone\n"), "the cancelled command still runs"
    assert await traces(runtime) == ""
    assert bytes(outputs[1].stdout) == b""


async def test_closing_a_chain_that_moved_on_kills_whatever_of_it_runs_now(runtime: VmRuntime) -> None:
    """The exe-unit may believe an earlier command runs while the agent has started a later one: ending the chain
    reaches the one that runs, whichever it is, and nothing after it starts."""
    chain, outputs = await chain_of(
        runtime, [sh("true"), sh("echo $$ > /tmp/pid; echo started; exec sleep 1000"), sh("echo ran >> /tmp/log")]
    )
    await asyncio.wait_for(outputs[1].first.wait(), 20)  # the second runs; nobody has asked for the first's end
    chain.close()
    gone = "while kill -0 $(cat /tmp/pid) 2>/dev/null; do :; done; echo gone"
    code, out, _ = await run(runtime, "/bin/sh", "-c", gone)
    assert (code, out) == (0, "gone\n")
    assert await traces(runtime) == ""


async def test_a_stop_lets_nothing_queued_start_even_when_the_running_command_ends_well(runtime: VmRuntime) -> None:
    chain, outputs = await chain_of(
        runtime,
        [sh("trap 'exit 0' TERM; echo started; while :; do sleep 0.05; done"), sh("echo second"), sh("echo third")],
    )
    first = asyncio.create_task(chain.result(0))
    await asyncio.wait_for(outputs[0].first.wait(), 20)
    await asyncio.wait_for(runtime.stop(), 20)
    assert await asyncio.wait_for(first, 20) == (0, None)  # it ended by itself, within the stop's grace
    with pytest.raises(RuntimeFailure, match="stopped"):
        await chain.result(1)
    chain.close()
    assert (bytes(outputs[1].stdout), bytes(outputs[2].stdout)) == (b"", b"")
