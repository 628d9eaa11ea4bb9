"""What a local runtime is: the lifecycle of the runtime SDK (deploy, start, run/kill command, stop,
self-test, offer), so that the exe-unit can drive any runtime the same way.

The exe-unit (:mod:`golem_local.activity`) owns one runtime per activity and calls it in this order::

    deploy(settings) -> Deployment      once, on the ExeScript ``deploy`` command
    start(args)                         once, on ``start``; the runtime's environment is up afterwards
    run_command(process, sink) -> int   any number of times, concurrently allowed; returns the exit code
    run_chain(processes, sinks)         (a ChainRunner only) consecutive commands run one after the other by the
                                        runtime itself, each the moment the one before it exited with code 0
    exit_note() -> str | None           right after run_command: a limit that ended the command, if one did
    counters() -> {name: value}         any time: the usage counters of its own (beyond duration and CPU)
    kill_command(...)                   by cancelling the ``run_command`` call (kill at once)
    stop()                              once, when the activity ends, before the exe-unit cancels its tasks: a
                                        command may still run; SIGTERM everything, SIGKILL after
                                        ``RuntimeContext.stop_grace`` (idempotent; also before deploy)

``offer()`` and ``self_test()`` may be called at any time, without an activity: the provider publishes
``offer()`` in its offers, and the node calls ``self_test()`` before it serves, so that a missing sandbox
is reported at start-up with what to install, not at the first command.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from attrs import field, frozen

if TYPE_CHECKING:
    from golem_local.safefs import VolumeFiles

__all__ = [
    "DEFAULT_STOP_GRACE",
    "ChainRunner",
    "CommandChain",
    "DeployNetwork",
    "DeploySettings",
    "Deployment",
    "FlowControl",
    "NetworkJoiner",
    "NetworkLease",
    "OfferTemplate",
    "OutputSink",
    "RunProcess",
    "Runtime",
    "RuntimeFailure",
    "Volume",
    "bounded_stop",
]


DEFAULT_STOP_GRACE = 5.0
"""Seconds an activity's processes get between SIGTERM and SIGKILL when it ends, unless its provider's
``ProviderSpec.stop_grace`` says otherwise (the daemon's exe-unit's ``PROCESS_KILL_TIMEOUT_SECONDS`` default)."""


class RuntimeFailure(Exception):
    """A runtime could not do what it was asked; the exe-unit turns the message into an Error result.

    Not part of the public ``GolemError`` tree: it never leaves the local node; the requestor sees
    its message in the failed command's result.
    """


@frozen
class Volume:
    """A writable directory of the activity: ``path`` inside the runtime, ``host_path`` on this machine."""

    path: str
    host_path: Path


@frozen
class DeployNetwork:
    """One entry of the ``deploy`` command's ``net``: the VPN ``network_id`` (range ``ip``/``mask``) the
    activity joins at ``node_ip``; ``nodes`` maps the other members' addresses to their node ids. ``gateway``
    is kept but unused, as by the daemon's exe-unit."""

    network_id: str
    ip: str
    node_ip: str
    mask: str | None = None
    gateway: str | None = None
    nodes: Mapping[str, str] = field(factory=dict)


@frozen
class DeploySettings:
    """What the ExeScript ``deploy`` command carries: ``networks`` (its ``net``) and ``hosts`` (``/etc/hosts``
    entries, name → address) for VPNs; ``progress`` is accepted and ignored."""

    env: Mapping[str, str] = field(factory=dict)
    hostname: str | None = None
    volumes: Sequence[str] = ()  # extra volume paths asked for by the requestor
    raw: Mapping[str, Any] = field(factory=dict)
    networks: Sequence[DeployNetwork] = ()
    hosts: Mapping[str, str] = field(factory=dict)


class NetworkLease(Protocol):
    """An activity's place in its VPNs: the network namespace its sandbox runs in, held until released."""

    @property
    def netns_path(self) -> Path:
        """The namespace to run the sandbox in (``nsenter --net=<path>``)."""
        ...

    async def release(self) -> None:
        """Leave the VPNs and remove the namespace; only after every process of the sandbox has ended."""
        ...


