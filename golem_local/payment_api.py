"""The Payment API of the local node (``/payment-api/v1``), answering as the daemon does.

Status codes follow the daemon where it departs from the spec: creating an allocation answers 201,
releasing one 200 ``null`` (404 unknown, 410 released), accepting a document 200 ``null`` (400 for a
wrong amount, an unknown allocation or too little left in it; 410 for a released allocation), and
rejecting a document 501, as the daemon has not implemented it. The money logic lives in
:class:`~golem_local.ledger.Ledger`; this module only reads requests and writes the documents.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from aiohttp import web

from golem_local.eventlog import EventLog
from golem_local.http import HttpError, json_response, query_seconds, read_json
from golem_local.ledger import (
    AllocationRecord,
    DebitNoteRecord,
    InvoiceRecord,
    Ledger,
    PaymentDocument,
    PaymentEvent,
    money,
)
from golem_local.limits import amount_problem
from golem_shared.timestamps import format_timestamp, parse_timestamp

__all__ = [
    "PAYMENT_PREFIX",
    "add_payment_routes",
    "allocation_json",
    "debit_note_json",
    "invoice_json",
    "parse_money",
]

PAYMENT_PREFIX = "/payment-api/v1"

_DEFAULT_POLL_TIMEOUT = 5.0  # seconds, the spec's default
_DEFAULT_MAX_EVENTS = 10
_MAX_EVENTS_LIMIT = 100

_Doc = TypeVar("_Doc", bound=PaymentDocument)

_DEFAULT_REQUESTOR_EVENTS = ("RECEIVED", "CANCELLED")
_EVENT_KINDS = ("Received", "Accepted", "Rejected", "Cancelled", "Settled")


def _event_kind(event: PaymentEvent) -> str:
    """``InvoiceAcceptedEvent`` / ``DebitNoteAcceptedEvent`` -> ``ACCEPTED`` (yagna's pay_event_type names)."""
    name = str(event.get("eventType", ""))
    for kind in _EVENT_KINDS:
        if name.endswith(f"{kind}Event"):
            return kind.upper()
    return name


def parse_money(value: object, what: str) -> Decimal:
    """A decimal amount from the wire (a string, or a number from a lax client); 400 when it is not one."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise HttpError(400, f'{what} must be a decimal string such as "1.5", got {value!r}')
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise HttpError(400, f'{what} must be a decimal string such as "1.5", got {value!r:.60}') from exc
    problem = amount_problem(amount)
    if problem is not None:
        raise HttpError(400, f"{what} {value!r:.60} {problem}")
    return amount


def allocation_json(allocation: AllocationRecord) -> dict[str, Any]:
    """The Allocation schema; ``timeout`` only when one was given, no ``deposit`` (none is ever made)."""
    body: dict[str, Any] = {
        "allocationId": allocation.allocation_id,
        "address": allocation.address,
        "paymentPlatform": allocation.payment_platform,
        "totalAmount": money(allocation.total_amount),
        "spentAmount": money(allocation.spent_amount),
        "remainingAmount": money(allocation.remaining_amount),
        "timestamp": format_timestamp(allocation.timestamp),
        "makeDeposit": False,
    }
    if allocation.timeout is not None:
        body["timeout"] = allocation.timeout
    return body


def _document_json(document: PaymentDocument) -> dict[str, Any]:
    return {
        "issuerId": document.issuer_id,
        "recipientId": document.recipient_id,
        "payeeAddr": document.payee_addr,
        "payerAddr": document.payer_addr,
        "paymentPlatform": document.payment_platform,
        "timestamp": format_timestamp(document.timestamp),
        "agreementId": document.agreement_id,
        "status": document.status,
    }


def debit_note_json(note: DebitNoteRecord) -> dict[str, Any]:
    """The DebitNote schema; no ``paymentDueDate`` (the local network pays on acceptance; the daemon omits it)."""
    body = {"debitNoteId": note.document_id, **_document_json(note)}
    if note.previous_debit_note_id is not None:
        body["previousDebitNoteId"] = note.previous_debit_note_id
    body.update(
        activityId=note.activity_id,
        totalAmountDue=money(note.total_amount_due),
        usageCounterVector=list(note.usage_counter_vector),
    )
    return body


def invoice_json(invoice: InvoiceRecord) -> dict[str, Any]:
    """The Invoice schema; due the moment it is issued."""
    body = {"invoiceId": invoice.document_id, **_document_json(invoice)}
    body.update(
        activityIds=list(invoice.activity_ids),
        amount=money(invoice.amount),
        paymentDueDate=format_timestamp(invoice.timestamp),
    )
    return body


def _query_float(request: web.Request, name: str, default: float) -> float:
    value = query_seconds(request, name, default)
    assert value is not None
    return value


def _query_count(request: web.Request, name: str, default: int | None) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise HttpError(400, f"query parameter {name} must be an integer, got {raw!r}") from exc
    return min(max(value, 1), _MAX_EVENTS_LIMIT)


def _query_after(request: web.Request) -> datetime | None:
    raw = request.query.get("afterTimestamp")
    if raw is None:
        return None
    try:
        return parse_timestamp(raw)
    except ValueError as exc:
        raise HttpError(400, f"afterTimestamp must be an RFC 3339 timestamp, got {raw!r}") from exc


def _platform_parts(platform: str) -> tuple[str, str, str]:
    """``erc20-holesky-tglm`` → ``("erc20", "holesky", "tglm")``; missing parts are empty."""
    driver, network, token = [*platform.split("-", 2), "", ""][:3]
    return driver, network, token


def _platform_name(value: object, default: str) -> str | None:
    """``paymentPlatform`` as sent, or built from ``{driver, network, token}`` with the node's defaults."""
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, dict):
        raise HttpError(400, f"paymentPlatform must be a string or an object, got {value!r}")
    driver, network, token = _platform_parts(default)
    parts = (value.get("driver") or driver, value.get("network") or network, value.get("token") or token)
    return "-".join(str(part) for part in parts).lower()


