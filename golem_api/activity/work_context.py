"""Where a script meets an activity: :class:`WorkContext` sends scripts and settles every command's result.

Running a script goes through fixed steps, each with its failure handled:

1. transfers bind their GSB services (uploads publish, downloads open a place to receive);
2. the batch is sent (``POST exec``; :class:`~golem_api.events.ScriptSent`);
3. results come by long-polling each command in turn; when output is streamed (``stream_output``, or a
   ``run`` with ``on_stdout`` / ``on_stderr`` / ``stdout_file`` / ``stderr_file``), the batch's event stream
   is read alongside, so the callbacks, the files and :class:`~golem_api.events.CommandOutput` events get the
   output as it is written (with output files, polling starts once the stream is open, so that nothing goes
   by unseen; a command whose stream missed pieces fails, saying its files are incomplete);
4. each command is settled as its result comes (downloads first collect their data), with a
   :class:`~golem_api.events.CommandExecuted` event;
5. whatever happens (success, a failed command, the script's timeout, an error or a cancellation), every
   command still pending is settled with an error saying why, the GSB services are released, and
   :class:`~golem_api.events.ScriptFinished` is emitted if the batch was sent.

The first failed command raises :class:`~golem_api.errors.CommandExecutionError` once everything is settled;
the timeout raises :class:`~golem_api.errors.BatchTimeoutError`.

No script waits silently behind a command that will not end. The activity API cannot kill a batch, so:

* when a script's timeout passes while its batch still runs, the activity is ended (the provider kills what
  runs in it) and the error says so; later scripts on this context fail at once with
  :class:`~golem_api.errors.ActivityError`;
* when a script is cut short otherwise (cancelled: the instance was stopped), its batch may go on running. The
  next script first waits up to :data:`UNFINISHED_GRACE` s (a long-poll: it ends as soon as the batch does)
  for that batch to finish; if it has not, the activity is ended and the script fails at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from golem_api.activity._results import EventStreamReader, OutputRouter, bounded, poll_results
from golem_api.activity.script import Command, CommandResult, Script
from golem_api.activity.usage import ActivityUsage, cost_of_usage, usage_by_name
from golem_api.errors import (
    ActivityError,
    BatchTimeoutError,
    CommandExecutionError,
    ConfigurationError,
    GolemError,
)
from golem_api.events import CommandExecuted, CommandOutput, EventBus, ScriptFinished, ScriptSent
from golem_shared.tasks import within

if TYPE_CHECKING:
    from golem_api._rest.models import ActivityState, ExeScriptCommandResult
    from golem_api._rest.models import ActivityUsage as RawActivityUsage
    from golem_api.activity.activity import Activity
    from golem_api.activity.storage import GsbStorage
    from golem_api.market.agreement import Agreement

__all__ = [
    "DOWNLOAD_WAIT",
    "END_ACTIVITY_TIMEOUT",
    "FILE_GRACE",
    "STREAM_GRACE",
    "STREAM_OPEN_WAIT",
    "UNFINISHED_GRACE",
    "WorkContext",
]

_log = logging.getLogger(__name__)

STREAM_GRACE = 2.0
"""Seconds a polled result waits for the event stream to deliver the command's last output before it settles."""

FILE_GRACE = 60.0
"""Seconds a command with output files waits for the event stream to bring the rest of its output."""

STREAM_OPEN_WAIT = 10.0
"""Seconds a script with output files waits for its event stream to open before it polls for results."""

DOWNLOAD_WAIT = 30.0
"""Seconds a successful download waits for the provider's end-of-upload message (normally already there)."""

UNFINISHED_GRACE = 1.0
"""Seconds a script waits for the batch of an earlier script that was cut short to finish before the activity is
ended (so that nothing queues behind a command that does not end)."""

END_ACTIVITY_TIMEOUT = 10.0
"""Seconds allowed for ending an activity whose commands must be stopped."""


