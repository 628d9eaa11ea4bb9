"""Fixtures for fidelity tests: the real ``yagna`` daemon (from the ``golem-node`` wheel) next to a local node.

The daemon runs on loopback only: its own data directory in a temporary folder, free ports for the REST API
and the GSB router, the UDP listener bound to loopback, the relay pointed at a closed local port (so it never
reaches the internet) and no metrics push. It starts once per test session (about 3.5 s) and is stopped and
awaited at the end. The test waits for the daemon's own "listening" log line, not for a fixed time.

A second identity, made with ``yagna id create`` and ``yagna app-key create --id`` through the daemon's GSB
router, plays the provider: it publishes offers, so that the requestor identity (the autoconfigured app key)
sees proposals from another node id on the same daemon.

When the binary is missing or cannot start, the tests that need it skip and say why.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from golem_local.node import LocalNode

# The real stack (anvil, our token, two daemons) is defined beside its helpers in tests/fidelity/realstack/.
from tests.fidelity.realstack.conftest import real_stack

__all__ = ["YagnaDaemon", "real_stack"]

_START_TIMEOUT = 30.0  # seconds the daemon gets to start listening (it needs about 3.5 s here)
_CLI_TIMEOUT = 20.0  # seconds one `yagna id …` / `yagna app-key …` command gets
_STOP_TIMEOUT = 10.0  # seconds the daemon gets to exit after SIGTERM before it is killed
_REQUESTOR_KEY = "fidelity-requestor-key"
_READY = re.compile(r"http workers started - listening on")


@dataclass(frozen=True)
class YagnaDaemon:
    """A running real daemon: its REST root ``url``, two identities and their app keys, its log file."""

    url: str
    app_key: str
    identity: str
    provider_key: str
    provider_id: str
    log_path: Path


def _yagna_binary() -> Path | None:
    """The ``yagna`` binary of the test venv (installed by the ``golem-node`` wheel), else one on PATH."""
    beside = Path(sys.executable).parent / "yagna"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("yagna")
    return Path(found) if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _closed_port() -> int:
    """A loopback port nobody listens on (bound and released): the relay address that can never answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_listening(process: subprocess.Popen[bytes], log: IO[bytes]) -> str | None:
    """Copy the daemon's output to ``log`` until it says it listens; the reason when it never does."""
    assert process.stdout is not None
    deadline = time.monotonic() + _START_TIMEOUT
    pending = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return f"the yagna daemon did not start listening within {_START_TIMEOUT:.0f} s"
        readable, _, _ = select.select([process.stdout], [], [], left)
        if not readable:
            continue
        chunk = os.read(process.stdout.fileno(), 65536)
        if not chunk:
            return f"the yagna daemon exited during start-up with code {process.wait(_STOP_TIMEOUT)}"
        log.write(chunk)
        pending = (pending + chunk)[-4096:]
        if _READY.search(pending.decode(errors="replace")):
            log.flush()
            return None


def _drain(stream: IO[bytes], log: IO[bytes]) -> None:
    """Copy the rest of the daemon's output to its log until the pipe closes (the daemon exited)."""
    for chunk in iter(lambda: stream.read1(65536), b""):  # type: ignore[attr-defined]
        log.write(chunk)
    log.flush()


def _cli(binary: Path, env: dict[str, str], *args: str) -> Any:
    """Run ``yagna <args> --json`` against the running daemon and return its decoded answer."""
    done = subprocess.run(
        [str(binary), *args, "--json"], env=env, capture_output=True, timeout=_CLI_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"yagna {' '.join(args)} failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
    return json.loads(done.stdout)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(_STOP_TIMEOUT)


@pytest.fixture(scope="session")
def yagna_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[YagnaDaemon]:
    """The real yagna daemon on loopback with a provider identity; skips (saying why) if it cannot start."""
    binary = _yagna_binary()
    if binary is None:
        pytest.skip("no yagna binary: install the golem-node wheel into the test venv (pip install golem-node)")
    root = tmp_path_factory.mktemp("yagna")
    api_port, gsb_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YAGNA_", "YA_", "GSB_"))}
    env.update(
        YAGNA_DATADIR=str(root / "data"),
        YAGNA_AUTOCONF_APPKEY=_REQUESTOR_KEY,
        YAGNA_API_URL=f"http://127.0.0.1:{api_port}",
        GSB_URL=f"tcp://127.0.0.1:{gsb_port}",
        YA_NET_RELAY_HOST=f"127.0.0.1:{_closed_port()}",
        YA_NET_BIND_URL="udp://127.0.0.1:0",
    )
    log_path = root / "yagna.log"
    log = log_path.open("wb")
    try:
        process = subprocess.Popen(
            [str(binary), "service", "run", "--disable-metrics-push"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    except OSError as exc:
        log.close()
        pytest.skip(f"the yagna binary {binary} cannot be run here: {exc}")
    drainer: threading.Thread | None = None
    try:
        failure = _wait_until_listening(process, log)
        if failure is not None:
            _stop(process)
            assert process.stdout is not None
            process.stdout.close()
            log.close()
            pytest.skip(f"{failure}; its output is in {log_path}")
        assert process.stdout is not None
        drainer = threading.Thread(target=_drain, args=(process.stdout, log), name="yagna-log", daemon=True)
        drainer.start()
        requestor = _cli(binary, env, "id", "show")["Ok"]["nodeId"]
        provider = _cli(binary, env, "id", "create", "fidelity-provider", "--no-password")["Ok"]["nodeId"]
        provider_key = _cli(binary, env, "app-key", "create", "fidelity-provider", "--id", provider)
        yield YagnaDaemon(
            url=f"http://127.0.0.1:{api_port}",
            app_key=_REQUESTOR_KEY,
            identity=requestor,
            provider_key=str(provider_key),
            provider_id=provider,
            log_path=log_path,
        )
    finally:
        _stop(process)
        if drainer is not None:
            drainer.join(_STOP_TIMEOUT)
        if process.stdout is not None:
            process.stdout.close()
        log.close()


@pytest.fixture
async def local_node() -> AsyncIterator[LocalNode]:
    """A running local node with the default network (three providers), stopped after the test."""
    async with LocalNode() as node:
        yield node
