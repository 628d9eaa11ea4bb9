"""The payment ledger of the embedded local network: allocations, debit notes, invoices and who holds what.

Money is :class:`~decimal.Decimal` throughout; the wire gets decimal strings (:func:`money`). The requestor
has one account, on one payment platform, holding ``requestor_balance``. Allocations reserve part of it:
live allocations may together hold no more than the balance (the rest is *available*). Accepting a
document moves money at once from an allocation (``spentAmount`` up, ``remainingAmount`` down) and from
the requestor's balance to the provider's account; the local network has no chain to wait for, so an
accepted invoice is ``SETTLED`` straight away (``InvoiceAcceptedEvent`` then ``InvoiceSettledEvent``).

What an acceptance charges:

* a debit note: the growth of its activity's cumulative ``totalAmountDue`` over what was already
  accepted for that activity (never negative; nothing once the agreement's invoice was paid);
* an invoice: its amount minus what the agreement's debit notes already paid (never negative).

Accepting a document twice answers as the first time did and charges nothing more. Errors are raised as
:class:`~golem_local.http.HttpError` with the status the daemon answers (400, 404, 410).

Debit notes come every few seconds from every activity, so what the ledger keeps of them is bounded, not the
whole run (the daemon keeps them in its database): an accepted debit note that a later note of its activity
supersedes is forgotten :data:`DEBIT_NOTE_EVENTS_KEPT_FOR` seconds after it was superseded (404 from then on),
and so are the debit-note events that old. Each activity's latest note, every note not accepted, and every
invoice stay.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from attrs import define, field

from golem_local.eventlog import EventLog, StrictClock
from golem_local.http import HttpError
from golem_shared.timestamps import format_timestamp

__all__ = [
    "DEBIT_NOTE_EVENTS_KEPT_FOR",
    "AllocationRecord",
    "DebitNoteRecord",
    "InvoiceRecord",
    "Ledger",
    "PaymentDocument",
    "PaymentEvent",
    "money",
]

PaymentEvent = dict[str, Any]
"""An item of ``/debitNoteEvents`` or ``/invoiceEvents``: ``eventType``, the document id, ``eventDate``."""

_ZERO = Decimal(0)

DEBIT_NOTE_EVENTS_KEPT_FOR = 120.0
"""Seconds the node keeps a debit-note event, and an accepted debit note after a later one superseded it."""
_D = TypeVar("_D")


def money(amount: Decimal) -> str:
    """An amount as the daemon writes it: plain decimal notation, no exponent, no trailing zeros."""
    text = format(amount.normalize(), "f")
    return "0" if text in ("-0", "") else text


def _check_document(amount: Decimal, usage: list[float]) -> None:
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"a payment document cannot ask for {amount}; only finite amounts of 0 or more")
    bad = [value for value in usage if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0)]
    if bad:
        raise ValueError(f"usage counters must be finite numbers of 0 or more, not {bad[0]!r}")


def _new_id() -> str:
    return str(uuid.uuid4())


@define
class AllocationRecord:
    """Money reserved from the requestor's account; ``spent + remaining == total`` always."""

    allocation_id: str
    address: str
    payment_platform: str
    total_amount: Decimal
    timestamp: datetime
    timeout: str | None = None
    spent_amount: Decimal = _ZERO
    released: bool = False

    @property
    def remaining_amount(self) -> Decimal:
        """What may still be spent: never below zero, since a charge above it is refused."""
        return max(self.total_amount - self.spent_amount, _ZERO)


@define(kw_only=True)
class PaymentDocument:
    """What debit notes and invoices share: parties, platform, status and the record of acceptance."""

    document_id: str
    issuer_id: str
    recipient_id: str
    payee_addr: str
    payer_addr: str
    payment_platform: str
    timestamp: datetime
    agreement_id: str
    status: str = "RECEIVED"
    accept_calls: int = 0
    accepted_amount: Decimal = _ZERO
    charged_amount: Decimal = _ZERO
    allocation_id: str | None = None

    @property
    def accepted(self) -> bool:
        """True once an acceptance went through."""
        return self.status in ("ACCEPTED", "SETTLED")


@define(kw_only=True)
class DebitNoteRecord(PaymentDocument):
    """A cumulative statement of what one activity has cost so far."""

    activity_id: str
    total_amount_due: Decimal
    usage_counter_vector: list[float] = field(factory=list)
    previous_debit_note_id: str | None = None


@define(kw_only=True)
class InvoiceRecord(PaymentDocument):
    """The final bill of an agreement."""

    activity_ids: list[str]
    amount: Decimal


