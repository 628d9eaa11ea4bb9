"""An agreement in force with one provider, as the requestor holds it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from golem_api.errors import ApiError, ConflictError, GoneError
from golem_api.events import AgreementTerminated, EventBus
from golem_shared.pricing import LinearPricing

if TYPE_CHECKING:
    from golem_api._rest.client import RestClient
    from golem_api.activity.activity import Activity

__all__ = ["Agreement"]

_log = logging.getLogger(__name__)


class Agreement:
    """An approved agreement: the provider, its agreed prices, and the way to end it.

    Created by the engine once the provider has approved; ``terminate`` is idempotent.
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

    async def terminate(self, reason: str = "Finished", *, success: bool = True) -> None:
        """End the agreement (destroying its live activities first); does nothing if it has ended."""
        if self._terminated:
            return
        self._terminated = True
        for activity in self.activities:
            await activity.destroy()
        body = {"message": reason, "golem.requestor.code": "Success" if success else "Failure"}
        try:
            await self._rest.market.terminate_agreement(self.agreement_id, body)
        except (GoneError, ConflictError) as exc:
            _log.debug("agreement %s was already over: %s", self.agreement_id, exc)
        except ApiError:
            self._terminated = False
            raise
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
