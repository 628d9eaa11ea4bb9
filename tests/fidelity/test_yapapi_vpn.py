"""yapapi 0.13.1 runs its http-proxy example's flow against ``golem-api node``: a VPN, HTTP through
``LocalHttpProxy``, a raw stream through ``SocketProxy``, the network removed, every agreement paid.

``yapapi_http_proxy.py`` (see its docstring for how it follows yapapi's ``examples/http-proxy``) is run with
yapapi's own interpreter against ``golem-api node`` in its own process, as in ``test_yapapi.py`` (whose
helpers this reuses). Needs root for the local VPN, and ``.venv-yapapi``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from golem_local.net import netns
from tests.fidelity.test_yapapi import assert_no_errors, needs_yapapi, paid_agreements, run_yapapi
from tests.processes import NodeProcess, build_image, running_node

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(netns.unavailable_reason() is not None, reason=str(netns.unavailable_reason())),
]

PROGRAM = Path(__file__).resolve().parent / "yapapi_http_proxy.py"
IMAGE_CONTEXT = Path(__file__).resolve().parents[2] / "examples" / "http_proxy" / "image"  # the example's own
IMAGE_TAG = "golem-api/yapapi-http-proxy:1.0"
RUN_BOUND = 60.0


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[NodeProcess]:
    registry = tmp_path / "registry"
    await build_image(registry, IMAGE_CONTEXT, IMAGE_TAG, bound=30)
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
