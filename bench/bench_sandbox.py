"""How fast the local ``vm`` runtime is: a command through the agent vs a fresh sandbox per command.

Prints the median time of

- a ``true`` round-trip through the agent of one running sandbox (``RUNS_AGENT`` times),
- ``true`` in a fresh bubblewrap sandbox with the same layout (``RUNS_FRESH`` times),
- ``VmRuntime.deploy()``, ``start()`` (the sandbox and its agent up) and ``stop()``, ``RUNS_START`` times each,
  for a sandbox without limits and for one with a default provider's offer as its limits (its own uid when
  run as root, a control group, sized ``/tmp``, an ext4 file system of the storage size), and for one whose
  work directory its uid cannot reach (staged binds, as root only);
- ``stop()`` of a sandbox running a command and a background process (both end on the SIGTERM of the stop
  grace), next to the floor of an idle sandbox's ``stop()``;

and with ``--image FILE.gvmi`` (or a tag of the local registry), the same for that image as the sandbox's
``/``: unpacking it once (``unsquashfs``, as a provider's cache does), then per activity ``deploy`` (its
overlay's directories), ``start`` (a private mount namespace, the overlay, bubblewrap, the agent ready) and
``stop`` (the activity's layer removed).

The work directories are under a directory others may pass (``0711``), as the local node makes its own.

Run: ``.venv/bin/python bench/bench_sandbox.py [--image golem-api/simple-service:1.0]`` (needs bubblewrap).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Literal

from attrs import frozen

from golem_local.config import ProviderSpec
from golem_local.images.cache import image_from_metadata, unpack_for_sandboxes
from golem_local.images.registry import ImageRegistry
from golem_local.pipeline import CHAIN_LIMIT
from golem_local.runtime.base import DeploySettings, RunProcess
from golem_local.runtime.image import Image
from golem_local.runtime.launch import SandboxLimits
from golem_local.runtime.rootfs import remove_tree, user_namespace
from golem_local.runtime.sandbox import SandboxLayout, bwrap_args, check_bubblewrap
from golem_local.runtime.vm import VmRuntime

RUNS_AGENT = 200
RUNS_FRESH = 50
RUNS_START = 20


def _ignore(stream: Literal["stdout", "stderr"], data: bytes) -> None:
    """Output sink that drops everything."""


async def _median_ms(runs: int, once: Callable[[], Awaitable[object]]) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        await once()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


@contextlib.asynccontextmanager
async def _warm_sandbox() -> AsyncIterator[VmRuntime]:
    """One started sandbox of the default image, one ``true`` already run through its agent; stopped after."""
    await check_bubblewrap()
    with tempfile.TemporaryDirectory() as scratch:
        runtime = VmRuntime(Image(), Path(scratch) / "activity")
        await runtime.deploy(DeploySettings())
        await runtime.start([])
        try:
            await runtime.run_command(RunProcess("true"), _ignore)  # warm-up
            yield runtime
        finally:
            await runtime.stop()


async def agent_round_trips(count: int) -> float:
    """Seconds of ``count`` ``true`` commands sent one after the other through the agent of one sandbox."""
    async with _warm_sandbox() as runtime:
        true = RunProcess("true")
        began = time.perf_counter()
        for _ in range(count):
            await runtime.run_command(true, _ignore)
        return time.perf_counter() - began


async def agent_chained(count: int) -> float:
    """Seconds of ``count`` ``true`` commands through the agent of one sandbox as the exe-unit sends a batch of
    them: as chains of at most :data:`~golem_local.pipeline.CHAIN_LIMIT`, each command started by the agent the
    moment the one before it exited (:meth:`VmRuntime.run_chain`), every result awaited in turn."""
    async with _warm_sandbox() as runtime:
        true = RunProcess("true")
        began = time.perf_counter()
        for start in range(0, count, CHAIN_LIMIT):
            size = min(CHAIN_LIMIT, count - start)
            chain = await runtime.run_chain([true] * size, [_ignore] * size)
            for position in range(size):
                await chain.result(position)
            chain.close()
        return time.perf_counter() - began


@frozen
class SandboxStarts:
    """What :func:`sandbox_starts` measured: the ``seconds`` until every agent was ready; with every sandbox
    up, the memory of their processes (bubblewrap and the agent: proportional set size, each sandbox's on
    average, MiB) and how much the machine's available memory had dropped since before the first (MiB: with
    the kernel's part, page tables, control groups, mounts)."""

    seconds: float
    pss_mib_each: float
    available_drop_mib: float


