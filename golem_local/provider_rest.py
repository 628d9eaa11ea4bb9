"""A provider on a real daemon: the local network's own provider logic, speaking the daemon's provider REST API.

A real provider agent drives its own yagna daemon over REST; so does :class:`RestProvider`. It runs the same
:class:`~golem_local.provider.LocalProvider` (negotiation) and :class:`~golem_local.activity.ActivityHub`
(activities, metering, debit notes, the invoice when an agreement ends) as the local network's providers, with the
ports of :mod:`golem_local.provider_port` implemented over HTTP:

* :class:`RestProviderMarket`: ``POST /offers``, ``GET /offers/{id}/events``, counter and reject proposals,
  approve and reject agreements, ``GET /agreementEvents``, terminate;
* :class:`RestProviderPayments`: ``POST /debitNotes`` and ``/invoices``, then ``…/send``, one document at a time
  in the order they were issued (the last debit note of an activity goes out before its agreement's invoice);
* :class:`RestExeUnit`: the part of an exe-unit the daemon's REST API reaches. It reads
  ``GET /activity-api/v1/events`` and answers ``CreateActivity`` by creating the activity in the hub (which
  meters it and bills it) and reporting its state with ``PUT /activity/{id}/state``; ``DestroyActivity`` by
  destroying it there (its last debit note) and reporting ``Terminated``. Commands cannot reach it: the daemon
  sends ExeScript straight to a real exe-unit process over its bus, not over REST, so an activity here runs no
  commands and costs what its time costs.

What the daemon's API does not say, and how it is filled in. A requestor's proposal names its issuer and the
proposal it answers (``prevProposalId``), not its demand: :class:`RestProviderMarket` groups proposals into
negotiations by that chain (an answer to one of our counter-proposals continues its negotiation; an answer to
the market's ``Initial`` proposal starts one). An agreement names its demand and offer, not the proposals it was
made from: it is matched to the counter-proposal of ours whose properties and constraints it carries (and whose
requestor's proposal its demand side carries); none matching, the provider refuses it.

This module is a client of the daemon only; it uses aiohttp and never imports the requestor (``golem_api``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Any

import aiohttp
from attrs import define, evolve, field, frozen

from golem_local.activity import ActivityHub, ExeUnitActivity, RuntimeFactory
from golem_local.config import ProviderSpec
from golem_local.http import HttpError
from golem_local.ledger import money
from golem_local.market_model import (
    AgreementOperationRecord,
    AgreementRecord,
    AgreementState,
    LocalMarketError,
    LocalMarketTimeoutError,
    MarketBadRequestError,
    MarketConflictError,
    MarketGoneError,
    MarketNotFoundError,
    ProposalRecord,
    ProposalRejectionRecord,
    ProposalState,
)
from golem_local.provider import LocalProvider
from golem_local.provider_port import OfferAgreement, OfferEvent, OfferProposal
from golem_local.runtime.base import OfferTemplate
from golem_shared.errors import LocalNodeError
from golem_shared.tasks import TaskSet, wait_event
from golem_shared.timestamps import format_timestamp, parse_timestamp, utc_now

__all__ = [
    "DaemonUnreachableError",
    "IssuedDocument",
    "ProviderRestClient",
    "RestExeUnit",
    "RestProvider",
    "RestProviderMarket",
    "RestProviderPayments",
]

_log = logging.getLogger(__name__)

_CALL_TIMEOUT = 30.0  # seconds one ordinary call may take
_POLL_MARGIN = 10.0  # seconds a long-poll may take beyond the timeout it asked the daemon for
_REST_POLL_SEC = 5.0  # the longest long-poll asked of a daemon (a provider's offer and agreement events)
_RETRY_PAUSE = 1.0  # seconds between attempts after the daemon failed to answer
_SEND_ATTEMPTS = 3  # tries to issue or send one document
_APPROVE_TIMEOUT = 10.0  # seconds the daemon may take to approve (it tells the requestor)
_ACTIVITY_POLL = 5.0  # seconds one read of activity events may wait
_DRAIN_TIMEOUT = 10.0  # seconds aclose() gives the documents still queued

_ERRORS: dict[int, type[LocalMarketError]] = {
    400: MarketBadRequestError,
    404: MarketNotFoundError,
    408: LocalMarketTimeoutError,
    409: MarketConflictError,
    410: MarketGoneError,
}


class DaemonUnreachableError(LocalMarketError):
    """The daemon did not answer (connection refused, reset or too slow)."""

    status = 503


def _transient(exc: LocalMarketError) -> bool:
    """Worth retrying: the daemon did not answer, or failed inside (5xx)."""
    return exc.status >= 500


class ProviderRestClient:
    """One identity's REST calls to a daemon: ``api_url`` (the REST root) and that identity's ``app_key``.

    Every refusal is raised as the :class:`~golem_local.market_model.LocalMarketError` of its status (404
    :class:`MarketNotFoundError`, …; other statuses a plain ``LocalMarketError`` carrying it), with the method,
    path and the daemon's message; no answer at all as :class:`DaemonUnreachableError`.
    """

    def __init__(self, api_url: str, app_key: str) -> None:
        if not app_key:
            raise LocalNodeError("the provider's app key must not be empty")
        self.api_url = api_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {app_key}"}
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"<ProviderRestClient {self.api_url}>"

    async def start(self) -> None:
        """Open the HTTP session (in the running loop)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers)

    async def aclose(self) -> None:
        """Close the HTTP session. Calling it twice is harmless."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        timeout: float = _CALL_TIMEOUT,
    ) -> Any:
        """``method path`` with an optional JSON ``body``; the decoded answer (``None`` when empty)."""
        if self._session is None:
            raise LocalNodeError(f"{self!r} is not started")
        what = f"{method} {path}"
        try:
            async with self._session.request(
                method,
                self.api_url + path,
                json=body,
                params=dict(params) if params else None,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise DaemonUnreachableError(f"{what}: the daemon at {self.api_url} did not answer: {exc!r}") from exc
        try:
            decoded: Any = json.loads(text) if text else None
        except ValueError:
            decoded = text
        if status >= 400:
            message = decoded.get("message") if isinstance(decoded, dict) else decoded
            error = _ERRORS.get(status, LocalMarketError)(f"{what} answered {status}: {message}")
            error.status = status
            raise error
        return decoded

    async def identity(self) -> str:
        """The node id of this app key's identity (``GET /me``)."""
        me = await self.call("GET", "/me")
        return str(me["identity"])


