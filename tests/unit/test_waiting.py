"""``wait_event`` and ``within``: bounded waits that never lose a cancellation (``asyncio.wait_for`` does before
Python 3.12 when the event is set as the cancellation arrives: a cancelled job then went on waiting); and
``finish_first``: clean-up that a cancellation cannot cut half-way, the cancellation kept for after it."""

from __future__ import annotations

import asyncio

import pytest

from golem_shared.tasks import finish_first, wait_event, within


async def _until_waiting(event: asyncio.Event) -> None:
    """Until some task waits on ``event`` (one loop step at a time; no clock involved)."""
    for _ in range(100):
        if event._waiters:  # type: ignore[attr-defined]
            return
        await asyncio.sleep(0)
    raise AssertionError("nobody waited on the event")


async def test_a_cancellation_arriving_as_the_event_is_set_is_not_lost() -> None:
    event = asyncio.Event()
    waiting = asyncio.ensure_future(wait_event(event, 30))
    await _until_waiting(event)
    event.set()  # the inner wait finishes in this very step …
    waiting.cancel()  # … and the cancellation arrives with it
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_it_says_whether_the_event_came_or_the_time_ran_out() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    waiting = asyncio.ensure_future(wait_event(event, 30))
    await _until_waiting(event)
    event.set()
    assert await waiting is True
    assert await wait_event(event, 0) is True  # already set: no wait at all


async def test_within_gives_the_result_times_out_and_never_loses_a_cancellation() -> None:
    event = asyncio.Event()

    async def answer() -> str:
        await event.wait()
        return "answer"

    with pytest.raises(asyncio.TimeoutError):
        await within(answer(), 0.01)
    event.set()
    assert await within(answer(), 30) == "answer"

    gate = asyncio.Event()

    async def gated() -> str:
        await gate.wait()
        return "late"

    waiting = asyncio.ensure_future(within(gated(), 30))
    await _until_waiting(gate)
    gate.set()  # the inner call finishes in this very step …
    waiting.cancel()  # … as the cancellation arrives
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_finish_first_ends_the_clean_up_despite_cancellations_and_then_lets_them_through() -> None:
    release = asyncio.Event()
    steps: list[str] = []

    async def clean_up() -> None:
        steps.append("began")
        await release.wait()
        steps.append("ended")

    task = asyncio.create_task(finish_first(clean_up()))
    await _until_waiting(release)
    for _ in range(3):  # cancelled again and again, as an impatient owner would
        task.cancel()
        await asyncio.sleep(0)
    assert not task.done(), "a cancellation cut the clean-up short"
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps == ["began", "ended"]


async def test_finish_first_gives_the_result_or_the_error_when_not_cancelled() -> None:
    async def five() -> int:
        return 5

    async def broken() -> None:
        raise OSError("umount: target is busy")

    assert await finish_first(five()) == 5
    with pytest.raises(OSError, match="busy"):
        await finish_first(broken())


async def test_a_bound_around_finish_first_becomes_a_timeout_once_the_clean_up_ended() -> None:
    release = asyncio.Event()

    async def clean_up() -> None:
        await release.wait()

    # due at once: the clean-up's waiter is cancelled at its first wait, and waits for it
    task = asyncio.create_task(within(finish_first(clean_up()), 0))
    await _until_waiting(release)
    assert not task.done()
    release.set()
    with pytest.raises(asyncio.TimeoutError):
        await task