class NetworkJoiner(Protocol):
    """How a runtime joins the VPNs of its ``deploy`` (the node's VPN, bound to one activity)."""

    async def __call__(self, networks: Sequence[DeployNetwork], *, holder_pid: int | None = None) -> NetworkLease:
        """Join ``networks``; raise :class:`RuntimeFailure` saying what is wrong with them.

        The lease's namespace is a new one, or with ``holder_pid`` the network namespace that process already
        runs in (a container's, made by its engine): the VPN links are then added to it."""
        ...


@frozen
class Deployment:
    """The answer of ``deploy``: the start mode and the activity's volumes (for file transfer).

    ``start_mode`` ``"empty"``: the ``start`` command awaits :meth:`Runtime.start`, which returns once the
    environment is up. ``"blocking"`` (the runtime SDK's blocking start): :meth:`Runtime.start` is the runtime's
    server and runs for its whole life; the exe-unit runs it in a task of its own, the ``start`` command succeeds
    at once, ``run_command`` calls may come before the server is up (the runtime makes them wait), and the call
    returning or raising makes the activity ``Unresponsive``.

    Validity: the runtime SDK's ``valid`` (``{"Ok": msg}`` or ``{"Err": msg}``) has no field here. Returning a
    deployment is ``Ok`` (whose message the daemon's exe-unit does not use either); raising
    :class:`RuntimeFailure` with the message is ``Err``: the ``deploy`` command fails with it.
    """

    start_mode: Literal["blocking", "empty"]
    volumes: tuple[Volume, ...]


@frozen
class RunProcess:
    """One ``run`` command: ``entry_point`` with ``args``, ``env`` added to the image's environment."""

    entry_point: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(factory=dict)
    cwd: str | None = None  # default: the image's working directory


class OutputSink(Protocol):
    """Where a running command's output goes, piece by piece, as it arrives."""

    def __call__(self, stream: Literal["stdout", "stderr"], data: bytes) -> None:
        """Take ``data`` written by the command on ``stream``."""
        ...


@runtime_checkable
class FlowControl(Protocol):
    """What an :class:`OutputSink` may also offer: a runtime stops reading a command's output while the sink
    is ``congested()``, until ``wait_room()`` returns (itself bounded), so a command cannot print faster than
    the output is taken."""

    def congested(self) -> bool:
        """Whether the sink wants no more output for now."""
        ...

    async def wait_room(self) -> None:
        """Until the sink takes output again (or its own bound passes)."""
        ...


@frozen
class OfferTemplate:
    """Properties and constraints the runtime adds to its provider's offers."""

    properties: Mapping[str, Any] = field(factory=dict)
    constraints: str = ""


