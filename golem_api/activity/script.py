"""Scripts: batches of commands for one activity, built one call at a time, each with an awaitable result.

::

    script = ctx.new_script(timeout=60)
    script.deploy()
    script.start()
    hello = script.run("/bin/sh", "-c", "echo hello")
    report = script.download_json("/golem/out/report.json")
    await ctx.run_script(script)            # or `yield script` in a service handler
    print((await hello).stdout, await report)

Every method returns a :class:`Command` (a :class:`Download` for ``download_bytes`` / ``download_json``, whose
await gives the data). Awaiting a command gives its :class:`CommandResult` once the script has run, or raises
:class:`~golem_api.errors.CommandExecutionError` when it failed, when it never ran because an earlier command
failed, or when the script timed out or broke before it finished; the error says which. Once the script has
run (or failed), no command is left pending: awaiting any of them returns or raises at once.

``run`` captures both outputs, streamed by the provider as they are written (so ``on_stdout`` / ``on_stderr``
callbacks get each line as it comes, and ``stdout_file`` / ``stderr_file`` all of it). A
:class:`CommandResult` holds at most about a mebibyte of each output (its start and its end, with a note of
how much was left out between them): a command may print more than fits in memory.

``env`` is applied with ``/usr/bin/env``: the daemon's ExeScript ``run`` command has only ``entry_point``,
``args`` and ``capture`` (ya-client's ``ExeScriptCommand::Run``) and ignores any other field, so a separate
``env`` field would be silently dropped, as yapapi's was; the command becomes ``/usr/bin/env K=V … cmd
args…``, which every VM image and the local sandbox have.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
from collections.abc import Awaitable, Callable, Generator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from attrs import frozen

from golem_api.activity.capture import CaptureContext, capture_spec
from golem_api.errors import ActivityError, CommandExecutionError, ConfigurationError, TransferError

if TYPE_CHECKING:
    from golem_api.activity.storage import GsbStorage, Published, Receiving
    from golem_api.activity.work_context import WorkContext

__all__ = ["ENV_PROGRAM", "STREAM_CAPTURE", "Command", "CommandResult", "Download", "Script", "script_timeout"]

T = TypeVar("T")

ENV_PROGRAM = "/usr/bin/env"
"""The program that applies a ``run`` command's ``env`` (see the module docstring)."""

STREAM_CAPTURE: Mapping[str, Any] = {"stream": {"format": "str"}}
"""How ``run`` captures each output: streamed as text, all of it also kept for the result."""

_CONTAINER = "container:"


@frozen
class CommandResult:
    """What a command did: ``success``, and for ``run`` its ``stdout`` / ``stderr``; ``message`` from the provider."""

    index: int
    command: str
    success: bool
    stdout: str | None = None
    stderr: str | None = None
    message: str | None = None


