"""PaymentManager.spent is a running total: after any order of accepted debit notes and invoices it equals the sum
it stands for (each invoice, plus the debit notes of agreements not invoiced yet)."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any, cast

import pytest

from golem_api.events import EventBus
from golem_api.payment._manager import PaymentManager


def summed(manager: PaymentManager) -> Decimal:
    """What spent stands for, summed from scratch (as spent itself did before issue 17)."""
    total = sum(manager._invoiced.values(), start=Decimal(0))
    for activity_id, amount in manager._accepted_debit.items():
        if manager._activity_agreement.get(activity_id) not in manager._invoiced:
            total += amount
    return total


async def test_spent_follows_debit_notes_and_invoices_in_any_order() -> None:
    rng = random.Random(17)
    for _round in range(20):
        manager = PaymentManager(cast(Any, None), EventBus(), budget=Decimal(1000), platform="erc20-holesky-tglm")
        activities = {f"act-{n}": f"agr-{n % 7}" for n in range(20)}
        debit = dict.fromkeys(activities, Decimal(0))
        for _step in range(200):
            activity_id = rng.choice(list(activities))
            agreement_id = activities[activity_id]
            if rng.random() < 0.85:
                debit[activity_id] += Decimal(rng.randint(0, 1000)) / 1000  # cumulative, as a debit note is
                manager._book_debit_note(activity_id, agreement_id, debit[activity_id])
            else:
                covered = [a for a, g in activities.items() if g == agreement_id and rng.random() < 0.8]
                manager._book_invoice(agreement_id, Decimal(rng.randint(0, 5000)) / 1000, covered)
            assert manager.spent == summed(manager)
        assert manager.spent >= 0


async def test_an_invoice_replaces_its_agreements_debit_notes_in_spent() -> None:
    manager = PaymentManager(cast(Any, None), EventBus(), budget=Decimal(10), platform="erc20-holesky-tglm")
    manager._book_debit_note("a1", "agr-1", Decimal("0.5"))
    manager._book_debit_note("a1", "agr-1", Decimal("0.75"))
    manager._book_debit_note("a2", "agr-2", Decimal("0.25"))
    assert manager.spent == Decimal("1.00")

    manager._book_invoice("agr-1", Decimal("0.8"), ["a1"])
    assert manager.spent == Decimal("1.05")
    manager._book_debit_note("a1", "agr-1", Decimal("0.9"))  # a late note under an invoiced agreement: no change
    assert manager.spent == Decimal("1.05")


def test_handled_documents_are_forgotten_after_two_generations(monkeypatch: pytest.MonkeyPatch) -> None:
    from golem_api.payment import _manager

    clock = [1000.0]
    monkeypatch.setattr(_manager.time, "monotonic", lambda: clock[0])
    remembered = _manager._Remembered(300.0)
    remembered.add("note-1")
    clock[0] += 299.0
    remembered.add("note-2")
    assert "note-1" in remembered
    assert "note-2" in remembered
    clock[0] += 2.0  # the first generation ends: note-1 and note-2 move to the previous one
    remembered.add("note-3")
    assert all(n in remembered for n in ("note-1", "note-2", "note-3"))
    clock[0] += 301.0  # the second: what was added before the first turn is gone
    remembered.add("note-4")
    assert "note-1" not in remembered
    assert "note-2" not in remembered
    assert "note-3" in remembered
    assert "note-4" in remembered
    assert len(remembered) == 2
