"""Benchmark 5: memory and CPU of a requestor process with many running instances (no sandboxes spawned)."""

from __future__ import annotations

import sys

from bench.processes import run_json, served_node
from bench.stats import Figure, Result, Target

__all__ = ["requestor_scale"]


async def requestor_scale(runs: int, instances: int = 200, window: float = 5.0) -> Result:
    """Run ``instances`` trivial instances from a child requestor against an idle-runtime node; sample it idling."""
    async with served_node(instances, "idle") as node:
        figures = await run_json(
            [
                sys.executable,
                "-m",
                "bench.scale_child",
                "--url",
                node["url"],
                "--app-key",
                node["app_key"],
                "--instances",
                str(instances),
                "--windows",
                str(runs),
                "--window",
                str(window),
            ]
        )
    return Result(
        key="requestor_scale",
        title="Scale of the requestor",
        figures=[
            Figure("RSS", "MB", figures["rss_mb"]),
            Figure("idle CPU", "% of a core", figures["cpu_percent"]),
            Figure("time to running", "s", [figures["running_after_s"]]),
            Figure("RSS before Golem", "MB", [figures["rss_before_mb"]]),
        ],
        targets=[Target("RSS", "at most", 150.0), Target("idle CPU", "at most", 5.0)],
        notes=(
            f"A requestor process (`python -m bench.scale_child`) runs {instances} instances of the trivial service "
            f"against a local network of {instances} providers served by another process "
            '(`LocalNetworkConfig(activity_runtime="idle")`: activities spawn nothing). Once all are running it '
            f"samples itself with psutil over {runs} idle windows of {window:g} s: resident memory at the end "
            "of each, and CPU time (user + system) over wall time. Health checks (every 5 s), debit-note and "
            "invoice pollers stay active meanwhile."
        ),
    )
