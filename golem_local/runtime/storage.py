"""An activity's storage limit: a file system of the offer's size, holding everything the activity may write.

When the node is root and the machine has loop devices and ``mkfs.ext4``, :func:`make_storage` makes a sparse
file of ``size`` bytes inside the activity's (empty) directory, formats it ext4 (no journal, no reserved
blocks, lazy inode tables: a few milliseconds whatever the size) and mounts it, ``nosuid,nodev``, *over* that
directory. Every volume, the activity's copy of the image, and everything the provider writes for the
activity then live in it: the kernel refuses writes past the size (``ENOSPC``), and the host's disk never
holds more than that for the activity. The file is hidden under its own mount point and removed with the
directory once :func:`remove_storage` has unmounted it. The sandbox's ``/proc/self/mountinfo`` names the loop
device and paths inside the file system, not the host's directories.

The mount is in the host's mount namespace: a node killed with ``SIGKILL`` leaves its activities' file
systems mounted. :func:`sweep_stale` (run by every node at start) unmounts those of nodes that are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from golem_local.runtime.base import RuntimeFailure
from golem_shared.tasks import reap

__all__ = [
    "NODE_DIR_PREFIX",
    "make_storage",
    "remove_storage",
    "run_checked",
    "storage_full",
    "sweep_stale",
]

_log = logging.getLogger(__name__)

NODE_DIR_PREFIX = "golem-local-node-"
"""The node's directory is ``<tmp>/golem-local-node-<pid>-<random>``: the pid lets :func:`sweep_stale` see
whether the node that mounted something there is gone."""

_BACKING = ".storage.ext4"
_TIMEOUT = 30.0
_NODE_DIR = re.compile(rf"/{NODE_DIR_PREFIX}(\d+)-[^/]+/")


async def run_checked(*argv: str) -> None:
    """Run ``argv`` (bounded); :class:`RuntimeFailure` with its output when it fails."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), _TIMEOUT)
    except BaseException as exc:  # timed out, or cancelled (the node stopping): the program does not outlive us
        await reap(process)
        if isinstance(exc, asyncio.TimeoutError):
            raise RuntimeFailure(f"{argv[0]} did not finish within {_TIMEOUT:g} s") from None
        raise
    if process.returncode != 0:
        said = output.decode(errors="replace").strip()[-300:]
        raise RuntimeFailure(f"{' '.join(argv[:2])}… failed with code {process.returncode}: {said}")


def _run_blocking(*argv: str) -> None:
    """:func:`run_checked` for a worker thread."""
    try:
        result = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise RuntimeFailure(f"{argv[0]} did not finish within {_TIMEOUT:g} s") from None
    except OSError as exc:
        raise RuntimeFailure(f"cannot run {argv[0]}: {exc}") from None
    if result.returncode != 0:
        said = result.stdout.decode(errors="replace").strip()[-300:]
        raise RuntimeFailure(f"{' '.join(argv[:2])}… failed with code {result.returncode}: {said}")


def _make(directory: Path, size: int, gid: int) -> None:
    """The work of :func:`make_storage`, in a worker thread."""
    directory.mkdir(parents=True, exist_ok=True)
    backing = directory / _BACKING
    with open(backing, "wb") as file:
        file.truncate(size)
    mkfs = shutil.which("mkfs.ext4") or "mkfs.ext4"
    options = f"lazy_itable_init=1,lazy_journal_init=1,root_owner=0:{gid}"
    try:
        _run_blocking(mkfs, "-q", "-F", "-m", "0", "-O", "^has_journal", "-E", options, str(backing))
        _run_blocking("mount", "-o", "loop,nosuid,nodev", str(backing), str(directory))
    except BaseException:
        backing.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):
        (directory / "lost+found").rmdir()
    os.chmod(directory, 0o750)


def _unmount(directory: Path) -> None:
    """The work of :func:`remove_storage`, in a worker thread."""
    try:
        _run_blocking("umount", str(directory))
    except RuntimeFailure as exc:
        _log.warning("activity storage %s: %s; unmounting it lazily", directory, exc)
        _run_blocking("umount", "-l", str(directory))


async def make_storage(directory: Path, size: int, gid: int) -> None:
    """Mount a ``size``-byte ext4 file system over ``directory`` (made, empty), its root ``root:<gid> 0750``.

    The file, ``mkfs`` and ``mount`` are one job of a worker thread: the node's event loop neither forks them
    nor waits on them step by step (with hundreds of activities deploying, each step waited for a busy loop).
    Cancelled, it lets the job end and unmounts what it mounted. Raises :class:`RuntimeFailure` saying which
    step failed.
    """
    if size < 8 << 20:
        raise RuntimeFailure(f"a storage of {size} bytes is too small for a file system; offer 8 MiB or more")
    job = asyncio.ensure_future(asyncio.to_thread(_make, directory, size, gid))
    try:
        await asyncio.shield(job)
    except asyncio.CancelledError:
        try:  # a thread cannot be stopped: wait for it, then take back what it made
            await asyncio.shield(job)
            await asyncio.to_thread(_unmount, directory)
        except Exception as exc:
            _log.warning("activity storage %s: cancelled, and not made or not removed: %s", directory, exc)
        raise


async def remove_storage(directory: Path) -> None:
    """Unmount the file system over ``directory`` (lazily when it is busy); the loop device is freed with it."""
    await asyncio.to_thread(_unmount, directory)


def storage_full(directory: Path) -> bool:
    """Whether the activity's file system is full: less than 1 % (and than 1 MiB) of it free."""
    try:
        info = os.statvfs(directory)
    except OSError:
        return False
    free = info.f_bavail * info.f_frsize
    return free < max(info.f_blocks * info.f_frsize // 100, 1 << 20)


def sweep_stale() -> list[str]:
    """Unmount the activity file systems of nodes that are gone (root only); return the mount points."""
    if os.geteuid() != 0:
        return []
    swept: list[str] = []
    points: list[str] = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as mounts:
        points = [line.split()[4] for line in mounts]
    node_dirs = set()
    for point in points:
        match = _NODE_DIR.search(point + "/")
        if match is None or os.path.exists(f"/proc/{match.group(1)}"):
            continue
        result = subprocess.run(["umount", "-l", point], capture_output=True, timeout=_TIMEOUT, check=False)
        if result.returncode == 0:
            swept.append(point)
            node_dirs.add((point + "/")[: match.end() - 1])
    for node_dir in node_dirs:  # the gone node's directory, now that nothing is mounted in it
        shutil.rmtree(node_dir, ignore_errors=True)
    if swept:
        _log.warning("unmounted %d activity file system(s) left by nodes that were killed: %s", len(swept), swept)
    return swept
