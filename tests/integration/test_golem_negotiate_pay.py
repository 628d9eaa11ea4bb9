"""The negotiate-and-pay slice end to end: Golem ↔ real HTTP ↔ the embedded local node."""

from __future__ import annotations

from decimal import Decimal

import pytest

from golem_api import ConfigurationError, Golem, LocalNetworkConfig, VmPayload
from golem_api.events import DebitNoteAccepted, InvoiceAccepted

pytestmark = pytest.mark.integration


@pytest.mark.slow  # over a second of real processes and waits (the quick run keeps its minute)
async def test_agreements_with_all_three_providers_are_paid_once_each() -> None:
    network = LocalNetworkConfig.with_providers(3, debit_note_interval_sec=1)
    accepted: list[InvoiceAccepted] = []
    debit_notes: list[DebitNoteAccepted] = []
    golem = Golem(budget=1.0, local_network=network)
    async with golem:
        golem.bus.subscribe(accepted.append, InvoiceAccepted)  # type: ignore[arg-type]
        golem.bus.subscribe(debit_notes.append, DebitNoteAccepted)  # type: ignore[arg-type]
        node = golem.local_node
        assert node is not None
        demand = await golem.create_demand(VmPayload(min_mem_gib=0.5, min_storage_gib=2.0))
        agreements = [await demand.agreement(timeout=10) for _ in range(3)]
        assert sorted(a.provider_name for a in agreements) == sorted(p.name for p in network.providers)
        for agreement in agreements:
            await agreement.create_activity()
        # Each provider bills its activity every second: wait for one debit note per activity.
        for agreement in agreements:
            await golem.bus.wait_for(
                DebitNoteAccepted, lambda e, a=agreement: e.agreement_id == a.agreement_id, timeout=10
            )

    ledger = node.ledger
    invoices = ledger.invoices()
    assert sorted(i.agreement_id for i in invoices) == sorted(a.agreement_id for a in agreements)
    for invoice in invoices:
        assert invoice.accept_calls == 1, f"invoice {invoice.document_id} accepted {invoice.accept_calls} times"
        assert invoice.status == "SETTLED"
        assert invoice.amount > 0
    assert all(note.accept_calls == 1 for note in ledger.debit_notes())
    (allocation,) = ledger.allocations()
    assert allocation.released
    total = sum((i.amount for i in invoices), start=Decimal(0))
    assert allocation.spent_amount == total
    assert total <= Decimal("1.0")
    assert golem.spent == total
    assert sorted(e.invoice_id for e in accepted) == sorted(i.document_id for i in invoices)
    assert golem.summary is not None
    assert golem.summary.total_paid == total
    for agreement in agreements:
        assert agreement.terminated


async def test_the_default_local_network_follows_the_requestors_subnet_and_payment_platform() -> None:
    golem = Golem(budget="0.5", subnet_tag="devnet-beta", payment_driver="erc20", payment_network="polygon")
    async with golem:
        node = golem.local_node
        assert node is not None
        demand = await golem.create_demand(VmPayload())
        agreement = await demand.agreement(timeout=10)
        await agreement.create_activity()
    assert golem.payment_platform == "erc20-polygon-glm"
    (allocation,) = node.ledger.allocations()
    assert allocation.payment_platform == "erc20-polygon-glm"
    (invoice,) = node.ledger.invoices()
    assert invoice.agreement_id == agreement.agreement_id
    assert invoice.status == "SETTLED"
    assert golem.spent == invoice.amount


def test_price_tolerance_must_be_a_non_negative_fraction() -> None:
    with pytest.raises(ConfigurationError, match=r"price_tolerance.*-0\.1"):
        Golem(budget=1, price_tolerance=-0.1)
    with pytest.raises(ConfigurationError, match=r"price_tolerance.*'lots'"):
        Golem(budget=1, price_tolerance="lots")
    assert Golem(budget=1, price_tolerance=0.05).price_tolerance == Decimal("0.05")
