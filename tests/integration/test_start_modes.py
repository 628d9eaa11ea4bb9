"""The exe-unit honours a runtime's start mode: ``empty`` (``start`` awaited by the ``start`` command) and
``blocking`` (``start`` is the runtime's server, run for the life of the activity; its end makes the activity
``Unresponsive``). The runtimes here are real runtimes of one's own, given to a real node by descriptor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import pytest

from golem_local.config import LocalNetworkConfig, ProviderSpec
from golem_local.node import LocalNode
from golem_local.runtime.base import Deployment, DeploySettings, OutputSink, RunProcess
from golem_local.runtime.idle import IdleRuntime
from golem_local.runtime.registry import RuntimeDescriptor
from tests.integration.agreements import new_activity
from tests.integration.test_local_activity_exec import Exe

pytestmark = pytest.mark.integration
BOUND = 20.0


class Server(IdleRuntime):
    """``mode`` ``blocking``: ``start`` serves until a ``quit`` command (or fails at once for ``start fail``);
    ``empty``: ``start`` returns once up. Each command answers which start it was served by."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.up = asyncio.Event()
        self.quit = asyncio.Event()
        self.stopped = asyncio.Event()

    async def deploy(self, settings: DeploySettings) -> Deployment:
        return Deployment(start_mode="blocking" if self.mode == "blocking" else "empty", volumes=())

    async def start(self, args: Sequence[str]) -> None:
        if list(args) == ["fail"]:
            raise RuntimeError("the server cannot bind its port")
        self.up.set()
        if self.mode == "blocking":
            await self.quit.wait()

    async def run_command(self, process: RunProcess, sink: OutputSink) -> int:
        await self.up.wait()
        if process.entry_point == "quit":
            self.quit.set()
        sink("stdout", f"{process.entry_point} served ({self.mode})".encode())
        return 0

    async def stop(self) -> None:
        self.stopped.set()


RUNTIMES = tuple(
    RuntimeDescriptor(name=f"server-{mode}", factory=lambda _context, mode=mode: Server(mode))
    for mode in ("blocking", "empty")
)


@pytest.fixture(params=["blocking", "empty"])
async def local_node(request: pytest.FixtureRequest) -> AsyncIterator[LocalNode]:
    provider = ProviderSpec(name="server", runtime=f"server-{request.param}")
    async with LocalNode(LocalNetworkConfig(providers=(provider,), runtimes=RUNTIMES)) as node:
        yield node


def runtime_of(node: LocalNode) -> str:
    return node.config.providers[0].runtime


def command(entry_point: str) -> dict[str, Any]:
    return {"run": {"entry_point": entry_point, "args": [], "capture": {"stdout": {"atEnd": {}}}}}


async def test_commands_go_to_the_started_server_and_its_end_is_the_activity_s(
    local_node: LocalNode, http: aiohttp.ClientSession
) -> None:
    exe = Exe(http, await new_activity(http, local_node, runtime=runtime_of(local_node)))
    runtime = local_node.activities.get(exe.activity_id).runtime
    assert isinstance(runtime, Server)
    results = await exe.finished(await exe.exec([{"deploy": {}}, {"start": {}}, command("hello")]), 3)
    assert [r["result"] for r in results] == ["Ok", "Ok", "Ok"]
    assert results[2]["stdout"] == f"hello served ({runtime.mode})"
    assert (await exe.state())["state"] == ["Ready", None]
    results = await exe.finished(await exe.exec([command("quit")]), 1)
    assert results[0]["result"] == "Ok"
    if runtime.mode == "empty":
        assert (await exe.state())["state"] == ["Ready", None], "an empty start's end is not the runtime's"
        return
    await asyncio.wait_for(runtime.stopped.wait(), BOUND)
    state = await exe.state()
    assert state["state"] == ["Unresponsive", None]
    assert state["errorMessage"] == "the runtime's blocking start returned: its server has ended"


async def test_a_failing_start_fails_the_start_command_or_the_activity(
    local_node: LocalNode, http: aiohttp.ClientSession
) -> None:
    exe = Exe(http, await new_activity(http, local_node, runtime=runtime_of(local_node)))
    runtime = local_node.activities.get(exe.activity_id).runtime
    assert isinstance(runtime, Server)
    results = await exe.finished(await exe.exec([{"deploy": {}}, {"start": {"args": ["fail"]}}]), 2)
    if runtime.mode == "empty":
        assert results[1]["result"] == "Error"
        assert "the server cannot bind its port" in results[1]["message"]
        return
    assert results[1]["result"] == "Ok", "a blocking start answers at once"
    await asyncio.wait_for(runtime.stopped.wait(), BOUND)
    state = await exe.state()
    assert state["state"] == ["Unresponsive", None]
    assert state["errorMessage"] == "the runtime's blocking start failed: the server cannot bind its port"
