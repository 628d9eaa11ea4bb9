"""Local images end to end: built from a Dockerfile in the real sandbox, kept in a registry, served by a real
local node, resolved by ``vm.repo`` through ``Golem``, downloaded, verified and run by its providers."""

from __future__ import annotations

import asyncio
import hashlib
import json
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
from golem_local.images.builder import build_image
from golem_local.images.cache import image_from_metadata
from golem_local.images.errors import DockerfileError, ImageBuildError, ImageNotFoundError
from golem_local.images.format import read_metadata, unpack_image
from golem_local.images.registry import ImageRegistry
from golem_local.node import LocalNode
from golem_local.runtime.base import DeploySettings, RunProcess
from golem_local.runtime.vm import VmRuntime

pytestmark = pytest.mark.integration

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
    built = await build_image(small_context(tmp_path / "ctx"), tag="test/small:1", registry=registry)
    assert built.seconds < 5
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
                "tail -n 1 /golem/app/hello.txt",
            )
        )
        scripts.append(ctx.run_script(script))
    await asyncio.wait_for(asyncio.gather(*scripts), BOUND)  # two activities deploy the image at the same time
    expected = (
        "hello from the image|/golem/work\nhello file\nbuilt by builder in /golem/work\ntop-level\ntool ran\nchanged\n"
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
    await agreement.terminate()


async def test_from_python_is_the_hosts_python_with_its_packages_offline(
    tmp_path: Path, registry: ImageRegistry
) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM python:3.11-slim\n"
        "COPY service.py /golem/run/\n"
        "RUN pip install numpy matplotlib\n"
        "RUN python3 -c 'import numpy, matplotlib' && /golem/run/service.py > /golem/run/at-build.txt\n"
    )
    (context / "service.py").write_text(
        "#!/usr/bin/env python3\nimport sys, numpy\nprint(sys.prefix, numpy.__name__)\n"
    )
    (context / "service.py").chmod(0o755)
    built = await build_image(context, tag="test/python:1", registry=registry)
    root = tmp_path / "unpacked"
    metadata = unpack_image(built.path, root)
    assert (root / "golem" / "run" / "at-build.txt").read_text() == "/usr/local numpy\n"
    assert metadata.env_dict["PYTHON_VERSION"] == ".".join(map(str, sys.version_info[:3]))
    runtime = VmRuntime(image_from_metadata(metadata, root, built.hash), tmp_path / "activity")
    try:
        await runtime.deploy(DeploySettings())
        await runtime.start([])
        code, out = await run_in(
            runtime, "python3", "-c", "import sys, numpy; print(sys.executable, sys.prefix, sys.base_prefix)"
        )
        assert (code, out) == (0, "/usr/local/bin/python3 /usr/local /usr/local\n")
        code, out = await run_in(runtime, "/usr/bin/env", "python", "-V")
        assert (code, out.strip()) == (0, f"Python {sys.version.split()[0]}")
        code, out = await run_in(runtime, "pip", "install", "numpy")
        assert code == 0, out
        assert "Requirement already satisfied: numpy" in out
        hidden = " ".join((str(Path.home()), sys.base_prefix, sys.prefix, str(Path.cwd())))
        code, out = await run_in(runtime, "sh", "-c", f'for d in {hidden}; do [ -e "$d" ] && echo "$d"; done; true')
        assert (code, out) == (0, ""), "the host's home, its Python's own path and the project must not show"
    finally:
        await runtime.stop()


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


async def test_builds_are_deterministic_and_failures_name_the_line(tmp_path: Path, registry: ImageRegistry) -> None:
    first = await build_image(small_context(tmp_path / "a"), tag="test/small:1", registry=registry)
    second = await build_image(small_context(tmp_path / "b"), tag="test/small:2", registry=registry)
    assert first.hash == second.hash
    assert [entry.tags for entry in registry.entries()] == [("test/small:1", "test/small:2")]
    failing = SMALL_DOCKERFILE.replace("ENTRYPOINT", "RUN echo about to fail >&2; exit 3\nENTRYPOINT")
    with pytest.raises(ImageBuildError) as failure:
        await build_image(small_context(tmp_path / "c", failing), tag="test/failing:1", registry=registry)
    assert (failure.value.line, failure.value.instruction) == (12, "RUN")
    assert "exited with code 3" in str(failure.value)
    assert "about to fail" in str(failure.value)
    unsupported = SMALL_DOCKERFILE.replace("FROM debian:bookworm-slim", "FROM alpine:3.19")
    with pytest.raises(DockerfileError, match=r"line 2: FROM: .*alpine:3\.19"):
        await build_image(small_context(tmp_path / "d", unsupported), registry=registry)
    assert len(registry.entries()) == 1, "failed builds add nothing"


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


async def test_image_build_cli_builds_lists_and_refuses_unsupported_lines(tmp_path: Path) -> None:
    context = small_context(tmp_path / "ctx")
    where = str(tmp_path / "registry")
    code, out, err = await run_cli("image", "build", str(context), "--tag", "test/cli:1", "--registry", where)
    assert code == 0, err
    digest = ImageRegistry(where).find(tag="test/cli:1").hash
    assert f"hash: {digest}" in out
    assert "tag:  test/cli:1" in out
    assert "Step 8/9 : RUN echo" in err
    code, out, _ = await run_cli("image", "list", "--registry", where)
    assert code == 0
    assert out.splitlines()[1].split()[:2] == ["test/cli:1", digest]
    (context / "Dockerfile").write_text("FROM debian:bookworm-slim\nCOPY hello.txt /x/\nUSER nobody\n")
    code, out, err = await run_cli("image", "build", str(context), "--tag", "test/cli:2", "--registry", where)
    assert code == 1
    assert out == ""
    assert f"{context / 'Dockerfile'}, line 3: USER:" in err
    assert "run as root" in err


async def test_the_example_dockerfile_builds(tmp_path: Path, registry: ImageRegistry) -> None:
    if not (EXAMPLE_IMAGE / "Dockerfile").exists():
        pytest.skip("examples/simple_service/image/Dockerfile is not written yet")
    built = await build_image(EXAMPLE_IMAGE, tag="golem-api/simple-service:1.0", registry=registry)
    assert built.seconds < 10
    metadata = read_metadata(built.path)
    assert set(metadata.volumes) >= {"/golem/in", "/golem/out"}
    assert metadata.base.startswith("python")
    root = tmp_path / "unpacked"
    unpack_image(built.path, root)
    scripts = {path.name for path in (root / "golem" / "run").iterdir()}
    assert {"simple_service.py", "simulate_observations.py", "simulate_observations_ctl.py"} <= scripts
    assert len(scripts) > 3, "--init at build time left its database beside the scripts"
    again = await build_image(EXAMPLE_IMAGE, tag="golem-api/simple-service:1.0", registry=registry)
    assert again.hash == built.hash
    print(json.dumps({"example image": built.hash, "size": built.size, "seconds": round(built.seconds, 2)}))
