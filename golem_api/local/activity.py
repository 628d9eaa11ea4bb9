"""The exe-unit side of activities on the local network: create, meter, bill, destroy.

Each activity is supervised by an :class:`Activity` with an explicit lifecycle::

    New --create--> Initialized --deploy--> Deployed --start--> Ready      (deploy/start: a later issue)
       any live state --destroy--> Terminated        any live state --fail--> Unresponsive

While it lives, an owned metering task wakes every ``debit-note interval`` seconds of its agreement and
has the provider issue a debit note for the cumulative cost of the usage so far: the agreement's linear
price model applied to ``golem.usage.duration_sec`` (seconds since creation) and ``golem.usage.cpu_sec``
(what the :class:`Runtime` reports; the idle runtime reports 0.0), times the provider's ``overcharge``.
Destroying an activity cancels and awaits that task and issues a last debit note. When the agreement
ends (:meth:`ActivityHub.agreement_ended`, the provider's ``Billing`` hook) its live activities are
destroyed and the provider invoices the sum of their final amounts, also when that sum is zero, so
that the requestor always sees every agreement settled.

Time comes from a :class:`TimeSource`; :class:`ManualTime` lets tests move it by hand instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import secrets
from collections.abc import Callable, Mapping
from decimal import Decimal
from enum import Enum
from typing import Protocol

from golem_api.errors import MarketError
from golem_api.local.config import ProviderSpec
from golem_api.local.http import HttpError
from golem_api.local.ledger import Ledger
from golem_api.local.market_model import Agreement, AgreementState, LocalMarketError
from golem_api.market.pricing import CPU_SEC, DURATION_SEC, LinearPricing

__all__ = [
    "DEBIT_NOTE_INTERVAL",
    "DEFAULT_DEBIT_NOTE_INTERVAL",
    "MULTI_ACTIVITY",
    "Activity",
    "ActivityHub",
    "ActivityState",
    "AgreementLookup",
    "IdleRuntime",
    "LoopTime",
    "ManualTime",
    "Runtime",
    "TimeSource",
]

DEBIT_NOTE_INTERVAL = "golem.com.scheme.payu.debit-note.interval-sec?"
MULTI_ACTIVITY = "golem.srv.caps.multi-activity"
DEFAULT_DEBIT_NOTE_INTERVAL = 120.0
"""Seconds between debit notes when neither side of the agreement names an interval."""

_log = logging.getLogger(__name__)

_WEI = Decimal("1e-18")  # amounts are kept to the token's 18 decimals


class ActivityState(Enum):
    """The activity states, as on the wire."""

    NEW = "New"
    INITIALIZED = "Initialized"
    DEPLOYED = "Deployed"
    READY = "Ready"
    UNRESPONSIVE = "Unresponsive"
    TERMINATED = "Terminated"


_LIVE = frozenset({ActivityState.INITIALIZED, ActivityState.DEPLOYED, ActivityState.READY})
# action -> (states it may start from, state it leads to)
_TRANSITIONS: dict[str, tuple[frozenset[ActivityState], ActivityState]] = {
    "create": (frozenset({ActivityState.NEW}), ActivityState.INITIALIZED),
    "deploy": (frozenset({ActivityState.INITIALIZED}), ActivityState.DEPLOYED),
    "start": (frozenset({ActivityState.DEPLOYED}), ActivityState.READY),
    "fail": (_LIVE, ActivityState.UNRESPONSIVE),
    "destroy": (_LIVE | {ActivityState.NEW, ActivityState.UNRESPONSIVE}, ActivityState.TERMINATED),
}


class TimeSource(Protocol):
    """Monotonic seconds and a way to wait for a moment on that clock."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    async def sleep_until(self, moment: float) -> None:
        """Return once :meth:`monotonic` has reached ``moment`` (at once if it has already)."""
        ...