def _poll(after: datetime, timeout: float, max_events: int) -> dict[str, str]:
    """The query of a long poll for the events after ``after``."""
    return {"afterTimestamp": format_timestamp(after), "timeout": _seconds(timeout), "maxEvents": str(max_events)}


def _seconds(value: float) -> str:
    return f"{max(value, 0.0):.3f}".rstrip("0").rstrip(".") or "0"


@frozen
class _Received:
    """A requestor's proposal as the provider received it."""

    negotiation: str
    issuer_id: str
    properties: dict[str, Any]
    constraints: str


@frozen
class _Counter:
    """One of our counter-proposals, with the requestor's proposal it answered."""

    counter_id: str
    properties: dict[str, Any]
    constraints: str
    answered: _Received


@define
class _OfferState:
    received: dict[str, _Received] = field(factory=dict)  # proposal id -> the requestor's proposal
    counters: list[_Counter] = field(factory=list)  # oldest first


def _agreement_record(data: Mapping[str, Any], built_on: str | None) -> AgreementRecord:
    """The daemon's agreement JSON as the hub's record; proposal ids it does not carry stay empty."""
    demand, offer = data["demand"], data["offer"]
    timestamp = parse_timestamp(data["timestamp"])

    def side(part: Mapping[str, Any], issuer: str, proposal_id: str) -> ProposalRecord:
        return ProposalRecord(
            proposal_id=proposal_id,
            issuer_id=str(part[issuer]),
            properties=dict(part.get("properties") or {}),
            constraints=str(part.get("constraints") or ""),
            state=ProposalState.ACCEPTED,
            timestamp=parse_timestamp(part["timestamp"]) if part.get("timestamp") else timestamp,
            demand_id=str(demand.get("demandId", "")),
            offer_id=str(offer.get("offerId", "")),
        )

    return AgreementRecord(
        agreement_id=str(data["agreementId"]),
        demand=side(demand, "requestorId", ""),
        offer=side(offer, "providerId", built_on or ""),
        valid_to=parse_timestamp(data["validTo"]),
        state=AgreementState(data.get("state", "Pending")),
        timestamp=timestamp,
    )


