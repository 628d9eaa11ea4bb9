"""The activity API (requestor side): starting and stopping activities, running batches of commands and
collecting their results (long-polled JSON or server-sent events), state, usage and running commands."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import attrs

from golem_api._rest import routes
from golem_api._rest.models import (
    ActivityState,
    ActivityUsage,
    ExeScriptCommandResult,
    ExeScriptCommandState,
    RuntimeEvent,
)
from golem_api._rest.models._fields import Fields, parse_id, parse_list, parse_nothing
from golem_api._rest.routes import POLL_MARGIN, Requester, StreamOpener
from golem_api._rest.sse import SseParser
from golem_api.errors import ConfigurationError, NotFoundError, ServerError
from golem_shared.jsontext import loads_str

__all__ = ["EVENT_STREAM", "ActivityApi"]

EVENT_STREAM = "text/event-stream"
"""The media type of a batch's event stream; the daemon streams only when ``Accept`` is exactly this."""

_log = logging.getLogger(__name__)


def _activity_id(data: Any) -> str:
    """The daemon answers a string body with a string; an object answer carries ``activityId``."""
    if isinstance(data, dict):
        return Fields("CreateActivityResult", data).text("activityId")
    return parse_id(data)


class ActivityApi:
    """Calls of ``/activity-api/v1``; get it as ``RestClient.activity``."""

    def __init__(self, request: Requester, open_stream: StreamOpener | None = None) -> None:
        self._request = request
        self._open_stream = open_stream

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

    async def exec(self, activity_id: str, commands_json_text: str) -> str:
        """Send a batch of commands (an ExeScript: a JSON array, as text); returns the batch id."""
        try:
            commands = json.loads(commands_json_text)
        except ValueError as exc:
            raise ConfigurationError(f"the ExeScript must be a JSON array of commands: {exc}") from None
        if not isinstance(commands, list):
            raise ConfigurationError(f"the ExeScript must be a JSON array of commands, got {commands_json_text:.80}")
        return await self._request(routes.EXEC, activity_id, json={"text": commands_json_text}, parse=parse_id)

    async def get_exec_batch_results(
        self,
        activity_id: str,
        batch_id: str,
        *,
        command_index: int | None = None,
        timeout: float | None = None,
        since: int = 0,
    ) -> list[ExeScriptCommandResult]:
        """The results of a batch's finished commands, in index order.

        ``since``: the results of commands before this index are left out without being parsed (a poller that
        has them already; each answer holds every result so far, so parsing them all again costs the square of
        the batch's length).

        Without ``timeout`` the node answers at once. With it, the node waits up to ``timeout`` s: for command
        ``command_index`` to finish when given (``RequestTimeoutError`` if it did not), else for the whole batch
        (answering what it has when the time is up). The daemon leaves out the output of every command but
        ``command_index`` when an index is given.
        """
        if command_index is not None and (isinstance(command_index, bool) or command_index < 0):
            raise ConfigurationError(f"command_index must be an index of the batch (0 or more), got {command_index!r}")
        if timeout is not None and timeout < 0:
            raise ConfigurationError(f"timeout must be 0 or more seconds, got {timeout!r}")
        params = {
            "commandIndex": None if command_index is None else str(command_index),
            "timeout": None if timeout is None else f"{timeout:g}",
        }
        return await self._request(
            routes.GET_EXEC_BATCH_RESULTS,
            activity_id,
            batch_id,
            params=params,
            timeout=None if timeout is None else timeout + POLL_MARGIN,
            parse=parse_list(ExeScriptCommandResult.from_json, skip=_before(since)),
            decode=_results_from(since),
        )

    def stream_exec_batch_results(
        self, activity_id: str, batch_id: str
    ) -> AbstractAsyncContextManager[AsyncIterator[RuntimeEvent]]:
        """The batch's runtime events as they happen (server-sent events), as an async context manager::

            async with api.stream_exec_batch_results(activity_id, batch_id) as events:
                async for event in events:
                    ...

        The daemon sends only what happens after the stream is opened, and does not end the stream when the
        batch ends: stop reading once the events you wait for have come. Frames other than ``runtime`` are
        skipped; a ``runtime`` frame that is not a RuntimeEvent raises :class:`ServerError`.
        """
        return self._stream_events(activity_id, batch_id)

    @contextlib.asynccontextmanager
    async def _stream_events(self, activity_id: str, batch_id: str) -> AsyncIterator[AsyncIterator[RuntimeEvent]]:
        route = routes.GET_EXEC_BATCH_RESULTS
        if self._open_stream is None:
            raise ConfigurationError("this ActivityApi was made without a stream opener; use RestClient.activity")
        async with self._open_stream(route, activity_id, batch_id, accept=EVENT_STREAM) as chunks:
            yield _RuntimeEvents(chunks, f"{route.method} {route.expand(activity_id, batch_id)}")

    async def get_running_command(self, activity_id: str) -> list[ExeScriptCommandState]:
        """The commands the activity is running now; ``[]`` when it is idle (the daemon answers 404 then)."""
        try:
            return await self._request(routes.GET_RUNNING_COMMAND, activity_id, parse=_parse_command_states)
        except NotFoundError as exc:
            _log.debug("no running command on activity %s: %s", activity_id, exc.message)
            return []


