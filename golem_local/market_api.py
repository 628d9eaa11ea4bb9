"""``/market-api/v1`` of the local node: the daemon's market API over a :class:`LocalMarket`.

Every call acts as the node's identity (``node_id``): its demands and offers, the agreements it is a party
to. Status codes follow the daemon where it differs from the spec (counter-proposal and agreement creation
answer 200 with the new id as a JSON string; terminate and cancel answer 200 with an empty body). Errors of
the market carry their status (:class:`~golem_local.market_model.LocalMarketError`) and become
``{"message": …}`` bodies here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from golem_local.http import HttpError, json_response, query_seconds, read_json
from golem_local.market import LocalMarket
from golem_local.market_model import (
    AgreementEventRecord,
    AgreementOperationRecord,
    AgreementRecord,
    LocalMarketError,
    MarketEvent,
    MarketSubscription,
    ProposalEventRecord,
    ProposalRecord,
)
from golem_shared.timestamps import format_timestamp, parse_timestamp

__all__ = [
    "MARKET_PREFIX",
    "add_market_routes",
    "agreement_event_json",
    "agreement_json",
    "market_event_json",
    "proposal_json",
]

MARKET_PREFIX = "/market-api/v1"
_MAX_EVENTS = 100

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def proposal_json(proposal: ProposalRecord) -> dict[str, Any]:
    """``{properties, constraints, proposalId, issuerId, state, timestamp, prevProposalId?}``."""
    body: dict[str, Any] = {
        "properties": proposal.properties,
        "constraints": proposal.constraints,
        "proposalId": proposal.proposal_id,
        "issuerId": proposal.issuer_id,
        "state": proposal.state.value,
        "timestamp": format_timestamp(proposal.timestamp),
    }
    if proposal.prev_proposal_id is not None:
        body["prevProposalId"] = proposal.prev_proposal_id
    return body


def _subscription_json(sub: MarketSubscription) -> dict[str, Any]:
    side = ("demandId", "requestorId") if sub.kind == "demand" else ("offerId", "providerId")
    return {
        "properties": sub.properties,
        "constraints": sub.constraints,
        side[0]: sub.subscription_id,
        side[1]: sub.issuer_id,
        "timestamp": format_timestamp(sub.timestamp),
    }


def agreement_json(agreement: AgreementRecord) -> dict[str, Any]:
    """The nested Agreement: ``demand`` is the requestor's last proposal, ``offer`` the provider's."""
    demand, offer = agreement.demand, agreement.offer
    body: dict[str, Any] = {
        "agreementId": agreement.agreement_id,
        "demand": {
            "properties": demand.properties,
            "constraints": demand.constraints,
            "demandId": demand.demand_id,  # the demand subscription, as yagna (golem-js looks the demand up by it)
            "requestorId": demand.issuer_id,
            "timestamp": format_timestamp(demand.timestamp),
        },
        "offer": {
            "properties": offer.properties,
            "constraints": offer.constraints,
            "offerId": offer.offer_id,  # the offer subscription, as yagna
            "providerId": offer.issuer_id,
            "timestamp": format_timestamp(offer.timestamp),
        },
        "validTo": format_timestamp(agreement.valid_to),
        "state": agreement.state.value,
        "timestamp": format_timestamp(agreement.timestamp),
    }
    if agreement.approved_date is not None:
        body["approvedDate"] = format_timestamp(agreement.approved_date)
    if agreement.app_session_id is not None:
        body["appSessionId"] = agreement.app_session_id
    return body


def market_event_json(event: MarketEvent) -> dict[str, Any]:
    """A subscription event tagged by ``eventType``."""
    date = format_timestamp(event.event_date)
    if isinstance(event, ProposalEventRecord):
        return {"eventType": "ProposalEvent", "eventDate": date, "proposal": proposal_json(event.proposal)}
    if isinstance(event, AgreementEventRecord):
        return {"eventType": "AgreementEvent", "eventDate": date, "agreement": agreement_json(event.agreement)}
    body: dict[str, Any] = {"eventType": "ProposalRejectedEvent", "eventDate": date, "proposalId": event.proposal_id}
    if event.reason is not None:
        body["reason"] = event.reason
    return body


def agreement_event_json(event: AgreementOperationRecord) -> dict[str, Any]:
    """``Agreement{Approved,Rejected,Cancelled,Terminated}Event`` with ``reason?`` and ``terminator?``."""
    body: dict[str, Any] = {
        "eventType": event.event_type,
        "eventDate": format_timestamp(event.event_date),
        "agreementId": event.agreement_id,
    }
    if event.reason is not None and event.event_type != "AgreementApprovedEvent":
        body["reason"] = event.reason
    if event.event_type == "AgreementTerminatedEvent":
        body["terminator"] = event.terminator
        body["signature"] = ""  # required by the spec; the local node signs nothing
    return body


def _float_query(request: web.Request, name: str, default: float) -> float:
    value = query_seconds(request, name, default)
    assert value is not None
    return value


def _max_events(request: web.Request) -> int:
    raw = request.query.get("maxEvents", "10")
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, f"query parameter maxEvents={raw!r} is not a whole number") from None
    if value < 1:
        raise HttpError(400, f"query parameter maxEvents={value} must be at least 1")
    return min(value, _MAX_EVENTS)


def _timestamp_query(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return parse_timestamp(raw)
    except ValueError as exc:
        raise HttpError(400, f"query parameter {name}: {exc}") from None


async def _demand_offer_body(request: web.Request) -> tuple[dict[str, Any], str]:
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
        raise HttpError(400, "the body must be an object {properties: {…}, constraints: '…'}")
    constraints = body.get("constraints", "")
    if not isinstance(constraints, str):
        raise HttpError(400, f"constraints must be a string, not {constraints!r}")
    return body["properties"], constraints


async def _reason(request: web.Request) -> dict[str, Any] | None:
    """The optional Reason body: ``{"message": …, …}``, ``null`` or nothing (a bare string is accepted)."""
    if not (await request.read()).strip():
        return None
    body = await read_json(request)
    if body is None or isinstance(body, dict):
        return body
    if isinstance(body, str):
        return {"message": body}
    raise HttpError(400, f"the reason must be an object {{message: '…'}} or null, not {body!r}")


def _guarded(handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except LocalMarketError as exc:
            raise HttpError(exc.status, exc.message) from exc

    return guarded


def _ids(request: web.Request) -> tuple[str, str]:
    return request.match_info["subscription"], request.match_info["proposal"]


def _empty(status: int) -> web.Response:
    return web.Response(status=status)


class _MarketApi:
    def __init__(self, market: LocalMarket, node_id: str) -> None:
        self.market = market
        self.me = node_id

    # -- demands and offers (one set of handlers, ``kind`` tells the side) --------------------------------

    def subscribe(self, kind: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            properties, constraints = await _demand_offer_body(request)
            if kind == "demand":
                return json_response(self.market.subscribe_demand(self.me, properties, constraints), status=201)
            return json_response(self.market.subscribe_offer(self.me, properties, constraints), status=201)

        return handler

    def list_subscriptions(self, kind: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            return json_response([_subscription_json(s) for s in self.market.subscriptions(kind, self.me)])

        return handler

    def unsubscribe(self, kind: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            sub_id = request.match_info["subscription"]
            if kind == "demand":
                self.market.unsubscribe_demand(sub_id, by=self.me)
            else:
                self.market.unsubscribe_offer(sub_id, by=self.me)
            return _empty(204)

        return handler

    def events(self, kind: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            events = await self.market.collect_events(
                request.match_info["subscription"],
                timeout=_float_query(request, "timeout", 5.0),
                max_events=_max_events(request),
                kind=kind,
                by=self.me,
            )
            return json_response([market_event_json(e) for e in events])

        return handler

    def counter(self, kind: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            sub_id, proposal_id = _ids(request)
            properties, constraints = await _demand_offer_body(request)
            new_id = self.market.counter_proposal(sub_id, proposal_id, properties, constraints, kind=kind, by=self.me)
            return json_response(new_id)

        return handler

    def get_proposal(self, kind: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            sub_id, proposal_id = _ids(request)
            return json_response(proposal_json(self.market.get_proposal(sub_id, proposal_id, kind=kind, by=self.me)))

        return handler

    def reject_proposal(self, kind: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            sub_id, proposal_id = _ids(request)
            self.market.reject_proposal(sub_id, proposal_id, await _reason(request), kind=kind, by=self.me)
            return _empty(204)

        return handler

    # -- agreements ---------------------------------------------------------------------------------------

    async def create_agreement(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("proposalId"), str):
            raise HttpError(400, "the body must be an object {proposalId: '…', validTo: '<RFC 3339>'}")
        try:
            valid_to = parse_timestamp(str(body.get("validTo")))
        except ValueError as exc:
            raise HttpError(400, f"validTo: {exc}") from None
        return json_response(self.market.create_agreement(self.me, body["proposalId"], valid_to))

    async def list_agreements(self, request: web.Request) -> web.StreamResponse:
        entries = []
        for agreement in self.market.agreements(self.me):
            entry: dict[str, Any] = {
                "id": agreement.agreement_id,
                "timestamp": format_timestamp(agreement.timestamp),
                "role": "Requestor" if agreement.requestor_id == self.me else "Provider",
            }
            if agreement.approved_date is not None:
                entry["approvedDate"] = format_timestamp(agreement.approved_date)
            entries.append(entry)
        return json_response(entries)

    async def get_agreement(self, request: web.Request) -> web.StreamResponse:
        agreement = self.market.get_agreement(request.match_info["agreement"], by=self.me)
        return json_response(agreement_json(agreement))

    async def confirm(self, request: web.Request) -> web.StreamResponse:
        app_session_id = request.query.get("appSessionId")
        self.market.confirm(request.match_info["agreement"], app_session_id=app_session_id, by=self.me)
        return _empty(204)

    async def wait(self, request: web.Request) -> web.StreamResponse:
        timeout = _float_query(request, "timeout", 5.0)
        await self.market.wait_for_approval(request.match_info["agreement"], timeout or None, by=self.me)
        return _empty(204)

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        self.market.cancel(request.match_info["agreement"], await _reason(request), by=self.me)
        return _empty(200)

    async def terminate(self, request: web.Request) -> web.StreamResponse:
        await self.market.terminate(request.match_info["agreement"], self.me, await _reason(request))
        return _empty(200)

    async def approve(self, request: web.Request) -> web.StreamResponse:
        self.market.approve(request.match_info["agreement"], by=self.me)
        return _empty(204)

    async def reject_agreement(self, request: web.Request) -> web.StreamResponse:
        self.market.reject_agreement(request.match_info["agreement"], await _reason(request), by=self.me)
        return _empty(204)

    async def agreement_events(self, request: web.Request) -> web.StreamResponse:
        events = await self.market.agreement_events(
            self.me,
            after=_timestamp_query(request, "afterTimestamp"),
            timeout=_float_query(request, "timeout", 5.0),
            max_events=_max_events(request),
            app_session_id=request.query.get("appSessionId"),
        )
        return json_response([agreement_event_json(e) for e in events])


def add_market_routes(app: web.Application, market: LocalMarket, *, node_id: str) -> None:
    """Serve ``market`` under ``/market-api/v1`` on ``app``, acting as the identity ``node_id``."""
    api = _MarketApi(market, node_id)
    routes: list[tuple[str, str, Handler]] = []
    for kind, plural in (("demand", "demands"), ("offer", "offers")):
        base = f"/{plural}"
        proposal = f"{base}/{{subscription}}/proposals/{{proposal}}"
        routes += [
            ("POST", base, api.subscribe(kind)),
            ("GET", base, api.list_subscriptions(kind)),
            ("DELETE", f"{base}/{{subscription}}", api.unsubscribe(kind)),
            ("GET", f"{base}/{{subscription}}/events", api.events(kind)),
            ("POST", proposal, api.counter(kind)),
            ("GET", proposal, api.get_proposal(kind)),
            ("POST", f"{proposal}/reject", api.reject_proposal(kind)),
        ]
    agreement = "/agreements/{agreement}"
    routes += [
        ("POST", "/agreements", api.create_agreement),
        ("GET", "/agreements", api.list_agreements),
        ("GET", agreement, api.get_agreement),
        ("POST", f"{agreement}/confirm", api.confirm),
        ("POST", f"{agreement}/wait", api.wait),
        ("POST", f"{agreement}/cancel", api.cancel),
        ("POST", f"{agreement}/terminate", api.terminate),
        ("POST", f"{agreement}/approve", api.approve),
        ("POST", f"{agreement}/reject", api.reject_agreement),
        ("GET", "/agreementEvents", api.agreement_events),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, MARKET_PREFIX + path, _guarded(handler))
