"""A long-poll event log: the shape behind every ``…Events?afterTimestamp&timeout&maxEvents`` endpoint.

Each appended event gets a timestamp strictly later than the one before it, so that ``afterTimestamp``
(strictly after) never skips or repeats an event even when two are appended within one clock tick.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Generic, TypeVar

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
    """Timestamped events, read by long-polling callers with ``after`` / ``timeout`` / ``max_events``."""

    def __init__(self, clock: StrictClock) -> None:
        self._clock = clock
        self._events: list[tuple[datetime, T]] = []
        # Swapped for a fresh one on every append: a waiter holds the one that was current when it looked.
        self._appended = asyncio.Event()

    def append(self, make: Callable[[datetime], T]) -> T:
        """Append the event that ``make`` builds from its timestamp, and wake the waiting readers."""
        moment = self._clock.now()
        event = make(moment)
        self._events.append((moment, event))
        self._appended.set()
        self._appended = asyncio.Event()
        return event

    def _select(self, after: datetime | None, max_events: int, accept: Callable[[T], bool]) -> list[T]:
        found: list[T] = []
        for moment, event in self._events:
            if (after is None or moment > after) and accept(event):
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
            try:
                await asyncio.wait_for(self._appended.wait(), remaining)
            except asyncio.TimeoutError:
                break
            found = self._select(after, max_events, accept)
        return found
