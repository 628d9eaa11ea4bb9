"""Events: what happened, when, to whom. Frozen attrs values, delivered through an :class:`EventBus`.

Every event stamps its own creation time (``timestamp``), taken when the event is made, not when this
module was imported. Consumers subscribe for some event classes (or all of them) and are called in
order of subscription; a consumer that raises is logged and does not stop the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

from attrs import define, field, frozen

from golem_api.errors import ConfigurationError, GolemTimeoutError
from golem_shared.timestamps import utc_now

__all__ = [
    "ActivityCreated",
    "ActivityDestroyed",
    "AgreementConfirmed",
    "AgreementCreated",
    "AgreementRejected",
    "AgreementTerminated",
    "AllocationCreated",
    "AllocationReleased",
    "BudgetExhausted",
    "CommandExecuted",
    "CommandOutput",
    "DebitNoteAccepted",
    "DebitNoteRejected",
    "DemandSubscribed",
    "DocumentRefused",
    "Event",
    "EventBus",
    "GolemStarted",
    "GolemStopped",
    "InvoiceAccepted",
    "InvoiceReceived",
    "JobFinished",
    "JobStarted",
    "NoOffersWarning",
    "OfferReceived",
    "OfferRejected",
    "PaymentFailed",
    "ProposalRejectedByProvider",
    "ScriptFinished",
    "ScriptSent",
    "ServiceRespawned",
    "ServiceStateChanged",
    "Subscription",
    "TaskAccepted",
    "TaskFailed",
    "TaskRejected",
    "TaskStarted",
    "UnpaidAgreementsWarning",
    "WorkerFinished",
    "WorkerStarted",
]

_log = logging.getLogger(__name__)

E = TypeVar("E", bound="Event")


@frozen
class Event:
    """Base of all events; ``timestamp`` is when the event was made (UTC)."""

    timestamp: datetime = field(factory=utc_now, kw_only=True)


# --- engine -------------------------------------------------------------------------------------


@frozen
class GolemStarted(Event):
    """The engine is connected to a node; ``local`` tells whether it is the embedded local network."""

    api_url: str
    identity: str
    local: bool


@frozen
class GolemStopped(Event):
    """The engine has shut down and released what it held."""


# --- market -------------------------------------------------------------------------------------


@frozen
class DemandSubscribed(Event):
    """A demand was published on the market."""

    subscription_id: str
    constraints: str


@frozen
class OfferReceived(Event):
    """A provider's offer matched the demand."""

    proposal_id: str
    provider_id: str
    provider_name: str


@frozen
class OfferRejected(Event):
    """The requestor's strategy turned an offer down; ``reason`` says why."""

    proposal_id: str
    provider_id: str
    provider_name: str
    reason: str


@frozen
class ProposalRejectedByProvider(Event):
    """A provider turned down the requestor's counter-proposal."""

    proposal_id: str
    provider_id: str
    provider_name: str
    reason: str


@frozen
class NoOffersWarning(Event):
    """No offer matched the demand within ``waited`` seconds: the demand may ask for too much."""

    subscription_id: str
    constraints: str
    waited: float


@frozen
class AgreementCreated(Event):
    """An agreement was proposed to a provider."""

    agreement_id: str
    provider_id: str
    provider_name: str


@frozen
class AgreementConfirmed(Event):
    """The provider approved the agreement: it is in force."""

    agreement_id: str
    provider_id: str
    provider_name: str


@frozen
class AgreementRejected(Event):
    """The provider did not approve the agreement (rejected, expired or timed out)."""

    agreement_id: str
    provider_id: str
    provider_name: str
    reason: str


@frozen
class AgreementTerminated(Event):
    """The agreement ended; ``by`` is ``"requestor"`` or ``"provider"``."""

    agreement_id: str
    provider_id: str
    provider_name: str
    reason: str
    by: str


# --- activity -----------------------------------------------------------------------------------


@frozen
class ActivityCreated(Event):
    """An activity started on a provider under an agreement."""

    activity_id: str
    agreement_id: str
    provider_name: str


