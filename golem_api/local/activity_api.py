"""The Activity API of the local node (``/activity-api/v1``), answering as the daemon does.

``POST /activity`` takes either a JSON string (the agreement id) and answers a JSON string (the activity
id), or ``{"agreementId", "requestorPubKey"?}`` and answers ``{"activityId"}``: the answer has the form
of the question, since yapapi sends a string and breaks on an object. The daemon answers 200 where the
spec says 201. Destroying answers 200 ``null``; an unknown activity is 404 everywhere. Running commands
(``/exec``) comes with the exe-unit work of a later issue.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from golem_api.local.activity import Activity, ActivityHub
from golem_api.local.http import HttpError, json_response, read_json

__all__ = ["ACTIVITY_PREFIX", "activity_state_json", "activity_usage_json", "add_activity_routes"]

ACTIVITY_PREFIX = "/activity-api/v1"


def activity_state_json(activity: Activity) -> dict[str, Any]:
    """``{"state": [current, next], "reason", "errorMessage"}``; no transition is ever pending here."""
    return {"state": [activity.state.value, None], "reason": activity.reason, "errorMessage": activity.error_message}


def activity_usage_json(activity: Activity) -> dict[str, Any]:
    """``{"currentUsage": [...], "timestamp": unix seconds}``, counters in the agreement's usage-vector order."""
    return {"currentUsage": activity.usage(), "timestamp": int(time.time())}


class _ActivityRoutes:
    def __init__(self, hub: ActivityHub) -> None:
        self.hub = hub

    async def create(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        if isinstance(body, str):
            return json_response((await self.hub.create(body)).activity_id)
        if isinstance(body, dict) and isinstance(body.get("agreementId"), str):
            activity = await self.hub.create(body["agreementId"])
            return json_response({"activityId": activity.activity_id})
        raise HttpError(
            400, f'the body must be the agreement id as a JSON string, or {{"agreementId": "…"}}; got {body!r}'
        )

    async def destroy(self, request: web.Request) -> web.Response:
        await self.hub.destroy(request.match_info["id"])
        return json_response(None)

    async def state(self, request: web.Request) -> web.Response:
        return json_response(activity_state_json(self.hub.get(request.match_info["id"])))

    async def usage(self, request: web.Request) -> web.Response:
        return json_response(activity_usage_json(self.hub.get(request.match_info["id"])))

    async def agreement(self, request: web.Request) -> web.Response:
        return json_response(self.hub.get(request.match_info["id"]).agreement_id)


def add_activity_routes(app: web.Application, hub: ActivityHub) -> None:
    """Serve ``hub`` under ``/activity-api/v1`` on ``app``."""
    routes = _ActivityRoutes(hub)
    p = ACTIVITY_PREFIX
    app.router.add_routes(
        [
            web.post(f"{p}/activity", routes.create),
            web.delete(f"{p}/activity/{{id}}", routes.destroy),
            web.get(f"{p}/activity/{{id}}/state", routes.state),
            web.get(f"{p}/activity/{{id}}/usage", routes.usage),
            web.get(f"{p}/activity/{{id}}/agreement", routes.agreement),
        ]
    )