def _parse_command_states(data: Any) -> list[ExeScriptCommandState]:
    """The daemon answers a list; a single object is taken as a list of one."""
    if isinstance(data, dict):
        return [ExeScriptCommandState.from_json(data)]
    return parse_list(ExeScriptCommandState.from_json)(data)


class _RuntimeEvents:
    """Runtime events parsed from a chunked ``text/event-stream`` body."""

    def __init__(self, chunks: AsyncIterator[bytes], where: str) -> None:
        self._chunks = chunks
        self._where = where
        self._parser = SseParser()
        self._ready: list[RuntimeEvent] = []

    def __aiter__(self) -> _RuntimeEvents:
        return self

    async def __anext__(self) -> RuntimeEvent:
        while not self._ready:
            chunk = await self._chunks.__anext__()  # StopAsyncIteration ends the events too
            for frame in self._parser.feed(chunk):
                if frame.event != "runtime":
                    continue
                try:
                    event = RuntimeEvent.from_json(_event_json(frame.data))
                    if frame.id is not None and frame.id.isdigit():
                        event = attrs.evolve(event, sequence=int(frame.id))
                    self._ready.append(event)
                except ValueError as exc:
                    method, _, path = self._where.partition(" ")
                    raise ServerError(
                        method=method, path=path, status=200, message=f"unexpected event in the stream: {exc}"
                    ) from exc
        return self._ready.pop(0)


_OUTPUT_MARKERS = tuple(f'"kind":{{"{stream}":"' for stream in ("stdout", "stderr"))


def _event_json(data: str) -> Any:
    """A runtime event's JSON, decoded; a piece of output (``{…,"kind":{"stdout":"TEXT"}}``, the bulk of a
    stream) with its text unescaped by :func:`~golem_shared.jsontext.loads_str` instead of json's decoder.

    Inside a JSON string every ``"`` is escaped, so the first ``"kind":{"stdout":"`` of the data is the event's
    own; the text runs from there to the ``"}}`` that ends the data. Any other shape is decoded whole."""
    if data.endswith('"}}'):
        for marker in _OUTPUT_MARKERS:
            start = data.find(marker)
            if start > 0 and data[start - 1] == ",":
                try:
                    head = json.loads(data[: start - 1] + "}")
                    text = loads_str(data[start + len(marker) : -3])
                except ValueError:
                    break  # not that shape after all: decode it all
                if isinstance(head, dict) and "kind" not in head:
                    head["kind"] = {marker[9:-3]: text}
                    return head
                break
    return json.loads(data)


def _results_from(since: int) -> Callable[[str], Any]:
    """A decoder of a results answer that decodes only the results from command ``since`` on, when it can.

    Each answer holds every result so far, so decoding it all on each poll of a long batch costs the square of
    its length (a batch of 1000 one-command polls: 0.8 s of JSON decoding). A compact answer (the daemon's and
    the local node's) starts each result with ``{"index":N,``; inside a JSON string every ``"`` is escaped,
    so that text marks the start of result ``N`` and the rest is the array's tail. Any other shape is decoded
    whole (and the results before ``since`` are then skipped unparsed).
    """
    marker = f'{{"index":{since},'

    def decode(text: str) -> Any:
        start = text.find(marker) if since > 0 else -1
        if start > 0:
            try:
                return json.loads("[" + text[start:])
            except ValueError:
                pass  # not the shape expected: decode it all
        return json.loads(text)

    return decode


def _before(since: int) -> Callable[[Any], bool] | None:
    """Whether a result's JSON is of a command before ``since`` (None: keep them all)."""
    if since <= 0:
        return None

    def skip(entry: Any) -> bool:
        index = entry.get("index") if isinstance(entry, dict) else None
        return isinstance(index, int) and not isinstance(index, bool) and 0 <= index < since

    return skip