@frozen
class ActivityDestroyed(Event):
    """An activity ended."""

    activity_id: str
    agreement_id: str
    provider_name: str


@frozen
class ScriptSent(Event):
    """A script (batch of commands) was sent to an activity."""

    activity_id: str
    batch_id: str
    commands: tuple[str, ...]
    provider_name: str


@frozen
class CommandExecuted(Event):
    """A command of a script finished on the provider; ``success`` says how."""

    activity_id: str
    batch_id: str
    index: int
    command: str
    success: bool
    message: str | None
    provider_name: str


@frozen
class CommandOutput(Event):
    """A piece of a running command's output (``stream`` is ``"stdout"`` or ``"stderr"``), as it arrived."""

    activity_id: str
    batch_id: str
    index: int
    stream: str
    text: str
    provider_name: str


@frozen
class ScriptFinished(Event):
    """Every result of a script is in (``success`` False when a command failed or it timed out)."""

    activity_id: str
    batch_id: str
    success: bool
    provider_name: str


# --- services -----------------------------------------------------------------------------------


@frozen
class ServiceStateChanged(Event):
    """A service instance moved from state ``old`` to ``new`` (names of :class:`ServiceState` states)."""

    service: str
    instance: str
    old: str
    new: str
    provider_name: str | None
    reason: str | None = None


@frozen
class ServiceRespawned(Event):
    """A service instance failed to start and is tried again on a new agreement."""

    service: str
    instance: str
    failed_provider_name: str | None
    reason: str


# --- tasks (Golem.execute_tasks) ------------------------------------------------------------------


@frozen
class JobStarted(Event):
    """``execute_tasks`` started a job: its demand is on the market."""

    job_id: str
    max_workers: int


@frozen
class WorkerStarted(Event):
    """A worker of a job has an agreement and an activity with a provider."""

    job_id: str
    agreement_id: str
    provider_id: str
    provider_name: str


@frozen
class WorkerFinished(Event):
    """A worker ended; ``error`` says why when it failed (its unfinished tasks are tried again)."""

    job_id: str
    provider_id: str
    provider_name: str
    error: str | None = None


@frozen
class TaskStarted(Event):
    """A task was handed to a worker (``attempt`` counts from 1)."""

    job_id: str
    task_id: str
    provider_name: str
    attempt: int


@frozen
class TaskAccepted(Event):
    """A worker accepted a task's result."""

    job_id: str
    task_id: str
    provider_name: str
    attempt: int


@frozen
class TaskRejected(Event):
    """A task's attempt ended without an accepted result: rejected by the worker, or its worker failed.

    ``retry`` tells whether it will be tried again (preferably on another provider).
    """

    job_id: str
    task_id: str
    provider_name: str
    reason: str
    retry: bool


@frozen
class TaskFailed(Event):
    """A task used all its attempts; the job stops with :class:`~golem_api.errors.TaskFailedError`."""

    job_id: str
    task_id: str
    reasons: tuple[str, ...]


@frozen
class JobFinished(Event):
    """A job ended: how many tasks were accepted, rejected for good, tried again, failed; ``error`` if it broke."""

    job_id: str
    accepted: int
    rejected: int
    retried: int
    failed: int
    seconds: float
    error: str | None = None


# --- payment ------------------------------------------------------------------------------------


@frozen
class AllocationCreated(Event):
    """Funds were set aside for this run."""

    allocation_id: str
    amount: Decimal
    platform: str


@frozen
class AllocationReleased(Event):
    """The allocation was released; ``spent`` is what it paid."""

    allocation_id: str
    spent: Decimal


@frozen
class DebitNoteAccepted(Event):
    """A debit note was accepted; ``amount`` is its cumulative total due."""

    debit_note_id: str
    agreement_id: str
    activity_id: str
    provider_name: str
    amount: Decimal


@frozen
class DebitNoteRejected(Event):
    """A debit note was not accepted; ``reason`` says why."""

    debit_note_id: str
    agreement_id: str
    provider_name: str
    amount: Decimal
    reason: str