class LoopTime:
    """Real time: the event loop's clock and ``asyncio.sleep``."""

    def monotonic(self) -> float:
        """The running loop's clock."""
        return asyncio.get_running_loop().time()

    async def sleep_until(self, moment: float) -> None:
        """``asyncio.sleep`` for what is left until ``moment``."""
        await asyncio.sleep(max(moment - self.monotonic(), 0.0))


class ManualTime:
    """Time that moves only when :meth:`advance` is called: deterministic metering for tests."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        """The current manual time."""
        return self.now

    async def sleep_until(self, moment: float) -> None:
        """Wait until :meth:`advance` has moved the time to ``moment``."""
        if moment <= self.now:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (moment, next(self._order), waiter))
        await waiter

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose moment has come."""
        self.now += seconds
        while self._sleepers and self._sleepers[0][0] <= self.now:
            _, _, waiter = heapq.heappop(self._sleepers)
            if not waiter.done():
                waiter.set_result(None)


class Runtime(Protocol):
    """What runs an activity's payload (deploy, start, commands: a later issue) and meters its CPU time."""

    def cpu_seconds(self) -> float:
        """CPU seconds the payload has used so far."""
        ...

    async def stop(self) -> None:
        """Stop the payload and free what it holds."""
        ...


class IdleRuntime:
    """A runtime that runs nothing and uses no CPU: the stand-in until real runtimes plug in."""

    def cpu_seconds(self) -> float:
        """Always 0.0."""
        return 0.0

    async def stop(self) -> None:
        """Nothing to stop."""


class AgreementLookup(Protocol):
    """The part of the local market the hub needs: agreements by id (raising ``LocalMarketError``)."""

    def get_agreement(self, agreement_id: str, *, by: str | None = None) -> Agreement:
        """The agreement as it is now; 404 when unknown or ``by`` is not one of its parties."""
        ...


def _interval(agreement: Agreement) -> float:
    # The offer side is the provider's last counter-proposal: it holds the interval the provider accepted.
    for properties in (agreement.offer.properties, agreement.demand.properties):
        value = properties.get(DEBIT_NOTE_INTERVAL)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    return DEFAULT_DEBIT_NOTE_INTERVAL


def _payee(agreement: Agreement, platform: str) -> str:
    chosen = agreement.demand.properties.get("golem.com.payment.chosen-platform", platform)
    address = agreement.offer.properties.get(f"golem.com.payment.platform.{chosen}.address")
    return address if isinstance(address, str) else agreement.provider_id


