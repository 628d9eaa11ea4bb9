"""The Task API: ``Golem.execute_tasks(worker, tasks, payload)`` runs a worker over many tasks on many providers.

``Task`` (:mod:`golem_api.tasks.task`) is one unit of work; :class:`~golem_api.tasks.executor.Job` is what
``execute_tasks`` returns, an asynchronous iterator of the accepted tasks with a :class:`TaskSummary`.
"""

from golem_api.tasks.executor import Job, ProviderTasks, TaskSummary
from golem_api.tasks.task import Task, TaskAttempt, TaskStatus

__all__ = ["Job", "ProviderTasks", "Task", "TaskAttempt", "TaskStatus", "TaskSummary"]
