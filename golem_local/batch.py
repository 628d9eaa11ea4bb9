"""One ExeScript batch on the local exe-unit: its commands run in order, its results, and its event log.

A :class:`Batch` records, as the commands run, two views of the same progress:

* the results (``ExeScriptCommandResult``): one per finished command, in index order, the last one with
  ``isBatchFinished: true`` — after the last command, or after the first failure, which stops the batch;
* the runtime events served as server-sent events: ``started``, ``stdout`` / ``stderr`` (stream-mode
  captures only) and ``finished {return_code, message}``, in the order they happened, each with its sequence
  number (the SSE ``id``).

Memory is bounded however much a command prints. Every event goes to the streams reading the batch
(:meth:`Batch.listen`), each of which holds at most :data:`LISTENER_BUFFER` bytes of output it has not sent
yet (and one more piece, of at most a mebibyte: the sandbox's agent reads that much at a time). When one
is full, the exe-unit stops reading the command's output (:meth:`Batch.wait_room`) until it has room
again, so a command cannot print faster than its readers read; a reader that has not made room within
:data:`CONGESTION_TIMEOUT` seconds misses output events, and sees a gap in the ids. The batch keeps,
for a client that connects late, every ``started`` / ``finished`` event but only the first ``output_limit``
bytes of each command's output events, and lets even those go (:meth:`Batch.release`) once the requestor
has fetched the batch's last result, or the activity has ended. A piece of output that would reach nobody (no
stream reading, the kept events full: :meth:`Batch.reads`) is not made into an event at all, but its id is
used, so that a late reader sees the gap there too.

:func:`run_batch` drives the commands through an ``execute`` callable (the activity's exe-unit) and turns
what it returns into results and events. When the activity stops under a running batch, the activity
cancels the run and calls :meth:`Batch.abort`, which ends the running command with an Error result, so
that nobody waits for a batch that will never finish.

Readers wait with a bound: :meth:`Batch.wait_results` (long-poll, 408 when a command did not finish in time)
and :meth:`Listener.take` (for the event stream).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from typing import Any, Literal

from attrs import frozen

from golem_local.exescript import DEFAULT_OUTPUT_LIMIT, Command
from golem_local.http import HttpError
from golem_shared.tasks import wait_event
from golem_shared.timestamps import format_timestamp, utc_now

__all__ = [
    "LISTENER_BUFFER",
    "Batch",
    "Listener",
    "Outcome",
    "run_batch",
]

LISTENER_BUFFER = 16 << 20
"""Bytes of output events one event-stream reader may have pending before the command's output waits."""
CONGESTION_TIMEOUT = 30.0
"""Seconds the output of a command waits for a full reader before that reader misses output events."""

Output = str | list[int] | None


@frozen
class Outcome:
    """How a command ended: ``return_code`` 0 is Ok; ``message`` says why it failed (``None`` when Ok)."""

    return_code: int = 0
    message: str | None = None
    stdout: Output = None
    stderr: Output = None

    @property
    def ok(self) -> bool:
        """Whether the command succeeded."""
        return self.return_code == 0

    @classmethod
    def error(cls, message: str, *, return_code: int = -1) -> Outcome:
        """A failure that produced no output."""
        return cls(return_code=return_code, message=message)


def _event_timestamp(moment: datetime | None = None) -> str:
    # The daemon writes a naive UTC date-time (no zone designator) in runtime events.
    moment = datetime.now(timezone.utc) if moment is None else moment
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds")


Event = tuple[int, dict[str, Any]]  # (sequence number, the event as on the wire)


class Listener:
    """One reader of a batch's events: what it has not taken yet, at most :data:`LISTENER_BUFFER` bytes of
    output (further output events are dropped for it, and counted in :attr:`dropped`)."""

    def __init__(self, batch: Batch, backlog: list[Event]) -> None:
        self.batch = batch
        self.dropped = 0
        self.left_behind = False  # it did not make room in time: output goes on without it (it drops)
        self._pending: deque[Event] = deque(backlog)
        self._bytes = 0
        self._changed = asyncio.Event()

    def offer(self, event: Event, size: int) -> None:
        """A new event of the batch; an output event (``size`` > 0) is dropped when the buffer is full.

        A piece that comes while there is room is taken whole, even past :data:`LISTENER_BUFFER` (by at most one
        piece: the exe-unit reads no more output while the buffer is full). Dropping a piece that merely does not
        fit would lose output of a reader that keeps up, the more often the larger the pieces."""
        if size and self._bytes >= LISTENER_BUFFER:
            self.dropped += 1
            return
        self._pending.append(event)
        self._bytes += size
        self._changed.set()

    async def take(self, *, timeout: float) -> list[Event]:
        """What came since the last take, waiting up to ``timeout`` s for something when nothing has come."""
        if not self._pending and not self.batch.finished:
            self._changed.clear()
            if not await wait_event(self._changed, timeout):
                return []
        events = list(self._pending)
        self._pending.clear()
        self._bytes = 0
        self.left_behind = False
        self.batch._drained()
        return events

    @property
    def full(self) -> bool:
        """Whether the reader's buffer is full."""
        return self._bytes >= LISTENER_BUFFER

    @property
    def exhausted(self) -> bool:
        """Whether the batch has finished and everything was taken."""
        return self.batch.finished and not self._pending


