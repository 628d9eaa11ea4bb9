"""Collecting a batch's results: long-polling the node for each command, and reading its event stream for output.

Polling is the ground truth. :func:`poll_results` asks for command 0, then the first one it has no result of,
… with ``commandIndex`` and a long-poll ``timeout`` (taking every result an answer holds), so each command is
known as soon as it ends, until a command fails or the last one is in. (yapapi, too, takes every new result
of an answer, output included.) While results come faster than that, two polls of a batch are at least
:data:`POLL_SPACING` apart (less while it has few results): every answer holds every result so far, so a poll
per command of a batch of many short ones cost the node and the requestor the square of its length, on the
cores its commands run on.

Streaming adds the output as it is written. :class:`EventStreamReader` reads the batch's server-sent events in
a task it owns and hands ``stdout`` / ``stderr`` pieces to an :class:`OutputRouter`, which cuts them into lines
for the command's callbacks. The daemon sends only what happens after the stream opened, so a command that
ended before it missed its events: before a polled command is settled, :meth:`EventStreamReader.caught_up`
waits (briefly, bounded) for the stream to reach that command's end, and :meth:`OutputRouter.fallback` gives
the callbacks the output from the result for a stream of which nothing came live.

Memory is bounded however much a command prints: the router keeps at most :data:`OUTPUT_LIMIT` characters of
each output (:class:`BoundedText`: its start and its end, with a note of what was left out between them);
all of it goes, piece by piece, to the callbacks and to the files a ``run`` names (``stdout_file``). The node
numbers a batch's events; a jump in the numbers (a reader that fell behind, a stream opened after the output
went by) marks the commands whose output may have missed pieces (:meth:`OutputRouter.missed`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, BinaryIO

from golem_api.errors import ActivityError, GolemError, RequestTimeoutError
from golem_shared.output import left_out_note, was_cut
from golem_shared.tasks import TaskSet, wait_event

if TYPE_CHECKING:
    from golem_api._rest.models import ExeScriptCommandResult, RuntimeEvent
    from golem_api.activity.activity import Activity

__all__ = [
    "OUTPUT_LIMIT",
    "POLL_SPACING",
    "POLL_TIMEOUT",
    "STREAMS",
    "BoundedText",
    "EventStreamReader",
    "LineSplitter",
    "OutputRouter",
    "bounded",
    "poll_results",
]

_log = logging.getLogger(__name__)

POLL_TIMEOUT = 10.0
"""Seconds one long-poll for a command's result waits on the node before it is asked again."""

POLL_SPACING = 0.005
"""Seconds from one long-poll of a batch to the next at the least, while results come faster (see the module
docstring): the longest a result waits on the node for the next poll."""
POLL_SPACING_PER_RESULT = 0.0001
"""The spacing grows by this much per result the batch has so far, up to :data:`POLL_SPACING`: the answers of a
batch with few results are small, and its results are not held back."""

STREAMS = ("stdout", "stderr")

_MISSING_LIMIT = 3  # answers in a row without the awaited command before the node is deemed broken

OUTPUT_LIMIT = 1 << 20
"""Characters of each output of a command a :class:`CommandResult` holds at most (its start and its end)."""


class BoundedText:
    """Text that arrives in pieces, kept as its first ``limit // 16`` and last characters up to ``limit``."""

    def __init__(self, limit: int = OUTPUT_LIMIT) -> None:
        self.head_limit = limit // 16
        self.tail_limit = limit - self.head_limit
        self.total = 0
        self._head: list[str] = []
        self._head_size = 0
        self._tail: deque[str] = deque()
        self._tail_size = 0

    def add(self, text: str) -> None:
        """Take the next piece."""
        self.total += len(text)
        room = self.head_limit - self._head_size
        if room > 0:
            self._head.append(text[:room])
            self._head_size += len(text[:room])
            text = text[room:]
        if not text:
            return
        self._tail.append(text)
        self._tail_size += len(text)
        while self._tail_size - len(self._tail[0]) >= self.tail_limit:  # drop whole pieces no longer needed
            self._tail_size -= len(self._tail.popleft())

    def value(self) -> str:
        """What was kept: all of it, or its start, a note of what was left out, and its end."""
        head = "".join(self._head)
        tail = "".join(self._tail)[-self.tail_limit :] if self.tail_limit else ""
        left_out = self.total - len(head) - len(tail)
        if left_out <= 0:
            return head + tail
        return head + left_out_note(left_out, len(head), len(tail), "characters") + tail


def bounded(text: str | None, limit: int = OUTPUT_LIMIT) -> str | None:
    """``text`` if it is at most ``limit`` characters long (or was cut so by the node already, note included);
    otherwise its start, a note and its end."""
    if text is None or len(text) <= limit or (len(text) <= limit + 1024 and was_cut(text)):
        return text
    kept = BoundedText(limit)
    kept.add(text)
    return kept.value()


