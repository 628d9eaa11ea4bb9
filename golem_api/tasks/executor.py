"""``Golem.execute_tasks``: run a worker function over a stream of tasks on several providers at once.

The shape is yapapi's::

    async def worker(ctx: WorkContext, tasks: AsyncIterator[Task]):
        async for task in tasks:
            script = ctx.new_script()
            future_result = script.run("/bin/sh", "-c", "date")
            yield script
            task.accept_result(result=await future_result)

    async with Golem(budget=1.0) as golem:
        async for completed in golem.execute_tasks(worker, [Task(data=None)], payload=payload):
            print(completed.result.stdout)

``execute_tasks`` returns a :class:`Job`, an asynchronous iterator of the tasks whose results were accepted,
in the order they were accepted. Nothing starts until it is first iterated (as with yapapi's generator).

How a job runs:

* one demand for ``payload``; up to ``max_workers`` **workers** at a time, each on its own agreement and
  activity (so on its own provider: a provider serves one agreement at a time). A worker gets an agreement,
  deploys and starts the activity (``implicit_init=True``), then runs ``worker(ctx, tasks)``: the scripts it
  yields run on its activity (:mod:`golem_api.activity.handlers`: ``future_results = yield script`` works,
  errors are raised at the ``yield``), and ``tasks`` hands it one task at a time. A worker is started only
  when there is a task for it.
* tasks are read from ``data`` (a list, any iterable, an infinite generator or an asynchronous iterable)
  a few at a time, as workers need them.
* a task is **tried again** when its worker rejects it with ``retry=True`` or fails (raises, or loses its
  activity) before settling it, and when a worker ends without settling a task it took. Each task has at most
  ``task_attempts`` tries; a task that fails on every one stops the job with
  :class:`~golem_api.errors.TaskFailedError`, which lists why each try failed. A task to try again goes
  **preferably to another provider**: a worker never takes a task that already failed on its own provider
  while another provider may take it; it ends instead, and the next worker asks the market for an agreement
  avoiding those providers (taking one of them again only when no other offer is at hand, as
  ``Demand.agreement(avoid=…)`` does).
* a worker that ends (its generator returned, or it called ``await tasks.aclose()`` to leave that provider,
  as yapapi's scan example does) has its activity destroyed and its agreement terminated; a new worker is
  started while tasks are waiting. After ``task_attempts`` workers in a row failed before taking any task
  (the payload does not deploy, say) the job stops with :class:`~golem_api.errors.TaskError`.
* the whole job, from its first iteration, is bounded by ``timeout`` (default 15 minutes, yapapi's; the
  demand expires then too): past it, iterating raises
  :class:`~golem_api.errors.JobTimeoutError`, naming what was done and what the market said.

When the job ends (all tasks settled, an error, :meth:`Job.aclose`, or ``Golem`` exiting) its workers are
stopped, their activities destroyed and agreements terminated, its demand withdrawn, and its
:class:`TaskSummary` (counts, per provider) logged and kept as :attr:`Job.summary`. Events of
:mod:`golem_api.events` follow it: ``JobStarted``, ``WorkerStarted``, ``TaskStarted``, ``TaskAccepted``,
``TaskRejected``, ``TaskFailed``, ``WorkerFinished``, ``JobFinished``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Iterable
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from attrs import define, field

from golem_api.activity.script import Script
from golem_api.errors import (
    GolemError,
    JobTimeoutError,
    MarketTimeoutError,
    TaskError,
    TaskFailedError,
)
from golem_api.events import (
    JobFinished,
    JobStarted,
    TaskAccepted,
    TaskFailed,
    TaskRejected,
    TaskStarted,
    WorkerFinished,
    WorkerStarted,
)
from golem_api.tasks.task import Task, TaskStatus
from golem_shared.tasks import TaskSet, wait_event
from golem_shared.timestamps import utc_now

if TYPE_CHECKING:
    from golem_api.activity.activity import Activity
    from golem_api.activity.work_context import WorkContext
    from golem_api.golem import Golem
    from golem_api.market.agreement import Agreement
    from golem_api.market.negotiation import Demand
    from golem_api.payload import Payload

__all__ = [
    "DEFAULT_MAX_WORKERS",
    "DEFAULT_TASK_ATTEMPTS",
    "DEFAULT_TIMEOUT",
    "Job",
    "ProviderTasks",
    "TaskSummary",
    "WorkerFunction",
]

_log = logging.getLogger("golem_api.tasks")

D = TypeVar("D")
R = TypeVar("R")

WorkerFunction = Callable[["WorkContext", AsyncIterator[Task[D, R]]], AsyncGenerator[Script, Any]]
"""``worker(ctx, tasks)``: an asynchronous generator function that yields scripts (see the module docstring)."""

DEFAULT_MAX_WORKERS = 5
DEFAULT_TIMEOUT = timedelta(minutes=15)
DEFAULT_TASK_ATTEMPTS = 3
CLEANUP_TIMEOUT = 10.0
"""Seconds allowed for destroying a worker's activity and, separately, for terminating its agreement."""
_STOP_BOUND = 2 * CLEANUP_TIMEOUT + 5.0  # how long the workers of a stopping job get to end


