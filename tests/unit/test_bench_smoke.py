"""The benchmark command's own parts, without measuring anything: its arguments and the page it writes."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from bench.report import Machine, write_report
from bench.run import BENCHMARKS, parse_args
from bench.stats import Figure, Result, Target


def test_the_command_runs_every_benchmark_five_times_by_default_and_names_an_unknown_one() -> None:
    args = parse_args([])
    assert args.runs == 5
    assert args.only == BENCHMARKS
    assert parse_args(["--only", "shutdown, scale", "--runs", "2"]).only == ("shutdown", "scale")
    with pytest.raises(SystemExit):
        parse_args(["--only", "warp-speed"])
    with pytest.raises(SystemExit):
        parse_args(["--runs", "0"])


def test_the_page_says_for_each_target_whether_it_is_met_and_shows_a_plot_per_benchmark(tmp_path: Path) -> None:
    fast = Result(
        key="shutdown",
        title="Shutdown",
        figures=[Figure("shutdown", "s", [0.2, 0.1, 0.3])],
        targets=[Target("shutdown", "at most", 2.0)],
        notes="From stop to exit.",
    )
    slow = Result(
        key="throughput",
        title="Throughput",
        figures=[Figure("fraction", "%", [40.0, 45.0, 20.0])],
        targets=[Target("fraction", "at least", 50.0)],
    )
    skipped = Result(key="yapapi", title="Side by side with yapapi 0.13.1", figures=[], skipped="yapapi is missing")
    page = tmp_path / "performance.md"
    machine = Machine({"CPU": "Test CPU", "cores": "2"})

    written = write_report([fast, slow, skipped], machine, took=12.0, page=page)

    text = page.read_text()
    assert "| Shutdown | shutdown | ≤ 2.00 s | 0.2 s | 0.1–0.3 | 3 | **yes** |" in text
    assert "| Throughput | fraction | ≥ 50.0 % | 40.0 % | 20.0–45.0 | 3 | **no** |" in text
    assert "not run: yapapi is missing" in text
    assert "| CPU | Test CPU |" in text
    assert "![Shutdown](performance/shutdown.png)" in text
    assert (tmp_path / "performance" / "shutdown.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in written) == ["performance.md", "shutdown.png", "throughput.png"]


def test_the_soak_section_survives_a_rewrite_of_the_page(tmp_path: Path) -> None:
    from bench.soak import write_section

    page = tmp_path / "performance.md"
    result = Result(key="shutdown", title="Shutdown", figures=[Figure("shutdown", "s", [0.2])])
    machine = Machine({"CPU": "Test CPU"})
    write_report([result], machine, took=1.0, page=page)
    write_section("## Soak\n\nsoaked for 2 minutes\n", page)
    write_section("## Soak\n\nsoaked for 3 minutes\n", page)
    write_report([result], machine, took=1.0, page=page)
    text = page.read_text()
    assert text.count("## Soak") == 1
    assert "soaked for 3 minutes" in text
    assert text.index("## Soak") < text.index("## Re-running")


def test_a_local_network_runtime_other_than_vm_or_idle_is_refused_by_name() -> None:
    from golem_api.errors import ConfigurationError
    from golem_local.config import LocalNetworkConfig

    assert LocalNetworkConfig.with_providers(2, activity_runtime="idle").activity_runtime == "idle"
    with pytest.raises(ConfigurationError, match=r"activity_runtime must be 'vm' or 'idle', not 'docker'"):
        LocalNetworkConfig(activity_runtime="docker")


def test_a_short_soak_runs_and_finds_every_document_paid_once() -> None:
    import json
    import subprocess
    import sys

    from bench.processes import ROOT

    argv = ["--minutes", "0.05", "--instances", "2", "--sample", "1", "--runtime", "idle"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["problems"] == []
    assert result["invoices"] == result["agreements"] == 2
    assert result["commands"] > 0


async def test_the_idle_scale_benchmark_runs_small_and_reports_lost_instances_and_the_nodes_cpu() -> None:
    from bench.scale import scale_1000

    result = await scale_1000(1, instances=3, window=0.2, idle=0.6)

    figures = {figure.name: figure for figure in result.figures}
    assert list(figures) == [
        "time to running",
        "instances lost",
        "instances lost while idle",
        "agreements ended while idle",
        "requestor idle CPU",
        "requestor idle CPU, last third ÷ middle third",
        "requestor RSS per instance",
        "requestor RSS, last third ÷ middle third",
        "node idle CPU",
        "node idle CPU, last third ÷ middle third",
        "node RSS",
        "node RSS, last third ÷ middle third",
        "polling floor: bare aiohttp CPU",
        "requestor idle CPU ÷ polling floor",
        "node: serving the floor's polling",
        "node idle CPU ÷ its polling floor",
    ]
    assert len(figures["requestor idle CPU"].samples) == 3  # 0.6 s of idling in windows of 0.2 s
    assert figures["instances lost while idle"].median == figures["agreements ended while idle"].median == 0


def test_the_scale_budget_covers_the_dearest_providers_for_the_whole_run() -> None:
    from bench.scale import run_budget

    # 1000 default providers cost about 5.1 GLM/s for duration alone: 1000 GLM lasted some 200 s.
    assert run_budget(1000, 600) > Decimal("5.1") * 600 * 2
    assert run_budget(3, 1) < run_budget(3, 10)


async def test_the_big_batch_benchmark_runs_small_next_to_its_floors() -> None:
    from bench.requestor import big_batch

    result = await big_batch(1, commands=5)

    assert [len(figure.samples) for figure in result.figures] == [1] * 5
    assert result.figures[1].name == "5 one-command batches"


@pytest.mark.slow
async def test_the_parts_of_a_one_command_batch_are_measured_alone_next_to_the_host_spawn() -> None:
    from bench.overhead_parts import overhead_parts

    result = await overhead_parts(1, batches=3)

    names = [figure.name for figure in result.figures]
    assert names[:5] == [
        "batch",
        "batch, runtime answering at once",
        "bare aiohttp POST + GET",
        "agent round trip",
        "host spawn",
    ]
    assert "batch ÷ host spawn" in names
    assert all(len(figure.samples) == 1 and figure.samples[0] > 0 for figure in result.figures)


async def test_the_transfers_benchmark_runs_small_next_to_its_floors_and_ratios() -> None:
    from bench.transfers import transfers

    result = await transfers(1, sizes=(1, 2), output_mb=2)

    names = {figure.name for figure in result.figures}
    assert {
        "upload 2 MB",
        "download 2 MB",
        "download_bytes 2 MB",
        "upload 2 MB: requestor +",
        "download 2 MB: node +",
        "2 MB to stdout, streamed",
        "2 MB to stdout, streamed into stdout_file",
        "2 MB to stdout, streamed: node +",
        "host loopback TCP",
        "host copy",
        "host SHA3-256 alone",
        "host pipe",
        "upload 2 MB ÷ loopback TCP",
        "download 2 MB ÷ SHA3-256 alone",
        "2 MB to stdout, streamed ÷ host pipe",
    } <= names
    assert all(result.figure(target.figure).runs == 1 for target in result.targets)
    assert result.figure("download_bytes 2 MB: requestor + ÷ size").unit == "×"


async def test_the_bare_aiohttp_floor_of_time_to_running_runs_small_with_the_same_requests() -> None:
    from bench.scale import running_against_bare

    result = await running_against_bare(1, sizes=(3,))

    figures = {figure.name: figure for figure in result.figures}
    assert list(figures) == [
        "N=3 golem-api",
        "N=3 bare aiohttp",
        "N=3 golem-api ÷ bare",
        "instances lost",
    ]
    assert figures["instances lost"].median == 0
    # Per instance: one counter-proposal, agreement, confirmation, wait, activity and deploy + start batch.
    for kind in ("counter proposal", "create agreement", "confirm agreement", "create activity", "exec"):
        assert f"{kind} 3" in result.notes


@pytest.mark.slow  # yapapi's own interpreter and sandboxes: a minute
async def test_the_side_by_side_benchmark_times_one_big_batch_on_both_sides_and_the_agent_floor() -> None:
    from bench.side_by_side import side_by_side

    result = await side_by_side(1, instances=1, batches=2, big=5)

    if result.skipped:
        pytest.skip(result.skipped)
    figures = {figure.name: figure for figure in result.figures}
    for name in ("golem-api one batch of 5 commands", "yapapi one batch of 5 commands", "agent floor: 5 round trips"):
        assert figures[name].median > 0
    assert "ratio one batch of 5 commands" in figures
    assert "one batch of 5 commands ÷ agent floor" in figures
    assert figures["agent alone, 5 commands chained"].median > 0
    assert "yapapi one batch of 5 commands ÷ agent alone chained" in figures


async def test_the_real_sandboxes_benchmark_runs_small_next_to_its_floor() -> None:
    from bench.scale import real_sandboxes

    result = await real_sandboxes(1, sizes=(2,))

    figures = {figure.name: figure for figure in result.figures}
    assert list(figures) == [
        "N=2 golem-api time to running",
        "N=2 floor: sandboxes started alone",
        "N=2 ratio",
        "N=2 instances lost",
        "N=2 memory of a sandbox (PSS of bubblewrap and agent)",
        "N=2 memory available dropped by",
    ]
    assert figures["N=2 instances lost"].median == 0
    assert figures["N=2 floor: sandboxes started alone"].median > 0
    assert figures["N=2 memory of a sandbox (PSS of bubblewrap and agent)"].median > 0
