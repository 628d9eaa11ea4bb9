"""How a sandbox is started: as whom, within which limits, and metered from where.

The pieces, in the order a sandbox meets them:

- :class:`SandboxLimits`: what an activity may use (memory, CPU threads, processes, storage, ``/tmp``), from
  its provider's offer.
- :class:`SandboxHost`: what this machine lets the node enforce, found once (:meth:`SandboxHost.detect`):
  whether the node is root (then every sandbox runs as an unprivileged host uid of its own), control groups
  (:mod:`~golem_local.runtime.cgroups`), per-activity storage file systems (:mod:`~golem_local.runtime.storage`).
  It says what it cannot enforce once at start-up (:meth:`SandboxHost.report`) and in the offer
  (:meth:`SandboxHost.offer_properties`).
- :class:`SandboxIdentity`: the host uid and gid a sandbox runs as when the node is root: one from the range
  :data:`UID_BASE` … ``UID_BASE + UID_COUNT - 1`` (no passwd entry is made or needed), held with a lock file
  under ``/run/golem-local/sandbox-uids`` for the sandbox's life, so that concurrent nodes on one machine never
  share one. Bubblewrap maps the sandbox's uid 0 onto it: root inside owns nothing outside, cannot write the
  host's global sysctls, and gets no capabilities; ``--disable-userns`` keeps it from making user namespaces.
- :func:`spawn` and :class:`Launch`: bubblewrap started with ``--info-fd``/``--block-fd`` (as the sandbox's
  uid: through util-linux ``setpriv --reuid --regid --clear-groups``, or ``subprocess``'s ``user=``/``group=``/
  ``extra_groups=[]`` where it is missing, which costs a fork of the whole node), so that its first process,
  the agent, is put into its control group and onto its CPUs (``sched_setaffinity``, so ``nproc`` tells the
  truth) before it starts anything (:meth:`Launch.release`). Host directories the sandbox's uid cannot reach
  (a Python under ``/root``) are bound first by :mod:`~golem_local.runtime._stage`, as root, in a private
  mount namespace.
- :class:`ProcMeter`: where there are no control groups, CPU time and memory of the sandbox's processes read
  by the host from ``/proc`` (the processes of the sandbox's PID namespace): nothing inside can write it,
  but it sees only processes alive at a sample and what their parents collected from the ones they waited
  for (a command that ignores ``SIGCHLD`` hides its children's time: an under-count, never an over-charge).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import logging
import math
import os
import pwd
import shutil
import stat
import sys
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attrs import frozen

from golem_local.runtime.base import RuntimeFailure
from golem_local.runtime.cgroups import CgroupHost, CgroupLimits, SandboxCgroup, detect_cgroups
from golem_local.runtime.gate import StartGate, default_start_slots
from golem_local.runtime.rootfs import image_uid_range
from golem_shared.tasks import set_once

__all__ = [
    "GIB",
    "MIB",
    "UID_BASE",
    "UID_COUNT",
    "Launch",
    "ProcMeter",
    "SandboxHost",
    "SandboxIdentity",
    "SandboxLimits",
    "default_sandbox_host",
    "sandbox_uid_range",
    "spawn",
    "stage_binds",
]

_log = logging.getLogger(__name__)

MIB = 1 << 20
GIB = 1 << 30
UID_BASE = 2_000_000
"""First host uid given to sandboxes when the node runs as root (``GOLEM_LOCAL_SANDBOX_UIDS=base:count``)."""
UID_COUNT = 65_536
_LOCK_DIR = Path("/run/golem-local/sandbox-uids")
_STAGE_SCRIPT = Path(__file__).with_name("_stage.py")
_BIND_OPTIONS = frozenset({"--bind", "--ro-bind", "--bind-try", "--ro-bind-try", "--dev-bind", "--dev-bind-try"})
_INFO_TIMEOUT = 10.0

INF_MEMORY = "golem.inf.mem.gib"
INF_THREADS = "golem.inf.cpu.threads"
INF_STORAGE = "golem.inf.storage.gib"
ENFORCED = "golem.local.limits.enforced"
"""Offer property: the ``golem.inf.*`` properties whose values this node enforces as limits."""
PROCESSES = "golem.local.limits.processes"
TMP_GIB = "golem.local.limits.tmp.gib"


def sandbox_uid_range() -> tuple[int, int]:
    """``(base, count)`` of the per-sandbox host uids (``GOLEM_LOCAL_SANDBOX_UIDS``)."""
    setting = os.environ.get("GOLEM_LOCAL_SANDBOX_UIDS", "")
    if not setting:
        return UID_BASE, UID_COUNT
    try:
        base, count = (int(part) for part in setting.split(":"))
        if base < 1000 or count < 1:
            raise ValueError
    except ValueError:
        raise RuntimeFailure(
            f"GOLEM_LOCAL_SANDBOX_UIDS={setting!r} is not base:count (e.g. 2000000:65536, base 1000 or more)"
        ) from None
    return base, count


@frozen
class SandboxLimits:
    """What one activity may use; ``None``: not limited. ``tmp_bytes`` sizes ``/tmp`` and ``/dev/shm`` each."""

    memory_bytes: int | None = None
    cpu_threads: int | None = None
    processes: int | None = None
    storage_bytes: int | None = None
    tmp_bytes: int | None = None

    @classmethod
    def from_offer(cls, *, mem_gib: float, cpu_threads: int, storage_gib: float, processes: int) -> SandboxLimits:
        """The limits of an offer: its memory, threads and storage; ``/tmp`` and ``/dev/shm`` a quarter of
        the memory each (their files are memory: together they leave the commands half of it)."""
        memory = int(mem_gib * GIB)
        return cls(
            memory_bytes=memory,
            cpu_threads=cpu_threads,
            processes=processes,
            storage_bytes=int(storage_gib * GIB),
            tmp_bytes=max(memory // 4, MIB),
        )


class SandboxIdentity:
    """The host uid and gid of one sandbox (see the module docstring); :meth:`release` gives them back."""

    def __init__(self, uid: int, gid: int, lock_fd: int | None) -> None:
        self.uid = uid
        self.gid = gid
        self._lock_fd = lock_fd

    def __repr__(self) -> str:
        return f"<SandboxIdentity uid={self.uid} gid={self.gid}>"

    @property
    def owner(self) -> tuple[int, int]:
        """``(uid, gid)``, for ``chown``."""
        return self.uid, self.gid

    def release(self) -> None:
        """Give the uid back (once every process of it has ended). Idempotent."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            _held.discard(self.uid)
            os.close(fd)


