"""The local network's payment ledger: allocations, acceptance and who ends up holding what (no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from attrs import evolve
from hypothesis import given, settings
from hypothesis import strategies as st

from golem_local.activity import (
    BATCH_RETENTION,
    BATCHES_KEPT,
    DEBIT_NOTE_INTERVAL,
    MULTI_ACTIVITY,
    ActivityHub,
    ExeUnitState,
)
from golem_local.clock import ManualTime
from golem_local.config import ProviderSpec
from golem_local.eventlog import StrictClock
from golem_local.exescript import parse_exescript
from golem_local.http import HttpError
from golem_local.ledger import DebitNoteRecord, Ledger, money
from golem_local.market import LocalMarket
from golem_local.market_model import ProposalEventRecord
from golem_local.runtime.idle import IdleRuntime
from golem_shared.timestamps import parse_timestamp, utc_now

PLATFORM = "erc20-holesky-tglm"
REQUESTOR = "0x" + "a" * 40
PROVIDER = "0x" + "b" * 40
OTHER_PROVIDER = "0x" + "c" * 40
D = Decimal


def make_ledger(balance: str = "100") -> Ledger:
    return Ledger(StrictClock(), REQUESTOR, D(balance), PLATFORM)


def note(
    ledger: Ledger, due: str, *, activity: str = "act-1", agreement: str = "agr-1", provider: str = PROVIDER
) -> DebitNoteRecord:
    return ledger.issue_debit_note(
        agreement_id=agreement,
        activity_id=activity,
        provider_id=provider,
        payee_addr=provider,
        total_amount_due=D(due),
        usage_counter_vector=[1.0, 0.0],
    )


def status_of(call: Callable[..., object], *args: object) -> tuple[int, str]:
    with pytest.raises(HttpError) as caught:
        call(*args)
    return caught.value.status, caught.value.message


def test_new_allocation_reserves_its_amount_and_reports_it() -> None:
    ledger = make_ledger("10")
    allocation = ledger.create_allocation(PLATFORM, D("6"))
    assert allocation.address == REQUESTOR
    assert allocation.payment_platform == PLATFORM
    assert (allocation.total_amount, allocation.spent_amount, allocation.remaining_amount) == (D(6), D(0), D(6))
    assert ledger.available == D("4")
    assert ledger.allocations() == [allocation]


def test_allocation_over_the_available_funds_is_refused_with_the_figures() -> None:
    ledger = make_ledger("10")
    ledger.create_allocation(PLATFORM, D("6"))
    status, message = status_of(ledger.create_allocation, PLATFORM, D("5"))
    assert status == 400
    assert "Insufficient funds to make allocation: requested 5, available 4 on erc20-holesky-tglm" in message
    assert "Release allocations or lower the budget" in message


def test_released_allocation_gives_its_unspent_amount_back() -> None:
    ledger = make_ledger("10")
    first = ledger.create_allocation(PLATFORM, D("6"))
    ledger.accept_debit_note(note(ledger, "2").document_id, D("2"), first.allocation_id)
    ledger.release_allocation(first.allocation_id)
    assert ledger.requestor_balance == D("8")
    assert ledger.available == D("8")
    assert ledger.create_allocation(PLATFORM, D("8")).total_amount == D("8")


def test_release_unknown_is_404_and_twice_is_410() -> None:
    ledger = make_ledger()
    allocation = ledger.create_allocation(None, D("1"))  # no platform: the node's default
    assert status_of(ledger.release_allocation, "nope")[0] == 404
    ledger.release_allocation(allocation.allocation_id)
    assert status_of(ledger.release_allocation, allocation.allocation_id)[0] == 410
    assert status_of(ledger.allocation, allocation.allocation_id)[0] == 410


def test_unknown_platform_foreign_address_and_non_positive_amounts_are_refused() -> None:
    ledger = make_ledger()
    status, message = status_of(ledger.create_allocation, "erc20-polygon-glm", D("1"))
    assert status == 400
    assert "erc20-polygon-glm" in message
    assert PLATFORM in message
    assert status_of(ledger.create_allocation, PLATFORM, D("1"), PROVIDER)[0] == 400
    assert status_of(ledger.create_allocation, PLATFORM, D("0"))[0] == 400
    assert status_of(ledger.create_allocation, PLATFORM, D("-1"))[0] == 400
    assert ledger.allocations() == []


def test_accept_requires_exactly_the_amount_due() -> None:
    ledger = make_ledger()
    allocation = ledger.create_allocation(PLATFORM, D("10"))
    debit_note = note(ledger, "1.5")
    status, message = status_of(ledger.accept_debit_note, debit_note.document_id, D("1.4"), allocation.allocation_id)
    assert status == 400
    assert "1.4" in message
    assert "1.5" in message
    assert debit_note.status == "RECEIVED"
    ledger.accept_debit_note(debit_note.document_id, D("1.50"), allocation.allocation_id)  # same number
    assert debit_note.status == "ACCEPTED"
    assert ledger.provider_balance(PROVIDER) == D("1.5")


def test_accepting_twice_answers_again_and_charges_once() -> None:
    ledger = make_ledger()
    allocation = ledger.create_allocation(PLATFORM, D("10"))
    invoice = ledger.issue_invoice(
        agreement_id="agr-1", activity_ids=[], provider_id=PROVIDER, payee_addr=PROVIDER, amount=D("3")
    )
    ledger.accept_invoice(invoice.document_id, D("3"), allocation.allocation_id)
    ledger.accept_invoice(invoice.document_id, D("3"), allocation.allocation_id)
    assert invoice.accept_calls == 2
    assert invoice.accepted_amount == D("3")
    assert invoice.status == "SETTLED"
    assert ledger.provider_balance(PROVIDER) == D("3")
    assert ledger.total_paid == D("3")
    assert allocation.spent_amount == D("3")


def test_debit_notes_charge_their_growth_and_the_invoice_the_rest() -> None:
    ledger = make_ledger("100")
    allocation = ledger.create_allocation(PLATFORM, D("20"))
    first, second = note(ledger, "1"), note(ledger, "3")
    assert second.previous_debit_note_id == first.document_id
    ledger.accept_debit_note(second.document_id, D("3"), allocation.allocation_id)
    ledger.accept_debit_note(first.document_id, D("1"), allocation.allocation_id)  # older: nothing new
    assert (second.charged_amount, first.charged_amount) == (D("3"), D("0"))
    third = note(ledger, "4.25")
    ledger.accept_debit_note(third.document_id, D("4.25"), allocation.allocation_id)
    assert third.charged_amount == D("1.25")

    invoice = ledger.issue_invoice(
        agreement_id="agr-1", activity_ids=["act-1"], provider_id=PROVIDER, payee_addr=PROVIDER, amount=D("5")
    )
    ledger.accept_invoice(invoice.document_id, D("5"), allocation.allocation_id)
    assert invoice.charged_amount == D("0.75")
    assert ledger.provider_balance(PROVIDER) == D("5")
    assert ledger.requestor_balance == D("95")
    assert (allocation.spent_amount, allocation.remaining_amount) == (D("5"), D("15"))
    # a debit note that comes after the agreement was settled pays nothing more
    late = note(ledger, "6")
    ledger.accept_debit_note(late.document_id, D("6"), allocation.allocation_id)
    assert ledger.provider_balance(PROVIDER) == D("5")


def test_invoice_below_what_debit_notes_paid_charges_nothing() -> None:
    ledger = make_ledger()
    allocation = ledger.create_allocation(PLATFORM, D("10"))
    ledger.accept_debit_note(note(ledger, "2").document_id, D("2"), allocation.allocation_id)
    invoice = ledger.issue_invoice(
        agreement_id="agr-1", activity_ids=["act-1"], provider_id=PROVIDER, payee_addr=PROVIDER, amount=D("1")
    )
    ledger.accept_invoice(invoice.document_id, D("1"), allocation.allocation_id)
    assert invoice.charged_amount == 0
    assert ledger.provider_balance(PROVIDER) == D("2")


def test_accept_from_a_released_unknown_or_too_small_allocation_is_refused() -> None:
    ledger = make_ledger()
    small = ledger.create_allocation(PLATFORM, D("1"))
    debit_note = note(ledger, "2")
    status, message = status_of(ledger.accept_debit_note, debit_note.document_id, D("2"), small.allocation_id)
    assert status == 400
    assert "to pay 2, remaining 1" in message
    assert status_of(ledger.accept_debit_note, debit_note.document_id, D("2"), "nope")[0] == 400
    ledger.release_allocation(small.allocation_id)
    assert status_of(ledger.accept_debit_note, debit_note.document_id, D("2"), small.allocation_id)[0] == 410
    assert (small.spent_amount, small.remaining_amount) == (D(0), D(1))
    assert debit_note.status == "RECEIVED"
    assert ledger.provider_balance(PROVIDER) == 0
    assert debit_note.accept_calls == 3


def test_unknown_documents_are_404() -> None:
    ledger = make_ledger()
    assert status_of(ledger.accept_invoice, "nope", D("1"), "x")[0] == 404
    assert status_of(ledger.debit_note, "nope")[0] == 404


def test_each_provider_is_paid_its_own_documents() -> None:
    ledger = make_ledger()
    allocation = ledger.create_allocation(PLATFORM, D("10"))
    mine = note(ledger, "1", activity="a1", agreement="g1")
    theirs = note(ledger, "2", activity="a2", agreement="g2", provider=OTHER_PROVIDER)
    assert theirs.previous_debit_note_id is None  # chains are per activity
    ledger.accept_debit_note(mine.document_id, D("1"), allocation.allocation_id)
    ledger.accept_debit_note(theirs.document_id, D("2"), allocation.allocation_id)
    assert ledger.provider_balance(PROVIDER) == D("1")
    assert ledger.provider_balance(OTHER_PROVIDER) == D("2")
    assert ledger.payments_for_agreement("g2") == D("2")


async def test_documents_announce_themselves_on_the_event_logs() -> None:
    ledger = make_ledger()
    allocation = ledger.create_allocation(PLATFORM, D("10"))
    debit_note = note(ledger, "1")
    ledger.accept_debit_note(debit_note.document_id, D("1"), allocation.allocation_id)
    invoice = ledger.issue_invoice(
        agreement_id="agr-1", activity_ids=["act-1"], provider_id=PROVIDER, payee_addr=PROVIDER, amount=D("1")
    )
    ledger.accept_invoice(invoice.document_id, D("1"), allocation.allocation_id)

    notes = await ledger.debit_note_events.collect(after=None, timeout=0, max_events=10)
    assert [(e["eventType"], e["debitNoteId"]) for e in notes] == [
        ("DebitNoteReceivedEvent", debit_note.document_id),
        ("DebitNoteAcceptedEvent", debit_note.document_id),
    ]
    invoices = await ledger.invoice_events.collect(after=None, timeout=0, max_events=10)
    assert [e["eventType"] for e in invoices] == [
        "InvoiceReceivedEvent",
        "InvoiceAcceptedEvent",
        "InvoiceSettledEvent",
    ]
    assert all(e["invoiceId"] == invoice.document_id for e in invoices)


def test_demand_decorations_name_the_payer_address() -> None:
    ledger = make_ledger()
    allocation = ledger.create_allocation(PLATFORM, D("1"))
    decorations = ledger.demand_decorations([allocation.allocation_id])
    assert decorations == {
        "properties": [
            {"key": f"golem.com.payment.platform.{PLATFORM}.address", "value": REQUESTOR},
            {"key": "golem.com.payment.protocol.version", "value": "3"},
        ],
        "constraints": [
            f"(golem.com.payment.platform.{PLATFORM}.address=*)",
            "(golem.com.payment.protocol.version>1)",
        ],
    }
    assert status_of(ledger.demand_decorations, ["nope"])[0] == 400


def test_money_is_plain_decimal_text() -> None:
    assert money(D("10")) == "10"
    assert money(D("1E+1")) == "10"
    assert money(D("0.000000000000000001")) == "0.000000000000000001"
    assert money(D("1.2500")) == "1.25"
    assert money(D("-0")) == "0"


amounts = st.decimals(min_value=D("0.01"), max_value=D("5"), places=2)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["note", "invoice", "release", "allocate"]), amounts, st.integers(0, 2)),
        max_size=25,
    )
)
def test_money_is_never_created_or_lost(steps: list[tuple[str, Decimal, int]]) -> None:
    ledger = make_ledger("20")
    allocation = ledger.create_allocation(PLATFORM, D("10"))
    cumulative: dict[int, Decimal] = {}
    for action, amount, activity in steps:
        refused = 0
        try:
            if action == "note":
                cumulative[activity] = cumulative.get(activity, D(0)) + amount
                debit_note = note(ledger, str(cumulative[activity]), activity=f"a{activity}", agreement="g")
                ledger.accept_debit_note(debit_note.document_id, debit_note.total_amount_due, allocation.allocation_id)
            elif action == "invoice":
                invoice = ledger.issue_invoice(
                    agreement_id="g",
                    activity_ids=[],
                    provider_id=PROVIDER,
                    payee_addr=PROVIDER,
                    amount=amount,
                )
                ledger.accept_invoice(invoice.document_id, amount, allocation.allocation_id)
            elif action == "release":
                ledger.release_allocation(allocation.allocation_id)
            else:
                allocation = ledger.create_allocation(PLATFORM, amount)
        except HttpError as exc:
            refused = exc.status
        assert refused in (0, 400, 410)
        for each in ledger.allocations():
            assert each.spent_amount >= 0
            assert each.remaining_amount >= 0
            assert each.spent_amount + each.remaining_amount == each.total_amount
        assert ledger.requestor_balance + ledger.provider_balance(PROVIDER) == D("20")
        assert ledger.available >= 0


# -- the activity hub: metering and billing on top of the ledger (in-process market, manual time) ------------

OFFER_SPEC = ProviderSpec(name="p1", debit_note_interval_sec=10)


def offer_properties(spec: ProviderSpec = OFFER_SPEC, *, multi: bool = False) -> dict[str, Any]:
    return {
        **spec.pricing.to_properties(),
        DEBIT_NOTE_INTERVAL: spec.debit_note_interval_sec,
        f"golem.com.payment.platform.{PLATFORM}.address": PROVIDER,
        MULTI_ACTIVITY: multi,
    }


async def approved_agreement(market: LocalMarket, *, multi: bool = False, approve: bool = True) -> str:
    """Negotiate in-process, as the requestor and the provider would over the market API."""
    offer_props = offer_properties(multi=multi)
    offer_id = market.subscribe_offer(PROVIDER, offer_props, "()")
    demand_props = {f"golem.com.payment.platform.{PLATFORM}.address": REQUESTOR}
    demand_id = market.subscribe_demand(REQUESTOR, demand_props, "()")
    events = await market.collect_events(demand_id, timeout=0, max_events=10)
    (initial,) = [e.proposal for e in events if isinstance(e, ProposalEventRecord) and e.proposal.offer_id == offer_id]
    counter = market.counter_proposal(demand_id, initial.proposal_id, demand_props, "()", by=REQUESTOR)
    draft = market.counter_proposal(offer_id, counter, offer_props, "()", by=PROVIDER)
    agreement_id = market.create_agreement(REQUESTOR, draft, utc_now() + timedelta(hours=1))
    market.confirm(agreement_id, by=REQUESTOR)
    if approve:
        market.approve(agreement_id, by=PROVIDER)
    return agreement_id


@pytest.fixture
async def billing() -> AsyncIterator[tuple[LocalMarket, Ledger, ActivityHub, ManualTime]]:
    clock = StrictClock()
    market = LocalMarket(clock)
    ledger = Ledger(clock, REQUESTOR, D("100"), PLATFORM)
    time = ManualTime()
    hub = ActivityHub(market, ledger, providers={PROVIDER: OFFER_SPEC}, time_source=time)
    yield market, ledger, hub, time
    await hub.aclose()


async def next_debit_notes(ledger: Ledger, after: datetime | None, count: int = 1) -> list[dict[str, Any]]:
    """Wait (on the event log, not the clock) for ``count`` more debit-note events."""
    found: list[dict[str, Any]] = []
    while len(found) < count:
        events = await ledger.debit_note_events.collect(after=after, timeout=5, max_events=count - len(found))
        assert events, "no debit note came"
        found += events
        after = parse_timestamp(events[-1]["eventDate"])
    return found


def expected_cost(duration: float, spec: ProviderSpec = OFFER_SPEC) -> Decimal:
    return spec.start_price + spec.price_duration_sec * D(str(duration))


async def test_activity_bills_every_interval_then_once_more_when_destroyed(
    billing: tuple[LocalMarket, Ledger, ActivityHub, ManualTime],
) -> None:
    market, ledger, hub, time = billing
    activity = await hub.create(await approved_agreement(market))
    assert activity.state is ExeUnitState.INITIALIZED
    assert activity.interval == 10
    assert activity.usage() == [0.0, 0.0]

    time.advance(10)
    (event,) = await next_debit_notes(ledger, None)
    first = ledger.debit_note(event["debitNoteId"])
    assert first.usage_counter_vector == [10.0, 0.0]
    assert first.total_amount_due == expected_cost(10)
    assert first.payee_addr == PROVIDER
    assert first.activity_id == activity.activity_id

    time.advance(5)  # half an interval: no periodic note
    await hub.destroy(activity.activity_id)
    last = ledger.debit_notes()[-1]
    assert last.previous_debit_note_id == first.document_id
    assert last.usage_counter_vector == [15.0, 0.0]
    assert last.total_amount_due == expected_cost(15)
    assert hub.get(activity.activity_id).state is ExeUnitState.TERMINATED
    assert not metering_tasks(activity.activity_id)

    time.advance(100)  # usage stays frozen, and destroying twice changes nothing
    await hub.destroy(activity.activity_id)
    assert len(ledger.debit_notes()) == 2
    assert activity.usage() == [15.0, 0.0]


def metering_tasks(activity_id: str) -> list[asyncio.Task[Any]]:
    return [task for task in asyncio.all_tasks() if task.get_name().endswith(activity_id)]


async def test_overcharging_provider_bills_its_factor(
    billing: tuple[LocalMarket, Ledger, ActivityHub, ManualTime],
) -> None:
    market, ledger, _, time = billing
    greedy = ActivityHub(market, ledger, providers={PROVIDER: evolve(OFFER_SPEC, overcharge=3)}, time_source=time)
    activity = await greedy.create(await approved_agreement(market))
    time.advance(2)
    await greedy.destroy(activity.activity_id)
    assert ledger.debit_notes()[-1].total_amount_due == 3 * expected_cost(2)
    await greedy.aclose()


async def test_agreement_end_destroys_activities_and_invoices_their_sum(
    billing: tuple[LocalMarket, Ledger, ActivityHub, ManualTime],
) -> None:
    market, ledger, hub, time = billing
    agreement_id = await approved_agreement(market, multi=True)
    first = await hub.create(agreement_id)
    time.advance(4)
    second = await hub.create(agreement_id)  # allowed: the offer has multi-activity
    time.advance(3)
    await hub.agreement_ended(agreement_id, PROVIDER)
    await hub.agreement_ended(agreement_id, PROVIDER)  # a second end invoices nothing more
    assert (first.state, second.state) == (ExeUnitState.TERMINATED, ExeUnitState.TERMINATED)
    assert first.reason == "the agreement ended"
    (invoice,) = ledger.invoices()
    assert invoice.activity_ids == [first.activity_id, second.activity_id]
    assert invoice.amount == expected_cost(7) + expected_cost(3)

    allocation = ledger.create_allocation(PLATFORM, D("10"))
    for debit_note in ledger.debit_notes():
        ledger.accept_debit_note(debit_note.document_id, debit_note.total_amount_due, allocation.allocation_id)
    ledger.accept_invoice(invoice.document_id, invoice.amount, allocation.allocation_id)
    assert ledger.provider_balance(PROVIDER) == invoice.amount
    assert allocation.spent_amount == invoice.amount


async def test_agreement_without_activities_gets_a_zero_invoice(
    billing: tuple[LocalMarket, Ledger, ActivityHub, ManualTime],
) -> None:
    market, ledger, hub, _ = billing
    agreement_id = await approved_agreement(market)
    await hub.agreement_ended(agreement_id, PROVIDER)
    (invoice,) = ledger.invoices()
    assert (invoice.amount, invoice.activity_ids, invoice.payee_addr) == (D(0), [], PROVIDER)
    with pytest.raises(HttpError) as ended:  # the agreement has ended: no more activities
        await hub.create(agreement_id)
    assert ended.value.status == 400


async def test_activities_need_an_approved_agreement_of_their_own(
    billing: tuple[LocalMarket, Ledger, ActivityHub, ManualTime],
) -> None:
    market, _, hub, _ = billing
    with pytest.raises(HttpError) as unknown:
        await hub.create("no-such-agreement")
    assert unknown.value.status == 404
    pending = await approved_agreement(market, approve=False)
    with pytest.raises(HttpError) as not_approved:
        await hub.create(pending)
    assert not_approved.value.status == 400
    assert "Pending" in not_approved.value.message
    single = await approved_agreement(market)
    await hub.create(single)
    with pytest.raises(HttpError) as second:
        await hub.create(single)
    assert second.value.status == 400
    assert MULTI_ACTIVITY in second.value.message
    with pytest.raises(HttpError) as not_mine:
        await hub.create(single, by=PROVIDER)
    assert not_mine.value.status == 403


async def test_close_cancels_and_awaits_every_metering_task(
    billing: tuple[LocalMarket, Ledger, ActivityHub, ManualTime],
) -> None:
    market, ledger, hub, time = billing
    activity = await hub.create(await approved_agreement(market))
    assert metering_tasks(activity.activity_id)
    await hub.aclose()
    assert not metering_tasks(activity.activity_id)
    time.advance(60)
    assert ledger.debit_notes() == []  # closing bills nothing
    assert activity.state is ExeUnitState.TERMINATED


async def test_requestor_destroy_racing_the_agreement_end_still_invoices_the_final_amount(
    billing: tuple[LocalMarket, Ledger, ActivityHub, ManualTime],
) -> None:
    market, ledger, hub, time = billing
    agreement_id = await approved_agreement(market)
    activity = await hub.create(agreement_id)
    time.advance(6)
    await asyncio.gather(hub.destroy(activity.activity_id), hub.agreement_ended(agreement_id, PROVIDER))
    (final,) = ledger.debit_notes()
    (invoice,) = ledger.invoices()
    assert final.total_amount_due == invoice.amount == expected_cost(6)


class _SlowStop(IdleRuntime):
    """A runtime whose ``stop`` takes until ``release`` is set (a sandbox slow to end under load)."""

    def __init__(self) -> None:
        super().__init__()
        self.stopping = asyncio.Event()
        self.release = asyncio.Event()
        self.stopped = False

    async def stop(self) -> None:
        self.stopping.set()
        await self.release.wait()
        self.stopped = True


async def test_a_destroy_whose_caller_gave_up_still_ends_the_activity_and_the_agreement_is_invoiced() -> None:
    """The requestor's ``DELETE`` timed out while the runtime stopped (the node cancels that handler): the
    ending goes on by itself (the sandbox is not left running, the last debit note is issued), and the
    agreement's end that follows waits for it and invoices the final amount."""
    clock = StrictClock()
    market = LocalMarket(clock)
    ledger = Ledger(clock, REQUESTOR, D("100"), PLATFORM)
    runtime = _SlowStop()
    time = ManualTime()
    hub = ActivityHub(
        market, ledger, providers={PROVIDER: OFFER_SPEC}, time_source=time, runtime_factory=lambda *_: runtime
    )
    try:
        agreement_id = await approved_agreement(market)
        activity = await hub.create(agreement_id)
        time.advance(6)
        destroying = asyncio.ensure_future(hub.destroy(activity.activity_id))
        await asyncio.wait_for(runtime.stopping.wait(), 5)
        destroying.cancel()  # the client went away
        with pytest.raises(asyncio.CancelledError):
            await destroying
        ending = asyncio.ensure_future(hub.agreement_ended(agreement_id, PROVIDER))
        runtime.release.set()
        await asyncio.wait_for(ending, 5)
        assert activity.state is ExeUnitState.TERMINATED
        assert runtime.stopped, "the runtime's stop was cut short"
        final = ledger.debit_notes()[-1]
        (invoice,) = ledger.invoices()
        assert invoice.activity_ids == [activity.activity_id]
        assert final.total_amount_due == invoice.amount == expected_cost(6)
    finally:
        runtime.release.set()
        await asyncio.wait_for(hub.aclose(), 5)


