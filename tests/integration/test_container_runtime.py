"""The ``container`` runtime in real engines, each test once with podman and once with docker (a private
``dockerd`` of the session, :mod:`tests.dockerd`): the tiny root of :mod:`tests.tinyroot` as a GVMI, imported
into the engine; commands by ``exec``, volumes bound, limits enforced (memory, storage), ``stop``'s grace, VPNs,
and the images the runtime imported removed afterwards. Each engine is skipped, with the reason, where it does
not answer (podman not installed, not root for a private dockerd…).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import attrs
import pytest

from bench import bench_container
from golem_api import Golem, LocalNetworkConfig, ProviderSpec, Script, Service, VmPayload, vm
from golem_api._rest.client import RestClient
from golem_api._rest.config import ApiConfig
from golem_api.activity.storage import GsbStorage
from golem_api.activity.work_context import WorkContext
from golem_api.errors import CommandExecutionError
from golem_local.images.cache import image_from_metadata, unpack_for_sandboxes
from golem_local.images.format import ImageMetadata, write_gvmi
from golem_local.images.registry import ImageRegistry
from golem_local.net import netns
from golem_local.runtime.base import DeploySettings, RunProcess, RuntimeFailure
from golem_local.runtime.container import ContainerRuntime
from golem_local.runtime.container_engine import ENGINE_ENV, find_engine
from golem_local.runtime.engine_image import EngineImages, image_tag
from golem_local.runtime.image import Image
from golem_local.runtime.launch import MIB, SandboxLimits, default_sandbox_host
from golem_local.runtime.rootfs import user_namespace
from golem_shared.errors import SandboxUnavailableError
from tests.dockerd import private_dockerd, why_no_dockerd
from tests.tinyroot import make_tiny_root

BOUND = 60.0
METADATA = ImageMetadata(
    env=("PATH=/bin", "GREETING=hi"), working_dir="/golem/work", volumes=("/golem/in", "/golem/out")
)


@pytest.fixture(scope="session")
def dockerd_host() -> Iterator[str]:
    """The ``DOCKER_HOST`` of a docker daemon of the session's own (skipped where it cannot run)."""
    why = why_no_dockerd()
    if why is not None:
        pytest.skip(why)
    with contextlib.ExitStack() as stack:
        try:
            host = stack.enter_context(private_dockerd())
        except RuntimeError as exc:  # installed but cannot run here (no overlay, no cgroups…): its own words
            pytest.skip(str(exc))
        yield host


