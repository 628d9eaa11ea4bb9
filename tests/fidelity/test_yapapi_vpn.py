"""yapapi 0.13.1 runs its http-proxy example's flow against ``golem-api node``: a VPN, HTTP through
``LocalHttpProxy``, a raw stream through ``SocketProxy``, the network removed, every agreement paid.

``yapapi_http_proxy.py`` (see its docstring for how it follows yapapi's ``examples/http-proxy``) is run with
yapapi's own interpreter against ``golem-api node`` in its own process, as in ``test_yapapi.py`` (whose
helpers this reuses). The second test runs yapapi's own ``examples/http-proxy/http_proxy.py`` with only its
image line changed (to ``yapapi_nginx_image``, Debian's nginx laid out as the official image), when
``GOLEM_API_YAPAPI_EXAMPLES`` names yapapi's ``examples`` folder (the file is not part of this repository and
not in yapapi's package); it is skipped, saying so, otherwise. Needs root for the local VPN, and ``.venv-yapapi``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from golem_local.net import netns
from tests.fidelity.test_yapapi import YAPAPI_PYTHON, assert_no_errors, needs_yapapi, paid_agreements, run_yapapi
from tests.processes import NodeProcess, build_image, client_env, gftp_shim, kill, running_node

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(netns.unavailable_reason() is not None, reason=str(netns.unavailable_reason())),
]

PROGRAM = Path(__file__).resolve().parent / "yapapi_http_proxy.py"
IMAGE_CONTEXT = Path(__file__).resolve().parents[2] / "examples" / "http_proxy" / "image"  # the example's own
IMAGE_TAG = "golem-api/yapapi-http-proxy:1.0"
RUN_BOUND = 60.0
NGINX_CONTEXT = Path(__file__).resolve().parent / "yapapi_nginx_image"
NGINX_TAG = "golem-api/yapapi-nginx:1.0"
EXAMPLES = Path(os.environ.get("GOLEM_API_YAPAPI_EXAMPLES", "/nonexistent"))
EXAMPLE = EXAMPLES / "http-proxy" / "http_proxy.py"
EXAMPLE_BOUND = 150.0  # seconds: start (a minute at most), 8 s of running, stop and pay (15 s at most)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[NodeProcess]:
    registry = tmp_path / "registry"
    await build_image(registry, IMAGE_CONTEXT, IMAGE_TAG, bound=180)  # a first build makes its Debian base
    async with running_node(registry) as running:
        yield running


@needs_yapapi
async def test_yapapis_http_proxy_flow_runs_against_the_local_node(
    tmp_path: Path, node: NodeProcess, unused_tcp_port_factory: object
) -> None:
    port, socket_port = unused_tcp_port_factory(), unused_tcp_port_factory()  # type: ignore[operator]
    out, log = await run_yapapi(
        tmp_path,
        node.url,
        PROGRAM,
        *("--port", str(port), "--socket-port", str(socket_port), "--timeout", "30"),
        bound=RUN_BOUND,
        HTTP_PROXY_IMAGE_TAG=IMAGE_TAG,
    )
    lines = out.splitlines()
    assert re.fullmatch(r"network [0-9a-f]{32} 192\.168\.0\.0/255\.255\.255\.0", lines[0])
    instances = [re.fullmatch(r"instance (\S+) at (192\.168\.0\.\d+)", line) for line in lines[1:3]]
    assert all(instances), lines
    providers = {match.group(1) for match in instances if match}
    assert len(providers) == 2
    responses = [line for line in lines if line.startswith("response ")]
    served = [re.fullmatch(r"response \d: 200 Hello from inside Golem! \.\.\. running on (\S+)", r) for r in responses]
    assert len(served) == 4, responses
    assert all(served), responses
    names = [match.group(1) for match in served if match]
    assert set(names) == providers
    assert names[:2] == names[2:]  # LocalHttpProxy's round-robin
    [socket_line] = [line for line in lines if line.startswith("socket proxy: ")]
    assert re.fullmatch(r"socket proxy: HTTP/1\.0 200 OK \.\.\. running on \S+", socket_line)
    assert lines[-2:] == ["network removed", "done"]
    assert_no_errors(log)
    assert sum(paid_agreements(log).values()) == 2
    await node.stop_cleanly()


@pytest.fixture
async def nginx_node(tmp_path: Path) -> AsyncIterator[NodeProcess]:
    registry = tmp_path / "registry"
    await build_image(registry, NGINX_CONTEXT, NGINX_TAG, bound=180)
    async with running_node(registry) as running:
        yield running


def _example_with_local_image(into: Path, registry_url: str) -> Path:
    """yapapi's http-proxy example and its ``utils`` under ``into``, the image line pointing at ``NGINX_TAG`` in
    the registry at ``registry_url`` (the node's)."""
    shutil.copytree(EXAMPLES / "utils", into / "utils")
    source = EXAMPLE.read_text()
    changed, count = re.subn(
        r'image_hash="[0-9a-f]+"', f'image_tag="{NGINX_TAG}", repository_url="{registry_url}"', source
    )
    assert count == 1, "the example's image line is not where it was in yapapi 0.13.1"
    program = into / "http-proxy" / "http_proxy.py"
    program.parent.mkdir()
    program.write_text(changed)
    return program


async def _http10_get(port: int) -> str:
    """``GET /`` over HTTP/1.0 as a browser's simplest request; ``"<status> <body>"``.

    Not aiohttp's client: yapapi's ``LocalHttpProxy`` copies the server's ``Content-Length`` into a response it
    sends chunked, which strict parsers refuse (browsers and curl take it); HTTP/1.0 keeps it unchunked."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1].decode()
    return f"{status} {body.decode(errors='replace').strip()}"


@needs_yapapi
@pytest.mark.skipif(
    not EXAMPLE.exists(),
    reason="yapapi's http-proxy example is not here: set GOLEM_API_YAPAPI_EXAMPLES to yapapi's examples folder "
    "(a checkout of github.com/golemfactory/yapapi at 0.13.1) to run it",
)
@pytest.mark.timeout(300)
async def test_yapapis_own_http_proxy_example_serves_nginx_through_the_vpn(
    tmp_path: Path, nginx_node: NodeProcess, unused_tcp_port_factory: object
) -> None:
    program = _example_with_local_image(tmp_path / "examples", nginx_node.url)
    port = unused_tcp_port_factory()  # type: ignore[operator]
    log_file = tmp_path / "yapapi.log"
    process = await asyncio.create_subprocess_exec(
        str(YAPAPI_PYTHON),
        str(program),
        *("--port", str(port), "--running-time", "8", "--log-file", str(log_file)),
        cwd=tmp_path,
        env=client_env(nginx_node.url, gftp_shim(tmp_path / "bin").parent),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    lines: list[str] = []
    pages: list[str] = []

    async def read_and_fetch() -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            if f"http://localhost:{port}" in line:  # the example's LocalHttpProxy is listening
                for _ in range(2):
                    pages.append(await _http10_get(port))

    try:
        _, err_bytes, _ = await asyncio.wait_for(
            asyncio.gather(read_and_fetch(), process.stderr.read(), process.wait()), EXAMPLE_BOUND
        )
    finally:
        await kill(process)
    out, err = "\n".join(lines), err_bytes.decode()
    assert process.returncode == 0, f"yapapi exited with {process.returncode}:\n{out}\n{err}"
    served = [re.fullmatch(r"200 Hello from inside Golem!\n\.\.\. running on (\S+)", page) for page in pages]
    assert len(served) == 2, pages
    assert all(served), pages
    assert {match.group(1) for match in served if match} == {"local-provider-1", "local-provider-2"}  # round-robin
    assert "HTTP server stopped" in out
    log = log_file.read_text()
    assert_no_errors(log)
    assert sum(paid_agreements(log).values()) == 2
    await nginx_node.stop_cleanly()
