"""The ``container`` runtime in a real engine (docker or podman, whichever answers): the tiny root of
:mod:`tests.tinyroot` as a GVMI, imported into the engine; commands by ``exec``, volumes bound, limits enforced,
``stop``'s grace. Skipped, with the self-test's reason, where no engine answers."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest

from golem_api import Golem, LocalNetworkConfig, ProviderSpec, vm
from golem_api._rest.client import RestClient
from golem_api._rest.config import ApiConfig
from golem_api.activity.storage import GsbStorage
from golem_api.activity.work_context import WorkContext
from golem_api.errors import CommandExecutionError
from golem_local.images.cache import image_from_metadata, unpack_for_sandboxes
from golem_local.images.format import ImageMetadata, write_gvmi
from golem_local.images.registry import ImageRegistry
from golem_local.runtime.base import DeploySettings, RunProcess, RuntimeFailure
from golem_local.runtime.container import ContainerRuntime, engine_program
from golem_local.runtime.image import Image
from golem_local.runtime.launch import MIB, SandboxLimits
from golem_local.runtime.rootfs import user_namespace
from golem_shared.errors import SandboxUnavailableError
from tests.tinyroot import make_tiny_root

BOUND = 60.0
METADATA = ImageMetadata(
    env=("PATH=/bin", "GREETING=hi"), working_dir="/golem/work", volumes=("/golem/in", "/golem/out")
)


def _engine_or_skip() -> None:
    if shutil.which("mksquashfs") is None:
        pytest.skip("squashfs-tools are needed to make the test image")
    try:
        asyncio.run(engine_program())
    except SandboxUnavailableError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def gvmi(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    _engine_or_skip()
    base = tmp_path_factory.mktemp("tinyroot")
    path = base / "tiny.gvmi"
    digest = write_gvmi(make_tiny_root(base / "tree", extra=("dd", "yes")), METADATA, path)
    return path, digest


@pytest.fixture(scope="module")
def image(gvmi: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Image:
    cache = tmp_path_factory.mktemp("cache") / "tree"
    metadata = unpack_for_sandboxes(gvmi[0], cache, user_namespace())
    return image_from_metadata(metadata, cache, gvmi[1])


async def run(runtime: ContainerRuntime, script: str) -> tuple[int, str]:
    out: list[bytes] = []
    code = await asyncio.wait_for(
        runtime.run_command(RunProcess("/bin/sh", ("-c", script)), lambda _s, data: out.append(data)), BOUND
    )
    return code, b"".join(out).decode()


@contextlib.asynccontextmanager
async def started(image: Image, work: Path, *args: str, **options: object) -> AsyncIterator[ContainerRuntime]:
    runtime = ContainerRuntime(image, work, **options)  # type: ignore[arg-type]
    try:
        await runtime.deploy(DeploySettings())
        await runtime.start(args)
        yield runtime
    finally:
        await runtime.stop()


async def test_commands_run_in_the_image_without_network_with_volumes_on_the_host(image: Image, tmp_path: Path) -> None:
    async with started(image, tmp_path / "a") as runtime:
        code, out = await run(
            runtime, 'echo "$GREETING $(pwd)"; cat /etc/motd; ls /sys/class/net; echo x > /golem/out/f'
        )
        assert code == 0, out
        lines = out.splitlines()
        assert lines[:2] == ["hi /golem/work", "tiny root"]
        assert lines[2:] == ["lo"], "no network but the loopback"
        assert runtime.container_path("/golem/out/f").read_text() == "x\n"
        code, out = await run(runtime, "echo err >&2; exit 3")
        assert (code, out) == (3, "err\n")
        await run(runtime, "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done")
        assert runtime.cpu_seconds() > 0.0
        with pytest.raises(RuntimeFailure, match="not inside a volume"):
            runtime.container_path("/etc/motd")
    assert not (tmp_path / "a").exists(), "stop removes the volumes"


async def test_a_command_over_the_memory_limit_is_killed_and_says_so(image: Image, tmp_path: Path) -> None:
    limits = SandboxLimits(memory_bytes=32 * MIB, processes=64, cpu_threads=1)
    async with started(image, tmp_path / "m", limits=limits) as runtime:
        code, _out = await run(runtime, "dd if=/dev/zero bs=64M count=1 of=/dev/null")
        assert code in (137, -9), "killed by the OOM killer"
        assert runtime.exit_note() == "killed: memory limit 32 MiB of the container reached"
        code, out = await run(runtime, "echo still here")
        assert (code, out, runtime.exit_note()) == (0, "still here\n", None)


async def test_a_killed_command_is_killed_inside_the_container(image: Image, tmp_path: Path) -> None:
    async with started(image, tmp_path / "k") as runtime:
        seen = asyncio.Event()
        command = asyncio.create_task(
            runtime.run_command(RunProcess("/bin/sh", ("-c", "echo up; exec sleep 1000")), lambda _s, _d: seen.set())
        )
        await asyncio.wait_for(seen.wait(), BOUND)
        command.cancel()
        with pytest.raises(asyncio.CancelledError):
            await command
        code, out = await run(runtime, "ls /proc | while read p; do cat /proc/$p/cmdline 2>/dev/null; echo; done")
        assert code == 0
        assert "sleep1000" not in out.replace("\0", "")


async def test_stop_gives_the_server_its_grace_then_kills_it(image: Image, tmp_path: Path) -> None:
    polite = "trap 'exit 0' TERM; while :; do sleep 0.1; done"
    deaf = "trap '' TERM; while :; do sleep 0.1; done"
    for server, grace, code in ((polite, 30.0, 0), (deaf, 1.0, 137)):
        runtime = ContainerRuntime(image, tmp_path / str(code), stop_grace=grace)
        await runtime.deploy(DeploySettings())
        await runtime.start(["/bin/sh", "-c", server])
        assert (await run(runtime, "echo up")) == (0, "up\n")
        began = time.monotonic()
        await asyncio.wait_for(runtime.stop(), BOUND)
        took = time.monotonic() - began
        assert runtime.main_exit_code == code, "SIGTERM ends a server that handles it; SIGKILL after the grace"
        assert took < 25 if code == 0 else took >= 1.0
        with pytest.raises(RuntimeFailure, match="not running"):
            await run(runtime, "true")


async def test_an_image_without_a_root_file_system_is_refused(tmp_path: Path) -> None:
    runtime = ContainerRuntime(Image(), tmp_path / "n")
    with pytest.raises(RuntimeFailure, match="the container runtime runs GVMI images"):
        await runtime.deploy(DeploySettings())
    await runtime.stop()


async def test_a_service_on_a_container_provider_runs_commands_and_moves_files(
    gvmi: tuple[Path, str], tmp_path: Path
) -> None:
    registry = ImageRegistry(tmp_path / "registry")
    registry.add(gvmi[0], tag="tiny/container:1", copy=True)
    config = LocalNetworkConfig(
        providers=(ProviderSpec(name="c1", runtime="container", mem_gib=0.25, cpu_threads=1),),
        image_registry=registry.root,
    )
    async with Golem(budget=1.0, local_network=config, invoice_timeout=10) as golem:
        node = golem.local_node
        assert node is not None
        async with RestClient(ApiConfig.for_node(node.url, node.app_key)) as rest, GsbStorage(rest) as storage:
            payload = attrs.evolve(await vm.repo(image_tag="tiny/container:1", min_mem_gib=0.25), runtime="container")
            demand = await golem.create_demand(payload)
            agreement = await demand.agreement(timeout=BOUND)
            activity = await agreement.create_activity()
            ctx = WorkContext(activity, storage, golem.bus)
            script = ctx.new_script(timeout=BOUND)
            script.deploy()
            script.start()
            script.upload_bytes(b"hello container", "/golem/in/x")
            result = script.run(
                "/bin/sh", "-c", "cat /golem/in/x > /golem/out/y; echo -n ' back' >> /golem/out/y; cat /golem/out/y"
            )
            back = script.download_bytes("/golem/out/y")
            await ctx.run_script(script)
            assert (await result).stdout == "hello container back"
            assert await back == b"hello container back"
            script = ctx.new_script(timeout=BOUND)
            script.run("/bin/sh", "-c", "dd if=/dev/zero bs=512M count=1 of=/dev/null")
            with pytest.raises(CommandExecutionError, match=r"code 137: killed: memory limit 256 MiB"):
                await ctx.run_script(script)
            await agreement.terminate()
