"""A GVMI's root file system as the sandbox's ``/``: writable per activity, discarded at the end, nothing of the
host visible, the agent running on the host's interpreter although the image has no Python.

The image is a tiny real root (:mod:`tests.tinyroot`, this machine's ``sh`` and coreutils with their libraries)
packed by the real ``mksquashfs`` and unpacked the way providers do (in the sandboxes' user namespace), so these
tests take about a second and need no network.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from golem_api import Golem, LocalNetworkConfig, vm
from golem_api._rest.client import RestClient
from golem_api._rest.config import ApiConfig
from golem_api.activity.storage import GsbStorage
from golem_api.activity.work_context import WorkContext
from golem_local.images.cache import image_from_metadata, unpack_for_sandboxes
from golem_local.images.format import ImageMetadata, write_gvmi
from golem_local.images.registry import ImageRegistry
from golem_local.runtime import rootfs
from golem_local.runtime.base import DeploySettings, RunProcess, RuntimeFailure
from golem_local.runtime.image import Image
from golem_local.runtime.rootfs import image_uid_range, user_namespace
from golem_local.runtime.sandbox import IMAGE_CAPABILITIES, SandboxLayout, bwrap_args
from golem_local.runtime.vm import VmRuntime
from tests.tinyroot import make_tiny_root

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None or shutil.which("mksquashfs") is None,
    reason="bubblewrap and squashfs-tools are needed (scripts/bootstrap.sh installs them)",
)

BOUND = 20.0
METADATA = ImageMetadata(
    env=("PATH=/bin", "GREETING=hi"),
    working_dir="/golem/work",
    volumes=("/golem/in", "/golem/out"),
)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """The tiny root as a GVMI, unpacked like a provider's cache does (once for the module)."""
    base = tmp_path_factory.mktemp("tinyroot")
    gvmi = base / "tiny.gvmi"
    digest = write_gvmi(make_tiny_root(base / "tree", extra=("setpriv",)), METADATA, gvmi)
    namespace = user_namespace()
    cache = base / "cache"
    metadata = unpack_for_sandboxes(gvmi, cache, namespace)
    return image_from_metadata(metadata, cache, digest)


async def run(runtime: VmRuntime, script: str) -> tuple[int, str]:
    out: list[bytes] = []
    process = RunProcess("/bin/sh", ("-c", script))
    code = await asyncio.wait_for(runtime.run_command(process, lambda _s, data: out.append(data)), BOUND)
    return code, b"".join(out).decode()


@pytest.fixture
async def runtime(image: Image, tmp_path: Path) -> AsyncIterator[VmRuntime]:
    sandbox = VmRuntime(image, tmp_path / "activity")
    await sandbox.deploy(DeploySettings())
    await sandbox.start([])
    try:
        yield sandbox
    finally:
        await sandbox.stop()


async def test_the_image_is_root_with_the_vm_directories_and_generated_etc_files(runtime: VmRuntime) -> None:
    code, out = await run(
        runtime,
        'echo "$GREETING $(pwd) $HOME"; cat /golem/app/hello.txt /etc/motd /etc/hostname; cat /etc/hosts; '
        "ls -d /var /run /tmp /root /opt /proc/self /dev/null; stat -c '%a' /tmp; id -u; ls /golem",
    )
    assert code == 0, out
    lines = out.splitlines()
    assert lines[:4] == ["hi /golem/work /root", "hello from the image", "tiny root", "golem-vm"]
    assert "127.0.0.1\tlocalhost" in lines
    assert "127.0.1.1\tgolem-vm" in lines
    assert {"/var", "/run", "/tmp", "/root", "/opt", "/proc/self", "/dev/null"} <= set(lines)
    assert "1777" in lines
    assert lines[-4:] == ["0", "app", "in", "out"] or lines[-5:] == ["0", "app", "in", "out", "work"]


async def test_host_files_are_not_visible_and_the_agent_needs_no_python_in_the_image(runtime: VmRuntime) -> None:
    hidden = [str(Path.cwd()), "/usr/lib/python3", "/etc/shadow", "/work", os.__file__, "/home", "/sys/kernel"]
    code, out = await run(runtime, "for p in " + " ".join(hidden) + ' /usr; do [ -e "$p" ] && echo "$p"; done; true')
    assert (code, out) == (0, ""), "nothing of the host shows at its own path"
    code, out = await run(runtime, "ls /.golem /.golem/python/bin; cat /proc/1/cmdline | head -c 200")
    assert code == 0
    assert "agent.py" in out
    assert "--library-path" in out, "PID 1 runs on the host's interpreter through the host's dynamic loader"


