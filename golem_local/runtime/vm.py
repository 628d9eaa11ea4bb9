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
- the sandbox is a boundary (:mod:`~.launch`): when the node runs as root it runs as an unprivileged host
  uid of its own (:class:`~.launch.SandboxIdentity`), owner of its volumes and of its copy of the image;
  ``limits`` (:class:`~.launch.SandboxLimits`) are enforced as far as the :class:`~.launch.SandboxHost`
  can (control group, sized ``/tmp`` and ``/dev/shm``, rlimits otherwise).
- :meth:`~VmRuntime.cpu_seconds` is measured from outside the sandbox, never reported by anything inside
  it: the sandbox's control group (``cpuacct.usage``: every task that ever ran in it, read when asked and
  never polled, so a sandbox at rest costs the node nothing), or, without control groups, the host's
  ``/proc`` for the sandbox's PID namespace (sampled every :data:`USAGE_INTERVAL` seconds by an owned task,
  once more at :meth:`~VmRuntime.stop`, and on demand with :meth:`~VmRuntime.refresh_cpu_seconds`). Every
  figure is checked to be finite and not negative; it never goes down and keeps its last value after the
  sandbox ends. :attr:`~VmRuntime.memory_peak_bytes` is the memory high-water mark (the kernel's, as of the
  last reading, with control groups; the sampled maximum without).
- a command ended by a limit says so: :meth:`~VmRuntime.exit_note` (``killed: memory limit 512 MiB``).
- environment of a command, later entries winning: ``PATH`` and ``HOME=/tmp`` (``/root`` for an image with a
  root file system) defaults, the host Python's
  settings for a ``python`` image (:mod:`~.python_base`), the provider's ``env``, the image's ``env``, the
  ``deploy`` command's ``env``, the ``run`` command's ``env``.
- :meth:`~VmRuntime.stop` gives every process of the sandbox (commands and what they left in the background)
  SIGTERM, ends as soon as they are all gone, and kills what is left after ``stop_grace`` seconds.
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
import contextlib
import enum
import itertools
import json
import logging
import math
import os
import re
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from attrs import evolve, field, frozen

from golem_local.runtime.agent_channel import AgentChannel, BadEvent
from golem_local.runtime.base import (
    DEFAULT_STOP_GRACE,
    CommandChain,
    Deployment,
    DeploySettings,
    FlowControl,
    NetworkJoiner,
    OfferTemplate,
    OutputSink,
    RunProcess,
    Runtime,
    RuntimeFailure,
    Volume,
)
from golem_local.runtime.cgroups import CgroupUsage, SandboxCgroup
from golem_local.runtime.image import Image, check_sandbox_path, volume_of
from golem_local.runtime.launch import (
    MIB,
    Launch,
    ProcMeter,
    SandboxHost,
    SandboxIdentity,
    SandboxLimits,
    checked_seconds,
    default_sandbox_host,
    mapping_of_ints,
    spawn,
    stage_binds,
)
from golem_local.runtime.network import SandboxNetwork
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
from golem_local.runtime.storage import make_storage, remove_storage, storage_full
from golem_local.safefs import VolumeFiles
from golem_shared.errors import SandboxUnavailableError
from golem_shared.tasks import TaskSet, finish_first, reap

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
"""Seconds between two CPU usage samples while the sandbox runs."""
USAGE_TIMEOUT = 5.0
KILL_TIMEOUT = 2.0
"""Seconds a cancelled command may take to be reported dead before ``run_command`` gives up waiting."""
STOP_GRACE = 0.5
"""Seconds bubblewrap has to end at ``stop()`` once the agent has (beyond the processes' ``stop_grace``), and
that the last CPU reading may take, before the sandbox is killed."""
_REAP_TIMEOUT = 5.0
_SEND_TIMEOUT = 5.0
_LINE_LIMIT = 1 << 20  # an agent event line (output comes after its line, not in it)
_OUTPUT_LIMIT = 1 << 20  # bytes of one output event: the agent's CHUNK
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
    """A command sent to the agent: where its output goes and the future of its exit code; for a command of a
    chain, the chain and its place in it."""

    program: str
    cwd: str
    sink: OutputSink
    result: asyncio.Future[int]
    chain: _VmChain | None = None
    position: int = 0
    # The sink as FlowControl when it is one, found once: a runtime-checkable Protocol's isinstance took 6 % of the
    # node's time over a large output, asked after every piece.
    flow: FlowControl | None = field(init=False)

    @flow.default
    def _flow(self) -> FlowControl | None:
        return self.sink if isinstance(self.sink, FlowControl) else None


