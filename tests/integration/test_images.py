"""Real images end to end: GVMI files built from Dockerfiles on Debian bases by the builder's own interpreter (RUN
with the network: apt-get, pip), kept in a registry, served by a real local node, resolved by ``vm.repo`` through
``Golem``, downloaded, verified, unpacked and run as the sandbox's ``/`` by its providers.

Slow: the first build of each Debian base takes 20-50 s (mmdebstrap from deb.debian.org), then the bases and the
RUN layers are shared by every test through the session's build cache (``tests/conftest.py``); each test has a
generous timeout for the first one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from golem_api import Golem, LocalNetworkConfig, vm
from golem_api._rest.client import RestClient
from golem_api._rest.config import ApiConfig
from golem_api.activity.storage import GsbStorage
from golem_api.activity.work_context import WorkContext
from golem_api.errors import CommandExecutionError
from golem_api.market.agreement import Agreement
from golem_api.payload import Payload, VmPayload
from golem_local.images.builder import BuildResult, build_image
from golem_local.images.cache import image_from_metadata, unpack_for_sandboxes
from golem_local.images.errors import DockerfileError, ImageBuildError, ImageNotFoundError
from golem_local.images.format import read_metadata, verify_image
from golem_local.images.registry import ImageRegistry
from golem_local.node import LocalNode
from golem_local.runtime.base import DeploySettings, RunProcess
from golem_local.runtime.rootfs import remove_tree, user_namespace
from golem_local.runtime.vm import VmRuntime

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

BOUND = 20.0  # seconds any single await here may take
EXAMPLE_IMAGE = Path(__file__).resolve().parents[2] / "examples" / "simple_service" / "image"

SMALL_DOCKERFILE = """\
# A small image: files, a build step, environment, a working directory and volumes.
FROM debian:bookworm-slim
ARG WHO=builder
ENV GREETING="hello from the image" \\
    APP_DIR=/golem/app
WORKDIR /golem/work
VOLUME /golem/in /golem/out
COPY hello.txt $APP_DIR/
COPY tools/ /golem/tools/
RUN echo "built by $WHO in $(pwd)" > /golem/app/built.txt \\
    && mkdir /data && echo top-level > /data/note.txt
ENTRYPOINT ["sh", "-c"]
"""


def small_context(root: Path, dockerfile: str = SMALL_DOCKERFILE) -> Path:
    root.mkdir(parents=True)
    (root / "Dockerfile").write_text(dockerfile)
    (root / "hello.txt").write_text("hello file\n")
    (root / "tools").mkdir()
    (root / "tools" / "tool.sh").write_text("#!/bin/sh\necho tool ran\n")
    (root / "tools" / "tool.sh").chmod(0o755)
    return root


@pytest.fixture
def registry(tmp_path: Path) -> ImageRegistry:
    return ImageRegistry(tmp_path / "registry")


async def build(context: Path, tag: str, registry: ImageRegistry, **options: object) -> BuildResult:
    """Build with the builder's own interpreter (never an engine that happens to be installed)."""
    return await build_image(context, tag=tag, registry=registry, engine="none", **options)  # type: ignore[arg-type]


async def run_in(runtime: VmRuntime, *argv: str) -> tuple[int, str]:
    out: list[bytes] = []
    code = await runtime.run_command(RunProcess(argv[0], argv[1:]), lambda _stream, data: out.append(data))
    return code, b"".join(out).decode()


class Session:
    """A ``Golem`` on a one-provider local network that serves ``registry``, and work contexts on its agreements."""

    def __init__(self, golem: Golem, rest: RestClient, storage: GsbStorage) -> None:
        self.golem = golem
        self.rest = rest
        self.storage = storage

    @property
    def node(self) -> LocalNode:
        assert self.golem.local_node is not None
        return self.golem.local_node

    async def agreement(self, payload: Payload) -> Agreement:
        demand = await self.golem.create_demand(payload)
        return await demand.agreement(timeout=BOUND)

    async def context(self, agreement: Agreement) -> WorkContext:
        return WorkContext(await agreement.create_activity(), self.storage, self.golem.bus)