_held: set[int] = set()
"""The uids this process holds the locks of: skipped without a look-up when the next one is allocated (each
look-up is a passwd search, an open and a lock: done for every held uid, 600 sandboxes made the 601st
allocation cost milliseconds of the node's event loop)."""


def _lock_dir() -> Path:
    """The root-only directory of the uid locks, checked not to be someone else's."""
    with contextlib.suppress(FileExistsError):
        _LOCK_DIR.parent.mkdir(mode=0o755, parents=True)
    with contextlib.suppress(FileExistsError):
        _LOCK_DIR.mkdir(mode=0o700)
    info = os.lstat(_LOCK_DIR)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
        raise RuntimeFailure(
            f"{_LOCK_DIR} is not a directory of root's that only root can write: remove it and start again"
        )
    return _LOCK_DIR


def allocate_identity() -> SandboxIdentity:
    """A free uid of the sandbox range, locked for this process (see the module docstring)."""
    base, count = sandbox_uid_range()
    directory = _lock_dir()
    for offset in range(count):  # the lowest free one: the lock files are as many as sandboxes ever ran at once
        uid = base + offset
        if uid in _held:
            continue
        with contextlib.suppress(KeyError):
            pwd.getpwuid(uid)
            continue  # a real user of this machine: never run a sandbox as it
        fd = os.open(directory / str(uid), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _held.add(uid)
        return SandboxIdentity(uid, uid, fd)
    raise RuntimeFailure(
        f"every sandbox uid of {base}-{base + count - 1} is in use; end some activities, or widen the range "
        "with GOLEM_LOCAL_SANDBOX_UIDS=base:count"
    )


def _searchable(info: os.stat_result, uid: int, gid: int) -> bool:
    if info.st_uid == uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid == gid:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def reachable(path: str, uid: int, gid: int) -> bool:
    """Whether ``uid``/``gid`` (no other groups) can look ``path`` up: every directory above it searchable."""
    real = os.path.realpath(path)
    parts = real.split("/")[1:-1]
    current = "/"
    for part in ["", *parts]:
        current = os.path.join(current, part) if part else current
        try:
            info = os.stat(current)
        except OSError:
            return False
        if not _searchable(info, uid, gid):
            return False
    return True


def pick_cpus(threads: int | None, slot: int) -> tuple[int, ...]:
    """``threads`` CPUs of those this process may use, the ``slot``-th sandbox starting further along."""
    allowed = sorted(os.sched_getaffinity(0))
    if not threads or threads >= len(allowed):
        return tuple(allowed)
    start = (slot * threads) % len(allowed)
    return tuple(sorted(allowed[(start + i) % len(allowed)] for i in range(threads)))


class SandboxHost:
    """What this machine lets the node enforce, and the node-wide state of its sandboxes (see the module doc).

    ``cgroups`` and ``storage_quota`` may be given (``False`` turns them off, for tests and measurements);
    by default they are detected. ``start_slots`` is how many sandboxes are set up at once (deployed or started;
    the others wait: :mod:`~golem_local.runtime.gate`), by default :func:`~.gate.default_start_slots`.
    """

    def __init__(
        self, *, cgroups: bool | None = None, storage_quota: bool | None = None, start_slots: int | None = None
    ) -> None:
        self.start_slots = start_slots if start_slots is not None else default_start_slots()
        if self.start_slots < 1:
            raise ValueError(f"start_slots must be 1 or more, not {self.start_slots}")
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StartGate] = weakref.WeakKeyDictionary()
        self.root = os.geteuid() == 0
        found = detect_cgroups() if cgroups is not False else "control groups turned off for this node"
        self.cgroups: CgroupHost | None = found if isinstance(found, CgroupHost) else None
        self.cgroups_note = "" if isinstance(found, CgroupHost) else str(found)
        quota_note = ""
        if storage_quota is False:
            quota_note = "storage file systems turned off for this node"
        elif not self.root:
            quota_note = "making a file system per activity needs root"
        elif shutil.which("mkfs.ext4") is None:
            quota_note = "mkfs.ext4 is not installed (apt-get install -y e2fsprogs)"
        elif not os.path.exists("/dev/loop-control"):
            quota_note = "there are no loop devices (/dev/loop-control is missing)"
        self.storage_quota = not quota_note
        self.storage_note = quota_note
        self._parent: Path | None = None
        self._stage_root: Path | None = None
        self._slots = itertools.count()

    @classmethod
    def detect(cls) -> SandboxHost:
        """The host as found (same as ``SandboxHost()``)."""
        return cls()

    # -- what is enforced -----------------------------------------------------------------------------------

    def enforced(self, limits: SandboxLimits) -> dict[str, str]:
        """For each kind of limit in ``limits``: how it is enforced here, or ``"not enforced: why"``."""
        cg = self.cgroups
        how: dict[str, str] = {}
        if limits.memory_bytes is not None:
            how["memory"] = (
                f"cgroup {cg.version} memory limit"
                if cg
                else f"not enforced ({self.cgroups_note}); only each "
                "process's address space is capped (RLIMIT_AS), not the sandbox's total"
            )
        if limits.cpu_threads is not None:
            if cg and "cpu" in cg.controllers:
                pinned = " and cpuset" if "cpuset" in cg.controllers else ""
                how["cpu.threads"] = f"cgroup {cg.version} CPU quota{pinned}, affinity"
            else:
                how["cpu.threads"] = "not enforced: CPU affinity only (nproc tells the truth, a command can widen it)"
        if limits.processes is not None:
            how["processes"] = f"cgroup {cg.version} pids limit" if cg else "RLIMIT_NPROC of the sandbox's user"
        if limits.storage_bytes is not None:
            how["storage"] = (
                "an ext4 file system of that size per activity (loop device)"
                if self.storage_quota
                else f"not enforced ({self.storage_note})"
            )
        if limits.tmp_bytes is not None:
            how["tmp"] = "sized tmpfs (bubblewrap --size)"
        return how

    def report(self, limits: Sequence[SandboxLimits] = ()) -> list[str]:
        """What the node says at start-up: who sandboxes run as, and what is and is not enforced."""
        lines = []
        if self.root:
            lines.append(
                "the local node runs as root: every sandbox runs as an unprivileged host uid of its own "
                f"(from {sandbox_uid_range()[0]}), with no capabilities and no user namespaces of its own; files it "
                "gets from the provider are given to that uid; an image with a root file system runs with its ids "
                "mapped to an unprivileged range (from "
                f"{image_uid_range()[0]}) and a container's root's capabilities inside its namespaces only"
            )
        metering = (
            f"CPU time is read from each sandbox's cgroup ({self.cgroups.version})"
            if self.cgroups
            else f"CPU time is read by the host from /proc (no cgroups: {self.cgroups_note}); processes that "
            "nobody waits for can hide their time"
        )
        lines.append(metering)
        kinds = sorted({f"{kind}: {how}" for one in limits for kind, how in self.enforced(one).items()})
        enforced = [line.split(":")[0] for line in kinds if "not enforced" not in line]
        if enforced:
            lines.append(f"limits enforced per activity, as its offer announces: {', '.join(sorted(set(enforced)))}")
        lines += [f"limit {line}" for line in kinds if "not enforced" in line]
        return lines

    def offer_properties(self, limits: SandboxLimits) -> dict[str, Any]:
        """What the offer says of its limits: the ``golem.inf.*`` names it enforces, processes, ``/tmp`` size."""
        how = self.enforced(limits)
        enforced = [
            name
            for kind, name in (("cpu.threads", INF_THREADS), ("memory", INF_MEMORY), ("storage", INF_STORAGE))
            if kind in how and "not enforced" not in how[kind]
        ]
        properties: dict[str, Any] = {ENFORCED: enforced}
        if limits.processes is not None:
            properties[PROCESSES] = limits.processes
        if limits.tmp_bytes is not None:
            properties[TMP_GIB] = round(limits.tmp_bytes / GIB, 3)
        return properties

    def rlimits(self, limits: SandboxLimits) -> dict[str, int]:
        """The rlimits the agent sets on itself (so on every command) where no cgroup does the job."""
        if self.cgroups is not None:
            return {}
        values = {}
        if limits.processes is not None:
            values["nproc"] = limits.processes
        if limits.memory_bytes is not None:
            values["as"] = limits.memory_bytes
        return values

    # -- node-wide state ------------------------------------------------------------------------------------

    def identity(self) -> SandboxIdentity | None:
        """A host uid for a new sandbox when the node is root; ``None`` (run as the node's user) otherwise."""
        return allocate_identity() if self.root else None

    def start_gate(self) -> StartGate:
        """The gate the sandboxes of this host pass to be set up, one per event loop (a host outlives a loop in
        tests; a gate's waiters belong to one)."""
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None:
            gate = self._gates[loop] = StartGate(self.start_slots)
        return gate

    def next_slot(self) -> int:
        """A number per sandbox, to spread sandboxes over the CPUs."""
        return next(self._slots)

    def cgroup(self, sandbox_id: str, limits: SandboxLimits, cpus: tuple[int, ...]) -> SandboxCgroup | None:
        """A control group for a sandbox (``None`` without cgroups); ``RuntimeFailure`` naming the file."""
        if self.cgroups is None:
            return None
        try:
            if self._parent is None:
                self.cgroups.sweep_stale()
                self._parent = self.cgroups.make_parent()
            pinned = cpus if limits.cpu_threads is not None else None
            wanted = CgroupLimits(limits.memory_bytes, limits.processes, limits.cpu_threads, pinned)
            return self.cgroups.sandbox(self._parent, sandbox_id, wanted)
        except OSError as exc:
            raise RuntimeFailure(f"cannot make the sandbox's control group: {exc}") from exc

    def stage_dir(self, sandbox_id: str) -> Path:
        """Where a sandbox's unreachable host directories are shown to its user (see :mod:`._stage`): under
        a directory of this node's in ``/tmp``, which every user may pass (``0711``) and only root writes."""
        if self._stage_root is None:
            self._stage_root = Path(tempfile.mkdtemp(prefix="golem-local-stage-"))
            self._stage_root.chmod(0o711)
        return self._stage_root / sandbox_id

    def close(self) -> None:
        """Remove the node's parent control groups (its sandboxes' are gone by now) and staging directory."""
        parent, self._parent = self._parent, None
        if parent is not None and self.cgroups is not None:
            self.cgroups.remove_parent(parent)
        stage, self._stage_root = self._stage_root, None
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)