async def test_writes_land_in_the_activity_only_and_are_gone_at_stop(image: Image, tmp_path: Path) -> None:
    assert image.root is not None
    before = sorted(str(path.relative_to(image.root)) for path in image.root.rglob("*"))
    first, second = VmRuntime(image, tmp_path / "a"), VmRuntime(image, tmp_path / "b")
    for sandbox in (first, second):
        await sandbox.deploy(DeploySettings())
        await sandbox.start([])
    try:
        code, out = await run(
            first,
            "echo 4242 > /var/run/service.pid && echo changed >> /golem/app/hello.txt && rm /etc/motd && "
            "mkdir -p /usr/local/data && touch /usr/local/data/x && chown 33:33 /usr/local/data/x && "
            "stat -c '%u' /usr/local/data/x && cat /var/run/service.pid",
        )
        assert (code, out) == (0, "33\n4242\n"), "root of the sandbox owns the image: it may write and chown anywhere"
        code, out = await run(second, "cat /golem/app/hello.txt /etc/motd; ls /var/run /usr/local 2>&1; true")
        assert out.startswith("hello from the image\ntiny root\n"), "the other activity sees the image as built"
        assert "service.pid" not in out
    finally:
        await first.stop()
        await second.stop()
    assert sorted(str(path.relative_to(image.root)) for path in image.root.rglob("*")) == before
    assert (image.root / "golem" / "app" / "hello.txt").read_text() == "hello from the image\n"
    assert not (tmp_path / "a").exists(), "stop removed the activity's layer and volumes"
    third = VmRuntime(image, tmp_path / "c")
    await third.deploy(DeploySettings())
    await third.start([])
    try:
        code, out = await run(third, "cat /etc/motd; ls /var/run 2>&1 | head -1; true")
        assert out.startswith("tiny root\n")
        assert "service.pid" not in out
    finally:
        await third.stop()


async def test_volumes_are_shared_with_the_host_and_a_daemon_dies_with_the_activity(
    image: Image, tmp_path: Path
) -> None:
    sandbox = VmRuntime(image, tmp_path / "activity")
    deployment = await sandbox.deploy(DeploySettings())
    await sandbox.start([])
    try:
        out_volume = next(v for v in deployment.volumes if v.path == "/golem/out")
        code, _ = await run(sandbox, "echo result > /golem/out/result.txt; (sleep 600 &) ; true")
        assert code == 0
        assert (out_volume.host_path / "result.txt").read_text() == "result\n"
        assert sandbox.container_path("/golem/out/result.txt") == (out_volume.host_path / "result.txt").resolve()
        with pytest.raises(RuntimeFailure, match="not inside a volume"):
            sandbox.container_path("/etc/motd")
    finally:
        await sandbox.stop()


async def test_volumes_where_the_sandbox_puts_its_own_are_refused(image: Image, tmp_path: Path) -> None:
    for path in ("/proc/x", "/dev", "/.golem/agent"):
        sandbox = VmRuntime(image, tmp_path / path.strip("/").replace("/", "-"))
        with pytest.raises(RuntimeFailure, match="which the sandbox fills itself"):
            await sandbox.deploy(DeploySettings(volumes=(path,)))
        await sandbox.stop()
    sandbox = VmRuntime(image, tmp_path / "etc")
    await sandbox.deploy(DeploySettings(volumes=("/etc/app", "/var/lib/data")))  # fine in an image of its own
    await sandbox.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="the images' ids are mapped to a range only when the node is root")
async def test_as_root_the_images_ids_are_an_unprivileged_host_range(image: Image, runtime: VmRuntime) -> None:
    base, _count = image_uid_range()
    assert image.root is not None
    assert image.root.stat().st_uid == base, "the unpacked image belongs to the range, not to the host's root"
    code, out = await run(
        runtime,
        "id -u; touch /golem/out/mine; chown 33:33 /golem/out/mine; setpriv --reuid=33 --regid=33 --clear-groups id -u;"
        " setpriv --reuid=33 --regid=33 --clear-groups touch /golem/out/as-www-data 2>&1; cat /proc/self/uid_map",
    )
    assert code == 0, out
    lines = out.splitlines()
    assert lines[:2] == ["0", "33"], "root inside, and it may switch to another user of the image"
    assert "Permission denied" in out, "www-data cannot write root's volume"
    assert lines[-1].split() == ["0", str(base), "65536"]
    assert runtime.container_path("/golem/out/mine").stat().st_uid == base + 33


def test_the_root_fs_layout_binds_the_root_and_keeps_the_images_users(tmp_path: Path) -> None:
    args = bwrap_args(SandboxLayout(root_fs=tmp_path, files=((tmp_path / "agent.py", "/.golem/agent.py"),)))
    assert args[:3] == ["--bind", str(tmp_path), "/"]
    assert "--unshare-user" not in args, "bwrap runs in the namespace the root was mounted in: ids are kept"
    assert "--unshare-all" not in args
    kept = [args[i + 1] for i, arg in enumerate(args) if arg == "--cap-add"]
    assert args[args.index("--cap-drop") + 1] == "ALL"
    assert set(kept) == set(IMAGE_CAPABILITIES), "root keeps a container's root's capabilities, in its namespaces"
    assert "CAP_SYS_ADMIN" not in kept
    assert ["--ro-bind", str(tmp_path / "agent.py"), "/.golem/agent.py"] == args[args.index("/.golem/agent.py") - 2 :][
        :3
    ]
    assert not any(arg in ("/usr", "/etc/passwd") for arg in args), "nothing of the host's system"


