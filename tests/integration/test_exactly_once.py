"""Money exactly once under faults of the wire: answers lost, requests dropped, the node answering 5xx.

A small TCP proxy (``tests/faultproxy.py``) sits between the requestor and a real local node on loopback and
injects each fault on the request it names; the node's ledger then says how often each document was accepted
and what was charged. Synchronised on the injected faults and on events, never on sleeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from golem_api.events import DebitNoteAccepted, InvoiceAccepted, UnpaidAgreementsWarning
from golem_api.golem import Golem
from golem_api.payload import VmPayload
from golem_local.config import LocalNetworkConfig, ProviderSpec
from golem_local.market_model import AgreementState
from golem_local.node import LocalNode
from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.integration

_PAYLOAD = VmPayload(min_mem_gib=0.5, min_storage_gib=1.0)
_NETWORK = LocalNetworkConfig(
    providers=[ProviderSpec(name="steady", debit_note_interval_sec=1)], activity_runtime="idle"
)
_DEBIT_ACCEPT = r"^POST /payment-api/v1/debitNotes/[^/]+/accept$"
_INVOICE_ACCEPT = r"^POST /payment-api/v1/invoices/[^/]+/accept$"


@pytest.fixture
async def node() -> AsyncIterator[LocalNode]:
    async with LocalNode(_NETWORK) as running:
        yield running


@pytest.fixture
async def proxy(node: LocalNode) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(node.host, node.port) as running:
        yield running


async def _run_one_agreement(golem: Golem, seen: list[Any]) -> str:
    """An agreement with an activity, until one debit note was accepted; returns the agreement id."""
    golem.bus.subscribe(seen.append, DebitNoteAccepted, InvoiceAccepted, UnpaidAgreementsWarning)
    demand = await golem.create_demand(_PAYLOAD)
    agreement = await demand.agreement(timeout=20)
    await agreement.create_activity()
    await golem.bus.wait_for(DebitNoteAccepted, lambda e: e.agreement_id == agreement.agreement_id, timeout=20)
    return agreement.agreement_id


@pytest.mark.slow  # over a second of real processes and waits (the quick run keeps its minute)
async def test_lost_answers_and_5xx_on_acceptance_still_pay_every_document_exactly_once(
    node: LocalNode, proxy: FaultProxy
) -> None:
    proxy.add(_DEBIT_ACCEPT, "lose_answer")  # the node accepts; the requestor never hears it
    proxy.add(_INVOICE_ACCEPT, "lose_answer")
    proxy.add(_INVOICE_ACCEPT, "status", status=503)  # then the node is "overloaded" once
    seen: list[Any] = []
    golem = Golem(budget=1, app_key=node.app_key, api_url=proxy.url, invoice_timeout=20)
    async with golem:
        agreement_id = await _run_one_agreement(golem, seen)

    assert len(proxy.hits_of("lose_answer")) == 2
    assert len(proxy.hits_of("status")) == 1
    ledger = node.ledger
    (invoice,) = ledger.invoices()
    assert invoice.agreement_id == agreement_id
    assert invoice.status == "SETTLED"
    assert invoice.accept_calls == 2, "the lost answer was retried; the 503 never reached the node"
    notes = ledger.debit_notes()
    assert notes[0].accept_calls == 2, "the first debit note's acceptance was repeated after its answer was lost"
    assert all(n.status == "ACCEPTED" for n in notes if n.accept_calls)
    # Charged once: what the provider got is exactly the invoice, and the requestor counted the same.
    assert ledger.payments_for_agreement(agreement_id) == invoice.amount > 0
    assert ledger.provider_balance(invoice.issuer_id) == invoice.amount
    assert golem.spent == invoice.amount
    assert [e.invoice_id for e in seen if isinstance(e, InvoiceAccepted)] == [invoice.document_id]
    assert [e for e in seen if isinstance(e, UnpaidAgreementsWarning)] == []


@pytest.mark.slow  # over a second of real processes and waits (the quick run keeps its minute)
async def test_the_offer_collector_terminate_and_destroy_survive_faults(node: LocalNode, proxy: FaultProxy) -> None:
    proxy.add(r"^GET /market-api/v1/demands/[^/]+/events", "status", status=500)
    proxy.add(r"^GET /market-api/v1/demands/[^/]+/events", "status", status=400)  # not transient, still survived
    proxy.add(r"^GET /market-api/v1/demands/[^/]+/events", "drop")
    proxy.add(r"^DELETE /activity-api/v1/activity/", "lose_answer")
    proxy.add(r"^POST /market-api/v1/agreements/[^/]+/terminate$", "drop")
    seen: list[Any] = []
    golem = Golem(budget=1, app_key=node.app_key, api_url=proxy.url, invoice_timeout=20)
    async with golem:
        agreement_id = await _run_one_agreement(golem, seen)
        assert len(proxy.hits_of("status")) == 2
        assert len(proxy.hits_of("drop")) == 1  # the events poll; the terminate is dropped on the way out

    assert len(proxy.hits_of("drop")) == 2
    assert proxy.hits_of("lose_answer") == [r for r in proxy.hits_of("lose_answer") if r.startswith("DELETE")]
    assert node.market.get_agreement(agreement_id).state is AgreementState.TERMINATED
    (activity,) = node.activities.activities(agreement_id)
    assert activity.state.value == "Terminated"
    (invoice,) = node.ledger.invoices()
    assert (invoice.accept_calls, invoice.status) == (1, "SETTLED")
    assert golem.spent == invoice.amount > Decimal(0)
    assert [e for e in seen if isinstance(e, UnpaidAgreementsWarning)] == []