@pytest.fixture
async def session(registry: ImageRegistry) -> AsyncIterator[Session]:
    config = LocalNetworkConfig.with_providers(1, image_registry=registry.root)
    async with Golem(budget=1.0, local_network=config, invoice_timeout=10) as golem:
        node = golem.local_node
        assert node is not None
        async with RestClient(ApiConfig.for_node(node.url, node.app_key)) as rest, GsbStorage(rest) as storage:
            yield Session(golem, rest, storage)


async def test_a_built_image_runs_with_its_files_environment_and_volumes(
    tmp_path: Path, registry: ImageRegistry, session: Session
) -> None:
    built = await build(small_context(tmp_path / "ctx"), "test/small:1", registry)
    assert verify_image(built.path).compression == "gzip"
    agreement = await session.agreement(await vm.repo(image_tag="test/small:1", min_storage_gib=1.0))
    first, second = await session.context(agreement), await session.context(agreement)
    scripts, runs = [], []
    for ctx in (first, second):
        script = ctx.new_script(timeout=BOUND)
        script.deploy()
        script.start()
        runs.append(
            script.run(
                "/bin/sh",
                "-c",
                'echo "$GREETING|$(pwd)"; cat /golem/app/hello.txt /golem/app/built.txt /data/note.txt; '
                "/golem/tools/tool.sh; echo result > /golem/out/result.txt; echo changed >> /golem/app/hello.txt; "
                "tail -n 1 /golem/app/hello.txt; ls /var/run/*.pid 2>/dev/null; echo $$ > /var/run/mine.pid; "
                ". /etc/os-release; echo $VERSION_CODENAME; cat /etc/hostname; "
                "test -e /usr/bin/python3 || echo no-python",
            )
        )
        scripts.append(ctx.run_script(script))
    await asyncio.wait_for(asyncio.gather(*scripts), BOUND)  # two activities deploy the image at the same time
    expected = (
        "hello from the image|/golem/work\nhello file\nbuilt by builder in /golem/work\ntop-level\ntool ran\nchanged\n"
        "bookworm\ngolem-vm\nno-python\n"
    )
    assert [(await run).stdout for run in runs] == [expected, expected]  # each changed its own copy of the files
    script = first.new_script(timeout=BOUND)
    result = script.download_bytes("/golem/out/result.txt")
    await first.run_script(script)
    assert await result == b"result\n"
    cache = session.node.image_cache
    assert cache is not None
    assert cache.downloads == {built.hash: 1}, "one download, shared by both activities"
    assert (cache.directory / built.hash / "golem" / "app" / "hello.txt").read_text() == "hello file\n"
    assert (cache.directory / built.hash / "usr" / "bin" / "apt-get").exists(), "a whole Debian root file system"
    await agreement.terminate()


