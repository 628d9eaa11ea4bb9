"""Benchmark 6: golem-api and yapapi 0.13.1, the same program (:mod:`bench.golem_side`, :mod:`bench.yapapi_side`)
on the same local node (a :mod:`bench.node_server` process), alternately, several times."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from bench.bench_sandbox import agent_chained, agent_round_trips
from bench.processes import ROOT, run_json, served_node
from bench.stats import Figure, Result, Target

__all__ = ["YAPAPI_PYTHON", "side_by_side"]

YAPAPI_PYTHON = ROOT / ".venv-yapapi" / "bin" / "python"
"""yapapi's own interpreter (made by ``scripts/bootstrap.sh`` with ``GOLEM_API_WITH_YAPAPI=1``)."""

KEYS = (("ttr_1", "time to running, N=1"), ("ttr_n", "time to running, N=10"), ("batch_ms", "per-command batch"))


def _gftp_shim(bin_dir: Path) -> None:
    """A ``gftp`` program for yapapi: ``golem-api gftp`` run by this interpreter."""
    shim = bin_dir / "gftp"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m golem_api._cli gftp "$@"\n')
    shim.chmod(0o755)


async def side_by_side(runs: int, instances: int = 10, batches: int = 100, big: int = 1000) -> Result:
    """Run both programs ``runs`` times each, alternately; the ratios golem-api / yapapi of their medians.

    Each run also times one batch of ``big`` commands on both sides, and ``big`` round trips through the
    sandbox's agent alone (the floor of such a batch: what the agent does for it, without HTTP or a requestor).
    """
    title = "Side by side with yapapi 0.13.1"
    if not YAPAPI_PYTHON.exists():
        return Result(
            key="yapapi",
            title=title,
            figures=[],
            skipped=f"{YAPAPI_PYTHON} is missing: run ./bench/run (it sources scripts/bootstrap.sh with "
            "GOLEM_API_WITH_YAPAPI=1, which creates it)",
        )
    floors: list[float] = []  # seconds of `big` round trips through the agent alone, one per run
    chained: list[float] = []  # seconds of `big` commands through the agent alone as the node chains them
    ours: list[dict[str, float]] = []
    theirs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="golem-api-bench-") as scratch:
        _gftp_shim(Path(scratch))
        async with served_node(instances + 1, "vm") as node:
            env = {
                "YAGNA_APPKEY": node["app_key"],
                "YAGNA_API_URL": node["url"],
                "YAGNA_SUBNET": node["subnet"],
                "PATH": f"{scratch}{os.pathsep}{os.environ.get('PATH', '')}",
            }
            args = ["--instances", str(instances), "--batches", str(batches), "--big", str(big)]
            for _ in range(runs):
                ours.append(await run_json([sys.executable, "-m", "bench.golem_side", *args], env=env))
                theirs.append(await run_json([str(YAPAPI_PYTHON), "bench/yapapi_side.py", *args], env=env))
                floors.append(await agent_round_trips(big))
                chained.append(await agent_chained(big))
    for side, outcomes in (("golem-api", ours), ("yapapi", theirs)):
        unpaid = [f for f in outcomes if f["invoices"] != f["agreements"] or not f["agreements"]]
        if unpaid:
            raise RuntimeError(f"{side} left invoices unaccepted at shutdown: {unpaid}")
    figures: list[Figure] = []
    for key, name in (*KEYS, ("shutdown", "shutdown")):
        unit = "ms" if key == "batch_ms" else "s"
        figures.append(Figure(f"golem-api {name}", unit, [f[key] for f in ours]))
        figures.append(Figure(f"yapapi {name}", unit, [f[key] for f in theirs]))
        figures.append(Figure(f"ratio {name}", "×", [a[key] / b[key] for a, b in zip(ours, theirs, strict=True)]))
    if big:
        name = f"one batch of {big} commands"
        figures.append(Figure(f"golem-api {name}", "s", [f["big_s"] for f in ours]))
        figures.append(Figure(f"yapapi {name}", "s", [f["big_s"] for f in theirs]))
        figures.append(Figure(f"agent floor: {big} round trips", "s", floors))
        figures.append(
            Figure(f"ratio {name}", "×", [a["big_s"] / b["big_s"] for a, b in zip(ours, theirs, strict=True)])
        )
        figures.append(
            Figure(f"{name} ÷ agent floor", "×", [a["big_s"] / f for a, f in zip(ours, floors, strict=True)])
        )
        figures.append(Figure(f"agent alone, {big} commands chained", "s", chained))
        for side, outcomes in (("golem-api", ours), ("yapapi", theirs)):
            figures.append(
                Figure(
                    f"{side} {name} ÷ agent alone chained",
                    "×",
                    [f["big_s"] / c for f, c in zip(outcomes, chained, strict=True)],
                )
            )
    return Result(
        key="yapapi",
        title=title,
        figures=figures,
        notes=(
            f"Both libraries run the same program (`bench/golem_side.py`, `bench/yapapi_side.py`) against the same "
            f"`bench.node_server` process ({instances + 1} providers with sandboxes), alternately, {runs} times "
            "each, as separate processes. Time to running: from `run_service` until every instance's `run` "
            f"handler is entered. Per-command batch: the median of {batches} one-command batches (`run /bin/true`) "
            f"from `yield` to resumption. Shutdown: from `cluster.stop()` with {instances} running instances to "
            "the end of `async with Golem(...)`, every invoice accepted (checked from each library's events). "
            f"One batch of {big} commands: `run /bin/true` {big} times in one script, from `yield` to resumption "
            f"with every result, after the one-command batches; its floor is {big} `true` round trips through the "
            "agent of one sandbox alone (`bench.bench_sandbox.agent_round_trips`, no HTTP, no requestor), measured "
            f"after each pair; beside it, the same {big} commands through the agent alone as the node sends such a "
            "batch, in chains that the agent runs one command after the other by itself "
            "(`bench.bench_sandbox.agent_chained`): what neither library can go below. "
            "Ratio = golem-api / yapapi per run (below 1: golem-api is faster)."
        ),
        targets=[
            Target(f"ratio one batch of {big} commands", "at most", 0.5),
            Target(f"one batch of {big} commands ÷ agent floor", "at most", 1.2),
        ]
        if big
        else [],
    )
