"""Time for the local node's metering: the loop's clock, or a clock that tests move by hand.

:class:`ManualTime` lets a test bill an activity for exactly N seconds without sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Protocol

__all__ = [
    "LoopTime",
    "ManualTime",
    "TimeSource",
]


class TimeSource(Protocol):
    """Monotonic seconds and a way to wait for a moment on that clock."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    async def sleep_until(self, moment: float) -> None:
        """Return once :meth:`monotonic` has reached ``moment`` (at once if it has already)."""
        ...


class LoopTime:
    """Real time: the event loop's clock and ``asyncio.sleep``."""

    def monotonic(self) -> float:
        """The running loop's clock."""
        return asyncio.get_running_loop().time()

    async def sleep_until(self, moment: float) -> None:
        """``asyncio.sleep`` for what is left until ``moment``."""
        await asyncio.sleep(max(moment - self.monotonic(), 0.0))


class ManualTime:
    """Time that moves only when :meth:`advance` is called: deterministic metering for tests."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        """The current manual time."""
        return self.now

    async def sleep_until(self, moment: float) -> None:
        """Wait until :meth:`advance` has moved the time to ``moment``."""
        if moment <= self.now:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (moment, next(self._order), waiter))
        await waiter

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose moment has come."""
        self.now += seconds
        while self._sleepers and self._sleepers[0][0] <= self.now:
            _, _, waiter = heapq.heappop(self._sleepers)
            if not waiter.done():
                waiter.set_result(None)
