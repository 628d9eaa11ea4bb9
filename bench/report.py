"""The report: ``docs/performance.md`` with the machine, a targets table, a section and a plot per benchmark."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from bench.stats import Figure, Result, fmt

__all__ = ["Machine", "plot", "render", "write_report"]

RERUN = "./bench/run"
_SANDBOX_FIGURES = Path(__file__).with_name("sandbox_figures.md")
"""The sandbox's figures, measured by hand (``bench/bench_sandbox.py``, ``bench/bench_output.py``): kept as written."""
_SCALE_FIGURES = Path(__file__).with_name("scale_figures.md")
"""Before and after of issue 17 (scale, payments, batches, transfers), measured by hand: kept as written."""
_TRANSFER_FIGURES = Path(__file__).with_name("transfer_figures.md")
"""Before and after of issue 17 for transfers and output, measured by hand: kept as written."""


class Machine(dict[str, str]):
    """What the figures were taken on: CPU model, cores, memory, kernel, Python, yapapi (when present)."""

    @classmethod
    def here(cls, yapapi_python: Path | None = None) -> Machine:
        """This machine."""
        import psutil  # type: ignore[import-untyped]

        model = "unknown"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        machine = cls(
            {
                "CPU": model,
                "cores": f"{os.cpu_count()} logical ({len(os.sched_getaffinity(0))} usable)",
                "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
                "kernel": f"{platform.system()} {platform.release()}",
                "Python": f"{platform.python_implementation()} {platform.python_version()}",
            }
        )
        if yapapi_python is not None and yapapi_python.exists():
            found = subprocess.run(
                [str(yapapi_python), "-c", "import importlib.metadata as m; print(m.version('yapapi'))"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            machine["yapapi"] = found.stdout.strip() or "unknown"
        return machine


def plot(result: Result, path: Path) -> bool:
    """A PNG of ``result``'s samples: one panel per unit, a box and the points of each figure, targets dashed.

    Returns False (and writes nothing) for a benchmark without figures.
    """
    if not result.figures:
        return False
    if result.key == "transfers":  # throughput against size reads better than a box per figure
        from bench.transfers import plot_against_size

        return plot_against_size(result, path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units: dict[str, list[Figure]] = {}
    for figure in result.figures:
        units.setdefault(figure.unit, []).append(figure)
    fig, axes = plt.subplots(1, len(units), figsize=(4.2 * len(units) + 1, 3.8), squeeze=False)
    for ax, (unit, figures) in zip(axes[0], units.items(), strict=True):
        ax.boxplot([f.samples for f in figures], widths=0.5)
        for index, figure in enumerate(figures, start=1):
            ax.scatter([index] * figure.runs, figure.samples, s=12, alpha=0.7, zorder=3)
        ax.set_xticks(range(1, len(figures) + 1), [f.name for f in figures], rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(unit)
        ax.set_ylim(bottom=0)
        for target in result.targets:
            names = [f.name for f in figures]
            if target.figure in names:
                x = names.index(target.figure) + 1
                ax.hlines(target.limit, x - 0.4, x + 0.4, colors="red", linestyles="dashed", zorder=4)
                ax.annotate(f"target {target.describe(unit)}", (x + 0.42, target.limit), fontsize=7, color="red")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(result.title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _targets_table(results: Sequence[Result]) -> list[str]:
    lines = [
        "| benchmark | figure | target | median | spread (min–max) | runs | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        if result.skipped:
            lines.append(f"| {result.title} | — | — | — | — | 0 | not run: {result.skipped} |")
            continue
        for target in result.targets:
            figure = result.figure(target.figure)
            met = "**yes**" if target.met(figure.median) else "**no**"
            lines.append(
                f"| {result.title} | {figure.name} | {target.describe(figure.unit)} | {fmt(figure.median)} "
                f"{figure.unit} | {figure.spread()} | {figure.runs} | {met} |"
            )
    return lines


def render(results: Sequence[Result], machine: Machine, *, took: float, images: dict[str, str]) -> str:
    """The Markdown of the report; ``images`` maps a benchmark's key to its PNG, relative to the page."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Performance",
        "",
        "How fast golem-api and its local Golem network are, measured by the benchmarks in `bench/`. Every figure",
        "is the median of several runs with its spread (min–max), all taken in one run of the benchmark command on",
        "one machine; ratios compare with a baseline measured in the same run (a plain spawn of the same command on",
        "the host, or yapapi 0.13.1 on the same local node), so that they carry over between machines better than",
        "the absolute figures. Nothing here is a timed test: the test suite never fails on a figure.",
        "",
        f"Measured on {when}; the whole command took {took:.0f} s.",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in machine.items()),
        "",
        "## Targets",
        "",
        *_targets_table(results),
        "",
    ]
    for result in results:
        lines += [f"## {result.title}", ""]
        if result.skipped:
            lines += [f"Not run: {result.skipped}.", ""]
            continue
        lines += [
            result.notes,
            "",
            "| figure | median | spread (min–max) | runs |",
            "|---|---|---|---|",
            *(f"| {f.name} | {fmt(f.median)} {f.unit} | {f.spread()} {f.unit} | {f.runs} |" for f in result.figures),
            "",
        ]
        if result.key in images:
            lines += [f"![{result.title}]({images[result.key]})", ""]
    lines += [*_SANDBOX_FIGURES.read_text().splitlines(), *_SCALE_FIGURES.read_text().splitlines()]
    lines += [*_TRANSFER_FIGURES.read_text().splitlines(), "", "## Re-running"]
    lines += [
        "",
        "```bash",
        f"{RERUN}                 # every benchmark, 5 runs each; rewrites this page and its plots",
        f"{RERUN} --runs 3 --only overhead,shutdown   # a subset, fewer runs (writes the page with those only)",
        "```",
        "",
        "`./bench/run` sets up `.venv` and yapapi's `.venv-yapapi` on a fresh clone (through",
        "`scripts/bootstrap.sh`), then runs `python -m bench.run`. The plots are in `docs/performance/`.",
        "`bench/bench_sandbox.py` measures the sandbox alone (a command through the agent against a fresh sandbox).",
        "With `--image TAG|FILE.gvmi` it measures activities that run a GVMI as their `/` (unpacked once, then an",
        "overlay per activity in a private mount namespace). For the 120 MB simple-service image (a 336 MB tree) on",
        "the 2-core machine: unpack once 3.9 s; per activity `deploy` 0.8 ms, `start` 32.7 ms (27.9 ms for a",
        "sandbox without an image: the overlay costs about 5 ms), `stop` 8.2 ms (the activity's layer removed).",
        "`python -m bench.bench_vpn` prints the VPN figures alone (it needs root, as the local VPN does).",
        "`python -m bench.bench_transfer [MB …]` and `python -m bench.bench_output [MB]` print the transfer and",
        "output figures alone (the `transfers` benchmark runs both).",
        "`python -m bench.soak [--minutes M] --write-docs` runs the soak and rewrites its section (kept by",
        "`bench/run`).",
        "",
    ]
    return "\n".join(lines)


def _kept_sections(page: Path) -> str:
    """The sections of ``page`` that other commands write (``## Soak``, by ``bench.soak``), to carry over."""
    if not page.exists():
        return ""
    found = re.search(r"^## Soak\n.*?(?=^## )", page.read_text(), re.MULTILINE | re.DOTALL)
    return found.group(0) if found else ""


def write_report(results: Sequence[Result], machine: Machine, *, took: float, page: Path) -> list[Path]:
    """Write the page and a PNG per benchmark (in ``<page stem>/`` beside it); the files written."""
    image_dir = page.parent / page.stem
    images: dict[str, str] = {}
    written: list[Path] = []
    for result in results:
        png = image_dir / f"{result.key}.png"
        if plot(result, png):
            images[result.key] = f"{image_dir.name}/{png.name}"
            written.append(png)
    text = render(results, machine, took=took, images=images)
    kept = _kept_sections(page)
    if kept:
        text = text.replace("## Re-running", kept + "## Re-running", 1)
    page.write_text(text)
    written.append(page)
    return written
