"""One ExeScript batch on the local exe-unit: its commands run in order, its results, and its event log.

A :class:`Batch` records, as the commands run, two views of the same progress:

* the results (``ExeScriptCommandResult``): one per finished command, in index order, the last one with
  ``isBatchFinished: true`` — after the last command, or after the first failure, which stops the batch;
* the runtime events served as server-sent events: ``started``, ``stdout`` / ``stderr`` (stream-mode
  captures only) and ``finished {return_code, message}``, in the order they happened, from the start of the
  batch, so that a client that connects late still gets them all.

:func:`run_batch` drives the commands through an ``execute`` callable (the activity's exe-unit) and turns
what it returns into results and events. When the activity stops under a running batch, the activity
cancels the run and calls :meth:`Batch.abort`, which ends the running command with an Error result, so
that nobody waits for a batch that will never finish.

Readers wait with a bound: :meth:`Batch.wait_results` (long-poll, 408 when a command did not finish in time)
and :meth:`Batch.events_from` (for the event stream).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from typing import Any, Literal

from attrs import frozen

from golem_local.exescript import Command
from golem_local.http import HttpError
from golem_shared.timestamps import format_timestamp, utc_now

__all__ = [
    "Batch",
    "Outcome",
    "run_batch",
]

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


def _event_timestamp() -> str:
    # The daemon writes a naive UTC date-time (no zone designator) in runtime events.
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")


class Batch:
    """The commands of one exec request, their results and their runtime events (see the module docstring)."""

    def __init__(self, activity_id: str, commands: Sequence[Command]) -> None:
        self.batch_id = secrets.token_hex(16)
        self.activity_id = activity_id
        self.commands = tuple(commands)
        self.results: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.running: Command | None = None
        self.finished = False
        self.finished_at: float | None = None  # the activity's monotonic time when its worker was done with it
        # Swapped for a fresh one on every change: a waiter holds the one that was current when it looked.
        self._changed = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Batch {self.batch_id} of {len(self.commands)} commands, {len(self.results)} done>"

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _event(self, index: int, kind: dict[str, Any]) -> None:
        self.events.append({"batch_id": self.batch_id, "index": index, "timestamp": _event_timestamp(), "kind": kind})
        self._notify()

    # -- recording ----------------------------------------------------------------------------------------

    def command_started(self, command: Command) -> None:
        """``command`` starts: a ``started`` event carrying the command as the requestor sent it."""
        self.running = command
        self._event(command.index, {"started": {"command": dict(command.raw)}})

    def command_output(self, index: int, stream: Literal["stdout", "stderr"], piece: str | list[int]) -> None:
        """A piece of stream-mode output of the running command."""
        self._event(index, {stream: piece})

    def command_finished(self, command: Command, outcome: Outcome) -> None:
        """``command`` ended: a ``finished`` event and its result; a failure or the last command ends the batch."""
        last = not outcome.ok or command.index == len(self.commands) - 1
        self.running = None
        self.results.append(
            {
                "index": command.index,
                "eventDate": format_timestamp(utc_now()),
                "result": "Ok" if outcome.ok else "Error",
                "stdout": outcome.stdout,
                "stderr": outcome.stderr,
                "message": outcome.message,
                "isBatchFinished": last,
            }
        )
        self.finished = last
        self._event(command.index, {"finished": {"return_code": outcome.return_code, "message": outcome.message}})

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

    # -- reading ------------------------------------------------------------------------------------------

    async def _changed_within(self, deadline: float) -> bool:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return False
        try:
            await asyncio.wait_for(self._changed.wait(), remaining)
        except asyncio.TimeoutError:
            return False
        return True

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
        return list(self.results)

    async def events_from(self, position: int, *, timeout: float) -> list[dict[str, Any]]:
        """The events from ``position`` on, waiting up to ``timeout`` s for one when there is none yet."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.events) <= position and not self.finished:
            if not await self._changed_within(deadline):
                break
        return self.events[position:]


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
