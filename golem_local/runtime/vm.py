"""The local ``vm`` runtime: an activity's commands in one bubblewrap sandbox, run by an agent inside it.

There is no virtual machine: :meth:`VmRuntime.start` creates the sandbox of :mod:`~.sandbox` once per
activity, with the agent of :mod:`~.agent` as its first process (PID 1 of the sandbox, reaping orphans), and
every ``run`` command is a request to that agent over the sandbox's stdin/stdout. So a daemon started by one
command is seen by the next, and all of them die together at :meth:`VmRuntime.stop`: the agent exits, the
kernel kills what is left in the PID namespace, and only then does bubblewrap exit.

Choices the exe-unit can rely on:

- a program that cannot be started (not found, not executable, bad working directory) makes
  :meth:`~VmRuntime.run_command` raise :class:`RuntimeFailure`; a program that runs and fails returns its
  exit code (``sh -c nosuch`` returns 127, from the shell). A command killed by signal N returns ``-N``.
- a command ends when its main process exits, even if a daemon it started still holds its output pipes.
- :meth:`~VmRuntime.cpu_seconds` returns the last figure the agent reported: every process in the
  sandbox, live or exited, measured by the agent every :data:`USAGE_INTERVAL` seconds by an owned task, once
  more at :meth:`~VmRuntime.stop`, and on demand with :meth:`~VmRuntime.refresh_cpu_seconds`. It never goes
  down and keeps its last value after the sandbox ends.
- environment of a command, later entries winning: ``PATH`` and ``HOME=/tmp`` (``/root`` for an image with a
  root file system) defaults, the host Python's
  settings for a ``python`` image (:mod:`~.python_base`), the provider's ``env``, the image's ``env``, the
  ``deploy`` command's ``env``, the ``run`` command's ``env``.
- an image with files (``Image.root``) is copied into the activity's directory at :meth:`~VmRuntime.deploy`
  and that copy is shown read-write: commands may change the image's files (a service's database next to
  its scripts) and the next activity still starts from the image as built. The copy costs what copying the
  tree costs (a few milliseconds for a service's scripts: the Python of a ``python`` image is not in the tree).
- an image can be given as a loader (``load_image``), awaited at :meth:`~VmRuntime.deploy`: a provider's
  download of the image its agreement names happens there, and a failure is the deploy's error.
- an image with a whole root file system (``Image.rootfs``: every GVMI) is the sandbox's ``/`` instead, writable
  for this activity only (an overlay on the unpacked image, :mod:`~.rootfs`), with nothing of the host visible
  but the agent's interpreter under ``/.golem``; everything the activity wrote is dropped at :meth:`stop`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import itertools
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from attrs import frozen

from golem_local.runtime.base import (
    Deployment,
    DeploySettings,
    OfferTemplate,
    OutputSink,
    RunProcess,
    Runtime,
    RuntimeFailure,
    Volume,
)
from golem_local.runtime.image import Image, check_sandbox_path
from golem_local.runtime.python_base import PythonLayout, prepare_python
from golem_local.runtime.rootfs import AGENT_DIR, ActivityRoot, agent_bundle, remove_tree, user_namespace
from golem_local.runtime.sandbox import (
    AGENT_PATH,
    DEFAULT_HOSTNAME,
    DEFAULT_PATH,
    MISSING_MESSAGE,
    SYSTEM_PATHS,
    SandboxLayout,
    agent_interpreter,
    bwrap_args,
    check_bubblewrap,
    describe_exit,
)
from golem_shared.errors import SandboxUnavailableError
from golem_shared.tasks import TaskSet

__all__ = [
    "KILL_TIMEOUT",
    "START_TIMEOUT",
    "STOP_GRACE",
    "USAGE_INTERVAL",
    "VmRuntime",
]

ROOT_FS_RESERVED = ("/proc", "/dev", "/sys", AGENT_DIR)
"""Paths of an image's sandbox that no volume may be at or under (the sandbox fills them itself)."""

