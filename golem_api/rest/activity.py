"""The activity API: starting and stopping activities, their state and usage (requestor side)."""

from __future__ import annotations

from typing import Any

from golem_api.errors import ConfigurationError
from golem_api.rest import routes
from golem_api.rest.models import ActivityState, ActivityUsage
from golem_api.rest.models._fields import Fields, parse_id, parse_nothing
from golem_api.rest.routes import Requester

__all__ = ["ActivityApi"]


def _activity_id(data: Any) -> str:
    """The daemon answers a string body with a string; an object answer carries ``activityId``."""
    if isinstance(data, dict):
        return Fields("CreateActivityResult", data).text("activityId")
    return parse_id(data)


class ActivityApi:
    """Calls of ``/activity-api/v1``; get it as ``RestClient.activity``."""

    def __init__(self, request: Requester) -> None:
        self._request = request

    async def create_activity(self, agreement_id: str) -> str:
        """Start an activity on the provider of an approved agreement; returns the activity id."""
        if not agreement_id:
            raise ConfigurationError("agreement_id must not be empty")
        return await self._request(routes.CREATE_ACTIVITY, json=agreement_id, parse=_activity_id)

    async def destroy_activity(self, activity_id: str) -> None:
        """Stop an activity; its state becomes ``Terminated``."""
        await self._request(routes.DESTROY_ACTIVITY, activity_id, parse=parse_nothing)

    async def get_state(self, activity_id: str) -> ActivityState:
        """The activity's current state and the one it is moving to."""
        return await self._request(routes.GET_ACTIVITY_STATE, activity_id, parse=ActivityState.from_json)

    async def get_usage(self, activity_id: str) -> ActivityUsage:
        """The activity's usage counters."""
        return await self._request(routes.GET_ACTIVITY_USAGE, activity_id, parse=ActivityUsage.from_json)
