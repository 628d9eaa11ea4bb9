"""One way to own background tasks: a :class:`TaskSet` per owner, closed with the owner.

Every long-lived object of golem-api that runs work in the background (a payment manager's pollers, a demand's
offer collector, a gftp service, a batch's event reader, a sandbox's readers, an activity's meter and worker, a
provider's loops) holds a ``TaskSet``, starts its tasks with :meth:`TaskSet.spawn` and ends them in its own
``aclose()`` with :meth:`TaskSet.aclose`, which cancels what still runs and waits until every task has ended.
No task is left running after its owner closed, and none is created that nobody holds.

A task that fails is logged with its name (unless its owner awaits it: the task is returned by ``spawn``);
cancellation is not a failure. The lifecycle words are the same everywhere: ``start`` (or ``async with``) to
begin, ``aclose`` to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["TaskSet", "finish_first", "reap", "set_once", "wait_event", "within"]

T = TypeVar("T")

_log = logging.getLogger(__name__)


class TaskSet:
    """The background tasks of one owner (``owner`` names it in log lines)."""

    def __init__(self, owner: str, *, logger: logging.Logger | None = None) -> None:
        self.owner = owner
        self._log = logger or _log
        self._tasks: set[asyncio.Task[Any]] = set()
        self._awaited: set[asyncio.Task[Any]] = set()
        self._closing = False

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str, awaited: bool = False) -> asyncio.Task[T]:
        """Start ``coro`` as a task of this set.

        ``awaited=True`` says that the caller awaits the task and handles its failure itself; otherwise a
        failure is logged. Spawning into a set that is closing refuses (the coroutine is closed, not run).
        """
        if self._closing:
            coro.close()
            raise RuntimeError(f"{self.owner} is closing: cannot start {name!r}")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        if awaited:
            self._awaited.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        awaited = task in self._awaited
        self._awaited.discard(task)
        if task.cancelled() or awaited:
            return
        exc = task.exception()
        if exc is not None:
            self._log.error("%s: background task %r failed", self.owner, task.get_name(), exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(set(self._tasks))

    @property
    def closing(self) -> bool:
        """Whether :meth:`aclose` was called: no more tasks start."""
        return self._closing

    async def aclose(self, *, timeout: float | None = None, reopen: bool = False) -> None:
        """Cancel every task still running and wait until all have ended.

        The task calling this (when it is one of the set) is left alone: a later ``aclose`` from elsewhere
        collects it. ``timeout`` bounds the wait: a task that has not ended that long after being cancelled is
        logged as an error and left behind. ``reopen=True`` lets the set take new tasks afterwards (an owner
        that restarts). Calling it twice is harmless.
        """
        self._closing = True
        current = asyncio.current_task()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while tasks := [task for task in self._tasks if task is not current]:
            for task in tasks:
                task.cancel()
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            _, pending = await asyncio.wait(tasks, timeout=remaining)
            if pending:
                for task in pending:
                    self._log.error(
                        "%s: task %r did not end within %s s of being cancelled", self.owner, task.get_name(), timeout
                    )
                break
        if reopen:
            self._closing = False


async def finish_first(clean_up: Coroutine[Any, Any, T]) -> T:
    """Await ``clean_up`` to its end even when the awaiting task is cancelled meanwhile (once or many times),
    then let the cancellation through: for clean-up that must not stop half-way (a sandbox's kill, its
    unmount, its uid's release) and that is bounded by itself."""
    task = asyncio.ensure_future(clean_up)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():  # the clean-up itself was cancelled (nobody else holds it): nothing left to wait for
                raise
            cancelled = True
        else:
            break
    if cancelled:
        raise asyncio.CancelledError
    return result


def set_once(future: asyncio.Future[None]) -> None:
    """Resolve ``future`` unless it is done already: a callback for ``loop.add_reader`` and the like, which may
    fire again before the waiter has taken the result."""
    if not future.done():
        future.set_result(None)


async def reap(process: asyncio.subprocess.Process) -> None:
    """Kill ``process`` if it still runs and wait for it, even when the caller is being cancelled.

    For the helper programs a task runs to completion (``mkfs``, ``ip``, ``bwrap`` checks): when the task is
    cancelled or times out, the program must not outlive it, nor be left for a closed event loop to reap.
    """
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    await finish_first(process.wait())  # a kill is answered at once: reaped, then the cancellation goes on


if sys.version_info >= (3, 11):

    async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
        """Wait until ``event`` is set (``True``) or ``timeout`` seconds have passed (``False``).

        Use it instead of ``asyncio.wait_for(event.wait(), timeout)``: before Python 3.12, ``wait_for`` swallows a
        cancellation that arrives while the event is being set (the inner wait finished, so it returns), and the
        cancelled task carries on as if nothing happened. A job cancelled right as one of its tasks started, for
        one, kept waiting for results that would never come. Here the cancellation always goes on: the wait runs
        in the caller's task under ``asyncio.timeout``, which tells its own cancellation from any other, and costs
        no task of its own (a node's providers and long-polls wait thousands of times a minute).
        """
        if event.is_set():
            return True
        if timeout is None:
            await event.wait()
            return True
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            return event.is_set()  # set as the time ran out: it came
        return True

    async def within(awaitable: Awaitable[T], timeout: float) -> T:
        """``awaitable``'s result, or ``asyncio.TimeoutError`` after ``timeout`` seconds (it is then cancelled).

        ``asyncio.wait_for`` without its flaw before Python 3.12 (see :func:`wait_event`): a cancellation that
        arrives as the awaitable finishes is never swallowed, so that a loop polling with it ends when its task is
        cancelled. The awaitable runs in the caller's task, under ``asyncio.timeout``.
        """
        async with asyncio.timeout(timeout):
            return await awaitable

else:  # Python 3.10: no asyncio.timeout (nor Task.cancelling); a helper task per wait

    async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
        """Wait until ``event`` is set (``True``) or ``timeout`` seconds have passed (``False``); a cancellation
        is never swallowed (see the Python 3.11 version)."""
        if event.is_set():
            return True
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({waiter}, timeout=timeout)
        finally:
            fired = waiter.done() and not waiter.cancelled()
            waiter.cancel()
        return fired

    async def within(awaitable: Awaitable[T], timeout: float) -> T:
        """``awaitable``'s result, or ``asyncio.TimeoutError`` after ``timeout`` seconds (it is then cancelled);
        a cancellation is never swallowed (see the Python 3.11 version)."""
        task = asyncio.ensure_future(awaitable)
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:
            task.cancel()
            await asyncio.wait({task})
            if not task.cancelled():
                task.exception()  # retrieved: the cancelled caller will not look at it
            raise
        if not done:
            task.cancel()
            await asyncio.wait({task})
            if not task.cancelled():
                return task.result()  # it finished while being cancelled: its result stands
            raise asyncio.TimeoutError
        return task.result()
