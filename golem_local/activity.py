"""The exe-unit side of activities on the local network: create, run ExeScript, meter, bill, destroy.

Each activity is supervised by an :class:`Activity` with an explicit lifecycle, as the daemon's exe-unit::

    New --create--> Initialized --deploy--> Deployed --start--> Ready
       any live state --destroy / terminate--> Terminated
       any live state --the runtime ended by itself--> Unresponsive --destroy--> Terminated

While a ``deploy`` or ``start`` runs, the state shows the pending transition (``[Initialized, Deployed]``,
``[Deployed, Ready]``); while a ``run`` or ``transfer`` runs, ``[Ready, Ready]``.

**Commands.** ``POST /exec`` hands the activity a parsed batch (:mod:`golem_local.exescript`); an owned
worker task runs the activity's batches one after another, the commands of each in order, on the activity's
:class:`Runtime` (one per activity, made by the hub's ``runtime_factory``). A command in the wrong state
fails with an Error result that names the state and what to send first; any failure stops its batch
(:mod:`golem_local.batch`). ``terminate`` ends the activity like a destroy; ``sign`` is answered with an
Error result, as the local node has no key to sign with. ``transfer`` goes through
:class:`~golem_local.transfer.FileTransfer`.

**Unresponsive.** After ``start`` an owned watcher task awaits ``runtime.wait_ended()``; when it returns
(the sandbox was killed from outside, it crashed) the activity becomes ``Unresponsive`` with the reason as
``errorMessage``, the running command ends with an Error result, queued batches fail, and metering stops
with a last debit note.

**Start modes.** A runtime whose ``deploy`` answers ``start_mode="empty"`` is started by the ``start`` command:
the command ends when ``runtime.start`` returns. One answering ``"blocking"`` (the runtime SDK's blocking start:
``start`` is its server and runs until the runtime ends) has ``runtime.start`` run by an owned task: the
``start`` command succeeds at once, commands go to the runtime meanwhile (it must make them wait for its server
itself), and the call returning or failing makes the activity ``Unresponsive`` with why; it is cancelled when
the activity ends, after ``runtime.stop`` if it has not returned by then. The runtime SDK's Command mode (a fresh
process per command, :mod:`golem_local.runtime.program`) is ``"empty"`` with such a ``run_command``; a runtime
program answering ``"blocking"`` (Server mode) is refused at deploy.

**Metering.** While it lives, an owned metering task wakes every ``debit-note interval`` seconds of its
agreement and has the provider issue a debit note for the cumulative cost of the usage so far: the
agreement's linear price model applied to ``golem.usage.duration_sec`` (seconds since creation) and
``golem.usage.cpu_sec`` (``runtime.cpu_seconds()``), times the provider's ``overcharge``. Ending an activity
cancels and awaits its tasks, stops its runtime and issues a last debit note. When the agreement ends
(:meth:`ActivityHub.agreement_ended`, the provider's ``Billing`` hook) its live activities are destroyed and
the provider invoices the sum of their final amounts, also when that sum is zero, so that the requestor
always sees every agreement settled.

**Stop grace.** Ending an activity calls the runtime's ``stop`` first, while a command may still be running,
and cancels the activity's tasks (the batch worker, a command still running, metering) after it. ``stop`` is
given the provider's ``ProviderSpec.stop_grace`` (5 s by default, as the daemon's exe-unit): runtimes send
every process of the activity, running commands included, SIGTERM, wait until they are gone or the grace has
passed, then SIGKILL (the runtime learns the grace from ``RuntimeContext.stop_grace``). A ``stop`` still
running :data:`STOP_OVERRUN` seconds after the grace is cancelled and abandoned with an error logged; the
activity ends, is billed and invoiced all the same. The built-in runtimes end what they hold in spite of that
cancellation (:func:`golem_shared.tasks.finish_first`): 774 of 1000 sandboxes stopped at once on two cores
overran the bound, and one of them had left its storage mounted.

Time comes from a :class:`TimeSource`; :class:`ManualTime` lets tests move it by hand instead of sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from enum import Enum
from typing import Any, Literal, Protocol

from golem_local.batch import Batch, Outcome, run_batch
from golem_local.clock import LoopTime, TimeSource
from golem_local.config import DEFAULT_STOP_GRACE, ProviderSpec
from golem_local.exescript import (
    DEFAULT_OUTPUT_LIMIT,
    Command,
    DeployCommand,
    OutputCapture,
    RunCommand,
    SignCommand,
    StartCommand,
    TerminateCommand,
    TransferCommand,
)
from golem_local.http import HttpError
from golem_local.market_model import AgreementRecord, AgreementState, LocalMarketError
from golem_local.pipeline import BatchChain, chain_length, prepare_run
from golem_local.provider_port import ProviderPayments
from golem_local.runtime.base import (
    ChainRunner,
    Deployment,
    DeploySettings,
    Runtime,
    RuntimeFailure,
)
from golem_local.runtime.idle import IdleRuntime
from golem_local.transfer import FileTransfer
from golem_shared.errors import GolemError, MarketError
from golem_shared.pricing import CPU_SEC, DURATION_SEC, LinearPricing
from golem_shared.tasks import TaskSet, wait_event

__all__ = [
    "DEBIT_NOTE_INTERVAL",
    "DEFAULT_DEBIT_NOTE_INTERVAL",
    "MULTI_ACTIVITY",
    "STOP_OVERRUN",
    "ActivityHub",
    "AgreementLookup",
    "ExeUnitActivity",
    "ExeUnitState",
    "Runtime",
    "RuntimeFactory",
]

DEBIT_NOTE_INTERVAL = "golem.com.scheme.payu.debit-note.interval-sec?"
MULTI_ACTIVITY = "golem.srv.caps.multi-activity"
DEFAULT_DEBIT_NOTE_INTERVAL = 120.0
"""Seconds between debit notes when neither side of the agreement names an interval."""

_log = logging.getLogger(__name__)

_WEI = Decimal("1e-18")  # amounts are kept to the token's 18 decimals
_TASK_END_TIMEOUT = 10.0  # seconds a cancelled task of an activity gets to end (a command being killed)
STOP_OVERRUN = 10.0
"""Seconds a runtime's ``stop`` may take beyond the provider's stop grace (reaping, removing files) before the
exe-unit abandons it: cancels it, logs an error and ends the activity all the same."""
_ABANDON_TIMEOUT = 1.0  # seconds an abandoned stop gets to end once cancelled
BATCH_RETENTION = 60.0
"""Seconds a finished batch's results stay readable; the last :data:`BATCHES_KEPT` batches are kept anyway."""
BATCHES_KEPT = 16


