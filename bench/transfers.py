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

__all__ = ["plot_against_size", "transfers"]

_TITLE = "Transfers and output"


def _unit(name: str) -> str:
    if "÷" in name:
        return "×"
    if name.endswith(("+", ": requestor +", ": node +")):
        return "MB"
    if name.endswith("stall ms"):
        return "ms"
    if name.endswith("CPU ms/MB"):
        return "ms per MB"
    return "MB/s"


def _clean(name: str) -> str:
    return name.removesuffix(": MB/s").removesuffix(" MB/s").removesuffix(" ms/MB").removesuffix(" ms")


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
        "stream and writes all of it), after one unmeasured run of 1 MB (the activity's first command pays once "
        "for the sandbox's first start of the shell and the programs, which the floor has warm). "
        '"requestor +" and "node +" are the growth of each process\'s peak '
        "resident memory over the transfer (`VmHWM` reset before it, less `VmRSS` then); for `download_bytes` "
        "its ratio to the size (the bytes it returns are 1.0). Floors of the same round: one loopback TCP "
        "connection, a host copy (`shutil.copyfile`), SHA3-256 alone on one core, the same command's output "
        "through a host pipe. A download is checked against the SHA3-256 the provider sends at its end (as "
        "yagna's gftp does): the provider hashes as it reads, the requestor as chunks come, each on a core of "
        "its own, so a download cannot be faster than SHA3-256 alone; uploads carry no hash."
    )
    return Result(key="transfers", title=_TITLE, figures=result_figures, targets=targets, notes=notes)


def plot_against_size(result: Result, path: Path) -> bool:
    """The page's plot: upload and download throughput against size next to SHA3-256 alone and the target,
    and the output's throughput next to the host pipe's (medians, min–max bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {figure.name: figure for figure in result.figures}
    sizes = sorted(_sizes(names))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    for kind, colour in (("upload", "tab:blue"), ("download", "tab:orange")):
        figures = [names[f"{kind} {size_label(size)}"] for size in sizes]
        medians = [figure.median for figure in figures]
        bars = [[f.median - f.low for f in figures], [f.high - f.median for f in figures]]
        left.errorbar(sizes, medians, yerr=bars, marker="o", capsize=4, color=colour, label=kind)
    sha3 = names["host SHA3-256 alone"]
    left.axhline(sha3.median, color="grey", linestyle=":", label=f"SHA3-256 alone ({sha3.median:.0f} MB/s)")
    left.axhline(500, color="red", linestyle="--", label="target 500 MB/s")
    left.set_xscale("log")
    left.set_xticks(sizes, [size_label(size) for size in sizes])
    left.set_xlabel("file size")
    left.set_ylabel("MB/s")
    left.set_ylim(bottom=0)
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    left.set_title("files (requestor ↔ provider)", fontsize=10)
    output = [name for name, figure in names.items() if "to stdout, streamed" in name and figure.unit == "MB/s"]
    output.append("host pipe")
    right.bar(range(len(output)), [names[name].median for name in output], color="tab:green")
    right.errorbar(
        range(len(output)),
        [names[name].median for name in output],
        yerr=[
            [names[name].median - names[name].low for name in output],
            [names[name].high - names[name].median for name in output],
        ],
        fmt="none",
        capsize=4,
        color="black",
    )
    right.axhline(300, color="red", linestyle="--", label="target 300 MB/s")
    labels = [name.split(", ", 1)[-1].replace("streamed into ", "into ") for name in output]
    right.set_xticks(range(len(output)), labels, fontsize=8)
    right.set_ylabel("MB/s")
    right.legend(fontsize=8)
    right.grid(axis="y", alpha=0.3)
    right.set_title(output[0].split(",")[0], fontsize=10)
    fig.suptitle(result.title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _sizes(names: dict[str, Figure]) -> set[int]:
    sizes = set()
    for name in names:
        parts = name.split()
        if len(parts) == 3 and parts[0] == "upload" and parts[2] in ("MB", "GB"):
            sizes.add(round(float(parts[1]) * (1000 if parts[2] == "GB" else 1)))
    return sizes


def main(argv: list[str] | None = None) -> None:
    """Print the figures of one small round (``python -m bench.transfers [RUNS]``)."""
    args = sys.argv[1:] if argv is None else argv
    result = asyncio.run(transfers(int(args[0]) if args else 1))
    for figure in result.figures:
        print(f"{figure.name}: {figure.median:.2f} {figure.unit}")


if __name__ == "__main__":
    main()
