"""The services the benchmarks run: one that only starts, and one that sends ``/bin/true`` batches on demand."""

from __future__ import annotations

import asyncio
import time

from golem_api import Service, VmPayload
from golem_api.payload import Payload
from golem_api.services.service import Handler

__all__ = ["COMMAND", "BatchLoop", "Probe", "Trivial"]

COMMAND = "/bin/true"
"""The command of every one-command batch, on the provider and, for the baselines, on the host."""


class Trivial(Service):
    """The trivial service: the default ``start`` (deploy, start) and ``run`` (wait to be stopped)."""

    @staticmethod
    async def get_payload() -> Payload | None:
        """The default image of the network: nothing to download."""
        return VmPayload(min_mem_gib=0.5)


class Probe:
    """What the benchmark and one :class:`BatchLoop` instance share: how many batches to send, their times.

    :meth:`measure` asks for ``count`` batches and returns each one's time from ``yield`` to resumption (the
    time a handler waits for a one-command batch), in seconds.
    """

    def __init__(self, commands: int = 1) -> None:
        self.commands = commands  # commands in each batch
        self.times: list[float] = []
        self.wanted = 0
        self.go = asyncio.Event()
        self.done = asyncio.Event()

    async def measure(self, count: int, timeout: float) -> list[float]:
        """Have the instance send ``count`` batches, one after the other; their times, within ``timeout`` s."""
        self.times = []
        self.wanted = count
        self.done.clear()
        self.go.set()
        await asyncio.wait_for(self.done.wait(), timeout)
        return list(self.times)

    def record(self, seconds: float) -> None:
        """One batch took ``seconds``; stop after the wanted number."""
        self.times.append(seconds)
        if len(self.times) >= self.wanted:
            self.go.clear()
            self.done.set()


class BatchLoop(Trivial):
    """A trivial service whose ``run`` sends batches of ``probe.commands`` commands (``/bin/true``) whenever its
    probe asks."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    async def run(self) -> Handler:
        """Wait for the probe's go, send a batch, record its time; forever (until stopped)."""
        while True:
            await self.probe.go.wait()
            script = self.ctx.new_script(timeout=30 + self.probe.commands)
            for _ in range(self.probe.commands):
                script.run(COMMAND)
            began = time.perf_counter()
            yield script
            self.probe.record(time.perf_counter() - began)
