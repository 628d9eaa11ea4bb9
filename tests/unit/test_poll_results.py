"""poll_results takes every new result of each answer: one long-poll per answer, not one per command."""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime, timezone
from typing import Any, cast

import pytest

from golem_api._rest.models import ExeScriptCommandResult
from golem_api.activity._results import poll_results
from golem_api.errors import ActivityError

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def result(index: int, *, ok: bool = True) -> ExeScriptCommandResult:
    return ExeScriptCommandResult(
        index=index, event_date=NOW, result="Ok" if ok else "Error", stdout=f"out {index}", is_batch_finished=False
    )


class FakeActivity:
    """Answers each long-poll with the next of ``answers`` (each: the results the node holds by then)."""

    def __init__(self, answers: list[list[ExeScriptCommandResult]]) -> None:
        self.answers = answers
        self.asked: list[int | None] = []
        self.since: list[int] = []

    async def results(
        self, batch_id: str, command_index: int | None = None, timeout: float | None = None, *, since: int = 0
    ) -> list[ExeScriptCommandResult]:
        self.asked.append(command_index)
        self.since.append(since)
        return [item for item in self.answers[len(self.asked) - 1] if item.index >= since]


async def test_one_answer_holding_every_result_settles_the_whole_batch() -> None:
    activity = FakeActivity([[result(i) for i in range(1000)]])
    seen: list[ExeScriptCommandResult] = []

    async def on_result(item: ExeScriptCommandResult) -> bool:
        seen.append(item)
        return True

    await poll_results(cast(Any, activity), "batch", 1000, on_result)

    assert activity.asked == [0]  # was 0, 1, …, 999: every answer re-read all the results before it
    assert [item.index for item in seen] == list(range(1000))
    assert seen[999].stdout == "out 999"


async def test_the_next_poll_asks_for_the_first_command_still_missing() -> None:
    answers = [[result(0), result(1)], [result(0), result(1), result(2), result(3)], [result(i) for i in range(5)]]
    activity = FakeActivity(answers)
    seen: list[int] = []

    async def on_result(item: ExeScriptCommandResult) -> bool:
        seen.append(item.index)
        return True

    await poll_results(cast(Any, activity), "batch", 5, on_result)

    assert activity.asked == [0, 2, 4]
    assert activity.since == [0, 2, 4]  # the results it has already are not parsed again
    assert seen == [0, 1, 2, 3, 4]


async def test_a_failed_command_stops_there_even_with_later_results_in_the_answer() -> None:
    activity = FakeActivity([[result(0), result(1, ok=False), result(2)]])
    seen: list[int] = []

    async def on_result(item: ExeScriptCommandResult) -> bool:
        seen.append(item.index)
        return item.success

    await poll_results(cast(Any, activity), "batch", 3, on_result)

    assert seen == [0, 1]


async def test_answers_without_the_awaited_command_are_an_error_after_three() -> None:
    activity = FakeActivity([[result(1)], [result(1)], [result(1)]])

    async def on_result(item: ExeScriptCommandResult) -> bool:
        return True

    with pytest.raises(ActivityError, match="without its result"):
        await poll_results(cast(Any, activity), "batch", 3, on_result)


async def test_results_that_come_at_once_are_polled_for_at_most_once_per_spacing() -> None:
    """A batch of many short commands: every answer comes at once with a few more results; the next poll waits
    for the spacing (counted from the last poll's start), so more results gather on the node for each answer."""
    loop = asyncio.get_running_loop()
    answers = [[result(i) for i in range(end)] for end in (300, 600, 900, 1000)]
    activity = FakeActivity(answers)
    polled: list[float] = []
    original = activity.results

    async def timed(*args: Any, **kwargs: Any) -> list[ExeScriptCommandResult]:
        polled.append(loop.time())
        return await original(*args, **kwargs)

    activity.results = timed  # type: ignore[method-assign]

    async def on_result(item: ExeScriptCommandResult) -> bool:
        return True

    await poll_results(cast(Any, activity), "batch", 1000, on_result, spacing=0.02)

    assert activity.asked == [0, 300, 600, 900]
    clock = 0.002  # asyncio may run a timer this much early (its clock's resolution, and then some)
    assert all(later - earlier >= 0.02 - clock for earlier, later in itertools.pairwise(polled)), polled