_default: SandboxHost | None = None


def default_sandbox_host() -> SandboxHost:
    """The process's shared :class:`SandboxHost`, for runtimes made without one (detected once)."""
    global _default
    if _default is None:
        _default = SandboxHost.detect()
        import atexit

        atexit.register(_default.close)
    return _default


# -- metering without cgroups ---------------------------------------------------------------------------------


class ProcMeter:
    """CPU seconds and memory of the processes of one PID namespace, read from the host's ``/proc``."""

    def __init__(self, pidns: int, proc_root: str = "/proc") -> None:
        self.pidns = pidns
        self.proc_root = proc_root
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.page = os.sysconf("SC_PAGE_SIZE")

    def sample(self) -> tuple[float, int]:
        """``(cpu seconds, resident bytes)`` now: utime+stime+cutime+cstime and RSS over the namespace."""
        ticks = 0
        rss = 0
        for name in os.listdir(self.proc_root):
            if not name.isdigit():
                continue
            try:
                if os.stat(f"{self.proc_root}/{name}/ns/pid").st_ino != self.pidns:
                    continue
                with open(f"{self.proc_root}/{name}/stat", "rb") as file:
                    data = file.read()
            except OSError:
                continue
            fields = data[data.rindex(b")") + 2 :].split()
            ticks += sum(int(value) for value in fields[11:15])
            rss += int(fields[21]) * self.page
        return ticks / self.ticks, rss


