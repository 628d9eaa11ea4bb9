"""Control groups per sandbox: limits the kernel enforces, and usage read from outside the sandbox.

:func:`detect_cgroups` finds, once per process, where this machine lets the node make control groups:

- **cgroup v1** (tested: the machine this was written on): the hierarchies of the ``memory``, ``pids``,
  ``cpuacct`` (needed) and ``cpu``, ``cpuset`` (used when there) controllers, found in
  ``/proc/self/mountinfo`` wherever they are mounted (also co-mounted, as ``cpu,cpuacct``). The node's
  groups go *under the node's own group* in each hierarchy (``/proc/self/cgroup``), in
  ``<own>/golem-local-<pid namespace>-<pid>-<random>/<sandbox>``, so that the sandboxes stay inside whatever
  limits and accounting the node itself runs under; it needs write access there (root, usually). Groups of
  nodes that were killed are removed by the next node (:meth:`CgroupHost.sweep_stale`).
- **cgroup v2**, where the node's own group is delegated to it (``systemd-run -p Delegate=yes``, a
  container with a private cgroup namespace): the node moves itself into a leaf ``<own>/golem-local-node``,
  enables ``memory pids cpu cpuset`` for ``<own>``'s children and makes the same groups under ``<own>``.
  **This path was written from the kernel's documentation and could not be run here** (the test
  machine mounts v1 controllers, its v2 hierarchy has none); every write that fails says which file and why,
  and the node then falls back to what it can enforce without control groups.

A :class:`SandboxCgroup` is made before the sandbox's first process runs and that process is moved in
(:meth:`SandboxCgroup.attach`, before it starts anything), so every process of the activity is inside it:

- memory: ``memory.limit_in_bytes`` and ``memory.memsw.limit_in_bytes`` (v1; swap cannot stretch it),
  ``memory.max`` and ``memory.swap.max 0`` (v2). Over it the kernel's OOM killer ends a process of the
  sandbox (counted in ``oom_kill``), never one outside.
- processes: ``pids.max`` (threads count); refused forks are counted in ``pids.events``.
- CPU: ``cpu.cfs_quota_us`` = threads × ``cpu.cfs_period_us`` (v1), ``cpu.max`` (v2): at most that many CPUs'
  worth of time; and ``cpuset.cpus`` when the cpuset controller is there, so ``nproc`` cannot be widened.
- usage: CPU time of every task that ever ran in the group (``cpuacct.usage`` in ns, v2 ``cpu.stat
  usage_usec``), the memory high-water mark (``memory.max_usage_in_bytes``, v2 ``memory.peak``), OOM kills,
  refused forks. All written by the kernel: nothing in the sandbox can change them.

Everything here is synchronous file I/O of a few microseconds per file; :meth:`SandboxCgroup.remove` may
wait (bounded) for the last tasks to leave and belongs in a thread.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import secrets
import signal
import time
from pathlib import Path
from typing import Literal

from attrs import frozen

__all__ = [
    "CgroupHost",
    "CgroupLimits",
    "CgroupUsage",
    "SandboxCgroup",
    "detect_cgroups",
]

_log = logging.getLogger(__name__)

_NEEDED_V1 = ("memory", "pids", "cpuacct")
_OPTIONAL_V1 = ("cpu", "cpuset")
_V2_CONTROLLERS = ("memory", "pids", "cpu")
_REMOVE_TIMEOUT = 5.0
_PARENT = re.compile(r"golem-local-(\d+)-(\d+)-[0-9a-f]+")


def _pid_namespace() -> int:
    """The inode of this process's PID namespace: a parent group names it, so that a node sweeps only the
    groups of nodes whose pids it can see."""
    return os.stat("/proc/self/ns/pid").st_ino


def _read(path: Path) -> str:
    return path.read_text()


def _write(path: Path, value: str | int) -> None:
    try:
        with open(path, "w") as file:
            file.write(str(value))
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {value!r} to {path}: {exc.strerror}") from None


def _keyed(path: Path) -> dict[str, int]:
    """``key value`` lines (``memory.oom_control``, ``pids.events``, ``cpu.stat``) as a dict of ints."""
    values: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in _read(path).splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                values[key] = int(value)
    return values


@frozen
class CgroupLimits:
    """What a sandbox's group enforces; ``None``: no limit of that kind."""

    memory_bytes: int | None = None
    processes: int | None = None
    cpu_threads: int | None = None
    cpus: tuple[int, ...] | None = None  # the CPUs the sandbox may run on (cpuset), when the controller is there


@frozen
class CgroupUsage:
    """What the kernel counted for a sandbox's group."""

    cpu_ns: int
    memory_peak_bytes: int | None
    oom_kills: int
    refused_forks: int


