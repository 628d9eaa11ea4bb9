"""The Activity API of the local node (``/activity-api/v1``), answering as the daemon does.

``POST /activity`` takes either a JSON string (the agreement id) and answers a JSON string (the activity
id), or ``{"agreementId", "requestorPubKey"?}`` and answers ``{"activityId"}``: the answer has the form
of the question, since yapapi sends a string and breaks on an object. The daemon answers 200 where the
spec says 201. Destroying answers 200 ``null``; an unknown activity is 404 everywhere.

Commands: ``POST /activity/{id}/exec {"text"}`` answers the batch id (400 naming the bad command when the
script does not parse; 410 when the activity is Terminated or Unresponsive). ``GET /activity/{id}/exec/{batch}``
answers the finished results (``?commandIndex=&timeout=`` long-polls, 408 when the awaited command did not
finish in time) or, with ``Accept: text/event-stream`` exactly, streams the batch's runtime events as
server-sent events (``event: runtime``, ``data: <json>``, ``id: <n>``, the event's sequence number in the batch,
from 0), from the batch's start (what the batch keeps of it: :mod:`golem_local.batch`), then live, with a
``:ping`` comment every 15 s of silence, ending after the batch's last ``finished`` event. A reader that falls
behind misses output events, never ``started`` or ``finished`` ones: the ids then jump.
``GET /activity/{id}/command`` lists the running commands (404 when idle).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

from aiohttp import web

from golem_local.activity import ActivityHub, ExeUnitActivity
from golem_local.batch import Batch
from golem_local.exescript import ExeScriptError, parse_exescript
from golem_local.http import HttpError, json_bytes_response, json_response, query_seconds, read_json
from golem_shared.jsontext import escape_str

__all__ = [
    "ACTIVITY_PREFIX",
    "SSE_PING_INTERVAL",
    "activity_state_json",
    "activity_usage_json",
    "add_activity_routes",
]

ACTIVITY_PREFIX = "/activity-api/v1"
SSE_PING_INTERVAL = 15.0
"""Seconds of silence after which the event stream sends a ``:ping`` comment."""

_EVENT_STREAM = "text/event-stream"


def activity_state_json(activity: ExeUnitActivity) -> dict[str, Any]:
    """``{"state": [current, next], "reason"?, "errorMessage"?}``; ``next`` is the pending transition or null.

    ``reason`` and ``errorMessage`` are left out when there is none, as the daemon does (the spec has no null).
    """
    pending = activity.next_state.value if activity.next_state is not None else None
    body: dict[str, Any] = {"state": [activity.state.value, pending]}
    if activity.reason is not None:
        body["reason"] = activity.reason
    if activity.error_message is not None:
        body["errorMessage"] = activity.error_message
    return body


def activity_usage_json(activity: ExeUnitActivity) -> dict[str, Any]:
    """``{"currentUsage": [...], "timestamp": unix seconds}``, counters in the agreement's usage-vector order."""
    return {"currentUsage": activity.usage(), "timestamp": int(time.time())}


