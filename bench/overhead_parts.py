"""What a one-command batch is made of, each part measured alone in the same run (floors of the overhead benchmark).

Per run, in one process and in turn, each the median of ``batches`` repetitions:

- the one-command batch (`run /bin/true`) of :func:`bench.requestor.command_overhead`, on a provider whose
  activities run in a sandbox;
- the same batch on a provider whose runtime answers every command at once (``activity_runtime="idle"``): the
  two requests, the node and the requestor without the sandbox;
- a bare aiohttp ``POST`` + ``GET`` pair on loopback, server and client in this process (the HTTP floor of those
  two requests);
- one ``true`` through the agent of a sandbox alone (``bench_sandbox.agent_round_trips``: no HTTP, no requestor);
- a plain host spawn of ``/bin/true`` (the floor the overhead benchmark divides by).

A batch cannot cost less than its exec request's way in, the agent's round trip and the results answer's way
out, whatever overlaps; these figures say how far each part alone already goes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
from aiohttp import web

from bench.bench_sandbox import agent_round_trips
from bench.host import spawn_times
from bench.requestor import BATCH_TIMEOUT, RUNNING_TIMEOUT, _golem
from bench.services import BatchLoop, Probe
from bench.stats import Figure, Result

__all__ = ["overhead_parts"]


@asynccontextmanager
async def _instance(**config: object) -> AsyncIterator[Probe]:
    """A running :class:`BatchLoop` instance on a one-provider network; its probe."""
    probe = Probe()
    async with _golem(1, **config) as golem:
        cluster = await golem.run_service(BatchLoop, instance_params=[{"probe": probe}])
        await cluster.wait_running(timeout=RUNNING_TIMEOUT)
        await probe.measure(10, BATCH_TIMEOUT)  # warm-up
        try:
            yield probe
        finally:
            await cluster.stop()


@asynccontextmanager
async def _bare_pair() -> AsyncIterator[aiohttp.ClientSession]:
    """A bare aiohttp server (``POST /x/{id}``, ``GET /x/{id}/y``) on loopback and a session pointed at it."""

    async def post(request: web.Request) -> web.Response:
        await request.json()
        return web.json_response("batch")

    async def get(request: web.Request) -> web.Response:
        return web.Response(body=b'[{"index":0}]', content_type="application/json")

    app = web.Application()
    app.router.add_post("/x/{id}", post)
    app.router.add_get("/x/{id}/y", get)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as session:
            yield session
    finally:
        await runner.cleanup()


async def _pairs(session: aiohttp.ClientSession, count: int) -> list[float]:
    times = []
    for _ in range(count):
        began = time.perf_counter()
        async with session.post("/x/1", json={"text": '[{"run": {}}]'}) as response:
            await response.json()
        async with session.get("/x/1/y", params={"commandIndex": "0", "timeout": "10"}) as response:
            await response.read()
        times.append(time.perf_counter() - began)
    return times


async def overhead_parts(runs: int, batches: int = 100) -> Result:
    """The parts of a one-command batch, alone and in turn, ``runs`` times (see the module docstring)."""
    parts: dict[str, list[float]] = {
        "batch": [],
        "batch, runtime answering at once": [],
        "bare aiohttp POST + GET": [],
        "agent round trip": [],
        "host spawn": [],
    }
    async with AsyncExitStack() as stack:
        sandboxed = await stack.enter_async_context(_instance())
        instant = await stack.enter_async_context(_instance(activity_runtime="idle"))
        bare = await stack.enter_async_context(_bare_pair())
        for _ in range(runs):
            parts["batch"].append(statistics.median(await sandboxed.measure(batches, BATCH_TIMEOUT)) * 1000)
            instant_times = await instant.measure(batches, BATCH_TIMEOUT)
            parts["batch, runtime answering at once"].append(statistics.median(instant_times) * 1000)
            parts["bare aiohttp POST + GET"].append(statistics.median(await _pairs(bare, batches)) * 1000)
            parts["agent round trip"].append(await agent_round_trips(batches) / batches * 1000)
            parts["host spawn"].append(statistics.median(await spawn_times(batches)) * 1000)
    host = parts["host spawn"]
    figures = [Figure(name, "ms", samples) for name, samples in parts.items()]
    figures += [
        Figure(f"{name} ÷ host spawn", "×", [value / floor for value, floor in zip(samples, host, strict=True)])
        for name, samples in parts.items()
        if name != "host spawn"
    ]
    return Result(
        key="overhead_parts",
        title="The parts of a one-command batch",
        figures=figures,
        notes=(
            f"Per run, in turn in one process, the median of {batches} of each: the overhead benchmark's "
            "one-command batch on a sandboxed provider; the same on a provider whose runtime answers at once "
            "(HTTP, node and requestor alone); a bare aiohttp POST + GET pair on loopback; one `true` through a "
            "sandbox's agent alone; a host spawn of `/bin/true`."
        ),
    )