class ExeUnitState(Enum):
    """The activity states, as on the wire."""

    NEW = "New"
    INITIALIZED = "Initialized"
    DEPLOYED = "Deployed"
    READY = "Ready"
    UNRESPONSIVE = "Unresponsive"
    TERMINATED = "Terminated"


_LIVE = frozenset({ExeUnitState.INITIALIZED, ExeUnitState.DEPLOYED, ExeUnitState.READY})
# action -> (states it may start from, state it leads to)
_TRANSITIONS: dict[str, tuple[frozenset[ExeUnitState], ExeUnitState]] = {
    "create": (frozenset({ExeUnitState.NEW}), ExeUnitState.INITIALIZED),
    "deploy": (frozenset({ExeUnitState.INITIALIZED}), ExeUnitState.DEPLOYED),
    "start": (frozenset({ExeUnitState.DEPLOYED}), ExeUnitState.READY),
    "fail": (_LIVE, ExeUnitState.UNRESPONSIVE),
    "destroy": (_LIVE | {ExeUnitState.NEW, ExeUnitState.UNRESPONSIVE}, ExeUnitState.TERMINATED),
}
# stateful command -> (the state it needs, the state it leads to)
_COMMAND_STATES: dict[str, tuple[ExeUnitState, ExeUnitState]] = {
    "deploy": (ExeUnitState.INITIALIZED, ExeUnitState.DEPLOYED),
    "start": (ExeUnitState.DEPLOYED, ExeUnitState.READY),
    "run": (ExeUnitState.READY, ExeUnitState.READY),
    "transfer": (ExeUnitState.READY, ExeUnitState.READY),
}


def _wrong_state(state: ExeUnitState, command: str) -> str:
    """Why ``command`` cannot run in ``state``, and what to send instead."""
    now = f"the activity is {state.value}"
    if state not in _LIVE:
        return f"{now}; it runs no more commands: create a new activity"
    if command == "deploy":
        return f"{now}; deploy runs once, on an Initialized activity"
    if command == "start":
        if state is ExeUnitState.INITIALIZED:
            return f"{now}; send deploy before start"
        return f"{now}; start runs once, after deploy"
    if state is ExeUnitState.INITIALIZED:
        return f"{now}; send deploy and start before {command}"
    return f"{now}; send start before {command}"