async def test_missed_intervals_are_billed_once_and_the_schedule_keeps_its_phase(
    billing: tuple[LocalMarket, Ledger, ActivityHub, ManualTime],
) -> None:
    market, ledger, hub, time = billing
    await hub.create(await approved_agreement(market))
    time.advance(35)  # three intervals at once: one note, for 35 s
    (first,) = await next_debit_notes(ledger, None)
    time.advance(5)  # the next deadline is 40 s after creation, not 45
    (second,) = await next_debit_notes(ledger, parse_timestamp(first["eventDate"]))
    notes = [ledger.debit_note(e["debitNoteId"]).usage_counter_vector for e in (first, second)]
    assert notes == [[35.0, 0.0], [40.0, 0.0]]


async def test_an_activity_forgets_batches_that_finished_long_ago_but_keeps_the_last_ones(
    billing: tuple[LocalMarket, Ledger, ActivityHub, ManualTime],
) -> None:
    market, _, hub, time = billing
    activity = await hub.create(await approved_agreement(market))
    batches = []
    for text in ['[{"deploy": {}}, {"start": {}}]'] + ['[{"run": {"entry_point": "/bin/true"}}]'] * 30:
        batch = activity.exec(parse_exescript(text))
        await batch.wait_results(command_index=len(batch.commands) - 1, timeout=5)
        batches.append(batch)
    assert len(activity.batches) == 31, "nothing is forgotten within the retention"
    time.advance(BATCH_RETENTION + 1)
    activity.exec(parse_exescript('[{"run": {"entry_point": "/bin/true"}}]'))
    assert len(activity.batches) == BATCHES_KEPT + 1
    assert activity.batch(batches[-1].batch_id) is batches[-1]
    with pytest.raises(HttpError, match="kept for 60 s") as info:
        activity.batch(batches[0].batch_id)
    assert info.value.status == 404


