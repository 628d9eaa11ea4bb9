"""The event bus: subscribe, unsubscribe, own timestamps, a failing consumer does not stop the others."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

import pytest

from golem_api import ConfigurationError, GolemTimeoutError, SummaryLogger
from golem_api.events import AgreementConfirmed, Event, EventBus, GolemStopped, InvoiceAccepted


def confirmed(name: str) -> AgreementConfirmed:
    return AgreementConfirmed(agreement_id=f"a-{name}", provider_id=f"0x{name}", provider_name=name)


def test_each_event_stamps_its_own_time() -> None:
    first = GolemStopped()
    second = GolemStopped()
    assert second.timestamp >= first.timestamp
    assert first.timestamp.tzinfo is not None


def test_consumers_get_the_kinds_they_asked_for_until_they_unsubscribe() -> None:
    bus = EventBus()
    everything: list[Event] = []
    agreements: list[Event] = []
    bus.subscribe(everything.append)
    subscription = bus.subscribe(agreements.append, AgreementConfirmed)
    bus.emit(confirmed("a"))
    bus.emit(GolemStopped())
    bus.unsubscribe(subscription)
    bus.emit(confirmed("b"))
    assert [type(e) for e in everything] == [AgreementConfirmed, GolemStopped, AgreementConfirmed]
    assert agreements == [everything[0]]


def test_a_failing_consumer_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    seen: list[Event] = []

    def broken(_: Event) -> None:
        raise RuntimeError("boom")

    bus.subscribe(broken)
    bus.subscribe(seen.append)
    with caplog.at_level(logging.ERROR):
        bus.emit(GolemStopped())
    assert len(seen) == 1
    assert "boom" in caplog.text


def test_subscribing_to_something_that_is_not_an_event_class_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="Event classes"):
        EventBus().subscribe(print, int)  # type: ignore[arg-type]


async def test_wait_for_returns_the_matching_event_and_is_bounded() -> None:
    bus = EventBus()
    waiter = asyncio.ensure_future(bus.wait_for(AgreementConfirmed, lambda e: e.provider_name == "b", timeout=5))
    await asyncio.sleep(0)
    bus.emit(confirmed("a"))
    bus.emit(confirmed("b"))
    assert (await waiter).provider_name == "b"
    with pytest.raises(GolemTimeoutError, match=r"no GolemStopped event within 0\.01 s"):
        await bus.wait_for(GolemStopped, timeout=0.01)


def test_summary_logs_agreements_invoices_and_the_total(caplog: pytest.LogCaptureFixture) -> None:
    summary = SummaryLogger()
    with caplog.at_level(logging.INFO, logger="golem_api._summary"):
        summary(confirmed("p1"))
        summary(InvoiceAccepted(invoice_id="i", agreement_id="a-p1", provider_name="p1", amount=Decimal("0.25")))
        summary(GolemStopped())
    assert "Agreement confirmed by provider 'p1'" in caplog.text
    assert "Accepted invoice from 'p1', amount: 0.25" in caplog.text
    assert "Total cost: 0.25" in caplog.text
    assert summary.total_paid == Decimal("0.25")