class Batch:
    """The commands of one exec request, their results and their runtime events (see the module docstring).

    ``output_limit`` is how many bytes of each command's output events the batch keeps for late readers.
    """

    def __init__(
        self, activity_id: str, commands: Sequence[Command], *, output_limit: int = DEFAULT_OUTPUT_LIMIT
    ) -> None:
        self.batch_id = secrets.token_hex(16)
        self.activity_id = activity_id
        self.commands = tuple(commands)
        self.output_limit = output_limit
        self.congestion_timeout = CONGESTION_TIMEOUT
        self.results: list[dict[str, Any]] = []
        self._encoded: list[bytes] = []  # the JSON of each result, made once (a poll answers them all again)
        self.events: list[Event] = []  # what a reader that connects now gets first (see the module docstring)
        self.running: Command | None = None
        self.finished = False
        self.finished_at: float | None = None  # the activity's monotonic time when its worker was done with it
        self.released = False
        self._sequence = 0
        self._kept_output: dict[int, int] = {}
        self._listeners: set[Listener] = set()
        self._room = asyncio.Event()
        # Swapped for a fresh one on every new result and at the end: a waiter holds the one that was current when
        # it looked.
        self._changed = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Batch {self.batch_id} of {len(self.commands)} commands, {len(self.results)} done>"

    def _notify(self) -> None:
        # Only for a new result or the batch's end: the results long-polls wait for nothing else (an event per
        # piece of output woke each of them to look and wait again).
        self._changed.set()
        self._changed = asyncio.Event()

    def _event(self, index: int, kind: dict[str, Any], size: int = 0, moment: datetime | None = None) -> None:
        event = (
            self._sequence,
            {"batch_id": self.batch_id, "index": index, "timestamp": _event_timestamp(moment), "kind": kind},
        )
        self._sequence += 1
        if not size:
            self.events.append(event)
        elif not self.released and self._kept_output.get(index, 0) + size <= self.output_limit:
            self.events.append(event)
            self._kept_output[index] = self._kept_output.get(index, 0) + size
        for listener in self._listeners:
            listener.offer(event, size)

    def listen(self) -> Listener:
        """A new reader of the batch's events: it gets the kept ones first, then every new one (bounded)."""
        listener = Listener(self, list(self.events))
        self._listeners.add(listener)
        return listener

    def unlisten(self, listener: Listener) -> None:
        """The reader has gone."""
        self._listeners.discard(listener)
        self._drained()

    def congested(self) -> bool:
        """Whether a reader that keeps up has a full buffer (see the module docstring)."""
        return any(listener.full and not listener.left_behind for listener in self._listeners)

    async def wait_room(self, *, timeout: float | None = None) -> None:
        """Until no reader's buffer is full, or ``timeout`` seconds: then the full readers are left behind
        (they miss output events until they have taken what they hold)."""
        deadline = asyncio.get_running_loop().time() + (self.congestion_timeout if timeout is None else timeout)
        while self.congested():
            room = self._room
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or not await wait_event(room, remaining):
                for listener in self._listeners:
                    listener.left_behind = listener.left_behind or listener.full
                return

    def _drained(self) -> None:
        room, self._room = self._room, asyncio.Event()
        room.set()

    def release(self) -> None:
        """Let the kept output events go (the batch's results have been fetched, or the activity ended)."""
        if self.released:
            return
        self.released = True
        kept = [event for event in self.events if not ({"stdout", "stderr"} & set(event[1]["kind"]))]
        self.events = kept
        self._kept_output.clear()

    # -- recording ----------------------------------------------------------------------------------------

    def command_started(self, command: Command) -> None:
        """``command`` starts: a ``started`` event carrying the command as the requestor sent it."""
        self.running = command
        self._event(command.index, {"started": {"command": dict(command.raw)}})

    def command_output(self, index: int, stream: Literal["stdout", "stderr"], piece: str | list[int]) -> None:
        """A piece of stream-mode output of the running command (``""``: one nobody reads, see :meth:`reads`)."""
        if piece == "":
            self._sequence += 1  # its event is missed as one dropped for a full reader is: a gap in the ids
            return
        self._event(index, {stream: piece}, max(len(piece), 1))

    def reads(self, index: int, size: int) -> bool:
        """Whether anyone would read a piece of ``size`` bytes of command ``index``'s output now: a stream
        reading the batch, or the events kept for a late one (a piece's text has at least a quarter of its
        bytes' length in characters, less a character cut at its end)."""
        if self._listeners:
            return True
        if self.released:
            return False
        return self._kept_output.get(index, 0) + max((size - 3) // 4, 1) <= self.output_limit

    def command_finished(self, command: Command, outcome: Outcome) -> None:
        """``command`` ended: a ``finished`` event and its result; a failure or the last command ends the batch."""
        last = not outcome.ok or command.index == len(self.commands) - 1
        self.running = None
        now = utc_now()  # one moment for the result and its event
        self.results.append(
            {
                "index": command.index,
                "eventDate": format_timestamp(now),
                "result": "Ok" if outcome.ok else "Error",
                "stdout": outcome.stdout,
                "stderr": outcome.stderr,
                "message": outcome.message,
                "isBatchFinished": last,
            }
        )
        self.finished = last
        self._event(
            command.index, {"finished": {"return_code": outcome.return_code, "message": outcome.message}}, moment=now
        )
        self._notify()

    def abort(self, reason: str) -> None:
        """End the batch now: the running command (or, if none ran yet, the next one) fails with ``reason``."""
        if self.finished:
            return
        command = self.running
        if command is None:
            command = self.commands[len(self.results)]
            self.command_started(command)
        self.command_finished(command, Outcome.error(reason))
        self.finished = True
        self._notify()

    # -- reading ------------------------------------------------------------------------------------------

    async def _changed_within(self, deadline: float) -> bool:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return False
        return await wait_event(self._changed, remaining)

    def results_json(self, count: int) -> bytes:
        """The JSON array of the first ``count`` results; each result is encoded once, when first answered.

        Every long-poll answers all the results so far (as the daemon does), so a batch of a thousand commands
        polled after each one would otherwise encode half a million results.
        """
        for result in self.results[len(self._encoded) : count]:
            self._encoded.append(json.dumps(result, separators=(",", ":"), allow_nan=False).encode())
        return b"[" + b",".join(self._encoded[:count]) + b"]"

    async def wait_results(self, *, command_index: int | None, timeout: float | None) -> list[dict[str, Any]]:
        """The results so far, after waiting as the daemon's long-poll does.

        Without ``timeout`` it answers at once. With ``command_index`` it waits until that command's result
        exists (or the batch has ended before it) and answers 408 when ``timeout`` runs out first; without
        it, it waits until there is a result more than when it was asked (or the batch has ended), and
        answers what there is when ``timeout`` runs out.
        """
        if command_index is not None and not 0 <= command_index < len(self.commands):
            raise HttpError(
                400,
                f"commandIndex {command_index} is outside batch {self.batch_id}, whose commands are "
                f"0-{len(self.commands) - 1}",
            )
        seen = len(self.results)

        def ready() -> bool:
            if self.finished:
                return True
            if command_index is None:
                return len(self.results) > seen
            return len(self.results) > command_index

        deadline = asyncio.get_running_loop().time() + (timeout or 0.0)
        while not ready():
            if not await self._changed_within(deadline):
                if command_index is not None:
                    raise HttpError(
                        408,
                        f"command {command_index} of batch {self.batch_id} did not finish within {timeout or 0} s; "
                        "poll again",
                    )
                break
        if self.finished and (command_index is None or command_index == len(self.results) - 1):
            self.release()  # the requestor has its last result: late readers get no replay of the output
        return list(self.results)


async def run_batch(batch: Batch, execute: Callable[[Command, Batch], Awaitable[Outcome]]) -> None:
    """Run the batch's commands in order with ``execute``, stopping at the first failure.

    Cancelling the run leaves the running command open: whoever cancels calls :meth:`Batch.abort` with why.
    """
    for command in batch.commands:
        batch.command_started(command)
        outcome = await execute(command, batch)
        batch.command_finished(command, outcome)
        if batch.finished:
            return
