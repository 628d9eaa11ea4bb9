"""Child processes of the benchmarks: a node served by :mod:`bench.node_server`, programs run to their end."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

__all__ = ["ROOT", "NodeInfo", "run_json", "served_node"]

ROOT = Path(__file__).resolve().parent.parent
"""The repository's root (the working directory of every child)."""


class NodeInfo(dict[str, str]):
    """What :mod:`bench.node_server` printed: ``url``, ``app_key``, ``subnet``."""


@asynccontextmanager
async def served_node(
    providers: int, runtime: str, *, timeout: float = 60.0, balance: Decimal | None = None
) -> AsyncIterator[NodeInfo]:
    """A local network with ``providers`` providers in a child process, stopped (bounded) on exit; the
    requestor holds ``balance`` GLM (by default the node's 1000)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.node_server",
        "--providers",
        str(providers),
        "--runtime",
        runtime,
        *(() if balance is None else ("--balance", str(balance))),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"the benchmark node (providers={providers}, runtime={runtime}) exited before serving")
        yield NodeInfo(json.loads(line))
    finally:
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()


async def run_json(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 300.0
) -> dict[str, Any]:
    """Run ``argv`` from the repository root to its end (within ``timeout`` s); the JSON of its last stdout line."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, cwd=ROOT, env={**os.environ, **(env or {})}
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"{' '.join(argv)} did not finish within {timeout:g} s") from None
    lines = out.decode().strip().splitlines()
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(argv)} failed (exit code {process.returncode}); its stderr is above")
    result: dict[str, Any] = json.loads(lines[-1])
    return result
