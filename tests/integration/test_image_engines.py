"""Images built by a container engine: docker (a daemon this test starts itself) and podman (storage of its own).

Each engine builds the whole Dockerfile; its root file system is exported into the GVMI. No registry is
reachable here, so the Debian bases the builder makes are imported under the official names, and an unmodified
``FROM debian:bookworm-slim`` or ``FROM python:3.11-slim`` resolves locally; a base nothing can provide
(``alpine``) is refused naming the line. Skipped where the engine is not installed (``apt-get install docker.io``
or ``podman``) or, for docker, when not run as root (the test starts ``dockerd`` itself: ``--bridge=none
--iptables=false``, data and sockets in a temporary directory, stopped and unmounted afterwards).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from golem_local.images.builder import build_image
from golem_local.images.cache import image_from_metadata, unpack_for_sandboxes
from golem_local.images.errors import DockerfileError
from golem_local.images.format import verify_image
from golem_local.images.registry import ImageRegistry
from golem_local.runtime.base import DeploySettings, RunProcess
from golem_local.runtime.rootfs import remove_tree, user_namespace
from golem_local.runtime.vm import VmRuntime

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

DAEMON_BOUND = 60.0  # seconds dockerd may take to listen, and to stop
NGINX = (
    "FROM debian:bookworm-slim\n"
    "RUN apt-get update && apt-get install -y --no-install-recommends nginx\n"
    "COPY index.html /var/www/html/index.html\n"
    "VOLUME /golem/in /golem/out\n"
)


def nginx_context(root: Path) -> Path:
    root.mkdir()
    (root / "Dockerfile").write_text(NGINX)
    (root / "index.html").write_text("<p>built by an engine</p>\n")
    return root


def _mounted_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as table:
        points = [line.split()[4] for line in table]
    return [point for point in points if point == str(path) or point.startswith(f"{path}/")]


@pytest.fixture
async def docker_daemon(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """A dockerd of this test (as the prototype ran it), its socket in ``DOCKER_HOST``; stopped afterwards."""
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        pytest.skip("docker.io is not installed (apt-get install -y docker.io)")
    if os.geteuid() != 0:
        pytest.skip("the test starts its own dockerd, which needs root")
    where = Path(tempfile.mkdtemp(prefix="gd-", dir="/tmp"))  # short: containerd's socket paths have a limit
    socket = f"unix://{where}/docker.sock"
    daemon = await asyncio.create_subprocess_exec(
        "dockerd",
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
        f"--data-root={where}/data",
        f"--exec-root={where}/exec",
        f"--pidfile={where}/docker.pid",
        "-H",
        socket,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert daemon.stderr is not None
    said: list[str] = []

    async def listening() -> None:
        assert daemon.stderr is not None
        while line := (await daemon.stderr.readline()).decode(errors="replace"):
            said.append(line)
            if "API listen on" in line:
                return
        raise AssertionError("dockerd ended before it listened:\n" + "".join(said))

    async def drain() -> None:
        assert daemon.stderr is not None
        while await daemon.stderr.read(65536):
            pass

    drainer: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(listening(), DAEMON_BOUND)
        drainer = asyncio.create_task(drain())
        monkeypatch.setenv("DOCKER_HOST", socket)
        yield socket
    finally:
        if daemon.returncode is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(daemon.wait(), DAEMON_BOUND)
            except asyncio.TimeoutError:
                daemon.kill()
                await daemon.wait()
        if drainer is not None:
            await drainer
        for point in sorted(_mounted_under(where), key=len, reverse=True):  # dockerd leaves its netns mounted
            await asyncio.to_thread(subprocess.run, ["umount", point], check=False)
        shutil.rmtree(where, ignore_errors=True)


@pytest.fixture
def podman_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """podman with storage of this test only (vfs: nothing mounted), reset afterwards; docker made unreachable."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (apt-get install -y podman)")
    where = tmp_path / "podman"
    where.mkdir()
    conf = where / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{where}/root"\nrunroot = "{where}/run"\n')
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", str(conf))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{where}/no-docker.sock")  # so that auto picks podman
    try:
        yield where
    finally:
        subprocess.run(["podman", "system", "reset", "-f"], capture_output=True, timeout=120, check=False)
        shutil.rmtree(where, ignore_errors=True)