class _VmChain:
    """A chain of commands handed to the agent at once (:meth:`VmRuntime.run_chain`); implements
    :class:`~golem_local.runtime.base.CommandChain`.

    The agent starts each command the moment the one before it exited with code 0 and drops the rest after one
    that failed; the runtime applies the same rule as the exits come in (:meth:`skip_after`), so that nobody
    waits for a command that will never run. Each command's entry in the runtime's table (its sink, its future)
    goes when its result is taken, and the rest at :meth:`close`.
    """

    def __init__(self, runtime: VmRuntime, ids: Sequence[int], before: CgroupUsage | None) -> None:
        self._runtime = runtime
        self._ids = tuple(ids)
        self._skipped_from = len(self._ids)  # the first position that never runs (an earlier one failed)
        self._before = before  # the control group's counters before the next command (see VmRuntime.run_command)

    def skip_after(self, position: int) -> None:
        """The command at ``position`` failed: the ones after it never run (the agent drops them too)."""
        if position + 1 < self._skipped_from:
            for command_id in self._ids[position + 1 : self._skipped_from]:
                self._runtime._commands.pop(command_id, None)
            self._skipped_from = position + 1

    async def result(self, position: int) -> tuple[int, str | None]:
        """See :meth:`~golem_local.runtime.base.CommandChain.result`."""
        runtime = self._runtime
        command_id = self._ids[position]
        running = runtime._commands.get(command_id)
        if running is None:
            if position >= self._skipped_from:
                raise RuntimeFailure("not run: an earlier command of its chain failed")
            raise RuntimeFailure(runtime._not_running("the chained command did not run"))
        try:
            code = await running.result
        except asyncio.CancelledError:
            await self._end(position)
            raise
        except RuntimeFailure:
            runtime._commands.pop(command_id, None)
            raise
        runtime._commands.pop(command_id, None)
        if code == 0:
            runtime._exit_note = None
            self._before = runtime._recent_usage()
        else:
            runtime._exit_note = runtime._note_for(self._before, code)
        return code, runtime._exit_note

    async def _end(self, position: int) -> None:
        """The caller awaiting ``position`` was cancelled: kill the chain and wait (at most :data:`KILL_TIMEOUT`)
        until every command of it that may have started is confirmed ended."""
        runtime = self._runtime
        loop = asyncio.get_running_loop()
        for command_id in self._ids[position : self._skipped_from]:
            running = runtime._commands.get(command_id)
            if running is not None and running.result.cancelled():  # cancelled with the call: a fresh one
                runtime._commands[command_id] = evolve(running, result=loop.create_future())
        if self._unfinished(position) and runtime._state is _State.STARTED:
            runtime._wake_flow_control()
            with contextlib.suppress(RuntimeFailure):
                await runtime._send({"op": "kill", "id": self._ids[-1]})  # any command of it ends the whole chain
            deadline = loop.time() + KILL_TIMEOUT
            for current in range(position, len(self._ids)):
                running = runtime._commands.get(self._ids[current])
                if current >= self._skipped_from or running is None:
                    continue
                await asyncio.wait({running.result}, timeout=max(deadline - loop.time(), 0))
                if not running.result.done():
                    _log.warning(
                        "vm sandbox %s: command %d was not confirmed dead after a kill", runtime.sandbox_pid, current
                    )
                    break
        self._forget()

    def _unfinished(self, position: int = 0) -> bool:
        runtime = self._runtime
        for command_id in self._ids[position : self._skipped_from]:
            running = runtime._commands.get(command_id)
            if running is not None and not running.result.done():
                return True
        return False

    def _forget(self) -> None:
        for command_id in self._ids:
            running = self._runtime._commands.pop(command_id, None)
            if running is not None and running.result.done() and not running.result.cancelled():
                running.result.exception()  # retrieved: nobody else will look at it

    def close(self) -> None:
        """See :meth:`~golem_local.runtime.base.CommandChain.close`."""
        runtime = self._runtime
        if self._unfinished() and runtime._state is _State.STARTED:
            runtime._wake_flow_control()
            with contextlib.suppress(RuntimeFailure):
                runtime._send_nowait({"op": "kill", "id": self._ids[-1]})
        self._forget()


def _chown_tree(root: Path, owner: tuple[int, int]) -> None:
    """Give ``root`` and everything in it (links themselves, not what they point at) to ``owner``."""
    os.chown(root, *owner, follow_symlinks=False)
    for directory, subdirectories, files in os.walk(root):
        for name in (*subdirectories, *files):
            os.chown(os.path.join(directory, name), *owner, follow_symlinks=False)


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


@frozen
class _SandboxCommand:
    """What starts one sandbox: its ``layout`` and bubblewrap's ``options`` for it, the ``agent`` command inside,
    the ``prefix`` that runs before bubblewrap (a root file system's mount wrapper) with the descriptors it needs
    (``pass_fds``), and the host ``identity`` it runs as (``None``: the node's own, or the namespace of images,
    whose root the runtime's ``identity`` then names for the volumes' owner)."""

    layout: SandboxLayout
    options: list[str]  # bubblewrap's
    agent: list[str]
    prefix: list[str]
    pass_fds: tuple[int, ...]
    identity: SandboxIdentity | None