_ENDED_STATES = {
    "AgreementTerminatedEvent": AgreementState.TERMINATED,
    "AgreementRejectedEvent": AgreementState.REJECTED,
    "AgreementCancelledEvent": AgreementState.CANCELLED,
}


class RestProviderMarket:
    """:class:`~golem_local.provider_port.ProviderMarket` over a daemon's market API, as ``node_id``.

    Also the hub's agreement lookup (``get_agreement``): the agreements it saw on its offers' events, with the
    states it learnt since (approved by us, terminated, …). See the module docstring for ``negotiation`` and
    ``built_on``.
    """

    def __init__(self, client: ProviderRestClient, node_id: str) -> None:
        self.client = client
        self._node_id = node_id
        self._offers: dict[str, _OfferState] = {}
        self._agreements: dict[str, AgreementRecord] = {}
        self._since = utc_now()  # agreement events before this are of earlier runs

    def __repr__(self) -> str:
        return f"<RestProviderMarket {self.client.api_url} as {self._node_id}>"

    @property
    def node_id(self) -> str:
        return self._node_id

    def now_ms(self) -> int:
        return int(utc_now().timestamp() * 1000)

    @property
    def longest_poll(self) -> float:
        return _REST_POLL_SEC

    # -- offers -------------------------------------------------------------------------------------------

    async def subscribe_offer(self, properties: Mapping[str, Any], constraints: str) -> str:
        offer_id = await self.client.call(
            "POST", "/market-api/v1/offers", body={"properties": dict(properties), "constraints": constraints}
        )
        self._offers[str(offer_id)] = _OfferState()
        return str(offer_id)

    async def unsubscribe_offer(self, offer_id: str) -> None:
        self._offers.pop(offer_id, None)
        await self.client.call("DELETE", f"/market-api/v1/offers/{offer_id}")

    async def offer_events(self, offer_id: str, *, timeout: float, max_events: int) -> list[OfferEvent]:
        try:
            raw = await self.client.call(
                "GET",
                f"/market-api/v1/offers/{offer_id}/events",
                params={"timeout": _seconds(timeout), "maxEvents": str(max_events)},
                timeout=timeout + _POLL_MARGIN,
            )
        except LocalMarketError as exc:
            if not _transient(exc):
                raise
            _log.warning("reading the events of offer %s failed, retrying: %s", offer_id, exc)
            await asyncio.sleep(min(timeout, _RETRY_PAUSE))
            return []
        state = self._offers.setdefault(offer_id, _OfferState())
        events: list[OfferEvent] = []
        for item in raw or []:
            kind = item.get("eventType")
            if kind == "ProposalEvent":
                events.append(self._proposal(state, item["proposal"]))
            elif kind == "ProposalRejectedEvent":
                date = parse_timestamp(item["eventDate"])
                events.append(ProposalRejectionRecord(date, str(item["proposalId"]), item.get("reason")))
            elif kind == "AgreementEvent":
                events.append(self._agreement(state, item["agreement"]))
            else:
                _log.debug("offer %s: event %s ignored", offer_id, kind)
        return events

    def _proposal(self, state: _OfferState, data: Mapping[str, Any]) -> OfferProposal:
        proposal_id = str(data["proposalId"])
        previous = data.get("prevProposalId")
        ours = next((c for c in state.counters if c.counter_id == previous), None)
        negotiation = ours.answered.negotiation if ours is not None else str(previous or proposal_id)
        properties = dict(data.get("properties") or {})
        constraints = str(data.get("constraints") or "")
        state.received[proposal_id] = _Received(negotiation, str(data.get("issuerId", "")), properties, constraints)
        return OfferProposal(proposal_id, negotiation, properties, constraints)

    def _agreement(self, state: _OfferState, data: Mapping[str, Any]) -> OfferAgreement:
        demand, offer = data["demand"], data["offer"]
        counter = next(
            (
                c
                for c in reversed(state.counters)
                if c.properties == offer.get("properties")
                and c.constraints == offer.get("constraints")
                and c.answered.properties == demand.get("properties")
                and c.answered.constraints == demand.get("constraints")
                and c.answered.issuer_id == demand.get("requestorId")
            ),
            None,
        )
        built_on = counter.counter_id if counter is not None else None
        negotiation = counter.answered.negotiation if counter is not None else f"demand {demand.get('demandId')}"
        record = _agreement_record(data, built_on)
        self._agreements[record.agreement_id] = record
        return OfferAgreement(record.agreement_id, negotiation, built_on, record.demand.properties)

    async def counter_proposal(
        self, offer_id: str, proposal_id: str, properties: Mapping[str, Any], constraints: str
    ) -> str:
        counter_id = str(
            await self.client.call(
                "POST",
                f"/market-api/v1/offers/{offer_id}/proposals/{proposal_id}",
                body={"properties": dict(properties), "constraints": constraints},
            )
        )
        state = self._offers.get(offer_id)
        answered = state.received.get(proposal_id) if state is not None else None
        if state is not None and answered is not None:
            state.counters.append(_Counter(counter_id, dict(properties), constraints, answered))
        return counter_id

    async def reject_proposal(self, offer_id: str, proposal_id: str, reason: dict[str, Any]) -> None:
        await self.client.call("POST", f"/market-api/v1/offers/{offer_id}/proposals/{proposal_id}/reject", body=reason)

    # -- agreements ---------------------------------------------------------------------------------------

    def get_agreement(self, agreement_id: str, *, by: str | None = None) -> AgreementRecord:
        """An agreement seen on our offers, as we know it now; 404 when unknown or ``by`` is no party."""
        record = self._agreements.get(agreement_id)
        if record is None or by not in (None, record.requestor_id, record.provider_id):
            raise MarketNotFoundError(f"agreement {agreement_id} not found (not one of {self._node_id}'s)")
        return record

    def _update(self, agreement_id: str, **changes: Any) -> None:
        record = self._agreements.get(agreement_id)
        if record is not None:
            self._agreements[agreement_id] = evolve(record, **changes)

    async def approve_agreement(self, agreement_id: str) -> None:
        await self.client.call(
            "POST",
            f"/market-api/v1/agreements/{agreement_id}/approve",
            params={"timeout": _seconds(_APPROVE_TIMEOUT)},
            timeout=_APPROVE_TIMEOUT + _POLL_MARGIN,
        )
        self._update(agreement_id, state=AgreementState.APPROVED, approved_date=utc_now())

    async def reject_agreement(self, agreement_id: str, reason: dict[str, Any]) -> None:
        await self.client.call("POST", f"/market-api/v1/agreements/{agreement_id}/reject", body=reason)
        self._update(agreement_id, state=AgreementState.REJECTED, reason=reason)

    async def agreement_events(
        self, *, after: datetime | None, timeout: float, max_events: int
    ) -> list[AgreementOperationRecord]:
        since = after if after is not None else self._since
        try:
            raw = await self.client.call(
                "GET",
                "/market-api/v1/agreementEvents",
                params=_poll(since, timeout, max_events),
                timeout=timeout + _POLL_MARGIN,
            )
        except LocalMarketError as exc:
            if not _transient(exc):
                raise
            _log.warning("reading agreement events failed, retrying: %s", exc)
            await asyncio.sleep(min(timeout, _RETRY_PAUSE))
            return []
        events = []
        for item in raw or []:
            event = AgreementOperationRecord(
                event_type=str(item["eventType"]),
                event_date=parse_timestamp(item["eventDate"]),
                agreement_id=str(item["agreementId"]),
                reason=item.get("reason"),
                terminator=item.get("terminator"),
            )
            if event.event_date <= since:
                continue  # the daemon's afterTimestamp is meant as "after"; be sure
            ended = _ENDED_STATES.get(event.event_type)
            if ended is not None:
                self._update(event.agreement_id, state=ended, terminator=event.terminator, reason=event.reason)
            events.append(event)
        return events

    async def terminate_agreement(self, agreement_id: str, reason: dict[str, Any]) -> None:
        await self.client.call("POST", f"/market-api/v1/agreements/{agreement_id}/terminate", body=reason)