async def test_from_python_is_debians_python_and_pip_installs_from_pypi(
    tmp_path: Path, registry: ImageRegistry
) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM python:3.11-slim\n"
        "COPY service.py /golem/run/\n"
        "RUN pip install --no-cache-dir Flask\n"
        "RUN /golem/run/service.py > /golem/run/at-build.txt\n"
    )
    (context / "service.py").write_text(
        "#!/usr/bin/env python3\nimport sys, flask\nprint(sys.version_info[:2], flask.Flask.__name__)\n"
    )
    (context / "service.py").chmod(0o755)
    built = await build(context, "test/python:1", registry)
    assert any("Debian bookworm's Python 3.11" in note for note in built.notes)
    metadata = read_metadata(built.path)
    assert metadata.env_dict["PYTHON_VERSION"].startswith("3.11.")
    assert metadata.cmd == ("python3",), "the CMD of the official image"
    namespace = user_namespace()
    root = tmp_path / "unpacked"
    unpack_for_sandboxes(built.path, root, namespace)
    try:
        assert (root / "golem" / "run" / "at-build.txt").read_text() == "(3, 11) Flask\n"
        runtime = VmRuntime(image_from_metadata(metadata, root, built.hash), tmp_path / "activity")
        try:
            await runtime.deploy(DeploySettings())
            await runtime.start([])
            code, out = await run_in(
                runtime, "python3", "-c", "import sys, flask; print(sys.executable, sys.prefix, flask.__file__)"
            )
            assert (code, out.split()[:2]) == (0, ["/usr/local/bin/python3", "/usr"]), "as in the official image"
            assert out.split()[2].startswith("/usr/local/lib/python3.11/dist-packages/flask/")
            hidden = " ".join((sys.base_prefix, sys.prefix, str(Path.cwd())))
            code, out = await run_in(runtime, "sh", "-c", f'for d in {hidden}; do [ -e "$d" ] && echo "$d"; done; true')
            assert (code, out) == (0, ""), "the host's Python, its environment and the project do not show"
        finally:
            await runtime.stop()
    finally:
        remove_tree(root, namespace)


async def test_nginx_installed_with_apt_serves_a_page_inside_its_sandbox(
    tmp_path: Path, registry: ImageRegistry
) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM debian:bookworm-slim\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends nginx\n"
        "COPY index.html /var/www/html/index.html\n"
        "VOLUME /golem/in /golem/out\n"
        'ENTRYPOINT ["nginx", "-g", "daemon off;"]\n'
    )
    (context / "index.html").write_text("<h1>served from a Golem image</h1>\n")
    built = await build(context, "test/nginx:1", registry)
    namespace = user_namespace()
    root = tmp_path / "unpacked"
    metadata = unpack_for_sandboxes(built.path, root, namespace)
    try:
        runtime = VmRuntime(image_from_metadata(metadata, root, built.hash), tmp_path / "activity")
        try:
            await runtime.deploy(DeploySettings())
            await runtime.start([])
            code, out = await run_in(runtime, "nginx")  # returns once listening, workers started as www-data
            assert code == 0, out
            client = 'exec 3<>/dev/tcp/127.0.0.1/80; printf "GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n" >&3; cat <&3'
            code, out = await run_in(runtime, "bash", "-c", client)
            assert code == 0, out
            assert out.startswith("HTTP/1.1 200 OK")
            assert out.endswith("<h1>served from a Golem image</h1>\n")
            code, out = await run_in(
                runtime, "sh", "-c", "ps -o user= -C nginx 2>/dev/null || grep -h Uid /proc/*/status"
            )
            assert "33" in out or "www-data" in out, "nginx's workers switched to www-data (the image's users exist)"
        finally:
            await runtime.stop()
    finally:
        remove_tree(root, namespace)


async def test_a_hash_mismatch_fails_deploy_with_a_clear_error(
    tmp_path: Path, registry: ImageRegistry, session: Session
) -> None:
    built = await build_image(small_context(tmp_path / "ctx"), tag="test/small:1", registry=registry)
    wrong = "0" * 56
    url = f"{session.node.url}/v1/image/download/{built.hash}"
    agreement = await session.agreement(VmPayload(min_storage_gib=1.0, task_package=f"hash:sha3:{wrong}:{url}"))
    ctx = await session.context(agreement)
    script = ctx.new_script(timeout=BOUND)
    script.deploy()
    with pytest.raises(CommandExecutionError) as failure:
        await ctx.run_script(script)
    assert failure.value.command == "deploy"
    assert f"has the hash {built.hash}, not the {wrong}" in str(failure.value)
    await agreement.terminate()