class Command:
    """One command of a :class:`Script`, in the script's order (``index``); await it for its result.

    ``name`` is the ExeScript command (``deploy``, ``start``, ``run``, ``transfer``, ``terminate``).
    """

    def __init__(self, index: int, name: str, body: Mapping[str, Any], *, label: str | None = None) -> None:
        self.index = index
        self.name = name
        self._body = dict(body)
        self._label = label or name
        self._result: CommandResult | None = None
        self._error: CommandExecutionError | None = None
        self._settled = asyncio.Event()
        self.on_stdout: Callable[[str], None] | None = None
        self.on_stderr: Callable[[str], None] | None = None
        self.stdout_file: Path | None = None
        self.stderr_file: Path | None = None

    def __repr__(self) -> str:
        if self._error is not None:
            state = "failed"
        elif self._result is not None:
            state = "done"
        else:
            state = "pending"
        return f"<Command #{self.index} {self._label} ({state})>"

    def done(self) -> bool:
        """True once the command has a result or an error."""
        return self._settled.is_set()

    def result(self) -> CommandResult:
        """The result; raises :class:`CommandExecutionError` like ``await``, :class:`ActivityError` if not done."""
        if self._error is not None:
            raise self._error
        if self._result is None:
            raise ActivityError(
                f"command #{self.index} {self._label} has no result yet: run its script first "
                "(`await ctx.run_script(script)`, or `yield script` in a service handler)"
            )
        return self._result

    def __await__(self) -> Generator[Any, None, CommandResult]:
        return self._wait().__await__()

    async def _wait(self) -> CommandResult:
        await self._settled.wait()
        return self.result()

    # --- used by WorkContext.run_script ---------------------------------------------------------

    @property
    def streams_output(self) -> bool:
        """True when a callback or a file wants this command's output as it comes."""
        return any(sink is not None for sink in (self.on_stdout, self.on_stderr, self.stdout_file, self.stderr_file))

    @property
    def output_files(self) -> dict[str, Path]:
        """``{"stdout": path, "stderr": path}`` of the files this command's output goes to (either may be missing)."""
        files = {"stdout": self.stdout_file, "stderr": self.stderr_file}
        return {stream: path for stream, path in files.items() if path is not None}

    async def _prepare(self, storage: GsbStorage) -> dict[str, Any]:
        """The command as ExeScript JSON; transfers bind their GSB service here."""
        del storage
        return {self.name: self._body}

    async def _fetch(self, timeout: float) -> None:
        """After the provider reported success: collect what the command produced (downloads)."""
        del timeout

    async def _release(self) -> None:
        """Free what :meth:`_prepare` bound (always called once the script is over)."""

    def _settle(self, result: CommandResult | None, error: CommandExecutionError | None) -> None:
        if self.done():
            return
        self._result, self._error = result, error
        self._settled.set()


class _Transfer(Command):
    """A ``transfer`` command whose requestor end is a gftp service bound just before the script is sent."""

    def __init__(
        self,
        index: int,
        *,
        label: str,
        container_path: str,
        upload: Callable[[GsbStorage], Awaitable[Published]] | None = None,
        download: Callable[[GsbStorage], Awaitable[Receiving]] | None = None,
    ) -> None:
        super().__init__(index, "transfer", {}, label=label)
        self._container_url = _container_url(container_path)
        self._upload = upload
        self._download = download
        self._published: Published | None = None
        self._receiving: Receiving | None = None

    async def _prepare(self, storage: GsbStorage) -> dict[str, Any]:
        if self._upload is not None:
            published = self._published = await self._upload(storage)
            return {"transfer": {"from": published.url, "to": self._container_url}}
        assert self._download is not None
        receiving = self._receiving = await self._download(storage)
        return {"transfer": {"from": self._container_url, "to": receiving.url}}

    async def _fetch(self, timeout: float) -> None:
        if self._receiving is not None:
            await self._received(self._receiving, timeout)

    async def _received(self, receiving: Receiving, timeout: float) -> None:
        await receiving.wait(timeout)

    async def _release(self) -> None:
        published, self._published = self._published, None
        receiving, self._receiving = self._receiving, None
        for service in (published, receiving):
            if service is not None:
                await service.aclose()


class Download(_Transfer, Generic[T]):
    """A download whose await gives the data (bytes, or the parsed JSON value) instead of a CommandResult.

    Errors are those of :class:`Command`; :meth:`result` still gives the transfer's :class:`CommandResult`.
    """

    def __init__(
        self,
        index: int,
        *,
        label: str,
        container_path: str,
        limit: int | None,
        convert: Callable[[bytes], T],
        on_download: Callable[[T], Any] | None = None,
    ) -> None:
        super().__init__(
            index,
            label=label,
            container_path=container_path,
            download=lambda storage: storage.receive_bytes(limit=limit),
        )
        self._convert = convert
        self._on_download = on_download
        self._value: T | None = None

    def value(self) -> T:
        """The downloaded data; raises like :meth:`result`."""
        self.result()
        return self._value  # type: ignore[return-value]  # set before the command settles successfully

    def __await__(self) -> Generator[Any, None, T]:  # type: ignore[override]
        return self._wait_value().__await__()

    async def _wait_value(self) -> T:
        await self._wait()
        return self.value()

    async def _received(self, receiving: Receiving, timeout: float) -> None:
        data = await receiving.result(timeout)
        self._value = value = self._convert(data)
        if self._on_download is not None:
            try:
                called = self._on_download(value)
                if inspect.isawaitable(called):
                    await called
            except Exception as exc:
                raise TransferError(f"the on_download callback {self._on_download!r} failed: {exc!r}") from exc