async def serve_and_fetch(gvmi: Path, work: Path) -> str:
    """Run the image's nginx in a sandbox and fetch its page from inside the same sandbox."""
    namespace = user_namespace()
    root = work / "unpacked"
    metadata = unpack_for_sandboxes(gvmi, root, namespace)
    runtime = VmRuntime(image_from_metadata(metadata, root, "x" * 56), work / "activity")
    try:
        await runtime.deploy(DeploySettings())
        await runtime.start([])
        out: list[bytes] = []
        client = 'nginx && exec 3<>/dev/tcp/127.0.0.1/80 && printf "GET / HTTP/1.0\\r\\n\\r\\n" >&3 && cat <&3'
        code = await asyncio.wait_for(
            runtime.run_command(RunProcess("bash", ("-c", client)), lambda _s, data: out.append(data)), 30
        )
        assert code == 0, b"".join(out)
        return b"".join(out).decode()
    finally:
        await runtime.stop()
        remove_tree(root, namespace)


async def test_docker_builds_the_whole_dockerfile_from_an_imported_base_and_the_image_runs(
    tmp_path: Path, docker_daemon: str
) -> None:
    registry = ImageRegistry(tmp_path / "registry")
    context = nginx_context(tmp_path / "ctx")
    built = await build_image(context, tag="test/nginx-docker:1", registry=registry, engine="docker")
    assert built.engine == "docker"
    assert any("imported into docker as debian:bookworm-slim" in note for note in built.notes)
    info = verify_image(built.path)
    assert info.metadata.volumes == ("/golem/in", "/golem/out")
    listing = await asyncio.to_thread(
        subprocess.run, ["unsquashfs", "-lln", str(built.path)], capture_output=True, text=True, check=True
    )
    assert "squashfs-root/.dockerenv" not in listing.stdout, "the engine's marker file is left out"
    assert "squashfs-root/usr/sbin/nginx" in listing.stdout
    page = await serve_and_fetch(built.path, tmp_path)
    assert page.startswith("HTTP/1.1 200 OK")
    assert page.endswith("<p>built by an engine</p>\n")
    again = await build_image(context, tag="test/nginx-docker:2", registry=registry, engine="docker")
    assert again.hash == built.hash, "docker's layer cache and the export's fixed times give the same file"
    (context / "Dockerfile").write_text("FROM alpine:3.19\nRUN true\n")
    with pytest.raises(DockerfileError) as refused:
        await build_image(context, tag="test/alpine:1", registry=registry, engine="docker")
    assert f"{context / 'Dockerfile'}, line 1: FROM:" in str(refused.value)
    assert "docker cannot pull alpine:3.19" in str(refused.value)


async def test_podman_builds_with_pip_and_auto_picks_it_for_what_the_own_interpreter_refuses(
    tmp_path: Path, podman_storage: Path
) -> None:
    registry = ImageRegistry(tmp_path / "registry")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM python:3.11-slim AS base\n"  # multi-stage and USER: beyond the own interpreter
        "RUN pip install --no-cache-dir Flask\n"
        "FROM base\n"
        'RUN python3 -c "import flask; print(flask.__name__)" > /flask.txt\n'
        "USER nobody\n"
    )
    logged: list[str] = []
    built = await build_image(context, tag="test/flask-podman:1", registry=registry, log=logged.append)
    assert built.engine == "podman"
    assert "own interpreter cannot build this Dockerfile" in "".join(logged)
    assert any("USER nobody is not kept" in note for note in built.notes)
    listing = await asyncio.to_thread(
        subprocess.run, ["unsquashfs", "-lln", str(built.path)], capture_output=True, text=True, check=True
    )
    assert "squashfs-root/flask.txt" in listing.stdout
    assert "/usr/local/lib/python3.11/dist-packages/flask/" in listing.stdout
    assert verify_image(built.path).hash == built.hash