class Activity:
    """The supervisor of one activity: its state, its usage, its debit notes and its metering task."""

    def __init__(
        self,
        *,
        agreement: Agreement,
        ledger: Ledger,
        pricing: LinearPricing,
        overcharge: Decimal,
        runtime: Runtime,
        time_source: TimeSource,
    ) -> None:
        self.activity_id = secrets.token_hex(16)
        self.agreement_id = agreement.agreement_id
        self.provider_id = agreement.provider_id
        self.payee_addr = _payee(agreement, ledger.platform)
        self.interval = _interval(agreement)
        self.pricing = pricing
        self.overcharge = overcharge
        self.runtime = runtime
        self.state = ActivityState.NEW
        self.reason: str | None = None
        self.error_message: str | None = None
        self.final_usage: list[float] | None = None
        self.last_amount = Decimal(0)
        self._ledger = ledger
        self._time = time_source
        self._created = time_source.monotonic()
        self._meter: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()  # set once the last debit note (if any) is out and usage is frozen

    @property
    def live(self) -> bool:
        """Neither terminated nor unresponsive."""
        return self.state in _LIVE

    def _transition(self, action: str) -> None:
        sources, target = _TRANSITIONS[action]
        if self.state not in sources:
            raise HttpError(409, f"activity {self.activity_id} is {self.state.value}; cannot {action} it")
        self.state = target

    def usage(self) -> list[float]:
        """The usage counters in the agreement's order (frozen once the activity is terminated)."""
        if self.final_usage is not None:
            return list(self.final_usage)
        counters = {
            DURATION_SEC: max(self._time.monotonic() - self._created, 0.0),
            CPU_SEC: self.runtime.cpu_seconds(),
        }
        return [float(counters.get(name, 0.0)) for name in self.pricing.usage_vector]

    def amount_due(self, usage: list[float]) -> Decimal:
        """The cumulative amount the provider bills for ``usage``: price model × overcharge, to 18 decimals."""
        return (self.pricing.cost(usage) * self.overcharge).quantize(_WEI)

    def bill(self, usage: list[float] | None = None) -> None:
        """Issue a debit note for ``usage`` (by default the usage so far)."""
        usage = self.usage() if usage is None else usage
        self.last_amount = self.amount_due(usage)
        self._ledger.issue_debit_note(
            agreement_id=self.agreement_id,
            activity_id=self.activity_id,
            provider_id=self.provider_id,
            payee_addr=self.payee_addr,
            total_amount_due=self.last_amount,
            usage_counter_vector=usage,
        )

    def start(self) -> None:
        """``New → Initialized``, and start metering."""
        self._transition("create")
        self._meter = asyncio.create_task(self._metering(), name=f"metering of activity {self.activity_id}")

    async def _metering(self) -> None:
        # Deadlines count from the creation, so that a late start or a slow bill never shifts them;
        # intervals that passed entirely while the loop was busy are billed once, not once each.
        due = 1
        try:
            while True:
                await self._time.sleep_until(self._created + due * self.interval)
                self.bill()
                due = int((self._time.monotonic() - self._created) // self.interval) + 1
        except Exception:
            _log.exception("activity %s: metering failed; no more periodic debit notes", self.activity_id)

    async def _stop(self, reason: str, *, bill: bool) -> None:
        try:
            meter, self._meter = self._meter, None
            if meter is not None:
                meter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await meter
            await self.runtime.stop()
            usage = self.usage()
            if bill:
                self.bill(usage)
            self.final_usage = usage
            self.reason = reason
        finally:
            self._stopped.set()

    async def destroy(self, reason: str = "destroyed by the requestor") -> None:
        """Stop metering and the runtime, issue the last debit note, and end ``Terminated``.

        A second call (say the agreement ends while the requestor destroys) waits for the first to finish,
        so that whoever invoices afterwards sees the final amount.
        """
        if self.state is ActivityState.TERMINATED:
            await self._stopped.wait()
            return
        self._transition("destroy")
        await self._stop(reason, bill=True)

    async def close(self) -> None:
        """Stop without billing (the node is shutting down)."""
        if self.state is not ActivityState.TERMINATED:
            self._transition("destroy")
            await self._stop("the local node shut down", bill=False)
        await self._stopped.wait()


class ActivityHub:
    """The activities of the local node's providers; also the providers' ``Billing`` hook.

    ``providers`` maps provider node ids to their specs (for ``overcharge``); ``runtime_factory`` makes the
    runtime of each new activity (the idle one by default).
    """

    def __init__(
        self,
        market: AgreementLookup,
        ledger: Ledger,
        *,
        providers: Mapping[str, ProviderSpec] | None = None,
        time_source: TimeSource | None = None,
        runtime_factory: Callable[[Agreement], Runtime] = lambda _agreement: IdleRuntime(),
    ) -> None:
        self._market = market
        self._ledger = ledger
        self._providers = dict(providers or {})
        self._time: TimeSource = time_source if time_source is not None else LoopTime()
        self._runtime_factory = runtime_factory
        self._activities: dict[str, Activity] = {}
        self._invoiced: set[str] = set()
        self._closed = False

    @property
    def requestor_id(self) -> str:
        """The identity the activity API serves (the node's requestor)."""
        return self._ledger.requestor_id

    def _agreement(self, agreement_id: str, by: str | None) -> Agreement:
        try:
            return self._market.get_agreement(agreement_id, by=by)
        except LocalMarketError as exc:
            raise HttpError(exc.status, exc.message) from exc

    async def create(self, agreement_id: str, *, by: str | None = None) -> Activity:
        """A new ``Initialized`` activity on an ``Approved`` agreement of ``by`` (default: the requestor).

        404 unknown agreement; 403 not the requestor's; 400 not approved, or a second activity on an
        agreement whose offer lacks ``golem.srv.caps.multi-activity``.
        """
        caller = by or self.requestor_id
        if self._closed:
            raise HttpError(500, "the local node is shutting down")
        agreement = self._agreement(agreement_id, caller)
        if agreement.requestor_id != caller:
            raise HttpError(403, f"agreement {agreement_id} is not yours: only its requestor may create activities")
        if agreement.state is not AgreementState.APPROVED:
            raise HttpError(400, f"agreement {agreement_id} is {agreement.state.value}, not Approved")
        if agreement_id in self._invoiced:
            raise HttpError(400, f"agreement {agreement_id} has ended: its provider has invoiced it")
        existing = [a for a in self._activities.values() if a.agreement_id == agreement_id]
        if existing and agreement.offer.properties.get(MULTI_ACTIVITY) is not True:
            raise HttpError(
                400,
                f"agreement {agreement_id} already has activity {existing[0].activity_id} and the provider does "
                f"not offer {MULTI_ACTIVITY}: destroy nothing, reuse that activity or negotiate another agreement",
            )
        try:
            pricing = LinearPricing.from_properties(agreement.offer.properties)
        except MarketError as exc:
            raise HttpError(400, f"agreement {agreement_id} cannot be billed: {exc}") from exc
        spec = self._providers.get(agreement.provider_id)
        activity = Activity(
            agreement=agreement,
            ledger=self._ledger,
            pricing=pricing,
            overcharge=spec.overcharge if spec is not None else Decimal(1),
            runtime=self._runtime_factory(agreement),
            time_source=self._time,
        )
        self._activities[activity.activity_id] = activity
        activity.start()
        return activity

    def get(self, activity_id: str) -> Activity:
        """An activity by id; 404 when unknown."""
        activity = self._activities.get(activity_id)
        if activity is None:
            raise HttpError(404, f"activity {activity_id} not found")
        return activity

    def activities(self, agreement_id: str | None = None) -> list[Activity]:
        """Every activity (of ``agreement_id`` when given), oldest first."""
        return [a for a in self._activities.values() if agreement_id in (None, a.agreement_id)]

    async def destroy(self, activity_id: str) -> None:
        """Destroy an activity (404 unknown); a terminated one stays as it is."""
        await self.get(activity_id).destroy()

    def tick(self) -> None:
        """Have every live activity bill now, as its metering task does every interval."""
        for activity in self._activities.values():
            if activity.live:
                activity.bill()

    async def agreement_ended(self, agreement_id: str, provider_id: str) -> None:
        """``Billing``: destroy the agreement's live activities and invoice their final amounts (once).

        The invoice is issued even when no activity ran (amount 0), so every ended agreement settles.
        """
        if agreement_id in self._invoiced:
            return
        self._invoiced.add(agreement_id)
        activities = self.activities(agreement_id)
        for activity in activities:
            await activity.destroy("the agreement ended")
        if activities:
            payee = activities[0].payee_addr
        else:
            try:
                payee = _payee(self._agreement(agreement_id, None), self._ledger.platform)
            except HttpError:
                payee = provider_id
        self._ledger.issue_invoice(
            agreement_id=agreement_id,
            activity_ids=[a.activity_id for a in activities],
            provider_id=provider_id,
            payee_addr=payee,
            amount=sum((a.last_amount for a in activities), Decimal(0)),
        )

    async def close(self) -> None:
        """Stop every activity and await its metering task; no documents are issued any more."""
        self._closed = True
        for activity in list(self._activities.values()):
            await activity.close()
