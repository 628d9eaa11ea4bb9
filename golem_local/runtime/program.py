"""Runtimes that are programs: the runtime SDK's Command mode, a fresh process of the program per command.

A provider of the Golem network runs runtime binaries (written with the runtime SDK) through its exe-unit;
a local provider runs the same programs the same way. ``W`` is the activity's directory, ``EXTRA`` the
descriptor's ``extra-args``; every call runs in ``W`` with the node's environment and the provider's ``env``::

    PROGRAM --workdir W EXTRA… deploy --                       at deploy; prints the deployment JSON (below)
    PROGRAM --workdir W EXTRA… start -- ARGS…                  at start; ends once the runtime is started
    PROGRAM --workdir W EXTRA… run --entrypoint ENTRY -- ARGS… each run: a fresh process; its output is the
                                                               command's, its exit code the command's result
    PROGRAM EXTRA… test                                        the self-test at node start: exit code 0 = works
    PROGRAM EXTRA… offer-template                              prints {"constraints": "", "properties": {}}

The deployment JSON: ``{"startMode": "empty", "valid": {"Ok": ""}, "vols": [{"name": "in", "path": "/in"}]}``.
``vols`` are the activity's volumes: ``name`` a directory under ``W`` (created here), ``path`` its name inside
the runtime (what ``transfer`` commands and ``ctx.upload_file`` use). ``valid`` ``{"Err": "why"}`` fails the
``deploy`` command with ``why``. ``startMode`` ``"blocking"`` (the SDK's Server mode: ``start`` is a server
speaking the runtime API's protobuf protocol on stdio) is refused at deploy: the local node does not speak
that protocol; such a runtime answers ``"empty"`` and runs a process per command, or is written in Python
(:mod:`golem_local.runtime.base`).

Each ``run`` process is started in a session (process group) of its own. Cancelling the command (the
SDK's ``kill_command``, a script timeout) kills that group with SIGKILL. :meth:`ProgramRuntime.stop` sends
SIGTERM to every group still holding a process (running commands and what they left in the background),
waits until they are gone or ``stop_grace`` has passed, then sends SIGKILL. CPU seconds are the
``getrusage`` figures of each ``run`` process (with the children it waited for), counted when it ends, and
``/proc`` while it runs.

Descriptor files (:func:`load_descriptors`) are what the provider's plugins directory holds: a JSON list of
``{"name", "version", "runtime-path", "supervisor-path", "description", "extra-args", "properties"}``, of
which ``name`` and ``runtime-path`` are required; ``runtime-path`` is relative to the file's directory,
``supervisor-path`` is accepted and not used (the local node is its own exe-unit), ``properties`` go into
the provider's offers. :func:`program_runtimes` reads every ``*.json`` of the given directories.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from attrs import field, frozen

from golem_local.runtime.base import (
    DEFAULT_STOP_GRACE,
    Deployment,
    DeploySettings,
    FlowControl,
    OfferTemplate,
    OutputSink,
    RunProcess,
    RuntimeFailure,
    Volume,
)
from golem_local.runtime.image import check_sandbox_path, volume_of
from golem_local.runtime.registry import RuntimeContext, RuntimeDescriptor
from golem_local.safefs import VolumeFiles
from golem_shared.errors import LocalNodeError
from golem_shared.tasks import finish_first

if TYPE_CHECKING:
    from golem_local.runtime.base import Runtime

__all__ = [
    "RUNTIMES_DIR_ENV",
    "STEP_TIMEOUT",
    "ProgramRuntime",
    "ProgramSpec",
    "load_descriptors",
    "program_runtimes",
    "runtime_dirs_from_env",
]

_log = logging.getLogger(__name__)

RUNTIMES_DIR_ENV = "GOLEM_LOCAL_RUNTIMES_DIR"
"""Directories of runtime descriptor files (``os.pathsep``-separated), read at node start and by
``golem-api runtime``, after ``LocalNetworkConfig.runtime_dirs``."""
STEP_TIMEOUT = 120.0
"""Seconds ``deploy``, ``start``, ``test`` and ``offer-template`` of a runtime program may take before it is
killed and the step fails."""
_CHUNK = 65536
_DRAIN = 0.1  # seconds the output of an ended run is still read for (a background process may hold it open)
_REAP_TIMEOUT = 5.0
_GONE_POLL = 0.02  # seconds between two looks at whether the signalled process groups are gone
_TAIL = 2000
_KEYS = ("name", "version", "runtime-path", "supervisor-path", "description", "extra-args", "properties")


@frozen
class ProgramSpec:
    """One entry of a descriptor file: a runtime program and how to call it."""

    name: str
    runtime_path: Path
    source: Path  # the descriptor file it came from
    version: str = "0.0.0"
    description: str = ""
    extra_args: tuple[str, ...] = ()
    properties: Mapping[str, Any] = field(factory=dict)


def _bad(source: Path, index: int, what: str) -> LocalNodeError:
    return LocalNodeError(
        f'runtime descriptor {source}, entry {index}: {what}. An entry is a JSON object with at least "name" and '
        '"runtime-path" (the program, absolute or relative to the file), e.g. '
        '{"name": "my-runtime", "version": "1.0.0", "runtime-path": "my-runtime", "extra-args": []}'
    )


def _spec(source: Path, index: int, entry: Any) -> ProgramSpec:
    if not isinstance(entry, dict):
        raise _bad(source, index, f"not a JSON object but {entry!r:.80}")
    for key in ("name", "runtime-path"):
        if key not in entry:
            raise _bad(source, index, f"the key {key!r} is missing")
    name, path = entry["name"], entry["runtime-path"]
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise _bad(source, index, f'"name" must be a non-empty word without spaces, not {name!r}')
    for key in ("version", "description", "supervisor-path", "runtime-path"):
        if key in entry and not isinstance(entry[key], str):
            raise _bad(source, index, f"{key!r} of runtime {name!r} must be a string, not {entry[key]!r:.80}")
    extra = entry.get("extra-args", [])
    if not isinstance(extra, list) or not all(isinstance(arg, str) for arg in extra):
        raise _bad(source, index, f'"extra-args" of runtime {name!r} must be a list of strings, not {extra!r:.80}')
    properties = entry.get("properties", {})
    if not isinstance(properties, dict):
        raise _bad(source, index, f'"properties" of runtime {name!r} must be a JSON object, not {properties!r:.80}')
    program = Path(path).expanduser()
    if not program.is_absolute():
        program = source.parent / program
    if not program.is_file():
        raise _bad(source, index, f'"runtime-path" of runtime {name!r} is {path!r}: there is no file {program}')
    if not os.access(program, os.X_OK):
        raise _bad(
            source, index, f'"runtime-path" of runtime {name!r} is {path!r}: {program} is not executable (chmod +x it)'
        )
    return ProgramSpec(
        name=name,
        runtime_path=program,
        source=source,
        version=entry.get("version", "0.0.0"),
        description=entry.get("description", ""),
        extra_args=tuple(extra),
        properties=properties,
    )


def load_descriptors(path: Path) -> list[ProgramSpec]:
    """The runtimes of one descriptor file; :class:`LocalNodeError` naming the file, the entry and the key."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LocalNodeError(f"runtime descriptor {path} cannot be read: {exc}") from exc
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LocalNodeError(
            f"runtime descriptor {path} is not valid JSON ({exc}); it must hold a JSON list of runtimes, each "
            '{"name": ..., "runtime-path": ...}'
        ) from exc
    if not isinstance(entries, list):
        raise LocalNodeError(
            f"runtime descriptor {path} holds {type(entries).__name__} {text[:60]!r}, not a JSON list of runtimes; "
            "put the runtime's object in brackets: [{...}]"
        )
    return [_spec(path, index, entry) for index, entry in enumerate(entries)]


