"""A local provider: publishes an offer, negotiates, approves one agreement at a time, has it billed.

It reaches the market only through a :class:`~golem_local.provider_port.ProviderMarket` port, as an external
provider does over ``/offers…``: on the local network :class:`~golem_local.provider_port.InProcessMarket` (the
:class:`~golem_local.market.LocalMarket`, in-process), on a real daemon
:class:`~golem_local.provider_rest.RestProviderMarket` (its REST API). It reads its offer's events
(counter-proposals, agreements to approve) and its agreement events, each in one owned task;
:meth:`LocalProvider.aclose` cancels and awaits them.

Negotiation, as a real provider does it:

* a requestor's counter-proposal is refused (``ProposalRejectedEvent`` with a reason) when the provider is
  busy, when the demand no longer matches the offer, or when ``golem.com.payment.chosen-platform`` is not
  the provider's platform; otherwise the provider counters back with its offer's properties, plus the
  debit-note interval and payment timeout it accepts (the requestor's, when it proposed positive values);
* an agreement is approved when it is built on the provider's last counter-proposal to that demand and the
  provider is free; from then on it is busy until the agreement is terminated (by either side, or by the
  provider when the demand's ``golem.srv.comp.expiration`` passes);
* when the agreement ends it awaits ``billing.agreement_ended(agreement_id, provider_id)`` (the payment
  side destroys the activities and issues the invoice), then publishes a fresh offer, which reaches every
  live demand as a new ``Initial`` proposal;
* on the local network (given the ``ledger``), while it serves an agreement, a third owned task watches the
  agreement's debit notes: one not accepted within the agreed ``golem.com.payment.debit-notes.accept-timeout?``,
  or not paid within the agreed ``golem.com.scheme.payu.payment-timeout-sec?`` (accepting pays at once there),
  makes the provider terminate the agreement with a reason saying so, as a real provider does when its
  requestor has gone away: the agreement is invoiced and the provider offers itself again.

The offer carries what the provider's runtime adds (``runtime_offer``, the runtime's ``offer()``: its
version, capabilities, …) under the provider's own resources, prices and terms, which always win; its
price model meters the runtime's own counters too (``runtime_counters``, priced by ``ProviderSpec.counter_prices``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from golem_local.config import ProviderSpec
from golem_local.ledger import Ledger
from golem_local.market import EXPIRATION
from golem_local.market_model import LocalMarketError, MarketNotFoundError
from golem_local.provider_port import OfferAgreement, OfferEvent, OfferProposal, ProviderMarket
from golem_local.runtime.base import OfferTemplate
from golem_shared.constraints import constraints_match
from golem_shared.errors import LocalNodeError
from golem_shared.tasks import TaskSet, wait_event
from golem_shared.timestamps import format_timestamp, utc_now

__all__ = [
    "CHOSEN_PLATFORM",
    "DEBIT_NOTE_ACCEPT_TIMEOUT",
    "DEBIT_NOTE_INTERVAL",
    "OFFER_LIFETIME_SEC",
    "PAYMENT_TIMEOUT",
    "Billing",
    "LocalProvider",
    "NoBilling",
]

_log = logging.getLogger(__name__)

CHOSEN_PLATFORM = "golem.com.payment.chosen-platform"
DEBIT_NOTE_INTERVAL = "golem.com.scheme.payu.debit-note.interval-sec?"
PAYMENT_TIMEOUT = "golem.com.scheme.payu.payment-timeout-sec?"
DEBIT_NOTE_ACCEPT_TIMEOUT = "golem.com.payment.debit-notes.accept-timeout?"
_NEGOTIATED = (DEBIT_NOTE_INTERVAL, PAYMENT_TIMEOUT, DEBIT_NOTE_ACCEPT_TIMEOUT)
OFFER_LIFETIME_SEC = 3600
"""An offer's ``golem.srv.comp.expiration`` is this far ahead; it is renewed a minute before it passes."""
_RENEW_MARGIN_SEC = 60
_IDLE_CHECK_SEC = 60.0  # longest wait of the payment watch (woken early whenever the agreement served changes)
_RUNTIME_VERSION = "0.4.2"
_TRANSFER_PROTOCOLS = ["gftp", "http", "https"]


class Billing(Protocol):
    """The payment side of a provider: settles an agreement once it has ended."""

    async def agreement_ended(self, agreement_id: str, provider_id: str) -> None:
        """The agreement ended: stop its activities and invoice what they earned."""
        ...


class NoBilling:
    """A :class:`Billing` that bills nothing (a market without the payment side, e.g. in tests)."""

    async def agreement_ended(self, agreement_id: str, provider_id: str) -> None:
        """Do nothing."""


