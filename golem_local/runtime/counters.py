"""``test-counters``: a runtime with a usage counter of its own, for requestors that price custom counters.

It plays the part of the runtime yapapi's custom-usage-counter example asks for (``golem.runtime.name`` =
``test-counters``): no image, two commands, and the counter ``golem.usage.custom.counter``.

* ``sleep MS`` writes ``sleeping MS ms``, waits ``MS`` milliseconds, writes ``slept MS ms`` and exits 0;
* ``stop`` ends the runtime (the activity becomes ``Unresponsive``, as when a real runtime shuts itself down);
* anything else fails with an error naming the two commands.

``golem.usage.custom.counter`` is the number of seconds its ``sleep`` commands have slept so far, the one in
progress included (in whole milliseconds), so that a requestor can check a bill against what it asked for.
Its price per unit is :data:`DEFAULT_COUNTER_PRICE` unless the provider's ``ProviderSpec.counter_prices`` says
otherwise.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal

from golem_local.runtime.base import OfferTemplate, OutputSink, RunProcess, RuntimeFailure
from golem_local.runtime.idle import IdleRuntime
from golem_local.runtime.registry import RuntimeContext, RuntimeDescriptor

__all__ = ["COUNTER", "DEFAULT_COUNTER_PRICE", "TEST_COUNTERS", "CountersRuntime"]

COUNTER = "golem.usage.custom.counter"
"""The runtime's own usage counter: seconds slept by its ``sleep`` commands."""
DEFAULT_COUNTER_PRICE = Decimal("0.0001")
"""What a provider asks per unit of :data:`COUNTER` by default (GLM per second slept)."""
MAX_SLEEP_MS = 24 * 3600 * 1000


class CountersRuntime(IdleRuntime):
    """The ``test-counters`` runtime (see the module docstring); one per activity."""

    def __init__(self) -> None:
        self._slept_ms = 0
        self._sleeping_since: dict[int, float] = {}  # id of a running sleep -> when it began (monotonic)
        self._keys = itertools.count()
        self._ended = asyncio.Event()
        self._end_reason = ""

    async def start(self, args: Sequence[str]) -> None:
        """Nothing to start: the counter is 0 until a ``sleep`` runs."""

    async def run_command(self, process: RunProcess, sink: OutputSink) -> int:
        """``sleep MS`` or ``stop``; anything else raises :class:`RuntimeFailure` naming both."""
        if self._ended.is_set():
            raise RuntimeFailure(f"the test-counters runtime has ended ({self._end_reason}); create a new activity")
        if process.entry_point == "sleep":
            return await self._sleep(process.args, sink)
        if process.entry_point == "stop":
            sink("stdout", b"stopping the runtime\n")
            self._end_reason = "stopped by its stop command"
            self._ended.set()
            return 0
        command = " ".join((process.entry_point, *process.args))
        raise RuntimeFailure(f"test-counters runs `sleep MS` and `stop` only, not `{command}`")

    async def _sleep(self, args: Sequence[str], sink: OutputSink) -> int:
        if len(args) != 1 or not args[0].isdigit() or int(args[0]) > MAX_SLEEP_MS:
            raise RuntimeFailure(
                f"sleep takes one argument, whole milliseconds from 0 to {MAX_SLEEP_MS}, not {list(args)!r}"
            )
        delay_ms = int(args[0])
        sink("stdout", f"sleeping {delay_ms} ms\n".encode())
        key = next(self._keys)
        began = self._sleeping_since[key] = time.monotonic()
        done = False
        try:
            await asyncio.sleep(delay_ms / 1000)
            done = True
        finally:  # a killed sleep counts what it slept
            del self._sleeping_since[key]
            self._slept_ms += delay_ms if done else min(delay_ms, int((time.monotonic() - began) * 1000))
        sink("stdout", f"slept {delay_ms} ms\n".encode())
        return 0

    def counters(self) -> Mapping[str, float]:
        """``golem.usage.custom.counter``: seconds slept so far."""
        now = time.monotonic()
        running = sum(int((now - began) * 1000) for began in self._sleeping_since.values())
        return {COUNTER: (self._slept_ms + running) / 1000}

    async def wait_ended(self) -> str:
        """Return once a ``stop`` command has ended the runtime."""
        await self._ended.wait()
        return self._end_reason

    async def stop(self) -> None:
        """End the runtime; a sleep still running is killed by the exe-unit before."""
        self._ended.set()

    def offer(self) -> OfferTemplate:
        """The runtime's name and version."""
        return OfferTemplate(properties={"golem.runtime.name": "test-counters", "golem.runtime.version": "0.1.0"})


def _make(_context: RuntimeContext) -> CountersRuntime:
    return CountersRuntime()


TEST_COUNTERS = RuntimeDescriptor(
    name="test-counters",
    factory=_make,
    version="0.1.0",
    description="runs `sleep MS` and `stop`; counts the seconds slept in golem.usage.custom.counter",
    counters={COUNTER: DEFAULT_COUNTER_PRICE},
)
"""The descriptor of the ``test-counters`` runtime (built in)."""