# -- starting bubblewrap ----------------------------------------------------------------------------------------


def stage_binds(
    options: Sequence[str], owner: tuple[int, int], stage_dir: Path
) -> tuple[list[str], list[tuple[str, str]]]:
    """Options with bind sources that ``owner`` (uid, gid) cannot reach replaced by mount points under
    ``stage_dir``; the binds (source, mount point) to make as root before bubblewrap runs."""
    uid, gid = owner
    staged: list[tuple[str, str]] = []
    result = list(options)
    index = 0
    while index < len(result):
        if result[index] in _BIND_OPTIONS and index + 2 < len(result):
            source = result[index + 1]
            if os.path.exists(source) and not reachable(source, uid, gid):
                stage_dir.mkdir(mode=0o755, exist_ok=True)
                point = stage_dir / str(len(staged))
                if os.path.isdir(source):
                    point.mkdir(mode=0o755, exist_ok=True)
                else:
                    point.touch(mode=0o644, exist_ok=True)
                staged.append((source, str(point)))
                result[index + 1] = str(point)
            index += 3
        else:
            index += 1
    return result, staged


class Launch:
    """A bubblewrap process that waits, before its first process runs, for :meth:`release`."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        info_fd: int,
        block_fd: int,
        cgroup: SandboxCgroup | None,
        cpus: tuple[int, ...],
        staged: int,
    ) -> None:
        self.process = process
        self.cgroup = cgroup
        self.cpus = cpus
        self.staged = staged
        self.child_pid: int | None = None
        self.pidns: int | None = None
        self._info_fd: int | None = info_fd
        self._block_fd: int | None = block_fd

    async def release(self, *, timeout: float = _INFO_TIMEOUT) -> int:
        """Read the sandbox's first process from bubblewrap, let it run, put it in its group and on its CPUs.

        The move into the control group waits for the kernel (an RCU grace period, ~10 ms with cgroup v1), so
        it is done in a thread while the agent's interpreter starts; it is over when this returns, before the
        agent can be asked to start anything (it starts nothing of its own). Returns its host pid. Raises
        :class:`RuntimeFailure` when bubblewrap ends first or says nothing within ``timeout`` seconds.
        """
        assert self._info_fd is not None
        assert self._block_fd is not None
        try:
            info = await asyncio.wait_for(self._read_info(self._info_fd), timeout)
        except asyncio.TimeoutError:
            raise RuntimeFailure(f"bubblewrap did not report its sandbox within {timeout:g} s") from None
        finally:
            self._close_info()
        try:
            child = int(info["child-pid"])
        except (KeyError, TypeError, ValueError):
            raise RuntimeFailure(f"bubblewrap reported {info!r}, not its child's pid") from None
        self.child_pid = child
        try:
            self.pidns = os.stat(f"/proc/{child}/ns/pid").st_ino
            os.write(self._block_fd, b"x")
            await asyncio.to_thread(self._confine, child)
        except OSError as exc:
            raise RuntimeFailure(f"cannot put the sandbox into its limits: {exc}") from exc
        finally:
            self.close()
        return child

    def _confine(self, child: int) -> None:
        if self.cgroup is not None:
            self.cgroup.attach(child)
        with contextlib.suppress(OSError):  # without the right to (an unusual host), nproc just says more
            os.sched_setaffinity(child, self.cpus)

    async def _read_info(self, fd: int) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        data = b""
        while b"}" not in data:
            readable: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, set_once, readable)
            try:
                await readable
            finally:
                loop.remove_reader(fd)
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                continue
            if not chunk:
                raise RuntimeFailure("bubblewrap ended before its sandbox existed")
            data += chunk
        try:
            info = json.loads(data[: data.index(b"}") + 1])
        except ValueError:
            raise RuntimeFailure(f"bubblewrap's report {data[:200]!r} is not JSON") from None
        if not isinstance(info, dict):
            raise RuntimeFailure(f"bubblewrap's report {info!r} is not an object")
        return info

    def _close_info(self) -> None:
        fd, self._info_fd = self._info_fd, None
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        """Close the launch's pipes (bubblewrap then ends if it was never released). Idempotent."""
        self._close_info()
        fd, self._block_fd = self._block_fd, None
        if fd is not None:
            os.close(fd)