def gvmkit_like(tree: Path, path: Path) -> Path:
    """A GVMI as gvmkit-build writes one: lzo, the config of ``docker inspect`` with keys golem-api never writes."""
    squashfs = path.with_suffix(".sqfs")
    subprocess.run(["mksquashfs", str(tree), str(squashfs), "-comp", "lzo", "-quiet", "-no-progress"], check=True)
    config = {"Hostname": "4c1f0e2a9b3d", "Domainname": "", "AttachStdin": False, "Env": ["PATH=/bin", "FROM=gvmkit"],
              "Cmd": ["sh"], "Image": "sha256:0123", "Volumes": {"/golem/output": {}}, "WorkingDir": "",
              "Entrypoint": None, "OnBuild": None, "Labels": None}  # fmt: skip
    data = json.dumps(config).encode()
    path.write_bytes(squashfs.read_bytes() + struct.pack("<I", zlib.crc32(data)) + data + b"%08d" % len(data))
    return path


async def test_a_gvmi_made_elsewhere_is_added_and_runs_by_tag_and_by_url(tmp_path: Path) -> None:
    gvmi = gvmkit_like(make_tiny_root(tmp_path / "tree"), tmp_path / "elsewhere.gvmi")
    registry = ImageRegistry(tmp_path / "registry")
    entry = registry.add(gvmi, tag="elsewhere/tiny:1", copy=True)

    async def serve(_request: web.Request) -> web.StreamResponse:
        return web.FileResponse(gvmi)

    app = web.Application()
    app.router.add_get("/images/tiny.gvmi", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/images/tiny.gvmi"
    try:
        config = LocalNetworkConfig.with_providers(1, image_registry=registry.root)
        async with Golem(budget=1.0, local_network=config, invoice_timeout=10) as golem:
            node = golem.local_node
            assert node is not None
            async with RestClient(ApiConfig.for_node(node.url, node.app_key)) as rest, GsbStorage(rest) as storage:
                for payload in (
                    await vm.repo(image_tag="elsewhere/tiny:1"),
                    await vm.repo(image_url=url, image_hash=entry.hash),
                ):
                    demand = await golem.create_demand(payload)
                    agreement = await demand.agreement(timeout=BOUND)
                    ctx = WorkContext(await agreement.create_activity(), storage, golem.bus)
                    script = ctx.new_script(timeout=BOUND)
                    script.deploy()
                    script.start()
                    result = script.run("/bin/sh", "-c", 'cat /etc/motd; echo "$FROM"; ls -d /golem/output')
                    await ctx.run_script(script)
                    assert (await result).stdout == "tiny root\ngvmkit\n/golem/output\n"
                    await agreement.terminate()
            assert node.image_cache is not None
            assert node.image_cache.downloads == {entry.hash: 1}, "the URL's file has the same hash: cached once"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("strategy", ["overlay", "overlay-tmpfs", "copy"])
async def test_each_way_of_making_the_root_gives_every_activity_its_own_writable_copy(
    image: Image, tmp_path: Path, strategy: rootfs.Strategy
) -> None:
    device = tmp_path.stat().st_dev  # noqa: ASYNC240
    chosen = rootfs._strategies.get(device)
    rootfs._strategies[device] = strategy  # what choose_strategy would have found on a file system that needs it
    first, second = VmRuntime(image, tmp_path / "a"), VmRuntime(image, tmp_path / "b")
    try:
        for sandbox in (first, second):
            await sandbox.deploy(DeploySettings())
            await sandbox.start([])
        code, out = await run(first, "echo 7 > /var/run/x.pid; echo more >> /etc/motd; cat /var/run/x.pid /etc/motd")
        assert (code, out) == (0, "7\ntiny root\nmore\n")
        code, out = await run(second, "cat /etc/motd; ls /var/run")
        assert (code, out) == (0, "tiny root\n")
        mounted = (await run(first, "cat /proc/mounts"))[1].splitlines()[0]
        assert mounted.startswith("golem-rootfs / overlay") == (strategy != "copy"), mounted
    finally:
        await first.stop()
        await second.stop()
        if chosen is None:
            rootfs._strategies.pop(device, None)
        else:
            rootfs._strategies[device] = chosen
    assert not (tmp_path / "a").exists()
    assert image.root is not None
    assert (image.root / "etc" / "motd").read_text() == "tiny root\n"
