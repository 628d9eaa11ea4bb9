"""The agreement lifecycle of the local market: the state machine, waiting for approval, agreement events.

An agreement moves only through the transitions in ``_TRANSITIONS``::

    Proposal --confirm--> Pending --approve--> Approved --terminate--> Terminated
        |                   |--reject-->  Rejected
        +----cancel---------+--cancel-->  Cancelled
        +----expire (validTo passed)-+-->  Expired

A refused transition answers as the daemon does: 410 (Gone) when the agreement is already final, or for
``confirm`` and ``cancel``; 409 (Conflict) when it is not there yet (e.g. terminating a ``Pending`` one).
Both parties get every ``Agreement…Event`` in their own log, read with ``afterTimestamp`` semantics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from attrs import evolve

from golem_local.eventlog import EventLog, StrictClock
from golem_local.market_model import (
    FINAL_STATES,
    AgreementOperationRecord,
    AgreementRecord,
    AgreementState,
    LocalMarketTimeoutError,
    MarketBadRequestError,
    MarketConflictError,
    MarketGoneError,
    MarketNotFoundError,
    TerminationObserver,
)
from golem_shared.tasks import wait_event

__all__ = [
    "AgreementBook",
]

_log = logging.getLogger(__name__)

_S = AgreementState
# action -> (states it may start from, state it leads to)
_TRANSITIONS: dict[str, tuple[frozenset[AgreementState], AgreementState]] = {
    "confirm": (frozenset({_S.PROPOSAL}), _S.PENDING),
    "approve": (frozenset({_S.PENDING}), _S.APPROVED),
    "reject": (frozenset({_S.PENDING}), _S.REJECTED),
    "cancel": (frozenset({_S.PROPOSAL, _S.PENDING}), _S.CANCELLED),
    "expire": (frozenset({_S.PROPOSAL, _S.PENDING}), _S.EXPIRED),
    "terminate": (frozenset({_S.APPROVED}), _S.TERMINATED),
}
_GONE_WHEN_REFUSED = frozenset({"confirm", "cancel"})  # the daemon answers 410, not 409, for these


class AgreementBook:
    """The agreements of one market, their parties' event logs and the termination observers.

    ``by=`` names the calling identity: the agreement must be one of its own (else 404) and, for a
    one-sided action, it must be the right party (else 400). ``by=None`` skips the checks (in-process use).
    """

    def __init__(self, clock: StrictClock | None = None, *, now: Callable[[], datetime]) -> None:
        self.clock = clock if clock is not None else StrictClock()
        self._now = now
        self._agreements: dict[str, AgreementRecord] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._agreement_logs: dict[str, EventLog[AgreementOperationRecord]] = {}
        self._observers: list[TerminationObserver] = []

    def _add_agreement(self, agreement: AgreementRecord) -> None:
        self._agreements[agreement.agreement_id] = agreement

    def confirm(
        self, agreement_id: str, *, app_session_id: str | None = None, by: str | None = None
    ) -> AgreementRecord:
        """The requestor sends the agreement to the provider (``Pending``); 410 unless in ``Proposal``."""
        agreement = self._party(agreement_id, by, "requestor")
        return self._transition(agreement, "confirm", app_session_id=app_session_id)

    def get_agreement(self, agreement_id: str, *, by: str | None = None) -> AgreementRecord:
        """The agreement as it is now; 404 when unknown or ``by`` is not one of its parties."""
        agreement = self._agreements.get(agreement_id)
        if agreement is None or by not in (None, agreement.requestor_id, agreement.provider_id):
            raise MarketNotFoundError(f"agreement {agreement_id} not found")
        if agreement.state in _TRANSITIONS["expire"][0] and self._now() >= agreement.valid_to:
            agreement = self._transition(agreement, "expire")
        return agreement

    def agreements(self, identity: str) -> list[AgreementRecord]:
        """Every agreement ``identity`` is a party to, oldest first."""
        return [
            self.get_agreement(a.agreement_id)
            for a in self._agreements.values()
            if identity in (a.requestor_id, a.provider_id)
        ]

    async def wait_for_approval(
        self, agreement_id: str, timeout: float | None, *, by: str | None = None
    ) -> AgreementRecord:
        """Return once the provider approved; 410 when it ended otherwise, 409 unconfirmed, 408 on timeout.

        ``timeout`` ``None`` waits until the agreement's ``validTo``.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            agreement = self._party(agreement_id, by, "requestor")
            if agreement.state is AgreementState.APPROVED:
                return agreement
            if agreement.state in FINAL_STATES:
                raise MarketGoneError(_ended(agreement))
            if agreement.state is AgreementState.PROPOSAL:
                raise MarketConflictError(f"agreement {agreement_id} is not confirmed yet: confirm it first")
            wait = (agreement.valid_to - self._now()).total_seconds()
            if deadline is not None:
                if loop.time() >= deadline:
                    raise LocalMarketTimeoutError(f"agreement {agreement_id} was not approved within {timeout} s")
                wait = min(wait, deadline - loop.time())
            changed = self._changed.setdefault(agreement_id, asyncio.Event())
            await wait_event(changed, max(wait, 0.0))

    def approve(self, agreement_id: str, *, by: str | None = None) -> None:
        """The provider approves a ``Pending`` agreement: both parties get ``AgreementApprovedEvent``."""
        agreement = self._party(agreement_id, by, "provider")
        approved = self._transition(agreement, "approve", approved_date=self.clock.now())
        self._announce(approved, "AgreementApprovedEvent")

    def reject_agreement(
        self, agreement_id: str, reason: dict[str, Any] | None = None, *, by: str | None = None
    ) -> None:
        """The provider refuses a ``Pending`` agreement: both parties get ``AgreementRejectedEvent``."""
        agreement = self._party(agreement_id, by, "provider")
        self._announce(self._transition(agreement, "reject", reason=reason), "AgreementRejectedEvent")

    def cancel(self, agreement_id: str, reason: dict[str, Any] | None = None, *, by: str | None = None) -> None:
        """The requestor withdraws an agreement not yet approved; 410 once approved or ended."""
        agreement = self._party(agreement_id, by, "requestor")
        self._announce(self._transition(agreement, "cancel", reason=reason), "AgreementCancelledEvent")

    async def terminate(self, agreement_id: str, by: str, reason: dict[str, Any] | None = None) -> None:
        """End an approved agreement: 409 while ``Proposal``/``Pending``, 410 when already final.

        Both parties get ``AgreementTerminatedEvent`` at once; then the termination observers are awaited in
        the order they were added (one failing is logged and does not stop the others).
        """
        agreement = self.get_agreement(agreement_id, by=by)
        terminator = "Requestor" if by == agreement.requestor_id else "Provider"
        ended = self._transition(agreement, "terminate", terminator=terminator, reason=reason)
        self._announce(ended, "AgreementTerminatedEvent")
        for observer in list(self._observers):
            try:
                await observer(ended, terminator)
            except Exception:
                _log.exception("termination observer %r failed for agreement %s", observer, agreement_id)

    def add_termination_observer(self, observer: TerminationObserver) -> None:
        """Have ``observer(agreement, terminator)`` awaited whenever an agreement is terminated."""
        self._observers.append(observer)

    def remove_termination_observer(self, observer: TerminationObserver) -> None:
        """Stop calling ``observer``."""
        self._observers.remove(observer)

    async def agreement_events(
        self,
        identity: str,
        *,
        after: datetime | None,
        timeout: float,
        max_events: int,
        app_session_id: str | None = None,
    ) -> list[AgreementOperationRecord]:
        """The agreement events of ``identity`` strictly after ``after``, waiting up to ``timeout`` s."""
        return await self._log(identity).collect(
            after=after,
            timeout=timeout,
            max_events=max_events,
            accept=lambda e: app_session_id is None or e.app_session_id == app_session_id,
        )

    def _party(self, agreement_id: str, by: str | None, role: str) -> AgreementRecord:
        agreement = self.get_agreement(agreement_id, by=by)
        expected = agreement.requestor_id if role == "requestor" else agreement.provider_id
        if by is not None and by != expected:
            raise MarketBadRequestError(f"only the {role} of agreement {agreement_id} may do this")
        return agreement

    def _transition(self, agreement: AgreementRecord, action: str, **changes: Any) -> AgreementRecord:
        sources, target = _TRANSITIONS[action]
        if agreement.state not in sources:
            if agreement.state in FINAL_STATES or action in _GONE_WHEN_REFUSED:
                raise MarketGoneError(f"{_ended(agreement)}; cannot {action} it")
            raise MarketConflictError(
                f"agreement {agreement.agreement_id} is {agreement.state.value}; cannot {action} it yet"
            )
        changed = evolve(agreement, state=target, **changes)
        self._agreements[agreement.agreement_id] = changed
        waiters = self._changed.pop(agreement.agreement_id, None)
        if waiters is not None:
            waiters.set()
        return changed

    def _log(self, identity: str) -> EventLog[AgreementOperationRecord]:
        if identity not in self._agreement_logs:
            self._agreement_logs[identity] = EventLog(self.clock)
        return self._agreement_logs[identity]

    def _announce(self, agreement: AgreementRecord, event_type: str) -> None:
        for identity in (agreement.requestor_id, agreement.provider_id):
            self._log(identity).append(
                lambda moment: AgreementOperationRecord(
                    event_type=event_type,
                    event_date=moment,
                    agreement_id=agreement.agreement_id,
                    reason=agreement.reason,
                    terminator=agreement.terminator if event_type == "AgreementTerminatedEvent" else None,
                    app_session_id=agreement.app_session_id,
                )
            )


def _ended(agreement: AgreementRecord) -> str:
    state = agreement.state.value
    text = f"{state}: agreement {agreement.agreement_id} is {state.lower()}"
    if agreement.reason and agreement.reason.get("message"):
        text += f" ({agreement.reason['message']})"
    return text
