"""Stopping an activity gives its processes a grace: SIGTERM, then SIGKILL once ``stop_grace`` has passed, in
the ``vm`` sandbox (commands and what they left in the background); and a runtime whose ``stop`` hangs does
not hang the node: the activity still ends, is billed and invoiced."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from typing import Any, Literal

import pytest

from golem_api import CustomPayload, Golem, LocalNetworkConfig, Payload, ProviderSpec, Service
from golem_local.runtime.base import DeploySettings, RunProcess, RuntimeFailure
from golem_local.runtime.idle import IdleRuntime
from golem_local.runtime.image import Image
from golem_local.runtime.registry import RuntimeDescriptor
from golem_local.runtime.vm import VmRuntime
from golem_shared.errors import ConfigurationError

pytestmark = pytest.mark.integration
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")
BOUND = 30.0

# The command traps SIGTERM; so does the process it left in the background, which writes on the command's
# stdout. On SIGTERM the command waits for it, says goodbye and exits 7.
GRACEFUL = (
    '(trap "echo background-bye; exit 0" TERM; echo armed; while :; do sleep 0.05; done) & '
    'trap "wait; echo foreground-bye; exit 7" TERM; echo ready; while :; do sleep 0.05; done'
)
IGNORING = 'trap "" TERM; echo armed; echo ready; while :; do sleep 0.05; done'


class Output:
    def __init__(self) -> None:
        self.stdout = bytearray()
        self.ready = asyncio.Event()

    def __call__(self, stream: Literal["stdout", "stderr"], data: bytes) -> None:
        if stream == "stdout":
            self.stdout.extend(data)
            if b"ready" in self.stdout and b"armed" in self.stdout:  # both traps are set
                self.ready.set()


async def _stop_while_running(tmp_path: Path, program: str, grace: float) -> tuple[int | BaseException, bytes]:
    vm = VmRuntime(Image(), tmp_path / "activity", stop_grace=grace)
    await vm.deploy(DeploySettings())
    await vm.start([])
    output = Output()
    command = asyncio.ensure_future(vm.run_command(RunProcess("sh", ("-c", program)), output))
    try:
        await asyncio.wait_for(output.ready.wait(), BOUND)
        await asyncio.wait_for(vm.stop(), grace + BOUND)
        result: int | BaseException
        try:
            result = await asyncio.wait_for(command, BOUND)
        except RuntimeFailure as exc:
            result = exc
    finally:
        command.cancel()
        await vm.stop()
    return result, bytes(output.stdout)


@needs_bwrap
async def test_vm_stop_gives_the_command_and_its_background_process_sigterm_and_time_to_end(tmp_path: Path) -> None:
    code, stdout = await _stop_while_running(tmp_path, GRACEFUL, grace=20.0)
    assert code == 7, "the command's SIGTERM handler ran to its end"
    assert b"background-bye" in stdout, "the background process got SIGTERM and wrote on its way out"
    assert stdout.endswith(b"foreground-bye\n")


@needs_bwrap
async def test_vm_stop_kills_a_command_ignoring_sigterm_once_the_grace_has_passed(tmp_path: Path) -> None:
    result, stdout = await _stop_while_running(tmp_path, IGNORING, grace=0.3)
    assert stdout == b"armed\nready\n"
    assert result == -9 or isinstance(result, RuntimeFailure), f"the command was not killed: {result!r}"


def test_a_stop_grace_that_is_not_seconds_is_refused_naming_it() -> None:
    for bad in (-1, float("nan"), "5", 1e9):
        with pytest.raises(ConfigurationError, match=r"stop_grace must be seconds from 0 to 300"):
            ProviderSpec(name="p", stop_grace=bad)


class HangsInStop(IdleRuntime):
    async def stop(self) -> None:
        await asyncio.get_running_loop().create_future()  # never ends (but can be cancelled)


HANGS = RuntimeDescriptor(name="hangs-in-stop", factory=lambda _context: HangsInStop())


class OnHangs(Service):
    @staticmethod
    async def get_payload() -> Payload:
        return CustomPayload(constraints=("(golem.runtime.name=hangs-in-stop)",))

    async def run(self) -> Any:
        script = self._ctx.new_script()
        script.run("anything")
        yield script


@pytest.mark.slow  # the self-test probe's stop is abandoned too, after its 2 s bound
async def test_a_runtime_whose_stop_hangs_is_abandoned_and_the_activity_ends_billed_and_invoiced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = ProviderSpec(name="hangs", runtime="hangs-in-stop", stop_grace=0.2)
    config = LocalNetworkConfig(providers=(provider,), runtimes=(HANGS,))
    caplog.set_level(logging.ERROR, logger="golem_local.activity")
    async with Golem(budget=1.0, local_network=config, invoice_timeout=10) as golem:
        node = golem.local_node
        assert node is not None
        node.activities.stop_overrun = 0.3
        cluster = await golem.run_service(OnHangs)
        await cluster.wait_running(timeout=BOUND)
        await asyncio.wait_for(cluster.stop(), BOUND)
        (activity,) = node.activities.activities()
        assert activity.state.value == "Terminated"
    assert "the runtime's stop did not end within 0.5 s" in caplog.text
    assert activity.final_usage is not None, "the activity was billed"
    assert [invoice.agreement_id for invoice in node.ledger.invoices()] == [activity.agreement_id]


@needs_bwrap
async def test_the_stop_benchmark_runs(tmp_path: Path) -> None:
    """A smoke run of the stop figures of ``bench/bench_sandbox.py`` (one stop of each kind)."""
    from bench.bench_sandbox import _stops

    idle, busy = await _stops(tmp_path, 1)
    assert idle > 0
    assert busy > 0