def runtime_dirs_from_env(environ: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """The directories :data:`RUNTIMES_DIR_ENV` names (none when it is unset or empty)."""
    value = (os.environ if environ is None else environ).get(RUNTIMES_DIR_ENV, "")
    return tuple(Path(part).expanduser() for part in value.split(os.pathsep) if part.strip())


def program_runtimes(directories: Iterable[Path]) -> tuple[RuntimeDescriptor, ...]:
    """A :class:`RuntimeDescriptor` for each runtime of the ``*.json`` descriptor files of ``directories``
    (sorted by file name); :class:`LocalNodeError` for a missing directory, a bad file, or a name given twice."""
    found: dict[str, ProgramSpec] = {}
    for directory in directories:
        if not directory.is_dir():
            raise LocalNodeError(
                f"runtimes directory {directory} does not exist (or is not a directory); create it or leave it out "
                f"of LocalNetworkConfig.runtime_dirs / --runtimes-dir / ${RUNTIMES_DIR_ENV}"
            )
        for path in sorted(directory.glob("*.json")):
            for spec in load_descriptors(path):
                first = found.get(spec.name)
                if first is not None:
                    raise LocalNodeError(
                        f"runtime {spec.name!r} is described twice: in {first.source} and in {spec.source}; "
                        "remove one of them"
                    )
                found[spec.name] = spec
    return tuple(_descriptor(spec) for spec in found.values())


def _descriptor(spec: ProgramSpec) -> RuntimeDescriptor:
    def make(context: RuntimeContext) -> ProgramRuntime:
        return ProgramRuntime(spec, context)

    where = f"program {spec.runtime_path}, from {spec.source}"
    return RuntimeDescriptor(
        name=spec.name,
        factory=make,
        version=spec.version,
        description=f"{spec.description} ({where})" if spec.description else f"a runtime {where}",
    )


class _Run:
    """One started process of the program: its exit (through a pidfd) and its usage once ended."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.pid = process.pid
        self.ended: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.cpu = 0.0
        self._pidfd = os.pidfd_open(self.pid)
        asyncio.get_running_loop().add_reader(self._pidfd, self._reap)

    def _reap(self) -> None:
        try:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: nothing more can be known
            pid, status, usage = self.pid, 255 << 8, None
        if pid == 0:
            return
        asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)
        if usage is not None:
            self.cpu = usage.ru_utime + usage.ru_stime
        code = os.waitstatus_to_exitcode(status)
        self.process.returncode = code  # so that Popen never waits for it again
        if not self.ended.done():
            self.ended.set_result(code)

    def cpu_now(self) -> float:
        """CPU seconds so far: from ``/proc`` while it runs (with the children it has reaped)."""
        if self.ended.done():
            return self.cpu
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks = sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
        except (OSError, IndexError, ValueError):
            return 0.0
        return ticks / os.sysconf("SC_CLK_TCK")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


class ProgramRuntime:
    """A runtime program driven in Command mode (see the module docstring); one per activity."""

    def __init__(self, spec: ProgramSpec, context: RuntimeContext) -> None:
        self.spec = spec
        self.work_dir = context.work_dir
        self.stop_grace = context.stop_grace if math.isfinite(context.stop_grace) else DEFAULT_STOP_GRACE
        self._env = {**os.environ, **context.env}
        self._volumes: tuple[Volume, ...] = ()
        self._files: VolumeFiles | None = None
        self._offer: OfferTemplate | None = None
        self._state: Literal["new", "deployed", "started", "stopped"] = "new"
        self._runs: set[_Run] = set()
        self._groups: set[int] = set()  # process groups of runs, kept while a process of theirs may be left
        self._cpu_done = 0.0
        self._cpu_seen = 0.0

    def __repr__(self) -> str:
        return f"<ProgramRuntime {self.spec.name} ({self.spec.runtime_path}) {self._state}>"

    # -- calling the program --------------------------------------------------------------------------------

    def _argv(self, *command: str, workdir: bool = True) -> list[str]:
        base = [str(self.spec.runtime_path)]
        if workdir:
            base += ["--workdir", str(self.work_dir)]
        return [*base, *self.spec.extra_args, *command]

    def _spawn(self, argv: Sequence[str], cwd: Path | None) -> tuple[_Run, subprocess.Popen[bytes]]:
        try:
            process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # a group of its own: killing the command kills what it started
            )
        except OSError as exc:
            raise RuntimeFailure(
                f"the runtime program {self.spec.runtime_path} of runtime {self.spec.name!r} cannot be started: "
                f"{exc.strerror or exc}"
            ) from exc
        try:
            run = _Run(process)
        except OSError as exc:  # no pidfd_open (Linux before 5.3): the process cannot be watched without a thread
            process.kill()
            process.wait()
            raise RuntimeFailure(
                f"runtime programs need pidfd_open (Linux 5.3 or newer) to watch their processes: {exc}"
            ) from exc
        self._runs.add(run)
        self._groups.add(run.pid)
        return run, process

    async def _call(self, step: str, argv: Sequence[str], cwd: Path | None) -> tuple[int, bytes, bytes]:
        """Run one step of the program to its end (bounded by :data:`STEP_TIMEOUT`): exit code, stdout, stderr."""
        run, process = self._spawn(argv, cwd)
        out: list[bytes] = []
        err: list[bytes] = []

        def keep(stream: Literal["stdout", "stderr"], data: bytes) -> None:
            (out if stream == "stdout" else err).append(data)

        try:
            code = await asyncio.wait_for(self._follow(run, process, keep), STEP_TIMEOUT)
        except asyncio.TimeoutError:
            raise RuntimeFailure(
                f"`{step}` of the runtime program {self.spec.runtime_path} did not end within {STEP_TIMEOUT:g} s; "
                "it was killed"
            ) from None
        return code, b"".join(out), b"".join(err)

    async def _follow(self, run: _Run, process: subprocess.Popen[bytes], sink: OutputSink) -> int:
        """Stream the process's output to ``sink`` until it has ended; its exit code. Cancelled: SIGKILL its group."""
        loop = asyncio.get_running_loop()
        pipes: tuple[tuple[Any, Literal["stdout", "stderr"]], ...] = (
            (process.stdout, "stdout"),
            (process.stderr, "stderr"),
        )
        readers = [
            loop.create_task(self._read(pipe, stream, sink), name=f"{stream} of {self.spec.name} {run.pid}")
            for pipe, stream in pipes
            if pipe is not None
        ]
        try:
            code = await asyncio.shield(run.ended)
            await asyncio.wait(readers, timeout=_DRAIN)  # what it wrote before it ended is in the pipes by now
            return code
        except asyncio.CancelledError:
            _signal_group(run.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(run.ended), _REAP_TIMEOUT)
            raise
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.wait(readers)
            for pipe in (process.stdout, process.stderr):
                if pipe is not None:
                    pipe.close()
            self._ended(run)

    async def _read(self, pipe: Any, stream: Literal["stdout", "stderr"], sink: OutputSink) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2 * _CHUNK)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
        flow = sink if isinstance(sink, FlowControl) else None  # found once: a Protocol's isinstance is slow
        try:
            while data := await reader.read(_CHUNK):
                sink(stream, data)
                if flow is not None and flow.congested():
                    await flow.wait_room()
        finally:
            transport.close()

    def _ended(self, run: _Run) -> None:
        if run.ended.done():
            self._runs.discard(run)
            self._cpu_done += run.cpu
        if not _group_alive(run.pid):
            self._groups.discard(run.pid)

    def _step_failed(self, step: str, code: int, out: bytes, err: bytes) -> RuntimeFailure:
        said = (err or out).decode("utf-8", "replace").strip()[-_TAIL:] or "nothing"
        return RuntimeFailure(
            f"`{step}` of the runtime program {self.spec.runtime_path} exited with code {code}; it said: {said}"
        )

    # -- the protocol ---------------------------------------------------------------------------------------

    async def deploy(self, settings: DeploySettings) -> Deployment:
        """``deploy --``: create the activity's directory and the volumes the program answers."""
        await asyncio.to_thread(self.work_dir.mkdir, parents=True, exist_ok=True)
        code, out, err = await self._call("deploy", self._argv("deploy", "--"), self.work_dir)
        if code != 0:
            raise self._step_failed("deploy", code, out, err)
        volumes = self._deployment(out)
        for volume in volumes:
            await asyncio.to_thread(volume.host_path.mkdir, parents=True, exist_ok=True)
        try:
            self._files = VolumeFiles({volume.path: volume.host_path for volume in volumes})
        except OSError as exc:
            raise RuntimeFailure(f"cannot open the volume directories under {self.work_dir}: {exc}") from exc
        self._volumes = volumes
        self._state = "deployed"
        return Deployment(start_mode="empty", volumes=volumes)

    def _deployment(self, out: bytes) -> tuple[Volume, ...]:
        """The volumes of the deploy's JSON; :class:`RuntimeFailure` saying what came back and what was expected."""
        text = out.decode("utf-8", "replace").strip()
        expected = '{"startMode": "empty", "valid": {"Ok": ""}, "vols": [{"name": "in", "path": "/in"}]}'
        try:
            answer = json.loads(text)
        except json.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict) or answer.get("startMode") not in ("empty", "blocking"):
            raise RuntimeFailure(
                f"`deploy` of the runtime program {self.spec.runtime_path} printed {text[:300]!r}, not the deployment "
                f"JSON the runtime SDK prints, e.g. {expected}"
            )
        valid = answer.get("valid", {"Ok": ""})
        if isinstance(valid, dict) and "Err" in valid:
            raise RuntimeFailure(f"the runtime found the deployment invalid: {valid['Err']}")
        if not (isinstance(valid, dict) and "Ok" in valid):
            raise RuntimeFailure(
                f'`deploy` of the runtime program {self.spec.runtime_path} answered "valid": {valid!r:.200}; '
                'expected {"Ok": "message"} or {"Err": "why not"}'
            )
        if answer["startMode"] == "blocking":
            raise RuntimeFailure(
                f'runtime {self.spec.name!r} answered startMode "blocking" (Server mode: a server speaking the '
                "runtime API's protobuf protocol on stdio); the local node does not support Server mode for runtime "
                'programs: make the program answer "empty" (a process per command), or write the runtime in Python '
                "(golem_local.runtime.base, docs/runtimes.md)"
            )
        return self._volumes_of(answer.get("vols", []))

    def _volumes_of(self, vols: Any) -> tuple[Volume, ...]:
        if not isinstance(vols, list):
            raise RuntimeFailure(f'`deploy` answered "vols": {vols!r:.200}; expected a list of {{"name", "path"}}')
        volumes: list[Volume] = []
        for vol in vols:
            name = vol.get("name") if isinstance(vol, dict) else None
            path = vol.get("path") if isinstance(vol, dict) else None
            if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\0" in name:
                raise RuntimeFailure(
                    f'`deploy` answered the volume {vol!r:.200}: "name" must be a directory name under the work '
                    "directory (no '/', not '..')"
                )
            try:
                inside = check_sandbox_path(path, "path") if isinstance(path, str) else None
            except ValueError as exc:
                raise RuntimeFailure(f"`deploy` answered the volume {vol!r:.200}: {exc}") from None
            if inside is None or inside == "/":
                raise RuntimeFailure(
                    f'`deploy` answered the volume {vol!r:.200}: "path" must be an absolute path inside the runtime '
                    "such as /in"
                )
            volumes.append(Volume(path=inside, host_path=self.work_dir / name))
        return tuple(volumes)

    async def start(self, args: Sequence[str]) -> None:
        """``start -- ARGS…``, once; what it prints is logged, a non-zero exit fails the ``start`` command."""
        if self._state != "deployed":
            raise RuntimeFailure(f"runtime {self.spec.name!r} is {self._state}; start comes once, after deploy")
        code, out, err = await self._call("start", self._argv("start", "--", *args), self.work_dir)
        if code != 0:
            raise self._step_failed("start", code, out, err)
        if out.strip():
            _log.debug("runtime %s started: %s", self.spec.name, out[:_TAIL].decode("utf-8", "replace"))
        self._state = "started"

    async def run_command(self, process: RunProcess, sink: OutputSink) -> int:
        """``run --entrypoint ENTRY -- ARGS…``: a fresh process, its output streamed, its exit code the result."""
        if self._state != "started":
            raise RuntimeFailure(f"runtime {self.spec.name!r} is {self._state}: commands run after start only")
        argv = self._argv("run", "--entrypoint", process.entry_point, "--", *process.args)
        run, popen = self._spawn(argv, self.work_dir)
        return await self._follow(run, popen, sink)

    async def stop(self) -> None:
        """SIGTERM every process group of the runs still holding a process, SIGKILL what is left after the
        grace; remove the activity's directory. Idempotent."""
        if self._state == "stopped":
            return
        self._state = "stopped"
        await finish_first(self._end())  # never left half-done by a cancellation: no process or file left behind

    async def _end(self) -> None:
        groups = {pgid for pgid in self._groups if _group_alive(pgid)}
        for pgid in groups:
            _signal_group(pgid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stop_grace
        # The kernel tells of no group's end (their leaders may be reaped already): look every _GONE_POLL s.
        while (groups := {pgid for pgid in groups if _group_alive(pgid)}) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(_GONE_POLL)
        for pgid in groups:
            _log.info(
                "runtime %s: process group %d outlived the stop grace of %g s: killed",
                self.spec.name,
                pgid,
                self.stop_grace,
            )
            _signal_group(pgid, signal.SIGKILL)
        running = [run.ended for run in self._runs if not run.ended.done()]
        if running:
            await asyncio.wait(running, timeout=_REAP_TIMEOUT)
        self._groups.clear()
        files, self._files = self._files, None
        if files is not None:
            files.close()
        await asyncio.to_thread(shutil.rmtree, self.work_dir, True)

    def cpu_seconds(self) -> float:
        """CPU seconds of the runs: ended ones from ``getrusage``, running ones from ``/proc``."""
        # never less than a figure given before: /proc counts in clock ticks, wait4 in microseconds
        self._cpu_seen = max(self._cpu_seen, self._cpu_done + sum(run.cpu_now() for run in self._runs))
        return self._cpu_seen

    def counters(self) -> Mapping[str, float]:
        """None of its own."""
        return {}

    def exit_note(self) -> str | None:
        """No limits are applied to runtime programs."""
        return None

    def container_path(self, path: str) -> Path:
        """The host path of ``path`` inside a volume the deploy answered."""
        return volume_of(self._volumes, path)[1]

    def volume_files(self) -> VolumeFiles:
        """The volumes the deploy answered, for file transfer."""
        if self._files is None or not self._volumes:
            raise RuntimeFailure(
                f"runtime {self.spec.name!r} has no volumes (its deploy answered none): files cannot go to or from it"
            )
        return self._files

    async def wait_ended(self) -> str:
        """Never returns: nothing runs between commands, so nothing can end by itself."""
        await asyncio.get_running_loop().create_future()
        return "unreachable"  # pragma: no cover

    def offer(self) -> OfferTemplate:
        """The descriptor's ``properties``, the version, and what ``offer-template`` printed at the self-test."""
        if self._offer is not None:
            return self._offer
        return OfferTemplate(properties={"golem.runtime.version": self.spec.version, **self.spec.properties})

    async def self_test(self) -> None:
        """``test`` (exit code 0, else :class:`LocalNodeError` with what it said), then ``offer-template``."""
        code, out, err = await self._call("test", self._argv("test", workdir=False), None)
        if code != 0:
            said = (err or out).decode("utf-8", "replace").strip()[-_TAIL:] or "nothing"
            raise LocalNodeError(
                f"the self-test of runtime program {self.spec.runtime_path} (`test`) exited with code {code}: {said}"
            )
        code, out, err = await self._call("offer-template", self._argv("offer-template", workdir=False), None)
        base = self.offer()
        if code != 0:  # as the daemon's exe-unit: a runtime without a template gets the defaults
            _log.info("runtime %s has no offer template (exit code %d): using the defaults", self.spec.name, code)
            self._offer = base
            return
        text = out.decode("utf-8", "replace").strip()
        try:
            template = json.loads(text)
        except json.JSONDecodeError:
            template = None
        properties = template.get("properties", {}) if isinstance(template, dict) else None
        constraints = template.get("constraints", "") if isinstance(template, dict) else None
        if not isinstance(properties, dict) or not isinstance(constraints, str):
            raise LocalNodeError(
                f"`offer-template` of runtime program {self.spec.runtime_path} printed {text[:300]!r}, not "
                '{"constraints": "...", "properties": {...}}'
            )
        self._offer = OfferTemplate(properties={**base.properties, **properties}, constraints=constraints)


if TYPE_CHECKING:

    def _implements_runtime(runtime: ProgramRuntime) -> Runtime:
        return runtime  # mypy proves here that ProgramRuntime satisfies the Runtime protocol
