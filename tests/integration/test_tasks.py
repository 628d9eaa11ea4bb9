"""The Task API end to end on the embedded local network: ``Golem.execute_tasks`` with workers written as yapapi's.

Every test runs real workers on real local providers (bubblewrap sandboxes, real HTTP). Waits are bounded and
synchronised on events (task and worker events, futures set by workers), never on sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from golem_api import (
    CommandExecutionError,
    ConfigurationError,
    Golem,
    JobTimeoutError,
    LocalNetworkConfig,
    Task,
    TaskError,
    TaskFailedError,
    TaskStatus,
    VmPayload,
    WorkContext,
)
from golem_api.events import (
    AgreementTerminated,
    Event,
    JobFinished,
    TaskRejected,
    TaskStarted,
    WorkerFinished,
)

pytestmark = pytest.mark.integration

BOUND = 30.0  # seconds any single wait here may take
NETWORK = LocalNetworkConfig.with_providers(3)
PAYLOAD = VmPayload(min_mem_gib=0.5, min_storage_gib=1.0)


def golem() -> Golem:
    return Golem(budget=1.0, local_network=NETWORK, invoice_timeout=10)


def recorder(engine: Golem, *kinds: type[Event]) -> list[Any]:
    seen: list[Any] = []
    engine.bus.subscribe(seen.append, *kinds)
    return seen


async def collect(job: AsyncIterator[Task[Any, Any]]) -> list[Task[Any, Any]]:
    async def run() -> list[Task[Any, Any]]:
        return [task async for task in job]

    return await asyncio.wait_for(run(), BOUND)


def assert_all_settled(engine: Golem) -> None:
    """Every agreement of the run ended and was invoiced and paid once."""
    node = engine.local_node
    assert node is not None
    assert engine.agreements, "the run made no agreement"
    assert all(agreement.terminated for agreement in engine.agreements)
    assert [invoice.accept_calls for invoice in node.ledger.invoices()] == [1] * len(engine.agreements)


async def test_the_hello_world_worker_runs_as_yapapi_wrote_it() -> None:
    async def worker(context: WorkContext, tasks: AsyncIterator[Task[None, Any]]) -> Any:
        async for task in tasks:
            script = context.new_script()
            future_result = script.run("/bin/sh", "-c", "date")

            yield script

            task.accept_result(result=await future_result)

    tasks: list[Task[None, Any]] = [Task(data=None)]
    engine = golem()
    async with engine:
        finished = recorder(engine, JobFinished)
        completed = await collect(engine.execute_tasks(worker, tasks, payload=PAYLOAD))

    assert [task.id for task in completed] == [tasks[0].id]
    (task,) = completed
    assert task.status is TaskStatus.ACCEPTED
    assert "UTC" in task.result.stdout
    assert task.running_time is not None
    assert task.running_time.total_seconds() >= 0
    assert task.provider_name is not None
    assert task.provider_name.startswith("local-provider-")
    (event,) = finished
    assert (event.accepted, event.rejected, event.retried, event.failed, event.error) == (1, 0, 0, 0, None)
    assert_all_settled(engine)


async def test_tasks_spread_over_the_workers_and_the_summary_counts_them_per_provider() -> None:
    providers_seen: set[str] = set()
    all_started = asyncio.Event()

    def on_started(event: Event) -> None:
        assert isinstance(event, TaskStarted)
        providers_seen.add(event.provider_name)
        if len(providers_seen) == 3:
            all_started.set()

    async def worker(ctx: WorkContext, tasks: AsyncIterator[Task[int, int]]) -> Any:
        async for task in tasks:
            await asyncio.wait_for(all_started.wait(), BOUND)  # each worker holds a task until all three do
            script = ctx.new_script(timeout=BOUND)
            square = script.run("/bin/sh", "-c", f"echo $(({task.data} * {task.data}))")
            yield script
            task.accept_result(int((await square).stdout or ""))

    engine = golem()
    async with engine:
        engine.bus.subscribe(on_started, TaskStarted)
        job = engine.execute_tasks(worker, [Task(data=n) for n in range(9)], PAYLOAD, max_workers=3)
        completed = await collect(job)

    assert sorted(task.result for task in completed if task.result is not None) == [n * n for n in range(9)]
    summary = job.summary
    assert (summary.accepted, summary.rejected, summary.retried, summary.failed) == (9, 0, 0, 0)
    assert summary.workers == 3
    assert sorted(summary.providers) == ["local-provider-1", "local-provider-2", "local-provider-3"]
    assert all(figures.accepted >= 1 for figures in summary.providers.values())
    assert sum(figures.accepted for figures in summary.providers.values()) == 9
    assert "Provider 'local-provider-1' computed" in str(summary)
    assert_all_settled(engine)


async def test_a_task_rejected_with_retry_runs_again_on_another_provider() -> None:
    async def worker(ctx: WorkContext, tasks: AsyncIterator[Task[str, str]]) -> Any:
        async for task in tasks:
            script = ctx.new_script(timeout=BOUND)
            run = script.run("/bin/echo", task.data)
            yield script
            if task.data == "picky" and len(task.attempts) == 1:
                task.reject_result("not good enough the first time", retry=True)
            else:
                task.accept_result((await run).stdout)

    picky, plain = Task(data="picky"), Task(data="plain")
    engine = golem()
    async with engine:
        rejections = recorder(engine, TaskRejected)
        job = engine.execute_tasks(worker, [picky, plain], PAYLOAD, max_workers=1)
        completed = await collect(job)

    assert {task.data for task in completed} == {"picky", "plain"}
    first, second = picky.attempts
    assert (first.outcome, first.reason) == ("rejected", "not good enough the first time")
    assert second.outcome == "accepted"
    assert second.provider_id != first.provider_id, "a retried task goes to another provider when one is at hand"
    assert [(e.task_id, e.retry) for e in rejections] == [(picky.id, True)]
    assert (job.summary.accepted, job.summary.retried, job.summary.workers) == (2, 1, 2)
    assert_all_settled(engine)


async def test_a_task_whose_worker_fails_is_tried_again_elsewhere() -> None:
    async def worker(ctx: WorkContext, tasks: AsyncIterator[Task[None, str]]) -> Any:
        async for task in tasks:
            script = ctx.new_script(timeout=BOUND)
            command = "exit 3" if len(task.attempts) == 1 else "echo fine"
            run = script.run("/bin/sh", "-c", command)
            yield script  # the failed command raises here, and the worker does not catch it
            task.accept_result((await run).stdout)

    task = Task(data=None)
    engine = golem()
    async with engine:
        finished = recorder(engine, WorkerFinished)
        job = engine.execute_tasks(worker, [task], PAYLOAD, max_workers=1)
        completed = await collect(job)

    assert completed == [task]
    assert task.result == "fine\n"
    first, second = task.attempts
    assert first.outcome == "failed"
    assert "CommandExecutionError" in (first.reason or "")
    assert second.provider_id != first.provider_id
    failed = [e for e in finished if e.error]
    assert len(failed) == 1
    assert failed[0].provider_id == first.provider_id
    assert (job.summary.failed_workers, job.summary.retried) == (1, 1)
    assert_all_settled(engine)


async def test_a_task_that_fails_on_every_attempt_stops_the_job_with_each_reason() -> None:
    async def worker(ctx: WorkContext, tasks: AsyncIterator[Task[None, None]]) -> Any:
        async for _task in tasks:
            script = ctx.new_script(timeout=BOUND)
            script.run("/bin/sh", "-c", "echo 'no input file' >&2; exit 2")
            yield script

    task = Task(data=None)
    engine = golem()
    async with engine:
        job = engine.execute_tasks(worker, [task, Task(data=None)], PAYLOAD, max_workers=1, task_attempts=2)
        with pytest.raises(TaskFailedError) as raised:
            await collect(job)
        assert job.done

    error = raised.value
    assert error.task is task
    assert len(error.reasons) == 2
    assert all("no input file" in reason for reason in error.reasons)
    assert "task_attempts" in str(error)
    assert task.status is TaskStatus.FAILED
    assert job.summary.failed == 1
    assert_all_settled(engine)


async def test_future_results_and_wait_for_results_false_in_a_worker() -> None:
    async def worker(ctx: WorkContext, tasks: AsyncIterator[Task[None, list[str]]]) -> Any:
        async for task in tasks:
            early = ctx.new_script(timeout=BOUND, wait_for_results=False)
            early.run("/bin/sh", "-c", "echo first > /golem/work/order")
            pending = yield early  # resumes once the provider has the batch
            script = ctx.new_script(timeout=BOUND)
            script.run("/bin/sh", "-c", "echo second >> /golem/work/order")
            script.run("/bin/cat", "/golem/work/order")
            future_results = yield script
            results = await future_results
            (early_result,) = await pending
            assert early_result.success
            task.accept_result((results[1].stdout or "").split())

    engine = golem()
    async with engine:
        completed = await collect(engine.execute_tasks(worker, [Task(data=None)], PAYLOAD))

    assert completed[0].result == ["first", "second"], "batches run in the order they were sent"


async def test_a_worker_that_closes_its_tasks_leaves_the_provider_and_a_new_worker_takes_over() -> None:
    scanned: list[str] = []

    async def worker(ctx: WorkContext, tasks: Any) -> Any:
        async for task in tasks:
            script = ctx.new_script(timeout=BOUND)
            script.run("/bin/true")
            yield script
            scanned.append(ctx.provider_id)
            task.accept_result(ctx.provider_name)
            await tasks.aclose()  # as yapapi's scan example: no more tasks on this provider

    engine = golem()
    async with engine:
        ended = recorder(engine, AgreementTerminated)
        job = engine.execute_tasks(worker, [Task(data=n) for n in range(4)], PAYLOAD, max_workers=2)
        completed = await collect(job)

    assert len(completed) == 4
    assert job.summary.workers == 4, "one worker (and one agreement) per task"
    assert len(ended) >= 4
    assert_all_settled(engine)


async def test_an_endless_generator_of_tasks_is_read_as_needed_and_the_job_closes_early() -> None:
    read: list[int] = []

    def endless() -> Any:
        for n in itertools.count():
            read.append(n)
            yield Task(data=n)

    async def worker(ctx: WorkContext, tasks: AsyncIterator[Task[int, int]]) -> Any:
        async for task in tasks:
            script = ctx.new_script(timeout=BOUND)
            script.run("/bin/true")
            yield script
            task.accept_result(task.data)

    engine = golem()
    async with engine:
        done = []
        async with engine.execute_tasks(worker, endless(), PAYLOAD, max_workers=2) as job:
            async for task in job:
                done.append(task.result)
                if len(done) == 5:
                    break
        assert job.done

    assert len(done) == 5
    assert len(read) <= len(done) + 2 * 2 + 2, f"read {len(read)} tasks ahead of {len(done)} done"
    assert_all_settled(engine)


async def test_an_asynchronous_source_of_tasks_is_read_as_needed_and_closed_with_the_job() -> None:
    closed = asyncio.Event()

    async def source() -> AsyncIterator[Task[int, int]]:
        try:
            for n in itertools.count():
                yield Task(data=n)
        finally:
            closed.set()

    async def worker(ctx: WorkContext, tasks: AsyncIterator[Task[int, int]]) -> Any:
        async for task in tasks:
            task.accept_result(task.data)
            yield ctx.new_script()

    engine = golem()
    async with engine:
        job = engine.execute_tasks(worker, source(), PAYLOAD, max_workers=1)
        first = await asyncio.wait_for(job.__anext__(), BOUND)
        assert first.result == 0
        await asyncio.wait_for(job.aclose(), BOUND)
        assert closed.is_set(), "the job closes the asynchronous generator it stopped reading"


async def test_workers_that_never_ask_for_a_task_stop_the_job_instead_of_looping() -> None:
    async def worker(ctx: WorkContext, tasks: AsyncIterator[Task[None, None]]) -> Any:
        script = ctx.new_script()
        script.run("/bin/true")
        yield script  # and returns without `async for task in tasks`

    engine = golem()
    async with engine:
        job = engine.execute_tasks(worker, [Task(data=None)], PAYLOAD, max_workers=1, task_attempts=2)
        with pytest.raises(TaskError, match=r"2 workers in a row returned without asking for a task"):
            await collect(job)
    assert len(engine.agreements) == 2, "as many agreements as attempts, no more"
    assert_all_settled(engine)


def sleeping_worker(started: asyncio.Event) -> Any:
    """A worker that sets ``started`` at each task and sleeps a minute on its provider."""

    async def worker(ctx: WorkContext, tasks: AsyncIterator[Task[None, None]]) -> Any:
        async for _task in tasks:
            started.set()
            script = ctx.new_script()
            script.run("/bin/sleep", "60")
            yield script

    return worker


async def test_a_job_left_running_is_stopped_when_golem_exits() -> None:
    started = asyncio.Event()
    worker = sleeping_worker(started)
    engine = golem()
    async with engine:
        job = engine.execute_tasks(worker, [Task(data=None)], PAYLOAD)
        iteration = asyncio.ensure_future(job.__anext__())
        await asyncio.wait_for(started.wait(), BOUND)
    assert job.done
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(iteration, BOUND)
    assert_all_settled(engine)


async def test_a_job_whose_iteration_was_cancelled_still_ends_cleanly() -> None:
    started = asyncio.Event()
    worker = sleeping_worker(started)
    engine = golem()
    async with engine:
        tasks: list[Task[None, None]] = [Task(data=None), Task(data=None)]
        job = engine.execute_tasks(worker, tasks, PAYLOAD, max_workers=2)
        iteration = asyncio.ensure_future(job.__anext__())
        await asyncio.wait_for(started.wait(), BOUND)
        iteration.cancel()
        with pytest.raises(asyncio.CancelledError):
            await iteration
        closing = asyncio.ensure_future(job.aclose())
        closing.cancel()  # a caller cancelled while the job ends does not cut the ending short
        with pytest.raises(asyncio.CancelledError):
            await closing
        await asyncio.wait_for(job.aclose(), BOUND)
        assert job.done
    assert_all_settled(engine)
    assert [task.status for task in tasks] == [TaskStatus.WAITING, TaskStatus.WAITING], "not run to the end"
    ended = [attempt.outcome for task in tasks for attempt in task.attempts]
    assert ended
    assert set(ended) == {"cancelled"}


@pytest.mark.slow  # over a second of real processes and waits (the quick run keeps its minute)
async def test_a_job_that_cannot_finish_in_time_raises_job_timeout_error_saying_why() -> None:
    async def worker(ctx: WorkContext, tasks: AsyncIterator[Task[None, None]]) -> Any:
        async for task in tasks:
            yield ctx.new_script()
            task.accept_result()

    engine = golem()
    async with engine:
        huge = VmPayload(min_mem_gib=4096.0)
        job = engine.execute_tasks(worker, [Task(data=None)], huge, timeout=1.5)
        with pytest.raises(JobTimeoutError) as raised:
            await collect(job)

    assert raised.value.timeout == 1.5
    assert "within its timeout of 1.5 s" in str(raised.value)
    assert isinstance(raised.value, TimeoutError)


async def test_a_worker_may_not_settle_a_task_twice_and_implicit_init_false_leaves_deploy_to_it() -> None:
    problems: list[str] = []

    async def worker(ctx: WorkContext, tasks: AsyncIterator[Task[None, str]]) -> Any:
        async for task in tasks:
            script = ctx.new_script(timeout=BOUND)
            script.run("/bin/true")
            try:
                yield script
            except CommandExecutionError as exc:  # not deployed: the provider refuses `run`
                problems.append(exc.command)
            script = ctx.new_script(timeout=BOUND)
            script.deploy()
            script.start()
            yield script
            task.accept_result("deployed by the worker")
            try:
                task.accept_result("again")
            except TaskError as exc:
                problems.append(str(exc))

    engine = golem()
    async with engine:
        completed = await collect(engine.execute_tasks(worker, [Task(data=None)], PAYLOAD, implicit_init=False))

    assert completed[0].result == "deployed by the worker"
    assert problems[0] == "run"
    assert "cannot accept" in problems[1]
    assert "it is accepted" in problems[1]


async def test_execute_tasks_refuses_bad_arguments_before_anything_runs() -> None:
    async def worker(ctx: WorkContext, tasks: AsyncIterator[Task[None, None]]) -> Any:
        yield ctx.new_script()

    async def not_a_generator(ctx: WorkContext, tasks: AsyncIterator[Task[None, None]]) -> None:
        return None

    engine = golem()
    async with engine:
        with pytest.raises(TypeError, match="asynchronous generator function"):
            engine.execute_tasks(not_a_generator, [Task(data=None)], PAYLOAD)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="not one task"):
            engine.execute_tasks(worker, Task(data=None), PAYLOAD)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="max_workers"):
            engine.execute_tasks(worker, [], PAYLOAD, max_workers=0)
        with pytest.raises(ConfigurationError, match="timeout"):
            engine.execute_tasks(worker, [], PAYLOAD, timeout=-1)
        with pytest.raises(ConfigurationError, match="payload"):
            engine.execute_tasks(worker, [], None)  # type: ignore[arg-type]
        engine.execute_tasks(worker, [], PAYLOAD, job_id="render")
        with pytest.raises(ConfigurationError, match="'render' is already used"):
            engine.execute_tasks(worker, [], PAYLOAD, job_id="render")
        with pytest.raises(TaskError, match=r"takes Task objects.*Task\(data=value\)"):
            await collect(engine.execute_tasks(worker, [1, 2], PAYLOAD))  # type: ignore[list-item]
        # No task, nothing to do: the job ends without any agreement.
        assert await collect(engine.execute_tasks(worker, [], PAYLOAD)) == []
        assert engine.agreements == []
