"""The golem-api requestor's market steps against the real yagna daemon (not the local node).

A second identity of the daemon publishes an offer; the requestor's ``RestClient`` and its ``Demand`` subscribe,
collect the ``Initial`` proposal, parse it into golem-api's models and counter it, all on the real daemon.

The daemon runs offline (see ``conftest.py``), and that sets where these tests stop: the market matches two
identities of one node locally, so the offer arrives, but a counter-proposal travels to the provider through
the network layer, which has no relay here. The provider never sees it, so no ``Draft`` comes back and no
agreement can be made: the tests check that this ends bounded and explained (an empty poll, a
``MarketError`` naming the offers seen), and that the demand is withdrawn on close.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from golem_api._rest.client import RestClient
from golem_api._rest.config import ApiConfig
from golem_api._rest.models.market import ProposalEvent
from golem_api.errors import BadRequestError, GoneError, MarketError, NotFoundError
from golem_api.events import Event, EventBus, OfferReceived, OfferRejected
from golem_api.market.negotiation import Demand
from golem_api.market.strategy import LeastExpensiveLinearPayu
from golem_shared.timestamps import utc_now
from tests.fidelity.conftest import YagnaDaemon

PLATFORM = "erc20-holesky-tglm"
CONSTRAINTS = "(&(golem.node.debug.subnet=public)(golem.runtime.name=vm))"


def demand_properties(daemon: YagnaDaemon) -> dict[str, Any]:
    return {
        "golem.srv.comp.expiration": int((time.time() + 1800) * 1000),
        "golem.node.debug.subnet": "public",
        f"golem.com.payment.platform.{PLATFORM}.address": daemon.identity,
        "golem.com.payment.protocol.version": "3",
    }


def offer_properties(daemon: YagnaDaemon) -> dict[str, Any]:
    """An offer a local provider would make: vm, linear payu pricing, paid on the same platform."""
    return {
        "golem.srv.comp.expiration": int((time.time() + 1800) * 1000),
        "golem.node.debug.subnet": "public",
        "golem.node.id.name": "yagna-provider",
        "golem.runtime.name": "vm",
        "golem.inf.mem.gib": 4.0,
        "golem.inf.cpu.threads": 2,
        "golem.com.scheme": "payu",
        "golem.com.pricing.model": "linear",
        "golem.com.usage.vector": ["golem.usage.duration_sec", "golem.usage.cpu_sec"],
        "golem.com.pricing.model.linear.coeffs": [0.0001, 0.0002, 0.0],
        f"golem.com.payment.platform.{PLATFORM}.address": daemon.provider_id,
    }


@pytest.fixture
async def rest(yagna_daemon: YagnaDaemon) -> AsyncIterator[RestClient]:
    """golem-api's REST client on the daemon, as the requestor identity."""
    async with RestClient(ApiConfig.for_node(yagna_daemon.url, yagna_daemon.app_key)) as client:
        yield client


@pytest.fixture
async def daemon_offer(yagna_daemon: YagnaDaemon) -> AsyncIterator[str]:
    """An offer published on the daemon by its provider identity, withdrawn after the test."""
    config = ApiConfig.for_node(yagna_daemon.url, yagna_daemon.provider_key)
    async with RestClient(config) as provider:
        offer_id = await provider.market.subscribe_offer(
            offer_properties(yagna_daemon), "(golem.node.debug.subnet=public)"
        )
        try:
            yield offer_id
        finally:
            await provider.market.unsubscribe_offer(offer_id)


async def test_the_rest_client_subscribes_collects_and_counters_on_the_daemon(
    yagna_daemon: YagnaDaemon, rest: RestClient, daemon_offer: str
) -> None:
    assert (await rest.identity()).identity == yagna_daemon.identity
    sub_id = await rest.market.subscribe_demand(demand_properties(yagna_daemon), CONSTRAINTS)
    try:
        events = await rest.market.collect_demand_events(sub_id, timeout=5, max_events=10)
        proposals = [e.proposal for e in events if isinstance(e, ProposalEvent)]
        assert [(p.issuer_id, p.state) for p in proposals] == [(yagna_daemon.provider_id, "Initial")]
        (initial,) = proposals
        assert initial.properties["golem.com.pricing.model.linear.coeffs"] == [0.0001, 0.0002, 0.0]

        with pytest.raises(BadRequestError, match="counter"):
            await rest.market.create_agreement(initial.proposal_id, utc_now() + timedelta(minutes=5))
        counter = {**demand_properties(yagna_daemon), "golem.com.payment.chosen-platform": PLATFORM}
        counter_id = await rest.market.counter_proposal(sub_id, initial.proposal_id, counter, CONSTRAINTS)
        assert counter_id != initial.proposal_id
        with pytest.raises(GoneError, match="already has counter proposal"):
            await rest.market.counter_proposal(sub_id, initial.proposal_id, counter, CONSTRAINTS)
        # Offline the counter never reaches the provider: no Draft comes back (online, one would).
        assert await rest.market.collect_demand_events(sub_id, timeout=1, max_events=10) == []
    finally:
        await rest.market.unsubscribe_demand(sub_id)
    with pytest.raises(NotFoundError):
        await rest.market.collect_demand_events(sub_id, timeout=0.1)


async def test_a_demand_collects_and_counters_the_daemons_offer_then_withdraws(
    yagna_daemon: YagnaDaemon, rest: RestClient, daemon_offer: str
) -> None:
    bus = EventBus()
    seen: list[Event] = []
    offer_arrived = asyncio.Event()

    def record(event: Event) -> None:
        seen.append(event)
        if isinstance(event, OfferReceived):
            offer_arrived.set()

    bus.subscribe(record)
    demand = Demand(
        rest=rest,
        bus=bus,
        strategy=LeastExpensiveLinearPayu(),
        properties=demand_properties(yagna_daemon),
        constraints=CONSTRAINTS,
        payment_platform=PLATFORM,
        expiration=utc_now() + timedelta(minutes=30),
        approval_timeout=1.0,
    )
    await demand.start()
    sub_id = demand.subscription_id
    assert sub_id is not None
    try:
        await asyncio.wait_for(offer_arrived.wait(), timeout=10)
        received = [e for e in seen if isinstance(e, OfferReceived)]
        assert [(e.provider_id, e.provider_name) for e in received] == [(yagna_daemon.provider_id, "yagna-provider")]
        assert not [e for e in seen if isinstance(e, OfferRejected)], "the strategy should accept the offer"
        # Offline, the provider never answers the counter: asking for an agreement ends bounded and explained.
        with pytest.raises(MarketError, match=r"no provider approved an agreement within 1 s \(1 offers seen\)"):
            await demand.agreement(timeout=1.0)
    finally:
        await demand.aclose()
    with pytest.raises(NotFoundError):
        await rest.market.collect_demand_events(sub_id, timeout=0.1)