def _pss_kib(pid: int) -> int:
    """Proportional set size of ``pid`` and of every process below it, KiB (0 for what has gone)."""
    total = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/smaps_rollup") as rollup:
                total += next(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    todo += [int(child) for child in children.read().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total


def _available_kib() -> int:
    with open("/proc/meminfo") as info:
        return next(int(line.split()[1]) for line in info if line.startswith("MemAvailable:"))


async def sandbox_starts(count: int, at_once: int = 2 * (os.cpu_count() or 1)) -> SandboxStarts:
    """Deploy and start ``count`` sandboxes, ``at_once`` at a time (a default provider's offer as their limits,
    as the local node's providers have), until every agent is ready; measure their memory; stop them.

    Not all at once: 600 Python agents starting together on two cores left some unready after the runtime's
    10 s bound (the runtime now sets up as many at once itself: ``SandboxHost.start_gate``)."""
    await check_bubblewrap()
    spec = ProviderSpec(name="bench")
    limits = SandboxLimits.from_offer(
        mem_gib=spec.mem_gib, cpu_threads=spec.cpu_threads, storage_gib=spec.storage_gib, processes=spec.max_processes
    )
    with tempfile.TemporaryDirectory() as scratch:
        os.chmod(scratch, 0o711)
        runtimes = [VmRuntime(Image(), Path(scratch) / f"activity-{i}", limits=limits) for i in range(count)]

        gate = asyncio.Semaphore(at_once)

        async def up(runtime: VmRuntime) -> None:
            async with gate:
                await runtime.deploy(DeploySettings())
                await runtime.start([])

        available = _available_kib()
        began = time.perf_counter()
        try:
            await asyncio.gather(*(up(r) for r in runtimes))
            seconds = time.perf_counter() - began
            pss = sum(_pss_kib(r.sandbox_pid) for r in runtimes if r.sandbox_pid is not None)
            return SandboxStarts(seconds, pss / 1024 / max(count, 1), (available - _available_kib()) / 1024)
        finally:
            await asyncio.gather(*(r.stop() for r in runtimes), return_exceptions=True)


async def main() -> None:
    """Measure and print the three medians."""
    await check_bubblewrap()
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        runtime = VmRuntime(Image(), base / "activity")
        deployment = await runtime.deploy(DeploySettings())
        await runtime.start([])
        try:
            true = RunProcess("true")
            agent = await _median_ms(RUNS_AGENT, lambda: runtime.run_command(true, _ignore))
        finally:
            await runtime.stop()

        for volume in deployment.volumes:
            volume.host_path.mkdir(parents=True, exist_ok=True)
        args = ["bwrap", *bwrap_args(SandboxLayout(volumes=deployment.volumes, working_dir="/golem/work")), "true"]

        async def fresh() -> None:
            process = await asyncio.create_subprocess_exec(*args)
            assert await process.wait() == 0

        fresh_ms = await _median_ms(RUNS_FRESH, fresh)

        print(f"command round-trip through the agent (true x{RUNS_AGENT}): median {agent:.2f} ms")
        print(f"fresh bwrap sandbox per command   (true x{RUNS_FRESH}):  median {fresh_ms:.2f} ms")
        spec = ProviderSpec(name="bench")
        offer = SandboxLimits.from_offer(
            mem_gib=spec.mem_gib,
            cpu_threads=spec.cpu_threads,
            storage_gib=spec.storage_gib,
            processes=spec.max_processes,
        )
        os.chmod(base, 0o711)
        await _lifecycle("no limits", base / "plain", SandboxLimits())
        await _lifecycle("the offer's limits", base / "offer", offer)
        hidden = base / "hidden"
        os.mkdir(hidden, 0o700)
        await _lifecycle("unreachable work dir", hidden / "staged", SandboxLimits())
        os.mkdir(base / "stops")
        idle, busy = await _stops(base / "stops", RUNS_START)
        print(
            f"stop with a command running and a process in the background (both end on SIGTERM): median {busy:.2f} ms;"
            f" floor, an idle sandbox's stop: {idle:.2f} ms (ratio {busy / idle:.2f}, medians of {RUNS_START} each)"
        )


async def _stops(base: Path, runs: int) -> tuple[float, float]:
    """Median ms of ``stop()`` of an idle sandbox and of one running ``sleep`` in a command and in the background,
    alternately."""
    idle: list[float] = []
    busy: list[float] = []
    for index in range(runs):
        for running, times in ((False, idle), (True, busy)):
            vm = VmRuntime(Image(), base / f"activity-{index}-{running}")
            await vm.deploy(DeploySettings())
            await vm.start([])
            command = None
            if running:
                await vm.run_command(RunProcess("sh", ("-c", "sleep 1000 &")), _ignore)
                command = asyncio.ensure_future(vm.run_command(RunProcess("sleep", ("1000",)), _ignore))
                await asyncio.sleep(0.05)  # the command has reached the sandbox (a bench, not a test)
            began = time.perf_counter()
            await vm.stop()
            times.append(time.perf_counter() - began)
            if command is not None:
                with contextlib.suppress(Exception):
                    await command
    return statistics.median(idle) * 1000, statistics.median(busy) * 1000


async def _lifecycle(name: str, root: Path, limits: SandboxLimits) -> None:
    os.mkdir(root)
    deploy, start, stop = await _image_lifecycle(Image(), root, RUNS_START, limits)
    print(f"{name:<22} deploy {deploy:6.2f} ms, start {start:6.2f} ms, stop {stop:6.2f} ms (medians of {RUNS_START})")


async def _image_lifecycle(
    image: Image, base: Path, runs: int, limits: SandboxLimits | None = None
) -> tuple[float, float, float]:
    """Median ms of deploy, start and stop of ``runs`` activities on ``image`` (within ``limits``)."""
    deploys, starts, stops = [], [], []
    for index in range(runs):
        vm = VmRuntime(image, base / f"activity-{index}", limits=limits)
        began = time.perf_counter()
        await vm.deploy(DeploySettings())
        deploys.append(time.perf_counter() - began)
        began = time.perf_counter()
        await vm.start([])
        starts.append(time.perf_counter() - began)
        began = time.perf_counter()
        await vm.stop()
        stops.append(time.perf_counter() - began)
    deploy, start, stop = (statistics.median(values) * 1000 for values in (deploys, starts, stops))
    return deploy, start, stop


async def image_start(name: str) -> None:
    """Unpack the image ``name`` (a file or a tag of the local registry) and time activities with it as ``/``."""
    path = Path(name)
    if not path.exists():  # noqa: ASYNC240 - one stat before anything is measured
        path = ImageRegistry().find(tag=name).path
    namespace = user_namespace()
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        began = time.perf_counter()
        metadata = unpack_for_sandboxes(path, base / "cache", namespace)
        unpack = time.perf_counter() - began
        try:
            image = image_from_metadata(metadata, base / "cache", "bench")
            await _image_lifecycle(image, base, 2)  # the first also probes the overlay and the agent's interpreter
            deploy, start, stop = await _image_lifecycle(image, base, RUNS_START)
            _, plain, _ = await _image_lifecycle(Image(), base, RUNS_START)
        finally:
            remove_tree(base / "cache", namespace)
    size = path.stat().st_size / 1e6
    print(f"image {name} ({size:.1f} MB): unpack once {unpack * 1000:.0f} ms")
    print(f"  per activity, x{RUNS_START}: deploy {deploy:.1f} ms, start {start:.1f} ms, stop {stop:.1f} ms (medians)")
    print(f"  the same start without an image (the host's system directories): {plain:.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", help="a .gvmi file or a tag of the local registry: time it as the sandbox's /")
    arguments = parser.parse_args()
    asyncio.run(image_start(arguments.image) if arguments.image else main())
