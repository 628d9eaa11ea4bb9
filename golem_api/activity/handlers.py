"""Handlers: asynchronous generators that yield scripts and get their results back at the ``yield``.

Service handlers (``start``, ``run``, ``shutdown``) and task workers are written the same way, as in yapapi::

    script = ctx.new_script()
    date = script.run("/bin/date")
    future_results = yield script          # the generator resumes here…
    results = await future_results         # …with the results, or an awaitable of them
    print(results[0].stdout, (await date).stdout)

What the generator gets back at its ``yield``:

* for a script made with ``wait_for_results=True`` (the default), once every command has finished: a
  :class:`ScriptResults`, the list of :class:`~golem_api.activity.script.CommandResult` in command order,
  which may also be awaited (it gives itself). So ``results = yield script`` and
  ``future_results = yield script; results = await future_results`` both work. A failed command
  (:class:`~golem_api.errors.CommandExecutionError`), a timeout (:class:`~golem_api.errors.BatchTimeoutError`)
  or any other :class:`~golem_api.errors.GolemError` of the run is raised inside the generator at that
  ``yield``, so the handler may catch it and go on;
* for ``wait_for_results=False``, as soon as the provider has the batch: a :class:`PendingResults`, which
  gives the :class:`ScriptResults` when awaited (or raises the run's error there). The next script may be
  yielded before those results are in; the provider runs the batches in order. When the handler ends, the
  scripts still running are waited for (or cancelled when the handler failed or was cancelled), and a failure
  nobody awaited is logged.

Yielding anything but a script raises ``TypeError`` inside the generator at that ``yield``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Generator
from typing import TYPE_CHECKING, Any

from golem_api.activity.script import CommandResult, Script
from golem_api.errors import GolemError

if TYPE_CHECKING:
    from golem_api.activity.work_context import WorkContext

__all__ = ["PendingResults", "ScriptResults", "drive_handler"]

_log = logging.getLogger(__name__)


class ScriptResults(list[CommandResult]):
    """The results of a script's commands, in order; awaiting it gives the same list (yapapi's future shape)."""

    def __await__(self) -> Generator[Any, None, ScriptResults]:
        return self._itself().__await__()

    async def _itself(self) -> ScriptResults:
        return self


class PendingResults:
    """The results of a script sent with ``wait_for_results=False``; ``await`` it for its :class:`ScriptResults`."""

    def __init__(self, script: Script, task: asyncio.Task[list[CommandResult]]) -> None:
        self.script = script
        self._task = task
        self._awaited = False

    def __repr__(self) -> str:
        return f"<PendingResults of {self.script!r} ({'done' if self._task.done() else 'running'})>"

    def done(self) -> bool:
        """True once the script has run (or failed)."""
        return self._task.done()

    def __await__(self) -> Generator[Any, None, ScriptResults]:
        return self._results().__await__()

    async def _results(self) -> ScriptResults:
        self._awaited = True
        return ScriptResults(await asyncio.shield(self._task))

    def _report(self) -> None:
        """Retrieve the run's outcome; log a failure nobody awaited."""
        if self._task.cancelled():
            return
        error = self._task.exception()
        if error is not None and not self._awaited:
            _log.warning("%r sent with wait_for_results=False failed and nobody awaited it: %s", self.script, error)


async def _finish(pending: list[PendingResults], *, cancel: bool) -> None:
    """Wait until every pending run has ended (cancelling them first when ``cancel``), then report them.

    Cancelled while waiting: the runs are cancelled and waited for, and the cancellation goes on.
    """
    tasks = {results._task for results in pending}
    if not tasks:
        return
    try:
        if cancel:
            for task in tasks:
                task.cancel()
        await asyncio.wait(tasks)
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)  # each run settles its commands and releases its transfers at once
        raise
    finally:
        for results in pending:
            if results._task.done():
                results._report()


async def drive_handler(handler: AsyncGenerator[Any, Any], ctx: WorkContext, *, name: str) -> None:
    """Run each script ``handler`` yields on ``ctx`` and resume it as the module docstring says.

    Returns when the generator ends; raises what the generator raises (its own errors, and the errors thrown
    into it that it did not catch). ``name`` names the handler in the ``TypeError`` for a wrong yield.
    """
    if not hasattr(handler, "asend"):
        raise TypeError(
            f"{name} must be an asynchronous generator (an `async def` that yields scripts), got {handler!r}"
        )
    pending: list[PendingResults] = []
    sent: Any = None
    error: BaseException | None = None
    ended_well = False
    try:
        while True:
            try:
                item = await (handler.athrow(error) if error is not None else handler.asend(sent))
            except StopAsyncIteration:
                ended_well = True
                return
            sent, error = None, None
            if not isinstance(item, Script):
                error = TypeError(f"{name} yielded {item!r}; yield a script made with ctx.new_script()")
                continue
            if item.wait_for_results:
                try:
                    sent = ScriptResults(await ctx.run_script(item))
                except GolemError as exc:
                    error = exc
            else:
                try:
                    task = await ctx.start_script(item)
                except GolemError as exc:
                    error = exc
                else:
                    pending.append(PendingResults(item, task))
                    sent = pending[-1]
    finally:
        try:
            await handler.aclose()
        finally:
            await _finish(pending, cancel=not ended_well)