class _TenSecondClock(StrictClock):
    """Ten seconds later on every reading."""

    def __init__(self) -> None:
        super().__init__()
        self.moment = utc_now()

    def now(self) -> datetime:
        self.moment += timedelta(seconds=10)
        return self.moment


def test_a_long_run_keeps_a_bounded_ledger_the_latest_note_and_every_unaccepted_one() -> None:
    from golem_local.ledger import DEBIT_NOTE_EVENTS_KEPT_FOR

    ledger = Ledger(_TenSecondClock(), REQUESTOR, D(1000), PLATFORM)
    allocation = ledger.create_allocation(PLATFORM, D(100))
    unpaid = note(ledger, "0.001", activity="act-2", agreement="agr-2")
    for step in range(1, 201):  # 2000 s of notes, one every 10 s, each accepted
        issued = note(ledger, str(D("0.01") * step))
        ledger.accept_debit_note(issued.document_id, issued.total_amount_due, allocation.allocation_id)

    kept = [n for n in ledger.debit_notes() if n.activity_id == "act-1"]
    assert 1 < len(kept) <= DEBIT_NOTE_EVENTS_KEPT_FOR / 10 + 2  # the notes of the last two minutes, not all 200
    assert kept[-1].document_id == issued.document_id  # the latest stays
    assert ledger.debit_note(unpaid.document_id) is unpaid  # a note not accepted stays
    assert ledger.waiting_debit_notes_of("agr-2") == [unpaid]
    assert ledger.waiting_debit_notes_of("agr-1") == []
    assert len(ledger.debit_note_events) <= 2 * (DEBIT_NOTE_EVENTS_KEPT_FOR / 10 + 2)
    assert ledger.total_paid == D("2.00")  # what was paid is unchanged by forgetting


def test_a_note_accepted_long_after_it_was_superseded_is_forgotten_when_accepted() -> None:
    ledger = Ledger(_TenSecondClock(), REQUESTOR, D(1000), PLATFORM)
    allocation = ledger.create_allocation(PLATFORM, D(100))
    late = note(ledger, "0.01")
    for step in range(2, 40):  # 380 s of later notes, all accepted but the first
        issued = note(ledger, str(D("0.01") * step))
        ledger.accept_debit_note(issued.document_id, issued.total_amount_due, allocation.allocation_id)
    assert ledger.debit_note(late.document_id) is late  # not accepted: kept

    ledger.accept_debit_note(late.document_id, late.total_amount_due, allocation.allocation_id)

    assert late.document_id not in {n.document_id for n in ledger.debit_notes()}