async def test_the_node_serves_the_registry_api_as_the_golem_registry(
    tmp_path: Path, registry: ImageRegistry, session: Session
) -> None:
    built = await build_image(small_context(tmp_path / "ctx"), tag="test/small:1", registry=registry)
    async with aiohttp.ClientSession(base_url=session.node.url) as http:  # no app key: the registry is public
        async with http.get("/v1/image/info", params={"tag": "test/small:1", "count": "true"}) as response:
            assert response.status == 200
            info = await response.json()
        assert info == {
            "http": f"{session.node.url}/v1/image/download/{built.hash}",
            "sha3": built.hash,
            "size": built.size,
        }
        async with http.get("/v1/image/info", params={"hash": built.hash}) as response:
            assert (await response.json())["sha3"] == built.hash
        # the download URL is absolute, fetched as a provider would, by a session without a base URL
        # (aiohttp < 3.12 refuses an absolute URL in a session that has one)
        async with aiohttp.ClientSession() as provider:
            async with provider.head(info["http"]) as response:
                assert response.status == 200
                assert int(response.headers["Content-Length"]) == built.size
            async with provider.get(info["http"]) as response:
                assert hashlib.sha3_224(await response.read()).hexdigest() == built.hash
        async with http.get("/v1/image/info", params={"tag": "nosuch/image:2"}) as response:
            assert response.status == 404
            message = (await response.json())["message"]
        assert "nosuch/image:2" in message
        assert "golem-api image build DIR --tag nosuch/image:2" in message
        async with http.get("/me") as response:
            assert response.status == 401, "the node's own APIs still need the app key"


async def test_vm_repo_of_an_unknown_tag_says_how_to_build_it(session: Session) -> None:
    with pytest.raises(ImageNotFoundError) as failure:
        await session.golem.create_demand(await vm.repo(image_tag="nosuch/image:2"))
    assert "nosuch/image:2" in str(failure.value)
    assert "golem-api image build DIR --tag nosuch/image:2" in str(failure.value)


async def test_a_rebuild_comes_from_the_cache_with_the_same_hash_and_failures_name_the_line(
    tmp_path: Path, registry: ImageRegistry
) -> None:
    first = await build(small_context(tmp_path / "a"), "test/small:1", registry)
    second = await build(small_context(tmp_path / "b"), "test/small:2", registry)
    assert second.hash == first.hash
    assert second.cached_steps == 1, "the RUN step came from the build cache"
    assert second.seconds < 15
    assert [entry.tags for entry in registry.entries()] == [("test/small:1", "test/small:2")]
    changed = small_context(tmp_path / "c")
    (changed / "hello.txt").write_text("another hello\n")
    third = await build(changed, "test/small:3", registry)
    assert third.hash != first.hash, "a COPY source changed: the steps after it run again"
    failing = SMALL_DOCKERFILE.replace("ENTRYPOINT", "RUN echo about to fail >&2; exit 3\nENTRYPOINT")
    context = small_context(tmp_path / "d", failing)
    with pytest.raises(ImageBuildError) as failure:
        await build(context, "test/failing:1", registry)
    assert (failure.value.path, failure.value.line, failure.value.instruction) == (
        str(context / "Dockerfile"),
        12,
        "RUN",
    )
    assert "exited with code 3" in str(failure.value)
    assert "about to fail" in str(failure.value)
    for base, words in (
        ("alpine:3.19", ["line 2: FROM", "alpine:3.19", "apt-get install", "--engine docker"]),
        ("ubuntu:24.04", ["line 2: FROM", "no Ubuntu archive", "FROM debian:bookworm-slim"]),
        ("nginx:latest", ["line 2: FROM", "apt-get install -y --no-install-recommends nginx"]),
    ):
        unsupported = small_context(
            tmp_path / base.replace(":", "-"), SMALL_DOCKERFILE.replace("debian:bookworm-slim", base)
        )
        with pytest.raises(DockerfileError) as refused:
            await build(unsupported, "test/refused:1", registry)
        assert str(unsupported / "Dockerfile") in str(refused.value)
        for word in words:
            assert word in str(refused.value)
    assert len(registry.entries()) == 2, "failed builds add nothing"


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "golem_api._cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), BOUND)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_image_cli_builds_adds_lists_and_refuses_bad_input(tmp_path: Path) -> None:
    context = small_context(tmp_path / "ctx")
    where = str(tmp_path / "registry")
    code, out, err = await run_cli(
        "image", "build", str(context), "--tag", "test/cli:1", "--registry", where, "--engine", "none"
    )
    assert code == 0, err
    digest = ImageRegistry(where).find(tag="test/cli:1").hash
    assert f"hash: {digest}" in out
    assert "tag:  test/cli:1" in out
    assert "by the builder's own interpreter" in out
    assert "Step 8/9 : RUN echo" in err
    other = str(tmp_path / "other")
    code, out, err = await run_cli("image", "add", str(ImageRegistry(where).path_of(digest)), "--tag", "test/added:2",
                                   "--registry", other)  # fmt: skip
    assert code == 0, err
    assert f"hash: {digest}" in out
    assert "squashfs gzip" in out
    assert "vm.repo(image_tag='test/added:2')" in out
    code, out, _ = await run_cli("image", "list", "--registry", other)
    assert code == 0
    assert out.splitlines()[1].split()[:2] == ["test/added:2", digest]
    broken = tmp_path / "broken.gvmi"
    broken.write_bytes(ImageRegistry(where).path_of(digest).read_bytes()[:100_000])
    code, out, err = await run_cli("image", "add", str(broken), "--registry", other)
    assert (code, out) == (1, "")
    assert f"{broken} is not a GVMI image" in err
    (context / "Dockerfile").write_text("FROM debian:bookworm-slim\nCOPY hello.txt /x/\nUSER nobody\n")
    code, out, err = await run_cli(
        "image", "build", str(context), "--tag", "test/cli:2", "--registry", where, "--engine", "none"
    )
    assert code == 1
    assert out == ""
    assert f"{context / 'Dockerfile'}, line 3: USER:" in err
    assert "as root" in err