class _PaymentRoutes:
    def __init__(self, ledger: Ledger, session_of: Callable[[str], str | None]) -> None:
        self.ledger = ledger
        self.session_of = session_of

    async def create_allocation(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise HttpError(400, f"the allocation must be a JSON object, got {body!r}")
        if "totalAmount" not in body:
            raise HttpError(400, "totalAmount is required: the amount to reserve, as a decimal string")
        timeout = body.get("timeout")
        if timeout is not None:  # kept and shown, not enforced: allocations of the local node do not expire
            try:
                timeout = format_timestamp(parse_timestamp(str(timeout)))
            except ValueError as exc:
                raise HttpError(400, f"timeout must be an RFC 3339 timestamp, got {timeout!r}") from exc
        allocation = self.ledger.create_allocation(
            _platform_name(body.get("paymentPlatform"), self.ledger.platform),
            parse_money(body["totalAmount"], "totalAmount"),
            address=body.get("address"),
            timeout=timeout,
        )
        return json_response(allocation_json(allocation), status=201)

    async def list_allocations(self, request: web.Request) -> web.Response:
        live = [allocation_json(a) for a in self.ledger.allocations() if not a.released]
        return json_response(live)

    async def get_allocation(self, request: web.Request) -> web.Response:
        return json_response(allocation_json(self.ledger.allocation(request.match_info["id"])))

    async def release_allocation(self, request: web.Request) -> web.Response:
        self.ledger.release_allocation(request.match_info["id"])
        return json_response(None)

    async def demand_decorations(self, request: web.Request) -> web.Response:
        ids = [part.strip() for raw in request.query.getall("allocationIds", []) for part in raw.split(",")]
        return json_response(self.ledger.demand_decorations([i for i in ids if i]))

    async def requestor_accounts(self, request: web.Request) -> web.Response:
        driver, network, token = _platform_parts(self.ledger.platform)
        account = {
            "platform": self.ledger.platform,
            "address": self.ledger.requestor_id,
            "driver": driver,
            "network": network,
            "token": token.upper().replace("TGLM", "tGLM"),
            "send": True,
            "receive": False,
        }
        return json_response([account])

    def _listing(
        self, request: web.Request, documents: Sequence[_Doc], render: Callable[[_Doc], dict[str, Any]]
    ) -> web.Response:
        after = _query_after(request)
        limit = _query_count(request, "maxItems", None)
        chosen = [d for d in documents if after is None or d.timestamp > after]
        return json_response([render(d) for d in chosen[:limit]])

    async def list_debit_notes(self, request: web.Request) -> web.Response:
        return self._listing(request, self.ledger.debit_notes(), debit_note_json)

    async def get_debit_note(self, request: web.Request) -> web.Response:
        return json_response(debit_note_json(self.ledger.debit_note(request.match_info["id"])))

    async def list_invoices(self, request: web.Request) -> web.Response:
        return self._listing(request, self.ledger.invoices(), invoice_json)

    async def get_invoice(self, request: web.Request) -> web.Response:
        return json_response(invoice_json(self.ledger.invoice(request.match_info["id"])))

    async def _acceptance(self, request: web.Request) -> tuple[Decimal, str]:
        body = await read_json(request)
        if not isinstance(body, dict) or "totalAmountAccepted" not in body or "allocationId" not in body:
            raise HttpError(400, f"the acceptance must be {{totalAmountAccepted, allocationId}}, got {body!r}")
        allocation_id = body["allocationId"]
        if not isinstance(allocation_id, str):
            raise HttpError(400, f"allocationId must be a string, got {allocation_id!r}")
        return parse_money(body["totalAmountAccepted"], "totalAmountAccepted"), allocation_id

    async def accept_debit_note(self, request: web.Request) -> web.Response:
        note = self.ledger.debit_note(request.match_info["id"])  # 404 before the body is judged
        amount, allocation_id = await self._acceptance(request)
        self.ledger.accept_debit_note(note.document_id, amount, allocation_id)
        return json_response(None)

    async def accept_invoice(self, request: web.Request) -> web.Response:
        invoice = self.ledger.invoice(request.match_info["id"])
        amount, allocation_id = await self._acceptance(request)
        self.ledger.accept_invoice(invoice.document_id, amount, allocation_id)
        return json_response(None)

    async def reject(self, request: web.Request) -> web.Response:
        raise HttpError(
            501,
            "rejecting debit notes and invoices is not implemented (as on the daemon); "
            "stop accepting and terminate the agreement instead",
        )

    async def _events(self, request: web.Request, log: EventLog[PaymentEvent]) -> web.Response:
        # yagna 0.17.6 (core/payment/src/api/{invoices,debit_notes}.rs): the requestor's own documents' events are
        # filtered by the header X-Requestor-Events (comma-separated, not trimmed; default RECEIVED,CANCELLED), the
        # provider's by X-Provider-Events (default ACCEPTED,REJECTED,SETTLED,CANCELLED). Every document of this
        # node is the requestor's, so only the first applies here.
        header = request.headers.get("X-Requestor-Events")
        wanted = set(header.split(",")) if header is not None else set(_DEFAULT_REQUESTOR_EVENTS)
        # ?appSessionId= keeps the events of documents whose agreement was confirmed with that appSessionId (yagna
        # joins pay_*_event with pay_agreement.app_session_id).
        session = request.query.get("appSessionId")

        def accept(event: PaymentEvent) -> bool:
            if _event_kind(event) not in wanted:
                return False
            return session is None or self._session_of_event(event) == session

        events = await log.collect(
            after=_query_after(request),
            timeout=_query_float(request, "timeout", _DEFAULT_POLL_TIMEOUT),
            max_events=_query_count(request, "maxEvents", _DEFAULT_MAX_EVENTS) or _DEFAULT_MAX_EVENTS,
            accept=accept,
        )
        return json_response(events)

    def _session_of_event(self, event: PaymentEvent) -> str | None:
        if "invoiceId" in event:
            agreement_id = self.ledger.invoice(event["invoiceId"]).agreement_id
        else:
            agreement_id = self.ledger.debit_note(event["debitNoteId"]).agreement_id
        return self.session_of(agreement_id)

    async def debit_note_events(self, request: web.Request) -> web.Response:
        return await self._events(request, self.ledger.debit_note_events)

    async def invoice_events(self, request: web.Request) -> web.Response:
        return await self._events(request, self.ledger.invoice_events)


def add_payment_routes(
    app: web.Application, ledger: Ledger, session_of: Callable[[str], str | None] = lambda _agreement_id: None
) -> None:
    """Serve ``ledger`` under ``/payment-api/v1`` on ``app``; ``session_of(agreement_id)`` is its appSessionId."""
    routes = _PaymentRoutes(ledger, session_of)
    p = PAYMENT_PREFIX
    app.router.add_routes(
        [
            web.post(f"{p}/allocations", routes.create_allocation),
            web.get(f"{p}/allocations", routes.list_allocations),
            web.get(f"{p}/allocations/{{id}}", routes.get_allocation),
            web.delete(f"{p}/allocations/{{id}}", routes.release_allocation),
            web.get(f"{p}/demandDecorations", routes.demand_decorations),
            web.get(f"{p}/requestorAccounts", routes.requestor_accounts),
            web.get(f"{p}/debitNotes", routes.list_debit_notes),
            web.get(f"{p}/debitNotes/{{id}}", routes.get_debit_note),
            web.post(f"{p}/debitNotes/{{id}}/accept", routes.accept_debit_note),
            web.post(f"{p}/debitNotes/{{id}}/reject", routes.reject),
            web.get(f"{p}/debitNoteEvents", routes.debit_note_events),
            web.get(f"{p}/invoices", routes.list_invoices),
            web.get(f"{p}/invoices/{{id}}", routes.get_invoice),
            web.post(f"{p}/invoices/{{id}}/accept", routes.accept_invoice),
            web.post(f"{p}/invoices/{{id}}/reject", routes.reject),
            web.get(f"{p}/invoiceEvents", routes.invoice_events),
        ]
    )
