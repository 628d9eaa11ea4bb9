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
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from golem_api.activity._results import EventStreamReader, OutputRouter, bounded, poll_results
from golem_api.activity.script import Command, CommandResult, Script
from golem_api.errors import BatchTimeoutError, CommandExecutionError, ConfigurationError, GolemError
from golem_api.events import CommandExecuted, CommandOutput, EventBus, ScriptFinished, ScriptSent

if TYPE_CHECKING:
    from golem_api._rest.models import ActivityState, ActivityUsage, ExeScriptCommandResult
    from golem_api.activity.activity import Activity
    from golem_api.activity.storage import GsbStorage
    from golem_api.market.agreement import Agreement

__all__ = ["DOWNLOAD_WAIT", "FILE_GRACE", "STREAM_GRACE", "STREAM_OPEN_WAIT", "WorkContext"]

_log = logging.getLogger(__name__)

STREAM_GRACE = 2.0
"""Seconds a polled result waits for the event stream to deliver the command's last output before it settles."""

FILE_GRACE = 60.0
"""Seconds a command with output files waits for the event stream to bring the rest of its output."""

STREAM_OPEN_WAIT = 10.0
"""Seconds a script with output files waits for its event stream to open before it polls for results."""

DOWNLOAD_WAIT = 30.0
"""Seconds a successful download waits for the provider's end-of-upload message (normally already there)."""


class WorkContext:
    """Runs scripts on one activity; service handlers get one as ``self._ctx``.

    ``storage`` serves the scripts' uploads and downloads; ``stream_output`` streams every ``run``'s output
    (as :class:`~golem_api.events.CommandOutput` events) even without callbacks.
    """

    def __init__(self, activity: Activity, storage: GsbStorage, bus: EventBus, *, stream_output: bool = False) -> None:
        self.activity = activity
        self.storage = storage
        self.bus = bus
        self.stream_output = stream_output

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

    def new_script(self, timeout: float | None = None) -> Script:
        """An empty script for this activity; ``timeout`` bounds its run (seconds)."""
        return Script(self, timeout=timeout)

    async def get_state(self) -> ActivityState:
        """The activity's state as the provider reports it."""
        return await self.activity.state()

    async def get_usage(self) -> ActivityUsage:
        """The activity's usage counters."""
        return await self.activity.usage()

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
        return await _ScriptRun(self, script).run()


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
                await asyncio.wait_for(self._run(), timeout)
            success = True
        except _Stop as stop:
            self._settle_rest(f"not run: command #{stop.error.index} {stop.error.command} failed before it")
            raise stop.error from None
        except asyncio.TimeoutError:
            if timeout is None or loop.time() - started < timeout:
                self._settle_rest("not finished: the script broke (a wait timed out)")
                raise
            message = f"the script did not finish within its timeout of {timeout:g} s"
            self._settle_rest(f"not finished: {message}")
            raise BatchTimeoutError(
                f"{message} on {self.ctx.provider_name!r} (batch {self.batch_id or 'not sent'}); "
                "give new_script(timeout=…) more time if the commands are slow",
                batch_id=self.batch_id,
                timeout=timeout,
            ) from None
        except asyncio.CancelledError:
            self._settle_rest("not finished: the script was cancelled")
            raise
        except BaseException as exc:
            self._settle_rest(f"not finished: the script broke: {exc}")
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