def _as_number(value: object) -> float:
    """A counter's value as a float; NaN (refused by the caller) when it is not a number at all."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return math.nan
    return float(value)


def _exit_message(code: int) -> str | None:
    if code == 0:
        return None
    if code < 0:
        return f"ExeScript command was killed by signal {-code}"
    return f"ExeScript command exited with code {code}"


RuntimeFactory = Callable[[AgreementRecord, str], Runtime]
"""Makes the runtime of a new activity from its agreement and its activity id."""


class AgreementLookup(Protocol):
    """The part of the local market the hub needs: agreements by id (raising ``LocalMarketError``)."""

    def get_agreement(self, agreement_id: str, *, by: str | None = None) -> AgreementRecord:
        """The agreement as it is now; 404 when unknown or ``by`` is not one of its parties."""
        ...


def _interval(agreement: AgreementRecord) -> float:
    # The offer side is the provider's last counter-proposal: it holds the interval the provider accepted.
    for properties in (agreement.offer.properties, agreement.demand.properties):
        value = properties.get(DEBIT_NOTE_INTERVAL)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    return DEFAULT_DEBIT_NOTE_INTERVAL


def _payee(agreement: AgreementRecord, platform: str) -> str:
    chosen = agreement.demand.properties.get("golem.com.payment.chosen-platform", platform)
    address = agreement.offer.properties.get(f"golem.com.payment.platform.{chosen}.address")
    return address if isinstance(address, str) else agreement.provider_id


class ExeUnitActivity:
    """The supervisor of one activity: its state, its batches, its usage, its debit notes and its tasks."""

    def __init__(
        self,
        *,
        agreement: AgreementRecord,
        ledger: ProviderPayments,
        pricing: LinearPricing,
        overcharge: Decimal,
        runtime: Runtime,
        time_source: TimeSource,
        activity_id: str | None = None,
        transfers: FileTransfer | None = None,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        stop_grace: float = DEFAULT_STOP_GRACE,
        stop_overrun: float = STOP_OVERRUN,
    ) -> None:
        self.activity_id = activity_id if activity_id is not None else secrets.token_hex(16)
        self.stop_grace = stop_grace
        self.stop_overrun = stop_overrun
        self.agreement_id = agreement.agreement_id
        self.provider_id = agreement.provider_id
        self.payee_addr = _payee(agreement, ledger.platform)
        self.interval = _interval(agreement)
        self.pricing = pricing
        self.overcharge = overcharge
        self.runtime = runtime
        self.transfers = transfers
        self.output_limit = output_limit
        self.state = ExeUnitState.NEW
        self.next_state: ExeUnitState | None = None
        self.reason: str | None = None
        self.error_message: str | None = None
        self.final_usage: list[float] | None = None
        self._last_usage: list[float] = []
        self.last_amount = Decimal(0)
        self.deployment: Deployment | None = None
        self.batches: dict[str, Batch] = {}
        self._ledger = ledger
        self._time = time_source
        self._created = time_source.monotonic()
        self._queue: asyncio.Queue[Batch] = asyncio.Queue()
        self._current: Batch | None = None
        self._chain: BatchChain | None = None  # the run commands of the current batch that run as one chain
        self._chain_runner = runtime if isinstance(runtime, ChainRunner) else None
        self._tasks = TaskSet(f"activity {activity_id}", logger=_log)
        self._worker: asyncio.Task[None] | None = None
        self._ending: asyncio.Task[None] | Literal["in place"] | None = None  # how it ends (see _shutdown)
        self._end_reason: str | None = None  # why the activity is ending, while its runtime stops
        self._stopped = asyncio.Event()  # set once the last debit note (if any) is out and usage is frozen

    def __repr__(self) -> str:
        return f"<Activity {self.activity_id} {self.state.value} of agreement {self.agreement_id}>"

    @property
    def live(self) -> bool:
        """Neither terminated nor unresponsive."""
        return self.state in _LIVE

    def _transition(self, action: str) -> None:
        sources, target = _TRANSITIONS[action]
        if self.state not in sources:
            raise HttpError(409, f"activity {self.activity_id} is {self.state.value}; cannot {action} it")
        self.state = target
        self.next_state = None

    # -- usage and billing --------------------------------------------------------------------------------

    def usage(self) -> list[float]:
        """The usage counters in the agreement's order (frozen once the activity has stopped)."""
        if self.final_usage is not None:
            return list(self.final_usage)
        counters: dict[str, float] = {}
        try:
            counters.update(self.runtime.counters())
        except Exception:  # a broken runtime: its counters keep their last values (below)
            _log.exception("activity %s: the runtime's counters could not be read", self.activity_id)
            counters.update(zip(self.pricing.usage_vector, self._last_usage, strict=False))
        counters[DURATION_SEC] = max(self._time.monotonic() - self._created, 0.0)
        counters[CPU_SEC] = self.runtime.cpu_seconds()
        usage = [_as_number(counters.get(name, 0.0)) for name in self.pricing.usage_vector]
        # Runtimes measure where nothing they run can write; this keeps any figure that is not a finite
        # number of 0 or more (a broken runtime) out of every document, answer and bill all the same.
        for index, value in enumerate(usage):
            if not math.isfinite(value) or value < 0:
                last = self._last_usage[index] if index < len(self._last_usage) else 0.0
                _log.error("activity %s: the runtime reported usage %r; kept %r", self.activity_id, value, last)
                usage[index] = last
        self._last_usage = usage
        return list(usage)

    def amount_due(self, usage: list[float]) -> Decimal:
        """The cumulative amount the provider bills for ``usage``: price model × overcharge, to 18 decimals."""
        return (self.pricing.cost(usage) * self.overcharge).quantize(_WEI)

    def bill(self, usage: list[float] | None = None) -> None:
        """Issue a debit note for ``usage`` (by default the usage so far)."""
        usage = self.usage() if usage is None else usage
        self.last_amount = self.amount_due(usage)
        self._ledger.issue_debit_note(
            agreement_id=self.agreement_id,
            activity_id=self.activity_id,
            provider_id=self.provider_id,
            payee_addr=self.payee_addr,
            total_amount_due=self.last_amount,
            usage_counter_vector=usage,
        )

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """``New → Initialized``; start metering and the worker that runs batches."""
        self._transition("create")
        self._tasks.spawn(self._metering(), name=f"metering of activity {self.activity_id}")
        self._worker = self._tasks.spawn(self._work(), name=f"batches of activity {self.activity_id}")

    async def _metering(self) -> None:
        # Deadlines count from the creation, so that a late start or a slow bill never shifts them;
        # intervals that passed entirely while the loop was busy are billed once, not once each.
        due = 1
        try:
            while True:
                await self._time.sleep_until(self._created + due * self.interval)
                self.bill()
                due = int((self._time.monotonic() - self._created) // self.interval) + 1
        except Exception:
            _log.exception("activity %s: metering failed; no more periodic debit notes", self.activity_id)

    async def _watch_runtime(self) -> None:
        try:
            reason = await self.runtime.wait_ended()
        except Exception as exc:  # a broken watch is as good as an ended runtime: the commands cannot be trusted
            reason = f"the runtime could not be watched: {exc}"
        if self.live:
            _log.warning("activity %s: the runtime ended by itself: %s", self.activity_id, reason)
            await self.fail(reason)

    async def _serve(self, args: Sequence[str]) -> None:
        try:
            await self.runtime.start(args)
            reason = "the runtime's blocking start returned: its server has ended"
        except Exception as exc:
            reason = f"the runtime's blocking start failed: {exc}"
        if self.live:
            _log.warning("activity %s: %s", self.activity_id, reason)
            await self.fail(reason)

    async def _shutdown(self, reason: str, *, bill: bool) -> None:
        """Cancel and await the activity's tasks, fail its batches, stop the runtime, bill; once.

        Called from outside (a ``DELETE``, the agreement's end, the node's shutdown), the ending runs in a task
        of its own that every caller awaits: a caller cancelled meanwhile (a ``DELETE`` whose client gave up, as
        the node then cancels its handler) must not cut it short, or the sandbox would be left running and the
        last debit note never issued. One of the activity's own tasks (a ``terminate`` in its worker, the
        runtime's watcher) ends it in place: only this ending cancels them, and it leaves its caller alone.
        """
        if self._ending is None:
            current = asyncio.current_task()
            if current is not None and current in set(self._tasks):
                self._ending = "in place"
                await self._end(reason, bill=bill)
                return
            self._ending = asyncio.ensure_future(self._end(reason, bill=bill))
        if isinstance(self._ending, asyncio.Task):
            await asyncio.shield(self._ending)  # every caller awaits it; nobody cancels it
        else:
            await self._stopped.wait()  # one of the activity's tasks ends it, and only this ending cancels those

    async def _end(self, reason: str, *, bill: bool) -> None:
        self._end_reason = reason
        try:
            current = asyncio.current_task()
            # The runtime first, so that a running command gets the stop grace (SIGTERM, then SIGKILL) as the
            # daemon's exe-unit gives it, rather than the kill of a cancelled command; then what is left.
            await self._stop_runtime()
            await self._tasks.aclose(timeout=_TASK_END_TIMEOUT)
            usage = self.usage()
            if bill:
                self.bill(usage)
            self.final_usage = usage
            self.reason = reason
        finally:
            # Last, so that whoever sees a batch end here also sees the activity's final state and bill.
            for batch in list(self.batches.values()):
                if not (batch is self._current and self._worker is current):  # a terminate finishes its own batch
                    batch.abort(f"the activity is {self.state.value}: {reason}")
                batch.release()  # the results stay (bounded); the output kept for late readers goes
            self._stopped.set()

    async def _stop_runtime(self) -> None:
        """``runtime.stop()``, bounded by the stop grace plus :data:`STOP_OVERRUN`: a stop that takes longer (a
        runtime of one's own that hangs) is cancelled and abandoned with an error logged, so that the activity
        still ends and is billed. A stop that fails is logged likewise."""
        bound = self.stop_grace + self.stop_overrun
        stopping = asyncio.ensure_future(self.runtime.stop())
        try:
            done, _ = await asyncio.wait({stopping}, timeout=bound)
        except asyncio.CancelledError:
            stopping.cancel()
            await asyncio.wait({stopping}, timeout=_ABANDON_TIMEOUT)
            raise
        if not done:
            _log.error(
                "activity %s: the runtime's stop did not end within %g s (stop grace %g s + %g s); the activity ends "
                "without it (the built-in runtimes finish their clean-up all the same; a runtime of one's own may "
                "leave processes and files behind)",
                self.activity_id,
                bound,
                self.stop_grace,
                self.stop_overrun,
            )
            stopping.cancel()
            _, pending = await asyncio.wait({stopping}, timeout=_ABANDON_TIMEOUT)
            if pending:  # it ignores cancellation: nothing more can be done from here; retrieve its end quietly
                stopping.add_done_callback(_quiet)
            return
        if not stopping.cancelled() and stopping.exception() is not None:
            _log.error("activity %s: the runtime's stop failed", self.activity_id, exc_info=stopping.exception())

    async def fail(self, reason: str) -> None:
        """The runtime ended by itself: ``Unresponsive`` with ``reason``; commands fail, metering stops."""
        if not self.live:
            return
        self._transition("fail")
        self.error_message = reason
        await self._shutdown(f"the runtime ended by itself: {reason}", bill=True)

    async def destroy(self, reason: str = "destroyed by the requestor") -> None:
        """Stop the tasks and the runtime, issue the last debit note, and end ``Terminated``.

        A second call (say the agreement ends while the requestor destroys) waits for the first to finish,
        so that whoever invoices afterwards sees the final amount. An ``Unresponsive`` activity, already
        stopped and billed, just becomes ``Terminated``.
        """
        if self.state is ExeUnitState.TERMINATED:
            await self._stopped.wait()
            return
        self._transition("destroy")
        await self._shutdown(reason, bill=True)

    async def aclose(self) -> None:
        """Stop without billing (the node is shutting down)."""
        if self.state is not ExeUnitState.TERMINATED:
            self._transition("destroy")
        await self._shutdown("the local node shut down", bill=False)
        self._worker = None
        await self._tasks.aclose(timeout=_TASK_END_TIMEOUT)  # a worker that ran `terminate` ended by itself

    # -- batches ------------------------------------------------------------------------------------------

    def exec(self, commands: Sequence[Command]) -> Batch:
        """Queue a batch; it runs after the batches sent before it. 410 when the activity no longer runs."""
        if not self.live:
            why = f": {self.error_message}" if self.error_message else ""
            raise HttpError(
                410,
                f"activity {self.activity_id} is {self.state.value}{why}; it runs no more commands: "
                "create a new activity",
            )
        self._forget_old_batches()
        batch = Batch(self.activity_id, commands, output_limit=self.output_limit)
        self.batches[batch.batch_id] = batch
        self._queue.put_nowait(batch)
        return batch

    def _forget_old_batches(self) -> None:
        """Drop the results of batches that finished over :data:`BATCH_RETENTION` s ago, but the last few, so
        that an activity running commands for hours does not hold every result it ever had."""
        # The batches run one after the other in the order they came (the dict's order), so they finish in that
        # order too: drop from the oldest until one is too recent (a scan of them all for every batch cost some
        # 80 µs per command once a few thousand one-command batches were kept).
        cutoff = self._time.monotonic() - BATCH_RETENTION
        while len(self.batches) > BATCHES_KEPT:
            batch_id, batch = next(iter(self.batches.items()))
            if batch.finished_at is None or batch.finished_at >= cutoff:
                return
            del self.batches[batch_id]

    def batch(self, batch_id: str) -> Batch:
        """A batch of this activity by id; 404 when unknown (or finished long ago: see :data:`BATCH_RETENTION`)."""
        batch = self.batches.get(batch_id)
        if batch is None:
            raise HttpError(
                404,
                f"activity {self.activity_id} has no batch {batch_id} (results of finished batches are kept "
                f"for {BATCH_RETENTION:g} s)",
            )
        return batch

    def running_commands(self) -> list[dict[str, Any]]:
        """``[{"command", "params"?, "batchId"}]`` of the commands running now (empty when idle)."""
        running = []
        for batch in self.batches.values():
            command = batch.running
            if command is not None:
                item: dict[str, Any] = {"command": command.state_name, "batchId": batch.batch_id}
                if command.params is not None:
                    item["params"] = command.params
                running.append(item)
        return running

    async def _work(self) -> None:
        while self.live:
            batch = await self._queue.get()
            self._current = batch
            try:
                await run_batch(batch, self._execute)
            finally:
                self._current = None
                batch.finished_at = self._time.monotonic()
                self._close_chain()
        while not self._queue.empty():  # after a terminate: batches that were queued behind it
            self._queue.get_nowait().abort(_wrong_state(self.state, "exec"))

    async def _execute(self, command: Command, batch: Batch) -> Outcome:
        """Run one command; every failure, including a wrong state, becomes an Error outcome."""
        if isinstance(command, TerminateCommand):
            if self.live:
                self._transition("destroy")
                await self._shutdown("terminated by the ExeScript terminate command", bill=True)
            return Outcome()
        if isinstance(command, SignCommand):
            return Outcome.error(
                "sign is not supported by the local node: it has no key to sign batches with; leave it out"
            )
        needed, target = _COMMAND_STATES[command.name]
        if self.state is not needed:
            return Outcome.error(_wrong_state(self.state, command.name))
        self.next_state = target
        try:
            outcome = await self._run(command, batch)
        except (RuntimeFailure, GolemError) as exc:
            ending = f": the activity is {self.state.value}: {self._end_reason}" if self._end_reason is not None else ""
            outcome = Outcome.error(f"{command.name} failed: {exc}{ending}")
        except Exception as exc:
            _log.exception("activity %s: %s failed", self.activity_id, command.name)
            outcome = Outcome.error(f"{command.name} failed: internal error of the local node: {exc!r}")
        finally:
            if self.live:
                self.next_state = None
        if self._end_reason is not None:
            # The command ended while the runtime stops (the stop grace): its batch ends with the activity's
            # reason once the activity is billed (the shutdown cancels this wait), as whoever reads it expects.
            await self._stopped.wait()
        if outcome.ok and self.live:
            self.state = target
            if isinstance(command, StartCommand):
                self._tasks.spawn(self._watch_runtime(), name=f"runtime watch of activity {self.activity_id}")
        return outcome

    async def _run(self, command: Command, batch: Batch) -> Outcome:
        if isinstance(command, DeployCommand):
            settings = DeploySettings(
                env=dict(command.env),
                hostname=command.hostname,
                volumes=command.volumes,
                raw=command.raw["deploy"],
                networks=command.net,
                hosts=dict(command.hosts),
            )
            self.deployment = await self.runtime.deploy(settings)
            return Outcome()
        if isinstance(command, StartCommand):
            if self.deployment is not None and self.deployment.start_mode == "blocking":
                # The runtime SDK's blocking start: ``start`` runs for the life of the runtime (its server); the
                # command succeeds at once and the call's end, however it ends, is the runtime's.
                self._tasks.spawn(self._serve(command.args), name=f"blocking start of activity {self.activity_id}")
                return Outcome()
            await self.runtime.start(command.args)
            return Outcome()
        if isinstance(command, RunCommand):
            return await self._run_process(command, batch)
        assert isinstance(command, TransferCommand)
        if self.transfers is None:
            return Outcome.error("transfer is not available: this activity hub was built without file transfer")
        await self.transfers.transfer(self.runtime, command.source, command.destination)
        return Outcome()

    async def _run_process(self, command: RunCommand, batch: Batch) -> Outcome:
        try:
            chain = await self._chain_for(command, batch)
            if chain is not None:
                code, note, captures = await chain.result(command.index)
            else:
                code, note, captures = await self._run_alone(command, batch)
        except (RuntimeFailure, GolemError, asyncio.CancelledError):
            raise
        except Exception as exc:  # the runtime crashed mid-command: the command fails, saying so
            _log.warning(
                "activity %s: the runtime crashed running %s", self.activity_id, command.entry_point, exc_info=True
            )
            raise RuntimeFailure(f"the runtime crashed running {command.entry_point}: {exc!r}") from exc
        message = _exit_message(code)
        if message is not None and note is not None:
            message = f"{message}: {note}"
        if message is not None and self._end_reason is not None:  # ended by the stop grace of an ending activity
            message = f"{message}: the activity is {self.state.value}: {self._end_reason}"
        return Outcome(
            return_code=code,
            message=message,
            stdout=captures["stdout"].result(),
            stderr=captures["stderr"].result(),
        )

    async def _chain_for(self, command: RunCommand, batch: Batch) -> BatchChain | None:
        """The chain ``command`` runs in: the current one, or a new one from it on when a chain fits; ``None``
        when it runs alone (see :mod:`golem_local.pipeline`)."""
        chain = self._chain
        if chain is not None:
            if chain.covers(batch, command.index):
                return chain
            self._close_chain()
        if self._chain_runner is None:
            return None
        count = chain_length(batch.commands, command.index)
        if count < 2:
            return None
        commands = [c for c in batch.commands[command.index : command.index + count] if isinstance(c, RunCommand)]
        self._chain = await BatchChain.start(
            self._chain_runner,
            batch,
            commands,
            output_limit=self.output_limit,
            sink=lambda run, captures: _BatchSink(batch, run.index, captures, held=True),
        )
        return self._chain

    async def _run_alone(
        self, command: RunCommand, batch: Batch
    ) -> tuple[int, str | None, Mapping[str, OutputCapture]]:
        captures, process = prepare_run(command, self.output_limit)
        code = await self.runtime.run_command(process, _BatchSink(batch, command.index, captures))
        return code, self.runtime.exit_note(), captures

    def _close_chain(self) -> None:
        """Forget the current chain (ending what may still run of it)."""
        chain, self._chain = self._chain, None
        if chain is not None:
            chain.close()


def _quiet(task: asyncio.Future[None]) -> None:
    """Retrieve the end of an abandoned stop, so that asyncio does not complain that nobody did."""
    if not task.cancelled():
        task.exception()


class _BatchSink:
    """A ``run``'s output: kept by its captures, streamed through its batch, which may ask it to wait
    (:class:`~golem_local.runtime.base.FlowControl`).

    ``held``: the command runs in a chain and may have started before its batch recorded so; its output events are
    held until :meth:`open` (:mod:`golem_local.pipeline`), and while any are held the runtime reads no further.
    """

    def __init__(self, batch: Batch, index: int, captures: Mapping[str, OutputCapture], *, held: bool = False) -> None:
        self.batch = batch
        self.index = index
        self.captures = captures
        self._held: list[tuple[Literal["stdout", "stderr"], str | list[int]]] | None = [] if held else None
        self._opened: asyncio.Event | None = asyncio.Event() if held else None

    def __call__(self, stream: Literal["stdout", "stderr"], data: bytes) -> None:
        piece = self.captures[stream].write(data, read=None if self._held is not None else self._reads)
        if piece is None:
            return
        if self._held is not None:
            self._held.append((stream, piece))
        else:
            self.batch.command_output(self.index, stream, piece)

    def _reads(self, size: int) -> bool:
        return self.batch.reads(self.index, size)

    def open(self) -> None:
        held, self._held = self._held, None
        for stream, piece in held or ():
            self.batch.command_output(self.index, stream, piece)
        if self._opened is not None:
            self._opened.set()

    def congested(self) -> bool:
        return bool(self._held) or self.batch.congested()

    async def wait_room(self) -> None:
        if self._held and self._opened is not None:  # until the batch has recorded the command's start
            await wait_event(self._opened, self.batch.congestion_timeout)
        await self.batch.wait_room()


class ActivityHub:
    """The activities of the local node's providers; also the providers' ``Billing`` hook.

    ``market`` finds agreements; ``ledger`` is the providers' payment port (the local
    :class:`~golem_local.ledger.Ledger`, or a daemon's payment API through ``RestProviderPayments``), where debit
    notes and invoices are issued. ``providers`` maps provider node ids to their specs (for ``overcharge``);
    ``runtime_factory`` makes the runtime of each new activity from its agreement and activity id (the idle one
    by default); ``transfers`` carries out ``transfer`` commands (none by default: they fail). A runtime's
    ``stop`` gets the provider's ``stop_grace`` plus ``stop_overrun`` seconds before it is abandoned.
    """

    def __init__(
        self,
        market: AgreementLookup,
        ledger: ProviderPayments,
        *,
        providers: Mapping[str, ProviderSpec] | None = None,
        time_source: TimeSource | None = None,
        runtime_factory: RuntimeFactory | None = None,
        transfers: FileTransfer | None = None,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        stop_overrun: float = STOP_OVERRUN,
    ) -> None:
        self._market = market
        self.stop_overrun = stop_overrun
        self._output_limit = output_limit
        self._ledger = ledger
        self._providers = dict(providers or {})
        self._time: TimeSource = time_source if time_source is not None else LoopTime()
        self._runtime_factory: RuntimeFactory = runtime_factory or (lambda _agreement, _id: IdleRuntime())
        self._transfers = transfers
        self._activities: dict[str, ExeUnitActivity] = {}
        self._invoiced: set[str] = set()
        self._closed = False

    @property
    def requestor_id(self) -> str | None:
        """The identity the activity API serves (the node's requestor); ``None`` on a daemon's provider side."""
        return self._ledger.requestor_id

    def _agreement(self, agreement_id: str, by: str | None) -> AgreementRecord:
        try:
            return self._market.get_agreement(agreement_id, by=by)
        except LocalMarketError as exc:
            raise HttpError(exc.status, exc.message) from exc

    async def create(
        self, agreement_id: str, *, by: str | None = None, activity_id: str | None = None
    ) -> ExeUnitActivity:
        """A new ``Initialized`` activity on an ``Approved`` agreement of ``by`` (default: the requestor).

        404 unknown agreement; 403 not the requestor's; 400 not approved, or a second activity on an
        agreement whose offer lacks ``golem.srv.caps.multi-activity``. ``activity_id`` is the id a daemon gave
        the activity (a fresh one by default).
        """
        caller = by or self.requestor_id
        if caller is None:
            raise HttpError(400, f"who creates the activity on agreement {agreement_id}? name its requestor (by=)")
        if self._closed:
            raise HttpError(500, "the local node is shutting down")
        agreement = self._agreement(agreement_id, caller)
        if agreement.requestor_id != caller:
            raise HttpError(403, f"agreement {agreement_id} is not yours: only its requestor may create activities")
        if agreement.state is not AgreementState.APPROVED:
            raise HttpError(400, f"agreement {agreement_id} is {agreement.state.value}, not Approved")
        if agreement_id in self._invoiced:
            raise HttpError(400, f"agreement {agreement_id} has ended: its provider has invoiced it")
        existing = [a for a in self._activities.values() if a.agreement_id == agreement_id]
        if existing and agreement.offer.properties.get(MULTI_ACTIVITY) is not True:
            raise HttpError(
                400,
                f"agreement {agreement_id} already has activity {existing[0].activity_id} and the provider does "
                f"not offer {MULTI_ACTIVITY}: destroy nothing, reuse that activity or negotiate another agreement",
            )
        try:
            pricing = LinearPricing.from_properties(agreement.offer.properties)
        except MarketError as exc:
            raise HttpError(400, f"agreement {agreement_id} cannot be billed: {exc}") from exc
        spec = self._providers.get(agreement.provider_id)
        if activity_id is None:
            activity_id = secrets.token_hex(16)
        elif activity_id in self._activities:
            raise HttpError(409, f"activity {activity_id} exists already")
        activity = ExeUnitActivity(
            agreement=agreement,
            ledger=self._ledger,
            pricing=pricing,
            overcharge=spec.overcharge if spec is not None else Decimal(1),
            runtime=self._runtime_factory(agreement, activity_id),
            time_source=self._time,
            activity_id=activity_id,
            transfers=self._transfers,
            output_limit=self._output_limit,
            stop_grace=spec.stop_grace if spec is not None else DEFAULT_STOP_GRACE,
            stop_overrun=self.stop_overrun,
        )
        self._activities[activity.activity_id] = activity
        activity.start()
        return activity

    def get(self, activity_id: str) -> ExeUnitActivity:
        """An activity by id; 404 when unknown."""
        activity = self._activities.get(activity_id)
        if activity is None:
            raise HttpError(404, f"activity {activity_id} not found")
        return activity

    def activities(self, agreement_id: str | None = None) -> list[ExeUnitActivity]:
        """Every activity (of ``agreement_id`` when given), oldest first."""
        return [a for a in self._activities.values() if agreement_id in (None, a.agreement_id)]

    async def destroy(self, activity_id: str) -> None:
        """Destroy an activity (404 unknown); a terminated one stays as it is."""
        await self.get(activity_id).destroy()

    def tick(self) -> None:
        """Have every live activity bill now, as its metering task does every interval."""
        for activity in self._activities.values():
            if activity.live:
                activity.bill()

    async def agreement_ended(self, agreement_id: str, provider_id: str) -> None:
        """``Billing``: destroy the agreement's live activities and invoice their final amounts (once).

        The invoice is issued even when no activity ran (amount 0), so every ended agreement settles.
        """
        if agreement_id in self._invoiced:
            return
        self._invoiced.add(agreement_id)
        activities = self.activities(agreement_id)
        for activity in activities:
            await activity.destroy("the agreement ended")
        if activities:
            payee = activities[0].payee_addr
        else:
            try:
                payee = _payee(self._agreement(agreement_id, None), self._ledger.platform)
            except HttpError:
                payee = provider_id
        self._ledger.issue_invoice(
            agreement_id=agreement_id,
            activity_ids=[a.activity_id for a in activities],
            provider_id=provider_id,
            payee_addr=payee,
            amount=sum((a.last_amount for a in activities), Decimal(0)),
        )

    async def aclose(self) -> None:
        """Stop every activity and await its metering task; no documents are issued any more."""
        self._closed = True
        for activity in list(self._activities.values()):
            await activity.aclose()