@frozen
class CgroupHost:
    """Where this process may make control groups: per controller, the directory of its own group.

    ``version`` is ``"v1"`` or ``"v2"``; for v1 ``own`` maps each controller to the node's own group in its
    hierarchy (co-mounted controllers share one); for v2 every controller maps to the one directory.
    """

    version: Literal["v1", "v2"]
    own: tuple[tuple[str, Path], ...]

    @property
    def controllers(self) -> frozenset[str]:
        """The controllers the node can use."""
        return frozenset(name for name, _path in self.own)

    def directory(self, controller: str) -> Path:
        """The node's own group in ``controller``'s hierarchy."""
        return dict(self.own)[controller]

    def make_parent(self) -> Path:
        """Make this node's parent group (v1: in every hierarchy) and return its name; see the module doc."""
        name = f"golem-local-{_pid_namespace()}-{os.getpid()}-{secrets.token_hex(3)}"
        made: list[Path] = []
        try:
            for directory in sorted({path for _name, path in self.own}):
                parent = directory / name
                parent.mkdir()
                made.append(parent)
                if self.version == "v1" and (directory / "cpuset.cpus").exists():
                    # v1 cpuset children start with no CPUs and no memory nodes: copy the node's own down.
                    _write(parent / "cpuset.cpus", _read(directory / "cpuset.cpus").strip())
                    _write(parent / "cpuset.mems", _read(directory / "cpuset.mems").strip())
            if self.version == "v2":
                enable = " ".join(f"+{c}" for c in sorted(self.controllers) if c in (*_V2_CONTROLLERS, "cpuset"))
                _write(made[0] / "cgroup.subtree_control", enable)
        except BaseException:
            for parent in reversed(made):
                with contextlib.suppress(OSError):
                    parent.rmdir()
            raise
        return Path(name)

    def sweep_stale(self) -> list[Path]:
        """Remove the groups left by nodes that ended without removing theirs (killed); return them."""
        swept = []
        for directory in sorted({path for _name, path in self.own}):
            with contextlib.suppress(OSError):
                for parent in directory.iterdir():
                    match = _PARENT.fullmatch(parent.name)
                    if match is None or int(match.group(1)) != _pid_namespace():
                        continue  # not a node's, or a node's in another PID namespace: its pid says nothing here
                    if os.path.exists(f"/proc/{match.group(2)}"):
                        continue
                    for child in parent.iterdir():
                        if child.is_dir():
                            SandboxCgroup(self, {"pids": child}, CgroupLimits()).remove()
                    with contextlib.suppress(OSError):
                        parent.rmdir()
                        swept.append(parent)
        if swept:
            _log.warning("removed %d control group(s) left by nodes that were killed: %s", len(swept), swept)
        return swept

    def remove_parent(self, name: Path) -> None:
        """Remove the node's parent groups (empty once every sandbox's group is gone)."""
        for directory in sorted({path for _name, path in self.own}):
            with contextlib.suppress(FileNotFoundError):
                try:
                    (directory / name).rmdir()
                except OSError as exc:
                    _log.warning("cannot remove the control group %s: %s", directory / name, exc)

    def sandbox(self, parent: Path, sandbox_id: str, limits: CgroupLimits) -> SandboxCgroup:
        """A new group for one sandbox under ``parent`` with ``limits`` set (``OSError`` naming the file)."""
        group = SandboxCgroup(self, {c: path / parent / sandbox_id for c, path in self.own}, limits)
        group.create()
        return group


def _mounts() -> list[tuple[str, str, set[str]]]:
    """``(mount point, fs type, super options)`` of every cgroup file system of this mount namespace."""
    found = []
    with contextlib.suppress(OSError):
        for line in _read(Path("/proc/self/mountinfo")).splitlines():
            before, _, after = line.partition(" - ")
            fields, tail = before.split(), after.split()
            if len(fields) > 4 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
                point = fields[4].replace("\\040", " ")
                found.append((point, tail[0], set(tail[2].split(","))))
    return found


def _own_groups() -> dict[str, str]:
    """The node's group per v1 controller, and ``""`` → its v2 group, from ``/proc/self/cgroup``."""
    groups: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in _read(Path("/proc/self/cgroup")).splitlines():
            parts = line.split(":", 2)
            if len(parts) == 3:
                for controller in parts[1].split(",") if parts[1] else [""]:
                    groups[controller] = parts[2]
    return groups


