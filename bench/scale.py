"""Benchmark 5: memory and CPU of a requestor process with many running instances (no sandboxes spawned)."""

from __future__ import annotations

import asyncio
import sys
import time
from decimal import ROUND_CEILING, Decimal

import psutil  # type: ignore[import-untyped]

from bench.processes import NodeInfo, run_json, served_node
from bench.stats import Figure, Result, Target
from golem_local.config import LocalNetworkConfig
from golem_shared.tasks import TaskSet

__all__ = ["requestor_scale", "run_budget", "running_against_bare", "scale_1000"]

_START_BOUND = 300.0  # s the instances may take to start (the child's wait_running bound)
_STOP_BOUND = 120.0  # s allowed for stopping them and paying the invoices


def run_budget(instances: int, seconds: float) -> Decimal:
    """GLM enough for ``instances`` instances on the default network's first ``instances`` providers (each a
    tenth dearer than the one before) for ``seconds`` s, each using a whole core all along, twice over.

    A budget too small ends every instance once it is spent: with 1000 providers the network's old default of
    1000 GLM lasted some 200 s, after which the requestor (rightly) terminated every agreement and idled.
    """
    providers = LocalNetworkConfig.with_providers(instances).providers
    per_second = sum((p.price_duration_sec + p.price_cpu_sec for p in providers), start=Decimal(0))
    starts = sum((p.start_price for p in providers), start=Decimal(0))
    return (2 * (starts + per_second * Decimal(int(seconds) + 1))).quantize(Decimal("0.001"), ROUND_CEILING)


def _child_argv(node: NodeInfo, instances: int, runs: int, window: float, budget: Decimal) -> list[str]:
    """``bench.scale_child`` against the served ``node``: ``instances``, ``runs`` windows of ``window`` s."""
    return [
        sys.executable,
        "-m",
        "bench.scale_child",
        *("--url", node["url"], "--app-key", node["app_key"]),
        *("--instances", str(instances), "--windows", str(runs), "--window", str(window)),
        *("--budget", str(budget)),
    ]


async def requestor_scale(runs: int, instances: int = 200, window: float = 5.0) -> Result:
    """Run ``instances`` trivial instances from a child requestor against an idle-runtime node; sample it idling."""
    budget = run_budget(instances, _START_BOUND + runs * window + _STOP_BOUND)
    async with served_node(instances, "idle", balance=budget) as node:
        figures = await run_json(_child_argv(node, instances, runs, window, budget))
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


def _drift(samples: list[float]) -> float:
    """The mean of the last third of ``samples`` over that of the middle third (1.0: flat after warm-up)."""
    third = len(samples) // 3
    if third == 0:
        return 1.0
    middle = samples[third : 2 * third]
    last = samples[2 * third :]
    base = sum(middle) / len(middle)
    return (sum(last) / len(last)) / base if base > 0 else 1.0


async def scale_1000(runs: int, instances: int = 1000, window: float = 10.0, idle: float = 600.0) -> Result:
    """Time to running of ``instances`` idle-runtime instances, instances lost, and idle CPU / RSS of the
    requestor and of the node while they idle (``idle`` s in windows of ``window`` s, at least ``runs``)."""
    windows = max(runs, round(idle / window))
    node_cpu: list[float] = []
    node_rss: list[float] = []
    budget = run_budget(instances, _START_BOUND + windows * window + _STOP_BOUND)
    async with served_node(instances, "idle", timeout=300, balance=budget) as node:
        tasks = TaskSet("scale_1000 benchmark")
        tasks.spawn(_sample(psutil.Process(int(node["pid"])), window, node_cpu, node_rss), name="node sampler")
        try:
            figures = await run_json(
                _child_argv(node, instances, windows, window, budget), timeout=_START_BOUND + windows * window + 300
            )
        finally:
            await tasks.aclose()
    cpu = figures["cpu_percent"]
    rss = figures["rss_mb"]
    per_instance_kb = [1000 * (mb - figures["rss_before_mb"]) / instances for mb in rss]
    # The node's windows start with its own start-up and the instances' start: only those after count as idle.
    node_idle_cpu = node_cpu[-len(cpu) :] or [0.0]
    return Result(
        key="scale_1000",
        title=f"{instances} idle instances",
        figures=[
            Figure("time to running", "s", [figures["running_after_s"]]),
            Figure("instances lost", "", [float(figures["lost"])]),
            Figure("instances lost while idle", "", [float(figures["lost_idle"])]),
            Figure("agreements ended while idle", "", [float(figures["ended_idle"])]),
            Figure("requestor idle CPU", "% of a core", cpu),
            Figure("requestor idle CPU, last third ÷ middle third", "×", [_drift(cpu)]),
            Figure("requestor RSS per instance", "KB", per_instance_kb),
            Figure("requestor RSS, last third ÷ middle third", "×", [_drift(rss)]),
            Figure("node idle CPU", "% of a core", node_idle_cpu),
            Figure("node idle CPU, last third ÷ middle third", "×", [_drift(node_idle_cpu)]),
            Figure("node RSS", "MB", node_rss or [0.0]),
            Figure("node RSS, last third ÷ middle third", "×", [_drift(node_rss[-len(cpu) :])]),
        ],
        targets=[
            Target("instances lost", "at most", 0.0),
            Target("instances lost while idle", "at most", 0.0),
            Target("agreements ended while idle", "at most", 0.0),
            Target("requestor RSS per instance", "at most", 40.0),
        ],
        notes=(
            f"As the scale benchmark, with {instances} instances on {instances} idle-runtime providers: from "
            "`run_service` to `wait_running`, the instances that failed to start (`ServiceRespawned`), then "
            f"{windows} idle windows of {window:g} s ({windows * window / 60:.0f} min) of the requestor (CPU, RSS "
            "above its start, per instance) and of the node process (its last as many windows of its own "
            "sampling), the instances not running at the end of a window and the agreements that ended meanwhile. "
            "Flat means the mean of the last third of the windows over that of the middle third near 1. The "
            f"budget and the node's funds ({budget} GLM) cover every provider's price for the whole run twice "
            "over: the old 1000 GLM ran out some 200 s after 1000 instances were running, and the requestor "
            "ended every agreement (the quiet seen before)."
        ),
    )