class Runtime(Protocol):
    """The lifecycle every local runtime implements; see the module docstring for the order of calls."""

    async def deploy(self, settings: DeploySettings) -> Deployment:
        """Prepare the payload (image, volumes). Raises :class:`RuntimeFailure` when it cannot."""
        ...

    async def start(self, args: Sequence[str]) -> None:
        """Bring the environment up (for the ``vm`` runtime: the sandbox and its agent)."""
        ...

    async def run_command(self, process: RunProcess, sink: OutputSink) -> int:
        """Run one command to its end, streaming its output to ``sink``; return its exit code.

        Cancelling the call kills the command (the SDK's ``kill_command``). Processes the command left
        running in the background keep running until :meth:`stop`.
        Raises :class:`RuntimeFailure` when the command cannot be started (no such program, not started).
        """
        ...

    async def stop(self) -> None:
        """End the environment and everything running in it, commands still running included: SIGTERM, then
        SIGKILL once the stop grace has passed; free its files. Idempotent. The exe-unit abandons a stop that
        overruns the grace by :data:`~golem_local.activity.STOP_OVERRUN` seconds."""
        ...

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by every process the activity started (0.0 before start).

        Measured where nothing the activity runs can change it; always a finite number of 0 or more.
        """
        ...

    def counters(self) -> Mapping[str, float]:
        """The runtime's own usage counters so far, by name (``golem.usage.custom.counter``: ``3.0``); empty for
        a runtime with none. Each must be declared by its :class:`~golem_local.runtime.registry.RuntimeDescriptor`
        to be priced; values are finite numbers of 0 or more that never decrease. Duration and CPU seconds are
        the exe-unit's and :meth:`cpu_seconds`' and are not repeated here."""
        ...

    def exit_note(self) -> str | None:
        """Why the command :meth:`run_command` last returned for ended, when a limit of the activity explains
        it (``killed: memory limit 512 MiB …``); ``None`` otherwise. The exe-unit adds it to the result."""
        ...

    def container_path(self, path: str) -> Path:
        """The host path of ``path`` inside the runtime (for tests and diagnostics).

        Only paths inside a volume are reachable; others raise :class:`RuntimeFailure` naming the volumes.
        File operations on the activity's behalf go through :meth:`volume_files`, never through host paths.
        """
        ...

    def volume_files(self) -> VolumeFiles:
        """The activity's volumes as directory descriptors, for file transfer (:mod:`golem_local.safefs`).

        Raises :class:`RuntimeFailure` when there are none (before ``deploy``, or a runtime without volumes).
        """
        ...

    async def wait_ended(self) -> str:
        """Return when the environment has ended by itself (crashed, killed from outside), with why.

        Never returns while the environment runs normally; the exe-unit watches it to mark the activity
        ``Unresponsive``. After :meth:`stop` it need not return.
        """
        ...

    def offer(self) -> OfferTemplate:
        """What this runtime adds to offers (``golem.runtime.name``, capabilities, …)."""
        ...

    async def self_test(self) -> None:
        """Check that the runtime can work on this machine; raise ``SandboxUnavailableError`` (or another
        ``LocalNodeError``) saying what is missing and how to install it."""
        ...


class CommandChain(Protocol):
    """Commands that a runtime runs one after the other without waiting for the exe-unit between them
    (:meth:`ChainRunner.run_chain`): each starts the moment the one before it has exited with code 0; after one
    that fails (not started, another code, killed) the rest never run."""

    async def result(self, position: int) -> tuple[int, str | None]:
        """The exit code of the command at ``position`` once it has ended, and its note (as
        :meth:`Runtime.exit_note` gives it for a command of :meth:`Runtime.run_command`).

        Raises :class:`RuntimeFailure` when it could not be started, when the environment ended under it, or when
        it never ran (an earlier command of the chain failed). Cancelling the call ends the chain: the running
        command is killed (confirmed within a bound, as a cancelled :meth:`Runtime.run_command`) and the commands
        queued behind it never run.
        """
        ...

    def close(self) -> None:
        """Forget the chain; if commands of it may still run (nobody awaited their end), kill the running one and
        drop the queued ones, without waiting for the confirmation."""
        ...


@runtime_checkable
class ChainRunner(Protocol):
    """A runtime that can run consecutive commands as a chain (the ``vm`` runtime's agent does): a batch of many
    short commands then costs no round trip from the runtime to the exe-unit and back between two commands."""

    async def run_chain(self, processes: Sequence[RunProcess], sinks: Sequence[OutputSink]) -> CommandChain:
        """Start the chain (``sinks[i]`` takes the output of ``processes[i]``); its first command starts now.

        Raises :class:`RuntimeFailure` when the runtime runs no commands (not started, ended)."""
        ...


_log = logging.getLogger(__name__)
_PROBE_STOP_TIMEOUT = 2.0  # a probe made for a self-test runs nothing: its stop has little to do


async def bounded_stop(runtime: Runtime, what: str, timeout: float = _PROBE_STOP_TIMEOUT) -> None:
    """``runtime.stop()`` for a runtime made outside an activity (a self-test's): given up on, with an error
    logged, when it takes more than ``timeout`` seconds, so that a runtime whose stop hangs cannot hang the node."""
    try:
        await asyncio.wait_for(runtime.stop(), timeout)
    except asyncio.TimeoutError:
        _log.error("%s: the runtime's stop did not end within %g s; abandoned it", what, timeout)
