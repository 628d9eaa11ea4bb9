"""The benchmark command: run each benchmark several times and write ``docs/performance.md`` with its plots.

    python -m bench.run [--runs 5] [--only overhead,parts,running,…,scale1000,bare,sandboxes,batch,yapapi,vpn,transfers]
                        [--output PAGE]

(``./bench/run`` does the same after setting up the environments.) Progress goes to stderr; the page and the
PNGs are rewritten at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from bench.processes import ROOT
from bench.report import Machine, write_report
from bench.stats import Result, fmt

__all__ = ["BENCHMARKS", "main", "parse_args"]


def _benchmarks() -> dict[str, Callable[[int], Awaitable[Result]]]:
    from bench.bench_vpn import vpn
    from bench.overhead_parts import overhead_parts
    from bench.requestor import big_batch, command_overhead, shutdown, throughput, time_to_running
    from bench.scale import real_sandboxes, requestor_scale, running_against_bare, scale_1000
    from bench.side_by_side import side_by_side
    from bench.transfers import transfers

    return {
        "overhead": command_overhead,
        "parts": overhead_parts,
        "running": time_to_running,
        "throughput": throughput,
        "shutdown": shutdown,
        "scale": requestor_scale,
        "scale1000": scale_1000,
        "bare": running_against_bare,
        "sandboxes": real_sandboxes,
        "batch": big_batch,
        "yapapi": side_by_side,
        "vpn": vpn,
        "transfers": transfers,
    }


BENCHMARKS = (
    "overhead",
    "parts",
    "running",
    "throughput",
    "shutdown",
    "scale",
    "scale1000",
    "bare",
    "sandboxes",
    "batch",
    "yapapi",
    "vpn",
    "transfers",
)
"""The benchmarks' names, in the order they run and appear on the page."""


def _names(value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown or not names:
        known = ", ".join(BENCHMARKS)
        raise argparse.ArgumentTypeError(f"unknown benchmark(s) {unknown or value!r}; choose from {known}")
    return names


def _runs(value: str) -> int:
    try:
        runs = int(value)
    except ValueError:
        runs = 0
    if runs < 1:
        raise argparse.ArgumentTypeError(f"--runs must be a whole number, 1 or more, not {value!r}")
    return runs


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command's arguments: ``runs``, ``only`` (benchmark names) and ``output`` (the page)."""
    parser = argparse.ArgumentParser(prog="./bench/run", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=_runs, default=5, help="runs of each benchmark (default 5)")
    parser.add_argument(
        "--only", type=_names, default=BENCHMARKS, help=f"comma-separated benchmarks (default: {','.join(BENCHMARKS)})"
    )
    parser.add_argument(
        "--output", type=Path, default=ROOT / "docs" / "performance.md", help="the page to write (plots beside it)"
    )
    return parser.parse_args(argv)


async def _run_all(names: Sequence[str], runs: int) -> list[Result]:
    benchmarks = _benchmarks()
    results = []
    for name in names:
        began = time.perf_counter()
        print(f"==> {name} ({runs} runs)", file=sys.stderr, flush=True)
        result = await benchmarks[name](runs)
        results.append(result)
        summary = ", ".join(f"{f.name} {fmt(f.median)} {f.unit}" for f in result.figures) or result.skipped
        print(f"    {summary}  [{time.perf_counter() - began:.1f} s]", file=sys.stderr, flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    """Run the chosen benchmarks and write the report."""
    args = parse_args(argv)
    # A sandbox's agent may be gone before its pipe is closed at stop; asyncio logs that at WARNING. Quiet it.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    began = time.perf_counter()
    results = asyncio.run(_run_all(args.only, args.runs))
    from bench.side_by_side import YAPAPI_PYTHON

    written = write_report(results, Machine.here(YAPAPI_PYTHON), took=time.perf_counter() - began, page=args.output)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