class LocalProvider:
    """One provider (see the module docstring) on the market ``market``, as the port's ``node_id``.

    Its payment address on ``payment_platform`` is its node id, as for a real node.
    """

    def __init__(
        self,
        spec: ProviderSpec,
        market: ProviderMarket,
        *,
        payment_platform: str,
        billing: Billing | None = None,
        runtime_offer: OfferTemplate | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self.spec = spec
        self.runtime_offer = runtime_offer if runtime_offer is not None else OfferTemplate()
        self.runtime_counters: Mapping[str, Decimal] = {}  # the runtime's own counters and their default prices
        self.market = market
        self.node_id = market.node_id
        self.payment_platform = payment_platform
        self.billing: Billing = billing if billing is not None else NoBilling()
        self.ledger = ledger
        self.offer_id: str | None = None
        self.agreement_id: str | None = None
        self._offer_properties: dict[str, Any] = {}
        self._offer_constraints = ""
        self._offer_expiration_ms = 0
        self._agreement_expiration_ms: int | None = None
        self._last_counter: dict[str, str] = {}  # demand id -> our last counter-proposal to it
        self._countered: dict[str, dict[str, Any]] = {}  # demand id -> the terms of that counter-proposal
        self._terms: dict[str, float] = {}  # the agreed accept and payment timeouts of the agreement served
        self._agreement_changed = asyncio.Event()
        self._tasks = TaskSet(f"provider {self.name}", logger=_log)
        self._publishing = asyncio.Lock()

    def __repr__(self) -> str:
        state = f"serving {self.agreement_id}" if self.agreement_id else "free"
        return f"<LocalProvider {self.name} {self.node_id} {state}>"

    @property
    def name(self) -> str:
        """The provider's name (``golem.node.id.name``)."""
        return self.spec.name

    @property
    def address(self) -> str:
        """The payment address on ``payment_platform``."""
        return self.node_id

    @property
    def busy(self) -> bool:
        """Whether an agreement is being served."""
        return self.agreement_id is not None

    def offer_properties(self, expiration_ms: int) -> dict[str, Any]:
        """The properties a real provider publishes, with the honest prices (``overcharge`` is not shown).

        The runtime's offer properties come first; the provider's resources, prices and terms override them.
        """
        spec = self.spec
        return {
            "golem.runtime.version": _RUNTIME_VERSION,
            "golem.inf.cpu.architecture": "x86_64",
            **self.runtime_offer.properties,
            "golem.runtime.name": spec.runtime,
            "golem.inf.cpu.threads": spec.cpu_threads,
            "golem.inf.cpu.cores": max(1, spec.cpu_threads // 2),
            "golem.inf.mem.gib": float(spec.mem_gib),
            "golem.inf.storage.gib": float(spec.storage_gib),
            "golem.activity.caps.transfer.protocol": list(_TRANSFER_PROTOCOLS),
            "golem.node.id.name": spec.name,
            "golem.node.debug.subnet": spec.subnet,
            **spec.pricing_for(self.runtime_counters).to_properties(),
            f"golem.com.payment.platform.{self.payment_platform}.address": self.address,
            "golem.com.payment.protocol.version": "3",
            DEBIT_NOTE_INTERVAL: spec.debit_note_interval_sec,
            PAYMENT_TIMEOUT: spec.payment_timeout_sec,
            DEBIT_NOTE_ACCEPT_TIMEOUT: spec.debit_note_accept_timeout_sec,
            "golem.srv.caps.multi-activity": True,
            EXPIRATION: expiration_ms,
        }

    def offer_constraints(self, now_ms: int) -> str:
        """What the provider asks of a demand: not expired, its subnet, an address on its payment platform,
        and what its runtime asks for (if anything)."""
        runtime = self.runtime_offer.constraints.strip()
        return (
            f"(&(golem.srv.comp.expiration>{now_ms})"
            f"(golem.node.debug.subnet={self.spec.subnet})"
            f"(golem.com.payment.platform.{self.payment_platform}.address=*){runtime})"
        )

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Publish the offer and start the provider's tasks."""
        if len(self._tasks):
            raise LocalNodeError(f"provider {self.name} is already running")
        await self._publish()
        self._tasks.spawn(self._negotiate(), name=f"{self.name}: negotiation")
        self._tasks.spawn(self._watch_agreements(), name=f"{self.name}: agreements")
        if self.ledger is not None:
            self._tasks.spawn(self._watch_payments(self.ledger), name=f"{self.name}: payments")

    async def aclose(self) -> None:
        """Cancel and await the provider's tasks and withdraw its offer. Calling it twice is harmless."""
        await self._tasks.aclose(reopen=True)
        if self.offer_id is not None:
            await self._withdraw()

    async def _renew(self, seen: str | None) -> None:
        """Publish a fresh offer in place of ``seen``, unless another task of ours already replaced it."""
        async with self._publishing:  # over REST both tasks may publish; one offer at a time
            if self.offer_id == seen:
                await self._publish()

    async def _publish(self) -> None:
        """Publish a fresh offer (withdrawing the current one): live demands get new Initial proposals."""
        if self.offer_id is not None:
            await self._withdraw()
        now = self.market.now_ms()
        self._offer_expiration_ms = now + OFFER_LIFETIME_SEC * 1000
        self._offer_properties = self.offer_properties(self._offer_expiration_ms)
        self._offer_constraints = self.offer_constraints(now)
        self._last_counter.clear()
        self.offer_id = await self.market.subscribe_offer(self._offer_properties, self._offer_constraints)

    async def _withdraw(self) -> None:
        offer_id, self.offer_id = self.offer_id, None
        if offer_id is not None:
            try:
                await self.market.unsubscribe_offer(offer_id)
            except LocalMarketError as exc:
                _log.debug("provider %s: offer %s already gone: %s", self.name, offer_id, exc)

    # -- negotiation --------------------------------------------------------------------------------------

    async def _negotiate(self) -> None:
        while True:
            offer_id = self.offer_id
            renew_in = (self._offer_expiration_ms - _RENEW_MARGIN_SEC * 1000 - self.market.now_ms()) / 1000
            if offer_id is None or renew_in <= 0:
                await self._renew(offer_id)
                continue
            try:
                events = await self.market.offer_events(
                    offer_id, timeout=min(renew_in, self.market.longest_poll), max_events=10
                )
            except MarketNotFoundError:  # unless replaced by us meanwhile, it went away: publish again
                await self._renew(offer_id)
                continue
            for event in events:
                await self._handle(event)

    async def _handle(self, event: OfferEvent) -> None:
        try:
            if isinstance(event, OfferProposal):
                await self._on_proposal(event)
            elif isinstance(event, OfferAgreement):
                await self._on_agreement(event)
            else:
                _log.debug("provider %s: proposal %s rejected: %s", self.name, event.proposal_id, event.reason)
        except LocalMarketError as exc:  # the requestor moved on meanwhile (unsubscribed, cancelled, …)
            _log.debug("provider %s: %s", self.name, exc)

    def _refusal(self, proposal: OfferProposal) -> str | None:
        if self.agreement_id is not None:
            return f"busy: already serving agreement {self.agreement_id}"
        offer = self._offer_properties
        if not (
            constraints_match(proposal.constraints, offer)
            and constraints_match(self._offer_constraints, proposal.properties)
        ):
            return f"the demand no longer matches the offer of {self.name}"
        chosen = proposal.properties.get(CHOSEN_PLATFORM)
        if chosen != self.payment_platform:
            return (
                f"no common payment platform: {CHOSEN_PLATFORM} is {chosen!r}, "
                f"but {self.name} is paid only on {self.payment_platform!r}"
            )
        return None

    async def _on_proposal(self, proposal: OfferProposal) -> None:
        assert self.offer_id is not None
        refusal = self._refusal(proposal)
        if refusal is not None:
            _log.debug("provider %s rejects proposal %s: %s", self.name, proposal.proposal_id, refusal)
            await self.market.reject_proposal(self.offer_id, proposal.proposal_id, {"message": refusal})
            return
        terms = dict(self._offer_properties)
        for key in _NEGOTIATED:
            asked = proposal.properties.get(key)
            if isinstance(asked, (int, float)) and not isinstance(asked, bool) and asked > 0:
                terms[key] = int(asked)
        counter_id = await self.market.counter_proposal(
            self.offer_id, proposal.proposal_id, terms, self._offer_constraints
        )
        self._last_counter[proposal.negotiation] = counter_id
        self._countered[proposal.negotiation] = terms

    async def _on_agreement(self, agreement: OfferAgreement) -> None:
        agreement_id = agreement.agreement_id
        if self.agreement_id is not None:
            reason = f"busy: already serving agreement {self.agreement_id}"
        elif agreement.built_on is None or self._last_counter.get(agreement.negotiation) != agreement.built_on:
            reason = "the agreement is not built on this provider's last counter-proposal"
        else:
            # Busy from before the approval goes out, so that no event of this agreement can find us free.
            self.agreement_id = agreement_id
            try:
                await self.market.approve_agreement(agreement_id)
            except BaseException:
                self.agreement_id = None
                raise
            expiration = agreement.demand_properties.get(EXPIRATION)
            self._agreement_expiration_ms = int(expiration) if isinstance(expiration, (int, float)) else None
            # Our last counter-proposal, which the agreement is built on, holds the terms we agreed to.
            countered = self._countered.get(agreement.negotiation, {})
            self._terms = {
                key: float(value)
                for key in (DEBIT_NOTE_ACCEPT_TIMEOUT, PAYMENT_TIMEOUT)
                if isinstance(value := countered.get(key), (int, float)) and not isinstance(value, bool) and value > 0
            }
            self._agreement_changed.set()
            _log.debug("provider %s approved agreement %s", self.name, agreement_id)
            return
        _log.debug("provider %s rejects agreement %s: %s", self.name, agreement_id, reason)
        await self.market.reject_agreement(agreement_id, {"message": reason})

    # -- agreements ---------------------------------------------------------------------------------------

    async def _watch_agreements(self) -> None:
        after = None
        while True:
            timeout = self.market.longest_poll
            if self.agreement_id is not None and self._agreement_expiration_ms is not None:
                left = (self._agreement_expiration_ms - self.market.now_ms()) / 1000
                if left <= 0:
                    await self._end_expired(self.agreement_id)
                    continue
                timeout = min(timeout, left)
            events = await self.market.agreement_events(after=after, timeout=timeout, max_events=10)
            for event in events:
                after = event.event_date
                if event.event_type == "AgreementTerminatedEvent" and event.agreement_id == self.agreement_id:
                    await self._settle(event.agreement_id)

    async def _end_expired(self, agreement_id: str) -> None:
        self._agreement_expiration_ms = None  # one attempt: the terminated event then frees the provider
        try:
            await self.market.terminate_agreement(
                agreement_id, {"message": "the agreement expired (golem.srv.comp.expiration)"}
            )
        except LocalMarketError as exc:
            _log.debug("provider %s: %s", self.name, exc)

    async def _settle(self, agreement_id: str) -> None:
        try:
            await self.billing.agreement_ended(agreement_id, self.node_id)
        except Exception:
            _log.exception("provider %s: billing agreement %s failed", self.name, agreement_id)
        self.agreement_id = None
        self._agreement_expiration_ms = None
        self._terms = {}
        self._agreement_changed.set()
        await self._renew(self.offer_id)

    # -- payments -----------------------------------------------------------------------------------------

    def overdue(self, ledger: Ledger, agreement_id: str, now: datetime) -> tuple[str | None, datetime | None]:
        """Why the agreement must end now for want of payment (or ``None``), and when the next deadline falls.

        A debit note not accepted within the agreed accept timeout, or not paid within the agreed payment
        timeout (accepting pays at once here), is overdue.
        """
        limits = [(self._terms[key], key) for key in (DEBIT_NOTE_ACCEPT_TIMEOUT, PAYMENT_TIMEOUT) if key in self._terms]
        if not limits:
            return None, None
        limit, key = min(limits)
        waiting = ledger.waiting_debit_notes_of(agreement_id)
        if not waiting:
            return None, None
        oldest = min(waiting, key=lambda note: note.timestamp)
        deadline = oldest.timestamp + timedelta(seconds=limit)
        if now < deadline:
            return None, deadline
        what = "accepted" if key == DEBIT_NOTE_ACCEPT_TIMEOUT else "paid"
        return (
            f"debit note {oldest.document_id} of {format_timestamp(oldest.timestamp)} was not {what} within "
            f"{limit:g} s ({key}): the requestor is gone or does not pay",
            deadline,
        )

    async def _watch_payments(self, ledger: Ledger) -> None:
        """End the agreement served when a debit note of it is overdue (see :meth:`overdue`)."""
        while True:
            self._agreement_changed.clear()
            agreement_id = self.agreement_id
            wait = _IDLE_CHECK_SEC
            if agreement_id is not None and self._terms:
                now = utc_now()
                reason, deadline = self.overdue(ledger, agreement_id, now)
                if reason is not None:
                    await self._end_unpaid(agreement_id, reason)
                    continue
                # A note issued from now on falls due no sooner than the shortest timeout from now: no need to
                # look again before then (a thousand providers looking every 5 s cost the node 200 wake-ups a
                # second for nothing).
                wait = min(wait, min(self._terms.values()))
                if deadline is not None:
                    wait = min(wait, max((deadline - now).total_seconds(), 0.0))
            await wait_event(self._agreement_changed, wait)

    async def _end_unpaid(self, agreement_id: str, reason: str) -> None:
        _log.warning("provider %s terminates agreement %s: %s", self.name, agreement_id, reason)
        self._terms = {}  # one attempt: the terminated event then frees the provider
        try:
            await self.market.terminate_agreement(agreement_id, {"message": reason})
        except LocalMarketError as exc:
            _log.debug("provider %s: %s", self.name, exc)