def _number(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise HttpError(400, f"{name} must be a number of 0 or more, not {raw!r}")
    return value


def _command_index(request: web.Request) -> int | None:
    value = _number(request, "commandIndex")
    if value is None:
        return None
    if not value.is_integer():
        raise HttpError(400, f"commandIndex must be a whole number, not {request.query['commandIndex']!r}")
    return int(value)


_WRITE_GROUP = 256 * 1024  # bytes of event frames written at once (a piece of output is one frame: up to 1 MiB)


def _sse_frame(event: dict[str, Any], event_id: int) -> bytes:
    kind = event.get("kind")
    pieces = list(kind.items()) if isinstance(kind, dict) else []
    if len(pieces) == 1 and isinstance(pieces[0][1], str) and list(event)[-1] == "kind":
        # a piece of output (the bulk of a stream): its text escaped by str.replace, not by json's encoder
        # character by character; the same bytes as json.dumps writes. The text is copied twice (encoded, then
        # joined with the frame's start and end), not four times as a str frame would.
        rest = json.dumps({key: value for key, value in event.items() if key != "kind"}, separators=(",", ":"))
        stream, text = json.dumps(pieces[0][0]), pieces[0][1]
        start = f'event: runtime\ndata: {rest[:-1]}{"," if len(rest) > 2 else ""}"kind":{{{stream}:"'
        return b"".join((start.encode(), escape_str(text).encode(), f'"}}}}\nid: {event_id}\n\n'.encode()))
    data = json.dumps(event, separators=(",", ":"), allow_nan=False)
    return f"event: runtime\ndata: {data}\nid: {event_id}\n\n".encode()


class _ActivityRoutes:
    def __init__(self, hub: ActivityHub, ping_interval: float) -> None:
        self.hub = hub
        self.ping_interval = ping_interval

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

    async def exec(self, request: web.Request) -> web.Response:
        activity = self.hub.get(request.match_info["id"])
        body = await read_json(request)
        if not isinstance(body, dict) or "text" not in body:
            raise HttpError(
                400, f'the body must be {{"text": "<JSON array of ExeScript commands>"}}; got {body!r:.200}'
            )
        try:
            commands = parse_exescript(body["text"])
        except ExeScriptError as exc:
            raise HttpError(400, str(exc)) from None
        batch = activity.exec(commands)
        # One step for the exe-unit's worker, when idle, to take the batch and hand its first command to the
        # runtime before the answer goes out: the command starts while the answer and the first poll travel.
        await asyncio.sleep(0)
        return json_response(batch.batch_id)

    async def results(self, request: web.Request) -> web.StreamResponse:
        batch = self.hub.get(request.match_info["id"]).batch(request.match_info["batch"])
        if request.headers.get("Accept") == _EVENT_STREAM:
            return await self._stream(request, batch)
        command_index = _command_index(request)
        timeout = query_seconds(request, "timeout", None)
        results = await batch.wait_results(command_index=command_index, timeout=timeout)
        return json_bytes_response(batch.results_json(len(results)))

    async def _stream(self, request: web.Request, batch: Batch) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": _EVENT_STREAM, "Cache-Control": "no-cache"})
        listener = batch.listen()  # before the headers go out: a client that has them misses nothing
        try:
            await response.prepare(request)
            while True:
                events = await listener.take(timeout=self.ping_interval)
                if not events:
                    if listener.exhausted:
                        break
                    await response.write(b":ping\n\n")
                    continue
                # framed and written a few at a time: a reader that fell behind may have 16 MiB pending, and
                # framing it all at once held it three times over (the texts, their frames, the joined write)
                group: list[bytes] = []
                size = 0
                for sequence, event in events:
                    frame = _sse_frame(event, sequence)
                    group.append(frame)
                    size += len(frame)
                    if size >= _WRITE_GROUP:
                        await response.write(b"".join(group) if len(group) > 1 else frame)
                        group, size = [], 0
                if group:
                    await response.write(b"".join(group))
            await response.write_eof()
        except ConnectionError:  # the reader went away: nothing more to send
            pass
        finally:
            batch.unlisten(listener)
        return response

    async def command(self, request: web.Request) -> web.Response:
        activity = self.hub.get(request.match_info["id"])
        running = activity.running_commands()
        if not running:
            raise HttpError(404, f"no command is running in activity {activity.activity_id}")
        return json_response(running)


def add_activity_routes(app: web.Application, hub: ActivityHub, *, ping_interval: float = SSE_PING_INTERVAL) -> None:
    """Serve ``hub`` under ``/activity-api/v1`` on ``app``; event streams ping after ``ping_interval`` s of silence."""
    routes = _ActivityRoutes(hub, ping_interval)
    p = ACTIVITY_PREFIX
    app.router.add_routes(
        [
            # The routes of every command first: aiohttp tries the routes under one prefix in this order.
            web.post(f"{p}/activity/{{id}}/exec", routes.exec),
            web.get(f"{p}/activity/{{id}}/exec/{{batch}}", routes.results),
            web.post(f"{p}/activity", routes.create),
            web.delete(f"{p}/activity/{{id}}", routes.destroy),
            web.get(f"{p}/activity/{{id}}/state", routes.state),
            web.get(f"{p}/activity/{{id}}/usage", routes.usage),
            web.get(f"{p}/activity/{{id}}/agreement", routes.agreement),
            web.get(f"{p}/activity/{{id}}/command", routes.command),
        ]
    )