@define
class ProviderTasks:
    """What one provider did in a job: tasks accepted, attempts that did not give a result, workers."""

    accepted: int = 0
    rejected: int = 0
    workers: int = 0
    failed_workers: int = 0


@define
class TaskSummary:
    """A job's figures: tasks ``accepted``, ``rejected`` (for good), ``retried`` (attempts tried again),
    ``failed`` (out of attempts); workers started and failed; per provider name, :class:`ProviderTasks`."""

    job_id: str
    accepted: int = 0
    rejected: int = 0
    retried: int = 0
    failed: int = 0
    workers: int = 0
    failed_workers: int = 0
    seconds: float = 0.0
    providers: dict[str, ProviderTasks] = field(factory=dict)

    def provider(self, name: str) -> ProviderTasks:
        """The figures of provider ``name`` (created empty on first use)."""
        return self.providers.setdefault(name, ProviderTasks())

    def lines(self) -> list[str]:
        """The summary as text, one line for the job, then one per provider."""
        lines = [
            f"Job {self.job_id}: {self.accepted} task(s) accepted, {self.rejected} rejected, {self.retried} "
            f"tried again, {self.failed} failed, in {self.seconds:.1f} s with {self.workers} worker(s)"
            + (f" ({self.failed_workers} failed)" if self.failed_workers else "")
        ]
        for name, figures in sorted(self.providers.items()):
            text = f"Provider {name!r} computed {figures.accepted} task(s)"
            if figures.rejected:
                text += f", {figures.rejected} attempt(s) without a result"
            if figures.failed_workers:
                text += f", {figures.failed_workers} failed worker(s)"
            lines.append(text)
        return lines

    def __str__(self) -> str:
        return "\n".join(self.lines())


class _Worker:
    """One worker: an agreement, an activity, the user's generator, and the tasks it holds."""

    def __init__(self, number: int, avoid: frozenset[str]) -> None:
        self.number = number
        self.avoid = avoid
        self.agreement: Agreement | None = None
        self.activity: Activity | None = None
        self.fallback = False  # its provider is one it tried to avoid: it may take tasks that failed there
        self.asked = False  # has asked for its first task
        self.waiting = False  # is waiting for a task to come
        self.took_task = False
        self.tasks: set[Task[Any, Any]] = set()
        self.task: asyncio.Task[None] | None = None

    @property
    def provider_id(self) -> str:
        return self.agreement.provider_id if self.agreement is not None else ""

    @property
    def provider_name(self) -> str:
        return self.agreement.provider_name if self.agreement is not None else "no provider yet"


