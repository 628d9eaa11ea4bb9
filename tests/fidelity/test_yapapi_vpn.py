"""yapapi 0.13.1 runs its http-proxy example's flow against ``golem-api node``: a VPN, HTTP through
``LocalHttpProxy``, a raw stream through ``SocketProxy``, the network removed, every agreement paid.

``yapapi_http_proxy.py`` (see its docstring for how it follows yapapi's ``examples/http-proxy``) is run with
yapapi's own interpreter against ``golem-api node`` in its own process, as in ``test_yapapi.py`` (whose
helpers this reuses). Needs root for the local VPN, and ``.venv-yapapi``.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from golem_local.net import netns
from tests.fidelity.test_yapapi import (
    APP_KEY,
    YAPAPI_PYTHON,
    NodeProcess,
    clean_env,
    gftp_shim,
    kill,
    needs_yapapi,
    provider_names,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(netns.unavailable_reason() is not None, reason=str(netns.unavailable_reason())),
]

PROGRAM = Path(__file__).resolve().parent / "yapapi_http_proxy.py"
IMAGE_CONTEXT = Path(__file__).resolve().parent / "yapapi_http_image"
IMAGE_TAG = "golem-api/yapapi-http-proxy:1.0"
RUN_BOUND = 60.0


async def build_image(registry: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "golem_api",
        "image",
        "build",
        str(IMAGE_CONTEXT),
        "--tag",
        IMAGE_TAG,
        "--registry",
        str(registry),
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        await kill(process)
    assert process.returncode == 0, f"golem-api image build failed:\n{out.decode()}\n{err.decode()}"


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[NodeProcess]:
    registry = tmp_path / "registry"
    await build_image(registry)
    running = await NodeProcess.start(registry)
    try:
        yield running
    finally:
        await kill(running.process)


@needs_yapapi
async def test_yapapis_http_proxy_flow_runs_against_the_local_node(
    tmp_path: Path, node: NodeProcess, unused_tcp_port_factory: object
) -> None:
    port, socket_port = unused_tcp_port_factory(), unused_tcp_port_factory()  # type: ignore[operator]
    log_file = tmp_path / "yapapi.log"
    bin_dir = gftp_shim(tmp_path / "bin").parent
    env = clean_env(
        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        YAGNA_APPKEY=APP_KEY,
        YAGNA_API_URL=node.url,
        YAGNA_SUBNET="public",
        GOLEM_REGISTRY_URL=node.url,
        HTTP_PROXY_IMAGE_TAG=IMAGE_TAG,
        PYTHONUNBUFFERED="1",
    )
    process = await asyncio.create_subprocess_exec(
        str(YAPAPI_PYTHON),
        str(PROGRAM),
        "--port",
        str(port),
        "--socket-port",
        str(socket_port),
        "--log-file",
        str(log_file),
        "--timeout",
        "30",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out_bytes, err_bytes = await asyncio.wait_for(process.communicate(), RUN_BOUND)
    finally:
        await kill(process)
    out, err, log = out_bytes.decode(), err_bytes.decode(), log_file.read_text()
    assert process.returncode == 0, f"yapapi exited with {process.returncode}:\n{out}\n{err}"
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
    errors = [line for line in log.splitlines() if re.search(r"\bERROR\b", line)]
    assert errors == [], "yapapi logged errors:\n" + "\n".join(errors)
    confirmed = provider_names(r"Agreement confirmed by provider '([^']+)'", log)
    assert sum(confirmed.values()) == 2
    assert provider_names(r"Accepted invoice from '([^']+)'", log) == confirmed
    code, _rest, node_err = await node.stop()
    assert code == 0, node_err
    assert "Traceback" not in node_err
