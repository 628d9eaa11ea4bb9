"""The default event consumer: what this run did and cost, logged as it happens and kept for display.

:class:`SummaryLogger` logs one line per agreement, payment and service state change, and the per-provider
totals when the engine stops. It also keeps the figures that the live status and the final summary show
(:mod:`golem_api.console`): per provider (:class:`ProviderTotals`: agreements, invoices, amount paid, activity
time), per agreement (:class:`AgreementRecord`: the cost so far, from accepted debit notes, then the invoice)
and per service instance (:class:`InstanceRecord`: state and uptime).

It renders as the per-provider summary table: ``rich.print(golem.summary)`` in a terminal, or just
``golem.summary`` as the last line of a notebook cell.
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal

from attrs import define, field

from golem_api.events import (
    ActivityCreated,
    ActivityDestroyed,
    AgreementConfirmed,
    AgreementRejected,
    AllocationCreated,
    DebitNoteAccepted,
    DebitNoteRejected,
    DocumentRefused,
    Event,
    GolemStopped,
    InvoiceAccepted,
    NoOffersWarning,
    PaymentFailed,
    ServiceRespawned,
    ServiceStateChanged,
    UnpaidAgreementsWarning,
)
from golem_shared.timestamps import utc_now

__all__ = ["AgreementRecord", "InstanceRecord", "ProviderTotals", "SummaryLogger", "token_name"]

_log = logging.getLogger("golem_api._summary")


def token_name(platform: str) -> str:
    """The token a payment platform pays in: ``erc20-holesky-tglm`` → ``tGLM``, ``…-glm`` → ``GLM``."""
    token = platform.rsplit("-", 1)[-1]
    if token.lower() == "tglm":
        return "tGLM"
    return token.upper() if token else "GLM"


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())


@define
class ProviderTotals:
    """What one provider did for this run: agreements confirmed, invoices paid, the amount, activity time."""

    agreements: int = 0
    invoices: int = 0
    paid: Decimal = Decimal(0)
    activity_seconds: float = 0.0
    """Seconds of activities that have ended; :meth:`SummaryLogger.activity_seconds` adds the live ones."""


@define
class AgreementRecord:
    """One agreement as the summary saw it: its provider, what was accepted so far, when its activities ran."""

    agreement_id: str
    provider_name: str
    debit: dict[str, Decimal] = field(factory=dict)
    """Per activity id, the cumulative total of the last debit note accepted."""
    paid: Decimal | None = None
    """The amount of the accepted invoice (``None`` until then)."""
    running: dict[str, datetime] = field(factory=dict)
    """Per live activity id, when it was created."""

    @property
    def cost(self) -> Decimal:
        """The cost so far: the invoice once accepted, else the accepted debit notes' totals."""
        if self.paid is not None:
            return self.paid
        return sum(self.debit.values(), start=Decimal(0))


@define
class InstanceRecord:
    """One service instance: its state, its provider, and how long it has been ``running``."""

    service: str
    name: str
    state: str = "pending"
    provider_name: str | None = None
    since: datetime = field(factory=utc_now)
    """When it entered its current state."""
    ran_seconds: float = 0.0
    """Seconds spent ``running`` before the current state (when that is ``running``, the current stretch is extra)."""

    def uptime(self, now: datetime | None = None) -> float:
        """Seconds the instance has been ``running``, over all its stretches."""
        if self.state == "running":
            return self.ran_seconds + _seconds(self.since, now or utc_now())
        return self.ran_seconds