@frozen
class BudgetExhausted(Event):
    """A debit note or invoice was refused because the rest of the budget cannot pay it.

    ``charge`` is what accepting it would have added to what was spent (``spent``, of ``budget``); ``message``
    is the line the requestor logged. The agreement is terminated; a service instance on it ends as a failure
    with a :class:`~golem_api.errors.BudgetExceededError` carrying ``message``.
    """

    kind: str
    document_id: str
    agreement_id: str
    provider_name: str
    amount: Decimal
    charge: Decimal
    budget: Decimal
    spent: Decimal
    message: str


@frozen
class DocumentRefused(Event):
    """A debit note or invoice asked for more than the agreed prices and the reported usage allow.

    It was not accepted, and the agreement was terminated; nothing more is paid to that provider.
    ``kind`` is ``"debit note"`` or ``"invoice"``; ``allowed`` is the most the requestor would pay.
    """

    kind: str
    document_id: str
    agreement_id: str
    provider_name: str
    amount: Decimal
    allowed: Decimal
    reason: str


@frozen
class InvoiceReceived(Event):
    """A provider sent an invoice."""

    invoice_id: str
    agreement_id: str
    provider_name: str
    amount: Decimal


@frozen
class InvoiceAccepted(Event):
    """An invoice was accepted and will be paid."""

    invoice_id: str
    agreement_id: str
    provider_name: str
    amount: Decimal


@frozen
class PaymentFailed(Event):
    """A debit note or invoice could not be accepted; ``reason`` says why."""

    document_id: str
    agreement_id: str
    provider_name: str
    reason: str


@frozen
class UnpaidAgreementsWarning(Event):
    """On exit, these agreements had no accepted invoice within the wait."""

    agreement_ids: tuple[str, ...]
    waited: float


# --- the bus ------------------------------------------------------------------------------------


Consumer = Callable[[Event], None]


@frozen
class Subscription:
    """A handle returned by :meth:`EventBus.subscribe`; pass it to :meth:`EventBus.unsubscribe`."""

    consumer: Consumer
    kinds: tuple[type[Event], ...]

    def wants(self, event: Event) -> bool:
        return not self.kinds or isinstance(event, self.kinds)


@define
class EventBus:
    """Delivers events to subscribed consumers, synchronously and in order of subscription."""

    _subscriptions: list[Subscription] = field(factory=list, init=False)

    def subscribe(self, consumer: Consumer, *kinds: type[Event]) -> Subscription:
        """Call ``consumer`` for every event of the given classes (all events when none are given)."""
        for kind in kinds:
            if not (isinstance(kind, type) and issubclass(kind, Event)):
                raise ConfigurationError(f"can only subscribe to Event classes, got {kind!r}")
        subscription = Subscription(consumer, tuple(kinds))
        self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop delivering to a subscription; unknown subscriptions are ignored."""
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    def emit(self, event: Event) -> None:
        """Deliver ``event`` to every consumer that wants it."""
        for subscription in list(self._subscriptions):
            if subscription.wants(event):
                try:
                    subscription.consumer(event)
                except Exception:
                    _log.exception("event consumer %r failed on %r", subscription.consumer, event)

    async def wait_for(
        self,
        kind: type[E],
        predicate: Callable[[E], bool] = lambda _: True,
        *,
        timeout: float,
    ) -> E:
        """The next event of class ``kind`` that satisfies ``predicate``.

        Raises :class:`~golem_api.errors.GolemTimeoutError` after ``timeout`` s.
        """
        future: asyncio.Future[E] = asyncio.get_running_loop().create_future()

        def consume(event: Event) -> None:
            if isinstance(event, kind) and not future.done() and predicate(event):
                future.set_result(event)

        subscription = self.subscribe(consume, kind)
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise GolemTimeoutError(f"no {kind.__name__} event within {timeout:g} s", timeout=timeout) from None
        finally:
            self.unsubscribe(subscription)
