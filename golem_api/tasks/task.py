"""``Task``: one unit of work of ``Golem.execute_tasks``, its data in, its result out (yapapi's shape).

A worker takes tasks from its ``tasks`` iterator and settles each one::

    async for task in tasks:
        script = ctx.new_script()
        frame = script.run("/golem/render.sh", str(task.data))
        yield script
        task.accept_result(result=await frame)          # or task.reject_result("bad frame", retry=True)

``accept_result`` hands the task (with its ``result``) to the loop that iterates ``execute_tasks``;
``reject_result(retry=True)`` (also spelt ``reject_task``) gives the task another attempt, preferably on
another provider, while it has attempts left; ``retry=False`` drops it (it is counted as rejected, not
yielded). A task whose worker fails before settling it is tried again the same way. ``attempts`` records
each try: the provider, when, and how it ended.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

from attrs import define

from golem_api.errors import TaskError
from golem_shared.timestamps import utc_now

if TYPE_CHECKING:
    from golem_api.tasks.executor import Job

__all__ = ["Task", "TaskAttempt", "TaskStatus"]

D = TypeVar("D")
R = TypeVar("R")


class TaskStatus(enum.Enum):
    """Where a task is: waiting for a worker, running on one, or settled (accepted, rejected, failed)."""

    WAITING = "waiting"
    RUNNING = "running"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    FAILED = "failed"


@define
class TaskAttempt:
    """One try of a task on one provider; ``outcome`` is ``running``, ``accepted``, ``rejected`` or ``failed``."""

    provider_id: str
    provider_name: str
    started: datetime
    finished: datetime | None = None
    outcome: str = "running"
    reason: str | None = None


class Task(Generic[D, R]):
    """One unit of work: ``Task(data=…)``; after it ran, ``result`` is what the worker accepted.

    ``id`` is a short number (``"1"``, ``"2"``, …) unique in the program. ``running_time`` is how long the
    current (or last) attempt has run. A task belongs to one ``execute_tasks`` call; give new ``Task`` objects
    to another.
    """

    _ids: ClassVar[Iterator[int]] = itertools.count(1)

    def __init__(self, data: D) -> None:
        self.id = str(next(Task._ids))
        self._data = data
        self._result: R | None = None
        self._status = TaskStatus.WAITING
        self._attempts: list[TaskAttempt] = []
        self._job: Job[D, R] | None = None
        self._settle: Callable[[Task[D, R], TaskStatus, str | None, bool], None] | None = None

    def __repr__(self) -> str:
        return f"Task(id={self.id}, data={self._data!r})"

    @property
    def data(self) -> D:
        """What the worker needs to compute this task."""
        return self._data

    @property
    def result(self) -> R | None:
        """What the worker passed to :meth:`accept_result` (``None`` before that)."""
        return self._result

    @property
    def status(self) -> TaskStatus:
        """Where the task is (:class:`TaskStatus`)."""
        return self._status

    @property
    def attempts(self) -> tuple[TaskAttempt, ...]:
        """Every try of this task so far, oldest first."""
        return tuple(self._attempts)

    @property
    def provider_name(self) -> str | None:
        """The provider of the current (or last) attempt."""
        return self._attempts[-1].provider_name if self._attempts else None

    @property
    def provider_id(self) -> str | None:
        """The node id of the provider of the current (or last) attempt."""
        return self._attempts[-1].provider_id if self._attempts else None

    @property
    def running_time(self) -> timedelta | None:
        """How long the current attempt has run, or how long the last one took; ``None`` before any."""
        if not self._attempts:
            return None
        attempt = self._attempts[-1]
        return (attempt.finished or utc_now()) - attempt.started

    def accept_result(self, result: R | None = None) -> None:
        """The task is done and ``result`` is its result: it goes to the loop over ``execute_tasks``."""
        self._finish(TaskStatus.ACCEPTED, None, False, result=result)

    def reject_result(self, reason: str | None = None, retry: bool = False) -> None:
        """The attempt did not give a usable result. ``retry=True``: try again (preferably on another provider)
        while attempts are left; ``retry=False``: drop the task (counted as rejected, not yielded)."""
        if not isinstance(retry, bool):
            raise TaskError(f"retry must be True or False, got {retry!r}")
        self._finish(TaskStatus.REJECTED, reason, retry)

    def reject_task(self, reason: str | None = None, retry: bool = False) -> None:
        """Another name for :meth:`reject_result`."""
        self.reject_result(reason, retry)

    # --- what the job does -----------------------------------------------------------------------

    def _finish(self, status: TaskStatus, reason: str | None, retry: bool, *, result: R | None = None) -> None:
        verb = "accept" if status is TaskStatus.ACCEPTED else "reject"
        if self._status is not TaskStatus.RUNNING or self._settle is None:
            where = f" (attempt {len(self._attempts)} on {self.provider_name!r})" if self._attempts else ""
            raise TaskError(
                f"cannot {verb} {self!r}: it is {self._status.value}{where}; a task is accepted or rejected "
                "once, by the worker it was given to, while it runs"
            )
        if status is TaskStatus.ACCEPTED:
            self._result = result
        self._settle(self, status, reason, retry)

    def _bind(self, job: Job[D, R], settle: Callable[[Task[D, R], TaskStatus, str | None, bool], None]) -> None:
        """Make the task part of ``job``; ``TaskError`` when it already belongs to another."""
        if self._job is not None and self._job is not job:
            raise TaskError(
                f"{self!r} already belongs to job {self._job.id!r}; give each execute_tasks call new Task objects"
            )
        self._job = job
        self._settle = settle

    def _begin(self, provider_id: str, provider_name: str) -> TaskAttempt:
        attempt = TaskAttempt(provider_id=provider_id, provider_name=provider_name, started=utc_now())
        self._attempts.append(attempt)
        self._status = TaskStatus.RUNNING
        return attempt

    def _end_attempt(self, status: TaskStatus, outcome: str, reason: str | None) -> None:
        attempt = self._attempts[-1]
        attempt.finished = utc_now()
        attempt.outcome = outcome
        attempt.reason = reason
        self._status = status
