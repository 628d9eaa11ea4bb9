"""The local market in-process (no sockets): matching, negotiation, agreements, and the local providers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from golem_api.errors import ConfigurationError
from golem_local.config import LocalNetworkConfig, ProviderSpec
from golem_local.identity import NodeIdentities, is_node_id, new_node_id
from golem_local.market import LocalMarket
from golem_local.market_model import (
    AgreementEventRecord,
    AgreementRecord,
    AgreementState,
    LocalMarketTimeoutError,
    MarketBadRequestError,
    MarketConflictError,
    MarketEvent,
    MarketGoneError,
    MarketNotFoundError,
    ProposalEventRecord,
    ProposalRecord,
    ProposalRejectionRecord,
    ProposalState,
)
from golem_local.provider import LocalProvider
from golem_local.provider_port import InProcessMarket

PLATFORM = "erc20-holesky-tglm"
REQUESTOR = new_node_id()
PROVIDER = new_node_id()


class FakeNow:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.moment = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.moment

    def ms(self, seconds_ahead: float = 0) -> int:
        return int((self.moment + timedelta(seconds=seconds_ahead)).timestamp() * 1000)


def demand_properties(now: FakeNow | None = None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    ahead = (now or FakeNow()).ms(600)
    return {
        "golem.srv.comp.expiration": ahead,
        "golem.node.debug.subnet": "public",
        f"golem.com.payment.platform.{PLATFORM}.address": REQUESTOR,
        "golem.com.payment.chosen-platform": PLATFORM,
        **(extra or {}),
    }


OFFER = {"golem.runtime.name": "vm", "golem.inf.mem.gib": 4.0, "golem.node.id.name": "p"}
OFFER_CONSTRAINTS = "(golem.node.debug.subnet=public)"
DEMAND_CONSTRAINTS = "(&(golem.runtime.name=vm)(golem.inf.mem.gib>=2))"


def later() -> datetime:
    return datetime.now(timezone.utc) + timedelta(minutes=1)


async def events(market: LocalMarket, sub_id: str, timeout: float = 0.0) -> list[MarketEvent]:
    return await market.collect_events(sub_id, timeout=timeout, max_events=100)


async def proposals(market: LocalMarket, sub_id: str, timeout: float = 0.0) -> list[ProposalRecord]:
    return [e.proposal for e in await events(market, sub_id, timeout) if isinstance(e, ProposalEventRecord)]


async def negotiate(market: LocalMarket, now: FakeNow | None = None) -> tuple[str, str, ProposalRecord]:
    """Offer, demand, Initial, requestor counter, provider counter: (demand id, offer id, provider's Draft)."""
    offer_id = market.subscribe_offer(PROVIDER, OFFER, OFFER_CONSTRAINTS)
    demand_id = market.subscribe_demand(REQUESTOR, demand_properties(now), DEMAND_CONSTRAINTS)
    (initial,) = await proposals(market, demand_id)
    ours = market.counter_proposal(demand_id, initial.proposal_id, demand_properties(now), DEMAND_CONSTRAINTS)
    (theirs,) = await proposals(market, offer_id)
    market.counter_proposal(offer_id, theirs.proposal_id, OFFER, OFFER_CONSTRAINTS, by=PROVIDER)
    (draft,) = await proposals(market, demand_id)
    assert draft.prev_proposal_id == ours
    return demand_id, offer_id, draft


async def approved_agreement(market: LocalMarket) -> AgreementRecord:
    _demand_id, _offer_id, draft = await negotiate(market)
    agreement_id = market.create_agreement(REQUESTOR, draft.proposal_id, later())
    market.confirm(agreement_id, by=REQUESTOR)
    market.approve(agreement_id, by=PROVIDER)
    return market.get_agreement(agreement_id)


# -- matching -------------------------------------------------------------------------------------------------


async def test_matching_is_two_way() -> None:
    market = LocalMarket()
    market.subscribe_offer(PROVIDER, OFFER, "(golem.com.payment.chosen-platform=erc20-*)")
    fits = market.subscribe_demand(REQUESTOR, demand_properties(), DEMAND_CONSTRAINTS)
    offer_refuses = market.subscribe_demand(
        REQUESTOR, demand_properties(extra={"golem.com.payment.chosen-platform": "zksync"}), DEMAND_CONSTRAINTS
    )
    demand_refuses = market.subscribe_demand(REQUESTOR, demand_properties(), "(golem.inf.mem.gib>=8)")

    (initial,) = await proposals(market, fits)
    assert initial.state is ProposalState.INITIAL
    assert initial.issuer_id == PROVIDER
    assert initial.properties == OFFER
    assert await proposals(market, offer_refuses) == []
    assert await proposals(market, demand_refuses) == []


async def test_an_offer_published_later_reaches_live_demands_only() -> None:
    market = LocalMarket()
    live = market.subscribe_demand(REQUESTOR, demand_properties(), DEMAND_CONSTRAINTS)
    withdrawn = market.subscribe_demand(REQUESTOR, demand_properties(), DEMAND_CONSTRAINTS)
    market.unsubscribe_demand(withdrawn)
    market.subscribe_offer(PROVIDER, OFFER, OFFER_CONSTRAINTS)
    assert [p.issuer_id for p in await proposals(market, live)] == [PROVIDER]


async def test_an_offer_and_a_demand_of_the_same_identity_never_match() -> None:
    market = LocalMarket()
    market.subscribe_offer(REQUESTOR, OFFER, OFFER_CONSTRAINTS)
    demand_id = market.subscribe_demand(REQUESTOR, demand_properties(), DEMAND_CONSTRAINTS)
    assert await proposals(market, demand_id) == []


async def test_bad_constraints_and_past_expiration_are_refused_with_400() -> None:
    market = LocalMarket()
    with pytest.raises(MarketBadRequestError, match="position"):
        market.subscribe_demand(REQUESTOR, demand_properties(), "(golem.inf.mem.gib=>4)")
    with pytest.raises(MarketBadRequestError, match="in the past"):
        market.subscribe_demand(REQUESTOR, {"golem.srv.comp.expiration": 1}, "")


# -- negotiation ----------------------------------------------------------------------------------------------


async def test_the_full_negotiation_sequence_ends_in_a_terminated_agreement() -> None:
    market = LocalMarket()
    ended: list[tuple[str, str]] = []

    async def observer(agreement: AgreementRecord, terminator: str) -> None:
        ended.append((agreement.agreement_id, terminator))

    market.add_termination_observer(observer)
    demand_id, offer_id, draft = await negotiate(market)
    assert draft.state is ProposalState.DRAFT
    assert draft.issuer_id == PROVIDER

    valid_to = datetime.now(timezone.utc) + timedelta(minutes=1)
    agreement_id = market.create_agreement(REQUESTOR, draft.proposal_id, valid_to)
    assert market.get_agreement(agreement_id).state is AgreementState.PROPOSAL
    assert market.get_proposal(demand_id, draft.proposal_id).state is ProposalState.ACCEPTED

    market.confirm(agreement_id, by=REQUESTOR)
    (event,) = await events(market, offer_id)
    assert isinstance(event, AgreementEventRecord)
    assert event.agreement.state is AgreementState.PENDING
    assert event.agreement.offer.proposal_id == draft.proposal_id

    market.approve(event.agreement.agreement_id, by=PROVIDER)
    approved = await market.wait_for_approval(agreement_id, timeout=1, by=REQUESTOR)
    assert approved.state is AgreementState.APPROVED
    assert approved.approved_date is not None

    await market.terminate(agreement_id, REQUESTOR, {"message": "done"})
    assert market.get_agreement(agreement_id).state is AgreementState.TERMINATED
    assert ended == [(agreement_id, "Requestor")]
    for identity in (REQUESTOR, PROVIDER):
        log = await market.agreement_events(identity, after=None, timeout=0, max_events=10)
        assert [e.event_type for e in log] == ["AgreementApprovedEvent", "AgreementTerminatedEvent"]
        assert log[1].terminator == "Requestor"
        assert log[1].reason == {"message": "done"}
        assert await market.agreement_events(identity, after=log[0].event_date, timeout=0, max_events=10) == [log[1]]


async def test_an_initial_proposal_cannot_become_an_agreement() -> None:
    market = LocalMarket()
    market.subscribe_offer(PROVIDER, OFFER, OFFER_CONSTRAINTS)
    demand_id = market.subscribe_demand(REQUESTOR, demand_properties(), DEMAND_CONSTRAINTS)
    (initial,) = await proposals(market, demand_id)
    with pytest.raises(MarketBadRequestError, match="no negotiation took place: counter at least once"):
        market.create_agreement(REQUESTOR, initial.proposal_id, later())


async def test_own_proposals_and_second_agreements_are_refused() -> None:
    market = LocalMarket()
    _demand_id, _offer_id, draft = await negotiate(market)
    assert draft.prev_proposal_id is not None
    later = datetime.now(timezone.utc) + timedelta(minutes=1)
    with pytest.raises(MarketBadRequestError, match="your own"):
        market.create_agreement(REQUESTOR, draft.prev_proposal_id, later)
    market.create_agreement(REQUESTOR, draft.proposal_id, later)
    with pytest.raises(MarketConflictError, match="already has agreement"):
        market.create_agreement(REQUESTOR, draft.proposal_id, later)
    with pytest.raises(MarketBadRequestError, match="not found"):
        market.create_agreement(PROVIDER, draft.proposal_id, later)


async def test_countering_twice_is_gone_and_a_counter_that_no_longer_matches_is_refused() -> None:
    market = LocalMarket()
    market.subscribe_offer(PROVIDER, OFFER, OFFER_CONSTRAINTS)
    demand_id = market.subscribe_demand(REQUESTOR, demand_properties(), DEMAND_CONSTRAINTS)
    (initial,) = await proposals(market, demand_id)
    with pytest.raises(MarketBadRequestError, match="does not match"):
        market.counter_proposal(demand_id, initial.proposal_id, demand_properties(), "(golem.inf.mem.gib>=64)")
    market.counter_proposal(demand_id, initial.proposal_id, demand_properties(), DEMAND_CONSTRAINTS)
    with pytest.raises(MarketGoneError, match="already countered"):
        market.counter_proposal(demand_id, initial.proposal_id, demand_properties(), DEMAND_CONSTRAINTS)


async def test_a_rejected_proposal_reaches_its_issuer_with_the_reason() -> None:
    market = LocalMarket()
    demand_id, offer_id, draft = await negotiate(market)
    market.reject_proposal(demand_id, draft.proposal_id, {"message": "too dear"}, by=REQUESTOR)
    (event,) = await events(market, offer_id)
    assert isinstance(event, ProposalRejectionRecord)
    assert (event.proposal_id, event.reason) == (draft.proposal_id, {"message": "too dear"})
    with pytest.raises(MarketGoneError):
        market.reject_proposal(demand_id, draft.proposal_id)
    with pytest.raises(MarketBadRequestError, match="Rejected"):
        market.create_agreement(REQUESTOR, draft.proposal_id, later())


# -- agreements -----------------------------------------------------------------------------------------------


async def test_terminating_a_pending_agreement_conflicts_and_terminating_twice_is_gone() -> None:
    market = LocalMarket()
    _demand_id, _offer_id, draft = await negotiate(market)
    agreement_id = market.create_agreement(REQUESTOR, draft.proposal_id, later())
    market.confirm(agreement_id)
    with pytest.raises(MarketGoneError, match="Pending"):
        market.confirm(agreement_id)
    with pytest.raises(MarketConflictError, match="Pending"):
        await market.terminate(agreement_id, REQUESTOR)
    market.approve(agreement_id, by=PROVIDER)
    await market.terminate(agreement_id, PROVIDER, {"message": "bye"})
    with pytest.raises(MarketGoneError, match=r"^Terminated"):
        await market.terminate(agreement_id, REQUESTOR)
    assert market.get_agreement(agreement_id).terminator == "Provider"


async def test_waiting_for_approval_times_out_with_408_and_a_rejection_is_410() -> None:
    market = LocalMarket()
    _demand_id, _offer_id, draft = await negotiate(market)
    agreement_id = market.create_agreement(REQUESTOR, draft.proposal_id, later())
    with pytest.raises(MarketConflictError, match="not confirmed"):
        await market.wait_for_approval(agreement_id, timeout=0.01)
    market.confirm(agreement_id)
    with pytest.raises(LocalMarketTimeoutError):
        await market.wait_for_approval(agreement_id, timeout=0.01)
    market.reject_agreement(agreement_id, {"message": "no"}, by=PROVIDER)
    with pytest.raises(MarketGoneError, match=r"^Rejected"):
        await market.wait_for_approval(agreement_id, timeout=1)


async def test_cancelling_ends_the_agreement_for_both_parties() -> None:
    market = LocalMarket()
    _demand_id, _offer_id, draft = await negotiate(market)
    agreement_id = market.create_agreement(REQUESTOR, draft.proposal_id, later())
    with pytest.raises(MarketBadRequestError, match="only the requestor"):
        market.cancel(agreement_id, by=PROVIDER)
    market.cancel(agreement_id, {"message": "changed my mind"}, by=REQUESTOR)
    with pytest.raises(MarketGoneError, match=r"^Cancelled"):
        market.approve(agreement_id)
    (event,) = await market.agreement_events(PROVIDER, after=None, timeout=0, max_events=10)
    assert (event.event_type, event.reason) == ("AgreementCancelledEvent", {"message": "changed my mind"})


async def test_demands_and_agreements_expire() -> None:
    now = FakeNow()
    market = LocalMarket(now=now)
    demand_id, _offer_id, draft = await negotiate(market, now)
    agreement_id = market.create_agreement(REQUESTOR, draft.proposal_id, now() + timedelta(seconds=30))
    now.moment += timedelta(seconds=31)
    assert market.get_agreement(agreement_id).state is AgreementState.EXPIRED
    with pytest.raises(MarketGoneError, match=r"^Expired"):
        market.confirm(agreement_id)

    now.moment += timedelta(minutes=10)  # past the demand's golem.srv.comp.expiration
    with pytest.raises(MarketNotFoundError):
        await events(market, demand_id)
    with pytest.raises(MarketGoneError):
        market.unsubscribe_demand(demand_id)
    assert market.get_proposal(demand_id, draft.proposal_id).state is ProposalState.ACCEPTED


async def test_unknown_ids_are_404_and_unsubscribing_twice_is_410() -> None:
    market = LocalMarket()
    demand_id = market.subscribe_demand(REQUESTOR, demand_properties(), DEMAND_CONSTRAINTS)
    with pytest.raises(MarketNotFoundError, match="nope"):
        await events(market, "nope")
    with pytest.raises(MarketNotFoundError):
        await market.collect_events(demand_id, timeout=0, max_events=1, by=PROVIDER)
    with pytest.raises(MarketNotFoundError, match="agreement nope"):
        market.get_agreement("nope")
    market.unsubscribe_demand(demand_id)
    with pytest.raises(MarketNotFoundError, match="unsubscribed already"):
        market.unsubscribe_demand(demand_id)


async def test_a_waiting_reader_learns_at_once_that_its_demand_was_withdrawn() -> None:
    market = LocalMarket()
    demand_id = market.subscribe_demand(REQUESTOR, demand_properties(), DEMAND_CONSTRAINTS)

    reader = asyncio.create_task(market.collect_events(demand_id, timeout=30, max_events=1))
    await asyncio.sleep(0)  # one turn of the loop: the reader is now waiting (a yield, not a delay)
    assert not reader.done()
    market.unsubscribe_demand(demand_id)
    with pytest.raises(MarketNotFoundError, match="it was unsubscribed"):
        await asyncio.wait_for(reader, timeout=5)


# -- local providers ------------------------------------------------------------------------------------------


class RecordingBilling:
    def __init__(self) -> None:
        self.ended: list[tuple[str, str]] = []

    async def agreement_ended(self, agreement_id: str, provider_id: str) -> None:
        self.ended.append((agreement_id, provider_id))


@pytest.fixture
async def provider() -> AsyncIterator[LocalProvider]:
    market = LocalMarket()
    running = LocalProvider(
        ProviderSpec(name="p1"),
        InProcessMarket(market, PROVIDER),
        payment_platform=PLATFORM,
        billing=RecordingBilling(),
    )
    await running.start()
    yield running
    await running.aclose()


def market_of(provider: LocalProvider) -> LocalMarket:
    """The local market a provider of the ``provider`` fixture runs on."""
    port = provider.market
    assert isinstance(port, InProcessMarket)
    return port.market


async def counter_initial(market: LocalMarket, demand_id: str, extra: Mapping[str, Any] | None = None) -> str:
    (initial,) = await proposals(market, demand_id, timeout=5)
    properties = demand_properties(extra=extra)
    return market.counter_proposal(demand_id, initial.proposal_id, properties, DEMAND_CONSTRAINTS)


async def test_the_provider_publishes_what_real_providers_publish(provider: LocalProvider) -> None:
    market = market_of(provider)
    demand_id = market.subscribe_demand(REQUESTOR, demand_properties(), DEMAND_CONSTRAINTS)
    (initial,) = await proposals(market, demand_id, timeout=5)
    props = initial.properties
    assert props["golem.node.id.name"] == "p1"
    assert props[f"golem.com.payment.platform.{PLATFORM}.address"] == provider.node_id
    assert props["golem.com.usage.vector"] == ["golem.usage.duration_sec", "golem.usage.cpu_sec"]
    assert props["golem.com.pricing.model.linear.coeffs"] == [0.0001, 0.0002, 0.001]
    assert all(isinstance(c, float) for c in props["golem.com.pricing.model.linear.coeffs"])
    assert props["golem.srv.caps.multi-activity"] is True
    assert f"(golem.com.payment.platform.{PLATFORM}.address=*)" in initial.constraints


async def test_the_provider_counters_approves_is_busy_and_offers_again_once_billed(provider: LocalProvider) -> None:
    market = market_of(provider)
    billing = provider.billing
    assert isinstance(billing, RecordingBilling)
    first = market.subscribe_demand(REQUESTOR, demand_properties(), DEMAND_CONSTRAINTS)
    ours = await counter_initial(market, first, {"golem.com.scheme.payu.debit-note.interval-sec?": 90})
    (draft,) = await proposals(market, first, timeout=5)
    assert (draft.state, draft.prev_proposal_id) == (ProposalState.DRAFT, ours)
    assert draft.properties["golem.com.scheme.payu.debit-note.interval-sec?"] == 90

    agreement_id = market.create_agreement(REQUESTOR, draft.proposal_id, later())
    market.confirm(agreement_id)
    await market.wait_for_approval(agreement_id, timeout=5)
    assert provider.agreement_id == agreement_id

    second = market.subscribe_demand(REQUESTOR, demand_properties(), DEMAND_CONSTRAINTS)
    refused = await counter_initial(market, second)
    (rejection,) = await events(market, second, timeout=5)
    assert isinstance(rejection, ProposalRejectionRecord)
    assert rejection.proposal_id == refused
    assert rejection.reason == {"message": f"busy: already serving agreement {agreement_id}"}

    await market.terminate(agreement_id, REQUESTOR, {"message": "done"})
    offered_again = await proposals(market, second, timeout=5)  # the fresh offer, published after billing
    assert [p.state for p in offered_again] == [ProposalState.INITIAL]
    assert billing.ended == [(agreement_id, provider.node_id)]
    assert not provider.busy


async def test_the_provider_refuses_a_payment_platform_it_is_not_paid_on(provider: LocalProvider) -> None:
    market = market_of(provider)
    demand_id = market.subscribe_demand(REQUESTOR, demand_properties(), DEMAND_CONSTRAINTS)
    await counter_initial(market, demand_id, {"golem.com.payment.chosen-platform": "erc20-polygon-glm"})
    (rejection,) = await events(market, demand_id, timeout=5)
    assert isinstance(rejection, ProposalRejectionRecord)
    assert rejection.reason is not None
    assert "no common payment platform" in rejection.reason["message"]
    assert "erc20-polygon-glm" in rejection.reason["message"]


async def test_the_provider_ends_an_agreement_once_its_demand_expires(provider: LocalProvider) -> None:
    market = market_of(provider)
    billing = provider.billing
    assert isinstance(billing, RecordingBilling)
    watcher = market.subscribe_demand(REQUESTOR, demand_properties(), DEMAND_CONSTRAINTS)
    await proposals(market, watcher, timeout=5)
    soon = {"golem.srv.comp.expiration": market.now_ms() + 1000}
    demand_id = market.subscribe_demand(REQUESTOR, demand_properties(extra=soon), DEMAND_CONSTRAINTS)
    await counter_initial(market, demand_id, soon)
    (draft,) = await proposals(market, demand_id, timeout=5)
    agreement_id = market.create_agreement(REQUESTOR, draft.proposal_id, later())
    market.confirm(agreement_id)
    await market.wait_for_approval(agreement_id, timeout=5)
    (approved,) = await market.agreement_events(REQUESTOR, after=None, timeout=0, max_events=10)

    (ended,) = await market.agreement_events(REQUESTOR, after=approved.event_date, timeout=5, max_events=10)
    assert (ended.event_type, ended.terminator) == ("AgreementTerminatedEvent", "Provider")
    assert ended.reason is not None
    assert "expired" in ended.reason["message"]
    assert [p.state for p in await proposals(market, watcher, timeout=5)] == [ProposalState.INITIAL]
    assert billing.ended == [(agreement_id, provider.node_id)]


# -- configuration and identities -----------------------------------------------------------------------------


def test_default_network_has_three_distinct_providers_with_slightly_different_prices() -> None:
    config = LocalNetworkConfig()
    assert [p.name for p in config.providers] == ["local-provider-1", "local-provider-2", "local-provider-3"]
    assert len({p.price_cpu_sec for p in config.providers}) == 3
    assert config.providers[0].pricing.cost_of({"golem.usage.duration_sec": 10}) == Decimal("0.002")


def test_with_providers_sets_network_and_provider_fields() -> None:
    config = LocalNetworkConfig.with_providers(2, cpu_threads=8, requestor_balance=5, subnet="dev")
    assert [p.cpu_threads for p in config.providers] == [8, 8]
    assert [p.subnet for p in config.providers] == ["dev", "dev"]
    assert (config.requestor_balance, config.subnet) == (Decimal(5), "dev")
    with pytest.raises(ConfigurationError, match="cpu_thread"):
        LocalNetworkConfig.with_providers(1, cpu_thread=8)
    with pytest.raises(ConfigurationError, match="no provider is on subnet 'dev'"):
        LocalNetworkConfig(subnet="dev")


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("name", "", "name must be a non-empty string, not ''"),
        ("cpu_threads", 0, "cpu_threads must be a positive number, not 0"),
        ("mem_gib", -1.0, "mem_gib must be a positive number, not -1.0"),
        ("price_cpu_sec", "-0.1", "price_cpu_sec must be an amount of zero or more, not -0.1"),
        ("start_price", "lots", "start_price must be an amount (a Decimal, an int or a decimal string), not 'lots'"),
        ("debit_note_interval_sec", 1.5, "debit_note_interval_sec must be a whole number, not 1.5"),
    ],
)
def test_bad_provider_settings_name_the_value(field: str, value: object, shown: str) -> None:
    settings: dict[str, Any] = {"name": "p", field: value}
    with pytest.raises(ConfigurationError) as info:
        ProviderSpec(**settings)
    assert str(info.value) == shown


def test_provider_names_must_be_unique() -> None:
    with pytest.raises(ConfigurationError, match="'p'"):
        LocalNetworkConfig(providers=(ProviderSpec(name="p"), ProviderSpec(name="p")))


def test_node_ids_are_addresses_stable_within_a_run() -> None:
    ids = NodeIdentities()
    assert is_node_id(ids.node_id("a"))
    assert ids.node_id("a") == ids.node_id("a") != ids.node_id("b")
    assert NodeIdentities().node_id("a") != ids.node_id("a")


async def test_a_subscriptions_events_are_dropped_once_its_reader_has_taken_them() -> None:
    market = LocalMarket()
    demand_id = market.subscribe_demand(REQUESTOR, demand_properties(), DEMAND_CONSTRAINTS)
    for number in range(3):
        market.subscribe_offer(PROVIDER, {**OFFER, "golem.node.id.name": f"p{number}"}, OFFER_CONSTRAINTS)
    log = market._subscriptions[demand_id].events
    assert len(log) == 3

    assert len(await proposals(market, demand_id)) == 3

    assert len(log) == 0
    assert await proposals(market, demand_id) == []
