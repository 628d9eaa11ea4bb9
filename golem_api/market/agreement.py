"""An agreement in force with one provider, as the requestor holds it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from golem_api._retry import retry
from golem_api.errors import ConflictError, GolemError, GoneError
from golem_api.events import AgreementTerminated, EventBus
from golem_shared.pricing import LinearPricing

if TYPE_CHECKING:
    from golem_api._rest.client import RestClient
    from golem_api.activity.activity import Activity

__all__ = ["Agreement"]

_log = logging.getLogger(__name__)


class Agreement:
    """An approved agreement: the provider, its agreed prices, and the way to end it.

    Created by the engine once the provider has approved; ``terminate`` is idempotent and retried on transient
    failures (:mod:`golem_api._retry`): the agreement counts as terminated only once the node confirmed it.
    """

    def __init__(
        self,
        *,
        agreement_id: str,
        provider_id: str,
        provider_name: str,
        offer_properties: Mapping[str, Any],
        rest: RestClient,
        bus: EventBus,
    ) -> None:
        self.agreement_id = agreement_id
        self.provider_id = provider_id
        self.provider_name = provider_name
        self.offer_properties = dict(offer_properties)
        self.pricing = LinearPricing.from_properties(offer_properties)
        self._rest = rest
        self._bus = bus
        self._terminated = False
        self._ending = asyncio.Lock()
        self._ending_started = asyncio.Event()
        self.end_reason: str | None = None
        """Why the agreement ended (or is being ended), once it is."""
        self.failure: GolemError | None = None
        """The fault that made the requestor end it (the budget ran out, a document asked too much), if any."""
        self.activities: list[Activity] = []

    @property
    def terminated(self) -> bool:
        """True once the agreement has ended, by either side."""
        return self._terminated

    def __repr__(self) -> str:
        state = "terminated" if self._terminated else "approved"
        return f"<Agreement {self.agreement_id[:8]}… with {self.provider_name!r} ({state})>"

    async def create_activity(self) -> Activity:
        """Start an activity under this agreement."""
        from golem_api.activity.activity import Activity

        activity = await Activity.create(self, self._rest, self._bus)
        self.activities.append(activity)
        return activity

    async def terminate(
        self, reason: str = "Finished", *, success: bool = True, failure: GolemError | None = None
    ) -> None:
        """End the agreement (destroying its live activities first); does nothing if it has ended.

        ``failure`` is the fault that made the requestor end it (kept as :attr:`failure`, so that the service
        instance on it ends as a failure of that cause). Transient failures are retried; when the node still
        does not confirm, the error is raised and the agreement stays in force, so that a later call tries again.
        """
        if self.end_reason is None or failure is not None:
            self.end_reason, self.failure = reason, failure or self.failure
        self._ending_started.set()
        async with self._ending:
            if self._terminated:
                return
            for activity in self.activities:
                try:
                    await activity.destroy()
                except GolemError as exc:  # terminating the agreement ends its activities on the provider anyway
                    _log.warning("could not destroy %r before terminating its agreement: %s", activity, exc)
            body = {"message": reason, "golem.requestor.code": "Success" if success else "Failure"}
            try:
                await retry(
                    lambda: self._rest.market.terminate_agreement(self.agreement_id, body),
                    what=f"terminating agreement {self.agreement_id}",
                )
            except (GoneError, ConflictError) as exc:
                _log.debug("agreement %s was already over: %s", self.agreement_id, exc)
            self._terminated = True
        self._bus.emit(
            AgreementTerminated(
                agreement_id=self.agreement_id,
                provider_id=self.provider_id,
                provider_name=self.provider_name,
                reason=reason,
                by="requestor",
            )
        )

    def mark_terminated(self) -> None:
        """Record that the provider ended the agreement."""
        self._terminated = True
        self._ending_started.set()

    async def wait_ending(self) -> None:
        """Return once the agreement ends or is being ended (by :meth:`terminate` or :meth:`mark_terminated`)."""
        await self._ending_started.wait()
