"""Benchmark 5: memory and CPU of a requestor process with many running instances (no sandboxes spawned)."""

from __future__ import annotations

import math
import sys
from decimal import ROUND_CEILING, Decimal

from bench.processes import NodeInfo, run_json, served_node
from bench.stats import Figure, Result, Target
from golem_local.config import DEFAULT_DEBIT_NOTE_INTERVAL_SEC, LocalNetworkConfig

__all__ = ["real_sandboxes", "requestor_scale", "run_budget", "running_against_bare", "scale_1000"]

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


def _child_argv(node: NodeInfo, instances: int, runs: int, window: float, budget: Decimal, *extra: str) -> list[str]:
    """``bench.scale_child`` against the served ``node``: ``instances``, ``runs`` windows of ``window`` s."""
    return [
        sys.executable,
        "-m",
        "bench.scale_child",
        *("--url", node["url"], "--app-key", node["app_key"]),
        *("--instances", str(instances), "--windows", str(runs), "--window", str(window)),
        *("--budget", str(budget)),
        *extra,
    ]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


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
    floor_windows = max(1, windows // 6)
    if windows * window >= DEFAULT_DEBIT_NOTE_INTERVAL_SEC:
        # The floor's windows cover a whole debit-note period too (the notes of instances started together come
        # in a burst once a period), so that it polls as many documents a second as the requestor did.
        floor_windows = max(floor_windows, math.ceil(DEFAULT_DEBIT_NOTE_INTERVAL_SEC / window))
    budget = run_budget(instances, _START_BOUND + (windows + floor_windows + 1) * window + _STOP_BOUND)
    async with served_node(instances, "idle", timeout=300, balance=budget) as node:
        extra = ("--node-pid", str(node["pid"]), "--floor-windows", str(floor_windows))
        figures = await run_json(
            _child_argv(node, instances, windows, window, budget, *extra),
            timeout=_START_BOUND + (windows + floor_windows + 1) * window + 300,
        )
    cpu = figures["cpu_percent"]
    rss = figures["rss_mb"]
    per_instance_kb = [1000 * (mb - figures["rss_before_mb"]) / instances for mb in rss]
    node_idle_cpu = figures["node_cpu_percent"] or [0.0]
    node_rss = figures["node_rss_mb"] or [0.0]
    # The floor: the same polling in bare aiohttp, beside the requestor in the windows after its idle ones.
    # The requestor's own: its idle CPU over the floor process's. The node's: its idle CPU over what serving
    # the floor's requests added to it (its CPU beside the floor minus its idle CPU of the last windows).
    floor_cpu = figures["floor_cpu_percent"] or [0.0]
    baseline = _mean(node_idle_cpu[-floor_windows:])
    node_floor = [max(c - baseline, 1e-9) for c in figures["node_cpu_beside_floor_percent"]] or [1e-9]
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
            Figure("node RSS", "MB", node_rss),
            Figure("node RSS, last third ÷ middle third", "×", [_drift(node_rss)]),
            Figure("polling floor: bare aiohttp CPU", "% of a core", floor_cpu),
            Figure("requestor idle CPU ÷ polling floor", "×", [_mean(cpu) / max(_mean(floor_cpu), 1e-9)]),
            Figure("node: serving the floor's polling", "% of a core", node_floor),
            Figure("node idle CPU ÷ its polling floor", "×", [_mean(node_idle_cpu) / _mean(node_floor)]),
        ],
        targets=[
            Target("instances lost", "at most", 0.0),
            Target("instances lost while idle", "at most", 0.0),
            Target("agreements ended while idle", "at most", 0.0),
            Target("requestor RSS per instance", "at most", 40.0),
            Target("requestor idle CPU ÷ polling floor", "at most", 1.5),
            Target("node idle CPU ÷ its polling floor", "at most", 1.5),
        ],
        notes=(
            f"As the scale benchmark, with {instances} instances on {instances} idle-runtime providers: from "
            "`run_service` to `wait_running`, the instances that failed to start (`ServiceRespawned`), then "
            f"{windows} idle windows of {window:g} s ({windows * window / 60:.0f} min) of the requestor (CPU, RSS "
            "above its start, per instance) and of the node process (its last as many windows of its own "
            "sampling in the same windows), the instances not running at the end of a window and the agreements "
            "that ended meanwhile. Flat means the mean of the last third of the windows over that of the middle "
            f"third near 1. Then, for {floor_windows} more windows (after one of warm-up; at least one debit-note "
            f"period of {DEFAULT_DEBIT_NOTE_INTERVAL_SEC} s, yagna's provider default and the local providers'), "
            "`bench.idle_floor` makes "
            "the same polling in bare aiohttp beside the requestor on the same activities (each one's state every "
            "5 s, the debit-note and invoice events by long-poll, each debit note read and accepted): its CPU is "
            "the requestor's polling floor; what it adds to the node's CPU (over the node's mean of the idle "
            "windows just before, as many) is the node's. The "
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


async def real_sandboxes(runs: int, sizes: tuple[int, ...] = (300, 600)) -> Result:
    """Time to running of N instances in real sandboxes (the ``vm`` runtime) for each N of ``sizes``, against
    as many sandboxes started without a network (the floor), measured just before in the same run; instances
    lost; the sandboxes' memory at N (from the floor's, all up)."""
    from bench.bench_sandbox import sandbox_starts

    golem_s: dict[int, list[float]] = {n: [] for n in sizes}
    floor_s: dict[int, list[float]] = {n: [] for n in sizes}
    lost: dict[int, list[float]] = {n: [] for n in sizes}
    pss: dict[int, list[float]] = {n: [] for n in sizes}
    dropped: dict[int, list[float]] = {n: [] for n in sizes}
    for _ in range(runs):
        for n in sizes:
            budget = run_budget(n, _START_BOUND + _STOP_BOUND)
            floor = await sandbox_starts(n)
            floor_s[n].append(floor.seconds)
            pss[n].append(floor.pss_mib_each)
            dropped[n].append(floor.available_drop_mib)
            async with served_node(n, "vm", timeout=300, balance=budget) as node:
                golem = await run_json(_child_argv(node, n, 0, 1.0, budget), timeout=_START_BOUND + _STOP_BOUND)
            golem_s[n].append(golem["running_after_s"])
            lost[n].append(float(golem["lost"]))
    figures: list[Figure] = []
    targets: list[Target] = []
    for n in sizes:
        ratio = [g / f for g, f in zip(golem_s[n], floor_s[n], strict=True)]
        figures += [
            Figure(f"N={n} golem-api time to running", "s", golem_s[n]),
            Figure(f"N={n} floor: sandboxes started alone", "s", floor_s[n]),
            Figure(f"N={n} ratio", "×", ratio),
            Figure(f"N={n} instances lost", "", lost[n]),
            Figure(f"N={n} memory of a sandbox (PSS of bubblewrap and agent)", "MiB", pss[n]),
            Figure(f"N={n} memory available dropped by", "MiB", dropped[n]),
        ]
        targets += [Target(f"N={n} ratio", "at most", 1.2), Target(f"N={n} instances lost", "at most", 0.0)]
    largest = max(sizes)
    return Result(
        key="real_sandboxes",
        title=f"Up to {largest} instances in real sandboxes",
        figures=figures,
        targets=targets,
        notes=(
            "For each N: `Golem.run_service` of N trivial instances to `wait_running` (`bench.scale_child`) on a "
            "node of N `vm` providers (a bubblewrap sandbox with its agent per activity, each within its offer's "
            "limits; the node sets up as many at once as its start gate lets, twice the cores), against the "
            "floor measured just before: as many sandboxes deployed and started with `VmRuntime` alone, twice "
            "as many at a time as there are cores (`bench_sandbox.sandbox_starts`), no network, no requestor. "
            "The memory figures are the floor's, with all N up: the proportional set size of each sandbox's "
            "processes, and the drop of the machine's available memory (the kernel's part included)."
        ),
    )