START_TIMEOUT = 10.0
"""Seconds the agent may take to say it is ready."""
USAGE_INTERVAL = 0.5
"""Seconds between two CPU usage reports while the sandbox runs."""
USAGE_TIMEOUT = 5.0
KILL_TIMEOUT = 2.0
"""Seconds a cancelled command may take to be reported dead before ``run_command`` gives up waiting."""
STOP_GRACE = 0.5
"""Seconds the sandbox has to end by itself at ``stop()`` before it is killed."""
_REAP_TIMEOUT = 5.0
_SEND_TIMEOUT = 5.0
_LINE_LIMIT = 1 << 20  # an agent event line: at most a 64 KiB chunk, base64-encoded, plus a few fields
_STDERR_TAIL = 4000
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,62})?")
_AGENT_SCRIPT = Path(__file__).with_name("agent.py")
_STREAMS: dict[int, Literal["stdout", "stderr"]] = {1: "stdout", 2: "stderr"}

_log = logging.getLogger(__name__)


class _State(enum.Enum):
    NEW = "not deployed"
    DEPLOYED = "deployed"
    STARTED = "running"
    ENDED = "ended"
    STOPPED = "stopped"


@frozen
class _Running:
    """A command sent to the agent: where its output goes and the future of its exit code."""

    program: str
    cwd: str
    sink: OutputSink
    result: asyncio.Future[int]


def _remove_tree(path: Path, root: ActivityRoot | None = None) -> None:
    """Remove ``path`` and everything in it, also directories a command made read-only; log what remains."""
    if root is not None:  # files of the image's other users: removed as root of the namespace they belong to
        root.remove()
        try:
            remove_tree(path, root.namespace)
        except OSError as exc:
            _log.error("cannot remove the activity directory %s: %s", path, exc)
        return
    if not path.exists():
        return
    try:
        shutil.rmtree(path)
    except OSError:
        for directory, subdirectories, _files in os.walk(path):
            for name in (directory, *(os.path.join(directory, sub) for sub in subdirectories)):
                if not os.path.islink(name):  # a command's link may point at host directories: never touch them
                    with contextlib.suppress(OSError):
                        os.chmod(name, 0o700)
        try:
            shutil.rmtree(path)
        except OSError as exc:
            _log.error("cannot remove the activity directory %s: %s", path, exc)