def _detect_v1(mounts: list[tuple[str, str, set[str]]], own: dict[str, str]) -> CgroupHost | str:
    found: dict[str, Path] = {}
    for point, kind, options in mounts:
        if kind != "cgroup":
            continue
        for controller in (*_NEEDED_V1, *_OPTIONAL_V1):
            if controller in options and controller in own:
                found[controller] = Path(point) / own[controller].lstrip("/")
    missing = [c for c in _NEEDED_V1 if c not in found]
    if missing:
        return f"no cgroup v1 hierarchy of {', '.join(missing)}"
    usable = {c: path for c, path in found.items() if path.is_dir() and os.access(path, os.W_OK)}
    refused = [c for c in _NEEDED_V1 if c not in usable]
    if refused:
        return f"cgroup v1: no write access to {found[refused[0]]} (the node runs unprivileged; run it as root)"
    return CgroupHost("v1", tuple(sorted(usable.items())))


def _detect_v2(mounts: list[tuple[str, str, set[str]]], own: dict[str, str]) -> CgroupHost | str:
    """The delegated-v2 set-up (see the module docstring); untested here."""
    points = [point for point, kind, _options in mounts if kind == "cgroup2"]
    if not points or "" not in own:
        return "no cgroup v2 hierarchy"
    directory = Path(points[0]) / own[""].lstrip("/")
    try:
        available = set(_read(directory / "cgroup.controllers").split())
    except OSError as exc:
        return f"cgroup v2: cannot read {directory / 'cgroup.controllers'}: {exc.strerror}"
    missing = [c for c in _V2_CONTROLLERS if c not in available]
    if missing:
        return f"cgroup v2: the node's group {directory} is not given the {', '.join(missing)} controller(s)"
    if not os.access(directory, os.W_OK):
        return f"cgroup v2: the node's group {directory} is not delegated to it (no write access)"
    leaf = directory / "golem-local-node"
    try:
        leaf.mkdir(exist_ok=True)
        # No process may stay in a group whose children get controllers: move the node into a leaf first.
        _write(leaf / "cgroup.procs", os.getpid())
        enable = " ".join(f"+{c}" for c in sorted(available & {*_V2_CONTROLLERS, "cpuset"}))
        _write(directory / "cgroup.subtree_control", enable)
    except OSError as exc:
        return (
            f"cgroup v2: cannot delegate {directory} to the sandboxes ({exc}); other processes may share "
            "the node's group: run the node in a group of its own (systemd-run --scope -p Delegate=yes)"
        )
    controllers = available & {*_V2_CONTROLLERS, "cpuset"}
    return CgroupHost("v2", tuple((c, directory) for c in sorted(controllers)))


@functools.cache
def detect_cgroups() -> CgroupHost | str:
    """Where this process can make sandbox groups, or why it cannot (once per process; see the module doc).

    ``GOLEM_LOCAL_CGROUPS=0`` in the environment turns control groups off (for measurements and for tests of
    the fallback).
    """
    if os.environ.get("GOLEM_LOCAL_CGROUPS", "1") == "0":
        return "control groups turned off by GOLEM_LOCAL_CGROUPS=0"
    mounts, own = _mounts(), _own_groups()
    if not mounts:
        return "no control group file system is mounted"
    v1 = _detect_v1(mounts, own)
    if isinstance(v1, CgroupHost):
        return v1
    v2 = _detect_v2(mounts, own)
    if isinstance(v2, CgroupHost):
        return v2
    return f"{v1}; {v2}"


