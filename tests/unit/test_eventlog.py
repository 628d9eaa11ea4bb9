"""The node's long-poll event log: reads by bisection on the timestamps, and a log that does not grow forever."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from golem_local.eventlog import EventLog, StrictClock

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


class SteppedClock(StrictClock):
    """One second later on every reading."""

    def __init__(self) -> None:
        super().__init__()
        self.moment = START

    def now(self) -> datetime:
        self.moment += timedelta(seconds=1)
        return self.moment


def at(seconds: int) -> datetime:
    return START + timedelta(seconds=seconds)


async def test_a_read_gets_the_events_strictly_after_its_timestamp_in_order_up_to_max_events() -> None:
    log: EventLog[int] = EventLog(SteppedClock())
    for number in range(1, 11):
        log.append(lambda moment, number=number: number)  # event n has the moment START + n s

    assert await log.collect(after=None, timeout=0, max_events=100) == list(range(1, 11))
    assert await log.collect(after=at(7), timeout=0, max_events=100) == [8, 9, 10]
    assert await log.collect(after=at(7) - timedelta(microseconds=1), timeout=0, max_events=2) == [7, 8]
    assert await log.collect(after=at(2), timeout=0, max_events=3, accept=lambda n: n % 2 == 0) == [4, 6, 8]
    assert await log.collect(after=at(10), timeout=0, max_events=100) == []


async def test_what_every_reader_has_read_is_forgotten_and_reads_after_it_are_unchanged() -> None:
    log: EventLog[int] = EventLog(SteppedClock())
    for number in range(1, 5001):
        log.append(lambda moment, number=number: number)

    log.forget_until(at(3000))  # past the compaction threshold: the lists are cut

    assert len(log) == 2000
    assert await log.collect(after=None, timeout=0, max_events=3) == [3001, 3002, 3003]
    assert await log.collect(after=at(4997), timeout=0, max_events=100) == [4998, 4999, 5000]
    log.forget_until(at(10))  # earlier than what is forgotten already: nothing changes
    assert len(log) == 2000
    log.forget_until(None)
    assert len(log) == 2000


async def test_keep_for_bounds_the_log_to_the_events_of_the_last_seconds() -> None:
    log: EventLog[int] = EventLog(SteppedClock(), keep_for=100)
    for number in range(1, 10_001):
        log.append(lambda moment, number=number: number)

    assert len(log) == 100  # the events of the last 100 s, however many came before
    assert await log.collect(after=None, timeout=0, max_events=1) == [9901]
    assert await log.collect(after=at(9998), timeout=0, max_events=100) == [9999, 10_000]
