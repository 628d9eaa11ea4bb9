"""The ``container`` runtime: an activity's image run in a container engine (docker when its daemon answers, else
podman; :mod:`~.container_engine` says how to name one), one container per activity.

- :meth:`~ContainerRuntime.deploy` gets the image (the demand's GVMI from the node's image cache, as ``vm``
  does), imports it into the engine once (:class:`~.engine_image.EngineImages`: the node removes what it
  imported when it stops, never an image the engine had before) and makes a host directory per volume of the
  image; those are bound into the container, so file transfer works as with ``vm``. With a storage limit (and
  root, loop devices, ``mkfs.ext4``: :mod:`~.storage`) the activity's directory is an ext4 file system of that
  size, as for ``vm``; the volumes live in it.
- a ``deploy`` that joins VPNs (its ``net``) joins them as ``vm`` does (:mod:`~.network`): podman runs the
  container in the activity's network namespace (``--network ns:``); docker cannot be given one, so its
  container starts with ``--network none`` and its own namespace is then named and given the VPN links (the
  main process starts a moment before its links exist: a server binding ``0.0.0.0`` does not notice). The
  ``hosts`` of the deploy and the hostname at the first VPN address are the container's ``/etc/hosts``.
- :meth:`~ContainerRuntime.start` creates the container: no network but its VPNs, the provider's limits
  (``--memory`` = ``--memory-swap``, ``--cpus``, ``--pids-limit``), the volumes; with a storage limit, docker's
  ``overlay2`` writable layer (its ``UpperDir``/``WorkDir``) is moved onto the activity's file system
  (:mod:`~.container_layer`: a bind mount over the layer's directory before ``start``), so what a command writes
  outside the volumes counts against the same limit; podman's stays in podman's storage (why:
  :mod:`~.container_layer`, :attr:`~ContainerRuntime.layer_note`). Its main process is the ``start``
  command's arguments when given (a server), else ``sleep infinity`` (the image needs a ``sleep``), under a
  ``/bin/sh`` that ends on ``SIGTERM`` when the image has one, so that a stop does not sit out the grace.
- each ``run`` is an ``exec`` in it, output streamed as it comes; a killed command (the call cancelled) is killed
  inside the container from the host: its processes are found in the container's control group by a mark in
  their environment.
- CPU seconds are read from the container's control group (``cpuacct.usage``, or ``cpu.stat`` on cgroup v2),
  from the host, and kept after the container ends; a command the memory limit killed, or that failed with the
  storage full, says so (:meth:`~ContainerRuntime.exit_note`).
- :meth:`~ContainerRuntime.stop` gives the main process :data:`STOP_GRACE` seconds after ``SIGTERM``, then
  ``SIGKILL`` (the engine's ``stop -t``), and removes the container, its VPN links, the storage and the volumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import shutil
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from golem_local.runtime.base import (
    Deployment,
    DeploySettings,
    NetworkJoiner,
    OfferTemplate,
    OutputSink,
    RunProcess,
    RuntimeFailure,
    Volume,
)
from golem_local.runtime.container_engine import QUERY_TIMEOUT, ContainerEngine, find_engine
from golem_local.runtime.container_layer import WritableLayer
from golem_local.runtime.engine_image import EngineImages
from golem_local.runtime.idle import IdleRuntime
from golem_local.runtime.image import Image, check_sandbox_path, volume_of
from golem_local.runtime.launch import MIB, SandboxHost, SandboxLimits, default_sandbox_host
from golem_local.runtime.network import SandboxNetwork
from golem_local.runtime.sandbox import DEFAULT_HOSTNAME
from golem_local.runtime.storage import make_storage, remove_storage, storage_full
from golem_local.safefs import VolumeFiles
from golem_shared.tasks import finish_first, reap, set_once

__all__ = ["STOP_GRACE", "ContainerRuntime"]

STOP_GRACE = 5.0
"""Seconds the container's main process has after ``SIGTERM`` before ``SIGKILL``, at :meth:`ContainerRuntime.stop`."""
_MARK = "GOLEM_LOCAL_EXEC"
_log = logging.getLogger(__name__)
_said: set[str] = set()
_CGROUP_ROOT = Path("/sys/fs/cgroup")