@define
class SummaryLogger:
    """Logs the run as it happens and keeps its figures; renders as the per-provider summary table."""

    providers: dict[str, ProviderTotals] = field(factory=dict)
    agreements: dict[str, AgreementRecord] = field(factory=dict)
    instances: dict[str, InstanceRecord] = field(factory=dict)
    """Per instance name (names are unique within a cluster)."""
    token: str = "GLM"
    """The token amounts are in, from the allocation's payment platform."""

    @property
    def total_paid(self) -> Decimal:
        """The sum of every invoice accepted."""
        return sum((p.paid for p in self.providers.values()), start=Decimal(0))

    def cost_of(self, agreement_id: str) -> Decimal:
        """What an agreement has cost so far (see :attr:`AgreementRecord.cost`); zero when unknown."""
        record = self.agreements.get(agreement_id)
        return record.cost if record is not None else Decimal(0)

    def activity_seconds(self, provider_name: str, now: datetime | None = None) -> float:
        """Seconds of activity on a provider: those that ended plus those still running until ``now``."""
        now = now or utc_now()
        totals = self.providers.get(provider_name)
        ended = totals.activity_seconds if totals is not None else 0.0
        live = sum(
            _seconds(start, now)
            for record in self.agreements.values()
            if record.provider_name == provider_name
            for start in record.running.values()
        )
        return ended + live

    def _provider(self, name: str) -> ProviderTotals:
        return self.providers.setdefault(name, ProviderTotals())

    def _agreement(self, agreement_id: str, provider_name: str) -> AgreementRecord:
        return self.agreements.setdefault(agreement_id, AgreementRecord(agreement_id, provider_name))

    def __call__(self, event: Event) -> None:
        if isinstance(event, AgreementConfirmed):
            self._provider(event.provider_name).agreements += 1
            self._agreement(event.agreement_id, event.provider_name)
            _log.info("Agreement confirmed by provider '%s'", event.provider_name)
        elif isinstance(event, AgreementRejected):
            _log.info("Provider '%s' did not approve the agreement: %s", event.provider_name, event.reason)
        elif isinstance(event, ActivityCreated):
            self._agreement(event.agreement_id, event.provider_name).running[event.activity_id] = event.timestamp
        elif isinstance(event, ActivityDestroyed):
            start = self._agreement(event.agreement_id, event.provider_name).running.pop(event.activity_id, None)
            if start is not None:
                self._provider(event.provider_name).activity_seconds += _seconds(start, event.timestamp)
        elif isinstance(event, DebitNoteAccepted):
            record = self._agreement(event.agreement_id, event.provider_name)
            record.debit[event.activity_id] = max(record.debit.get(event.activity_id, Decimal(0)), event.amount)
        elif isinstance(event, InvoiceAccepted):
            totals = self._provider(event.provider_name)
            totals.invoices += 1
            totals.paid += event.amount
            self._agreement(event.agreement_id, event.provider_name).paid = event.amount
            _log.info("Accepted invoice from '%s', amount: %s", event.provider_name, event.amount)
        elif isinstance(event, AllocationCreated):
            self.token = token_name(event.platform)
        elif isinstance(event, DebitNoteRejected | PaymentFailed):
            _log.warning("Refused to pay '%s': %s", event.provider_name, event.reason)
        elif isinstance(event, DocumentRefused):
            _log.warning(
                "Refused %s from '%s', amount: %s, allowed at most: %s: %s",
                event.kind,
                event.provider_name,
                event.amount,
                event.allowed,
                event.reason,
            )
        elif isinstance(event, ServiceStateChanged):
            self._track(event)
            self._service_line(event)
        elif isinstance(event, ServiceRespawned):
            _log.warning("Service '%s' is started again on another provider: %s", event.instance, event.reason)
        elif isinstance(event, NoOffersWarning):
            _log.warning("No offers after %.0f s for constraints %s", event.waited, event.constraints)
        elif isinstance(event, UnpaidAgreementsWarning):
            _log.warning(
                "%d agreement(s) had no invoice after %.0f s: %s",
                len(event.agreement_ids),
                event.waited,
                ", ".join(event.agreement_ids),
            )
        elif isinstance(event, GolemStopped):
            for name, totals in sorted(self.providers.items()):
                _log.info(
                    "Provider '%s': %d agreement(s), %d invoice(s), activity time %.1f s, paid %s",
                    name,
                    totals.agreements,
                    totals.invoices,
                    totals.activity_seconds,
                    totals.paid,
                )
            _log.info("Total cost: %s", self.total_paid)

    def _track(self, event: ServiceStateChanged) -> None:
        record = self.instances.setdefault(event.instance, InstanceRecord(event.service, event.instance))
        if record.state == "running":
            record.ran_seconds += _seconds(record.since, event.timestamp)
        record.state = event.new
        record.since = event.timestamp
        if event.provider_name:
            record.provider_name = event.provider_name

    @staticmethod
    def _service_line(event: ServiceStateChanged) -> None:
        where = f" on '{event.provider_name}'" if event.provider_name else ""
        why = f" ({event.reason})" if event.reason else ""
        level = logging.WARNING if event.new == "unresponsive" else logging.INFO
        _log.log(level, "Service '%s'%s: %s -> %s%s", event.instance, where, event.old, event.new, why)

    # --- display ----------------------------------------------------------------------------------

    def __rich__(self) -> object:
        """The per-provider summary table (:func:`golem_api.console.summary_table`)."""
        from golem_api.console import summary_table

        return summary_table(self)

    def _repr_html_(self) -> str:
        """The summary table as HTML, for notebooks."""
        from golem_api.console import summary_table, to_html

        return to_html(summary_table(self))
