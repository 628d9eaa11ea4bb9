"""An activity: a run of the provider's runtime under an agreement."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from golem_api.errors import GoneError, NotFoundError
from golem_api.events import ActivityCreated, ActivityDestroyed, EventBus

if TYPE_CHECKING:
    from golem_api.market.agreement import Agreement
    from golem_api.rest.client import RestClient
    from golem_api.rest.models import ActivityState

__all__ = ["Activity"]

_log = logging.getLogger(__name__)


class Activity:
    """One activity on a provider; ``destroy`` ends it (idempotent)."""

    def __init__(self, activity_id: str, agreement: Agreement, rest: RestClient, bus: EventBus) -> None:
        self.activity_id = activity_id
        self.agreement = agreement
        self._rest = rest
        self._bus = bus
        self._destroyed = False

    @classmethod
    async def create(cls, agreement: Agreement, rest: RestClient, bus: EventBus) -> Activity:
        """Ask the provider to start an activity under ``agreement``."""
        activity_id = await rest.activity.create_activity(agreement.agreement_id)
        bus.emit(
            ActivityCreated(
                activity_id=activity_id,
                agreement_id=agreement.agreement_id,
                provider_name=agreement.provider_name,
            )
        )
        return cls(activity_id, agreement, rest, bus)

    @property
    def destroyed(self) -> bool:
        """True once the activity was destroyed."""
        return self._destroyed

    def __repr__(self) -> str:
        return f"<Activity {self.activity_id[:8]}… on {self.agreement.provider_name!r}>"

    async def state(self) -> ActivityState:
        """The activity's state as the provider reports it."""
        return await self._rest.activity.get_state(self.activity_id)

    async def destroy(self) -> None:
        """End the activity; the provider sends its last debit note."""
        if self._destroyed:
            return
        self._destroyed = True
        try:
            await self._rest.activity.destroy_activity(self.activity_id)
        except (NotFoundError, GoneError) as exc:
            _log.debug("activity %s was already gone: %s", self.activity_id, exc)
        self._bus.emit(
            ActivityDestroyed(
                activity_id=self.activity_id,
                agreement_id=self.agreement.agreement_id,
                provider_name=self.agreement.provider_name,
            )
        )
