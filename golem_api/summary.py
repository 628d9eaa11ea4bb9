"""The default event consumer: a concise log of agreements and payments, and the totals at the end."""

from __future__ import annotations

import logging
from decimal import Decimal

from attrs import define, field

from golem_api.events import (
    AgreementConfirmed,
    AgreementRejected,
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

__all__ = ["ProviderTotals", "SummaryLogger"]

_log = logging.getLogger("golem_api.summary")


@define
class ProviderTotals:
    """What one provider did for this run."""

    agreements: int = 0
    invoices: int = 0
    paid: Decimal = Decimal(0)


@define
class SummaryLogger:
    """Logs one line per agreement and payment, and per-provider totals when the engine stops."""

    providers: dict[str, ProviderTotals] = field(factory=dict)

    @property
    def total_paid(self) -> Decimal:
        return sum((p.paid for p in self.providers.values()), start=Decimal(0))

    def _provider(self, name: str) -> ProviderTotals:
        return self.providers.setdefault(name, ProviderTotals())

    def __call__(self, event: Event) -> None:
        if isinstance(event, AgreementConfirmed):
            self._provider(event.provider_name).agreements += 1
            _log.info("Agreement confirmed by provider '%s'", event.provider_name)
        elif isinstance(event, AgreementRejected):
            _log.info("Provider '%s' did not approve the agreement: %s", event.provider_name, event.reason)
        elif isinstance(event, InvoiceAccepted):
            totals = self._provider(event.provider_name)
            totals.invoices += 1
            totals.paid += event.amount
            _log.info("Accepted invoice from '%s', amount: %s", event.provider_name, event.amount)
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
                    "Provider '%s': %d agreement(s), %d invoice(s), paid %s",
                    name,
                    totals.agreements,
                    totals.invoices,
                    totals.paid,
                )
            _log.info("Total cost: %s", self.total_paid)

    @staticmethod
    def _service_line(event: ServiceStateChanged) -> None:
        where = f" on '{event.provider_name}'" if event.provider_name else ""
        why = f" ({event.reason})" if event.reason else ""
        level = logging.WARNING if event.new == "unresponsive" else logging.INFO
        _log.log(level, "Service '%s'%s: %s -> %s%s", event.instance, where, event.old, event.new, why)
