"""Payment objects as the daemon sends them: allocations, debit notes, invoices and their events.

Money is :class:`decimal.Decimal`, parsed from the decimal string on the wire, never through a float.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from attrs import frozen

from golem_api._rest.models._fields import Fields

__all__ = ["Allocation", "DebitNote", "DemandDecoration", "Invoice", "PaymentEvent"]


@frozen
class Allocation:
    """Money set aside on one payment platform to pay for agreements."""

    allocation_id: str
    address: str
    payment_platform: str
    total_amount: Decimal
    spent_amount: Decimal
    remaining_amount: Decimal
    timestamp: datetime
    timeout: datetime | None = None
    make_deposit: bool = False

    @classmethod
    def from_json(cls, data: Any) -> Allocation:
        """Parse ``{allocationId, address, paymentPlatform, totalAmount, spentAmount, …}``."""
        f = Fields("Allocation", data)
        return cls(
            allocation_id=f.text("allocationId"),
            address=f.text("address"),
            payment_platform=f.text("paymentPlatform"),
            total_amount=f.money("totalAmount"),
            spent_amount=f.money("spentAmount"),
            remaining_amount=f.money("remainingAmount"),
            timestamp=f.time("timestamp"),
            timeout=f.opt_time("timeout"),
            make_deposit=f.flag("makeDeposit", default=False),
        )


@frozen
class DemandDecoration:
    """Payment properties and constraints to add to a demand so providers can be paid."""

    properties: dict[str, Any]
    constraints: tuple[str, ...]

    @classmethod
    def from_json(cls, data: Any) -> DemandDecoration:
        """Parse ``{"properties": [{"key", "value"}, …], "constraints": [str, …]}``."""
        f = Fields("DemandDecoration", data)
        items = f.raw.get("properties")
        if not isinstance(items, list):
            raise ValueError("DemandDecoration: field 'properties' should be a list of {key, value}")
        properties: dict[str, Any] = {}
        for item in items:
            entry = Fields("DemandDecoration.properties[]", item)
            properties[entry.text("key")] = entry.raw.get("value")
        return cls(properties=properties, constraints=f.texts("constraints"))


@frozen
class DebitNote:
    """A provider's running total for one activity (``total_amount_due`` is cumulative)."""

    debit_note_id: str
    issuer_id: str
    recipient_id: str
    payee_addr: str
    payer_addr: str
    payment_platform: str
    previous_debit_note_id: str | None
    timestamp: datetime
    agreement_id: str
    activity_id: str
    total_amount_due: Decimal
    usage_counter_vector: tuple[float, ...] | None
    payment_due_date: datetime | None
    status: str

    @classmethod
    def from_json(cls, data: Any) -> DebitNote:
        """Parse ``{debitNoteId, issuerId, …, totalAmountDue, usageCounterVector?, status}``."""
        f = Fields("DebitNote", data)
        return cls(
            debit_note_id=f.text("debitNoteId"),
            issuer_id=f.text("issuerId"),
            recipient_id=f.text("recipientId"),
            payee_addr=f.text("payeeAddr"),
            payer_addr=f.text("payerAddr"),
            payment_platform=f.text("paymentPlatform"),
            previous_debit_note_id=f.opt_text("previousDebitNoteId"),
            timestamp=f.time("timestamp"),
            agreement_id=f.text("agreementId"),
            activity_id=f.text("activityId"),
            total_amount_due=f.money("totalAmountDue"),
            usage_counter_vector=f.opt_numbers("usageCounterVector"),
            payment_due_date=f.opt_time("paymentDueDate"),
            status=f.text("status"),
        )


@frozen
class Invoice:
    """A provider's final bill for one agreement."""

    invoice_id: str
    issuer_id: str
    recipient_id: str
    payee_addr: str
    payer_addr: str
    payment_platform: str
    timestamp: datetime
    agreement_id: str
    activity_ids: tuple[str, ...]
    amount: Decimal
    payment_due_date: datetime
    status: str

    @classmethod
    def from_json(cls, data: Any) -> Invoice:
        """Parse ``{invoiceId, issuerId, …, activityIds, amount, paymentDueDate, status}``."""
        f = Fields("Invoice", data)
        return cls(
            invoice_id=f.text("invoiceId"),
            issuer_id=f.text("issuerId"),
            recipient_id=f.text("recipientId"),
            payee_addr=f.text("payeeAddr"),
            payer_addr=f.text("payerAddr"),
            payment_platform=f.text("paymentPlatform"),
            timestamp=f.time("timestamp"),
            agreement_id=f.text("agreementId"),
            activity_ids=f.texts("activityIds"),
            amount=f.money("amount"),
            payment_due_date=f.time("paymentDueDate"),
            status=f.text("status"),
        )


@frozen
class PaymentEvent:
    """Something happened to a debit note or an invoice (``event_type`` says what, ``document_id`` which)."""

    event_type: str
    document_id: str
    event_date: datetime
    reason: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Any) -> PaymentEvent:
        """Parse a debit-note event (``debitNoteId``) or an invoice event (``invoiceId``).

        ``reason`` is the event's ``rejection`` object (the spec's name) or its ``reason``.
        """
        f = Fields("PaymentEvent", data)
        document_id = f.opt_text("debitNoteId") or f.opt_text("invoiceId")
        if document_id is None:
            raise ValueError("PaymentEvent: required field 'debitNoteId' or 'invoiceId' is missing")
        return cls(
            event_type=f.text("eventType"),
            document_id=document_id,
            event_date=f.time("eventDate"),
            reason=f.opt_obj("rejection") or f.opt_obj("reason"),
        )
