"""The node's end of a sandbox agent's stdout: its events, parsed straight from what the pipe gives.

The agent writes one JSON line per event; an ``out`` event's line names the ``size`` of the output bytes that
follow it (see :mod:`golem_local.runtime.agent`). Read through asyncio's ``StreamReader``, every output byte was
copied three times on the node besides the pipe read itself: into the reader's buffer, out of it for
``readexactly`` and, with the rest of the buffer, to its front. :class:`AgentChannel` is the pipe's protocol
instead: it keeps views of the pieces the pipe gave and joins a payload once, when it is whole.

The agent sends what a command's pipe held at each of its reads, often 16 KiB; output events of one command's
one stream that wait for the reader one after the other are joined into one (up to ``output_limit`` bytes),
so the exe-unit handles a piece per pipe read of the node, not per read of the agent: most of the node's cost
of a large output was per event, not per byte.

Its events wait in :meth:`AgentChannel.next_event` order for the runtime's reader; while the ones waiting hold
more than :data:`HIGH_WATER` bytes (the reader waits for a congested sink), the pipe is not read, so the agent,
then the command, wait on their full pipes, as they did with the stream reader's own limit.
"""

from __future__ import annotations

import asyncio
import collections
import json
from typing import Any

__all__ = ["HIGH_WATER", "AgentChannel", "AgentEvent", "BadEvent"]

HIGH_WATER = 2 << 20
"""Bytes of parsed events waiting for the reader above which the pipe is no longer read."""


class BadEvent(ValueError):
    """An event the agent should never write (a line over the limit, not JSON, an output size out of bounds);
    ``line`` is its start, for the log. The channel reads on after it."""

    def __init__(self, message: str, line: bytes) -> None:
        super().__init__(message)
        self.line = line


AgentEvent = tuple[Any, bytes]
"""An event as decoded from its line, and the output bytes after it (empty but for an ``out`` event)."""


class _Output:
    """An output event waiting for the reader, its bytes still in the pieces the pipe gave (joined when taken);
    the next piece of the same command's same stream joins it while it waits (see :meth:`AgentChannel._put_output`)."""

    __slots__ = ("event", "pieces", "size")

    def __init__(self, event: Any, pieces: list[memoryview], size: int) -> None:
        self.event = event
        self.pieces = pieces
        self.size = size


class AgentChannel(asyncio.Protocol):
    """Protocol of the agent's stdout pipe (``loop.connect_read_pipe``): parses its events as they arrive.

    ``line_limit`` bounds an event line, ``output_limit`` an output event's bytes.
    """

    def __init__(self, *, line_limit: int, output_limit: int) -> None:
        self._line_limit = line_limit
        self._output_limit = output_limit
        self._line = bytearray()  # the start of a line whose end has not come yet
        self._skipping = False  # within a line over the limit: dropped up to its end
        self._event: Any = None  # the event whose output is being read
        self._needed = 0  # bytes of its output still to come
        self._pieces: list[memoryview] = []  # the ones that came
        self._ready: collections.deque[AgentEvent | BadEvent | _Output] = collections.deque()
        self._waiting_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._transport: asyncio.ReadTransport | None = None
        self._paused = False
        self._ended = False

    # -- asyncio's side ----------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.ReadTransport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        view = memoryview(data)
        at = 0
        end = len(data)
        while at < end:
            if self._needed:
                take = min(self._needed, end - at)
                self._pieces.append(view[at : at + take])
                at += take
                self._needed -= take
                if not self._needed:
                    self._put_output()
                continue
            newline = data.find(b"\n", at)
            stop = end if newline < 0 else newline + 1
            if not self._skipping:
                self._line += view[at:stop]
                if len(self._line) > self._line_limit:
                    self._put(BadEvent(f"an agent line exceeded {self._line_limit} bytes", bytes(self._line[:200])))
                    self._line.clear()
                    self._skipping = True
            at = stop
            if newline >= 0:
                if self._skipping:
                    self._skipping = False
                else:
                    line, self._line = self._line, bytearray()
                    self._take_line(line)
        if self._waiting_bytes > HIGH_WATER and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def eof_received(self) -> bool | None:
        self._end()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()

    # -- the reader's side -------------------------------------------------------------------------------------

    async def next_event(self) -> AgentEvent | BadEvent | None:
        """The next event, or what was wrong with it (returned, not raised); ``None`` once the pipe has ended
        (an event cut short by the end is dropped)."""
        while not self._ready:
            if self._ended:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self._ready.popleft()
        if isinstance(item, _Output):
            self._waiting_bytes -= item.size
            item = item.event, b"".join(item.pieces)
        if self._paused and self._waiting_bytes <= HIGH_WATER // 2 and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return item

    def close(self) -> None:
        """Stop reading the pipe and close it (idempotent)."""
        if self._transport is not None:
            self._transport.close()
        self._end()

    # -- parsing -----------------------------------------------------------------------------------------------

    def _take_line(self, line: bytearray) -> None:
        try:
            event = json.loads(line)
            if isinstance(event, dict) and event.get("ev") == "out":
                size = event["size"]
                if isinstance(size, bool) or not isinstance(size, int):
                    raise ValueError(f"size must be a whole number, got {size!r:.50}")
                if not 0 < size <= self._output_limit:
                    raise ValueError(f"an output event of {size} bytes (at most {self._output_limit})")
                self._event = event
                self._needed = size
                return
        except (ValueError, KeyError, TypeError) as exc:
            self._put(BadEvent(str(exc), bytes(line[:200])))
            return
        self._put((event, b""))

    def _put(self, item: AgentEvent | BadEvent | _Output) -> None:
        self._ready.append(item)
        self._wake()

    def _put_output(self) -> None:
        event, pieces, size = self._event, self._pieces, self._event["size"]
        self._event, self._pieces = None, []
        self._waiting_bytes += size
        last = self._ready[-1] if self._ready else None
        if (
            isinstance(last, _Output)
            and last.size + size <= self._output_limit
            and last.event["id"] == event["id"]
            and last.event["fd"] == event["fd"]
        ):
            last.pieces += pieces
            last.size += size
            last.event["size"] = last.size
            return
        self._put(_Output(event, pieces, size))

    def _end(self) -> None:
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