class VmRuntime:
    """The local ``vm`` runtime of one activity; implements :class:`~golem_local.runtime.base.Runtime`.

    ``work_dir`` belongs to the runtime: the volumes live under it (``<work_dir>/volumes/golem/in`` for
    ``/golem/in``) and :meth:`stop` removes it, with the activity's copy of the image (``<work_dir>/image``).
    ``env`` is the provider's extra environment (the image's environment wins over it). ``load_image``, when
    given, is awaited at :meth:`deploy` for the image to run instead of ``image`` (it raises
    :class:`RuntimeFailure` saying why it cannot give one). ``sandbox_pid`` is the host pid of the bubblewrap
    process while it runs. ``host`` is what the machine enforces (by default the process's shared
    :func:`~.launch.default_sandbox_host`); ``limits`` what this activity may use (by default nothing is
    limited, but the sandbox still runs as its own uid when the node is root, and is metered from outside).
    ``join_network``, when given, joins the VPNs a ``deploy`` names (its ``net``); the runtime then offers the
    ``vpn`` capability (:mod:`~golem_local.runtime.network`).
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
        join_network: NetworkJoiner | None = None,
        host: SandboxHost | None = None,
        limits: SandboxLimits | None = None,
        stop_grace: float = DEFAULT_STOP_GRACE,
    ) -> None:
        if not 0 <= stop_grace < math.inf:
            raise ValueError(f"stop_grace must be seconds of 0 or more, not {stop_grace!r}")
        self.stop_grace = stop_grace
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
        self._join_network = join_network
        self._network: SandboxNetwork | None = None  # the VPNs the deploy joined, if any
        self._state = _State.NEW
        self._volumes: tuple[Volume, ...] = ()
        self._deploy_env: dict[str, str] = {}
        self._hostname = DEFAULT_HOSTNAME
        self._process: asyncio.subprocess.Process | None = None
        self._channel: AgentChannel | None = None
        self._tasks = TaskSet("vm runtime", logger=_log)
        self._ready: asyncio.Future[None] | None = None
        self._commands: dict[int, _Running] = {}
        self._commanded = False  # whether a command was ever sent to the agent
        self._ids = itertools.count(1)
        self._killing = asyncio.Event()
        self.host = host if host is not None else default_sandbox_host()
        self.limits = limits if limits is not None else SandboxLimits()
        self.identity: SandboxIdentity | None = None
        self._files: VolumeFiles | None = None
        self._storage = False  # whether an ext4 file system of the storage limit is mounted over work_dir
        self._sandbox_id = f"{self.work_dir.name[:40]}-{secrets.token_hex(3)}"
        self._cgroup: SandboxCgroup | None = None
        self._meter: ProcMeter | None = None
        self._usage_at_start: CgroupUsage | None = None
        self._last_usage: CgroupUsage | None = None
        self._last_usage_at = -math.inf  # time.monotonic() of _last_usage
        self._exit_note: str | None = None
        self.memory_peak_bytes: int | None = None
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
        async with self.host.start_gate().slot("deploy"):  # a few at a time on this machine (see .gate)
            await self._set_up(volumes, hostname, settings)
        self._volumes = volumes
        self._deploy_env = {str(key): str(value) for key, value in settings.env.items()}
        self._hostname = hostname
        self._state = _State.DEPLOYED
        # "empty": start returns once the sandbox and its agent are up (the sandbox, not the call, lives on)
        return Deployment(start_mode="empty", volumes=volumes)

    async def _set_up(self, volumes: tuple[Volume, ...], hostname: str, settings: DeploySettings) -> None:
        """The deploy's work on the machine: the sandbox's uid, its storage, its directories and files, its
        VPN links, the volumes' descriptors."""
        if self.image.rootfs:  # the image's root is the root of the images' namespace: no uid of its own
            try:
                namespace = await asyncio.to_thread(user_namespace)
            except SandboxUnavailableError as exc:
                raise RuntimeFailure(f"cannot run the image's root file system: {exc}") from exc
            if namespace.root_owner is not None:
                self.identity = SandboxIdentity(*namespace.root_owner, None)
        else:
            self.identity = self.host.identity()
        if self.host.storage_quota and self.limits.storage_bytes is not None:
            gid = self.identity.gid if self.identity is not None else 0
            await make_storage(self.work_dir, self.limits.storage_bytes, gid)
            self._storage = True
        try:
            await asyncio.to_thread(self._make_directories, volumes)
        except OSError as exc:
            raise RuntimeFailure(f"cannot create the volume directories under {str(self.work_dir)!r}: {exc}") from exc
        if self.image.rootfs:
            await self._prepare_root_fs(hostname)
        else:
            await asyncio.to_thread(self._prepare_files)
        self._network = await SandboxNetwork.deploy(
            self._join_network, settings.networks, settings.hosts, hostname=hostname, work_dir=self.work_dir
        )
        owner = self.identity.owner if self.identity is not None else None
        try:
            self._files = VolumeFiles({volume.path: volume.host_path for volume in volumes}, owner=owner)
        except OSError as exc:
            raise RuntimeFailure(f"cannot open the volume directories under {str(self.work_dir)!r}: {exc}") from exc

    def _make_directories(self, volumes: Sequence[Volume]) -> None:
        """The activity's directory and its volumes; with an identity, the volumes are the sandbox's own
        and the activity's directory is ``root:<sandbox gid> 0750`` (the sandbox's user may pass, no other)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.identity is not None:
            os.chown(self.work_dir, 0, self.identity.gid)
            os.chmod(self.work_dir, 0o750)
        for volume in volumes:
            volume.host_path.mkdir(parents=True, exist_ok=True)
            if self.identity is not None:
                os.chown(volume.host_path, *self.identity.owner)

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
            if self.identity is not None:  # the activity's copy is writable: the sandbox's user owns it
                _chown_tree(copy, self.identity.owner)
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

    def _sandbox_command(self) -> _SandboxCommand:
        """How the sandbox starts with its agent (see :class:`_SandboxCommand`)."""
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
                share_net=self._network is not None and self._network.shares_net,
                hosts_file=self._network.hosts_file if self._network is not None else None,
                tmp_bytes=self.limits.tmp_bytes,
            )
            # The image's users keep their ids inside the namespace of images: no uid of the sandbox's own. Where
            # the node mounts the root itself (as root), it also binds what the namespace's root cannot reach.
            options = bwrap_args(layout)
            binds: list[tuple[str, str]] = []
            owner = root.namespace.root_owner
            if owner is not None:
                options, binds = stage_binds(options, owner, self.host.stage_dir(self._sandbox_id))
            return _SandboxCommand(layout, options, list(bundle.argv), root.wrapper(binds), root.pass_fds, None)
        layout = SandboxLayout(
            volumes=self._volumes,
            image_root=self._image_root,
            image_writable=True,
            python=self._python,
            working_dir=self.image.working_dir,
            hostname=self._hostname,
            files=((_AGENT_SCRIPT, AGENT_PATH),),
            host_binds=interpreter.binds,
            share_net=self._network is not None and self._network.shares_net,
            hosts_file=self._network.hosts_file if self._network is not None else None,
            tmp_bytes=self.limits.tmp_bytes,
            disable_userns=True,
        )
        return _SandboxCommand(
            layout, bwrap_args(layout), [interpreter.path, "-I", "-S", AGENT_PATH], [], (), self.identity
        )

    async def start(self, args: Sequence[str]) -> None:
        """Create the sandbox and wait (at most :data:`START_TIMEOUT` from its launch) for its agent to be ready.

        Sandboxes are set up a few at a time (:meth:`~.launch.SandboxHost.start_gate`): the call may first wait
        for its turn, and the agent's bound counts from the launch, not from the call.

        ``args`` (the ``start`` command's arguments) are accepted and ignored, as by a Golem VM.
        """
        if self._state is not _State.DEPLOYED:
            raise RuntimeFailure(f"cannot start: the vm runtime is {self._state.value}; deploy it first, start once")
        async with self.host.start_gate().slot("start"):  # a few at a time on this machine (see .gate)
            if self._state is not _State.DEPLOYED:  # stopped while it waited for its turn
                raise RuntimeFailure(f"cannot start: the vm runtime is {self._state.value}")
            await self._launch()

    async def _launch(self) -> None:
        """Start bubblewrap with the agent, put it into its limits, wait for the agent to be ready."""
        command = self._sandbox_command()
        agent = list(command.agent)
        rlimits = self.host.rlimits(self.limits)
        if rlimits:
            agent += ["--rlimits", mapping_of_ints(rlimits)]
        network_prefix = self._network.argv_prefix if self._network is not None else []
        self._state = _State.STARTED
        events_read, events_write = os.pipe()  # the agent's stdout, read by an AgentChannel
        try:
            launch = await spawn(
                self.bwrap,
                command.options,
                agent,
                host=self.host,
                identity=command.identity,
                limits=self.limits,
                sandbox_id=self._sandbox_id,
                prefix=[*network_prefix, *command.prefix],
                pass_fds=command.pass_fds,
                stream_limit=_LINE_LIMIT,
                stdout=events_write,
            )
        except RuntimeFailure as exc:
            os.close(events_read)
            self._state = _State.ENDED
            if "is not installed" in str(exc):
                raise RuntimeFailure(f"{MISSING_MESSAGE} (looked for {self.bwrap!r})") from None
            raise
        except BaseException:
            os.close(events_read)
            raise
        finally:
            os.close(events_write)
        process = launch.process
        events = os.fdopen(events_read, "rb", buffering=0)  # its transport closes it
        try:
            _, channel = await asyncio.get_running_loop().connect_read_pipe(
                lambda: AgentChannel(line_limit=_LINE_LIMIT, output_limit=_OUTPUT_LIMIT), events
            )
        except BaseException:
            events.close()
            await _abandon(launch, process)
            self._state = _State.ENDED
            raise
        self._channel = channel
        if self._stopping:  # stopped while bubblewrap was being started: its sandbox never runs
            channel.close()
            await _abandon(launch, process)
            raise RuntimeFailure("the activity was stopped before its sandbox started")
        assert process.stderr is not None
        self._process = process
        self._cgroup = launch.cgroup
        self.sandbox_pid = process.pid
        self._ready = asyncio.get_running_loop().create_future()
        reader = self._tasks.spawn(self._read_events(channel), name=f"vm agent events {process.pid}")
        errors = self._tasks.spawn(self._read_stderr(process.stderr), name=f"vm sandbox stderr {process.pid}")
        self._tasks.spawn(self._watch(process, reader, errors), name=f"vm sandbox watch {process.pid}")
        try:
            await self._release(launch)
            await asyncio.wait_for(asyncio.shield(self._ready), START_TIMEOUT)
        except asyncio.TimeoutError:
            await self._shut_down()
            await self._release_resources()
            self._state = _State.ENDED
            raise RuntimeFailure(
                f"the sandbox's agent did not answer within {START_TIMEOUT:.0f} s{self._stderr_note()}"
            ) from None
        except RuntimeFailure as exc:
            await self._shut_down()
            await self._release_resources()
            self._state = _State.ENDED
            raise RuntimeFailure(f"{exc}{self._stderr_note()}") from None
        finally:
            launch.close()
        if self._cgroup is None:  # a control group keeps its counters itself: read when asked, never polled
            self._tasks.spawn(self._poll_usage(), name=f"vm usage poller {process.pid}")

    async def _release(self, launch: Launch) -> None:
        """Let the blocked sandbox run once it is in its limits; set up the meter that fits the host."""
        try:
            await launch.release(timeout=START_TIMEOUT)
        except RuntimeFailure:
            if self._process is not None:  # bubblewrap ended: its exit and its words make the better message
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._process.wait(), STOP_GRACE)
            raise
        if self._cgroup is not None:
            self._usage_at_start = self._cgroup_usage()
        elif launch.pidns is not None:
            self._meter = ProcMeter(launch.pidns)

    async def run_command(self, process: RunProcess, sink: OutputSink) -> int:
        """Run ``process`` in the sandbox, streaming its output to ``sink`` as it comes; return its exit code.

        Cancelling the call kills the command's process group and waits (at most :data:`KILL_TIMEOUT`)
        for the agent to confirm. Raises :class:`RuntimeFailure` when the program cannot be started or the
        sandbox ends before the command does.
        """
        if self._state is not _State.STARTED:
            raise RuntimeFailure(self._not_running(f"cannot run {process.entry_point!r}"))
        command_id = next(self._ids)
        self._commanded = True
        result: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        cwd = process.cwd or self.image.working_dir
        self._commands[command_id] = _Running(process.entry_point, cwd, sink, result)
        env = {**self._environment(), **{str(key): str(value) for key, value in process.env.items()}}
        request = {"op": "run", "id": command_id, "argv": [process.entry_point, *process.args], "env": env, "cwd": cwd}
        before = self._recent_usage()
        self._exit_note = None
        try:
            await self._send(request)
            code = await result  # not shielded (a step less per command): a cancellation is handled below
            self._exit_note = self._note_for(before, code) if code != 0 else None
            return code
        except asyncio.CancelledError:
            if result.cancelled():  # cancelled with this call: the agent's answer comes to a fresh future
                result = asyncio.get_running_loop().create_future()
                self._commands[command_id] = evolve(self._commands[command_id], result=result)
            await self._kill(command_id, result)
            raise
        finally:
            self._commands.pop(command_id, None)

    async def run_chain(self, processes: Sequence[RunProcess], sinks: Sequence[OutputSink]) -> CommandChain:
        """Hand ``processes`` to the agent as one chain (see :class:`~golem_local.runtime.base.ChainRunner`): it
        starts each the moment the one before it exited with code 0, without waiting for the node.

        The commands get the environment and working directory :meth:`run_command` would give them; their output
        goes to ``sinks`` (one per command) as it comes. Raises :class:`RuntimeFailure` when the sandbox does
        not run.
        """
        if self._state is not _State.STARTED:
            raise RuntimeFailure(self._not_running(f"cannot run {processes[0].entry_point!r}"))
        if len(processes) != len(sinks):
            raise ValueError(f"{len(processes)} commands but {len(sinks)} sinks")
        self._commanded = True
        loop = asyncio.get_running_loop()
        env = self._environment()
        ids = [next(self._ids) for _ in processes]
        chain = _VmChain(self, ids, self._recent_usage())
        commands: list[dict[str, Any]] = []
        for position, (command_id, process, sink) in enumerate(zip(ids, processes, sinks, strict=True)):
            cwd = process.cwd or self.image.working_dir
            self._commands[command_id] = _Running(
                process.entry_point, cwd, sink, loop.create_future(), chain=chain, position=position
            )
            command: dict[str, Any] = {"id": command_id, "argv": [process.entry_point, *process.args], "cwd": cwd}
            if process.env:
                command["env"] = {**env, **{str(key): str(value) for key, value in process.env.items()}}
            commands.append(command)
        self._exit_note = None
        try:
            await self._send({"op": "chain", "env": env, "commands": commands})
        except BaseException:
            chain._forget()
            raise
        return chain

    def _note_for(self, before: CgroupUsage | None, code: int) -> str | None:
        """Why a command that ended with ``code`` (not 0) ended, when a limit explains it (see :meth:`exit_note`)."""
        note = self._limit_note(before, self._cgroup_usage(), code)
        if note is None and self._storage and storage_full(self.work_dir):
            note = self._storage_note()
        return note

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
                        await self.refresh_cpu_seconds(timeout=STOP_GRACE)  # before the sandbox's processes end
                    if self._commanded:
                        with contextlib.suppress(RuntimeFailure):  # SIGTERM everything, SIGKILL after the grace
                            await self._send({"op": "exit", "grace": self.stop_grace})
                    elif self._process is not None and self._process.stdin is not None:
                        # Nothing was ever started in the sandbox, nothing to end: the agent ends at the
                        # channel's end without loading what serving requests takes (see the agent's main).
                        self._process.stdin.close()
                await self._shut_down(self.stop_grace)
            finally:
                self._state = _State.STOPPED
                self._fail_all(RuntimeFailure("the activity was stopped before the command finished"))
                # Never left half-done by a cancellation: an activity gives up waiting for a stop that overran
                # its bound (a thousand sandboxes stopping at once on two cores, their releases queued on a
                # few threads), and a kill or an unmount skipped then would stay behind.
                await finish_first(self._give_back())

    async def _give_back(self) -> None:
        """Kill the sandbox if a cancelled stop left it running, end the runtime's tasks (again: harmless after a
        whole stop), then give back what the sandbox held."""
        if self._process is not None:  # killed at once if the grace was cut short
            await reap(self._process)
        await self._shut_down()
        await self._release_resources()
        if self._network is not None:  # after the sandbox: nothing may still hold its namespace
            await self._network.release()
        await asyncio.to_thread(_remove_tree, self.work_dir, self._root_fs)

    async def _release_resources(self) -> None:
        """The last reading, then the control group and the uid go back (every process of the sandbox is gone)."""
        files, self._files = self._files, None
        if files is not None:
            files.close()
        cgroup, self._cgroup = self._cgroup, None
        if cgroup is not None:
            with contextlib.suppress(OSError, RuntimeFailure):
                self._record_cgroup(cgroup.usage())
            await asyncio.to_thread(cgroup.remove)
        identity, self.identity = self.identity, None
        if identity is not None:
            identity.release()
        if self._storage:
            self._storage = False
            try:
                await remove_storage(self.work_dir)
            except RuntimeFailure as exc:
                _log.error("vm runtime: cannot unmount the activity's storage: %s", exc)
        await asyncio.to_thread(shutil.rmtree, self.host.stage_dir(self._sandbox_id), True)

    async def wait_ended(self) -> str:
        """Return why the sandbox ended when it ends by itself or is killed from outside (not at :meth:`stop`)."""
        await self._ended.wait()
        return self._end_reason

    # -- metering ----------------------------------------------------------------------------------------------

    def cpu_seconds(self) -> float:
        """CPU seconds of every process the activity ran, measured from outside the sandbox (see the module doc)."""
        cgroup = self._cgroup
        if self._state is _State.STARTED and cgroup is not None:
            try:  # one kernel counter, alone (every debit note asks): always current
                self._record_cpu(checked_seconds(cgroup.cpu_ns() / 1e9, "the sandbox's control group"))
            except OSError as exc:
                _log.debug("vm sandbox %s: no cgroup reading: %s", self.sandbox_pid, exc)
            except RuntimeFailure as exc:
                _log.error("vm sandbox %s: %s", self.sandbox_pid, exc)
        return self._cpu

    def counters(self) -> Mapping[str, float]:
        """None of its own: a VM meters duration and CPU seconds only."""
        return {}

    async def refresh_cpu_seconds(self, *, timeout: float = USAGE_TIMEOUT) -> float:
        """Measure the CPU seconds now and return the (never decreasing) figure.

        Raises :class:`RuntimeFailure` when the measurement does not finish within ``timeout`` seconds; before
        start and after the end it returns the last figure without measuring.
        """
        if self._state is not _State.STARTED:
            return self._cpu
        if self._cgroup is not None:
            self._cgroup_usage()
            return self._cpu
        meter = self._meter
        if meter is None:
            return self._cpu
        try:
            cpu, rss = await asyncio.wait_for(asyncio.to_thread(meter.sample), timeout)
        except asyncio.TimeoutError:
            raise RuntimeFailure(f"the sandbox's CPU usage could not be read within {timeout} s") from None
        self.memory_peak_bytes = max(self.memory_peak_bytes or 0, rss)
        self._record_cpu(checked_seconds(cpu, "the host's /proc"))
        return self._cpu

    async def wait_cpu_seconds(self, at_least: float, *, timeout: float) -> float:
        """Wait until the readings (the poller's, or this wait's own of a control group, every
        :data:`USAGE_INTERVAL` seconds) reach ``at_least`` CPU seconds; return the figure.

        For tests and diagnostics. Raises :class:`RuntimeFailure` if it does not happen within ``timeout``.
        """

        async def reached() -> None:
            while self._cpu < at_least:
                if self._cgroup is None:
                    await self._cpu_updated.wait()  # the poller's next sample
                else:  # nothing polls a control group: this wait reads it
                    self._cgroup_usage()
                    if self._cpu < at_least:
                        await asyncio.sleep(USAGE_INTERVAL)

        try:
            await asyncio.wait_for(reached(), timeout)
        except asyncio.TimeoutError:
            raise RuntimeFailure(
                f"CPU usage stayed at {self._cpu:.3f} s, below {at_least} s, for {timeout} s"
            ) from None
        return self._cpu

    def exit_note(self) -> str | None:
        """Why the command :meth:`run_command` last returned for ended, when a limit of the activity explains
        it: ``killed: memory limit 512 MiB …``, ``process limit 64 reached …``; ``None`` otherwise."""
        return self._exit_note

    def _cgroup_usage(self) -> CgroupUsage | None:
        """The control group's counters now (and the CPU figure recorded); ``None`` without one."""
        cgroup = self._cgroup
        if cgroup is None:
            return None
        try:
            usage = cgroup.usage()
        except OSError as exc:
            _log.debug("vm sandbox %s: no cgroup reading: %s", self.sandbox_pid, exc)
            return None
        self._record_cgroup(usage)
        return usage

    def _recent_usage(self) -> CgroupUsage | None:
        """The control group's counters as of at most :data:`USAGE_INTERVAL` seconds ago (what a limit did
        before a command): the last reading when it is that recent, so that a burst of commands reads the
        group once; ``None`` without one."""
        if time.monotonic() - self._last_usage_at < USAGE_INTERVAL:
            return self._last_usage
        return self._cgroup_usage()

    def _record_cgroup(self, usage: CgroupUsage) -> None:
        self._last_usage = usage
        self._last_usage_at = time.monotonic()
        try:
            self._record_cpu(checked_seconds(usage.cpu_ns / 1e9, "the sandbox's control group"))
        except RuntimeFailure as exc:
            _log.error("vm sandbox %s: %s", self.sandbox_pid, exc)
        if usage.memory_peak_bytes is not None and usage.memory_peak_bytes >= 0:
            self.memory_peak_bytes = max(self.memory_peak_bytes or 0, usage.memory_peak_bytes)

    def _storage_note(self) -> str:
        size = self.limits.storage_bytes or 0
        return (
            f"storage limit {size / MIB:g} MiB reached: the activity's volumes and its copy of the image are "
            "full (the offer's golem.inf.storage.gib)"
        )

    def _limit_note(self, before: CgroupUsage | None, after: CgroupUsage | None, code: int) -> str | None:
        """What a limit did to the sandbox while a command ran (see :meth:`exit_note`)."""
        if before is None or after is None:
            return None
        if after.oom_kills > before.oom_kills and code != 0:
            memory = self.limits.memory_bytes
            limit = f"{memory / MIB:g} MiB" if memory is not None else "the host's memory"
            killed = after.oom_kills - before.oom_kills
            return (
                f"killed: memory limit {limit} (the kernel ended {killed} process(es) of the activity for lack "
                "of memory; the offer's golem.inf.mem.gib is the activity's whole memory, /tmp and /dev/shm included)"
            )
        if after.refused_forks > before.refused_forks and code != 0:
            return (
                f"process limit {self.limits.processes} reached ({after.refused_forks - before.refused_forks} "
                "fork(s) refused); the activity cannot run more processes and threads at once"
            )
        return None

    # -- files, offers, self-test ------------------------------------------------------------------------------

    def volume_files(self) -> VolumeFiles:
        """The volumes as descriptors opened at :meth:`deploy` (closed at :meth:`stop`): what file transfer uses."""
        if self._files is None:
            raise RuntimeFailure(self._not_running("files cannot go to or from the activity"))
        return self._files

    def container_path(self, path: str) -> Path:
        """The host path of ``path``, which must be inside a volume; ``..`` and symbolic links may not leave it.

        For tests and diagnostics: the path may change under a running sandbox; file operations on the
        activity's behalf go through :meth:`volume_files`.
        """
        volume, unresolved = volume_of(self._volumes, path)
        root = volume.host_path.resolve()
        host = unresolved.resolve()
        if host != root and root not in host.parents:
            raise RuntimeFailure(f"{path!r} leads out of the volume {volume.path} through a symbolic link; refused")
        return host

    def offer(self) -> OfferTemplate:
        """``golem.runtime.name`` ``vm``, the package format of Golem VM images, and the capability ``vpn``
        when the runtime can join VPNs (``golem.runtime.capabilities``, as a Golem VM provider offers it)."""
        properties: dict[str, Any] = {
            "golem.runtime.name": self.RUNTIME_NAME,
            "golem.runtime.version": self.RUNTIME_VERSION,
            "golem.srv.comp.vm.package_format": "gvmkit-squash",
        }
        if self._join_network is not None:
            properties["golem.runtime.capabilities"] = ["vpn"]
        return OfferTemplate(properties=properties)

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

    def _send_nowait(self, request: Mapping[str, Any]) -> asyncio.StreamWriter:
        """Write ``request`` to the agent (what the pipe does not take at once is sent by the loop later); the
        writer. :class:`RuntimeFailure` when the agent cannot be reached."""
        process = self._process
        if self._state is not _State.STARTED or process is None or process.stdin is None:
            raise RuntimeFailure(self._not_running("cannot reach the sandbox"))
        if process.returncode is not None or process.stdin.is_closing():
            # the agent is gone: writing would only pile up "pipe closed" warnings in asyncio's log
            raise RuntimeFailure(self._not_running("cannot reach the sandbox (its agent has exited)"))
        process.stdin.write(json.dumps(request, separators=(",", ":")).encode() + b"\n")
        return process.stdin

    def _wake_flow_control(self) -> None:
        """A reader waiting for a congested sink reads on, so that the agent hears a kill."""
        killing, self._killing = self._killing, asyncio.Event()
        killing.set()

    async def _send(self, request: Mapping[str, Any]) -> None:
        stdin = self._send_nowait(request)
        if not stdin.transport.get_write_buffer_size():
            return  # the pipe took it all (as it nearly always does): nothing to wait for, no task for a drain
        try:
            await asyncio.wait_for(stdin.drain(), _SEND_TIMEOUT)
        except (ConnectionError, asyncio.TimeoutError) as exc:
            raise RuntimeFailure(self._not_running(f"cannot reach the sandbox ({exc!r})")) from None

    async def _kill(self, command_id: int, result: asyncio.Future[int]) -> None:
        self._wake_flow_control()
        if not result.done() and self._state is _State.STARTED:
            with contextlib.suppress(RuntimeFailure):
                await self._send({"op": "kill", "id": command_id})
            await asyncio.wait({result}, timeout=KILL_TIMEOUT)
        if result.done() and not result.cancelled():
            result.exception()  # retrieved: nobody else will look at it
        elif self._state is _State.STARTED:
            _log.warning("vm sandbox %s: command %d was not confirmed dead after a kill", self.sandbox_pid, command_id)

    async def _read_events(self, channel: AgentChannel) -> None:
        while (item := await channel.next_event()) is not None:
            if isinstance(item, BadEvent):
                _log.error("vm sandbox %s: unreadable agent event %r: %s", self.sandbox_pid, item.line, item)
                continue
            event, payload = item
            try:
                self._dispatch(event, payload)
            except (ValueError, KeyError, TypeError) as exc:
                _log.error("vm sandbox %s: unreadable agent event %r: %s", self.sandbox_pid, event, exc)
                continue
            await self._flow_control(event)

    async def _flow_control(self, event: dict[str, Any]) -> None:
        """After a piece of output: while its sink is congested, read no more (the agent, then the command,
        wait on their full pipes); a kill of the command ends the wait."""
        if event.get("ev") != "out":
            return
        running = self._commands.get(event["id"])
        if running is None or running.result.done() or running.flow is None:
            return
        sink = running.flow
        if sink.congested():
            waiting = asyncio.ensure_future(sink.wait_room())
            killing = asyncio.ensure_future(self._killing.wait())
            watched: set[asyncio.Future[Any]] = {waiting, killing, running.result}
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            killing.cancel()

    def _dispatch(self, event: dict[str, Any], payload: bytes = b"") -> None:
        """Act on one agent event (an output event's bytes in ``payload``); every field is checked
        (``ValueError`` for a malformed one)."""
        kind = event["ev"]
        if kind == "out":
            running = self._commands.get(_whole(event["id"], "id"))
            stream = _STREAMS.get(_whole(event["fd"], "fd"))
            if stream is None:
                raise ValueError("an output event names neither stdout nor stderr")
            if running is not None and not running.result.done():
                try:
                    running.sink(stream, payload)
                except Exception:
                    _log.exception("vm sandbox %s: the output sink of %r failed", self.sandbox_pid, running.program)
        elif kind == "exit":
            running = self._commands.get(_whole(event["id"], "id"))
            code = _whole(event["code"], "code")
            if not -255 <= code <= 255:
                raise ValueError(f"exit code {code} is out of range")
            if running is not None and not running.result.done():
                running.result.set_result(code)
            if running is not None and running.chain is not None and code != 0:
                running.chain.skip_after(running.position)
        elif kind == "failed":
            running = self._commands.get(_whole(event["id"], "id"))
            if running is not None and not running.result.done():
                running.result.set_exception(
                    RuntimeFailure(
                        f"cannot start {running.program!r} in the sandbox: {str(event['message'])[:500]} "
                        f"(working directory {running.cwd})"
                    )
                )
            if running is not None and running.chain is not None:
                running.chain.skip_after(running.position)
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
        note = self._limit_note(self._usage_at_start, self._cgroup_usage(), code)
        if note is not None:
            reason = f"{reason}: {note}"
        self._state = _State.ENDED
        self._end_reason = reason
        # The watcher of the end first (it marks the activity as ending in its first step), then the commands:
        # a command that fails here then says that the activity ended, and why.
        self._ended.set()
        self._fail_all(RuntimeFailure(f"{reason}; the command did not finish"))
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(RuntimeFailure(f"the sandbox did not start: {reason}"))

    def _fail_all(self, failure: RuntimeFailure) -> None:
        for running in self._commands.values():
            if not running.result.done():
                running.result.set_exception(failure)
                if running.chain is not None:
                    running.result.exception()  # a queued command's end may never be awaited: no warning for it

    async def _poll_usage(self) -> None:
        while self._state is _State.STARTED:
            try:
                await self.refresh_cpu_seconds()
            except RuntimeFailure as exc:
                _log.debug("vm sandbox %s: no usage reading: %s", self.sandbox_pid, exc)
            await asyncio.sleep(USAGE_INTERVAL)  # a period, not a wait for something to happen

    def _record_cpu(self, cpu: float) -> None:
        if cpu > self._cpu:
            self._cpu = cpu
            updated, self._cpu_updated = self._cpu_updated, asyncio.Event()
            updated.set()

    async def _shut_down(self, grace: float = 0.0) -> None:
        """End the bubblewrap process (``grace`` + :data:`STOP_GRACE`, then SIGKILL), then cancel and await the
        runtime's tasks."""
        process = self._process
        if process is not None:
            if process.returncode is None:
                try:
                    await asyncio.wait_for(process.wait(), grace + STOP_GRACE)
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
        if self._channel is not None:
            self._channel.close()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(RuntimeFailure("the sandbox was stopped before its agent was ready"))
        if self._ready is not None and not self._ready.cancelled():
            self._ready.exception()  # whoever awaits it still gets it; nobody else needs to
        self.sandbox_pid = None


def _whole(value: Any, name: str) -> int:
    """``value`` if it is an int (not a bool, not a float); ``ValueError`` naming the field otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, got {value!r:.50}")
    return value


if TYPE_CHECKING:

    def _implements_runtime(runtime: VmRuntime) -> Runtime:
        return runtime  # mypy proves here that VmRuntime satisfies the Runtime protocol


async def _abandon(launch: Launch, process: asyncio.subprocess.Process) -> None:
    """Undo a launch whose sandbox will not be used: its descriptors closed, bubblewrap killed and reaped, its
    control group removed."""
    launch.close()
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    await process.wait()
    if launch.cgroup is not None:
        await asyncio.to_thread(launch.cgroup.remove)