def _bare_argv(node: NodeInfo, instances: int, budget: Decimal) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.bare_running",
        *("--url", node["url"], "--app-key", node["app_key"]),
        *("--instances", str(instances), "--subnet", node["subnet"], "--budget", str(budget)),
    ]


async def running_against_bare(runs: int, sizes: tuple[int, ...] = (200, 500, 1000)) -> Result:
    """Time to running of N idle-runtime instances with golem-api, against the same requests in bare aiohttp.

    Each run and N: a fresh node of N providers for each side (the bare requests first, then ``Golem`` in
    ``bench.scale_child``), so both find the same market.
    """
    golem_s: dict[int, list[float]] = {n: [] for n in sizes}
    bare_s: dict[int, list[float]] = {n: [] for n in sizes}
    lost: list[float] = []
    sent: dict[str, int] = {}
    for _ in range(runs):
        for n in sizes:
            budget = run_budget(n, _START_BOUND + _STOP_BOUND)
            async with served_node(n, "idle", timeout=300, balance=budget) as node:
                bare = await run_json(_bare_argv(node, n, budget), timeout=_START_BOUND)
            bare_s[n].append(bare["running_after_s"])
            sent = bare["sent"]
            async with served_node(n, "idle", timeout=300, balance=budget) as node:
                golem = await run_json(_child_argv(node, n, 0, 1.0, budget), timeout=_START_BOUND + _STOP_BOUND)
            golem_s[n].append(golem["running_after_s"])
            lost.append(float(golem["lost"]))
    ratios = [
        Figure(f"N={n} golem-api ÷ bare", "×", [g / b for g, b in zip(golem_s[n], bare_s[n], strict=True)])
        for n in sizes
    ]
    kinds = ", ".join(f"{kind} {count}" for kind, count in sent.items())
    return Result(
        key="running_against_bare",
        title="Time to running against bare aiohttp",
        figures=[
            *(Figure(f"N={n} golem-api", "s", golem_s[n]) for n in sizes),
            *(Figure(f"N={n} bare aiohttp", "s", bare_s[n]) for n in sizes),
            *ratios,
            Figure("instances lost", "", lost),
        ],
        targets=[
            *(Target(f"N={n} golem-api ÷ bare", "at most", 1.5) for n in sizes),
            Target("instances lost", "at most", 0.0),
        ],
        notes=(
            "For each N, on a fresh node of N idle-runtime providers each: `bench.bare_running` makes the requests "
            "of starting N instances with bare aiohttp (allocation, demand decorations and subscription, offers "
            "read by long-poll, a counter-proposal per offer, on each Draft an agreement created, confirmed, "
            "waited for, an activity, one `deploy` + `start` batch and its results polled; no retries, checks, "
            "events or scoring), then `Golem.run_service` to `wait_running` in `bench.scale_child` on another "
            f"fresh node. The bare side's requests at the largest N: {kinds}. The bare time includes the "
            "allocation and the demand (golem-api makes them in `Golem`'s start, outside its time)."
        ),
    )
