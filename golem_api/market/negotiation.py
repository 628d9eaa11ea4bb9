"""A demand on the market and the negotiations it leads, up to approved agreements.

The daemon's sequence: the market brings each matching offer as an ``Initial`` proposal; the requestor
counters the ones its strategy accepts; the provider answers with a ``Draft``; only a Draft may become an
agreement, which the requestor creates and confirms and the provider approves.

One owned task collects the demand's events and counters acceptable offers at once, so that by the time
an agreement is wanted the provider's Drafts are already waiting. It outlives faults of the node: a failed
read is retried after a pause of the one retry policy (:mod:`golem_api._retry`, with a warning), an unknown
or expired subscription is subscribed again, and it ends only when the demand is closed.
:meth:`Demand.agreement` takes the best Draft (scores are asked again at that moment, so failures count) and
turns it into an agreement.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from attrs import define, field

from golem_api._retry import DEFAULT_POLICY, is_transient, retry
from golem_api.errors import (
    AgreementError,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    GolemError,
    GoneError,
    MarketError,
    MarketTimeoutError,
    NotFoundError,
    RequestTimeoutError,
)
from golem_api.events import (
    AgreementConfirmed,
    AgreementCreated,
    AgreementRejected,
    AgreementTerminated,
    DemandSubscribed,
    Event,
    EventBus,
    NoOffersWarning,
    OfferReceived,
    OfferRejected,
    ProposalRejectedByProvider,
    Subscription,
)
from golem_api.market.agreement import Agreement
from golem_api.market.strategy import MarketStrategy, Offer
from golem_shared.tasks import TaskSet, within
from golem_shared.timestamps import utc_now

if TYPE_CHECKING:
    from golem_api._rest.client import RestClient
    from golem_api._rest.models import Proposal

__all__ = ["Demand"]

_log = logging.getLogger(__name__)

_CHOSEN_PLATFORM = "golem.com.payment.chosen-platform"
# Mid-agreement payment properties a provider may announce; the requestor echoes them to agree.
_ECHOED = (
    "golem.com.scheme.payu.debit-note.interval-sec?",
    "golem.com.scheme.payu.payment-timeout-sec?",
    "golem.com.payment.debit-notes.accept-timeout?",
)


@define
class _Draft:
    """A provider's Draft answering our counter: ready to become an agreement (``score``: the strategy's, once
    asked; ``None`` when it turned the offer down)."""

    proposal_id: str
    offer: Offer
    score: float | None = None
    scored: bool = False


@define
class _Stats:
    offers: int = 0
    rejected: dict[str, str] = field(factory=dict)  # provider name -> last reason


class Demand:
    """A demand subscription and its negotiations; use :meth:`agreement` to get approved agreements."""

    def __init__(
        self,
        *,
        rest: RestClient,
        bus: EventBus,
        strategy: MarketStrategy,
        properties: Mapping[str, Any],
        constraints: str,
        payment_platform: str,
        expiration: datetime,
        no_offers_warning_after: float = 15.0,
        approval_timeout: float = 15.0,
        on_agreement: Callable[[Agreement], None] | None = None,
    ) -> None:
        self._rest = rest
        self._bus = bus
        self._strategy = strategy
        self.properties = dict(properties)
        self.constraints = constraints
        self._platform = payment_platform
        self._expiration = expiration
        self._no_offers_warning_after = no_offers_warning_after
        self._approval_timeout = approval_timeout
        self._on_agreement = on_agreement
        self._bus_subscription: Subscription | None = None
        self.subscription_id: str | None = None
        self._counters: dict[str, Offer] = {}  # our counter-proposal id -> the offer it answers
        # provider id -> the offer our counter answered, when the node took the counter but its id was lost
        self._lost_counters: dict[str, Offer] = {}
        self._drafts: list[_Draft] = []
        # agreement() calls waiting for a Draft, oldest first: a new Draft wakes one, not every one of them
        self._draft_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._engaged: set[str] = set()  # providers with a live agreement from this demand
        self._stats = _Stats()
        self._tasks = TaskSet("demand", logger=_log)
        self._failure: BaseException | None = None

    def __repr__(self) -> str:
        return f"<Demand {self.subscription_id} offers={self._stats.offers} drafts={len(self._drafts)}>"

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Publish the demand and start collecting offers."""
        await self._subscribe()
        self._bus_subscription = self._bus.subscribe(self._on_terminated, AgreementTerminated)
        self._tasks.spawn(self._collect(), name=f"offers of demand {self.subscription_id}")

    async def aclose(self) -> None:
        """Stop collecting and withdraw the demand from the market."""
        if self._bus_subscription is not None:
            self._bus.unsubscribe(self._bus_subscription)
            self._bus_subscription = None
        await self._tasks.aclose()
        subscription_id, self.subscription_id = self.subscription_id, None
        if subscription_id is not None:
            try:
                await retry(
                    lambda: self._rest.market.unsubscribe_demand(subscription_id),
                    what=f"withdrawing demand {subscription_id}",
                )
            except (NotFoundError, GoneError):
                pass
            except GolemError as exc:  # the demand expires on the node by itself
                _log.warning("could not withdraw demand %s: %s", subscription_id, exc)

    async def _subscribe(self) -> None:
        self.subscription_id = await self._rest.market.subscribe_demand(self.properties, self.constraints)
        self._counters.clear()
        self._drafts.clear()
        self._bus.emit(DemandSubscribed(subscription_id=self.subscription_id, constraints=self.constraints))
        _log.debug("demand %s subscribed: %s", self.subscription_id, self.constraints)

    # --- collecting offers ------------------------------------------------------------------------

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        warn_at = loop.time() + self._no_offers_warning_after
        warned = False
        delays = None
        try:
            while True:
                try:
                    if self.subscription_id is None:
                        await self._subscribe()
                    assert self.subscription_id is not None
                    events = await self._rest.market.collect_demand_events(
                        self.subscription_id, timeout=1.0 if not warned else 5.0, max_events=50
                    )
                    for event in events:
                        await self._handle(event)
                except (NotFoundError, GoneError):
                    _log.info("demand %s expired on the node; subscribing again", self.subscription_id)
                    self.subscription_id = None
                    continue
                except GolemError as exc:
                    # The node failed or said no: pause (a back-off, not a wait for an event) and go on.
                    delays = delays or DEFAULT_POLICY.delays()
                    pause = next(delays)
                    _log.warning(
                        "collecting offers of demand %s failed, retrying in %.1f s: %s",
                        self.subscription_id,
                        pause,
                        exc,
                    )
                    await asyncio.sleep(pause)
                    continue
                delays = None
                if not warned and self._stats.offers == 0 and loop.time() >= warn_at:
                    warned = True
                    self._warn_no_offers()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a fault of ours, not of the node: agreement() says so
            self._failure = exc
            self._wake_waiters(None)
            raise

    def _warn_no_offers(self) -> None:
        assert self.subscription_id is not None
        _log.warning(
            "no offer has matched the demand for %.0f s; it may ask for more than providers offer. Constraints: %s",
            self._no_offers_warning_after,
            self.constraints,
        )
        self._bus.emit(
            NoOffersWarning(
                subscription_id=self.subscription_id,
                constraints=self.constraints,
                waited=self._no_offers_warning_after,
            )
        )

    async def _handle(self, event: object) -> None:
        from golem_api._rest.models import ProposalEvent, ProposalRejectedEvent

        if isinstance(event, ProposalEvent):
            proposal = event.proposal
            if proposal.state == "Initial":
                await self._on_offer(proposal)
            elif proposal.state == "Draft":
                if proposal.prev_proposal_id in self._counters:
                    del self._counters[proposal.prev_proposal_id]
                elif self._lost_counters.pop(proposal.issuer_id, None) is None:
                    return  # not an answer to a counter of ours
                # The Draft carries the provider's final terms; those are what the agreement holds.
                draft_offer = Offer(proposal.proposal_id, proposal.issuer_id, proposal.properties)
                self._drafts.append(_Draft(proposal.proposal_id, draft_offer))
                self._wake_waiters(1)
        elif isinstance(event, ProposalRejectedEvent):
            offer = self._counters.pop(event.proposal_id, None)
            if offer is not None:
                reason = str((event.reason or {}).get("message", event.reason or "no reason given"))
                self._stats.rejected[offer.provider_name] = reason
                self._bus.emit(
                    ProposalRejectedByProvider(
                        proposal_id=event.proposal_id,
                        provider_id=offer.provider_id,
                        provider_name=offer.provider_name,
                        reason=reason,
                    )
                )

    async def _on_offer(self, proposal: Proposal) -> None:
        assert self.subscription_id is not None
        offer = Offer(proposal.proposal_id, proposal.issuer_id, proposal.properties)
        self._stats.offers += 1
        self._bus.emit(
            OfferReceived(
                proposal_id=offer.proposal_id,
                provider_id=offer.provider_id,
                provider_name=offer.provider_name,
            )
        )
        verdict = self._strategy.judge(offer)
        reason = verdict.reason
        if verdict.accepted and f"golem.com.payment.platform.{self._platform}.address" not in offer.properties:
            reason = f"no common payment platform: the requestor pays on {self._platform}"
        elif verdict.accepted:
            reason = ""
        if reason:
            self._stats.rejected[offer.provider_name] = reason
            self._bus.emit(
                OfferRejected(
                    proposal_id=offer.proposal_id,
                    provider_id=offer.provider_id,
                    provider_name=offer.provider_name,
                    reason=reason,
                )
            )
            with contextlib.suppress(GolemError):  # a courtesy: the offer is passed over either way
                await self._rest.market.reject_proposal(self.subscription_id, offer.proposal_id, reason)
            return
        counter = dict(self.properties)
        counter[_CHOSEN_PLATFORM] = self._platform
        for key in _ECHOED:
            value = offer.properties.get(key)
            if isinstance(value, int | float) and value > 0:
                counter[key] = value
        subscription_id, attempts = self.subscription_id, 0

        async def send_counter() -> str:
            nonlocal attempts
            attempts += 1
            return await self._rest.market.counter_proposal(
                subscription_id, offer.proposal_id, counter, self.constraints
            )

        # Countering is not safe to repeat: a repeat after a lost answer is refused (410) as already countered.
        # Then (or when the node never answered) the counter may have gone through, and the provider's Draft
        # answering it is recognised by its issuer instead of by the counter's id.
        try:
            counter_id = await retry(
                send_counter, what=f"countering offer {offer.proposal_id} of {offer.provider_name}"
            )
        except (BadRequestError, GoneError, NotFoundError, ConflictError) as exc:
            if attempts > 1:
                self._lost_counters[offer.provider_id] = offer
            _log.debug("could not counter %s from %s: %s", offer.proposal_id, offer.provider_name, exc)
            return
        except GolemError as exc:
            if is_transient(exc):
                self._lost_counters[offer.provider_id] = offer
            _log.warning("could not counter the offer of %s: %s", offer.provider_name, exc)
            return
        self._counters[counter_id] = offer

    # --- agreements -------------------------------------------------------------------------------

    def _score(self, draft: _Draft) -> float | None:
        """The strategy's score of the draft's offer, asked once per draft until a provider fails.

        Every agreement picks the best of the drafts at hand: judging them all each time cost a thousand
        instances some 44,000 calls. A strategy's scores change only when told a provider failed
        (:meth:`~golem_api.market.strategy.MarketStrategy.provider_failed`), which forgets them all.
        """
        if not draft.scored:
            draft.score, draft.scored = self._strategy.judge(draft.offer).score, True
        return draft.score

    async def _best_draft(self, deadline: float, avoid: Collection[str]) -> _Draft:
        loop = asyncio.get_running_loop()
        while True:
            if self._failure is not None:
                raise MarketError(f"collecting offers failed: {self._failure}") from self._failure
            candidates = [d for d in self._drafts if d.offer.provider_id not in self._engaged]
            # Providers to avoid are used only when nobody else has a Draft at hand.
            preferred = [d for d in candidates if d.offer.provider_id not in avoid]
            scored = [(self._score(d), d) for d in preferred or candidates]
            best = max(((s, d) for s, d in scored if s is not None), key=lambda pair: pair[0], default=None)
            if best is not None:
                self._drafts.remove(best[1])
                return best[1]
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError
            waiter = loop.create_future()
            self._draft_waiters.append(waiter)
            try:
                await within(waiter, remaining)
            except asyncio.TimeoutError:
                pass  # the deadline is checked above, after a last look at the drafts
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_waiters(1)  # woken for a Draft as it was cancelled: the next waiter takes it
                raise
            finally:
                waiter.cancel()  # nothing when it was woken; else _wake_waiters passes over it

    def _wake_waiters(self, count: int | None) -> None:
        """Wake ``count`` of the agreement() calls waiting for a Draft (every one with ``None``), oldest first.

        One per new Draft: each woken call takes the best Draft at hand, so waking them all (a thousand
        instances waiting at the start) had all but one look at the drafts and wait again, for every Draft.
        """
        waiters = self._draft_waiters
        while waiters and (count is None or count > 0):
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if count is not None:
                    count -= 1

    async def agreement(self, timeout: float = 60.0, *, avoid: Collection[str] = ()) -> Agreement:
        """The next approved agreement, best-scored provider first; :class:`~golem_api.errors.MarketTimeoutError`
        after ``timeout`` s.

        ``avoid`` holds provider ids to pass over (say, ones a service instance just failed to start on):
        they get an agreement only when no other provider's Draft is at hand.
        """
        if isinstance(avoid, str):
            raise ConfigurationError(f"avoid must be a collection of provider ids, not the string {avoid!r}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                draft = await self._best_draft(deadline, frozenset(avoid))
            except asyncio.TimeoutError:
                raise MarketTimeoutError(self._no_agreement_message(timeout), timeout=timeout) from None
            agreement = await self._try_agreement(draft, deadline)
            if agreement is not None:
                return agreement

    async def _try_agreement(self, draft: _Draft, deadline: float) -> Agreement | None:
        offer = draft.offer
        valid_to = min(self._expiration, utc_now() + timedelta(hours=24))
        try:  # not safe to repeat: a lost answer leaves an unconfirmed agreement, which expires on the node
            agreement_id = await self._rest.market.create_agreement(draft.proposal_id, valid_to)
        except (BadRequestError, GoneError, ConflictError, NotFoundError) as exc:
            _log.debug("draft %s from %s is stale: %s", draft.proposal_id, offer.provider_name, exc)
            return None
        except GolemError as exc:
            _log.warning("could not make an agreement with %s: %s", offer.provider_name, exc)
            return None
        aid, pid, name = agreement_id, offer.provider_id, offer.provider_name
        self._bus.emit(AgreementCreated(agreement_id=aid, provider_id=pid, provider_name=name))
        self._engaged.add(offer.provider_id)
        wait = max(0.1, min(self._approval_timeout, deadline - asyncio.get_running_loop().time()))
        confirmed = False

        async def confirm() -> None:
            nonlocal confirmed
            try:
                await self._rest.market.confirm_agreement(agreement_id)
            except GoneError:
                if not confirmed:  # a repeat after a lost answer: the first confirmation went through
                    raise
            confirmed = True

        try:
            await retry(confirm, what=f"confirming agreement {agreement_id}")
            await retry(
                lambda: self._rest.market.wait_for_approval(agreement_id, timeout=wait),
                what=f"waiting for the approval of agreement {agreement_id}",
            )
        except (AgreementError, RequestTimeoutError, GoneError, ConflictError, GolemError) as exc:
            self._engaged.discard(offer.provider_id)
            self._strategy.provider_failed(offer.provider_id)
            for waiting in self._drafts:  # the strategy's scores may change now
                waiting.scored = False
            self._bus.emit(AgreementRejected(agreement_id=aid, provider_id=pid, provider_name=name, reason=str(exc)))
            await self._withdraw_agreement(agreement_id)
            return None
        self._bus.emit(AgreementConfirmed(agreement_id=aid, provider_id=pid, provider_name=name))
        agreement = Agreement(
            agreement_id=agreement_id,
            provider_id=offer.provider_id,
            provider_name=offer.provider_name,
            offer_properties=offer.properties,
            rest=self._rest,
            bus=self._bus,
        )
        if self._on_agreement is not None:
            self._on_agreement(agreement)
        return agreement

    async def _withdraw_agreement(self, agreement_id: str) -> None:
        """Cancel an agreement that will not be used; terminate it if the provider approved it meanwhile."""
        try:
            await retry(lambda: self._rest.market.cancel_agreement(agreement_id), what=f"cancelling {agreement_id}")
            return
        except (ConflictError, GoneError, BadRequestError):
            pass  # no longer cancellable: it was approved (or has ended)
        except GolemError as exc:
            _log.warning("could not cancel agreement %s: %s", agreement_id, exc)
            return
        with contextlib.suppress(GolemError):
            await retry(
                lambda: self._rest.market.terminate_agreement(
                    agreement_id, {"message": "the requestor could not confirm it in time"}
                ),
                what=f"terminating agreement {agreement_id}",
            )

    def _on_terminated(self, event: Event) -> None:
        # The provider is free again: its next offer may be used.
        assert isinstance(event, AgreementTerminated)
        self._engaged.discard(event.provider_id)

    def _no_agreement_message(self, timeout: float) -> str:
        stats = self._stats
        text = f"no provider approved an agreement within {timeout:g} s ({stats.offers} offers seen"
        if stats.rejected:
            reasons = "; ".join(f"{name}: {why}" for name, why in sorted(stats.rejected.items()))
            text += f"; turned down: {reasons}"
        text += ")."
        if stats.offers == 0:
            text += f" No offer matched the demand's constraints {self.constraints}: ask for less, or check the subnet."
        return text