class WorkContext:
    """Runs scripts on one activity; service handlers get one as ``self._ctx``.

    ``storage`` serves the scripts' uploads and downloads; ``stream_output`` streams every ``run``'s output
    (as :class:`~golem_api.events.CommandOutput` events) even without callbacks.
    """

    def __init__(
        self,
        activity: Activity,
        storage: GsbStorage,
        bus: EventBus,
        *,
        stream_output: bool = False,
        deploy_args: Mapping[str, Any] | None = None,
    ) -> None:
        self.activity = activity
        self.storage = storage
        self.bus = bus
        self.stream_output = stream_output
        self._unfinished: tuple[str, int] | None = None  # (batch id, last index) of a script cut short
        self.deploy_args: dict[str, Any] = dict(deploy_args or {})
        """Arguments every ``deploy`` of this context's scripts starts from (a VPN's ``net``, for a service
        instance in one)."""

    def __repr__(self) -> str:
        return f"<WorkContext {self.activity!r}>"

    @property
    def agreement(self) -> Agreement:
        """The agreement the activity runs under."""
        return self.activity.agreement

    @property
    def provider_name(self) -> str:
        """The provider's name (``golem.node.id.name``)."""
        return self.activity.agreement.provider_name

    @property
    def provider_id(self) -> str:
        """The provider's node id."""
        return self.activity.agreement.provider_id

    @property
    def id(self) -> str:
        """The activity's id (yapapi's ``WorkContext.id``)."""
        return self.activity.activity_id

    def new_script(self, timeout: float | timedelta | None = None, wait_for_results: bool = True) -> Script:
        """An empty script for this activity; ``timeout`` (seconds or a ``timedelta``) bounds its run.

        ``wait_for_results=False``: a handler that yields the script resumes as soon as the provider has it and
        gets an awaitable for the results (see :class:`~golem_api.activity.script.Script`).
        """
        return Script(self, timeout=timeout, wait_for_results=wait_for_results)

    async def get_state(self) -> ActivityState:
        """The activity's state as the provider reports it."""
        return await self.activity.state()

    async def get_raw_state(self) -> ActivityState:
        """yapapi's name for :meth:`get_state`: the node's answer (``state``, ``next_state``, ``reason``…)."""
        return await self.activity.state()

    async def get_raw_usage(self) -> RawActivityUsage:
        """The node's usage answer as it is: bare counters in the offer's order and a Unix ``timestamp``."""
        return await self.activity.usage()

    async def get_usage(self) -> ActivityUsage:
        """The activity's usage counters by name and when they were measured (a UTC ``datetime``)."""
        return usage_by_name(await self.activity.usage(), self.agreement.pricing)

    async def get_cost(self) -> Decimal | None:
        """What the activity has cost so far at the agreed prices (start price included), from the usage the
        provider reports now; ``None`` when it reports none yet. A ``Decimal`` (yapapi gives a float)."""
        return cost_of_usage(await self.activity.usage(), self.agreement.pricing)

    async def run_script(self, script: Script) -> list[CommandResult]:
        """Send ``script`` and wait for all its results (see the module docstring); a script runs once.

        Raises :class:`CommandExecutionError` for the first failed command and :class:`BatchTimeoutError` when
        the script's timeout passes; in every case each command of the script is settled first.
        """
        if not isinstance(script, Script):
            raise ConfigurationError(f"run_script takes a Script (from ctx.new_script()), got {script!r}")
        if script.ctx is not self:
            raise ConfigurationError(f"{script!r} was made for {script.ctx!r}, not for {self!r}")
        script._claim()
        if not script.commands:
            return []
        await self.settle_unfinished(UNFINISHED_GRACE)
        if self.activity.ending:
            raise ActivityError(
                f"{self.activity!r} was ended ({self.activity.end_reason}); no more scripts run on it. "
                "A service instance is started again on a new activity (or ends) by itself"
            )
        return await _ScriptRun(self, script).run()

    @property
    def unfinished_batch(self) -> str | None:
        """The batch of a script that was cut short while it ran on the provider, until it is known to be over."""
        return self._unfinished[0] if self._unfinished is not None else None

    async def settle_unfinished(self, grace: float) -> None:
        """Wait up to ``grace`` s for the batch of a script cut short to finish; if it has not, end the activity.

        Does nothing when no script was cut short. Afterwards either nothing runs on the provider any more, or
        :attr:`Activity.ending <golem_api.activity.activity.Activity.ending>` is true.
        """
        unfinished, self._unfinished = self._unfinished, None
        if unfinished is None or self.activity.ending:
            return
        batch_id, last = unfinished
        try:
            results = await self.activity.results(batch_id, command_index=last, timeout=grace)
            if any(result.is_batch_finished for result in results):
                return
        except GolemError as exc:
            _log.debug("batch %s is not known to have finished: %r", batch_id, exc)
        await self.end_activity(
            f"batch {batch_id} of a script that was cut short was still running {grace:g} s later; "
            "the activity was ended to stop it"
        )

    async def end_activity(self, reason: str) -> None:
        """End the activity so that nothing keeps running on it (bounded; a failure is logged)."""
        _log.warning("%r: ending the activity: %s", self, reason)
        try:
            await asyncio.wait_for(self.activity.destroy(reason), END_ACTIVITY_TIMEOUT)
        except (GolemError, asyncio.TimeoutError) as exc:
            _log.warning("could not end %r: %r", self.activity, exc)

    async def start_script(self, script: Script) -> asyncio.Task[list[CommandResult]]:
        """Send ``script`` and return once the provider has the batch (or the run failed before that).

        The returned task gives what :meth:`run_script` gives (or raises what it raises); the caller owns it
        and must await or cancel it. Batches sent this way run on the provider in the order they were sent.
        """
        if not isinstance(script, Script):
            raise ConfigurationError(f"start_script takes a Script (from ctx.new_script()), got {script!r}")
        if script.ctx is not self:
            raise ConfigurationError(f"{script!r} was made for {script.ctx!r}, not for {self!r}")
        script._claim()
        if not script.commands:
            return asyncio.create_task(_no_results())
        run = _ScriptRun(self, script)
        task = asyncio.create_task(run.run(), name=f"script on {self.activity.activity_id}")
        sent = asyncio.create_task(run.sent.wait())
        try:
            await asyncio.wait({task, sent}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()
            raise
        finally:
            sent.cancel()
        return task


async def _no_results() -> list[CommandResult]:
    return []


class _Stop(Exception):
    """A command failed: the batch stops there."""

    def __init__(self, error: CommandExecutionError) -> None:
        self.error = error
        super().__init__(str(error))


class _ScriptRun:
    """One run of one script: the steps of the module docstring."""

    def __init__(self, ctx: WorkContext, script: Script) -> None:
        self.ctx = ctx
        self.script = script
        self.commands = script.commands
        self.batch_id: str | None = None
        self.streaming = ctx.stream_output or any(command.streams_output for command in script.commands)
        self.router = OutputRouter(
            {c.index: {"stdout": c.on_stdout, "stderr": c.on_stderr} for c in script.commands}, self._piece
        )
        self.reader: EventStreamReader | None = None
        self.sent = asyncio.Event()  # set once the provider has the batch
        self.files = {c.index: c.output_files for c in script.commands if c.output_files}

    @property
    def activity_id(self) -> str:
        return self.ctx.activity.activity_id

    async def run(self) -> list[CommandResult]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        timeout = self.script.timeout
        success = False
        try:
            if timeout is None:
                await self._run()
            else:
                await within(self._run(), timeout)  # in this task: no task of its own per script
            success = True
        except _Stop as stop:
            self._settle_rest(f"not run: command #{stop.error.index} {stop.error.command} failed before it")
            raise stop.error from None
        except asyncio.TimeoutError:
            if timeout is None or loop.time() - started < timeout:
                self._settle_rest("not finished: the script broke (a wait timed out)")
                self._note_unfinished()
                raise
            message = f"the script did not finish within its timeout of {timeout:g} s"
            self._settle_rest(f"not finished: {message}")
            ended = ""
            if self.batch_id is not None:
                self.ctx._unfinished = None
                await self.ctx.end_activity(f"{message} (batch {self.batch_id})")
                ended = "; the activity was ended to stop its commands"
            raise BatchTimeoutError(
                f"{message} on {self.ctx.provider_name!r} (batch {self.batch_id or 'not sent'}){ended}. "
                "Give new_script(timeout=…) more time if the commands are slow",
                batch_id=self.batch_id,
                timeout=timeout,
            ) from None
        except asyncio.CancelledError:
            self._settle_rest("not finished: the script was cancelled")
            self._note_unfinished()
            raise
        except BaseException as exc:
            self._settle_rest(f"not finished: the script broke: {exc}")
            self._note_unfinished()
            raise
        finally:
            await self._release()
            if self.batch_id is not None:
                self.ctx.bus.emit(
                    ScriptFinished(
                        activity_id=self.activity_id,
                        batch_id=self.batch_id,
                        success=success,
                        provider_name=self.ctx.provider_name,
                    )
                )
        return [command.result() for command in self.commands]

    async def _run(self) -> None:
        ctx = self.ctx
        for index, paths in self.files.items():
            for stream, path in paths.items():
                try:
                    self.router.add_file(index, stream, open(path, "wb"))  # noqa: ASYNC230, SIM115 -- closed by the router
                except OSError as exc:
                    raise ConfigurationError(f"cannot write the {stream} of command #{index} to {path}: {exc}") from exc
        texts = [await command._prepare(ctx.storage) for command in self.commands]
        self.batch_id = await ctx.activity.exec(texts)
        self.sent.set()
        ctx.bus.emit(
            ScriptSent(
                activity_id=self.activity_id,
                batch_id=self.batch_id,
                commands=tuple(command.name for command in self.commands),
                provider_name=ctx.provider_name,
            )
        )
        if self.streaming:
            self.reader = EventStreamReader(ctx.activity, self.batch_id, self.router)
            self.reader.start()
            if self.files:
                await self.reader.wait_opened(STREAM_OPEN_WAIT)
        try:
            await poll_results(ctx.activity, self.batch_id, len(self.commands), self._on_result)
        finally:
            if self.reader is not None:
                await self.reader.aclose()

    async def _on_result(self, item: ExeScriptCommandResult) -> bool:
        command = self.commands[item.index]
        stdout, stderr = bounded(item.stdout), bounded(item.stderr)
        incomplete = ""
        if self.streaming:
            caught = True
            if self.reader is not None:
                grace = FILE_GRACE if command.output_files else STREAM_GRACE
                caught = await self.reader.caught_up(item.index, grace) and self.reader.events > 0
            complete = caught and self.router.complete(item.index)
            if not complete and command.output_files:
                names = ", ".join(str(path) for path in command.output_files.values())
                incomplete = (
                    f"the output file(s) {names} are incomplete: the event stream missed some of the output "
                    "(it fell behind, or it could not be read); run the command again"
                )
            self.router.fallback(item.index, item)
            self.router.finish(item.index)
            stdout = stdout if stdout is not None else self.router.streamed(item.index, "stdout")
            stderr = stderr if stderr is not None else self.router.streamed(item.index, "stderr")
        result = CommandResult(
            index=item.index,
            command=command.name,
            success=item.success,
            stdout=stdout,
            stderr=stderr,
            message=item.message,
        )
        error: CommandExecutionError | None = None
        if item.success and incomplete:
            result = CommandResult(
                index=item.index, command=command.name, success=False, stdout=stdout, stderr=stderr, message=incomplete
            )
            error = self._error(command, incomplete, stdout, stderr)
        elif item.success:
            try:
                await command._fetch(DOWNLOAD_WAIT)
            except (GolemError, ValueError) as exc:
                result = CommandResult(
                    index=item.index,
                    command=command.name,
                    success=False,
                    stdout=stdout,
                    stderr=stderr,
                    message=str(exc),
                )
                error = self._error(command, str(exc), stdout, stderr)
        else:
            error = self._error(
                command, item.message or "the provider reported an error without a message", stdout, stderr
            )
        command._settle(result, error)
        self.ctx.bus.emit(
            CommandExecuted(
                activity_id=self.activity_id,
                batch_id=self.batch_id or "",
                index=item.index,
                command=command.name,
                success=result.success,
                message=result.message,
                provider_name=self.ctx.provider_name,
            )
        )
        if error is not None:
            raise _Stop(error)
        return True

    def _error(self, command: Command, message: str, stdout: str | None, stderr: str | None) -> CommandExecutionError:
        return CommandExecutionError(
            command.name, message, index=command.index, stdout=stdout, stderr=stderr, activity_id=self.activity_id
        )

    def _piece(self, index: int, stream: str, text: str) -> None:
        self.ctx.bus.emit(
            CommandOutput(
                activity_id=self.activity_id,
                batch_id=self.batch_id or "",
                index=index,
                stream=stream,
                text=text,
                provider_name=self.ctx.provider_name,
            )
        )

    def _note_unfinished(self) -> None:
        """The script ended before its batch did: the next script must not queue behind it unawares."""
        if self.batch_id is not None:
            self.ctx._unfinished = (self.batch_id, len(self.commands) - 1)

    def _settle_rest(self, message: str) -> None:
        for command in self.commands:
            if not command.done():
                command._settle(None, self._error(command, message, None, None))

    async def _release(self) -> None:
        self.router.close()
        for command in self.commands:
            try:
                await command._release()
            except Exception:
                _log.exception("releasing the transfer of %r failed", command)