def _container_url(path: str) -> str:
    if not isinstance(path, str) or not path or path == _CONTAINER:
        raise ConfigurationError(f"a path on the provider must be a non-empty string such as '/golem/in', got {path!r}")
    return path if path.startswith(_CONTAINER) else _CONTAINER + path


def _strings(what: str, values: tuple[Any, ...]) -> list[str]:
    bad = [value for value in values if not isinstance(value, str)]
    if bad:
        raise ConfigurationError(f"{what} must be strings, got {bad[0]!r}; convert numbers with str()")
    return list(values)


def _env_args(env: Mapping[str, str], cmd: str) -> list[str]:
    """``K=V`` arguments for :data:`ENV_PROGRAM`, checked so that ``env`` cannot misread them."""
    if not isinstance(env, Mapping):
        raise ConfigurationError(f"env must be a mapping of names to values, got {env!r}")
    if "=" in cmd:
        raise ConfigurationError(f"with env=, the program name cannot contain '=' ({cmd!r} would read as a variable)")
    pairs = []
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise ConfigurationError(
                f"an environment variable name must be a non-empty string without '=', got {key!r}"
            )
        if not isinstance(value, str) or "\0" in value:
            raise ConfigurationError(f"the value of {key} must be a string without NUL characters, got {value!r}")
        pairs.append(f"{key}={value}")
    return pairs


def _parse_json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise ValueError(f"the downloaded data is not JSON ({exc}); it starts with {data[:60]!r}") from None


def script_timeout(timeout: float | timedelta | None) -> float | None:
    """A script's ``timeout`` in seconds: a positive number of seconds, a positive ``timedelta``, or ``None``."""
    if isinstance(timeout, timedelta):
        seconds = timeout.total_seconds()
        if seconds > 0:
            return seconds
    elif timeout is None or (isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0):
        return None if timeout is None else float(timeout)
    raise ConfigurationError(
        f"a script's timeout must be a positive number of seconds, a positive timedelta or None, got {timeout!r}"
    )


