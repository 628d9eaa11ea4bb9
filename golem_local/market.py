"""The in-process market of the local node: offers meet demands, negotiations become agreements.

No HTTP here: :mod:`golem_local.market_api` serves this object over the daemon's REST API, and local
providers call it directly. It follows the daemon's rules:

* matching is two-way (the demand's constraints against the offer's properties and the other way round),
  and an offer never matches a demand of the same identity;
* a match shows up on the demand as an ``Initial`` proposal issued by the provider; the requestor counters
  it (a ``Draft`` that reaches the offer), the provider counters back, and only a ``Draft`` of the other
  side becomes an agreement; each proposal can be countered once;
* agreements go ``Proposal -> Pending (confirm) -> Approved (provider) -> Terminated``, or end as
  ``Cancelled``, ``Rejected`` or ``Expired``; both parties get the agreement events.

The agreement lifecycle is inherited from :class:`~golem_local.agreements.AgreementBook`; the values and
errors live in :mod:`golem_local.market_model` and are re-exported here. Errors carry the HTTP status
the daemon answers (:class:`LocalMarketError` and its subclasses).
A subscription whose ``golem.srv.comp.expiration`` (ms since the epoch) has passed is gone, and so are its
proposals; an agreement not approved by its ``validTo`` expires.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

from attrs import evolve

from golem_local.agreements import AgreementBook
from golem_local.eventlog import EventLog, StrictClock
from golem_local.market_model import (
    AgreementEventRecord,
    AgreementRecord,
    AgreementState,
    MarketBadRequestError,
    MarketConflictError,
    MarketEvent,
    MarketGoneError,
    MarketNotFoundError,
    MarketSubscription,
    ProposalEventRecord,
    ProposalRecord,
    ProposalRejectionRecord,
    ProposalState,
    SubscriptionEnded,
)
from golem_shared.constraints import Constraint, constraints_match, parse_constraints
from golem_shared.errors import ConstraintSyntaxError
from golem_shared.timestamps import utc_now

__all__ = ["EXPIRATION", "LocalMarket"]

EXPIRATION = "golem.srv.comp.expiration"


@lru_cache(maxsize=1024)
def _parse(text: str) -> Constraint:
    return parse_constraints(text)


def _constraint(text: object, what: str) -> Constraint:
    if not isinstance(text, str):
        raise MarketBadRequestError(f"the {what}'s constraints must be a string, not {text!r}")
    try:
        return _parse(text)
    except ConstraintSyntaxError as exc:
        raise MarketBadRequestError(f"the {what}'s constraints do not parse: {exc}") from exc


def _properties(properties: object, what: str) -> dict[str, Any]:
    if not isinstance(properties, Mapping) or not all(isinstance(k, str) for k in properties):
        raise MarketBadRequestError(f"the {what}'s properties must be an object of flat keys, not {properties!r}")
    return dict(properties)


def _mutual(a_props: Mapping[str, Any], a_cons: Constraint, b_props: Mapping[str, Any], b_cons: Constraint) -> bool:
    return constraints_match(a_cons, b_props) and constraints_match(b_cons, a_props)


def _new_id(nbytes: int = 16) -> str:
    return secrets.token_hex(nbytes)


class LocalMarket(AgreementBook):
    """The market of one local node: subscriptions and negotiation here, the agreement lifecycle inherited.

    Identities are node ids; ``by=`` names the caller, who must own the subscription or be a party to the
    agreement (else 404). ``now`` is the wall clock used for expirations (tests may pass their own).
    """

    def __init__(self, clock: StrictClock | None = None, *, now: Callable[[], datetime] = utc_now) -> None:
        super().__init__(clock, now=now)
        self._subscriptions: dict[str, MarketSubscription] = {}
        self._proposals: dict[str, ProposalRecord] = {}
        self._countered: set[str] = set()
        self._agreement_of: dict[str, str] = {}  # proposal id -> agreement id

    def now_ms(self) -> int:
        """The market's current time in ms since the epoch (the unit of ``golem.srv.comp.expiration``)."""
        return int(self._now().timestamp() * 1000)

    # -- subscriptions ------------------------------------------------------------------------------------

    def subscribe_demand(self, issuer_id: str, properties: Mapping[str, Any], constraints: str) -> str:
        """Publish a demand; every live matching offer answers at once with an ``Initial`` proposal."""
        return self._subscribe("demand", issuer_id, properties, constraints)

    def subscribe_offer(self, issuer_id: str, properties: Mapping[str, Any], constraints: str) -> str:
        """Publish an offer; every live matching demand gets an ``Initial`` proposal from it."""
        return self._subscribe("offer", issuer_id, properties, constraints)

    def unsubscribe_demand(self, demand_id: str, *, by: str | None = None) -> None:
        """Withdraw a demand: 404 if unknown or already unsubscribed (as the daemon answers), 410 if expired."""
        self._unsubscribe("demand", demand_id, by)

    def unsubscribe_offer(self, offer_id: str, *, by: str | None = None) -> None:
        """Withdraw an offer: 404 if unknown or already unsubscribed (as the daemon answers), 410 if expired."""
        self._unsubscribe("offer", offer_id, by)

    def subscriptions(self, kind: str, issuer_id: str) -> list[MarketSubscription]:
        """The live demands (``kind="demand"``) or offers of ``issuer_id``."""
        return [
            s for s in self._subscriptions.values() if s.kind == kind and s.issuer_id == issuer_id and self._live(s)
        ]

    def _subscribe(self, kind: str, issuer_id: str, properties: Mapping[str, Any], constraints: str) -> str:
        props = _properties(properties, kind)
        constraint = _constraint(constraints, kind)
        expiration = props.get(EXPIRATION)
        if expiration is not None:
            if isinstance(expiration, bool) or not isinstance(expiration, (int, float)):
                raise MarketBadRequestError(f"{EXPIRATION} must be ms since the epoch, not {expiration!r}")
            if expiration <= self.now_ms():
                raise MarketBadRequestError(
                    f"{EXPIRATION}={expiration} is in the past (now is {self.now_ms()}): set a later expiration"
                )
        sub = MarketSubscription(
            subscription_id=_new_id(),
            kind=kind,
            issuer_id=issuer_id,
            properties=props,
            constraints=constraints,
            constraint=constraint,
            timestamp=self.clock.now(),
            expiration_ms=None if expiration is None else int(expiration),
            events=EventLog(self.clock),
        )
        self._subscriptions[sub.subscription_id] = sub
        for other in list(self._subscriptions.values()):
            if other.kind == kind or not self._live(other):
                continue
            demand, offer = (sub, other) if kind == "demand" else (other, sub)
            if demand.issuer_id != offer.issuer_id and _mutual(
                demand.properties, demand.constraint, offer.properties, offer.constraint
            ):
                self._emit_initial(demand, offer)
        return sub.subscription_id

    def _emit_initial(self, demand: MarketSubscription, offer: MarketSubscription) -> None:
        proposal = ProposalRecord(
            proposal_id=_new_id(),
            issuer_id=offer.issuer_id,
            properties=dict(offer.properties),
            constraints=offer.constraints,
            state=ProposalState.INITIAL,
            timestamp=self.clock.now(),
            demand_id=demand.subscription_id,
            offer_id=offer.subscription_id,
        )
        self._proposals[proposal.proposal_id] = proposal
        demand.events.append(lambda moment: ProposalEventRecord(moment, proposal))

    def _unsubscribe(self, kind: str, sub_id: str, by: str | None) -> None:
        sub = self._lookup(kind, sub_id, by)
        if sub.ended:
            raise MarketNotFoundError(f"{kind} {sub_id} not found: it was unsubscribed already")
        if not self._live(sub):
            raise MarketGoneError(f"{kind} {sub_id} expired")
        sub.ended = True
        sub.events.append(SubscriptionEnded)

    def _live(self, sub: MarketSubscription) -> bool:
        return not sub.ended and (sub.expiration_ms is None or sub.expiration_ms > self.now_ms())

    def _lookup(self, kind: str | None, sub_id: str, by: str | None) -> MarketSubscription:
        sub = self._subscriptions.get(sub_id)
        if sub is None or (kind is not None and sub.kind != kind) or (by is not None and sub.issuer_id != by):
            raise MarketNotFoundError(f"{kind or 'subscription'} {sub_id} not found")
        return sub

    def _live_subscription(self, kind: str | None, sub_id: str, by: str | None) -> MarketSubscription:
        sub = self._lookup(kind, sub_id, by)
        if not self._live(sub):
            raise MarketGoneError(f"{sub.kind} {sub_id} has expired or was unsubscribed")
        return sub

    async def collect_events(
        self, sub_id: str, *, timeout: float, max_events: int, kind: str | None = None, by: str | None = None
    ) -> list[MarketEvent]:
        """Take up to ``max_events`` new events of a subscription, waiting up to ``timeout`` s for the first.

        Each event is handed out once. 404 (not 410) when the subscription is unknown, unsubscribed or expired,
        also for a call that was waiting when it ended: clients then subscribe again.
        """
        sub = self._lookup(kind, sub_id, by)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if not self._live(sub):
                raise MarketNotFoundError(f"{sub.kind} {sub_id} not found: it expired or was unsubscribed")
            remaining = deadline - loop.time()
            if sub.expiration_ms is not None:
                remaining = min(remaining, (sub.expiration_ms - self.now_ms()) / 1000)
            found = await sub.events.collect(after=sub.cursor, timeout=max(remaining, 0), max_events=max_events)
            fresh = [e for e in found if sub.cursor is None or e.event_date > sub.cursor]  # another poller's?
            if any(isinstance(e, SubscriptionEnded) for e in fresh):
                raise MarketNotFoundError(f"{sub.kind} {sub_id} not found: it was unsubscribed")
            if fresh:
                sub.cursor = fresh[-1].event_date
                sub.events.forget_until(sub.cursor)  # each event is handed out once: its only reader has it
                return [e for e in fresh if not isinstance(e, SubscriptionEnded)]
            if loop.time() >= deadline:
                return []

    # -- negotiation --------------------------------------------------------------------------------------

    def _proposal_in(self, sub: MarketSubscription, proposal_id: str) -> ProposalRecord:
        proposal = self._proposals.get(proposal_id)
        side = None if proposal is None else (proposal.demand_id if sub.kind == "demand" else proposal.offer_id)
        if proposal is None or side != sub.subscription_id:
            raise MarketNotFoundError(f"proposal {proposal_id} not found in {sub.kind} {sub.subscription_id}")
        return proposal

    def get_proposal(
        self, sub_id: str, proposal_id: str, *, kind: str | None = None, by: str | None = None
    ) -> ProposalRecord:
        """A proposal of one of the subscription's negotiations (``Expired`` once the subscription is gone)."""
        sub = self._lookup(kind, sub_id, by)
        proposal = self._proposal_in(sub, proposal_id)
        pending = proposal.state in (ProposalState.INITIAL, ProposalState.DRAFT)
        if pending and not (self._live(sub) and self._live(self._counterpart(sub, proposal))):
            return evolve(proposal, state=ProposalState.EXPIRED)
        return proposal

    def _counterpart(self, sub: MarketSubscription, proposal: ProposalRecord) -> MarketSubscription:
        return self._subscriptions[proposal.offer_id if sub.kind == "demand" else proposal.demand_id]

    def counter_proposal(
        self,
        sub_id: str,
        proposal_id: str,
        properties: Mapping[str, Any],
        constraints: str,
        *,
        kind: str | None = None,
        by: str | None = None,
    ) -> str:
        """Answer the other side's proposal with ours (a ``Draft``); returns the new proposal's id.

        404 unknown; 400 own proposal or no longer matching; 410 already countered, rejected or expired.
        ``kind`` (``"demand"``/``"offer"``), when given, is the side ``sub_id`` must be.
        """
        sub = self._live_subscription(kind, sub_id, by)
        previous = self._proposal_in(sub, proposal_id)
        if previous.issuer_id == sub.issuer_id:
            raise MarketBadRequestError(f"proposal {proposal_id} is your own: counter the other side's proposals")
        if proposal_id in self._countered:
            raise MarketGoneError(f"proposal {proposal_id} was already countered")
        if previous.state not in (ProposalState.INITIAL, ProposalState.DRAFT):
            raise MarketGoneError(f"proposal {proposal_id} is {previous.state.value}")
        other = self._counterpart(sub, previous)
        if not self._live(other):
            raise MarketGoneError(f"proposal {proposal_id} expired: the other side's {other.kind} is gone")
        props = _properties(properties, "counter-proposal")
        constraint = _constraint(constraints, "counter-proposal")
        if not _mutual(props, constraint, previous.properties, _parse(previous.constraints)):
            raise MarketBadRequestError(
                f"the counter-proposal does not match proposal {proposal_id}: each side's constraints must "
                "accept the other side's properties"
            )
        proposal = ProposalRecord(
            proposal_id=_new_id(),
            issuer_id=sub.issuer_id,
            properties=props,
            constraints=constraints,
            state=ProposalState.DRAFT,
            timestamp=self.clock.now(),
            demand_id=previous.demand_id,
            offer_id=previous.offer_id,
            prev_proposal_id=proposal_id,
        )
        self._proposals[proposal.proposal_id] = proposal
        self._countered.add(proposal_id)
        other.events.append(lambda moment: ProposalEventRecord(moment, proposal))
        return proposal.proposal_id

    def reject_proposal(
        self,
        sub_id: str,
        proposal_id: str,
        reason: dict[str, Any] | None = None,
        *,
        kind: str | None = None,
        by: str | None = None,
    ) -> None:
        """Reject the other side's proposal; its issuer gets a ``ProposalRejectedEvent`` with ``reason``."""
        sub = self._live_subscription(kind, sub_id, by)
        proposal = self._proposal_in(sub, proposal_id)
        if proposal.issuer_id == sub.issuer_id:
            raise MarketBadRequestError(f"proposal {proposal_id} is your own: reject the other side's proposals")
        if proposal_id in self._countered or proposal.state not in (ProposalState.INITIAL, ProposalState.DRAFT):
            state = "countered" if proposal_id in self._countered else proposal.state.value
            raise MarketGoneError(f"proposal {proposal_id} is already {state}")
        self._proposals[proposal_id] = evolve(proposal, state=ProposalState.REJECTED)
        other = self._counterpart(sub, proposal)
        # An Initial proposal comes from the market: its issuer never took part, so it is not told.
        if proposal.state is ProposalState.DRAFT and self._live(other):
            other.events.append(lambda moment: ProposalRejectionRecord(moment, proposal_id, reason))

    # -- agreements ---------------------------------------------------------------------------------------

    def create_agreement(self, requestor_id: str, proposal_id: str, valid_to: datetime) -> str:
        """Turn the provider's ``Draft`` into an agreement in state ``Proposal``; returns its id."""
        proposal = self._proposals.get(proposal_id)
        demand = None if proposal is None else self._subscriptions[proposal.demand_id]
        if proposal is None or demand is None or demand.issuer_id != requestor_id:
            # 400, not 404, as the daemon answers: the unknown proposal is in the body, not in the path.
            raise MarketBadRequestError(f"cannot create an agreement: proposal {proposal_id} not found")
        if proposal_id in self._agreement_of:
            raise MarketConflictError(f"proposal {proposal_id} already has agreement {self._agreement_of[proposal_id]}")
        if proposal.state is ProposalState.INITIAL:
            raise MarketBadRequestError(
                f"no negotiation took place: counter at least once (proposal {proposal_id} is Initial)"
            )
        if proposal.issuer_id == requestor_id:
            raise MarketBadRequestError(
                f"proposal {proposal_id} is your own: create an agreement from the provider's counter-proposal"
            )
        if proposal.state is not ProposalState.DRAFT:
            raise MarketBadRequestError(f"proposal {proposal_id} is {proposal.state.value}")
        if not (self._live(demand) and self._live(self._subscriptions[proposal.offer_id])):
            raise MarketGoneError(f"proposal {proposal_id} expired: its demand or offer is gone")
        if valid_to.tzinfo is None or valid_to <= self._now():
            raise MarketBadRequestError(f"validTo {valid_to.isoformat()} must be a moment in the future")
        assert proposal.prev_proposal_id is not None  # a Draft always answers an earlier proposal
        agreement = AgreementRecord(
            agreement_id=_new_id(32),
            demand=self._proposals[proposal.prev_proposal_id],
            offer=proposal,
            valid_to=valid_to,
            state=AgreementState.PROPOSAL,
            timestamp=self.clock.now(),
        )
        self._proposals[proposal_id] = evolve(proposal, state=ProposalState.ACCEPTED)
        self._agreement_of[proposal_id] = agreement.agreement_id
        self._add_agreement(agreement)
        return agreement.agreement_id

    def confirm(
        self, agreement_id: str, *, app_session_id: str | None = None, by: str | None = None
    ) -> AgreementRecord:
        """The requestor sends the agreement to the provider, whose offer gets an ``AgreementEvent``."""
        agreement = self.get_agreement(agreement_id, by=by)
        if agreement.state is AgreementState.PROPOSAL and not self._live(self._subscriptions[agreement.offer.offer_id]):
            raise MarketGoneError(f"agreement {agreement_id}: the provider's offer is gone; negotiate again")
        confirmed = super().confirm(agreement_id, app_session_id=app_session_id, by=by)
        offer = self._subscriptions[confirmed.offer.offer_id]
        offer.events.append(lambda moment: AgreementEventRecord(moment, confirmed))
        return confirmed
