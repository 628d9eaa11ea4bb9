"""Running a client's flows against ``golem-api node`` and reading what each flow reported.

:func:`run_flows` does what a user of another SDK does: build the flows' image twice (``golem-api image build``
into a registry of the run's own; the second variant has another hash, for golem-js's ``file://`` flow), start
``golem-api node`` in its own process on a free port, put a ``golem-api`` program on ``PATH`` (golem-core's
SendFile/DownloadFile start ``gftp server`` through it), run the client's program with the variables the node
prints (``YAGNA_APPKEY``, ``YAGNA_API_URL``, ``YAGNA_SUBNET``, ``GOLEM_REGISTRY_URL``), and stop the node with
SIGTERM. Each flow prints one ``PASS|FAIL|SKIP <flow>: <text>`` line; every wait has a bound. A client whose flows
need an HTTP server in the VPN asks for :data:`HTTP_IMAGE_TAG` too (``http_image=True``: Python's ``http.server`` on
port 80, the image of ``examples/http_proxy`` and ``test_yapapi_vpn.py``), named to the program as ``HTTP_IMAGE_TAG``.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from golem_local.images.registry import ImageRegistry
from tests.processes import NodeProcess, build_image, client_env, kill, run, shim

__all__ = ["FILE_IMAGE_TAG", "HTTP_IMAGE_TAG", "IMAGE_TAG", "FlowRun", "run_flows"]

HERE = Path(__file__).resolve().parent
IMAGE_CONTEXT = HERE / "image"
IMAGE_TAG = "golem-api/clients-test:1.0"
FILE_IMAGE_TAG = "golem-api/clients-test-file:1.0"
HTTP_IMAGE_CONTEXT = HERE.parents[2] / "examples" / "http_proxy" / "image"
HTTP_IMAGE_TAG = "golem-api/yapapi-http-proxy:1.0"
STOP_BOUND = 15.0  # seconds the node may take to exit after SIGTERM
_LINE = re.compile(r"^(PASS|FAIL|SKIP) ([^:]+): (.*)$")


@dataclass
class FlowRun:
    """What one run of a client's flows said: ``flows[name] = (status, text)``, its output, times."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    node_log: str
    flows: dict[str, tuple[str, str]] = field(default_factory=dict)

    def outcome(self, flow: str) -> tuple[str, str]:
        return self.flows.get(flow, ("MISSING", f"the program printed no line for {flow}"))

    def explain(self, flow: str) -> str:
        """The flow's line plus the end of the client's stderr (its warnings), for an assertion message."""
        status, text = self.outcome(flow)
        tail = "\n".join(self.stderr.splitlines()[-15:])
        return f"{status} {flow}: {text}\n--- client stderr (end) ---\n{tail}"


async def _drain(stream: asyncio.StreamReader | None, lines: list[str]) -> None:
    """Keep reading the node's output so that its pipe never fills while the client runs."""
    assert stream is not None
    while raw := await stream.readline():
        lines.append(raw.decode(errors="replace").rstrip("\n"))


async def run_flows(
    work: Path, program: list[str], bound: float, env: dict[str, str] | None = None, *, http_image: bool = False
) -> FlowRun:
    """Build the images, start the node, run ``program`` (at most ``bound`` seconds) and stop the node."""
    registry = work / "registry"
    await build_image(registry, IMAGE_CONTEXT, IMAGE_TAG)
    await build_image(registry, IMAGE_CONTEXT, FILE_IMAGE_TAG, "VARIANT=file")
    if http_image:
        await build_image(registry, HTTP_IMAGE_CONTEXT, HTTP_IMAGE_TAG)
    # this interpreter's golem-api: the client harnesses run ``golem-api gftp`` with it
    golem_api = shim(work / "bin", "golem-api", "golem_api")
    image_file = ImageRegistry(registry).find(tag=FILE_IMAGE_TAG).path
    # The flows wait for a debit note of a running activity (within 20 s): providers billing every 5 s, not
    # yagna's default 120 s.
    node = await NodeProcess.start(registry, extra=("--debit-note-interval", "5"))
    errors: list[str] = []
    drains = [
        asyncio.create_task(_drain(node.process.stdout, node.lines)),
        asyncio.create_task(_drain(node.process.stderr, errors)),
    ]
    try:
        env_vars = client_env(
            node.url,
            golem_api.parent,
            GOLEM_API_BIN=str(golem_api),
            IMAGE_TAG=IMAGE_TAG,
            FILE_IMAGE_TAG=FILE_IMAGE_TAG,
            HTTP_IMAGE_TAG=HTTP_IMAGE_TAG if http_image else "",
            IMAGE_FILE=str(image_file),
            **(env or {}),
        )
        started = time.monotonic()
        client = await run(*program, bound=bound, cwd=work, env=env_vars)
        seconds = time.monotonic() - started
    finally:
        if node.process.returncode is None:
            node.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(node.process.wait(), STOP_BOUND)
        finally:
            await kill(node.process)
            await asyncio.gather(*drains, return_exceptions=True)
    flows = FlowRun(client.returncode, client.stdout, client.stderr, seconds, "\n".join(node.lines + errors))
    for line in client.stdout.splitlines():
        match = _LINE.match(line)
        if match:
            flows.flows[match.group(2)] = (match.group(1), match.group(3))
    return flows