class Ledger:
    """The requestor's account, its allocations, and the documents the local providers issued to it."""

    def __init__(self, clock: StrictClock, requestor_id: str, requestor_balance: Decimal, platform: str) -> None:
        self._clock = clock
        self.requestor_id = requestor_id
        self.platform = platform
        self.initial_balance = requestor_balance
        # Debit notes come every few seconds from every activity: their events are kept DEBIT_NOTE_EVENTS_KEPT_FOR s
        # (the requestor reads them as they come), so that the log does not grow with the run's length.
        self.debit_note_events: EventLog[PaymentEvent] = EventLog(clock, keep_for=DEBIT_NOTE_EVENTS_KEPT_FOR)
        self.invoice_events: EventLog[PaymentEvent] = EventLog(clock)
        self._allocations: dict[str, AllocationRecord] = {}
        self._debit_notes: dict[str, DebitNoteRecord] = {}
        self._invoices: dict[str, InvoiceRecord] = {}
        self._last_note: dict[str, str] = {}  # activity id → its latest debit note id
        self._notes_of_agreement: dict[str, dict[str, DebitNoteRecord]] = {}  # in the order they came
        self._waiting_of_agreement: dict[str, dict[str, DebitNoteRecord]] = {}  # those not accepted yet
        self._superseded: deque[tuple[datetime, str]] = deque()  # (when, note id): forgotten once old, if accepted
        self._forget_when_accepted: set[str] = set()  # superseded long ago, but not accepted yet then
        self._accepted_for_activity: dict[str, Decimal] = {}  # cumulative amount accepted per activity
        self._paid_for_agreement: dict[str, Decimal] = {}
        self._invoiced_agreements: set[str] = set()
        self._provider_balances: dict[str, Decimal] = {}
        self.total_paid = _ZERO

    # -- accounts ----------------------------------------------------------------------------------------

    @property
    def requestor_balance(self) -> Decimal:
        """What the requestor's account holds now: the starting balance minus everything paid."""
        return self.initial_balance - self.total_paid

    @property
    def available(self) -> Decimal:
        """What a new allocation may still reserve."""
        reserved = sum((a.remaining_amount for a in self._allocations.values() if not a.released), _ZERO)
        return max(self.requestor_balance - reserved, _ZERO)

    def provider_balance(self, provider_id: str) -> Decimal:
        """What ``provider_id`` has been paid so far."""
        return self._provider_balances.get(provider_id, _ZERO)

    def payments_for_agreement(self, agreement_id: str) -> Decimal:
        """What the requestor has paid so far for ``agreement_id``."""
        return self._paid_for_agreement.get(agreement_id, _ZERO)

    # -- allocations -------------------------------------------------------------------------------------

    def create_allocation(
        self,
        payment_platform: str | None,
        total_amount: Decimal,
        address: str | None = None,
        timeout: str | None = None,
    ) -> AllocationRecord:
        """Reserve ``total_amount``; 400 for another platform or address, or a bad or too large amount."""
        platform = payment_platform or self.platform
        if platform != self.platform:
            raise HttpError(
                400,
                f"payment platform {platform!r} is not available on this node; it has: {self.platform}",
            )
        payer = address or self.requestor_id
        if payer.lower() != self.requestor_id.lower():
            raise HttpError(400, f"address {payer} has no account on this node; the requestor's is {self.requestor_id}")
        if total_amount <= 0:
            raise HttpError(400, f"totalAmount must be positive, got {money(total_amount)}")
        if total_amount > self.available:
            raise HttpError(
                400,
                f"Insufficient funds to make allocation: requested {money(total_amount)}, available "
                f"{money(self.available)} on {platform}. Release allocations or lower the budget",
            )
        allocation = AllocationRecord(
            allocation_id=_new_id(),
            address=self.requestor_id,
            payment_platform=platform,
            total_amount=total_amount,
            timestamp=self._clock.now(),
            timeout=timeout,
        )
        self._allocations[allocation.allocation_id] = allocation
        return allocation

    def allocation(self, allocation_id: str) -> AllocationRecord:
        """A live allocation; 404 unknown, 410 released."""
        allocation = self._allocations.get(allocation_id)
        if allocation is None:
            raise HttpError(404, f"allocation {allocation_id} not found")
        if allocation.released:
            raise HttpError(410, f"allocation {allocation_id} has been released")
        return allocation

    def release_allocation(self, allocation_id: str) -> None:
        """Release an allocation: what it had not spent becomes available again. 404 unknown, 410 twice."""
        self.allocation(allocation_id).released = True

    def allocations(self) -> list[AllocationRecord]:
        """Every allocation ever made, released ones included, oldest first."""
        return list(self._allocations.values())

    def demand_decorations(self, allocation_ids: list[str]) -> dict[str, Any]:
        """Payment properties and constraints for a demand paid from ``allocation_ids``.

        An unknown or released allocation is a bad request (400, as the spec lists for this call).
        """
        if not allocation_ids:
            raise HttpError(400, "allocationIds is required: a comma-separated list of allocation ids")
        platforms: dict[str, str] = {}
        for allocation_id in allocation_ids:
            allocation = self._allocations.get(allocation_id)
            if allocation is None or allocation.released:
                what = "not found" if allocation is None else "has been released"
                raise HttpError(400, f"allocation {allocation_id} {what}")
            platforms.setdefault(allocation.payment_platform, allocation.address)
        properties = [
            {"key": f"golem.com.payment.platform.{platform}.address", "value": address}
            for platform, address in platforms.items()
        ]
        properties.append({"key": "golem.com.payment.protocol.version", "value": "3"})
        constraints = [f"(golem.com.payment.platform.{platform}.address=*)" for platform in platforms]
        constraints.append("(golem.com.payment.protocol.version>1)")
        return {"properties": properties, "constraints": constraints}

    # -- documents ---------------------------------------------------------------------------------------

    def _log(self, log: EventLog[PaymentEvent], event_type: str, key: str, document_id: str) -> None:
        log.append(lambda moment: {"eventType": event_type, key: document_id, "eventDate": format_timestamp(moment)})

    def issue_debit_note(
        self,
        *,
        agreement_id: str,
        activity_id: str,
        provider_id: str,
        payee_addr: str,
        total_amount_due: Decimal,
        usage_counter_vector: list[float],
    ) -> DebitNoteRecord:
        """Record a provider's debit note (cumulative per activity) and tell the requestor about it.

        ``ValueError`` when an amount or a usage counter is not finite or is negative: no document carries one.
        """
        _check_document(total_amount_due, usage_counter_vector)
        note = DebitNoteRecord(
            document_id=_new_id(),
            issuer_id=provider_id,
            recipient_id=self.requestor_id,
            payee_addr=payee_addr,
            payer_addr=self.requestor_id,
            payment_platform=self.platform,
            timestamp=self._clock.now(),
            agreement_id=agreement_id,
            activity_id=activity_id,
            total_amount_due=total_amount_due,
            usage_counter_vector=list(usage_counter_vector),
            previous_debit_note_id=self._last_note.get(activity_id),
        )
        self._debit_notes[note.document_id] = note
        self._notes_of_agreement.setdefault(agreement_id, {})[note.document_id] = note
        self._waiting_of_agreement.setdefault(agreement_id, {})[note.document_id] = note
        previous = self._last_note.get(activity_id)
        if previous is not None:
            self._superseded.append((note.timestamp, previous))
        self._last_note[activity_id] = note.document_id
        self._forget_old_notes(note.timestamp - timedelta(seconds=DEBIT_NOTE_EVENTS_KEPT_FOR))
        self._log(self.debit_note_events, "DebitNoteReceivedEvent", "debitNoteId", note.document_id)
        return note

    def issue_invoice(
        self,
        *,
        agreement_id: str,
        activity_ids: list[str],
        provider_id: str,
        payee_addr: str,
        amount: Decimal,
    ) -> InvoiceRecord:
        """Record a provider's invoice for an agreement and tell the requestor about it (``ValueError`` for an
        amount that is not finite or is negative)."""
        _check_document(amount, [])
        invoice = InvoiceRecord(
            document_id=_new_id(),
            issuer_id=provider_id,
            recipient_id=self.requestor_id,
            payee_addr=payee_addr,
            payer_addr=self.requestor_id,
            payment_platform=self.platform,
            timestamp=self._clock.now(),
            agreement_id=agreement_id,
            activity_ids=list(activity_ids),
            amount=amount,
        )
        self._invoices[invoice.document_id] = invoice
        self._log(self.invoice_events, "InvoiceReceivedEvent", "invoiceId", invoice.document_id)
        return invoice

    def debit_note(self, debit_note_id: str) -> DebitNoteRecord:
        """A debit note by id; 404 when unknown."""
        return _find(self._debit_notes, debit_note_id, "debit note")

    def invoice(self, invoice_id: str) -> InvoiceRecord:
        """An invoice by id; 404 when unknown."""
        return _find(self._invoices, invoice_id, "invoice")

    def debit_notes(self) -> list[DebitNoteRecord]:
        """Every debit note received, oldest first."""
        return list(self._debit_notes.values())

    def debit_notes_of(self, agreement_id: str) -> list[DebitNoteRecord]:
        """The debit notes of one agreement the ledger holds, oldest first."""
        return list(self._notes_of_agreement.get(agreement_id, {}).values())

    def waiting_debit_notes_of(self, agreement_id: str) -> list[DebitNoteRecord]:
        """The debit notes of one agreement not accepted yet, oldest first (costs what it returns)."""
        return list(self._waiting_of_agreement.get(agreement_id, {}).values())

    def _forget_old_notes(self, before: datetime) -> None:
        """Forget the accepted debit notes superseded before ``before`` (the others stay)."""
        while self._superseded and self._superseded[0][0] < before:
            _when, note_id = self._superseded.popleft()
            note = self._debit_notes.get(note_id)
            if note is not None and note.accepted:
                self._forget_note(note)
            elif note is not None:
                self._forget_when_accepted.add(note_id)

    def _forget_note(self, note: DebitNoteRecord) -> None:
        del self._debit_notes[note.document_id]
        self._notes_of_agreement[note.agreement_id].pop(note.document_id, None)

    def invoices(self) -> list[InvoiceRecord]:
        """Every invoice received, oldest first."""
        return list(self._invoices.values())

    # -- acceptance --------------------------------------------------------------------------------------

    def accept_debit_note(self, debit_note_id: str, offered: Decimal, allocation_id: str) -> None:
        """Accept a debit note and pay the growth of its activity's cumulative amount (see the module doc)."""
        note = self.debit_note(debit_note_id)
        allocation = self._check_acceptance(note, note.total_amount_due, offered, allocation_id)
        if allocation is None:
            return
        accepted_before = self._accepted_for_activity.get(note.activity_id, _ZERO)
        due = max(note.total_amount_due - accepted_before, _ZERO)
        self._pay(note, allocation, _ZERO if note.agreement_id in self._invoiced_agreements else due, offered)
        self._accepted_for_activity[note.activity_id] = max(accepted_before, note.total_amount_due)
        self._waiting_of_agreement.get(note.agreement_id, {}).pop(note.document_id, None)
        if note.document_id in self._forget_when_accepted:  # superseded long ago: its acceptance was all it waited for
            self._forget_when_accepted.discard(note.document_id)
            self._forget_note(note)
        self._log(self.debit_note_events, "DebitNoteAcceptedEvent", "debitNoteId", note.document_id)

    def accept_invoice(self, invoice_id: str, offered: Decimal, allocation_id: str) -> None:
        """Accept an invoice, pay what its agreement's debit notes did not, and settle it at once."""
        invoice = self.invoice(invoice_id)
        allocation = self._check_acceptance(invoice, invoice.amount, offered, allocation_id)
        if allocation is None:
            return
        self._pay(
            invoice,
            allocation,
            max(invoice.amount - self.payments_for_agreement(invoice.agreement_id), _ZERO),
            offered,
        )
        self._invoiced_agreements.add(invoice.agreement_id)
        self._log(self.invoice_events, "InvoiceAcceptedEvent", "invoiceId", invoice.document_id)
        invoice.status = "SETTLED"
        self._log(self.invoice_events, "InvoiceSettledEvent", "invoiceId", invoice.document_id)

    def _check_acceptance(
        self, document: PaymentDocument, due: Decimal, offered: Decimal, allocation_id: str
    ) -> AllocationRecord | None:
        """The allocation to pay from, or None when the document was accepted before (nothing to pay)."""
        document.accept_calls += 1
        kind = "debit note" if isinstance(document, DebitNoteRecord) else "invoice"
        if offered != due:
            raise HttpError(
                400,
                f"totalAmountAccepted {money(offered)} does not match the amount due on {kind} "
                f"{document.document_id}: {money(due)}; accept exactly the amount due",
            )
        if document.accepted:
            return None  # the daemon answers a repeated acceptance as the first one; nothing more is paid
        allocation = self._allocations.get(allocation_id)
        if allocation is None:
            raise HttpError(400, f"allocation {allocation_id} not found")
        if allocation.released:
            raise HttpError(410, f"allocation {allocation_id} has been released")
        if allocation.payment_platform != document.payment_platform:
            raise HttpError(
                400,
                f"allocation {allocation_id} is on {allocation.payment_platform}, the {kind} on "
                f"{document.payment_platform}",
            )
        return allocation

    def _pay(self, document: PaymentDocument, allocation: AllocationRecord, amount: Decimal, offered: Decimal) -> None:
        """Move ``amount`` from the allocation and the requestor's account to the document's issuer."""
        if amount > allocation.remaining_amount:
            raise HttpError(
                400,
                f"allocation {allocation.allocation_id} lacks the funds to accept {document.document_id}: "
                f"to pay {money(amount)}, remaining {money(allocation.remaining_amount)}",
            )
        allocation.spent_amount += amount
        self.total_paid += amount
        provider, agreement = document.issuer_id, document.agreement_id
        self._provider_balances[provider] = self.provider_balance(provider) + amount
        self._paid_for_agreement[agreement] = self.payments_for_agreement(agreement) + amount
        document.status = "ACCEPTED"
        document.accepted_amount = offered
        document.charged_amount = amount
        document.allocation_id = allocation.allocation_id


def _find(documents: Mapping[str, _D], document_id: str, kind: str) -> _D:
    document = documents.get(document_id)
    if document is None:
        raise HttpError(404, f"{kind} {document_id} not found")
    return document
