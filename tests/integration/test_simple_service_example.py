"""The simple-service example as a user runs it: a real process, on the embedded local network, with its image.

``examples/simple_service/simple_service.py`` is started as a subprocess (no terminal, so the live table turns
into plain lines) and read line by line, each read bounded; nothing here sleeps. One test lets it run to the
end and checks what a user sees: statistics from every instance, valid PNG plots, the summary, exit code 0.
The other presses Ctrl-C (SIGINT to the process group, as a terminal does) once every instance has answered
twice (its observations grew between), and checks that the instances were shut down, the providers paid, and
the process gone within 5 s with code 130 (the example's documented code for an interrupted run).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from golem_local.images.builder import build_image
from golem_local.images.registry import ImageRegistry

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600), pytest.mark.usefixtures("example_layers")]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "simple_service" / "simple_service.py"
STATS_LINE = re.compile(r"^(simple-service-\d+): (\{.*\})$")
STATS_KEYS = {"min", "max", "median", "mean", "variance", "std dev", "size"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LINE_BOUND = 40.0  # seconds any one line of output may take to come
SIGINT_EXIT_BOUND = 5.0


@pytest.fixture(scope="module")
def example_layers(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Build the example's image once into the session's build cache, so that the example's own build (in its
    process, into a registry of its own) takes its steps from the cache: a first build (the Debian base,
    ``pip install numpy matplotlib``: about a minute) would not fit the per-line bound below."""
    registry = ImageRegistry(tmp_path_factory.mktemp("example-registry"))
    asyncio.run(build_image(EXAMPLE.parent / "image", tag="golem-api/simple-service:1.0", registry=registry))


class Example:
    """The example running as a process in its own session (so that a signal can go to its whole group)."""

    def __init__(self, process: asyncio.subprocess.Process, workdir: Path) -> None:
        self.process = process
        self.workdir = workdir
        self.lines: list[str] = []

    @classmethod
    async def start(cls, workdir: Path, *args: str) -> Example:
        env = {key: value for key, value in os.environ.items() if not key.startswith("YAGNA_")}
        env["PYTHONUNBUFFERED"] = "1"
        env["GOLEM_API_HOME"] = str(workdir / "golem-api-home")  # a registry of its own: the image is built anew
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLE),
            "--num-instances",
            "2",
            "--output-dir",
            str(workdir / "plots"),
            "--log-file",
            str(workdir / "debug.log"),
            *args,
            cwd=workdir,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        return cls(process, workdir)

    async def next_line(self) -> str | None:
        """The next line of standard output (``None`` at its end), waiting at most ``LINE_BOUND`` s."""
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), LINE_BOUND)
        if not raw:
            return None
        line = raw.decode().rstrip("\n")
        self.lines.append(line)
        return line

    async def finish(self, timeout: float) -> tuple[int, str]:
        """Read the rest of the output and wait for the exit: ``(exit code, standard error)``."""
        assert self.process.stderr is not None
        stderr = self.process.stderr

        async def rest() -> tuple[int, str]:
            errors = asyncio.ensure_future(stderr.read())
            try:
                while await self.next_line() is not None:
                    pass
                return await self.process.wait(), (await errors).decode()
            finally:
                errors.cancel()

        return await asyncio.wait_for(rest(), timeout)

    async def kill(self) -> None:
        """Make sure the process is gone (after a failed assertion)."""
        if self.process.returncode is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            await asyncio.wait_for(self.process.wait(), 10)

    def stats(self) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for line in self.lines:
            match = STATS_LINE.match(line)
            if match:
                found[match.group(1)].append(json.loads(match.group(2)))
        return dict(found)

    def summary_row(self, first: str) -> list[str]:
        for line in self.lines:
            cells = [cell.strip() for cell in line.replace("┃", "│").split("│")[1:-1]]
            if cells and cells[0] == first:
                return cells
        raise AssertionError(f"no summary row for {first!r} in the output:\n" + "\n".join(self.lines))