class VmRuntime:
    """The local ``vm`` runtime of one activity; implements :class:`~golem_local.runtime.base.Runtime`.

    ``work_dir`` belongs to the runtime: the volumes live under it (``<work_dir>/volumes/golem/in`` for
    ``/golem/in``) and :meth:`stop` removes it, with the activity's copy of the image (``<work_dir>/image``).
    ``env`` is the provider's extra environment (the image's environment wins over it). ``load_image``, when
    given, is awaited at :meth:`deploy` for the image to run instead of ``image`` (it raises
    :class:`RuntimeFailure` saying why it cannot give one). ``sandbox_pid`` is the host pid of the bubblewrap
    process while it runs.
    """

    RUNTIME_NAME = "vm"
    RUNTIME_VERSION = "0.4.0-local"

    def __init__(
        self,
        image: Image,
        work_dir: Path,
        *,
        bwrap: str = "bwrap",
        env: Mapping[str, str] | None = None,
        load_image: Callable[[], Awaitable[Image]] | None = None,
    ) -> None:
        self.image = image
        self.copy_seconds: float | None = None  # how long deploy took to copy the image's files, for measurements
        self._load_image = load_image
        self._image_root: Path | None = None
        self._root_fs: ActivityRoot | None = None
        self._python: PythonLayout | None = None
        self.work_dir = Path(work_dir)
        self.bwrap = bwrap
        self.env = dict(env or {})
        self.sandbox_pid: int | None = None
        self._state = _State.NEW
        self._volumes: tuple[Volume, ...] = ()
        self._deploy_env: dict[str, str] = {}
        self._hostname = DEFAULT_HOSTNAME
        self._process: asyncio.subprocess.Process | None = None
        self._tasks = TaskSet("vm runtime", logger=_log)
        self._ready: asyncio.Future[None] | None = None
        self._commands: dict[int, _Running] = {}
        self._usage_waiters: dict[int, asyncio.Future[float]] = {}
        self._ids = itertools.count(1)
        self._cpu = 0.0
        self._cpu_updated = asyncio.Event()
        self._stderr_tail = b""
        self._stopping = False
        self._stop_lock = asyncio.Lock()
        self._ended = asyncio.Event()
        self._end_reason = ""

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def deploy(self, settings: DeploySettings) -> Deployment:
        """Check the image and settings and create the volume directories; the sandbox starts at :meth:`start`."""
        if self._state is not _State.NEW:
            raise RuntimeFailure(f"cannot deploy: the vm runtime is {self._state.value}; deploy comes once, first")
        if self._load_image is not None:
            self.image = await self._load_image()
        root = self.image.root
        if root is not None and not root.is_dir():
            raise RuntimeFailure(f"the image's root {str(root)!r} is not a directory; point Image.root at one")
        try:
            if self.image.working_dir != "/":
                check_sandbox_path(self.image.working_dir, "image working directory")
            paths = sorted({check_sandbox_path(path, "volume") for path in (*self.image.volumes, *settings.volumes)})
        except ValueError as exc:
            raise RuntimeFailure(str(exc)) from None
        reserved = ROOT_FS_RESERVED if self.image.rootfs else (*SYSTEM_PATHS, AGENT_PATH)
        for path in paths:
            taken = [system for system in reserved if path.startswith(system + "/") or path == system]
            if taken:
                raise RuntimeFailure(
                    f"the volume {path!r} is inside {taken[0]}, which the sandbox fills itself; "
                    "put volumes elsewhere, e.g. under /golem"
                )
        hostname = settings.hostname or DEFAULT_HOSTNAME
        if not _HOSTNAME.fullmatch(hostname):
            raise RuntimeFailure(
                f"the hostname {hostname!r} is not valid; use up to 63 letters, digits, dots and dashes"
            )
        volumes = tuple(Volume(path, self.work_dir / "volumes" / path.lstrip("/")) for path in paths)
        try:
            for volume in volumes:
                volume.host_path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RuntimeFailure(f"cannot create the volume directories under {str(self.work_dir)!r}: {exc}") from exc
        if self.image.rootfs:
            await self._prepare_root_fs(hostname)
        else:
            await asyncio.to_thread(self._prepare_files)
        self._volumes = volumes
        self._deploy_env = {str(key): str(value) for key, value in settings.env.items()}
        self._hostname = hostname
        self._state = _State.DEPLOYED
        return Deployment(start_mode="blocking", volumes=volumes)

    def _prepare_files(self) -> None:
        """The activity's copy of the image's files, and the host's Python for a ``python`` image (in a thread)."""
        root = self.image.root
        if root is not None:
            started = time.perf_counter()
            copy = self.work_dir / "image"
            try:
                shutil.copytree(root, copy, symlinks=True)
            except (OSError, shutil.Error) as exc:
                raise RuntimeFailure(
                    f"cannot copy the image's files from {str(root)!r} for the activity: {exc}"
                ) from exc
            self._image_root = copy
            self.copy_seconds = time.perf_counter() - started
            _log.debug("vm runtime: copied the image %s in %.1f ms", self.image.hash or root, self.copy_seconds * 1000)
        if self.image.uses_host_python:
            try:
                self._python = prepare_python(self.work_dir / "python")
            except (SandboxUnavailableError, OSError) as exc:
                raise RuntimeFailure(f"the image's base {self.image.base!r} cannot be shown: {exc}") from exc

    async def _prepare_root_fs(self, hostname: str) -> None:
        """The activity's writable view of the image's root file system (see :mod:`~.rootfs`)."""
        assert self.image.root is not None
        started = time.perf_counter()
        try:
            namespace = await asyncio.to_thread(user_namespace)
            root = ActivityRoot(self.image.root, self.work_dir / "rootfs", hostname=hostname, namespace=namespace)
            self._root_fs = root
            await asyncio.to_thread(root.prepare)
            interpreter = agent_interpreter()
            await asyncio.to_thread(agent_bundle, interpreter.path, str(_AGENT_SCRIPT))
        except (SandboxUnavailableError, OSError) as exc:
            raise RuntimeFailure(f"cannot prepare the image's root file system for the activity: {exc}") from exc
        self.copy_seconds = time.perf_counter() - started
        _log.debug(
            "vm runtime: %s root of image %s ready in %.1f ms",
            root.strategy,
            self.image.hash or self.image.root,
            self.copy_seconds * 1000,
        )

    def _sandbox_command(self) -> tuple[list[str], tuple[int, ...]]:
        """The command that starts the sandbox with its agent, and the descriptors it must inherit."""
        interpreter = agent_interpreter()
        root = self._root_fs
        if root is not None:
            bundle = agent_bundle(interpreter.path, str(_AGENT_SCRIPT))
            layout = SandboxLayout(
                volumes=self._volumes,
                root_fs=root.root,
                image_root=self.image.root,
                working_dir=self.image.working_dir,
                hostname=self._hostname,
                files=tuple((Path(host), sandbox) for host, sandbox in bundle.binds),
                writable_files=root.generated_files,
            )
            return [*root.wrapper(), self.bwrap, *bwrap_args(layout), *bundle.argv], root.pass_fds
        layout = SandboxLayout(
            volumes=self._volumes,
            image_root=self._image_root,
            image_writable=True,
            python=self._python,
            working_dir=self.image.working_dir,
            hostname=self._hostname,
            files=((_AGENT_SCRIPT, AGENT_PATH),),
            host_binds=interpreter.binds,
        )
        return [self.bwrap, *bwrap_args(layout), interpreter.path, "-I", "-S", AGENT_PATH], ()

    async def start(self, args: Sequence[str]) -> None:
        """Create the sandbox and wait (at most :data:`START_TIMEOUT`) for its agent to be ready.

        ``args`` (the ``start`` command's arguments) are accepted and ignored, as by a Golem VM.
        """
        if self._state is not _State.DEPLOYED:
            raise RuntimeFailure(f"cannot start: the vm runtime is {self._state.value}; deploy it first, start once")
        argv, pass_fds = self._sandbox_command()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=_LINE_LIMIT,
                start_new_session=True,  # a Ctrl-C meant for the provider does not reach the sandbox
                pass_fds=pass_fds,
            )
        except FileNotFoundError:
            self._state = _State.ENDED
            raise RuntimeFailure(f"{MISSING_MESSAGE} (looked for {self.bwrap!r})") from None
        except OSError as exc:
            self._state = _State.ENDED
            raise RuntimeFailure(f"cannot run bubblewrap {self.bwrap!r}: {exc}") from exc
        assert process.stdout is not None
        assert process.stderr is not None
        self._process = process
        self.sandbox_pid = process.pid
        self._ready = asyncio.get_running_loop().create_future()
        reader = self._tasks.spawn(self._read_events(process.stdout), name=f"vm agent events {process.pid}")
        errors = self._tasks.spawn(self._read_stderr(process.stderr), name=f"vm sandbox stderr {process.pid}")
        self._tasks.spawn(self._watch(process, reader, errors), name=f"vm sandbox watch {process.pid}")
        self._state = _State.STARTED
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), START_TIMEOUT)
        except asyncio.TimeoutError:
            await self._shut_down()
            self._state = _State.ENDED
            raise RuntimeFailure(
                f"the sandbox's agent did not answer within {START_TIMEOUT:.0f} s{self._stderr_note()}"
            ) from None
        except RuntimeFailure:
            await self._shut_down()
            raise
        self._tasks.spawn(self._poll_usage(), name=f"vm usage poller {process.pid}")

    async def run_command(self, process: RunProcess, sink: OutputSink) -> int:
        """Run ``process`` in the sandbox, streaming its output to ``sink`` as it comes; return its exit code.

        Cancelling the call kills the command's process group and waits (at most :data:`KILL_TIMEOUT`)
        for the agent to confirm. Raises :class:`RuntimeFailure` when the program cannot be started or the
        sandbox ends before the command does.
        """
        if self._state is not _State.STARTED:
            raise RuntimeFailure(self._not_running(f"cannot run {process.entry_point!r}"))
        command_id = next(self._ids)
        result: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        cwd = process.cwd or self.image.working_dir
        self._commands[command_id] = _Running(process.entry_point, cwd, sink, result)
        env = {**self._environment(), **{str(key): str(value) for key, value in process.env.items()}}
        request = {"op": "run", "id": command_id, "argv": [process.entry_point, *process.args], "env": env, "cwd": cwd}
        try:
            await self._send(request)
            # Shielded: cancelling this call must not cancel the future the agent's answer resolves.
            return await asyncio.shield(result)
        except asyncio.CancelledError:
            await self._kill(command_id, result)
            raise
        finally:
            self._commands.pop(command_id, None)

    async def stop(self) -> None:
        """End the sandbox and everything in it (grace :data:`STOP_GRACE`, then SIGKILL); remove ``work_dir``.

        Takes a last CPU reading first, so that the final figure includes the last commands. Idempotent, and
        safe before :meth:`deploy` and :meth:`start`.
        """
        async with self._stop_lock:
            if self._state is _State.STOPPED:
                return
            self._stopping = True
            try:
                if self._state is _State.STARTED:
                    with contextlib.suppress(RuntimeFailure):
                        await self.refresh_cpu_seconds(timeout=STOP_GRACE)
                    with contextlib.suppress(RuntimeFailure):
                        await self._send({"op": "exit"})
                await self._shut_down()
            finally:
                self._state = _State.STOPPED
                self._fail_all(RuntimeFailure("the activity was stopped before the command finished"))
                await asyncio.to_thread(_remove_tree, self.work_dir, self._root_fs)

    async def wait_ended(self) -> str:
        """Return why the sandbox ended when it ends by itself or is killed from outside (not at :meth:`stop`)."""
        await self._ended.wait()
        return self._end_reason

    # -- metering ----------------------------------------------------------------------------------------------

    def cpu_seconds(self) -> float:
        """CPU seconds of every process the activity ran, as last reported by the agent (see the module doc)."""
        return self._cpu

    async def refresh_cpu_seconds(self, *, timeout: float = USAGE_TIMEOUT) -> float:
        """Ask the agent for the CPU seconds now and return the (never decreasing) figure.

        Raises :class:`RuntimeFailure` when the sandbox does not answer within ``timeout`` seconds or is not
        running; before start and after the end it returns the last figure without asking.
        """
        if self._state is not _State.STARTED:
            return self._cpu
        usage_id = next(self._ids)
        answer: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._usage_waiters[usage_id] = answer
        try:
            await self._send({"op": "usage", "id": usage_id})
            cpu = await asyncio.wait_for(answer, timeout)
        except asyncio.TimeoutError:
            raise RuntimeFailure(f"the sandbox did not report its CPU usage within {timeout} s") from None
        finally:
            self._usage_waiters.pop(usage_id, None)
        self._record_cpu(cpu)
        return self._cpu

    async def wait_cpu_seconds(self, at_least: float, *, timeout: float) -> float:
        """Wait until the periodic reports reach ``at_least`` CPU seconds; return the figure.

        For tests and diagnostics. Raises :class:`RuntimeFailure` if it does not happen within ``timeout``.
        """

        async def reached() -> None:
            while self._cpu < at_least:
                await self._cpu_updated.wait()

        try:
            await asyncio.wait_for(reached(), timeout)
        except asyncio.TimeoutError:
            raise RuntimeFailure(
                f"CPU usage stayed at {self._cpu:.3f} s, below {at_least} s, for {timeout} s"
            ) from None
        return self._cpu

    # -- files, offers, self-test ------------------------------------------------------------------------------

    def container_path(self, path: str) -> Path:
        """The host path of ``path``, which must be inside a volume; ``..`` and symbolic links may not leave it."""
        names = ", ".join(volume.path for volume in self._volumes) or "none yet: deploy first"
        try:
            normal = check_sandbox_path(path, "path")
        except ValueError as exc:
            raise RuntimeFailure(f"{exc}; files can go to and from the volumes only ({names})") from None
        inside = [volume for volume in self._volumes if normal == volume.path or normal.startswith(volume.path + "/")]
        if not inside:
            raise RuntimeFailure(f"{path!r} is not inside a volume; files can go to and from these only: {names}")
        volume = max(inside, key=lambda candidate: len(candidate.path))
        root = volume.host_path.resolve()
        host = (volume.host_path / normal[len(volume.path) :].lstrip("/")).resolve()
        if host != root and root not in host.parents:
            raise RuntimeFailure(f"{path!r} leads out of the volume {volume.path} through a symbolic link; refused")
        return host

    def offer(self) -> OfferTemplate:
        """``golem.runtime.name`` ``vm`` and the package format of Golem VM images; no capabilities (no VPN)."""
        return OfferTemplate(
            properties={
                "golem.runtime.name": self.RUNTIME_NAME,
                "golem.runtime.version": self.RUNTIME_VERSION,
                "golem.srv.comp.vm.package_format": "gvmkit-squash",
            }
        )

    async def self_test(self) -> None:
        """Check that bubblewrap exists and can sandbox here (one test sandbox per process and bwrap path)."""
        await check_bubblewrap(self.bwrap)

    # -- the agent channel -------------------------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        python = self._python.env if self._python is not None else {}
        home = "/root" if self.image.rootfs else "/tmp"  # an image's root is writable: root's home, as in a VM
        return {"PATH": DEFAULT_PATH, "HOME": home, **python, **self.env, **self.image.env, **self._deploy_env}

    def _not_running(self, what: str) -> str:
        if self._state is _State.ENDED and self._end_reason:
            return f"{what}: {self._end_reason}"
        return f"{what}: the vm runtime is {self._state.value}; commands run between start and stop"

    def _stderr_note(self) -> str:
        text = self._stderr_tail.decode(errors="replace").strip()
        return f"; it said: {text}" if text else ""

    async def _send(self, request: Mapping[str, Any]) -> None:
        process = self._process
        if self._state is not _State.STARTED or process is None or process.stdin is None:
            raise RuntimeFailure(self._not_running("cannot reach the sandbox"))
        if process.returncode is not None or process.stdin.is_closing():
            # the agent is gone: writing would only pile up "pipe closed" warnings in asyncio's log
            raise RuntimeFailure(self._not_running("cannot reach the sandbox (its agent has exited)"))
        process.stdin.write(json.dumps(request, separators=(",", ":")).encode() + b"\n")
        try:
            await asyncio.wait_for(process.stdin.drain(), _SEND_TIMEOUT)
        except (ConnectionError, asyncio.TimeoutError) as exc:
            raise RuntimeFailure(self._not_running(f"cannot reach the sandbox ({exc!r})")) from None

    async def _kill(self, command_id: int, result: asyncio.Future[int]) -> None:
        if not result.done() and self._state is _State.STARTED:
            with contextlib.suppress(RuntimeFailure):
                await self._send({"op": "kill", "id": command_id})
            await asyncio.wait({result}, timeout=KILL_TIMEOUT)
        if result.done() and not result.cancelled():
            result.exception()  # retrieved: nobody else will look at it
        elif self._state is _State.STARTED:
            _log.warning("vm sandbox %s: command %d was not confirmed dead after a kill", self.sandbox_pid, command_id)

    async def _read_events(self, stdout: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await stdout.readline()
            except ValueError:  # a line over the limit: the agent never writes one; skip it
                _log.error("vm sandbox %s: an agent line exceeded %d bytes", self.sandbox_pid, _LINE_LIMIT)
                continue
            if not line:
                return
            try:
                event = json.loads(line)
                self._dispatch(event)
            except (ValueError, KeyError, TypeError) as exc:
                _log.error("vm sandbox %s: unreadable agent event %r: %s", self.sandbox_pid, line[:200], exc)

    def _dispatch(self, event: dict[str, Any]) -> None:
        kind = event["ev"]
        if kind == "out":
            running = self._commands.get(event["id"])
            if running is not None and not running.result.done():
                try:
                    running.sink(_STREAMS[event["fd"]], base64.b64decode(event["data"]))
                except Exception:
                    _log.exception("vm sandbox %s: the output sink of %r failed", self.sandbox_pid, running.program)
        elif kind == "exit":
            running = self._commands.get(event["id"])
            if running is not None and not running.result.done():
                running.result.set_result(int(event["code"]))
        elif kind == "failed":
            running = self._commands.get(event["id"])
            if running is not None and not running.result.done():
                running.result.set_exception(
                    RuntimeFailure(
                        f"cannot start {running.program!r} in the sandbox: {event['message']} "
                        f"(working directory {running.cwd})"
                    )
                )
        elif kind == "usage":
            waiter = self._usage_waiters.get(event["id"])
            if waiter is not None and not waiter.done():
                waiter.set_result(float(event["cpu"]))
        elif kind == "ready":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
        else:
            _log.warning("vm sandbox %s: agent says %s", self.sandbox_pid, event)

    async def _read_stderr(self, stderr: asyncio.StreamReader) -> None:
        while chunk := await stderr.read(4096):
            _log.debug("vm sandbox %s stderr: %s", self.sandbox_pid, chunk.decode(errors="replace").rstrip())
            self._stderr_tail = (self._stderr_tail + chunk)[-_STDERR_TAIL:]

    async def _watch(
        self, process: asyncio.subprocess.Process, reader: asyncio.Task[None], errors: asyncio.Task[None]
    ) -> None:
        code = await process.wait()
        await asyncio.wait({reader, errors}, timeout=1.0)  # let the last events and error lines in
        self.sandbox_pid = None
        reason = f"the sandbox {describe_exit(code)}{self._stderr_note()}"
        if self._stopping:
            return
        self._state = _State.ENDED
        self._end_reason = reason
        self._fail_all(RuntimeFailure(f"{reason}; the command did not finish"))
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(RuntimeFailure(f"the sandbox did not start: {reason}"))
        self._ended.set()

    def _fail_all(self, failure: RuntimeFailure) -> None:
        for running in self._commands.values():
            if not running.result.done():
                running.result.set_exception(failure)
        for waiter in self._usage_waiters.values():
            if not waiter.done():
                waiter.set_exception(failure)

    async def _poll_usage(self) -> None:
        while self._state is _State.STARTED:
            try:
                await self.refresh_cpu_seconds()
            except RuntimeFailure as exc:
                _log.debug("vm sandbox %s: no usage report: %s", self.sandbox_pid, exc)
            await asyncio.sleep(USAGE_INTERVAL)  # a period, not a wait for something to happen

    def _record_cpu(self, cpu: float) -> None:
        if cpu > self._cpu:
            self._cpu = cpu
            updated, self._cpu_updated = self._cpu_updated, asyncio.Event()
            updated.set()

    async def _shut_down(self) -> None:
        """End the bubblewrap process (grace, then SIGKILL), then cancel and await the runtime's tasks."""
        process = self._process
        if process is not None:
            if process.returncode is None:
                try:
                    await asyncio.wait_for(process.wait(), STOP_GRACE)
                except asyncio.TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            if process.stdin is not None:
                process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), _REAP_TIMEOUT)
            except asyncio.TimeoutError:
                _log.error("vm sandbox %s did not end within %s s of SIGKILL", process.pid, _REAP_TIMEOUT)
        await self._tasks.aclose()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(RuntimeFailure("the sandbox was stopped before its agent was ready"))
            self._ready.exception()  # whoever awaits it still gets it; nobody else needs to
        self.sandbox_pid = None


if TYPE_CHECKING:

    def _implements_runtime(runtime: VmRuntime) -> Runtime:
        return runtime  # mypy proves here that VmRuntime satisfies the Runtime protocol