class Script:
    """A batch of commands for one activity; build it with ``ctx.new_script()`` and run it once.

    ``timeout`` (seconds, or a ``timedelta`` as in yapapi) bounds the whole run, from sending to the last
    result; ``None``: no bound. ``wait_for_results`` (default True) says what a handler that yields the script
    gets back: with True it resumes once every result is in; with False it resumes as soon as the provider has
    the batch, and gets an awaitable that gives the results later (see :mod:`golem_api.activity.handlers`).
    """

    def __init__(
        self, ctx: WorkContext, *, timeout: float | timedelta | None = None, wait_for_results: bool = True
    ) -> None:
        if not isinstance(wait_for_results, bool):
            raise ConfigurationError(f"wait_for_results must be True or False, got {wait_for_results!r}")
        self.ctx = ctx
        self.timeout = script_timeout(timeout)
        self.wait_for_results = wait_for_results
        self.commands: list[Command] = []
        self._sent = False

    def __repr__(self) -> str:
        names = ", ".join(command.name for command in self.commands)
        return f"<Script [{names}]{' (sent)' if self._sent else ''}>"

    @property
    def sent(self) -> bool:
        """True once the script was handed to ``run_script`` (a script runs once)."""
        return self._sent

    def _claim(self) -> None:
        if self._sent:
            raise ConfigurationError(
                f"{self!r} was already run; a script runs once: build a new one with ctx.new_script()"
            )
        self._sent = True

    def _add(self, command: Command) -> Command:
        if self._sent:
            raise ConfigurationError(f"cannot add {command.name} to {self!r}: it was already run; build a new script")
        self.commands.append(command)
        return command

    @property
    def _next(self) -> int:
        return len(self.commands)

    def deploy(self, **kwargs: Any) -> Command:
        """Deploy the payload; ``kwargs`` go into the deploy command (``env``, ``hostname``, ``volumes``, ``net``…).

        The work context's ``deploy_args`` come first (a service instance in a VPN has its ``net`` there, so a
        plain ``deploy()`` joins it); ``kwargs`` win over them.
        """
        kwargs = {**self.ctx.deploy_args, **kwargs}
        try:
            json.dumps(kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"deploy arguments must be JSON values: {exc}") from None
        return self._add(Command(self._next, "deploy", kwargs))

    def start(self, *args: str) -> Command:
        """Start the deployed payload, with the runtime's start ``args``."""
        return self._add(Command(self._next, "start", {"args": _strings("start arguments", args)}))

    def run(
        self,
        cmd: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        on_stdout: Callable[[str], None] | None = None,
        on_stderr: Callable[[str], None] | None = None,
        stdout: CaptureContext | str | None = None,
        stderr: CaptureContext | str | None = None,
        stdout_file: str | os.PathLike[str] | None = None,
        stderr_file: str | os.PathLike[str] | None = None,
    ) -> Command:
        """Run ``cmd`` with ``args`` (no shell: use ``"/bin/sh", "-c", "…"`` for one).

        ``env`` adds environment variables for this command. ``on_stdout`` / ``on_stderr`` are called with each
        line of output (without its line break) as the provider streams it, and with a last unfinished line at
        the end; the command's result has the output either way, up to about a mebibyte per stream (its start
        and its end, with a note of what was left out). ``stdout`` / ``stderr`` choose how each output is
        captured (default: streamed; ``"all"``, ``"head"``, … or a :class:`CaptureContext`, as in yapapi; see
        :mod:`golem_api.activity.capture`). Output that is not streamed reaches the callbacks when the command
        has ended. ``stdout_file`` / ``stderr_file`` get all of the output, as it is streamed (created or
        replaced; text, written as UTF-8); the command fails if the stream missed some of it. A file needs its
        output streamed (the default capture, or ``"stream"``).
        """
        if not isinstance(cmd, str) or not cmd:
            raise ConfigurationError(f"the command to run must be a non-empty string such as '/bin/sh', got {cmd!r}")
        arguments = _strings("run arguments", args)
        entry_point = cmd
        if env:
            entry_point, arguments = ENV_PROGRAM, [*_env_args(env, cmd), cmd, *arguments]
        captures = {name: capture_spec(value, name) for name, value in (("stdout", stdout), ("stderr", stderr))}
        for name, capture, file in (("stdout", stdout, stdout_file), ("stderr", stderr, stderr_file)):
            if file is not None and capture not in (None, "stream"):
                raise ConfigurationError(
                    f"{name}_file={str(file)!r} needs {name} streamed, but {name}={capture!r}; "
                    f"drop {name}= (streaming is the default) or drop {name}_file="
                )
        body = {
            "entry_point": entry_point,
            "args": arguments,
            "capture": {name: spec for name, spec in captures.items() if spec is not None},
        }
        command = Command(self._next, "run", body, label=f"run {cmd}")
        command.on_stdout, command.on_stderr = on_stdout, on_stderr
        command.stdout_file, command.stderr_file = _output_file(stdout_file), _output_file(stderr_file)
        return self._add(command)

    def upload_bytes(self, data: bytes, dst: str) -> Command:
        """Send ``data`` to the file ``dst`` on the provider."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ConfigurationError(f"upload_bytes takes bytes, got {type(data).__name__}; use upload_json for values")
        payload = bytes(data)
        return self._upload_payload(payload, dst, f"upload {len(payload)} bytes to {dst}")

    def upload_json(self, value: Any, dst: str) -> Command:
        """Send ``value`` as JSON (UTF-8) to the file ``dst`` on the provider."""
        try:
            payload = json.dumps(value).encode()
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"upload_json needs a JSON value: {exc}") from None
        return self._upload_payload(payload, dst, f"upload JSON to {dst}")

    def _upload_payload(self, payload: bytes, dst: str, label: str) -> Command:
        return self._add(
            _Transfer(
                self._next,
                label=label,
                container_path=dst,
                upload=lambda storage: storage.publish_bytes(payload),
            )
        )

    def upload_file(self, src: str | os.PathLike[str], dst: str) -> Command:
        """Send the local file ``src`` to ``dst`` on the provider (read chunk by chunk as the provider asks)."""
        path = Path(src)
        if not path.is_file():
            raise ConfigurationError(f"cannot upload {str(path)!r}: it is not a file")
        return self._add(
            _Transfer(
                self._next,
                label=f"upload {path.name} to {dst}",
                container_path=dst,
                upload=lambda storage: storage.publish_file(path),
            )
        )

    def download_bytes(
        self,
        src: str,
        on_download: Callable[[bytes], Awaitable[Any] | None] | None = None,
        limit: int | None = None,
    ) -> Download[bytes]:
        """Fetch the file ``src`` from the provider; await the command for its bytes.

        ``on_download`` (yapapi's second argument) is called with the bytes once they are in (awaited when it
        is a coroutine function), before the script's results are given; a callback that raises fails the
        command. ``limit`` refuses files larger than that many bytes (the transfer fails).
        """
        _check_download(on_download, limit)
        download: Download[bytes] = Download(
            self._next, label=f"download {src}", container_path=src, limit=limit, convert=bytes, on_download=on_download
        )
        self._add(download)
        return download

    def download_json(
        self,
        src: str,
        on_download: Callable[[Any], Awaitable[Any] | None] | None = None,
        limit: int | None = None,
    ) -> Download[Any]:
        """Fetch the file ``src`` from the provider; await the command for its parsed JSON value.

        ``on_download`` and ``limit`` as for :meth:`download_bytes` (the callback gets the parsed value).
        """
        _check_download(on_download, limit)
        download: Download[Any] = Download(
            self._next,
            label=f"download JSON {src}",
            container_path=src,
            limit=limit,
            convert=_parse_json,
            on_download=on_download,
        )
        self._add(download)
        return download

    def download_file(self, src: str, dst: str | os.PathLike[str]) -> Command:
        """Fetch the file ``src`` from the provider into the local file ``dst`` (created or replaced)."""
        path = Path(dst)
        if not path.parent.is_dir():
            raise ConfigurationError(
                f"cannot download into {str(path)!r}: the directory {str(path.parent)!r} is missing"
            )
        return self._add(
            _Transfer(
                self._next,
                label=f"download {src} to {path}",
                container_path=src,
                download=lambda storage: storage.receive_file(path),
            )
        )

    def terminate(self) -> Command:
        """End the activity's runtime."""
        return self._add(Command(self._next, "terminate", {}))


def _output_file(path: str | os.PathLike[str] | None) -> Path | None:
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigurationError(f"an output file must be a path, got {path!r}")
    file = Path(path)
    if not file.parent.is_dir():
        raise ConfigurationError(f"cannot write output to {str(file)!r}: the directory {str(file.parent)!r} is missing")
    return file


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigurationError(f"limit must be a number of bytes (0 or more) or None, got {limit!r}")


def _check_download(on_download: object, limit: int | None) -> None:
    if on_download is not None and not callable(on_download):
        hint = f"; for a size limit write limit={on_download!r}" if isinstance(on_download, int) else ""
        raise ConfigurationError(
            f"on_download (the second argument) must be a function called with the data, got {on_download!r}{hint}"
        )
    _check_limit(limit)
