"""Runtimes that run nothing: the default of a bare :class:`~golem_local.activity.ActivityHub`, the
``activity_runtime="idle"`` local network (a requestor measured at scale), and the runtime of an activity
whose payload cannot run at all."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from golem_local.runtime.base import (
    Deployment,
    DeploySettings,
    OfferTemplate,
    OutputSink,
    RunProcess,
    RuntimeFailure,
)

if TYPE_CHECKING:
    from golem_local.safefs import VolumeFiles

__all__ = [
    "IdleRuntime",
    "UnavailableRuntime",
]


class IdleRuntime:
    """A runtime that runs nothing and uses no CPU: deploy and start succeed, commands exit 0 with no output.

    The default of an :class:`ActivityHub` built without a ``runtime_factory`` (metering and billing tests), and
    the runtime of a local network with ``activity_runtime="idle"`` (the requestor measured at scale).
    """

    async def deploy(self, settings: DeploySettings) -> Deployment:
        """An empty deployment: no volumes."""
        return Deployment(start_mode="empty", volumes=())

    async def start(self, args: Sequence[str]) -> None:
        """Nothing to start."""

    async def run_command(self, process: RunProcess, sink: OutputSink) -> int:
        """Run nothing, write nothing, succeed: exit code 0."""
        return 0

    async def stop(self) -> None:
        """Nothing to stop."""

    def cpu_seconds(self) -> float:
        """Always 0.0."""
        return 0.0

    def counters(self) -> Mapping[str, float]:
        """No counters of its own."""
        return {}

    def exit_note(self) -> str | None:
        """Nothing is ever limited."""
        return None

    def container_path(self, path: str) -> Path:
        """Refuse: there are no volumes."""
        raise RuntimeFailure(f"{path} is not in a volume: this activity's runtime has no volumes")

    def volume_files(self) -> VolumeFiles:
        """Refuse: there are no volumes."""
        raise RuntimeFailure("this activity's runtime has no volumes: files cannot go to or from it")

    async def wait_ended(self) -> str:
        """Never returns: nothing runs, so nothing ends by itself."""
        await asyncio.get_running_loop().create_future()
        return "unreachable"  # pragma: no cover

    def offer(self) -> OfferTemplate:
        """Nothing to add to offers."""
        return OfferTemplate()

    async def self_test(self) -> None:
        """Always works."""


class UnavailableRuntime(IdleRuntime):
    """The runtime of an activity whose payload cannot run (say, an unknown image): ``deploy`` fails with ``reason``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def deploy(self, settings: DeploySettings) -> Deployment:
        """Fail with the reason."""
        raise RuntimeFailure(self.reason)
