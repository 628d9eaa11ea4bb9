"""A long-poll event log: the shape behind every ``…Events?afterTimestamp&timeout&maxEvents`` endpoint.

Each appended event gets a timestamp strictly later than the one before it, so that ``afterTimestamp``
(strictly after) never skips or repeats an event even when two are appended within one clock tick.

The timestamps are therefore sorted: a read finds its first event by bisection, so a poll costs what it
returns, not the length of the log. The log does not grow forever: :meth:`EventLog.forget_until` drops what
every reader has read (a market subscription has one reader, which says so as it reads), and ``keep_for``
drops events older than that many seconds as new ones come (for logs whose readers are anonymous, such as
the payment events: a reader further behind than that misses the events in between).
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from golem_shared.tasks import wait_event
from golem_shared.timestamps import utc_now

__all__ = [
    "EventLog",
    "StrictClock",
]

T = TypeVar("T")


class StrictClock:
    """UTC timestamps that never repeat and never go backwards."""

    def __init__(self) -> None:
        self._last = utc_now()

    def now(self) -> datetime:
        moment = utc_now()
        if moment <= self._last:
            moment = self._last + timedelta(microseconds=1)
        self._last = moment
        return moment


class EventLog(Generic[T]):
    """Timestamped events, read by long-polling callers with ``after`` / ``timeout`` / ``max_events``.

    ``keep_for``: seconds an event is kept after it was appended (``None``: until :meth:`forget_until`).
    """

    _COMPACT_AT = 1024  # forgotten entries kept at the front of the lists until there are this many (amortised)

    def __init__(self, clock: StrictClock, *, keep_for: float | None = None) -> None:
        self._clock = clock
        self._keep_for = None if keep_for is None else timedelta(seconds=keep_for)
        # Two parallel lists, sorted by moment; entries before self._start are forgotten (dropped in bulk).
        self._moments: list[datetime] = []
        self._events: list[T] = []
        self._start = 0
        # Swapped for a fresh one on every append: a waiter holds the one that was current when it looked.
        self._appended = asyncio.Event()

    def __len__(self) -> int:
        """How many events the log holds (not forgotten)."""
        return len(self._events) - self._start

    def append(self, make: Callable[[datetime], T]) -> T:
        """Append the event that ``make`` builds from its timestamp, and wake the waiting readers."""
        moment = self._clock.now()
        event = make(moment)
        self._moments.append(moment)
        self._events.append(event)
        if self._keep_for is not None:
            self.forget_until(moment - self._keep_for)
        self._appended.set()
        self._appended = asyncio.Event()
        return event

    def forget_until(self, moment: datetime | None) -> None:
        """Drop the events at or before ``moment`` (every reader has read them)."""
        if moment is None:
            return
        self._start = max(self._start, bisect.bisect_right(self._moments, moment, lo=self._start))
        if self._start >= self._COMPACT_AT and 2 * self._start >= len(self._events):
            del self._moments[: self._start]
            del self._events[: self._start]
            self._start = 0

    def _select(self, after: datetime | None, max_events: int, accept: Callable[[T], bool]) -> list[T]:
        first = self._start if after is None else bisect.bisect_right(self._moments, after, lo=self._start)
        found: list[T] = []
        events = self._events
        for position in range(first, len(events)):
            event = events[position]
            if accept(event):
                found.append(event)
                if len(found) >= max_events:
                    break
        return found

    async def collect(
        self,
        *,
        after: datetime | None,
        timeout: float,
        max_events: int,
        accept: Callable[[T], bool] = lambda _: True,
    ) -> list[T]:
        """Events later than ``after`` that ``accept`` allows, waiting up to ``timeout`` s for the first."""
        found = self._select(after, max_events, accept)
        if found or timeout <= 0:
            return found
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not found:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if not await wait_event(self._appended, remaining):
                break
            found = self._select(after, max_events, accept)
        return found