@define
class IssuedDocument:
    """A debit note or invoice the provider issued through :class:`RestProviderPayments`.

    ``document_id`` is the daemon's id once it was created; ``sent`` once the requestor's daemon received it;
    ``error`` why it could not be issued or sent.
    """

    kind: str  # "debit note" or "invoice"
    agreement_id: str
    activity_ids: list[str]
    amount: Decimal
    body: dict[str, Any]
    document_id: str | None = None
    sent: bool = False
    error: str | None = None


class RestProviderPayments:
    """:class:`~golem_local.provider_port.ProviderPayments` over a daemon's payment API, on ``platform``.

    Issuing only queues the document (the hub issues from synchronous code); one owned task creates and sends
    the queued documents in order, retrying a daemon that does not answer (``_SEND_ATTEMPTS`` tries a step).
    A debit note has no ``paymentDueDate``, as on the local network; an invoice is due at once. The daemon takes
    issuer, recipient and addresses from the agreement, so ``provider_id`` and ``payee_addr`` are not sent.
    ``issued`` holds every document, in order, with its id and fate.
    """

    def __init__(self, client: ProviderRestClient, platform: str) -> None:
        self.client = client
        self._platform = platform
        self.issued: list[IssuedDocument] = []
        self._queue: deque[IssuedDocument] = deque()
        self._wake: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._tasks = TaskSet("provider payments", logger=_log)

    def __repr__(self) -> str:
        return f"<RestProviderPayments {self.client.api_url} on {self._platform}, {len(self.issued)} issued>"

    @property
    def platform(self) -> str:
        return self._platform

    @property
    def requestor_id(self) -> str | None:
        return None

    def issue_debit_note(
        self,
        *,
        agreement_id: str,
        activity_id: str,
        provider_id: str,
        payee_addr: str,
        total_amount_due: Decimal,
        usage_counter_vector: list[float],
    ) -> IssuedDocument:
        body = {
            "activityId": activity_id,
            "totalAmountDue": money(total_amount_due),
            "usageCounterVector": list(usage_counter_vector),
        }
        return self._enqueue(IssuedDocument("debit note", agreement_id, [activity_id], total_amount_due, body))

    def issue_invoice(
        self, *, agreement_id: str, activity_ids: list[str], provider_id: str, payee_addr: str, amount: Decimal
    ) -> IssuedDocument:
        body = {
            "agreementId": agreement_id,
            "activityIds": list(activity_ids),
            "amount": money(amount),
            "paymentDueDate": format_timestamp(utc_now()),
        }
        return self._enqueue(IssuedDocument("invoice", agreement_id, list(activity_ids), amount, body))

    def _enqueue(self, document: IssuedDocument) -> IssuedDocument:
        if self._wake is None or self._idle is None:
            raise LocalNodeError(f"{self!r} is not started: it cannot send {document.kind}s")
        self.issued.append(document)
        self._queue.append(document)
        self._idle.clear()
        self._wake.set()
        return document

    async def start(self) -> None:
        """Start sending what is issued."""
        self._wake, self._idle = asyncio.Event(), asyncio.Event()
        self._idle.set()
        self._tasks.spawn(self._send_all(), name="send documents")

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until every issued document was handled; whether they all were."""
        if self._idle is None:
            return not self._queue
        return await wait_event(self._idle, timeout)

    async def aclose(self, timeout: float = _DRAIN_TIMEOUT) -> None:
        """Give the queued documents up to ``timeout`` s, then stop."""
        if not await self.drain(timeout):
            _log.error("%d document(s) were still unsent when the provider stopped", len(self._queue))
        await self._tasks.aclose()

    async def _send_all(self) -> None:
        assert self._wake is not None
        assert self._idle is not None
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            document = self._queue[0]
            try:
                await self._send(document)
            except LocalMarketError as exc:
                document.error = str(exc)
                _log.error("could not issue the %s of agreement %s: %s", document.kind, document.agreement_id, exc)
            self._queue.popleft()

    async def _send(self, document: IssuedDocument) -> None:
        collection = "debitNotes" if document.kind == "debit note" else "invoices"
        if document.document_id is None:
            created = await self._attempt(
                lambda: self.client.call("POST", f"/payment-api/v1/{collection}", body=document.body)
            )
            key = "debitNoteId" if document.kind == "debit note" else "invoiceId"
            document.document_id = str(created[key])
        path = f"/payment-api/v1/{collection}/{document.document_id}/send"
        await self._attempt(lambda: self.client.call("POST", path))
        document.sent = True
        _log.debug("sent %s %s (%s)", document.kind, document.document_id, money(document.amount))

    async def _attempt(self, call: Any) -> Any:
        for attempt in range(1, _SEND_ATTEMPTS + 1):
            try:
                return await call()
            except LocalMarketError as exc:
                if not _transient(exc) or attempt == _SEND_ATTEMPTS:
                    raise
                _log.warning("the daemon failed (try %d of %d), retrying: %s", attempt, _SEND_ATTEMPTS, exc)
                await asyncio.sleep(_RETRY_PAUSE)
        raise AssertionError("unreachable")


def _event_kind(event: Mapping[str, Any]) -> str:
    """``CreateActivity`` from ``{"CreateActivity": {…}}`` (yagna 0.17) or from the spec's plain string."""
    kind = event.get("eventType")
    if isinstance(kind, dict):
        return str(next(iter(kind), ""))
    return str(kind or "")


