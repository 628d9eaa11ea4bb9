"""Running a client's flows against ``golem-api node`` and reading what each flow reported.

:func:`run_flows` does what a user of another SDK does: build the flows' image twice (``golem-api image build``
into a registry of the run's own; the second variant has another hash, for golem-js's ``file://`` flow), start
``golem-api node`` in its own process on a free port, put a ``golem-api`` program on ``PATH`` (golem-core's
SendFile/DownloadFile start ``gftp server`` through it), run the client's program with the variables the node
prints (``YAGNA_APPKEY``, ``YAGNA_API_URL``, ``YAGNA_SUBNET``, ``GOLEM_REGISTRY_URL``), and stop the node with
SIGTERM. Each flow prints one ``PASS|FAIL|SKIP <flow>: <text>`` line; every wait has a bound. A client whose flows
need an HTTP server in the VPN asks for :data:`HTTP_IMAGE_TAG` too (``http_image=True``: Python's ``http.server`` on
port 80, the image of ``test_yapapi_vpn.py``), named to the program as ``HTTP_IMAGE_TAG``.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from golem_local.images.registry import ImageRegistry
from tests.fidelity.test_yapapi import APP_KEY, NodeProcess, clean_env, kill

__all__ = ["FILE_IMAGE_TAG", "HTTP_IMAGE_TAG", "IMAGE_TAG", "FlowRun", "run_flows"]

HERE = Path(__file__).resolve().parent
IMAGE_CONTEXT = HERE / "image"
IMAGE_TAG = "golem-api/clients-test:1.0"
FILE_IMAGE_TAG = "golem-api/clients-test-file:1.0"
HTTP_IMAGE_CONTEXT = HERE.parent / "yapapi_http_image"
HTTP_IMAGE_TAG = "golem-api/yapapi-http-proxy:1.0"
BUILD_BOUND = 600.0  # seconds an image build may take (a first one makes its Debian base)
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


async def _build(registry: Path, tag: str, *build_args: str, context: Path = IMAGE_CONTEXT) -> None:
    arguments = [arg for value in build_args for arg in ("--build-arg", value)]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "golem_api",
        "image",
        "build",
        str(context),
        "--tag",
        tag,
        "--registry",
        str(registry),
        *arguments,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), BUILD_BOUND)
    finally:
        await kill(process)
    assert process.returncode == 0, f"golem-api image build failed:\n{out.decode()}\n{err.decode()}"


def _golem_api_program(bin_dir: Path) -> Path:
    """``bin_dir/golem-api``: this interpreter's golem-api (the client harnesses run ``golem-api gftp`` with it)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    program = bin_dir / "golem-api"
    program.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m golem_api "$@"\n')
    program.chmod(0o755)
    return program


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
    await _build(registry, IMAGE_TAG)
    await _build(registry, FILE_IMAGE_TAG, "VARIANT=file")
    if http_image:
        await _build(registry, HTTP_IMAGE_TAG, context=HTTP_IMAGE_CONTEXT)
    golem_api = _golem_api_program(work / "bin")
    image_file = ImageRegistry(registry).find(tag=FILE_IMAGE_TAG).path
    node = await NodeProcess.start(registry)
    errors: list[str] = []
    drains = [
        asyncio.create_task(_drain(node.process.stdout, node.lines)),
        asyncio.create_task(_drain(node.process.stderr, errors)),
    ]
    try:
        client_env = clean_env(
            PATH=f"{golem_api.parent}{os.pathsep}{os.environ.get('PATH', '')}",
            YAGNA_APPKEY=APP_KEY,
            YAGNA_API_URL=node.url,
            YAGNA_SUBNET="public",
            GOLEM_REGISTRY_URL=node.url,
            GOLEM_API_BIN=str(golem_api),
            IMAGE_TAG=IMAGE_TAG,
            FILE_IMAGE_TAG=FILE_IMAGE_TAG,
            HTTP_IMAGE_TAG=HTTP_IMAGE_TAG if http_image else "",
            IMAGE_FILE=str(image_file),
            PYTHONUNBUFFERED="1",
            **(env or {}),
        )
        started = time.monotonic()
        client = await asyncio.create_subprocess_exec(
            *program,
            cwd=str(work),
            env=client_env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(client.communicate(), bound)
        finally:
            await kill(client)
        seconds = time.monotonic() - started
    finally:
        if node.process.returncode is None:
            node.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(node.process.wait(), STOP_BOUND)
        finally:
            await kill(node.process)
            await asyncio.gather(*drains, return_exceptions=True)
    stdout = out.decode(errors="replace")
    run = FlowRun(
        returncode=client.returncode if client.returncode is not None else -1,
        stdout=stdout,
        stderr=err.decode(errors="replace"),
        seconds=seconds,
        node_log="\n".join(node.lines + errors),
    )
    for line in stdout.splitlines():
        match = _LINE.match(line)
        if match:
            run.flows[match.group(2)] = (match.group(1), match.group(3))
    return run
