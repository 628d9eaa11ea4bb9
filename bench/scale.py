"""Benchmark 5: memory and CPU of a requestor process with many running instances (no sandboxes spawned)."""

from __future__ import annotations

import asyncio
import sys
import time

import psutil  # type: ignore[import-untyped]

from bench.processes import NodeInfo, run_json, served_node
from bench.stats import Figure, Result, Target
from golem_shared.tasks import TaskSet

__all__ = ["requestor_scale", "scale_1000"]


def _child_argv(node: NodeInfo, instances: int, runs: int, window: float) -> list[str]:
    """``bench.scale_child`` against the served ``node``: ``instances``, ``runs`` windows of ``window`` s."""
    return [
        sys.executable,
        "-m",
        "bench.scale_child",
        *("--url", node["url"], "--app-key", node["app_key"]),
        *("--instances", str(instances), "--windows", str(runs), "--window", str(window)),
    ]


async def requestor_scale(runs: int, instances: int = 200, window: float = 5.0) -> Result:
    """Run ``instances`` trivial instances from a child requestor against an idle-runtime node; sample it idling."""
    async with served_node(instances, "idle") as node:
        figures = await run_json(_child_argv(node, instances, runs, window))
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


async def _sample(process: psutil.Process, window: float, cpu: list[float], rss: list[float]) -> None:
    """Sample ``process`` every ``window`` s until cancelled: CPU (% of a core) and RSS (MB) of each window."""
    before, start = process.cpu_times(), time.perf_counter()
    while True:
        await asyncio.sleep(window)  # the sampling period, not a wait for an event
        after, now = process.cpu_times(), time.perf_counter()
        cpu.append(100 * (after.user + after.system - before.user - before.system) / (now - start))
        rss.append(process.memory_info().rss / 1e6)
        before, start = after, now


async def scale_1000(runs: int, instances: int = 1000, window: float = 10.0) -> Result:
    """Time to running of ``instances`` idle-runtime instances, instances lost, and idle CPU / RSS of the
    requestor and of the node while they idle (``runs`` windows of ``window`` s)."""
    node_cpu: list[float] = []
    node_rss: list[float] = []
    async with served_node(instances, "idle", timeout=300) as node:
        tasks = TaskSet("scale_1000 benchmark")
        tasks.spawn(_sample(psutil.Process(int(node["pid"])), window, node_cpu, node_rss), name="node sampler")
        try:
            figures = await run_json(_child_argv(node, instances, runs, window))
        finally:
            await tasks.aclose()
    cpu = figures["cpu_percent"]
    rss = figures["rss_mb"]
    per_instance_kb = [1000 * (mb - figures["rss_before_mb"]) / instances for mb in rss]
    return Result(
        key="scale_1000",
        title=f"{instances} idle instances",
        figures=[
            Figure("time to running", "s", [figures["running_after_s"]]),
            Figure("instances lost", "", [float(figures["lost"])]),
            Figure("requestor idle CPU", "% of a core", cpu),
            Figure("requestor RSS per instance", "KB", per_instance_kb),
            Figure("node idle CPU", "% of a core", node_cpu or [0.0]),
            Figure("node RSS", "MB", node_rss or [0.0]),
        ],
        targets=[Target("instances lost", "at most", 0.0), Target("requestor RSS per instance", "at most", 40.0)],
        notes=(
            f"As the scale benchmark, with {instances} instances on {instances} idle-runtime providers: from "
            "`run_service` to `wait_running`, the instances that failed to start (`ServiceRespawned`), then "
            f"{runs} idle windows of {window:g} s of the requestor (CPU, RSS above its start, per instance) and "
            "of the node process (sampled every window from its start, so the first windows include the start-up)."
        ),
    )