class RestExeUnit:
    """What of an exe-unit the daemon's REST API reaches: activity creation and destruction (module docstring).

    Also the provider's :class:`~golem_local.provider.Billing`: when an agreement ends it has the hub destroy
    the agreement's live activities and invoice them, and reports those activities ``Terminated``.
    ``handled`` counts the activity events answered, by kind.
    """

    def __init__(self, client: ProviderRestClient, agreements: RestProviderMarket, hub: ActivityHub) -> None:
        self.client = client
        self.agreements = agreements
        self.hub = hub
        self.handled: dict[str, int] = {}
        self._seen: set[tuple[str, str]] = set()
        self._tasks = TaskSet("provider exe-unit", logger=_log)

    def __repr__(self) -> str:
        return f"<RestExeUnit {self.client.api_url} {self.handled}>"

    async def start(self) -> None:
        """Start answering activity events from now on."""
        self._tasks.spawn(self._events(utc_now()), name="activity events")

    async def aclose(self) -> None:
        """Stop answering."""
        await self._tasks.aclose()

    async def _events(self, since: datetime) -> None:
        cursor = since
        while True:
            try:
                raw = await self.client.call(
                    "GET",
                    "/activity-api/v1/events",
                    params=_poll(cursor, _ACTIVITY_POLL, 10),
                    timeout=_ACTIVITY_POLL + _POLL_MARGIN,
                )
            except LocalMarketError as exc:
                if not _transient(exc):
                    raise
                _log.warning("reading activity events failed, retrying: %s", exc)
                await asyncio.sleep(_RETRY_PAUSE)
                continue
            for event in raw or []:
                date = parse_timestamp(event["eventDate"])
                cursor = max(cursor, date)
                kind, activity_id = _event_kind(event), str(event.get("activityId", ""))
                if (kind, activity_id) in self._seen:
                    continue  # events are not consumed: the same one may come again
                self._seen.add((kind, activity_id))
                self.handled[kind] = self.handled.get(kind, 0) + 1
                if kind == "CreateActivity":
                    await self._create(activity_id, str(event.get("agreementId", "")))
                elif kind == "DestroyActivity":
                    await self._destroy(activity_id)
                else:
                    _log.debug("activity event %s for %s ignored", kind, activity_id)

    async def _report(self, activity_id: str, state: list[str | None], reason: str | None = None) -> None:
        body: dict[str, Any] = {"state": state}
        if reason is not None:
            body["reason"] = reason
        try:
            await self.client.call("PUT", f"/activity-api/v1/activity/{activity_id}/state", body=body)
        except LocalMarketError as exc:
            _log.warning("could not report activity %s as %s: %s", activity_id, state, exc)

    @staticmethod
    def _state(activity: ExeUnitActivity) -> list[str | None]:
        following = activity.next_state.value if activity.next_state is not None else None
        return [activity.state.value, following]

    async def _create(self, activity_id: str, agreement_id: str) -> None:
        try:
            agreement = self.agreements.get_agreement(agreement_id)
            activity = await self.hub.create(agreement_id, by=agreement.requestor_id, activity_id=activity_id)
        except (LocalMarketError, HttpError) as exc:
            _log.info("activity %s on agreement %s refused: %s", activity_id, agreement_id, exc)
            await self._report(activity_id, ["Terminated", None], reason=str(exc))
            return
        await self._report(activity_id, self._state(activity))

    async def _destroy(self, activity_id: str) -> None:
        try:
            await self.hub.destroy(activity_id)
        except HttpError as exc:
            _log.debug("activity %s: %s", activity_id, exc)
        await self._report(activity_id, ["Terminated", None])

    async def agreement_ended(self, agreement_id: str, provider_id: str) -> None:
        """``Billing``: the hub destroys the agreement's live activities and invoices; report them ended."""
        live = [a for a in self.hub.activities(agreement_id) if a.live]
        await self.hub.agreement_ended(agreement_id, provider_id)
        for activity in live:
            await self._report(activity.activity_id, ["Terminated", None], reason="the agreement ended")


