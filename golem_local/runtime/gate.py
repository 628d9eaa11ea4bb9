"""How many sandboxes a node sets up at once: a bounded gate, so that hundreds of activities asked to start
together queue instead of starting together.

Setting a sandbox up is work for the machine, not for the node's event loop: formatting and mounting its
storage, starting bubblewrap and the agent's interpreter. Started all at once, 600 of them are 600 processes
competing for two cores: every one of them takes seconds, the node's own loop gets a slice of the CPU only now
and then (it answered state queries seconds late) and agents miss their readiness bound. Through the gate,
at most :attr:`StartGate.slots` sandboxes are being set up at any moment and each takes what it takes alone;
the others wait their turn, their activities showing the pending transition (``Initialized → Deployed``,
``Deployed → Ready``) meanwhile, as a busy provider's would.

A ``start`` waiting for a slot goes before a waiting ``deploy``: an activity that was deployed is started next,
rather than behind every deploy asked for after it (which would make every instance ready only at the end).
Within each kind, first come, first served.
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

__all__ = ["StartGate", "default_start_slots"]

Kind = Literal["start", "deploy"]


def default_start_slots() -> int:
    """Twice the CPUs this process may use: enough to keep them busy while some sandboxes wait on the disk
    or on the kernel (``GOLEM_LOCAL_SANDBOX_STARTS`` sets another number)."""
    setting = os.environ.get("GOLEM_LOCAL_SANDBOX_STARTS", "")
    if setting:
        try:
            slots = int(setting)
        except ValueError:
            slots = 0
        if slots < 1:
            raise ValueError(f"GOLEM_LOCAL_SANDBOX_STARTS={setting!r} is not a whole number of 1 or more")
        return slots
    return 2 * len(os.sched_getaffinity(0))


class StartGate:
    """At most ``slots`` sandboxes set up at once (see the module docstring); one gate per event loop."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"a start gate needs 1 slot or more, not {slots}")
        self.slots = slots
        self._busy = 0
        self._waiting: dict[Kind, collections.deque[asyncio.Future[None]]] = {
            "start": collections.deque(),
            "deploy": collections.deque(),
        }

    @property
    def busy(self) -> int:
        """Sandboxes being set up now."""
        return self._busy

    @property
    def waiting(self) -> int:
        """Deploys and starts waiting for a slot."""
        return sum(len(queue) for queue in self._waiting.values())

    @asynccontextmanager
    async def slot(self, kind: Kind) -> AsyncIterator[None]:
        """Hold one slot for a ``deploy`` or a ``start`` for the body of the ``async with``."""
        if self._busy < self.slots and not any(self._waiting.values()):
            self._busy += 1
        else:
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            queue = self._waiting[kind]
            queue.append(turn)
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._release()  # the slot was handed over as the waiter was cancelled: pass it on
                elif turn in queue:
                    queue.remove(turn)
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        """Hand the slot to the next waiter (starts first), or free it."""
        for queue in self._waiting.values():
            while queue:
                turn = queue.popleft()
                if not turn.done():
                    turn.set_result(None)
                    return
        self._busy -= 1
