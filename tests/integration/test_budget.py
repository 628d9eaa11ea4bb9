"""A budget that runs out is an event and a clear line, the instance ends as a failure of that cause, and the
exit does not wait for an invoice it already has and refused.

Real HTTP to a real local node; the provider bills every second at prices that spend the tiny budget within
seconds. Synchronised on events; the exit's duration is the assertion (it used to wait the whole 30 s
``invoice_timeout`` and then say "no invoice").
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import pytest

from golem_api.errors import BudgetExceededError
from golem_api.events import BudgetExhausted, DebitNoteAccepted, ServiceStateChanged, UnpaidAgreementsWarning
from golem_api.golem import Golem
from golem_api.payload import VmPayload
from golem_api.services.service import Service
from golem_local.config import LocalNetworkConfig, ProviderSpec

pytestmark = pytest.mark.integration

_DEAR = ProviderSpec(
    name="dear", start_price=Decimal("0.001"), price_duration_sec=Decimal("0.001"), debit_note_interval_sec=1
)
_BUDGET = Decimal("0.0025")


@pytest.mark.slow  # over a second of real processes and waits (the quick run keeps its minute)
async def test_a_budget_that_runs_out_ends_the_instance_with_that_cause_and_the_exit_is_prompt() -> None:
    seen: list[Any] = []
    golem = Golem(
        budget=_BUDGET,
        local_network=LocalNetworkConfig(providers=[_DEAR], activity_runtime="idle"),
        health_check_interval=60,  # the budget's end must not wait for a health check
        invoice_timeout=30,
    )
    async with golem:
        golem.bus.subscribe(seen.append, BudgetExhausted, DebitNoteAccepted, UnpaidAgreementsWarning)
        ended = asyncio.ensure_future(
            golem.bus.wait_for(ServiceStateChanged, lambda e: e.new in ("terminated", "unresponsive"), timeout=30)
        )
        cluster = await golem.run_service(Service, payload=VmPayload(min_mem_gib=0.5, min_storage_gib=1.0))
        exhausted = await golem.bus.wait_for(BudgetExhausted, timeout=30)
        change = await ended
        (instance,) = cluster.instances
        leaving = time.monotonic()
    exit_took = time.monotonic() - leaving

    assert exhausted.kind == "debit note"
    assert exhausted.message.startswith(f"budget {_BUDGET} spent: refusing debit note {exhausted.document_id} of ")
    assert exhausted.budget == _BUDGET
    assert exhausted.charge > _BUDGET - exhausted.spent
    # The instance ends as a failure of that cause, at once, not `unresponsive` at the next health check.
    assert change.new == "terminated"
    assert (change.timestamp - exhausted.timestamp).total_seconds() < 2
    assert isinstance(instance.exc_info[1], BudgetExceededError)
    assert str(instance.exc_info[1]) == exhausted.message
    # The exit does not wait for the invoice: it came, and was refused for the same reason.
    assert exit_took < 5, f"the exit took {exit_took:.1f} s"
    assert [e for e in seen if isinstance(e, UnpaidAgreementsWarning)] == []
    assert any(isinstance(e, BudgetExhausted) and e.kind == "invoice" for e in seen)
    assert golem.spent <= _BUDGET
    node = golem.local_node
    assert node is not None
    assert node.ledger.total_paid == golem.spent
    assert all(invoice.accept_calls == 0 for invoice in node.ledger.invoices())
