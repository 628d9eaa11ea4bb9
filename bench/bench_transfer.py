"""What moving a file costs: upload and download through a local node in a process of its own, against floors.

The node runs as a daemon would, in its own process (:mod:`bench.node_server`, one provider with a sandbox);
the requestor is this process. For each size (megabytes of random bytes) it uploads a file into an activity
with ``upload_file``, downloads it back with ``download_file``, and (for the largest size) downloads it into
memory with ``download_bytes``. Each transfer's throughput comes with the growth of each process's peak
resident memory over it (``VmHWM`` reset through ``/proc/<pid>/clear_refs`` before, less ``VmRSS`` then).
The floors are measured in the same run, on the same file: loopback TCP (one socket, 1 MiB sends), a host
copy (``shutil.copyfile``) and SHA3-256 alone, one core.

Run: ``.venv/bin/python -m bench.bench_transfer [MB …]`` (default 64 256 1000; needs bubblewrap).
``./bench/run --only transfers`` runs it with the output benchmark and writes the page's section.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

from bench.processes import NodeInfo, served_node
from golem_api import Golem, VmPayload, WorkContext

__all__ = ["MB", "Memory", "floors", "main", "measure", "session", "size_label"]

MB = 1_000_000
_BLOCK = 1 << 20


class Memory:
    """Peak resident memory of a process over a stretch of work: ``start()``, then ``growth_mb()``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._start = 0

    def _status(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"/proc/{self.pid}/status has no {field}")

    def start(self) -> None:
        """Reset the peak (``clear_refs`` 5) and note the resident size now."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self._start = self._status("VmRSS")

    def growth_mb(self) -> float:
        """The peak since :meth:`start`, less the resident size then, in MB."""
        return (self._status("VmHWM") - self._start) / MB


def size_label(megabytes: int) -> str:
    """``64 MB``, ``1 GB``."""
    return f"{megabytes / 1000:g} GB" if megabytes >= 1000 else f"{megabytes} MB"


def _random_file(path: Path, megabytes: int) -> None:
    with path.open("wb") as file:
        for _ in range(megabytes):
            file.write(os.urandom(MB))


def _loopback_tcp(size: int) -> float:
    """Seconds to send ``size`` bytes over one loopback TCP connection, 1 MiB sends, read into one buffer."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    block = os.urandom(_BLOCK)

    def send() -> None:
        with socket.create_connection(("127.0.0.1", port)) as client:
            left = size
            while left > 0:
                client.sendall(block[: min(left, _BLOCK)])
                left -= _BLOCK

    began = time.perf_counter()
    sender = threading.Thread(target=send)
    sender.start()
    connection, _ = server.accept()
    buffer = bytearray(_BLOCK)
    got = 0
    with connection:
        while got < size and (n := connection.recv_into(buffer)):
            got += n
    sender.join()
    server.close()
    return time.perf_counter() - began


def floors(path: Path) -> dict[str, float]:
    """The host's floors for ``path``, in MB/s: ``loopback TCP``, ``copy``, ``SHA3-256 alone``."""
    size = path.stat().st_size
    figures = {"loopback TCP": size / MB / _loopback_tcp(size)}
    began = time.perf_counter()
    shutil.copyfile(path, path.with_suffix(".copy"))
    figures["copy"] = size / MB / (time.perf_counter() - began)
    path.with_suffix(".copy").unlink()
    began = time.perf_counter()
    digest = hashlib.sha3_256()
    with path.open("rb") as file:
        while block := file.read(_BLOCK):
            digest.update(block)
    figures["SHA3-256 alone"] = size / MB / (time.perf_counter() - began)
    return figures


@asynccontextmanager
async def session() -> AsyncIterator[tuple[WorkContext, NodeInfo]]:
    """A node in its own process with one provider, and a work context on a started activity of it."""
    async with (
        served_node(1, "vm") as node,
        Golem(
            budget=Decimal(1),
            app_key=node["app_key"],
            api_url=node["url"],
            subnet_tag=node["subnet"],
            event_consumer=None,
        ) as golem,
    ):
        agreement = await (await golem.create_demand(VmPayload())).agreement(timeout=30)
        activity = await agreement.create_activity()
        ctx = golem.work_context(activity)
        script = ctx.new_script(timeout=60)
        script.deploy()
        script.start()
        await ctx.run_script(script)
        try:
            yield ctx, node
        finally:
            await agreement.terminate()


async def timed(
    ctx: WorkContext, node: NodeInfo, megabytes: float, add: Callable[[object], object]
) -> tuple[float, float, float, object]:
    """Run one script of one command (``add(script)``): MB/s, requestor and node peak growth (MB), its value."""
    script = ctx.new_script(timeout=900)
    command = add(script)
    mine, theirs = Memory(os.getpid()), Memory(int(node["pid"]))
    mine.start()
    theirs.start()
    began = time.perf_counter()
    await ctx.run_script(script)
    took = time.perf_counter() - began
    value = await command if isinstance(command, Awaitable) else None
    return megabytes / took, mine.growth_mb(), theirs.growth_mb(), value


async def measure(sizes: Sequence[int], scratch: Path, ctx: WorkContext, node: NodeInfo) -> dict[str, float]:
    """Upload, download and (largest size) ``download_bytes`` of each size; figures by name (MB/s, MB)."""
    figures: dict[str, float] = {}
    for megabytes in sizes:
        source = scratch / f"source-{megabytes}"
        if not source.exists():
            await asyncio.to_thread(_random_file, source, megabytes)
        back = scratch / f"back-{megabytes}"
        label = size_label(megabytes)
        rate, mine, theirs, _ = await timed(
            ctx, node, megabytes, lambda s, source=source: s.upload_file(source, "/golem/work/f")
        )
        figures |= {f"upload {label}": rate, f"upload {label}: requestor +": mine, f"upload {label}: node +": theirs}
        rate, mine, theirs, _ = await timed(
            ctx, node, megabytes, lambda s, back=back: s.download_file("/golem/work/f", back)
        )
        figures |= {f"download {label}": rate, f"download {label}: requestor +": mine}
        figures[f"download {label}: node +"] = theirs
        if back.stat().st_size != megabytes * MB:
            raise RuntimeError(f"downloaded {back.stat().st_size} bytes of {megabytes * MB}")
        back.unlink()
    megabytes = max(sizes)
    label = size_label(megabytes)
    rate, mine, _theirs, data = await timed(ctx, node, megabytes, lambda s: s.download_bytes("/golem/work/f"))
    if not isinstance(data, bytes) or len(data) != megabytes * MB:
        raise RuntimeError(f"download_bytes gave {type(data).__name__} of {len(data or b'')} bytes")  # type: ignore[arg-type]
    del data
    figures |= {f"download_bytes {label}": rate, f"download_bytes {label}: requestor + ÷ size": mine / megabytes}
    figures |= {f"host {name}": value for name, value in floors(scratch / f"source-{megabytes}").items()}
    return figures


async def run(sizes: Sequence[int]) -> dict[str, float]:
    """One run: a node, an activity, the transfers of every size, the floors."""
    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as scratch:
        async with session() as (ctx, node):
            return await measure(sizes, Path(scratch), ctx, node)


def main() -> None:
    """Measure and print one line per figure."""
    sizes = [int(argument) for argument in sys.argv[1:]] or [64, 256, 1000]
    for name, value in asyncio.run(run(sizes)).items():
        print(f"{name}: {value:.2f}")


if __name__ == "__main__":
    main()