async def spawn(
    bwrap: str,
    options: Sequence[str],
    command: Sequence[str],
    *,
    host: SandboxHost,
    identity: SandboxIdentity | None,
    limits: SandboxLimits,
    sandbox_id: str,
    stream_limit: int,
    stdout: int | None = None,
    prefix: Sequence[str] = (),
    pass_fds: Sequence[int] = (),
) -> Launch:
    """Start bubblewrap for ``command`` with ``options``, blocked until :meth:`Launch.release` (module doc).

    The sandbox runs as ``identity`` (``None``: as this process's user); stdin, stdout and stderr are pipes
    (``stdout``: that file descriptor instead, a pipe's end the caller reads itself).
    ``prefix`` runs first, with this process's privileges (``nsenter --net=…`` for an activity in a VPN, a root
    file system's mount wrapper), inheriting ``pass_fds``.
    Raises :class:`RuntimeFailure` (bubblewrap missing, a cgroup that cannot be made).
    """
    cpus = pick_cpus(limits.cpu_threads, host.next_slot())
    cgroup = host.cgroup(sandbox_id, limits, cpus)
    staged: list[tuple[str, str]] = []
    arguments = list(options)
    if identity is not None:
        arguments, staged = await asyncio.to_thread(stage_binds, arguments, identity.owner, host.stage_dir(sandbox_id))
    info_read, info_write = os.pipe()
    block_read, block_write = os.pipe()
    os.set_blocking(info_read, False)
    argv = [bwrap, "--info-fd", str(info_write), "--block-fd", str(block_read), *arguments, *command]
    credentials: dict[str, Any] = {}
    if identity is not None and staged:
        flat = [path for pair in staged for path in pair]
        argv = [sys.executable, "-I", "-S", str(_STAGE_SCRIPT), str(identity.uid), str(identity.gid)]
        argv += [str(len(staged)), *flat, "--", shutil.which(bwrap) or bwrap]
        argv += ["--info-fd", str(info_write), "--block-fd", str(block_read), *arguments, *command]
    elif identity is not None:
        setpriv = shutil.which("setpriv")
        if setpriv is not None:  # exec'd after a vfork: subprocess's user= would fork the whole node (ms per MB)
            argv = [setpriv, f"--reuid={identity.uid}", f"--regid={identity.gid}", "--clear-groups", "--", *argv]
        else:
            credentials = {"user": identity.uid, "group": identity.gid, "extra_groups": []}
    argv = [*prefix, *argv]
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE if stdout is None else stdout,
            stderr=asyncio.subprocess.PIPE,
            limit=stream_limit,
            pass_fds=(info_write, block_read, *pass_fds),
            start_new_session=True,  # a Ctrl-C meant for the provider does not reach the sandbox
            **credentials,
        )
    except BaseException as exc:
        for fd in (info_read, block_write):
            os.close(fd)
        if cgroup is not None:
            await asyncio.to_thread(cgroup.remove)
        if isinstance(exc, FileNotFoundError):
            raise RuntimeFailure(f"bubblewrap {bwrap!r} is not installed") from None
        if isinstance(exc, OSError):
            raise RuntimeFailure(f"cannot run bubblewrap {bwrap!r}: {exc}") from exc
        raise
    finally:
        os.close(info_write)
        os.close(block_read)
    return Launch(process, info_read, block_write, cgroup, cpus, len(staged))


def checked_seconds(value: object, source: str) -> float:
    """``value`` as CPU seconds if it is a finite number of 0 or more; ``RuntimeFailure`` naming ``source``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise RuntimeFailure(f"{source} gave {value!r} CPU seconds, not a finite number of 0 or more; ignored")
    return float(value)


def mapping_of_ints(values: Mapping[str, int]) -> str:
    """``nproc=64,as=536870912``: the agent's ``--rlimits`` argument."""
    return ",".join(f"{key}={int(value)}" for key, value in values.items())
