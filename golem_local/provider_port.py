"""The provider's port: what a provider's negotiation and billing need from the node it runs on.

A provider (:class:`~golem_local.provider.LocalProvider`, with the :class:`~golem_local.activity.ActivityHub` as
its billing) decides what to offer, which proposals to counter or refuse, which agreements to approve, when an
agreement ends and what to invoice. It reaches the node only through two ports:

* :class:`ProviderMarket`, the provider's side of the market API: publish and withdraw an offer, read the offer's
  events (a requestor's proposals, rejections of ours, agreements waiting for approval), counter or reject a
  proposal, approve or reject an agreement, read agreement events, terminate an agreement;
* :class:`ProviderPayments`, the provider's side of the payment API: issue a debit note, issue an invoice.

Each port has two implementations. In-process, on the local network: :class:`InProcessMarket` over the
:class:`~golem_local.market.LocalMarket`, and the :class:`~golem_local.ledger.Ledger` itself for payments. Over
REST, against a real daemon's provider API (as a real provider agent speaks to its own yagna):
:mod:`golem_local.provider_rest`.

The events a provider reads are given in the port's own terms (:class:`OfferProposal`, :class:`OfferAgreement`),
because the two sides know different things: the local market names the demand of every proposal and the
proposal every agreement is built on, while the daemon's REST API names neither (a proposal carries its issuer and
the proposal it answers; an agreement carries the demand and offer it joins, but not the proposal ids). Each
implementation fills in ``negotiation`` (one negotiation between a demand and the offer) and ``built_on``
(the provider's counter-proposal the agreement was made from) as well as it can; see each for how.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from attrs import frozen

from golem_local.market import LocalMarket
from golem_local.market_model import (
    AgreementEventRecord,
    AgreementOperationRecord,
    ProposalEventRecord,
    ProposalRejectionRecord,
)

__all__ = [
    "IN_PROCESS_POLL_SEC",
    "InProcessMarket",
    "OfferAgreement",
    "OfferEvent",
    "OfferProposal",
    "ProviderMarket",
    "ProviderPayments",
]

IN_PROCESS_POLL_SEC = 60.0
"""The longest wait of an in-process provider's long-polls: the local market ends them as soon as an event
comes (or the offer goes), so a longer wait only spares a thousand idle providers their wake-ups for nothing
(three loops each every 5 s were 600 a second, a sixth of the node's idle CPU)."""


@frozen
class OfferProposal:
    """A requestor's proposal to the provider's offer, in the negotiation ``negotiation``."""

    proposal_id: str
    negotiation: str
    properties: dict[str, Any]
    constraints: str


@frozen
class OfferAgreement:
    """An agreement a requestor confirmed on the provider's offer; it waits for approval.

    ``negotiation`` is the negotiation it closes; ``built_on`` the provider's counter-proposal it was made from
    (``None`` when the node does not say and no counter-proposal of this provider matches it).
    """

    agreement_id: str
    negotiation: str
    built_on: str | None
    demand_properties: dict[str, Any]


OfferEvent = OfferProposal | OfferAgreement | ProposalRejectionRecord
"""What the provider reads from its offer's events."""


class ProviderMarket(Protocol):
    """The provider's side of the market, as identity ``node_id``. Refusals raise the
    :class:`~golem_local.market_model.LocalMarketError` family (``MarketNotFoundError`` for a gone offer, …)."""

    @property
    def node_id(self) -> str:
        """The provider's node id (also its payment address)."""
        ...

    def now_ms(self) -> int:
        """The market's clock in ms since the epoch (the unit of ``golem.srv.comp.expiration``)."""
        ...

    @property
    def longest_poll(self) -> float:
        """The longest single wait, in seconds, of the provider's long-polls (offer and agreement events).

        New events end a wait at once, so this bounds only how often an idle provider wakes for nothing.
        """
        ...

    async def subscribe_offer(self, properties: Mapping[str, Any], constraints: str) -> str:
        """Publish an offer; its subscription id."""
        ...

    async def unsubscribe_offer(self, offer_id: str) -> None:
        """Withdraw an offer."""
        ...

    async def offer_events(self, offer_id: str, *, timeout: float, max_events: int) -> list[OfferEvent]:
        """The offer's new events, waiting up to ``timeout`` s for the first."""
        ...

    async def counter_proposal(
        self, offer_id: str, proposal_id: str, properties: Mapping[str, Any], constraints: str
    ) -> str:
        """Answer a requestor's proposal with ours; our proposal's id."""
        ...

    async def reject_proposal(self, offer_id: str, proposal_id: str, reason: dict[str, Any]) -> None:
        """Refuse a requestor's proposal, saying why."""
        ...

    async def approve_agreement(self, agreement_id: str) -> None:
        """Approve an agreement waiting for us."""
        ...

    async def reject_agreement(self, agreement_id: str, reason: dict[str, Any]) -> None:
        """Refuse an agreement waiting for us, saying why."""
        ...

    async def agreement_events(
        self, *, after: datetime | None, timeout: float, max_events: int
    ) -> list[AgreementOperationRecord]:
        """The provider's agreement events strictly after ``after``, waiting up to ``timeout`` s for the first."""
        ...

    async def terminate_agreement(self, agreement_id: str, reason: dict[str, Any]) -> None:
        """End an approved agreement from the provider's side."""
        ...


class ProviderPayments(Protocol):
    """The provider's side of the payment API: the documents it issues. The :class:`~golem_local.ledger.Ledger`
    is the in-process implementation; ``RestProviderPayments`` sends them to a daemon."""

    @property
    def platform(self) -> str:
        """The payment platform the provider is paid on."""
        ...

    @property
    def requestor_id(self) -> str | None:
        """The one requestor a local node serves (who creates activities when nobody else is named);
        ``None`` for a daemon, which serves any requestor."""
        ...

    def issue_debit_note(
        self,
        *,
        agreement_id: str,
        activity_id: str,
        provider_id: str,
        payee_addr: str,
        total_amount_due: Decimal,
        usage_counter_vector: list[float],
    ) -> object:
        """Issue a debit note (cumulative for its activity) and send it to the requestor."""
        ...

    def issue_invoice(
        self, *, agreement_id: str, activity_ids: list[str], provider_id: str, payee_addr: str, amount: Decimal
    ) -> object:
        """Issue the agreement's invoice and send it to the requestor."""
        ...


class InProcessMarket:
    """:class:`ProviderMarket` on the local network: calls into the :class:`LocalMarket` as ``node_id``.

    The local market knows each proposal's demand and each agreement's proposals, so ``negotiation`` is the
    demand id and ``built_on`` the id of the agreement's offer-side proposal.
    """

    def __init__(self, market: LocalMarket, node_id: str) -> None:
        self.market = market
        self._node_id = node_id

    def __repr__(self) -> str:
        return f"<InProcessMarket as {self._node_id}>"

    @property
    def node_id(self) -> str:
        return self._node_id

    def now_ms(self) -> int:
        return self.market.now_ms()

    @property
    def longest_poll(self) -> float:
        return IN_PROCESS_POLL_SEC

    async def subscribe_offer(self, properties: Mapping[str, Any], constraints: str) -> str:
        return self.market.subscribe_offer(self._node_id, properties, constraints)

    async def unsubscribe_offer(self, offer_id: str) -> None:
        self.market.unsubscribe_offer(offer_id, by=self._node_id)

    async def offer_events(self, offer_id: str, *, timeout: float, max_events: int) -> list[OfferEvent]:
        events = await self.market.collect_events(
            offer_id, timeout=timeout, max_events=max_events, kind="offer", by=self._node_id
        )
        translated: list[OfferEvent] = []
        for event in events:
            if isinstance(event, ProposalEventRecord):
                p = event.proposal
                translated.append(OfferProposal(p.proposal_id, p.demand_id, p.properties, p.constraints))
            elif isinstance(event, AgreementEventRecord):
                a = event.agreement
                translated.append(
                    OfferAgreement(a.agreement_id, a.demand.demand_id, a.offer.proposal_id, a.demand.properties)
                )
            else:
                translated.append(event)
        return translated

    async def counter_proposal(
        self, offer_id: str, proposal_id: str, properties: Mapping[str, Any], constraints: str
    ) -> str:
        return self.market.counter_proposal(
            offer_id, proposal_id, properties, constraints, kind="offer", by=self._node_id
        )

    async def reject_proposal(self, offer_id: str, proposal_id: str, reason: dict[str, Any]) -> None:
        self.market.reject_proposal(offer_id, proposal_id, reason, kind="offer", by=self._node_id)

    async def approve_agreement(self, agreement_id: str) -> None:
        self.market.approve(agreement_id, by=self._node_id)

    async def reject_agreement(self, agreement_id: str, reason: dict[str, Any]) -> None:
        self.market.reject_agreement(agreement_id, reason, by=self._node_id)

    async def agreement_events(
        self, *, after: datetime | None, timeout: float, max_events: int
    ) -> list[AgreementOperationRecord]:
        return await self.market.agreement_events(self._node_id, after=after, timeout=timeout, max_events=max_events)

    async def terminate_agreement(self, agreement_id: str, reason: dict[str, Any]) -> None:
        await self.market.terminate(agreement_id, self._node_id, reason)