class LineSplitter:
    """Cuts text that arrives in pieces into lines (without their line break) for ``callback``.

    A callback that raises is logged and does not stop the script.
    """

    def __init__(self, callback: Callable[[str], None], name: str = "output") -> None:
        self._callback = callback
        self._name = name
        self._partial = ""

    def feed(self, text: str) -> None:
        """Take the next piece; call back for every line it completes."""
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._deliver(line.removesuffix("\r"))

    def flush(self) -> None:
        """Call back with the unfinished last line, if any (the output has ended)."""
        partial, self._partial = self._partial, ""
        if partial:
            self._deliver(partial.removesuffix("\r"))

    def _deliver(self, line: str) -> None:
        try:
            self._callback(line)
        except Exception:
            _log.exception("the %s callback %r failed on the line %r", self._name, self._callback, line)


class OutputRouter:
    """Routes output pieces of a batch's commands to their line callbacks, their files and ``on_piece``.

    ``callbacks`` maps a command index to its ``{"stdout": callback, "stderr": callback}`` (either may be
    missing); ``files`` maps a command index to ``{"stdout": file, …}`` opened for writing (binary; the text
    is written as UTF-8); ``on_piece(index, stream, text)`` sees every piece of every command.
    """

    def __init__(
        self,
        callbacks: Mapping[int, Mapping[str, Callable[[str], None] | None]],
        on_piece: Callable[[int, str, str], None],
        files: Mapping[int, Mapping[str, BinaryIO]] | None = None,
    ) -> None:
        self._splitters = {
            (index, stream): LineSplitter(callback, f"{stream} of command #{index}")
            for index, streams in callbacks.items()
            for stream, callback in streams.items()
            if callback is not None
        }
        self._files = {
            (index, stream): file for index, streams in (files or {}).items() for stream, file in streams.items()
        }
        self._on_piece = on_piece
        self._seen: dict[tuple[int, str], BoundedText] = {}
        self._finished: set[int] = set()
        self._missed: set[int] = set()

    def output(self, index: int, stream: str, text: str) -> None:
        """A piece of ``stream`` written by command ``index``."""
        if not text or index in self._finished:
            return
        self._seen.setdefault((index, stream), BoundedText()).add(text)
        try:
            self._on_piece(index, stream, text)
        except Exception:
            _log.exception("handling output of command #%d failed", index)
        splitter = self._splitters.get((index, stream))
        if splitter is not None:
            splitter.feed(text)
        file = self._files.get((index, stream))
        if file is not None:
            file.write(text.encode("utf-8", errors="replace"))

    def add_file(self, index: int, stream: str, file: BinaryIO) -> None:
        """Write ``stream`` of command ``index`` to ``file`` too (closed when the command finishes)."""
        self._files[(index, stream)] = file

    def missed(self, indexes: range) -> None:
        """The event stream jumped over events that belonged to commands in ``indexes``."""
        self._missed.update(index for index in indexes if index not in self._finished)

    def complete(self, index: int) -> bool:
        """Whether every piece of command ``index``'s output came live (no jump in the stream touched it)."""
        return index not in self._missed

    def streamed(self, index: int, stream: str) -> str | None:
        """What came live of ``stream`` for command ``index``, bounded (``None``: nothing came)."""
        kept = self._seen.get((index, stream))
        return kept.value() if kept is not None else None

    def fallback(self, index: int, result: ExeScriptCommandResult) -> None:
        """Give the callbacks the result's output for each stream of which nothing came live."""
        for stream in STREAMS:
            text = result.stdout if stream == "stdout" else result.stderr
            if text and (index, stream) not in self._seen:
                self.output(index, stream, text)

    def finish(self, index: int) -> None:
        """Command ``index`` has ended: flush its unfinished lines, close its files; later pieces are dropped."""
        if index in self._finished:
            return
        for stream in STREAMS:
            splitter = self._splitters.get((index, stream))
            if splitter is not None:
                splitter.flush()
            file = self._files.pop((index, stream), None)
            if file is not None:
                file.close()
        self._finished.add(index)

    def close(self) -> None:
        """Close every file still open (the script ended early)."""
        for file in self._files.values():
            file.close()
        self._files.clear()