class SandboxCgroup:
    """The control group(s) of one sandbox (v1: one per hierarchy); see the module docstring."""

    def __init__(self, host: CgroupHost, paths: dict[str, Path], limits: CgroupLimits) -> None:
        self.host = host
        self.paths = paths
        self.limits = limits
        self.enforced: set[str] = set()  # "memory", "processes", "cpu", "cpuset": what was set
        self._last_cpu_ns = 0

    def _path(self, controller: str) -> Path:
        return self.paths[controller]

    def create(self) -> None:
        """Make the group(s) and set the limits; a failure removes what was made and raises ``OSError``."""
        made: list[Path] = []
        try:
            for path in sorted(set(self.paths.values())):
                path.mkdir()
                made.append(path)
            if self.host.version == "v1":
                self._limits_v1()
            else:
                self._limits_v2()
        except BaseException:
            for path in reversed(made):
                with contextlib.suppress(OSError):
                    path.rmdir()
            raise

    def _limits_v1(self) -> None:
        limits = self.limits
        if limits.memory_bytes is not None:
            memory = self._path("memory")
            _write(memory / "memory.limit_in_bytes", limits.memory_bytes)
            if (memory / "memory.memsw.limit_in_bytes").exists():  # after the memory limit: memsw >= memory
                _write(memory / "memory.memsw.limit_in_bytes", limits.memory_bytes)
            with contextlib.suppress(OSError):
                _write(memory / "memory.swappiness", 0)
            self.enforced.add("memory")
        if limits.processes is not None:
            _write(self._path("pids") / "pids.max", limits.processes)
            self.enforced.add("processes")
        if limits.cpu_threads is not None and "cpu" in self.paths:
            cpu = self._path("cpu")
            period = int(_read(cpu / "cpu.cfs_period_us"))
            _write(cpu / "cpu.cfs_quota_us", limits.cpu_threads * period)
            self.enforced.add("cpu")
        if "cpuset" in self.paths:  # a v1 cpuset group without CPUs and memory nodes takes no process
            cpuset = self._path("cpuset")
            cpus = _read(cpuset.parent / "cpuset.cpus").strip()
            if limits.cpus is not None:
                cpus = ",".join(str(cpu) for cpu in limits.cpus)
                self.enforced.add("cpuset")
            _write(cpuset / "cpuset.cpus", cpus)
            _write(cpuset / "cpuset.mems", _read(cpuset.parent / "cpuset.mems").strip())

    def _limits_v2(self) -> None:
        group = self._path("memory")
        limits = self.limits
        if limits.memory_bytes is not None:
            _write(group / "memory.max", limits.memory_bytes)
            with contextlib.suppress(OSError):  # no swap.max without swap accounting: nothing to stretch it then
                _write(group / "memory.swap.max", 0)
            self.enforced.add("memory")
        if limits.processes is not None:
            _write(group / "pids.max", limits.processes)
            self.enforced.add("processes")
        if limits.cpu_threads is not None:
            _write(group / "cpu.max", f"{limits.cpu_threads * 100_000} 100000")
            self.enforced.add("cpu")
        if limits.cpus is not None and "cpuset" in self.paths:
            _write(group / "cpuset.cpus", ",".join(str(cpu) for cpu in limits.cpus))
            self.enforced.add("cpuset")

    def attach(self, pid: int) -> None:
        """Move process ``pid`` (and so everything it will start) into the group(s)."""
        for path in sorted(set(self.paths.values())):
            _write(path / "cgroup.procs", pid)

    def cpu_ns(self) -> int:
        """CPU time of every task that ever ran in the group, in ns: the one file billing needs, read alone
        (``OSError`` once the group is gone)."""
        if self.host.version == "v1":
            cpu_ns = int(_read(self._path("cpuacct") / "cpuacct.usage"))
        else:
            cpu_ns = _keyed(self._path("memory") / "cpu.stat").get("usage_usec", 0) * 1000
        self._last_cpu_ns = max(self._last_cpu_ns, cpu_ns)
        return self._last_cpu_ns

    def usage(self) -> CgroupUsage:
        """What the kernel counted so far (``OSError`` once the group is gone)."""
        if self.host.version == "v1":
            cpu_ns = int(_read(self._path("cpuacct") / "cpuacct.usage"))
            memory = self._path("memory")
            peak: int | None = int(_read(memory / "memory.max_usage_in_bytes"))
            oom = _keyed(memory / "memory.oom_control").get("oom_kill", 0)
        else:
            group = self._path("memory")
            cpu_ns = _keyed(group / "cpu.stat").get("usage_usec", 0) * 1000
            try:
                peak = int(_read(group / "memory.peak"))
            except (OSError, ValueError):
                peak = None  # memory.peak came with Linux 5.19
            oom = _keyed(group / "memory.events").get("oom_kill", 0)
        refused = _keyed(self._path("pids") / "pids.events").get("max", 0)
        self._last_cpu_ns = max(self._last_cpu_ns, cpu_ns)
        return CgroupUsage(cpu_ns=self._last_cpu_ns, memory_peak_bytes=peak, oom_kills=oom, refused_forks=refused)

    def tasks(self) -> list[int]:
        """Host pids of the processes in the group."""
        try:
            return [int(pid) for pid in _read(self._path("pids") / "cgroup.procs").split()]
        except OSError:
            return []

    def remove(self) -> None:
        """Kill what is left in the group(s) and remove them; waits (at most 5 s) for the tasks to leave."""
        deadline = time.monotonic() + _REMOVE_TIMEOUT
        if self.host.version == "v2":
            with contextlib.suppress(OSError):
                _write(self._path("pids") / "cgroup.kill", 1)
        for path in sorted(set(self.paths.values()), reverse=True):
            while True:
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if time.monotonic() > deadline:
                        _log.error("cannot remove the control group %s: %s (tasks %s)", path, exc, self.tasks())
                        break
                    for pid in self.tasks():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    time.sleep(0.005)  # the kernel is still tearing the killed tasks down; polled, bounded
