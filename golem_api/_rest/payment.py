"""The payment API: allocations, demand decorations, debit notes and invoices (requestor side)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from golem_api._rest import routes
from golem_api._rest.models import Allocation, DebitNote, DemandDecoration, Invoice, PaymentEvent
from golem_api._rest.models._fields import parse_list, parse_nothing
from golem_api._rest.routes import POLL_MARGIN, Requester, Route
from golem_api.errors import ConfigurationError
from golem_shared.timestamps import format_timestamp

__all__ = ["PaymentApi", "format_amount"]


def format_amount(amount: Decimal, what: str = "amount") -> str:
    """An amount as the daemon wants it: a plain decimal string (``"0.0000001"``, never ``"1E-7"``)."""
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount < 0:
        raise ConfigurationError(f"{what} must be a finite, non-negative decimal.Decimal, got {amount!r}")
    return format(amount, "f")


def _acceptance(amount: Decimal, allocation_id: str) -> dict[str, str]:
    return {"totalAmountAccepted": format_amount(amount, "the accepted amount"), "allocationId": allocation_id}


class PaymentApi:
    """Calls of ``/payment-api/v1``; get it as ``RestClient.payment``."""

    def __init__(self, request: Requester) -> None:
        self._request = request

    async def create_allocation(
        self,
        *,
        payment_platform: str,
        total_amount: Decimal,
        address: str | None = None,
        timeout: datetime | None = None,
    ) -> Allocation:
        """Set ``total_amount`` aside on ``payment_platform`` (e.g. ``erc20-holesky-tglm``)."""
        body: dict[str, Any] = {
            "paymentPlatform": payment_platform,
            "totalAmount": format_amount(total_amount, "total_amount"),
            "makeDeposit": False,
        }
        if address is not None:
            body["address"] = address
        if timeout is not None:
            body["timeout"] = format_timestamp(timeout)
        return await self._request(routes.CREATE_ALLOCATION, json=body, parse=Allocation.from_json)

    async def get_allocation(self, allocation_id: str) -> Allocation:
        """Fetch an allocation with its spent and remaining amounts."""
        return await self._request(routes.GET_ALLOCATION, allocation_id, parse=Allocation.from_json)

    async def list_allocations(self) -> list[Allocation]:
        """Every allocation of this identity."""
        return await self._request(routes.LIST_ALLOCATIONS, parse=parse_list(Allocation.from_json))

    async def release_allocation(self, allocation_id: str) -> None:
        """Give the rest of an allocation back."""
        await self._request(routes.RELEASE_ALLOCATION, allocation_id, parse=parse_nothing)

    async def demand_decorations(self, allocation_ids: Sequence[str]) -> DemandDecoration:
        """The properties and constraints a demand needs so that these allocations can pay for it."""
        if isinstance(allocation_ids, str):
            raise ConfigurationError(f"allocation_ids must be a sequence of ids, got the string {allocation_ids!r}")
        return await self._request(
            routes.DEMAND_DECORATIONS,
            params={"allocationIds": ",".join(allocation_ids)},
            parse=DemandDecoration.from_json,
        )

    async def collect_debit_note_events(
        self, *, after: datetime | None = None, timeout: float = 5.0, max_events: int = 100
    ) -> list[PaymentEvent]:
        """Wait up to ``timeout`` s for debit-note events strictly after ``after``, oldest first."""
        return await self._collect(routes.COLLECT_DEBIT_NOTE_EVENTS, after, timeout, max_events)

    async def collect_invoice_events(
        self, *, after: datetime | None = None, timeout: float = 5.0, max_events: int = 100
    ) -> list[PaymentEvent]:
        """Wait up to ``timeout`` s for invoice events strictly after ``after``, oldest first."""
        return await self._collect(routes.COLLECT_INVOICE_EVENTS, after, timeout, max_events)

    async def _collect(
        self, route: Route, after: datetime | None, timeout: float, max_events: int
    ) -> list[PaymentEvent]:
        params = {
            "timeout": str(float(timeout)),
            "maxEvents": str(int(max_events)),
            "afterTimestamp": None if after is None else format_timestamp(after),
        }
        return await self._request(
            route, params=params, timeout=timeout + POLL_MARGIN, parse=parse_list(PaymentEvent.from_json)
        )

    async def get_debit_note(self, debit_note_id: str) -> DebitNote:
        """Fetch a debit note."""
        return await self._request(routes.GET_DEBIT_NOTE, debit_note_id, parse=DebitNote.from_json)

    async def list_debit_notes(self) -> list[DebitNote]:
        """Every debit note this identity issued or received."""
        return await self._request(routes.LIST_DEBIT_NOTES, parse=parse_list(DebitNote.from_json))

    async def accept_debit_note(self, debit_note_id: str, *, amount: Decimal, allocation_id: str) -> None:
        """Accept a debit note, paying ``amount`` (its total amount due) from the allocation."""
        await self._request(
            routes.ACCEPT_DEBIT_NOTE,
            debit_note_id,
            json=_acceptance(amount, allocation_id),
            parse=parse_nothing,
        )

    async def get_invoice(self, invoice_id: str) -> Invoice:
        """Fetch an invoice."""
        return await self._request(routes.GET_INVOICE, invoice_id, parse=Invoice.from_json)

    async def list_invoices(self) -> list[Invoice]:
        """Every invoice this identity issued or received."""
        return await self._request(routes.LIST_INVOICES, parse=parse_list(Invoice.from_json))

    async def accept_invoice(self, invoice_id: str, *, amount: Decimal, allocation_id: str) -> None:
        """Accept an invoice, paying ``amount`` (its full amount) from the allocation."""
        await self._request(
            routes.ACCEPT_INVOICE, invoice_id, json=_acceptance(amount, allocation_id), parse=parse_nothing
        )
