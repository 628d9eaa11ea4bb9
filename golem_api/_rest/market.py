"""The market API: demands and offers, proposals, agreements (requestor and provider side)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from golem_api._rest import routes
from golem_api._rest.models import (
    Agreement,
    AgreementOperationEvent,
    MarketEvent,
    Proposal,
    parse_market_event,
)
from golem_api._rest.models._fields import parse_id, parse_list, parse_nothing
from golem_api._rest.routes import POLL_MARGIN, Requester
from golem_api.errors import AgreementError, GoneError
from golem_shared.timestamps import format_timestamp

__all__ = ["MarketApi"]

_FINAL_STATE = re.compile(r"\b(Rejected|Cancelled|Expired|Terminated)\b", re.IGNORECASE)


def _market_object(properties: Mapping[str, Any], constraints: str) -> dict[str, Any]:
    return {"properties": dict(properties), "constraints": constraints}


def _reason(message: str | None) -> dict[str, Any] | None:
    return None if message is None else {"message": message}


def _ack_timeout(timeout: float) -> float:
    """HTTP time-out of a call that waits for the other side: ``0`` asks the node to wait forever."""
    return math.inf if timeout <= 0 else timeout + POLL_MARGIN


def _poll(timeout: float, max_events: int) -> dict[str, str | None]:
    return {"timeout": str(float(timeout)), "maxEvents": str(int(max_events))}


class MarketApi:
    """Calls of ``/market-api/v1``; get it as ``RestClient.market``."""

    def __init__(self, request: Requester) -> None:
        self._request = request

    # Requestor side: demands and proposals.

    async def subscribe_demand(self, properties: Mapping[str, Any], constraints: str) -> str:
        """Publish a demand; returns its subscription id."""
        body = _market_object(properties, constraints)
        return await self._request(routes.SUBSCRIBE_DEMAND, json=body, parse=parse_id)

    async def unsubscribe_demand(self, subscription_id: str) -> None:
        """Withdraw a demand."""
        await self._request(routes.UNSUBSCRIBE_DEMAND, subscription_id, parse=parse_nothing)

    async def collect_demand_events(
        self, subscription_id: str, *, timeout: float = 5.0, max_events: int = 10
    ) -> list[MarketEvent]:
        """Wait up to ``timeout`` s for proposals and rejections; ``[]`` when nothing came."""
        return await self._request(
            routes.COLLECT_DEMAND_EVENTS,
            subscription_id,
            params=_poll(timeout, max_events),
            timeout=timeout + POLL_MARGIN,
            parse=parse_list(parse_market_event),
        )

    async def counter_proposal(
        self, subscription_id: str, proposal_id: str, properties: Mapping[str, Any], constraints: str
    ) -> str:
        """Answer a provider's proposal with our demand; returns the id of our counter-proposal."""
        return await self._request(
            routes.COUNTER_PROPOSAL,
            subscription_id,
            proposal_id,
            json=_market_object(properties, constraints),
            parse=parse_id,
        )

    async def reject_proposal(self, subscription_id: str, proposal_id: str, reason: str | None = None) -> None:
        """Reject a provider's proposal, ending that negotiation."""
        await self._request(
            routes.REJECT_PROPOSAL, subscription_id, proposal_id, json=_reason(reason), parse=parse_nothing
        )

    async def get_proposal(self, subscription_id: str, proposal_id: str) -> Proposal:
        """Fetch one proposal of a demand's negotiation."""
        return await self._request(routes.GET_PROPOSAL, subscription_id, proposal_id, parse=Proposal.from_json)

    # Requestor side: agreements.

    async def create_agreement(self, proposal_id: str, valid_to: datetime) -> str:
        """Turn a provider's Draft proposal into an agreement (state ``Proposal``); returns its id."""
        body = {"proposalId": proposal_id, "validTo": format_timestamp(valid_to)}
        return await self._request(routes.CREATE_AGREEMENT, json=body, parse=parse_id)

    async def confirm_agreement(self, agreement_id: str, app_session_id: str | None = None) -> None:
        """Sign the agreement and send it to the provider (state ``Pending``)."""
        await self._request(
            routes.CONFIRM_AGREEMENT,
            agreement_id,
            params={"appSessionId": app_session_id},
            parse=parse_nothing,
        )

    async def wait_for_approval(self, agreement_id: str, timeout: float = 15.0) -> None:
        """Wait until the provider approves; :class:`AgreementError` if the agreement ended instead.

        A :class:`~golem_api.errors.RequestTimeoutError` (408) means no decision yet: wait again.
        """
        try:
            await self._request(
                routes.WAIT_FOR_APPROVAL,
                agreement_id,
                params={"timeout": str(float(timeout))},
                timeout=_ack_timeout(timeout),
                parse=parse_nothing,
            )
        except GoneError as exc:
            match = _FINAL_STATE.search(exc.message)
            state = match[1].capitalize() if match else exc.message or "no longer pending"
            raise AgreementError(
                f"agreement {agreement_id} was not approved: {state}", agreement_id=agreement_id
            ) from exc

    async def cancel_agreement(self, agreement_id: str, reason: Mapping[str, Any] | None = None) -> None:
        """Withdraw an agreement the provider has not approved yet."""
        body = None if reason is None else dict(reason)
        await self._request(routes.CANCEL_AGREEMENT, agreement_id, json=body, parse=parse_nothing)

    # Both sides.

    async def get_agreement(self, agreement_id: str) -> Agreement:
        """Fetch an agreement."""
        return await self._request(routes.GET_AGREEMENT, agreement_id, parse=Agreement.from_json)

    async def terminate_agreement(self, agreement_id: str, reason: Mapping[str, Any] | None = None) -> None:
        """End an approved agreement; ``reason`` is sent as given (``{"message": …, …}``)."""
        body = None if reason is None else dict(reason)
        await self._request(routes.TERMINATE_AGREEMENT, agreement_id, json=body, parse=parse_nothing)

    async def collect_agreement_events(
        self,
        *,
        after: datetime | None = None,
        timeout: float = 5.0,
        max_events: int = 10,
        app_session_id: str | None = None,
    ) -> list[AgreementOperationEvent]:
        """Wait up to ``timeout`` s for agreements being approved, rejected, cancelled or terminated."""
        params = _poll(timeout, max_events)
        params["afterTimestamp"] = None if after is None else format_timestamp(after)
        params["appSessionId"] = app_session_id
        return await self._request(
            routes.COLLECT_AGREEMENT_EVENTS,
            params=params,
            timeout=timeout + POLL_MARGIN,
            parse=parse_list(AgreementOperationEvent.from_json),
        )

    # Provider side.

    async def subscribe_offer(self, properties: Mapping[str, Any], constraints: str) -> str:
        """Publish an offer; returns its subscription id."""
        body = _market_object(properties, constraints)
        return await self._request(routes.SUBSCRIBE_OFFER, json=body, parse=parse_id)

    async def unsubscribe_offer(self, subscription_id: str) -> None:
        """Withdraw an offer."""
        await self._request(routes.UNSUBSCRIBE_OFFER, subscription_id, parse=parse_nothing)

    async def collect_offer_events(
        self, subscription_id: str, *, timeout: float = 5.0, max_events: int = 10
    ) -> list[MarketEvent]:
        """Wait up to ``timeout`` s for demand proposals, rejections and agreements to approve."""
        return await self._request(
            routes.COLLECT_OFFER_EVENTS,
            subscription_id,
            params=_poll(timeout, max_events),
            timeout=timeout + POLL_MARGIN,
            parse=parse_list(parse_market_event),
        )

    async def counter_demand_proposal(
        self, subscription_id: str, proposal_id: str, properties: Mapping[str, Any], constraints: str
    ) -> str:
        """Answer a requestor's proposal with our offer; returns the id of our counter-proposal."""
        return await self._request(
            routes.COUNTER_DEMAND_PROPOSAL,
            subscription_id,
            proposal_id,
            json=_market_object(properties, constraints),
            parse=parse_id,
        )

    async def reject_demand_proposal(self, subscription_id: str, proposal_id: str, reason: str | None = None) -> None:
        """Reject a requestor's proposal, ending that negotiation."""
        await self._request(
            routes.REJECT_DEMAND_PROPOSAL,
            subscription_id,
            proposal_id,
            json=_reason(reason),
            parse=parse_nothing,
        )

    async def approve_agreement(
        self, agreement_id: str, *, timeout: float = 5.0, app_session_id: str | None = None
    ) -> None:
        """Approve an agreement a requestor confirmed; waits up to ``timeout`` s for it to be delivered."""
        await self._request(
            routes.APPROVE_AGREEMENT,
            agreement_id,
            params={"timeout": str(float(timeout)), "appSessionId": app_session_id},
            timeout=_ack_timeout(timeout),
            parse=parse_nothing,
        )

    async def reject_agreement(self, agreement_id: str, reason: Mapping[str, Any] | None = None) -> None:
        """Refuse an agreement a requestor confirmed."""
        body = None if reason is None else dict(reason)
        await self._request(routes.REJECT_AGREEMENT, agreement_id, json=body, parse=parse_nothing)
