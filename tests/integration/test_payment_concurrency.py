"""Debit notes of different agreements are accepted side by side, and still each exactly once within the budget.

A thousand providers billing every five seconds send two hundred debit notes a second; accepted one round trip
after another, the requestor fell behind and providers ended agreements for notes left unaccepted. A fault proxy
holds every acceptance the requestor sends until the test releases them: several held at once (of different
documents) shows them in flight together; the node's ledger then says each was accepted once and the requestor
counted what was paid.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from golem_api.events import DebitNoteAccepted, InvoiceAccepted
from golem_api.golem import Golem
from golem_api.payload import VmPayload
from golem_local.config import LocalNetworkConfig, ProviderSpec
from golem_local.node import LocalNode
from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.integration

_PROVIDERS = 3
_NETWORK = LocalNetworkConfig(
    providers=[ProviderSpec(name=f"p{i}", debit_note_interval_sec=1) for i in range(_PROVIDERS)],
    activity_runtime="idle",
)
_DEBIT_ACCEPT = r"^POST /payment-api/v1/debitNotes/[^/]+/accept$"


@pytest.mark.slow  # over a second of real processes and waits (the quick run keeps its minute)
async def test_debit_notes_of_several_agreements_are_accepted_at_once_and_each_once() -> None:
    seen: list[Any] = []
    async with LocalNode(_NETWORK) as node, FaultProxy(node.host, node.port) as proxy:
        proxy.add(_DEBIT_ACCEPT, "hold", times=1_000_000)
        golem = Golem(budget=1, app_key=node.app_key, api_url=proxy.url, invoice_timeout=20)
        async with golem:
            golem.bus.subscribe(seen.append, DebitNoteAccepted, InvoiceAccepted)
            demand = await golem.create_demand(VmPayload(min_mem_gib=0.5))
            agreements = [await demand.agreement(timeout=20) for _ in range(_PROVIDERS)]
            for agreement in agreements:
                await agreement.create_activity()
            # One acceptance after another would leave a single one held; side by side, every provider's is.
            await proxy.wait_hits("hold", _PROVIDERS, timeout=20)
            held = proxy.hits_of("hold")
            assert len(set(held)) == len(held), f"a held acceptance was sent again: {held}"
            proxy.release()
            for agreement in agreements:
                await golem.bus.wait_for(
                    DebitNoteAccepted, lambda e, a=agreement.agreement_id: e.agreement_id == a, timeout=20
                )

    ledger = node.ledger
    invoices = ledger.invoices()
    assert sorted(i.agreement_id for i in invoices) == sorted(a.agreement_id for a in agreements)
    assert all((i.accept_calls, i.status) == (1, "SETTLED") for i in invoices)
    assert all(n.accept_calls <= 1 for n in ledger.debit_notes()), "a debit note was accepted twice"
    assert golem.spent == sum((i.amount for i in invoices), start=Decimal(0)) > 0
    accepted = [e.debit_note_id for e in seen if isinstance(e, DebitNoteAccepted)]
    assert len(accepted) == len(set(accepted))