class Job(Generic[D, R]):
    """A run of ``execute_tasks``: iterate it for the accepted tasks (``async for task in job``).

    ``id`` names it (``job_id=`` or ``"1"``, ``"2"``, … per ``Golem``); ``summary`` holds its figures;
    :meth:`aclose` stops it early (also ``async with golem.execute_tasks(…) as job:``). See the module docstring.
    """

    def __init__(
        self,
        golem: Golem,
        worker: WorkerFunction[D, R],
        data: Iterable[Task[D, R]] | AsyncIterable[Task[D, R]],
        payload: Payload,
        *,
        job_id: str,
        max_workers: int,
        timeout: float,
        implicit_init: bool,
        task_attempts: int,
    ) -> None:
        self.id = job_id
        self.summary = TaskSummary(job_id=job_id)
        self._golem = golem
        self._worker_fn = worker
        self._data = data
        self._payload = payload
        self.max_workers = max_workers
        self.timeout = timeout
        self.implicit_init = implicit_init
        self.task_attempts = task_attempts
        self._tasks = TaskSet(f"job {job_id}", logger=_log)
        self._demand: Demand | None = None
        self._fresh: deque[Task[D, R]] = deque()
        self._retry: list[Task[D, R]] = []
        self._running: set[Task[D, R]] = set()
        self._holders: dict[Task[D, R], _Worker] = {}
        self._source_done = False
        self._completed: deque[Task[D, R]] = deque()
        self._workers: dict[int, _Worker] = {}
        self._worker_numbers = 0
        self._bad_providers: set[str] = set()  # providers whose workers failed
        self._idle_failures = 0  # workers in a row that failed before taking a task
        self._last_worker_error: str | None = None
        self._failure: BaseException | None = None
        self._tick = asyncio.Event()
        self._started_at: float | None = None
        self._deadline: float | None = None
        self._state = "new"  # new, running, stopping, stopped
        self._stopped = asyncio.Event()
        self._stop_task: asyncio.Future[None] | None = None
        self._end_error: BaseException | None = None

    def __repr__(self) -> str:
        return (
            f"<Job {self.id} {self._state}: {self.summary.accepted} accepted, {len(self._running)} running, "
            f"{len(self._workers)} worker(s)>"
        )

    # --- iteration ----------------------------------------------------------------------------------

    def __aiter__(self) -> Job[D, R]:
        return self

    async def __anext__(self) -> Task[D, R]:
        if self._state == "new":
            await self._start()
        loop = asyncio.get_running_loop()
        while True:
            if self._completed:
                return self._completed.popleft()
            if self._state in ("stopping", "stopped"):
                await self._stopped.wait()
                raise StopAsyncIteration
            if self._failure is not None:
                failure = self._failure
                await self._stop(failure)
                raise failure
            if self._finished:
                await self._stop(None)
                raise StopAsyncIteration
            assert self._deadline is not None
            remaining = self._deadline - loop.time()
            if remaining <= 0:
                error = JobTimeoutError(self._timeout_message(), job_id=self.id, timeout=self.timeout)
                await self._stop(error)
                raise error
            tick = self._tick
            await wait_event(tick, remaining)

    async def __aenter__(self) -> Job[D, R]:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the job: workers are cancelled, their activities and agreements ended, the demand withdrawn."""
        if self._state == "new":
            self._state = "stopped"
            self._stopped.set()
            return
        await self._stop(None)

    @property
    def done(self) -> bool:
        """True once the job has stopped (finished, failed, timed out or closed)."""
        return self._state == "stopped"

    # --- the job's state ----------------------------------------------------------------------------

    @property
    def _finished(self) -> bool:
        return self._source_done and not self._fresh and not self._retry and not self._running

    def _wake(self) -> None:
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    def _fail(self, error: BaseException) -> None:
        if self._failure is None:
            self._failure = error
        self._wake()

    async def _start(self) -> None:
        self._state = "running"
        loop = asyncio.get_running_loop()
        self._started_at = loop.time()
        self._deadline = self._started_at + self.timeout
        try:
            self._demand = await self._golem.create_demand(
                self._payload, expiration=_utc_in(self.timeout), no_offers_warning_after=min(15.0, self.timeout)
            )
        except BaseException as exc:
            self._state = "stopped"
            self._stopped.set()
            self._end_error = exc
            self._finish_summary(exc)
            raise
        self._golem.bus.emit(JobStarted(job_id=self.id, max_workers=self.max_workers))
        self._tasks.spawn(self._feed(), name=f"job {self.id}: reading tasks")
        self._tasks.spawn(self._manage(), name=f"job {self.id}: starting workers")

    async def _stop(self, error: BaseException | None) -> None:
        """End the job once: workers, demand, summary. The ending runs in a task of its own, so that a caller
        cancelled meanwhile does not cut it short; every caller waits for that one task."""
        if self._state == "stopped":
            return
        if self._stop_task is None:
            finished = error is None and self._finished
            self._state = "stopping"
            self._end_error = error
            self._wake()
            self._stop_task = asyncio.ensure_future(self._end(error, finished=finished))
        await asyncio.shield(self._stop_task)

    async def _end(self, error: BaseException | None, *, finished: bool) -> None:
        try:
            working = [w.task for w in self._workers.values() if w.task is not None and w.agreement is not None]
            if working and finished:
                # Every task is settled: the workers with a provider end by themselves (no task is left for
                # them) and end their agreements; those still waiting for an agreement are cancelled below.
                await asyncio.wait(working, timeout=_STOP_BOUND)
            await self._tasks.aclose(timeout=_STOP_BOUND)
            if self._demand is not None:
                try:
                    await self._demand.aclose()
                except GolemError as exc:
                    _log.warning("job %s: could not withdraw its demand: %s", self.id, exc)
        finally:
            self._finish_summary(error)
            self._state = "stopped"
            self._stopped.set()

    def _finish_summary(self, error: BaseException | None) -> None:
        loop = asyncio.get_running_loop()
        if self._started_at is not None:
            self.summary.seconds = loop.time() - self._started_at
        summary = self.summary
        self._golem.bus.emit(
            JobFinished(
                job_id=self.id,
                accepted=summary.accepted,
                rejected=summary.rejected,
                retried=summary.retried,
                failed=summary.failed,
                seconds=summary.seconds,
                error=None if error is None else f"{type(error).__name__}: {error}",
            )
        )
        for line in summary.lines():
            _log.info("%s", line)

    def _timeout_message(self) -> str:
        summary = self.summary
        pending = len(self._fresh) + len(self._retry) + len(self._running)
        text = (
            f"job {self.id} did not finish within its timeout of {self.timeout:g} s: {summary.accepted} task(s) "
            f"accepted, {len(self._running)} running, {pending - len(self._running)} waiting"
            + ("" if self._source_done else " and more to read")
        )
        if self._last_worker_error:
            text += f"; last worker problem: {self._last_worker_error}"
        return text + ". Give execute_tasks(timeout=…) more time, or check the payload and the market."

    # --- reading tasks ------------------------------------------------------------------------------

    async def _feed(self) -> None:
        data = self._data
        try:
            if isinstance(data, AsyncIterable):
                source: AsyncIterator[Task[D, R]] = aiter(data)
                try:
                    while await self._room():
                        try:
                            item = await anext(source)
                        except StopAsyncIteration:
                            return
                        self._add(item)
                finally:
                    closing = getattr(source, "aclose", None)
                    if closing is not None:  # an asynchronous generator the job stopped reading
                        with contextlib.suppress(Exception):
                            await closing()
            else:
                for item in data:
                    self._add(item)
                    if not await self._room():
                        return
        except asyncio.CancelledError:
            raise
        except TaskError as exc:
            self._fail(exc)
        except Exception as exc:
            self._fail(TaskError(f"reading the tasks of job {self.id} failed: {type(exc).__name__}: {exc}"))
        finally:
            self._source_done = True
            self._wake()

    async def _room(self) -> bool:
        """Wait until fewer tasks are read ahead than workers may run; False when the job stops instead."""
        while len(self._fresh) >= self.max_workers and self._failure is None and self._state == "running":
            await self._tick.wait()
        return self._failure is None and self._state == "running"

    def _add(self, item: object) -> None:
        if not isinstance(item, Task):
            raise TaskError(
                f"execute_tasks takes Task objects, but the data gave {item!r}; wrap each value: Task(data=value)"
            )
        if item.status is not TaskStatus.WAITING or item._job is not None:
            raise TaskError(
                f"{item!r} was already given to a job ({item.status.value}); give each execute_tasks call new Tasks"
            )
        item._bind(self, self._settle)
        self._fresh.append(item)
        self._wake()

    # --- workers ------------------------------------------------------------------------------------

    async def _manage(self) -> None:
        """Start workers while tasks wait and fewer than ``max_workers`` run."""
        loop = asyncio.get_running_loop()
        assert self._deadline is not None
        while self._state == "running" and self._failure is None and not self._finished:
            if loop.time() >= self._deadline:
                return  # the job times out: the iteration raises
            tick = self._tick
            ready = sum(1 for w in self._workers.values() if not w.asked or w.waiting)
            available = len(self._fresh) + len(self._retry)
            if len(self._workers) < self.max_workers and available > ready:
                self._launch()
                continue
            await tick.wait()

    def _launch(self) -> None:
        self._worker_numbers += 1
        avoid = frozenset({a.provider_id for task in self._retry for a in task.attempts} | self._bad_providers)
        worker = _Worker(self._worker_numbers, avoid)
        self._workers[worker.number] = worker
        worker.task = self._tasks.spawn(self._run_worker(worker), name=f"job {self.id}: worker {worker.number}")

    async def _run_worker(self, worker: _Worker) -> None:
        assert self._demand is not None
        assert self._deadline is not None
        error: BaseException | None = None
        tasks: AsyncGenerator[Task[D, R], None] | None = None
        try:
            remaining = self._deadline - asyncio.get_running_loop().time()
            try:
                agreement = await self._demand.agreement(max(remaining, 0.1), avoid=worker.avoid)
            except MarketTimeoutError as exc:
                self._last_worker_error = str(exc)
                return
            worker.agreement = agreement
            worker.fallback = agreement.provider_id in worker.avoid
            self.summary.workers += 1
            self.summary.provider(agreement.provider_name).workers += 1
            worker.activity = await agreement.create_activity()
            ctx = self._golem.work_context(worker.activity)
            self._golem.bus.emit(
                WorkerStarted(
                    job_id=self.id,
                    agreement_id=agreement.agreement_id,
                    provider_id=agreement.provider_id,
                    provider_name=agreement.provider_name,
                )
            )
            if self.implicit_init:
                script = ctx.new_script()
                script.deploy()
                script.start()
                await ctx.run_script(script)
            tasks = self._tasks_for(worker)
            handler = self._worker_fn(ctx, tasks)
            await _drive(handler, ctx, _name(self._worker_fn))
        except asyncio.CancelledError:
            error = asyncio.CancelledError()
            raise
        except Exception as exc:
            error = exc
        finally:
            if tasks is not None:
                with contextlib.suppress(Exception):
                    await tasks.aclose()
            await self._end_worker(worker, error)

    async def _end_worker(self, worker: _Worker, error: BaseException | None) -> None:
        cancelled = isinstance(error, asyncio.CancelledError)
        if cancelled:
            for task in list(worker.tasks):
                self._abandon(task, "the job stopped while the task ran")
        else:
            if error is not None:
                reason = f"the worker failed on {worker.provider_name!r}: {type(error).__name__}: {error}"
                self._last_worker_error = reason
                _log.warning("job %s: %s", self.id, reason)
            else:
                reason = "the worker ended without accepting or rejecting it"
            for task in list(worker.tasks):
                self._settle(task, TaskStatus.REJECTED, reason, True, failed=True)
        if error is not None and not cancelled:
            self.summary.failed_workers += 1
            if worker.agreement is not None:
                self.summary.provider(worker.provider_name).failed_workers += 1
                self._bad_providers.add(worker.provider_id)
            if not worker.took_task:
                self._idle_failure(f"failed before taking a task; the last: {reason}")
        elif error is None and worker.agreement is not None and not worker.asked and self._state == "running":
            # The worker returned without iterating its tasks: another would do the same, and each costs an agreement.
            _log.warning("job %s: the worker on %r returned without asking for a task", self.id, worker.provider_name)
            self._idle_failure(
                "returned without asking for a task: a worker must iterate its tasks (`async for task in tasks:`)"
            )
        await self._release(worker, error)
        if worker.agreement is not None:
            self._golem.bus.emit(
                WorkerFinished(
                    job_id=self.id,
                    provider_id=worker.provider_id,
                    provider_name=worker.provider_name,
                    error=None if error is None else f"{type(error).__name__}: {error}",
                )
            )
        self._workers.pop(worker.number, None)
        self._wake()

    def _idle_failure(self, what: str) -> None:
        """One more worker in a row that did no task; after ``task_attempts`` of them the job stops."""
        self._idle_failures += 1
        if self._idle_failures >= self.task_attempts:
            self._fail(TaskError(f"job {self.id}: {self._idle_failures} workers in a row {what}"))

    async def _release(self, worker: _Worker, error: BaseException | None) -> None:
        """Destroy the activity and terminate the agreement, each bounded, even when cancelled."""
        activity, agreement = worker.activity, worker.agreement
        worker.activity = None

        async def release() -> None:
            if activity is not None:
                try:
                    await asyncio.wait_for(activity.destroy(), CLEANUP_TIMEOUT)
                except (GolemError, asyncio.TimeoutError) as exc:
                    _log.warning("job %s: could not destroy %r: %r", self.id, activity, exc)
            if agreement is not None and not agreement.terminated:
                reason = "the worker finished" if error is None else f"the worker ended: {type(error).__name__}"
                try:
                    await asyncio.wait_for(agreement.terminate(reason, success=error is None), CLEANUP_TIMEOUT)
                except (GolemError, asyncio.TimeoutError) as exc:
                    _log.warning("job %s: could not terminate %r: %r", self.id, agreement, exc)

        cleanup = asyncio.ensure_future(release())
        try:
            await asyncio.shield(cleanup)
        except asyncio.CancelledError:
            await asyncio.wait({cleanup})  # bounded by CLEANUP_TIMEOUT twice
            raise

    # --- handing out and settling tasks ------------------------------------------------------------

    async def _tasks_for(self, worker: _Worker) -> AsyncGenerator[Task[D, R], None]:
        """The ``tasks`` a worker iterates: one at a time, until none is left for it."""
        while True:
            task = await self._take(worker)
            if task is None:
                return
            yield task

    async def _take(self, worker: _Worker) -> Task[D, R] | None:
        if not worker.asked:
            worker.asked = True
            self._wake()
        while True:
            if self._state != "running" or self._failure is not None:
                return None
            provider = worker.provider_id
            task = next((t for t in self._retry if not _tried_on(t, provider)), None)
            if task is not None:
                self._retry.remove(task)
            elif self._fresh:
                task = self._fresh.popleft()
            elif self._retry:
                if not worker.fallback:
                    return None  # every task to retry failed here: leave, so that another provider gets them
                task = self._retry.pop(0)
            if task is not None:
                return self._hand_out(task, worker)
            if self._finished:
                return None
            worker.waiting = True
            self._wake()  # the manager counts this worker as ready for a task
            tick = self._tick
            try:
                await tick.wait()
            finally:
                worker.waiting = False

    def _hand_out(self, task: Task[D, R], worker: _Worker) -> Task[D, R]:
        attempt = task._begin(worker.provider_id, worker.provider_name)
        self._holders[task] = worker
        worker.tasks.add(task)
        worker.took_task = True
        self._running.add(task)
        self._golem.bus.emit(
            TaskStarted(
                job_id=self.id,
                task_id=task.id,
                provider_name=attempt.provider_name,
                attempt=len(task.attempts),
            )
        )
        self._wake()
        return task

    def _settle(
        self, task: Task[D, R], status: TaskStatus, reason: str | None, retry: bool, *, failed: bool = False
    ) -> None:
        """A task's attempt ended: accepted, rejected (to retry or not), or its worker failed."""
        self._release_task(task)
        name = task.provider_name or ""
        bus = self._golem.bus
        attempt = len(task.attempts)
        if status is TaskStatus.ACCEPTED:
            task._end_attempt(TaskStatus.ACCEPTED, "accepted", None)
            self.summary.accepted += 1
            self.summary.provider(name).accepted += 1
            self._idle_failures = 0
            self._completed.append(task)
            bus.emit(TaskAccepted(job_id=self.id, task_id=task.id, provider_name=name, attempt=attempt))
        else:
            text = reason or "rejected without a reason"
            outcome = "failed" if failed else "rejected"
            self.summary.provider(name).rejected += 1
            if retry and self._state != "running":
                task._end_attempt(TaskStatus.WAITING, outcome, text)  # the job is over: not tried again
            elif retry and attempt < self.task_attempts:
                task._end_attempt(TaskStatus.WAITING, outcome, text)
                self.summary.retried += 1
                self._retry.append(task)
                bus.emit(TaskRejected(job_id=self.id, task_id=task.id, provider_name=name, reason=text, retry=True))
            elif retry:
                task._end_attempt(TaskStatus.FAILED, outcome, text)
                self.summary.failed += 1
                reasons = tuple(
                    f"attempt {i} on {a.provider_name!r}: {a.reason}" for i, a in enumerate(task.attempts, 1)
                )
                bus.emit(TaskFailed(job_id=self.id, task_id=task.id, reasons=reasons))
                listed = "; ".join(reasons)
                self._fail(
                    TaskFailedError(
                        f"{task!r} of job {self.id} failed on each of its {attempt} attempt(s): {listed}. "
                        "Fix the worker or the payload, or give execute_tasks(task_attempts=…) more tries",
                        task=task,
                        reasons=reasons,
                    )
                )
            else:
                task._end_attempt(TaskStatus.REJECTED, outcome, text)
                self.summary.rejected += 1
                _log.info("job %s: %r rejected on %r: %s", self.id, task, name, text)
                bus.emit(TaskRejected(job_id=self.id, task_id=task.id, provider_name=name, reason=text, retry=False))
        self._wake()

    def _abandon(self, task: Task[D, R], reason: str) -> None:
        """The job stopped while ``task`` ran: the attempt ends, the task is neither retried nor counted."""
        self._release_task(task)
        task._end_attempt(TaskStatus.WAITING, "cancelled", reason)
        self._wake()

    def _release_task(self, task: Task[D, R]) -> None:
        worker = self._holders.pop(task, None)
        if worker is not None:
            worker.tasks.discard(task)
        self._running.discard(task)


def _tried_on(task: Task[Any, Any], provider_id: str) -> bool:
    return any(attempt.provider_id == provider_id for attempt in task.attempts)


def _name(function: object) -> str:
    return f"the worker {getattr(function, '__qualname__', None) or repr(function)}"


async def _drive(handler: AsyncGenerator[Script, Any], ctx: WorkContext, name: str) -> None:
    from golem_api.activity.handlers import drive_handler

    await drive_handler(handler, ctx, name=name)


def _utc_in(seconds: float) -> datetime:
    return utc_now() + timedelta(seconds=seconds)


def check_worker(worker: object) -> None:
    """``TypeError`` unless ``worker`` is an asynchronous generator function (``async def`` with ``yield``)."""
    if not inspect.isasyncgenfunction(worker):
        raise TypeError(
            f"the worker must be an asynchronous generator function: `async def worker(ctx, tasks):` that "
            f"yields scripts made with ctx.new_script(); got {worker!r}"
        )