class EventStreamReader:
    """Reads a batch's event stream in an owned task, feeding an :class:`OutputRouter`.

    :meth:`start` opens it; :meth:`aclose` cancels and awaits the task. A stream that cannot be opened or breaks
    is logged and ends: polling goes on, and outputs then reach the callbacks from the results.
    """

    def __init__(self, activity: Activity, batch_id: str, router: OutputRouter) -> None:
        self._activity = activity
        self._batch_id = batch_id
        self._router = router
        self._tasks = TaskSet(f"event stream of batch {batch_id}", logger=_log)
        self._reader: asyncio.Task[None] | None = None
        self._finished: set[int] = set()
        self._highest_started = -1
        self._last: tuple[int, int] | None = None  # (sequence, command index) of the last event read
        self._tick = asyncio.Event()
        self.opened = asyncio.Event()  # set once the node answered the stream's request (or it failed)
        self.events = 0

    def start(self) -> None:
        """Open the stream and start reading it."""
        if self._reader is None:
            self._reader = self._tasks.spawn(self._read(), name=f"events of {self._batch_id}")

    @property
    def running(self) -> bool:
        """True while the stream is being read."""
        return self._reader is not None and not self._reader.done()

    async def _read(self) -> None:
        try:
            async with self._activity.stream(self._batch_id) as events:
                self.opened.set()
                async for event in events:
                    self._handle(event)
        except GolemError as exc:
            _log.info("the event stream of batch %s ended (%s); results still come by polling", self._batch_id, exc)
        except Exception:
            _log.exception("reading the event stream of batch %s failed; results still come by polling", self._batch_id)
        finally:
            self.opened.set()
            self._wake()

    def _handle(self, event: RuntimeEvent) -> None:
        if event.batch_id != self._batch_id:
            return
        self.events += 1
        if event.sequence is not None:
            expected, first = (0, 0) if self._last is None else (self._last[0] + 1, self._last[1])
            if event.sequence > expected:  # events were left out: of the commands from the last seen to this one
                self._router.missed(range(first, event.index + 1))
            self._last = (event.sequence, event.index)
        if event.kind in STREAMS and isinstance(event.payload, str):
            self._router.output(event.index, event.kind, event.payload)
        elif event.kind == "started":
            self._highest_started = max(self._highest_started, event.index)
        elif event.kind == "finished":
            self._finished.add(event.index)
        self._wake()

    def _wake(self) -> None:
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    def _passed(self, index: int) -> bool:
        return index in self._finished or self._highest_started > index or not self.running

    async def caught_up(self, index: int, grace: float) -> bool:
        """Wait up to ``grace`` s for the stream to pass the end of command ``index``; True if it did.

        Returns at once when the stream has already passed it, has gone on to a later command (the command's
        own events were missed), or is not running.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while not self._passed(index):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            if not await wait_event(self._tick, remaining):
                return False
        return True

    async def wait_opened(self, timeout: float) -> None:
        """Until the node has answered the stream's request (at most ``timeout`` s): from then on no output
        of the batch can go by unseen."""
        if not await wait_event(self.opened, timeout):
            _log.warning("the event stream of batch %s did not open within %g s", self._batch_id, timeout)

    async def aclose(self) -> None:
        """Stop reading and close the stream."""
        await self._tasks.aclose()
        self._reader = None


async def poll_results(
    activity: Activity,
    batch_id: str,
    count: int,
    on_result: Callable[[ExeScriptCommandResult], Awaitable[bool]],
    *,
    poll_timeout: float = POLL_TIMEOUT,
    spacing: float = POLL_SPACING,
) -> None:
    """Long-poll each of the ``count`` commands of a batch in turn and pass its result to ``on_result``.

    Each answer passes on every result it holds from the awaited command on, in order; the next long-poll asks
    for the first command still missing, ``spacing`` s after the last one was sent at the earliest (less for a
    batch with few results so far: :data:`POLL_SPACING_PER_RESULT` per result). Stops after the last command, or
    when ``on_result`` returns False (a failed command: the batch stops there).
    """
    loop = asyncio.get_running_loop()
    index = 0
    missing = 0
    sent = -math.inf
    while index < count:
        pause = sent + min(spacing, POLL_SPACING_PER_RESULT * index) - loop.time()
        if pause > 0:  # the last answer came at once: let more results gather on the node
            await asyncio.sleep(pause)
        sent = loop.time()
        try:
            results = await activity.results(batch_id, command_index=index, timeout=poll_timeout, since=index)
        except RequestTimeoutError:
            continue
        by_index = {result.index: result for result in results}
        if index not in by_index:
            missing += 1
            if missing >= _MISSING_LIMIT:
                raise ActivityError(
                    f"the node answered {missing} long-polls for command #{index} of batch {batch_id} without its "
                    f"result (got indexes {[result.index for result in results]}); it does not follow the activity API"
                )
            continue
        missing = 0
        # The answer holds every result so far: take all the new ones in order, not only the one asked for (one
        # long-poll per command re-read every earlier result: quadratic in the batch's length).
        while index < count and index in by_index:
            if not await on_result(by_index[index]):
                return
            index += 1