class RestProvider:
    """A provider published on a real daemon (``api_url``, the provider identity's ``app_key``), run by the
    local network's own provider code over REST; an async context manager.

    ``spec`` shapes it as it shapes a local provider (resources, prices, subnet, debit-note interval);
    ``payment_platform`` is where it is paid (its address there is its node id). Activities run
    ``runtime_factory``'s runtimes (idle ones by default: the daemon sends them no commands).
    """

    def __init__(
        self,
        api_url: str,
        app_key: str,
        spec: ProviderSpec,
        *,
        payment_platform: str,
        runtime_factory: RuntimeFactory | None = None,
        runtime_offer: OfferTemplate | None = None,
    ) -> None:
        self.spec = spec
        self.payment_platform = payment_platform
        self.client = ProviderRestClient(api_url, app_key)
        self._runtime_factory = runtime_factory
        self._runtime_offer = runtime_offer
        self.market: RestProviderMarket | None = None
        self.payments = RestProviderPayments(self.client, payment_platform)
        self.hub: ActivityHub | None = None
        self.exe_unit: RestExeUnit | None = None
        self.provider: LocalProvider | None = None

    def __repr__(self) -> str:
        return f"<RestProvider {self.spec.name} on {self.client.api_url}>"

    @property
    def node_id(self) -> str:
        """The provider's identity on the daemon (known once started)."""
        if self.market is None:
            raise LocalNodeError(f"{self!r} is not started")
        return self.market.node_id

    async def start(self) -> None:
        """Learn the identity, then start sending documents, answering activities and negotiating."""
        if self.provider is not None:
            raise LocalNodeError(f"{self!r} is already running")
        await self.client.start()
        try:
            node_id = await self.client.identity()
            self.market = RestProviderMarket(self.client, node_id)
            self.hub = ActivityHub(
                self.market,
                self.payments,
                providers={node_id: self.spec},
                runtime_factory=self._runtime_factory,
            )
            self.exe_unit = RestExeUnit(self.client, self.market, self.hub)
            self.provider = LocalProvider(
                self.spec,
                self.market,
                payment_platform=self.payment_platform,
                billing=self.exe_unit,
                runtime_offer=self._runtime_offer,
            )
            await self.payments.start()
            await self.exe_unit.start()
            await self.provider.start()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Withdraw the offer, stop the activities, send what is still queued (bounded), close the session."""
        try:
            if self.provider is not None:
                await self.provider.aclose()
            if self.exe_unit is not None:
                await self.exe_unit.aclose()
            if self.hub is not None:
                await self.hub.aclose()
            await self.payments.aclose()
        finally:
            await self.client.aclose()

    async def __aenter__(self) -> RestProvider:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()