async def test_the_example_runs_two_instances_prints_stats_saves_plots_and_pays(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    example = await Example.start(tmp_path, "--running-time", "20", "--interval", "2", "--show-usage")
    try:
        code, stderr = await example.finish(timeout=90)
    finally:
        await example.kill()
    elapsed = loop.time() - started
    output = "\n".join(example.lines)
    print(f"\nthe example ran in {elapsed:.1f} s; output:\n{output}\n{stderr}")

    assert code == 0, f"exit code {code}; stderr:\n{stderr}"
    assert "Traceback" not in stderr
    stats = example.stats()
    assert sorted(stats) == ["simple-service-1", "simple-service-2"]
    for reports in stats.values():  # one report or more: how many fit in 20 s depends on the load
        assert all(set(report) == STATS_KEYS for report in reports)
        sizes = [report["size"] for report in reports]
        assert sizes == sorted(sizes)
        last = reports[-1]
        assert last["min"] <= last["median"] <= last["max"]
        assert last["std dev"] == pytest.approx(last["variance"] ** 0.5)

    from PIL import Image

    plots = sorted((tmp_path / "plots").glob("*.png"))
    for instance in ("simple-service-1", "simple-service-2"):
        mine = [plot for plot in plots if plot.name.startswith(instance + "-")]
        assert mine, f"no plot of {instance} in {plots}"
        for plot in mine:
            assert plot.read_bytes()[:8] == PNG_SIGNATURE
            with Image.open(plot) as image:
                image.load()
                assert image.format == "PNG"
                assert image.size[0] > 100
                assert image.size[1] > 100

    assert "simple-service-1: simulation stopped" in output
    assert "simple-service-2: simulation stopped" in output
    usage = re.compile(r"^simple-service-\d: usage duration_sec=[\d.]+, cpu_sec=[\d.]+, cost \S+ at the agreed prices$")
    assert any(usage.match(line) for line in example.lines), "--show-usage prints the counters by name and the cost"
    providers = [example.summary_row(f"local-provider-{n}") for n in (1, 2, 3) if f"local-provider-{n}" in output]
    assert len(providers) == 2, "one row per provider that ran an instance"
    total = example.summary_row("total")
    assert total[1] == "2", "two agreements in all"
    assert float(total[3]) > 0, "the providers were paid"
    log = (tmp_path / "debug.log").read_text()
    assert " DEBUG " in log, "--log-file writes the full debug log"
    assert log.count("Accepted invoice from") == 2


async def test_ctrl_c_stops_the_instances_pays_and_exits_within_5_seconds(tmp_path: Path) -> None:
    example = await Example.start(tmp_path, "--running-time", "120", "--interval", "1")
    try:
        sizes: dict[str, list[int]] = defaultdict(list)
        while len(sizes) < 2 or min(len(seen) for seen in sizes.values()) < 2:  # every instance answered twice
            line = await example.next_line()
            assert line is not None, "the example ended before it was interrupted:\n" + "\n".join(example.lines)
            match = STATS_LINE.match(line)
            if match:
                sizes[match.group(1)].append(json.loads(match.group(2))["size"])
        loop = asyncio.get_running_loop()
        interrupted_at = loop.time()
        os.killpg(example.process.pid, signal.SIGINT)
        code, stderr = await example.finish(timeout=SIGINT_EXIT_BOUND + 5)
        elapsed = loop.time() - interrupted_at
    finally:
        await example.kill()
    output = "\n".join(example.lines)
    print(f"\nCtrl-C to exit: {elapsed:.2f} s; output:\n{output}\n{stderr}")

    for instance, seen in sizes.items():
        assert seen[-1] > seen[0], f"{instance}'s observations did not grow between its reports: {seen}"
    assert elapsed < SIGINT_EXIT_BOUND
    assert code == 130, f"exit code {code}; stderr:\n{stderr}"
    assert "Traceback" not in stderr
    assert "Interrupted" in output
    assert "simple-service-1: simulation stopped" in output, "the shutdown handler ran"
    assert "simple-service-2: simulation stopped" in output
    total = example.summary_row("total")
    assert float(total[3]) > 0, "what was owed is paid"
    log = (tmp_path / "debug.log").read_text()
    assert log.count("Accepted invoice from") == 2
    assert "had no invoice" not in log
