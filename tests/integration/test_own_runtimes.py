"""A runtime of the user's own, defined here, run by a local provider that names it.

``Upper`` answers each ``run`` with its arguments in capitals, counts the characters it turned in the usage
counter ``golem.usage.custom.chars`` (priced by the provider's ``ProviderSpec.counter_prices``), and crashes
on ``boom``. The requestor sees its output, its counter in ``get_usage()`` and in the cost, and a crash as the
command's error; an unknown runtime name, a failing self-test and an entry point of an installed distribution
are each checked where they matter (node start, lookup).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from golem_api import CommandExecutionError, CustomPayload, Golem, LocalNetworkConfig, Payload, ProviderSpec, Service
from golem_local.node import LocalNode
from golem_local.runtime.base import OfferTemplate, OutputSink, RunProcess
from golem_local.runtime.idle import IdleRuntime
from golem_local.runtime.registry import ENTRY_POINT_GROUP, RuntimeContext, RuntimeDescriptor, RuntimeRegistry
from golem_shared.errors import LocalNodeError

pytestmark = pytest.mark.integration

BOUND = 30.0
CHARS = "golem.usage.custom.chars"


class Upper(IdleRuntime):
    """Capitals of the arguments; ``boom`` crashes."""

    def __init__(self) -> None:
        self.chars = 0

    async def run_command(self, process: RunProcess, sink: OutputSink) -> int:
        if process.entry_point == "boom":
            raise ValueError("the upper runtime blew up")
        text = " ".join(process.args)
        self.chars += len(text)
        sink("stdout", text.upper().encode())
        return 0

    def counters(self) -> Mapping[str, float]:
        return {CHARS: float(self.chars)}

    def offer(self) -> OfferTemplate:
        return OfferTemplate(properties={"golem.runtime.version": "2.0.0"})


class Broken(IdleRuntime):
    async def self_test(self) -> None:
        raise LocalNodeError("the broken runtime needs a GPU; this machine has none")


UPPER = RuntimeDescriptor(
    name="upper", factory=lambda _context: Upper(), version="2.0.0", description="capitals", counters={CHARS: "0.01"}
)
BROKEN = RuntimeDescriptor(name="broken", factory=lambda _context: Broken())


def network(runtime: str = "upper") -> LocalNetworkConfig:
    provider = ProviderSpec(name="own", runtime=runtime, counter_prices={CHARS: "0.5"} if runtime == "upper" else {})
    return LocalNetworkConfig(providers=(provider,), runtimes=(UPPER, BROKEN))


class UpperService(Service):
    @staticmethod
    async def get_payload() -> Payload:
        return CustomPayload(constraints=("(golem.runtime.name=upper)",))


async def run_once(commands: Sequence[tuple[str, ...]]) -> dict[str, Any]:
    """Run ``commands`` in one service instance on the ``upper`` provider; what the service saw."""
    seen: dict[str, Any] = {}
    done = asyncio.Event()

    class Once(UpperService):
        async def run(self) -> Any:
            try:
                script = self._ctx.new_script()
                runs = [script.run(*command) for command in commands]
                yield script
                seen["stdout"] = [(await run).stdout for run in runs]
            except CommandExecutionError as exc:
                seen["error"] = str(exc)
            seen["usage"] = (await self._ctx.get_usage()).current_usage
            seen["cost"] = await self._ctx.get_cost()
            seen["offer"] = dict(self._ctx.agreement.offer_properties)  # type: ignore[attr-defined]
            done.set()

    async with Golem(budget=1.0, local_network=network(), invoice_timeout=10) as golem:
        await golem.run_service(Once)
        await asyncio.wait_for(done.wait(), BOUND)
    return seen


async def test_a_provider_runs_the_runtime_it_names_and_prices_its_counter() -> None:
    seen = await run_once([("echo", "hello", "world")])
    assert seen["stdout"] == ["HELLO WORLD"]
    assert seen["usage"][CHARS] == 11.0
    assert seen["offer"]["golem.runtime.name"] == "upper"
    assert seen["offer"]["golem.com.usage.vector"] == ["golem.usage.duration_sec", "golem.usage.cpu_sec", CHARS]
    assert seen["offer"]["golem.com.pricing.model.linear.coeffs"][2] == 0.5  # counter_prices beats the default
    assert seen["cost"] >= Decimal("5.5")  # 11 characters at 0.5


async def test_a_runtime_crashing_mid_command_fails_that_command_saying_so() -> None:
    seen = await run_once([("boom",)])
    assert "the runtime crashed running boom" in seen["error"]
    assert "the upper runtime blew up" in seen["error"]


async def test_an_unknown_runtime_name_stops_the_node_at_start_naming_it() -> None:
    with pytest.raises(LocalNodeError, match=r"provider own: no runtime is called 'gpu'; known runtimes: .*upper"):
        async with LocalNode(network("gpu")):
            pass


async def test_a_runtime_failing_its_self_test_stops_the_node_at_start() -> None:
    with pytest.raises(LocalNodeError, match=r"runtime 'broken' failed its self-test.*needs a GPU"):
        async with LocalNode(network("broken")):
            pass


async def test_a_price_for_a_counter_the_runtime_does_not_report_stops_the_node() -> None:
    spec = ProviderSpec(name="own", runtime="test-counters", counter_prices={CHARS: "1"})
    with pytest.raises(LocalNodeError, match=rf"prices {CHARS}, which its runtime 'test-counters' does not report"):
        async with LocalNode(LocalNetworkConfig(providers=(spec,))):
            pass


@pytest.fixture
def installed_runtime(tmp_path: Path) -> Iterator[str]:
    """A distribution on ``sys.path`` announcing ``upper_plugin:DESCRIPTOR`` in the runtimes' entry-point group."""
    (tmp_path / "upper_plugin.py").write_text(
        "from golem_local.runtime.idle import IdleRuntime\n"
        "from golem_local.runtime.registry import RuntimeDescriptor\n"
        "DESCRIPTOR = RuntimeDescriptor(name='plugged', factory=lambda c: IdleRuntime(), version='3.1',"
        " description='from an entry point')\n"
        "WRONG = RuntimeDescriptor(name='other', factory=lambda c: IdleRuntime())\n"
    )
    info = tmp_path / "upper_plugin-3.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: upper-plugin\nVersion: 3.1\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nplugged = upper_plugin:DESCRIPTOR\nmisnamed = upper_plugin:WRONG\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield "plugged"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("upper_plugin", None)


def test_an_installed_distribution_announces_a_runtime_through_the_entry_point_group(installed_runtime: str) -> None:
    registry = RuntimeRegistry()
    assert {"plugged", "misnamed"} <= set(registry.names())
    descriptor = registry.get(installed_runtime)
    assert (descriptor.version, descriptor.description) == ("3.1", "from an entry point")
    assert isinstance(descriptor.factory(RuntimeContext(activity_id="a", work_dir=Path("/nonexistent"))), IdleRuntime)
    with pytest.raises(LocalNodeError, match=r"entry point 'misnamed' .* describes runtime 'other'"):
        registry.get("misnamed")


async def test_a_node_runs_a_runtime_found_through_an_entry_point(installed_runtime: str) -> None:
    spec = ProviderSpec(name="p", runtime=installed_runtime)
    async with LocalNode(LocalNetworkConfig(providers=(spec,))) as node:
        assert node.providers[0].offer_properties(0)["golem.runtime.name"] == installed_runtime
