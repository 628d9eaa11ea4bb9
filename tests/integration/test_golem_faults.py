"""Bad input and faults: each gives a clear GolemError, and nothing hangs."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from golem_api import (
    AuthenticationError,
    ConfigurationError,
    ConstraintSyntaxError,
    CustomPayload,
    Golem,
    GolemTimeoutError,
    InsufficientFundsError,
    LocalNetworkConfig,
    LocalNode,
    MarketError,
    NodeUnreachableError,
    VmPayload,
)
from golem_api.events import NoOffersWarning

pytestmark = pytest.mark.integration


@pytest.fixture
async def node() -> AsyncIterator[LocalNode]:
    async with LocalNode(LocalNetworkConfig.with_providers(1)) as running:
        yield running


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_wrong_app_key_is_refused_with_401(node: LocalNode) -> None:
    with pytest.raises(AuthenticationError) as info:
        async with Golem(budget=1, app_key="not-the-key", api_url=node.url):
            pass
    assert info.value.status == 401
    assert "/me" in str(info.value)
    assert "YAGNA_APPKEY" in str(info.value)


async def test_unreachable_node_fails_fast_and_names_the_url() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(NodeUnreachableError) as info:
        # The bound is the assertion: a node that does not answer must not keep the user waiting.
        await asyncio.wait_for(Golem(budget=1, app_key="k", api_url=url).__aenter__(), timeout=5)
    assert url in str(info.value)
    assert info.value.url.startswith(url)


@pytest.mark.slow  # over a second of real processes and waits (the quick run keeps its minute)
async def test_demand_that_no_offer_matches_warns_and_then_fails_clearly() -> None:
    async with Golem(budget=1, local_network=LocalNetworkConfig.with_providers(1)) as golem:
        demand = await golem.create_demand(VmPayload(min_mem_gib=4096), no_offers_warning_after=0.2)
        warning = await golem.bus.wait_for(NoOffersWarning, timeout=10)
        assert "golem.inf.mem.gib>=4096" in warning.constraints
        with pytest.raises(GolemTimeoutError) as info:  # one name catches every timeout golem-api raises
            await demand.agreement(timeout=0.5)
        assert isinstance(info.value, MarketError)
        assert info.value.timeout == 0.5
        assert "0 offers" in str(info.value)
        assert "golem.inf.mem.gib>=4096" in str(info.value)


async def test_budget_larger_than_the_account_is_refused_with_the_figures() -> None:
    network = LocalNetworkConfig.with_providers(1, requestor_balance=Decimal(50))
    with pytest.raises(InsufficientFundsError) as info:
        async with Golem(budget=1000, local_network=network):
            pass
    message = str(info.value)
    assert "1000" in message
    assert "50" in message
    assert info.value.requested == Decimal(1000)


async def test_malformed_constraint_points_at_the_position() -> None:
    async with Golem(budget=1, local_network=LocalNetworkConfig.with_providers(1)) as golem:
        with pytest.raises(ConstraintSyntaxError) as info:
            await golem.create_demand(CustomPayload(constraints=("(golem.inf.mem.gib=>4)",)))
    assert info.value.position == 18
    assert "=>" in str(info.value)


@pytest.mark.parametrize("budget", [0, -1, "lots", float("nan"), True])
def test_bad_budget_is_refused_before_anything_starts(budget: object) -> None:
    with pytest.raises(ConfigurationError, match="budget"):
        Golem(budget=budget)  # type: ignore[arg-type]


def test_golem_can_be_created_outside_a_running_loop() -> None:
    golem = Golem(budget=1)

    async def use() -> Decimal:
        async with golem:
            return golem.spent

    assert asyncio.run(use()) == Decimal(0)