@pytest.fixture(params=["podman", "docker"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The engine of the test, named to the runtime (and to the node's) by ``GOLEM_LOCAL_CONTAINER_ENGINE``."""
    name = str(request.param)
    if name == "docker":
        monkeypatch.setenv("DOCKER_HOST", request.getfixturevalue("dockerd_host"))
    monkeypatch.setenv(ENGINE_ENV, name)
    try:
        asyncio.run(find_engine())
    except SandboxUnavailableError as exc:
        pytest.skip(str(exc))
    return name


def _tiny_gvmi(base: Path, motd: str = "tiny root\n") -> tuple[Path, str]:
    if shutil.which("mksquashfs") is None:
        pytest.skip("squashfs-tools are needed to make the test image")
    tree = make_tiny_root(base / "tree", extra=("dd", "yes", "perl"))
    (tree / "etc" / "motd").write_text(motd)
    path = base / "tiny.gvmi"
    return path, write_gvmi(tree, METADATA, path)


def _unpacked(gvmi: tuple[Path, str], cache: Path) -> Image:
    metadata = unpack_for_sandboxes(gvmi[0], cache / "tree", user_namespace())
    return image_from_metadata(metadata, cache / "tree", gvmi[1])


@pytest.fixture(scope="module")
def gvmi(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return _tiny_gvmi(tmp_path_factory.mktemp("tinyroot"))


@pytest.fixture(scope="module")
def image(gvmi: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Image:
    return _unpacked(gvmi, tmp_path_factory.mktemp("cache"))


async def engine_has(tag: str) -> bool:
    """Whether the engine of the test holds the image ``tag``."""
    found = await find_engine()
    code, _ = await found.call("image", "inspect", tag)
    return code == 0


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


async def test_commands_run_in_the_image_without_network_with_volumes_on_the_host(
    image: Image, tmp_path: Path, engine: str
) -> None:
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


async def test_a_command_over_the_memory_limit_is_killed_and_says_so(
    image: Image, tmp_path: Path, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    monkeypatch.chdir(node_dir)  # the node's working directory
    limits = SandboxLimits(memory_bytes=32 * MIB, processes=64, cpu_threads=1)
    async with started(image, tmp_path / "m", limits=limits) as runtime:
        code, _out = await run(runtime, "dd if=/dev/zero bs=64M count=1 of=/dev/null")
        assert code in (137, -9), "killed by the OOM killer"
        assert runtime.exit_note() == "killed: memory limit 32 MiB of the container reached"
        code, out = await run(runtime, "echo still here")
        assert (code, out, runtime.exit_note()) == (0, "still here\n", None)
    assert not list(node_dir.iterdir()), "nothing of the activity's is left where the node runs (podman wrote `oom`)"


async def test_a_killed_command_is_killed_inside_the_container(image: Image, tmp_path: Path, engine: str) -> None:
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


async def test_stop_gives_the_server_its_grace_then_kills_it(image: Image, tmp_path: Path, engine: str) -> None:
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


async def test_an_image_without_a_root_file_system_is_refused(tmp_path: Path, engine: str) -> None:
    runtime = ContainerRuntime(Image(), tmp_path / "n")
    with pytest.raises(RuntimeFailure, match="the container runtime runs GVMI images"):
        await runtime.deploy(DeploySettings())
    await runtime.stop()


async def test_a_service_on_a_container_provider_runs_commands_and_moves_files(tmp_path: Path, engine: str) -> None:
    gvmi = _tiny_gvmi(tmp_path / "image", motd=f"{tmp_path}\n")  # an image of its own: the node imports it
    registry = ImageRegistry(tmp_path / "registry")
    registry.add(gvmi[0], tag="tiny/container:1", copy=True)
    config = LocalNetworkConfig(
        providers=(ProviderSpec(name="c1", runtime="container", mem_gib=0.25, cpu_threads=1),),
        image_registry=registry.root,
    )
    async with Golem(budget=1.0, local_network=config, invoice_timeout=10) as golem:
        node = golem.local_node
        assert node is not None
        tag = image_tag(_unpacked(gvmi, tmp_path / "cache"))
        assert not await engine_has(tag)
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
        assert node.engine_images.imported == [tag], "the node imported the image once, for its activity"
        assert await engine_has(tag)
    assert not await engine_has(tag), "the node removed the image it imported when it stopped"


async def test_the_storage_limit_bounds_the_volumes_and_with_docker_the_writable_layer(
    image: Image, tmp_path: Path, engine: str
) -> None:
    host = default_sandbox_host()
    if not host.storage_quota:
        pytest.skip(f"no file system per activity here: {host.storage_note}")
    where = "volumes and its writable layer" if engine == "docker" else "volumes"
    full = f"storage limit 16 MiB reached: the container's {where} are full (the offer's golem.inf.storage.gib)"
    async with started(image, tmp_path / "s", limits=SandboxLimits(storage_bytes=16 * MIB)) as runtime:
        if engine == "docker":
            assert runtime.layer_note is None, "the writable layer is on the activity's file system"
        else:
            assert runtime.layer_note is not None
            assert "podman binds its overlay directory over itself" in runtime.layer_note
        for target in ("/golem/out/big", "/big")[: 2 if engine == "docker" else 1]:  # a volume, then the layer
            code, out = await run(runtime, f"dd if=/dev/zero of={target} bs=1M count=32")
            assert code != 0, out
            assert "No space left on device" in out
            assert runtime.exit_note() == full
            assert (await run(runtime, f"rm {target}; echo small > {target}; cat {target}")) == (0, "small\n")
            assert runtime.exit_note() is None
        if engine == "docker":
            ten = "dd if=/dev/zero bs=1M count=10 of="
            code, out = await run(runtime, f"{ten}/golem/in/a && {ten}/b")
            assert code != 0, "volumes and layer share the one limit"
            assert runtime.exit_note() == full
    assert not (tmp_path / "s").exists(), "stop unmounts and removes the activity's file system"


async def test_a_runtime_removes_the_images_it_imported_and_keeps_those_it_found(tmp_path: Path, engine: str) -> None:
    mine = _unpacked(_tiny_gvmi(tmp_path / "mine", motd=f"{tmp_path} mine\n"), tmp_path / "c1")
    found = _unpacked(_tiny_gvmi(tmp_path / "found", motd=f"{tmp_path} found\n"), tmp_path / "c2")
    users = EngineImages()  # what the user had in the engine before: imported by someone else
    await users.acquire(await find_engine(), found)
    try:
        for which in (mine, found):
            async with started(which, tmp_path / "r") as runtime:
                assert (await run(runtime, "cat /etc/motd"))[1].endswith(("mine\n", "found\n"))
        assert not await engine_has(image_tag(mine)), "the image the runtime imported is removed at its stop"
        assert await engine_has(image_tag(found)), "the image the engine had before is kept"
    finally:
        await users.aclose()
    assert not await engine_has(image_tag(found))


# A TCP server on port 80 (perl's built-ins only: no modules in the tiny root): it answers each connection's first
# line with "<its greeting> got <line>"; it creates /golem/out/ready once it listens.
SERVER = (
    'socket(S,2,1,6)||die"socket: $!";setsockopt(S,1,2,pack("l",1));'
    'bind(S,pack("S n x12",2,80))||die"bind: $!";listen(S,8)||die"listen: $!";'
    'open(F,">/golem/out/ready");close F;'
    'while(accept(C,S)){$l=<C>;syswrite(C,"$ARGV[0] got $l");close C}'
)
CLIENT = (
    'socket(S,2,1,6)||die"socket: $!";connect(S,pack("S n C4 x8",2,80,split(/\\./,$ARGV[0])))||die"connect: $!";'
    'syswrite(S,"hello\\n");print <S>'
)
WAIT_READY = "i=0; while [ ! -e /golem/out/ready ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done; ls /golem/out"


class PerlServer(Service):
    """The tiny root on a container provider, serving :data:`SERVER` on port 80 of its VPN address."""

    @staticmethod
    async def get_payload() -> VmPayload:
        return attrs.evolve(await vm.repo(image_tag="tiny/container:1", min_mem_gib=0.25), runtime="container")

    async def start(self) -> AsyncIterator[Script]:
        script = self._ctx.new_script(timeout=BOUND)
        script.deploy()
        script.start()
        script.run("/bin/sh", "-c", f"(LC_ALL=C /bin/perl -e '{SERVER}' '{self.name}' &); {WAIT_READY}")
        yield script


async def test_two_container_instances_in_a_vpn_talk_and_the_requestor_reaches_one(
    gvmi: tuple[Path, str], tmp_path: Path, engine: str
) -> None:
    if netns.unavailable_reason() is not None:
        pytest.skip(str(netns.unavailable_reason()))
    registry = ImageRegistry(tmp_path / "registry")
    registry.add(gvmi[0], tag="tiny/container:1", copy=True)
    specs = tuple(ProviderSpec(name=f"c{n}", runtime="container", mem_gib=0.25, cpu_threads=1) for n in (1, 2))
    config = LocalNetworkConfig(providers=specs, image_registry=registry.root)
    async with Golem(budget=1.0, local_network=config, event_consumer=None) as golem:
        network = await golem.create_network("192.168.7.0/24")
        cluster = await golem.run_service(
            PerlServer, num_instances=2, network=network, network_addresses=["192.168.7.10", "192.168.7.11"]
        )
        await cluster.wait_running(timeout=BOUND)
        first, second = cluster.instances
        script = second.ctx.new_script(timeout=BOUND)
        talk = script.run("/bin/perl", "-e", CLIENT, "192.168.7.10")
        hosts = script.run("/bin/cat", "/etc/hosts")
        raw = script.run("/bin/perl", "-e", 'print socket(S, 2, 3, 1) ? "raw" : "refused: $!"')  # SOCK_RAW, ICMP
        await second.ctx.run_script(script)
        assert (await talk).stdout == f"{first.name} got hello\n", "an instance reaches another by its VPN address"
        assert "192.168.7.11\tgolem-vm" in ((await hosts).stdout or "")
        assert (await raw).stdout == "refused: Operation not permitted", "no raw sockets: no forged addresses"
        assert first.network_node is not None
        async with await first.network_node.connect(80) as conn:
            await conn.write(b"from the requestor\n")
            answer = await conn.read()
        assert answer == f"{first.name} got from the requestor\n".encode(), "the requestor reaches it over the VPN"
        cluster.stop()


async def test_the_container_benchmark_runs_and_prints_each_figure_next_to_the_vm_floor(
    tmp_path: Path, engine: str
) -> None:
    await asyncio.to_thread(tmp_path.chmod, 0o711)  # the vm floor's sandbox passes through it, as a node's
    found = await bench_container.measure(1, tmp_path, engines=(engine,))
    lines = bench_container.report(found)
    assert [line.split(":")[0].strip() for line in lines] == ["vm", engine]
    assert lines[0].endswith("over 1; 1.0x the vm floor")
    assert "x the vm floor" in lines[1], lines[1]
