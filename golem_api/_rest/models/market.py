"""Market objects as the daemon sends them: proposals, agreements and the events about both."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeAlias

from attrs import frozen

from golem_api._rest.models._fields import Fields

__all__ = [
    "Agreement",
    "AgreementEvent",
    "AgreementOperationEvent",
    "MarketEvent",
    "PropertyQueryEvent",
    "Proposal",
    "ProposalEvent",
    "ProposalRejectedEvent",
    "UnknownMarketEvent",
    "parse_market_event",
]


@frozen
class Proposal:
    """One step of a negotiation: the other side's (or our own) properties and constraints."""

    proposal_id: str
    issuer_id: str
    properties: dict[str, Any]
    constraints: str
    state: str
    timestamp: datetime
    prev_proposal_id: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> Proposal:
        """Parse ``{proposalId, issuerId, properties, constraints, state, timestamp, prevProposalId?}``."""
        f = Fields("Proposal", data)
        return cls(
            proposal_id=f.text("proposalId"),
            issuer_id=f.text("issuerId"),
            properties=f.obj("properties"),
            constraints=f.text("constraints"),
            state=f.text("state"),
            timestamp=f.time("timestamp"),
            prev_proposal_id=f.opt_text("prevProposalId"),
        )


@frozen
class Agreement:
    """An agreement with the demand and offer it was made from, flattened."""

    agreement_id: str
    state: str
    demand_properties: dict[str, Any]
    demand_constraints: str
    requestor_id: str
    offer_properties: dict[str, Any]
    offer_constraints: str
    provider_id: str
    valid_to: datetime
    approved_date: datetime | None
    timestamp: datetime
    app_session_id: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> Agreement:
        """Parse ``{agreementId, demand: {…}, offer: {…}, validTo, approvedDate?, state, timestamp, …}``."""
        f = Fields("Agreement", data)
        demand = f.nested("demand")
        offer = f.nested("offer")
        return cls(
            agreement_id=f.text("agreementId"),
            state=f.text("state"),
            demand_properties=demand.obj("properties"),
            demand_constraints=demand.text("constraints"),
            requestor_id=demand.text("requestorId"),
            offer_properties=offer.obj("properties"),
            offer_constraints=offer.text("constraints"),
            provider_id=offer.text("providerId"),
            valid_to=f.time("validTo"),
            approved_date=f.opt_time("approvedDate"),
            timestamp=f.time("timestamp"),
            app_session_id=f.opt_text("appSessionId"),
        )


@frozen
class ProposalEvent:
    """A new proposal arrived for our subscription."""

    event_date: datetime
    proposal: Proposal

    @classmethod
    def from_json(cls, data: Any) -> ProposalEvent:
        """Parse ``{"eventType": "ProposalEvent", eventDate, proposal}``."""
        f = Fields("ProposalEvent", data)
        return cls(event_date=f.time("eventDate"), proposal=Proposal.from_json(f.obj("proposal")))


@frozen
class ProposalRejectedEvent:
    """The other side rejected one of our proposals; that negotiation chain has ended."""

    event_date: datetime
    proposal_id: str
    reason: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Any) -> ProposalRejectedEvent:
        """Parse ``{"eventType": "ProposalRejectedEvent", eventDate, proposalId, reason?}``."""
        f = Fields("ProposalRejectedEvent", data)
        return cls(event_date=f.time("eventDate"), proposal_id=f.text("proposalId"), reason=f.opt_obj("reason"))


@frozen
class PropertyQueryEvent:
    """The other side asks for property values (not supported by the daemon yet); kept raw."""

    event_date: datetime
    raw: dict[str, Any]

    @classmethod
    def from_json(cls, data: Any) -> PropertyQueryEvent:
        """Parse ``{"eventType": "PropertyQueryEvent", eventDate, propertyQuery}``."""
        f = Fields("PropertyQueryEvent", data)
        return cls(event_date=f.time("eventDate"), raw=f.raw)


@frozen
class AgreementEvent:
    """Provider side: a requestor proposes an agreement for our approval."""

    event_date: datetime
    agreement: Agreement

    @classmethod
    def from_json(cls, data: Any) -> AgreementEvent:
        """Parse ``{"eventType": "AgreementEvent", eventDate, agreement}``."""
        f = Fields("AgreementEvent", data)
        return cls(event_date=f.time("eventDate"), agreement=Agreement.from_json(f.obj("agreement")))


@frozen
class UnknownMarketEvent:
    """A market event of a type this client does not know, kept raw rather than dropped."""

    event_date: datetime
    event_type: str
    raw: dict[str, Any]


MarketEvent: TypeAlias = (
    ProposalEvent | ProposalRejectedEvent | PropertyQueryEvent | AgreementEvent | UnknownMarketEvent
)
"""Anything ``collect_demand_events`` / ``collect_offer_events`` returns."""


def parse_market_event(data: Any) -> MarketEvent:
    """Parse one item of ``GET /demands/{id}/events`` or ``GET /offers/{id}/events`` by its ``eventType``."""
    f = Fields("MarketEvent", data)
    event_type = f.text("eventType")
    if event_type == "ProposalEvent":
        return ProposalEvent.from_json(data)
    if event_type == "ProposalRejectedEvent":
        return ProposalRejectedEvent.from_json(data)
    if event_type == "PropertyQueryEvent":
        return PropertyQueryEvent.from_json(data)
    if event_type == "AgreementEvent":
        return AgreementEvent.from_json(data)
    return UnknownMarketEvent(event_date=f.time("eventDate"), event_type=event_type, raw=f.raw)


@frozen
class AgreementOperationEvent:
    """An agreement was approved, rejected, cancelled or terminated (``event_type`` says which)."""

    event_type: str
    event_date: datetime
    agreement_id: str
    reason: dict[str, Any] | None = None
    terminator: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> AgreementOperationEvent:
        """Parse ``{eventType: "Agreement…Event", eventDate, agreementId, reason?, terminator?}``."""
        f = Fields("AgreementOperationEvent", data)
        return cls(
            event_type=f.text("eventType"),
            event_date=f.time("eventDate"),
            agreement_id=f.text("agreementId"),
            reason=f.opt_obj("reason"),
            terminator=f.opt_text("terminator"),
        )
