"""The task examples (``examples/tasks/``, ports of yapapi's hello-world, scan and blender) as a user runs them.

Each example is started as a process on the embedded local network (no ``YAGNA_*`` variables, a registry of its
own under ``GOLEM_API_HOME``), its whole run bounded, and what it prints and writes is checked: the date from
the hello task, one CPU model per scanned provider (each provider scanned once), and one valid PNG per frame of
the fan-out, downloaded from the providers that drew them.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from tests.processes import ROOT, example_env, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLES = ROOT / "examples" / "tasks"
RUN_BOUND = 90.0  # seconds a whole example run may take
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


async def run_example(workdir: Path, name: str, *args: str) -> tuple[int, str, str]:
    """Run ``examples/tasks/<name>`` in ``workdir``: ``(exit code, standard output, standard error)``."""
    log = ["--log-file", str(workdir / f"{name}.log")]
    env = example_env(workdir / "golem-api-home")
    done = await run(sys.executable, str(EXAMPLES / name), *log, *args, bound=RUN_BOUND, cwd=workdir, env=env)
    return done.returncode, ANSI.sub("", done.stdout), done.stderr


async def test_hello_prints_the_date_a_provider_told(tmp_path: Path) -> None:
    code, stdout, stderr = await run_example(tmp_path, "hello.py")

    assert code == 0, stderr
    assert re.search(r"\d\d:\d\d:\d\d .*\d{4}", stdout), stdout
    assert "Provider 'local-provider-" in stderr
    assert "computed 1 task(s)" in stderr
    assert "Total cost:" in stderr
    assert (tmp_path / "hello.py.log").stat().st_size > 0


async def test_scan_reads_each_provider_once(tmp_path: Path) -> None:
    code, stdout, stderr = await run_example(tmp_path, "scan.py", "--max-workers", "2")

    assert code == 0, stderr
    assert "Scanning 3 nodes, using 2 concurrent workers." in stdout
    results = [ast.literal_eval(line) for line in stdout.splitlines() if line.startswith("('0x")]
    assert len(results) == 3
    assert len({provider_id for provider_id, _name, _model in results}) == 3, "each provider is scanned once"
    assert sorted(name for _id, name, _model in results) == [f"local-provider-{n}" for n in (1, 2, 3)]
    assert all(model is None or isinstance(model, str) for _id, _name, model in results)
    for n in (1, 2, 3):
        assert f"Provider 'local-provider-{n}' computed 1 task(s)" in stderr


async def test_fan_out_renders_every_frame_and_downloads_it(tmp_path: Path) -> None:
    frames = ["0", "10", "20", "30", "40"]
    out = tmp_path / "frames"
    code, stdout, stderr = await run_example(
        tmp_path, "fan_out.py", "--frames", *frames, "--max-workers", "3", "--output-dir", str(out), "--show-usage"
    )

    assert code == 0, stderr
    assert "5 tasks computed" in stdout
    assert "Job 1: 5 task(s) accepted, 0 rejected, 0 tried again, 0 failed" in stdout
    pictures = {frame: (out / f"output_{frame}.png").read_bytes() for frame in frames}
    assert all(data.startswith(PNG_SIGNATURE) for data in pictures.values())
    assert len(set(pictures.values())) == len(frames), "every frame is drawn differently"
    assert "USAGE: {'current_usage': {'golem.usage.duration_sec':" in stdout
    assert re.search(r"COST: \d+\.\d+", stdout)