def _groups(pid: int) -> dict[str, Path]:
    """The control-group directories of ``pid`` by controller (``""``: the unified hierarchy)."""
    found: dict[str, Path] = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            mount = _CGROUP_ROOT / controller if controller else _CGROUP_ROOT
            if controller and not mount.is_dir():
                mount = _CGROUP_ROOT / controllers
            found[controller] = mount / path.lstrip("/")
    if "" in found and not (found[""] / "cgroup.procs").exists():
        del found[""]
    return found


def _keyed(path: Path) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            values[key] = int(value)
    return values


class ContainerRuntime(IdleRuntime):
    """The ``container`` runtime of one activity (see the module docstring).

    ``engine`` names the engine (``docker`` or ``podman``; default: :func:`~.container_engine.find_engine`'s
    choice). ``images`` is the owner of what is imported into the engine (the node's, removed when it stops);
    without one the runtime has its own and removes what it imported at :meth:`stop`. ``join_network``, when
    given, joins the VPNs of a ``deploy``'s ``net`` (the runtime then offers the ``vpn`` capability); ``host``
    says whether the storage limit can be a file system here (by default the process's shared one).
    """

    def __init__(
        self,
        image: Image,
        work_dir: Path,
        *,
        limits: SandboxLimits | None = None,
        env: Mapping[str, str] | None = None,
        load_image: Callable[[], Awaitable[Image]] | None = None,
        stop_grace: float = STOP_GRACE,
        engine: str | None = None,
        images: EngineImages | None = None,
        join_network: NetworkJoiner | None = None,
        host: SandboxHost | None = None,
    ) -> None:
        if not stop_grace >= 0:
            raise ValueError(f"stop_grace must be seconds of 0 or more, not {stop_grace!r}")
        self.image = image
        self.work_dir = Path(work_dir)
        self.limits = limits or SandboxLimits()
        self.env = dict(env or {})
        self.stop_grace = stop_grace
        self._load_image = load_image
        self._wanted = engine
        self._own_images = images is None
        self._images = images if images is not None else EngineImages()
        self._join_network = join_network
        self._host = host
        self.name = f"golem-local-{secrets.token_hex(8)}"
        self._engine: ContainerEngine | None = None
        self._tag: str | None = None
        self._volumes: tuple[Volume, ...] = ()
        self._files: VolumeFiles | None = None
        self._deploy_env: dict[str, str] = {}
        self._hostname = DEFAULT_HOSTNAME
        self._network: SandboxNetwork | None = None
        self._storage = False  # whether an ext4 file system of the storage limit is mounted over work_dir
        self._layer: WritableLayer | None = None
        self.layer_note: str | None = None
        """Why the container's writable layer is not on the activity's file system (``None``: it is, or no limit)."""
        self._groups: dict[str, Path] = {}
        self._cpu_seconds = 0.0
        self._note: str | None = None
        self._created = False
        self._started = False
        self._stopped = False
        self._ended: asyncio.Task[str] | None = None
        self.main_exit_code: int | None = None
        """The exit code of the container's main process once it has ended (137: killed after the grace)."""

    @property
    def engine(self) -> ContainerEngine | None:
        """The engine the container runs in (``None`` before :meth:`deploy`)."""
        return self._engine

    # -- deploy, start, stop -------------------------------------------------------------------------------

    async def deploy(self, settings: DeploySettings) -> Deployment:
        """Get and import the image, make the storage and the volumes' directories, join the VPNs."""
        if self._stopped:
            raise RuntimeFailure("the activity's runtime was stopped: create a new activity")
        self._engine = engine = await self._images.engine(self._wanted)
        if self._load_image is not None:
            self.image = await self._load_image()
        self._tag = await self._images.acquire(engine, self.image)
        hostname = settings.hostname or DEFAULT_HOSTNAME
        paths: list[str] = []
        for path in dict.fromkeys([*self.image.volumes, *settings.volumes]):
            try:
                paths.append(check_sandbox_path(path, "volume"))
            except ValueError as exc:
                raise RuntimeFailure(str(exc)) from None
        host = self._host if self._host is not None else default_sandbox_host()
        self.work_dir.mkdir(parents=True, exist_ok=True)  # the container's monitor runs there (see start)
        if host.storage_quota and self.limits.storage_bytes is not None:
            await make_storage(self.work_dir, self.limits.storage_bytes, 0)
            self._storage = True
        self._volumes = tuple(Volume(path, self.work_dir / "volumes" / str(index)) for index, path in enumerate(paths))
        for volume in self._volumes:
            volume.host_path.mkdir(parents=True, exist_ok=True)
        self._files = VolumeFiles({volume.path: volume.host_path for volume in self._volumes})
        self._network = await SandboxNetwork.deploy(
            self._join_network,
            settings.networks,
            settings.hosts,
            hostname=hostname,
            work_dir=self.work_dir,
            join_later=engine.name == "docker",
        )
        self._deploy_env = dict(settings.env)
        self._hostname = hostname
        return Deployment(start_mode="empty", volumes=self._volumes)

    def _run_options(self) -> list[str]:
        assert self._engine is not None
        network = self._network
        netns = network.netns_path if network is not None else None
        options = ["--name", self.name, "--network", f"ns:{netns}" if netns else "none", "--hostname", self._hostname]
        if self._engine.name == "podman":
            if shutil.which("runc") is not None:
                options += ["--runtime", "runc"]
            options += ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]
        if network is not None and network.hosts_file is not None:
            options += ["--volume", f"{network.hosts_file}:/etc/hosts:ro"]
        if network is not None and network.shares_net:  # no raw sockets in a VPN (no forged source addresses)
            options += ["--cap-drop", "NET_RAW"]
        limits = self.limits
        if limits.memory_bytes is not None:
            options += ["--memory", str(limits.memory_bytes), "--memory-swap", str(limits.memory_bytes)]
        if limits.cpu_threads is not None:
            options += ["--cpus", str(limits.cpu_threads)]
        if limits.processes is not None:
            options += ["--pids-limit", str(limits.processes)]
        for volume in self._volumes:
            options += ["--volume", f"{volume.host_path}:{volume.path}:rw"]
        for key, value in {**self.env, **self._deploy_env}.items():
            options += ["--env", f"{key}={value}"]
        return options

    async def start(self, args: Sequence[str]) -> None:
        """Run the container: ``args`` as its main process (a server), else ``sleep infinity``."""
        engine = self._engine
        if engine is None or self._tag is None or self._stopped:
            raise RuntimeFailure("the container runtime was not deployed: deploy before start")
        main = list(args) or self._idle_main()
        code, said = await engine.call("create", *self._run_options(), "--entrypoint", main[0], self._tag, *main[1:])
        if code != 0:
            raise RuntimeFailure(f"the container could not be created ({' '.join(main)}): {said[-500:]}")
        self._created = True
        if self._storage:
            moved = await WritableLayer.move(engine, self.name, self.work_dir / "layer")
            if isinstance(moved, str):
                self.layer_note = f"{moved}: the storage limit bounds the volumes only"
                if self.layer_note not in _said:  # once per process: it is the same for every activity
                    _said.add(self.layer_note)
                    _log.warning("container runtime: %s", self.layer_note)
            else:
                self._layer = moved
        # podman's conmon, which watches the container from here on, writes a file named ``oom`` into its working
        # directory when a process of the container is killed for memory: the activity's, not the node's
        code, said = await engine.call("start", self.name, cwd=self.work_dir)
        if code != 0:
            raise RuntimeFailure(f"the container could not be started ({' '.join(main)}): {said[-500:]}")
        self._started = True
        if self._layer is not None and not await asyncio.to_thread(self._layer.in_place):
            self.layer_note = (
                f"{engine.name} covered the moved writable layer with a mount of its own: the storage limit bounds "
                "the volumes only"
            )
            _log.warning("container runtime: %s (container %s)", self.layer_note, self.name)
        code, pid = await engine.call("inspect", "--format", "{{.State.Pid}}", self.name)
        if code == 0 and pid.isdigit() and int(pid) > 0:
            with contextlib.suppress(OSError, ValueError):
                self._groups = _groups(int(pid))
        if not self._groups:
            raise RuntimeFailure(
                f"the container {self.name} ended at once or its control group cannot be found (it said: {pid}); "
                f"its logs: `{engine.name} logs {self.name}`"
            )
        if self._network is not None:
            await self._network.join_holder(int(pid))
        self._ended = asyncio.create_task(self._wait(), name=f"wait for container {self.name}")

    def _idle_main(self) -> list[str]:
        """The main process without a server: ``sleep infinity``, under a shell that ends on ``SIGTERM`` when the
        image has ``/bin/sh`` (a process 1 gets no default action for ``SIGTERM``: ``sleep`` alone would sit out
        the whole grace at every stop)."""
        root = self.image.root
        if root is not None and os.path.lexists(root / "bin" / "sh"):
            return ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"]
        return ["sleep", "infinity"]

    async def _wait(self) -> str:
        assert self._engine is not None
        process = await asyncio.create_subprocess_exec(
            self._engine.program,
            "wait",
            self.name,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self._engine.env(),
        )
        out, _ = await process.communicate()
        said = out.decode(errors="replace").strip()
        if said.lstrip("-").isdigit():
            self.main_exit_code = int(said)
        return f"the container's main process ended (exit code {said})"

    async def wait_ended(self) -> str:
        """Return when the container's main process has ended by itself."""
        if self._ended is None:
            await asyncio.get_running_loop().create_future()
        assert self._ended is not None
        return await asyncio.shield(self._ended)

    async def stop(self) -> None:
        """``SIGTERM`` the main process, ``SIGKILL`` after :attr:`stop_grace`; remove the container, its VPN
        links, the storage and the volumes (and the images imported, when the runtime owns them)."""
        if self._stopped:
            return
        self._stopped = True
        # Never left half-done by a cancellation (an activity gives up waiting for a stop that overran its
        # bound): a container, a mount or a VPN link skipped then would stay behind.
        await finish_first(self._end())

    async def _end(self) -> None:
        self._read_cpu()
        engine = self._engine
        if self._started and engine is not None:
            await engine.call("stop", "--time", str(math.ceil(self.stop_grace)), self.name)
            self._read_cpu()
            if self._ended is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._ended), QUERY_TIMEOUT)
        if self._layer is not None:  # the container has stopped: the engine has unmounted its root
            await self._layer.release()
        if self._created and engine is not None:
            await engine.call("rm", "--force", self.name)
        if self._ended is not None:
            self._ended.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ended
        if self._network is not None:  # after the container: nothing of it holds the namespace any more
            await self._network.release()
        if self._files is not None:
            self._files.close()
            self._files = None
        if self._storage:
            self._storage = False
            try:
                await remove_storage(self.work_dir)
            except RuntimeFailure as exc:
                _log.error("container runtime: cannot unmount the activity's storage: %s", exc)
        await asyncio.to_thread(shutil.rmtree, self.work_dir, True)
        if self._own_images:
            await self._images.aclose()

    # -- commands ------------------------------------------------------------------------------------------

    async def run_command(self, process: RunProcess, sink: OutputSink) -> int:
        """``exec`` the command in the container, streaming its output; killed inside when cancelled."""
        if not self._started or self._stopped or self._engine is None:
            raise RuntimeFailure("the container is not running: deploy and start the activity first")
        if self._ended is not None and self._ended.done():
            raise RuntimeFailure("the container has ended: create a new activity")
        mark = secrets.token_hex(8)
        options = ["--env", f"{_MARK}={mark}"]
        for key, value in process.env.items():
            options += ["--env", f"{key}={value}"]
        if process.cwd:
            options += ["--workdir", process.cwd]
        oom_before = self._oom_kills()
        self._note = None
        child = await asyncio.create_subprocess_exec(
            self._engine.program,
            "exec",
            *options,
            self.name,
            process.entry_point,
            *process.args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._engine.env(),
        )

        async def pump(stream: asyncio.StreamReader | None, name: str) -> None:
            assert stream is not None
            while chunk := await stream.read(65536):
                sink(name, chunk)  # type: ignore[arg-type]

        try:
            await asyncio.gather(pump(child.stdout, "stdout"), pump(child.stderr, "stderr"))
            code = await child.wait()
        except asyncio.CancelledError:
            killed = self._kill_marked(mark)
            await reap(child)
            await _ended(killed, KILL_BOUND)  # a signal is delivered when the process next runs: wait for that
            # A process in the middle of an exec has no environment to read for a moment (`sh -c "…; exec sleep"`
            # cancelled right after its first output): the first look missed it, a second one finds it.
            await _ended(self._kill_marked(mark), KILL_BOUND)
            raise
        self._read_cpu()
        if self._oom_kills() > oom_before:
            limit = self.limits.memory_bytes or 0
            self._note = f"killed: memory limit {limit // MIB} MiB of the container reached"
        elif code != 0 and self._storage and storage_full(self.work_dir):
            size = self.limits.storage_bytes or 0
            where = "volumes" if self._layer is None else "volumes and its writable layer"
            self._note = (
                f"storage limit {size / MIB:g} MiB reached: the container's {where} are full "
                "(the offer's golem.inf.storage.gib)"
            )
        return code

    def _kill_marked(self, mark: str) -> list[int]:
        """SIGKILL the container's processes carrying ``mark`` (one killed command's); a pidfd of each signalled
        one (the caller closes them: :func:`_ended`)."""
        group = self._groups.get("pids") or self._groups.get("")
        if group is None:
            return []
        needle = f"{_MARK}={mark}".encode()
        killed: list[int] = []
        with contextlib.suppress(OSError):
            for pid in (group / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    if needle not in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                        continue
                    # through a pidfd, so that a pid reused meanwhile is never signalled nor waited for
                    fd = os.pidfd_open(int(pid))
                    try:
                        signal.pidfd_send_signal(fd, signal.SIGKILL)
                    except OSError:
                        os.close(fd)
                        continue
                    killed.append(fd)
        return killed

    # -- metering ------------------------------------------------------------------------------------------

    def _read_cpu(self) -> None:
        try:
            if "cpuacct" in self._groups:
                seconds = int((self._groups["cpuacct"] / "cpuacct.usage").read_text()) / 1e9
            elif "" in self._groups:
                seconds = _keyed(self._groups[""] / "cpu.stat").get("usage_usec", 0) / 1e6
            else:
                return
        except (OSError, ValueError):
            return  # the container is gone: the last figure stays
        self._cpu_seconds = max(self._cpu_seconds, seconds)

    def _oom_kills(self) -> int:
        try:
            if "memory" in self._groups:
                return _keyed(self._groups["memory"] / "memory.oom_control").get("oom_kill", 0)
            if "" in self._groups:
                return _keyed(self._groups[""] / "memory.events").get("oom_kill", 0)
        except OSError:
            pass
        return 0

    def cpu_seconds(self) -> float:
        """CPU seconds of every process the container ran, from its control group."""
        if not self._stopped:
            self._read_cpu()
        return self._cpu_seconds

    def exit_note(self) -> str | None:
        """``killed: memory limit …`` when the last command was ended by the memory limit, ``storage limit …
        reached`` when it failed with the activity's file system full."""
        return self._note

    # -- files, offer, self-test ---------------------------------------------------------------------------

    def volume_files(self) -> VolumeFiles:
        """The volumes' host directories, for file transfer."""
        if self._files is None:
            raise RuntimeFailure("the container runtime has no volumes before deploy or after stop")
        return self._files

    def container_path(self, path: str) -> Path:
        """The host path of ``path`` inside a volume."""
        return volume_of(self._volumes, path)[1]

    def offer(self) -> OfferTemplate:
        """``golem.runtime.name`` ``container``, the GVMI package format, and ``vpn`` in
        ``golem.runtime.capabilities`` when the runtime can join VPNs."""
        properties: dict[str, object] = {
            "golem.runtime.name": "container",
            "golem.runtime.version": "0.2.0",
            "golem.srv.comp.vm.package_format": "gvmkit-squash",
        }
        if self._join_network is not None:
            properties["golem.runtime.capabilities"] = ["vpn"]
        return OfferTemplate(properties=properties)

    async def self_test(self) -> None:
        """Raise :class:`SandboxUnavailableError` when no engine answers (what to install or start)."""
        await find_engine(self._wanted)


KILL_BOUND = 5.0
"""Seconds a killed command's processes are waited for to end before the call that killed them gives up waiting."""


async def _ended(pidfds: Sequence[int], bound: float) -> None:
    """Wait (at most ``bound`` s) until the process of each pidfd has ended, then close them all.

    A pidfd becomes readable when its process ends (a zombie included); SIGKILL takes effect only when the
    process is next scheduled, which on a busy machine can come after the killer's next command has started.
    """
    loop = asyncio.get_running_loop()
    waits: list[asyncio.Future[None]] = []
    try:
        for fd in pidfds:
            done: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, set_once, done)
            waits.append(done)
        if waits:
            _, pending = await asyncio.wait(waits, timeout=bound)
            if pending:
                _log.warning("%d killed process(es) of a command had not ended after %g s", len(pending), bound)
    finally:
        for fd in pidfds:
            loop.remove_reader(fd)
            os.close(fd)
