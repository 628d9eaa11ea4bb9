"""Debit notes and invoices are checked against the agreed prices and the reported usage before they are paid.

A local provider built with ``overcharge`` announces honest prices and bills more than they say; the
requestor must refuse its first debit note, terminate the agreement, and pay nothing more under it.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from golem_api.events import (
    AgreementTerminated,
    DebitNoteAccepted,
    DocumentRefused,
    InvoiceAccepted,
    ServiceStateChanged,
)
from golem_api.golem import Golem
from golem_api.payload import VmPayload
from golem_api.services.service import Service
from golem_api.services.state import ServiceState
from golem_local.config import LocalNetworkConfig, ProviderSpec

pytestmark = pytest.mark.integration

_PAYLOAD = VmPayload(min_mem_gib=0.5, min_storage_gib=1.0)


@pytest.mark.slow  # over a second of real processes and waits (the quick run keeps its minute)
async def test_an_overcharging_provider_is_refused_terminated_and_never_paid() -> None:
    network = LocalNetworkConfig(providers=[ProviderSpec(name="greedy", overcharge=2, debit_note_interval_sec=1)])
    refused: list[DocumentRefused] = []
    accepted: list[DebitNoteAccepted | InvoiceAccepted] = []
    golem = Golem(budget=1.0, local_network=network)
    async with golem:
        golem.bus.subscribe(refused.append, DocumentRefused)  # type: ignore[arg-type]
        golem.bus.subscribe(accepted.append, DebitNoteAccepted, InvoiceAccepted)  # type: ignore[arg-type]
        node = golem.local_node
        assert node is not None
        demand = await golem.create_demand(_PAYLOAD)
        agreement = await demand.agreement(timeout=10)
        terminated = asyncio.ensure_future(
            golem.bus.wait_for(
                AgreementTerminated,
                lambda e: e.agreement_id == agreement.agreement_id and e.by == "requestor",
                timeout=15,
            )
        )
        await agreement.create_activity()
        first = await golem.bus.wait_for(DocumentRefused, timeout=15)
        ended = await terminated

    assert first.kind == "debit note"
    assert first.agreement_id == agreement.agreement_id
    assert first.provider_name == "greedy"
    assert first.amount > first.allowed > 0
    # Twice the honest price is well past the 1 % tolerance.
    assert first.amount >= first.allowed * Decimal("1.9")
    assert "agreed prices" in first.reason
    assert "refused" in ended.reason
    assert agreement.terminated
    assert not accepted
    ledger = node.ledger
    notes = [n for n in ledger.debit_notes() if n.agreement_id == agreement.agreement_id]
    assert notes, "the provider sent no debit note"
    assert all(n.accept_calls == 0 for n in notes)
    for invoice in ledger.invoices():  # it may come after the requestor stopped listening: never accepted
        assert invoice.agreement_id == agreement.agreement_id
        assert invoice.accept_calls == 0
    assert all(r.agreement_id == agreement.agreement_id for r in refused)
    assert ledger.payments_for_agreement(agreement.agreement_id) == 0
    assert golem.spent == 0


async def test_an_honest_provider_is_paid_after_the_checks() -> None:
    network = LocalNetworkConfig(providers=[ProviderSpec(name="honest", debit_note_interval_sec=1)])
    refused: list[DocumentRefused] = []
    golem = Golem(budget=1.0, local_network=network)
    async with golem:
        golem.bus.subscribe(refused.append, DocumentRefused)  # type: ignore[arg-type]
        node = golem.local_node
        assert node is not None
        demand = await golem.create_demand(_PAYLOAD)
        agreement = await demand.agreement(timeout=10)
        await agreement.create_activity()
        await golem.bus.wait_for(DebitNoteAccepted, lambda e: e.agreement_id == agreement.agreement_id, timeout=15)

    assert refused == []
    (invoice,) = node.ledger.invoices()
    assert invoice.accept_calls == 1
    assert invoice.status == "SETTLED"
    assert golem.spent == invoice.amount > 0
    assert golem.spent <= golem.budget


@pytest.mark.slow  # over a second of real processes and waits (the quick run keeps its minute)
async def test_a_service_on_an_overcharging_provider_loses_its_agreement_and_goes_unresponsive() -> None:
    network = LocalNetworkConfig(providers=[ProviderSpec(name="greedy", overcharge=3, debit_note_interval_sec=1)])
    golem = Golem(budget=1.0, local_network=network, health_check_interval=0.2)
    async with golem:
        cluster = await golem.run_service(Service, payload=_PAYLOAD)  # default handlers: deploy, start, wait
        (instance,) = cluster.instances
        unresponsive = asyncio.ensure_future(
            golem.bus.wait_for(ServiceStateChanged, lambda e: e.new == "unresponsive", timeout=20)
        )
        refused = await golem.bus.wait_for(DocumentRefused, timeout=20)
        event = await unresponsive
        node = golem.local_node
        assert node is not None

    assert refused.kind == "debit note"
    assert refused.provider_name == "greedy"
    assert event.instance == instance.name
    assert event.reason is not None
    # the agreement's ending or, when the health check sees it first, the activity's state "Terminated"
    assert "terminated" in event.reason.lower()
    assert instance.state == ServiceState.unresponsive
    assert node.ledger.payments_for_agreement(refused.agreement_id) == 0
    assert all(n.accept_calls == 0 for n in node.ledger.debit_notes())
    assert golem.spent == 0


@pytest.mark.slow  # over a second of real processes and waits (the quick run keeps its minute)
async def test_an_invoice_asking_more_than_its_activities_cost_is_refused() -> None:
    network = LocalNetworkConfig(providers=[ProviderSpec(name="honest", debit_note_interval_sec=1)])
    golem = Golem(budget=1.0, local_network=network)
    async with golem:
        node = golem.local_node
        assert node is not None
        demand = await golem.create_demand(_PAYLOAD)
        agreement = await demand.agreement(timeout=10)
        activity = await agreement.create_activity()
        note = await golem.bus.wait_for(
            DebitNoteAccepted, lambda e: e.agreement_id == agreement.agreement_id, timeout=15
        )
        # The provider's side of the node invoices ten times what the activity has cost so far.
        payee = agreement.offer_properties[f"golem.com.payment.platform.{golem.payment_platform}.address"]
        forged = node.ledger.issue_invoice(
            agreement_id=agreement.agreement_id,
            activity_ids=[activity.activity_id],
            provider_id=agreement.provider_id,
            payee_addr=payee,
            amount=note.amount * 10,
        )
        refused = await golem.bus.wait_for(DocumentRefused, timeout=15)
        # Terminated once the node confirmed it (the refusal comes first).
        await golem.bus.wait_for(AgreementTerminated, lambda e: e.agreement_id == agreement.agreement_id, timeout=15)
        assert agreement.terminated

    assert refused.kind == "invoice"
    assert refused.document_id == forged.document_id
    assert refused.allowed < refused.amount
    assert forged.accept_calls == 0
    assert all(invoice.accept_calls == 0 for invoice in node.ledger.invoices())
    assert golem.spent == note.amount
