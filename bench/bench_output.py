"""What a command's large output costs: time, and the memory of the requestor and of the node, against a host pipe.

Runs ``head -c N /dev/zero | tr '\\0' x`` (``N`` MB, 100 by default) in an activity of a one-provider node in
a process of its own (:mod:`bench.node_server`), through ``WorkContext.run_script``, twice: with ``run``'s
default capture (the provider streams the output; the result keeps its start and end) and with
``run(stdout_file=…)`` (the requestor reads the batch's event stream and writes all of it to the file). Each
comes with the growth of the requestor's and the node's peak resident memory over it and the longest stall
of the requestor's event loop (a 10 ms ticker's worst lateness), and the CPU time the requestor and the node
used per MB (``/proc/<pid>/stat``: less noisy than the rate on a busy machine). The floor, in the same run: the same
command on the host, its output read by this process through a pipe.

Run: ``.venv/bin/python -m bench.bench_output [MB]`` (needs bubblewrap).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_transfer import MB, Memory, session
from bench.processes import NodeInfo
from golem_api import WorkContext

__all__ = ["host_pipe", "main", "measure", "shell_command"]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) ``pid`` has used so far, from ``/proc/<pid>/stat``."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def shell_command(megabytes: int) -> str:
    """The command that prints ``megabytes`` MB of ``x``."""
    return f"head -c {megabytes * MB} /dev/zero | tr '\\0' x"


async def host_pipe(megabytes: int) -> float:
    """MB/s of the command on the host, its output read here through a pipe (1 MiB reads)."""
    began = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        "/bin/sh", "-c", shell_command(megabytes), stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    got = 0
    while piece := await process.stdout.read(1 << 20):
        got += len(piece)
    await process.wait()
    if got != megabytes * MB:
        raise RuntimeError(f"the host pipe gave {got} bytes of {megabytes * MB}")
    return megabytes / (time.perf_counter() - began)


async def _ticker(worst: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + 0.01
        await asyncio.sleep(0.01)
        worst[0] = max(worst[0], loop.time() - due)


async def _one(ctx: WorkContext, node: NodeInfo, megabytes: int, options: dict[str, Any]) -> dict[str, float]:
    script = ctx.new_script(timeout=600)
    run = script.run("/bin/sh", "-c", shell_command(megabytes), **options)
    worst = [0.0]
    mine, theirs = Memory(os.getpid()), Memory(int(node["pid"]))
    mine.start()
    theirs.start()
    ticker = asyncio.create_task(_ticker(worst))
    try:
        cpu_mine, cpu_theirs = cpu_seconds(os.getpid()), cpu_seconds(int(node["pid"]))
        began = time.perf_counter()
        await ctx.run_script(script)
        took = time.perf_counter() - began
        cpu_mine, cpu_theirs = cpu_seconds(os.getpid()) - cpu_mine, cpu_seconds(int(node["pid"])) - cpu_theirs
    finally:
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)
    result = await run
    if not result.stdout:
        raise RuntimeError("the command's result has no stdout")
    return {"MB/s": megabytes / took, "requestor +": mine.growth_mb(), "node +": theirs.growth_mb()} | {
        "stall ms": worst[0] * 1000,
        "requestor CPU ms/MB": cpu_mine * 1000 / megabytes,
        "node CPU ms/MB": cpu_theirs * 1000 / megabytes,
    }


async def measure(megabytes: int, ctx: WorkContext, node: NodeInfo, scratch: Path) -> dict[str, float]:
    """The output figures by name (MB/s, MB, ms) and the host pipe's MB/s.

    The activity first runs the command once with 1 MB, unmeasured, as the floor's shell, programs and reader are
    warm: an activity's first command pays once for the sandbox's first start of them (0.05–0.15 s of CPU on the
    2-core machine, 10–15 % of a 100 MB run), which is not a cost of the output.
    """
    figures: dict[str, float] = {}
    label = f"{megabytes} MB to stdout"
    warm = ctx.new_script(timeout=60)
    warm.run("/bin/sh", "-c", shell_command(1))
    await ctx.run_script(warm)
    for name, options in (
        ("streamed", {}),
        ("streamed into stdout_file", {"stdout_file": scratch / "out"}),
    ):
        for figure, value in (await _one(ctx, node, megabytes, options)).items():
            figures[f"{label}, {name}: {figure}"] = value
    written = (scratch / "out").stat().st_size
    if written != megabytes * MB:
        raise RuntimeError(f"stdout_file holds {written} bytes of {megabytes * MB}")
    figures["host pipe MB/s"] = await host_pipe(megabytes)
    return figures


async def run(megabytes: int) -> dict[str, float]:
    """One run: a node, an activity, the output both ways, the floor."""
    with tempfile.TemporaryDirectory(prefix="bench-output-") as scratch:
        async with session() as (ctx, node):
            return await measure(megabytes, ctx, node, Path(scratch))


def main() -> None:
    """Measure and print one line per figure."""
    megabytes = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    for name, value in asyncio.run(run(megabytes)).items():
        print(f"{name}: {value:.2f}")


if __name__ == "__main__":
    main()
