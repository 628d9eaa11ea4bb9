"""The ``transfers`` benchmark of ``bench/run``: big files and big output, each next to its floor of the same run.

One node in a process of its own (as a daemon), one activity, ``runs`` rounds of: upload, download and
``download_bytes`` of 1 GB (and upload and download of 64 and 256 MB, for throughput against size), 100 MB
printed to stdout with ``run``'s default capture and into ``run(stdout_file=…)``, then the floors on the host:
loopback TCP, a copy, SHA3-256 alone, a pipe. See :mod:`bench.bench_transfer` and :mod:`bench.bench_output`.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.bench_output import measure as measure_output
from bench.bench_transfer import measure as measure_transfers
from bench.bench_transfer import session, size_label
from bench.stats import Figure, Result, Target

__all__ = ["transfers"]

_TITLE = "Transfers and output"


def _unit(name: str) -> str:
    if "÷" in name:
        return "×"
    if name.endswith(("+", ": requestor +", ": node +")):
        return "MB"
    if name.endswith("stall ms"):
        return "ms"
    return "MB/s"


def _clean(name: str) -> str:
    return name.removesuffix(": MB/s").removesuffix(" MB/s").removesuffix(" ms")


async def transfers(runs: int, *, sizes: Sequence[int] = (64, 256, 1000), output_mb: int = 100) -> Result:
    """``runs`` rounds of every transfer and output figure, with the floors and the ratios to them."""
    big, out = size_label(max(sizes)), f"{output_mb} MB to stdout"
    samples: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-transfers-") as scratch:
        async with session() as (ctx, node):
            for number in range(runs):
                figures = await measure_transfers(sizes, Path(scratch), ctx, node)
                figures |= await measure_output(output_mb, ctx, node, Path(scratch))
                figures[f"upload {big} ÷ loopback TCP"] = figures[f"upload {big}"] / figures["host loopback TCP"]
                figures[f"download {big} ÷ SHA3-256 alone"] = (
                    figures[f"download {big}"] / figures["host SHA3-256 alone"]
                )
                figures[f"{out}, streamed ÷ host pipe"] = figures[f"{out}, streamed: MB/s"] / figures["host pipe MB/s"]
                for name, value in figures.items():
                    samples.setdefault(name, []).append(value)
                print(f"    run {number + 1}/{runs} done", file=sys.stderr, flush=True)
    result_figures = [Figure(_clean(name), _unit(name), values) for name, values in samples.items()]
    targets = [
        Target(f"upload {big}", "at least", 500.0),
        Target(f"download {big}", "at least", 500.0),
        Target(f"upload {big}: requestor +", "at most", 64.0),
        Target(f"download {big}: requestor +", "at most", 64.0),
        Target(f"{out}, streamed", "at least", 300.0),
        Target(f"{out}, streamed: requestor +", "at most", 64.0),
        Target(f"{out}, streamed: node +", "at most", 64.0),
    ]
    notes = (
        f"The node runs in a process of its own (`bench.node_server`, one provider with a sandbox), the requestor "
        f"in the benchmark's; each of the {runs} rounds moves random files of {', '.join(map(size_label, sizes))} "
        f"into an activity (`upload_file`) and back (`download_file`), {big} into memory (`download_bytes`), and "
        f'prints {out} (`head -c … /dev/zero | tr`) with `run`\'s default capture ("streamed": the provider streams '
        "it, the result keeps its start and end) and into `run(stdout_file=…)` (the requestor reads the event "
        'stream and writes all of it). "requestor +" and "node +" are the growth of each process\'s peak '
        "resident memory over the transfer (`VmHWM` reset before it, less `VmRSS` then); for `download_bytes` "
        "its ratio to the size (the bytes it returns are 1.0). Floors of the same round: one loopback TCP "
        "connection, a host copy (`shutil.copyfile`), SHA3-256 alone on one core, the same command's output "
        "through a host pipe. A download is checked against the SHA3-256 the provider sends at its end (as "
        "yagna's gftp does): the provider hashes as it reads, the requestor as chunks come, each on a core of "
        "its own, so a download cannot be faster than SHA3-256 alone; uploads carry no hash."
    )
    return Result(key="transfers", title=_TITLE, figures=result_figures, targets=targets, notes=notes)


def main(argv: list[str] | None = None) -> None:
    """Print the figures of one small round (``python -m bench.transfers [RUNS]``)."""
    args = sys.argv[1:] if argv is None else argv
    result = asyncio.run(transfers(int(args[0]) if args else 1))
    for figure in result.figures:
        print(f"{figure.name}: {figure.median:.2f} {figure.unit}")


if __name__ == "__main__":
    main()
