"""The vocabulary of the local market: states, proposals, agreements, events and the errors it raises.

Values are frozen: the market replaces a proposal or an agreement by an evolved copy on every change, so an
event carries the object as it was when the event happened. :mod:`golem_local.market` holds matching
and negotiation, :mod:`golem_local.agreements` the agreement lifecycle, and
:mod:`golem_local.market_api` the wire shapes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import Enum
from typing import Any

from attrs import define, frozen

from golem_local.eventlog import EventLog
from golem_shared.constraints import Constraint
from golem_shared.errors import MarketError

__all__ = [
    "FINAL_STATES",
    "AgreementEventRecord",
    "AgreementOperationRecord",
    "AgreementRecord",
    "AgreementState",
    "LocalMarketError",
    "LocalMarketTimeoutError",
    "MarketBadRequestError",
    "MarketConflictError",
    "MarketEvent",
    "MarketGoneError",
    "MarketNotFoundError",
    "MarketSubscription",
    "ProposalEventRecord",
    "ProposalRecord",
    "ProposalRejectionRecord",
    "ProposalState",
    "SubscriptionEnded",
    "TerminationObserver",
]


class LocalMarketError(MarketError):
    """The market refused an operation; ``status`` is the HTTP status the daemon answers with."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MarketBadRequestError(LocalMarketError):
    """400: not allowed, or the request is malformed."""

    status = 400


class MarketNotFoundError(LocalMarketError):
    """404: unknown (or not yours) subscription, proposal or agreement."""

    status = 404


class LocalMarketTimeoutError(LocalMarketError):
    """408: waited as long as asked, nothing happened."""

    status = 408


class MarketConflictError(LocalMarketError):
    """409: the object is not in a state that allows the operation yet."""

    status = 409


class MarketGoneError(LocalMarketError):
    """410: expired, unsubscribed, countered, rejected or otherwise final."""

    status = 410


class ProposalState(Enum):
    """The states of a proposal, as on the wire."""

    INITIAL = "Initial"
    DRAFT = "Draft"
    REJECTED = "Rejected"
    ACCEPTED = "Accepted"
    EXPIRED = "Expired"


class AgreementState(Enum):
    """The states of an agreement, as on the wire."""

    PROPOSAL = "Proposal"
    PENDING = "Pending"
    CANCELLED = "Cancelled"
    REJECTED = "Rejected"
    APPROVED = "Approved"
    EXPIRED = "Expired"
    TERMINATED = "Terminated"


FINAL_STATES = frozenset(
    {AgreementState.CANCELLED, AgreementState.REJECTED, AgreementState.EXPIRED, AgreementState.TERMINATED}
)
"""States an agreement never leaves."""


@frozen
class ProposalRecord:
    """One step of a negotiation between the demand ``demand_id`` and the offer ``offer_id``."""

    proposal_id: str
    issuer_id: str
    properties: dict[str, Any]
    constraints: str
    state: ProposalState
    timestamp: datetime
    demand_id: str
    offer_id: str
    prev_proposal_id: str | None = None


@frozen
class AgreementRecord:
    """An agreement: ``demand`` is the requestor's last proposal, ``offer`` the provider's ``Draft``."""

    agreement_id: str
    demand: ProposalRecord
    offer: ProposalRecord
    valid_to: datetime
    state: AgreementState
    timestamp: datetime
    approved_date: datetime | None = None
    app_session_id: str | None = None
    terminator: str | None = None
    reason: dict[str, Any] | None = None

    @property
    def requestor_id(self) -> str:
        """The node id of the requestor."""
        return self.demand.issuer_id

    @property
    def provider_id(self) -> str:
        """The node id of the provider."""
        return self.offer.issuer_id


@frozen
class ProposalEventRecord:
    """A new proposal from the other side (an ``Initial`` one from the market, or a counter-proposal)."""

    event_date: datetime
    proposal: ProposalRecord


@frozen
class ProposalRejectionRecord:
    """The other side rejected our proposal ``proposal_id``."""

    event_date: datetime
    proposal_id: str
    reason: dict[str, Any] | None = None


@frozen
class AgreementEventRecord:
    """For the provider: a requestor confirmed an agreement on our offer and waits for approval."""

    event_date: datetime
    agreement: AgreementRecord


@frozen
class SubscriptionEnded:
    """Internal: wakes the readers of a subscription's events when it is withdrawn (never sent)."""

    event_date: datetime


MarketEvent = ProposalEventRecord | ProposalRejectionRecord | AgreementEventRecord
"""What the owner of a demand or an offer reads from its subscription."""


@frozen
class AgreementOperationRecord:
    """``AgreementApprovedEvent`` / ``…RejectedEvent`` / ``…CancelledEvent`` / ``…TerminatedEvent``."""

    event_type: str
    event_date: datetime
    agreement_id: str
    reason: dict[str, Any] | None = None
    terminator: str | None = None
    app_session_id: str | None = None


@define
class MarketSubscription:
    """A demand or an offer on the market, with the queue of events for its issuer."""

    subscription_id: str
    kind: str  # "demand" or "offer"
    issuer_id: str
    properties: dict[str, Any]
    constraints: str
    constraint: Constraint
    timestamp: datetime
    expiration_ms: int | None
    events: EventLog[MarketEvent | SubscriptionEnded]
    cursor: datetime | None = None
    ended: bool = False


TerminationObserver = Callable[[AgreementRecord, str], Awaitable[None]]
"""Awaited with ``(agreement, terminator)`` when an agreement ends; terminator is ``Requestor`` or ``Provider``."""