async def test_the_documented_simple_service_dockerfile_builds_as_it_is(
    tmp_path: Path, registry: ImageRegistry
) -> None:
    text = (EXAMPLE_IMAGE / "Dockerfile").read_text()
    assert text.startswith("FROM python:3.8-slim\nVOLUME /golem/in /golem/out\n")
    assert "RUN pip install numpy matplotlib\nRUN chmod +x /golem/run/*\n" in text
    built = await build(EXAMPLE_IMAGE, "golem-api/simple-service:1.0", registry)
    assert any("Python 3.11, NOT 3.8" in note for note in built.notes), built.notes
    metadata = read_metadata(built.path)
    assert set(metadata.volumes) == {"/golem/in", "/golem/out"}
    assert metadata.entrypoint == ("sh",)
    assert metadata.cmd is None, "ENTRYPOINT drops the CMD of the base, as in Docker"
    listing = await asyncio.to_thread(
        subprocess.run, ["unsquashfs", "-lln", str(built.path)], capture_output=True, text=True, check=True
    )
    lines = listing.stdout.splitlines()
    for name in ("simple_service.py", "simulate_observations.py", "simulate_observations_ctl.py", "simple_service.db"):
        assert any(line.endswith(f"squashfs-root/golem/run/{name}") for line in lines), name
    assert any("/usr/local/lib/python3.11/dist-packages/numpy/" in line for line in lines)
    assert any(line.startswith("-rwxr-xr-x 0/0") and line.endswith("/golem/run/simple_service.py") for line in lines)
    again = await build(EXAMPLE_IMAGE, "golem-api/simple-service:1.0", registry)
    assert again.hash == built.hash
    assert again.cached_steps == 3
    print(
        json.dumps(
            {
                "example image": built.hash,
                "size": built.size,
                "first build s": round(built.seconds, 1),
                "cached build s": round(again.seconds, 1),
            }
        )
    )
