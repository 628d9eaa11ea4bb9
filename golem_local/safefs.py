"""File access beneath a sandbox's volume: what the exe-unit opens on a sandbox's behalf stays in its view.

A command may put symbolic links in its volumes, and a daemon it left running may swap a directory for a
link at any moment. So nothing here resolves a path the sandbox wrote on the host: every operation starts
from a *directory file descriptor* of a volume, opened once by the provider when it made the volume
(:class:`VolumeFiles`), and walks beneath it without following any symbolic link and without leaving it;
what it checked is what it uses, because it keeps using the descriptor it got.

Two ways to open beneath a directory:

* ``openat2(2)`` (Linux 5.6 and later) with ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
  RESOLVE_NO_XDEV``: the kernel refuses any link (``ELOOP``) and any escape (``EXDEV``) in one lookup;
* where it is missing (an older kernel, a seccomp filter that refuses it), one ``openat(…, O_NOFOLLOW)`` per
  path component, each relative to the descriptor of the one before: as safe, one system call per component.

On top of them: :func:`mkdirs_beneath` (``mkdir -p``), :func:`create_file_beneath` (a new file written under a
temporary name and renamed into place within its held directory, so a link planted at the name is replaced,
never followed), :func:`read_file_beneath` (regular files only: no FIFO can block the provider, no device is
read) and :func:`copy_tree_fd` (a copy that never follows a link: links are copied as links, FIFOs, sockets
and devices left out, set-user-ID bits dropped). What the provider creates belongs to the sandbox's host user
(``owner``), so that commands can change it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Mapping

from attrs import define, field

from golem_local.runtime.image import check_sandbox_path

__all__ = [
    "CopyStats",
    "NewFile",
    "UnsafePath",
    "VolumeFiles",
    "copy_tree_fd",
    "create_file_beneath",
    "mkdirs_beneath",
    "open_beneath",
    "openat2_supported",
    "read_file_beneath",
]

_SYS_OPENAT2 = 437  # the same on every architecture's generic table (x86_64, aarch64, riscv64, …)
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
SAFE_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_COPY_CHUNK = 1 << 20

Owner = tuple[int, int]


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class UnsafePath(OSError):
    """A path that is not a plain path below its volume, or that meets a symbolic link on the way."""


_libc: ctypes.CDLL | None = None
_supported: bool | None = None


def _syscall() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc


def _openat2(dir_fd: int, path: str, flags: int, mode: int) -> int:
    """The raw system call; retries ``EAGAIN`` (a rename raced with the lookup, as the kernel asks)."""
    creates = bool(flags & os.O_CREAT)
    how = _OpenHow(flags | os.O_CLOEXEC, mode if creates else 0, SAFE_RESOLVE)  # a mode without O_CREAT: EINVAL
    raw = os.fsencode(path)
    libc = _syscall()
    for _attempt in range(64):
        fd = int(
            libc.syscall(
                _SYS_OPENAT2, ctypes.c_int(dir_fd), ctypes.c_char_p(raw), ctypes.byref(how), ctypes.sizeof(how)
            )
        )
        if fd >= 0:
            return fd
        code = ctypes.get_errno()
        if code != errno.EAGAIN:
            raise OSError(code, os.strerror(code), path)
    raise OSError(errno.EAGAIN, "openat2 kept racing with renames", path)


def openat2_supported() -> bool:
    """Whether this kernel (and any seccomp filter) lets us use ``openat2`` (checked once)."""
    global _supported
    if _supported is None:
        root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.close(_openat2(root, ".", os.O_PATH | os.O_DIRECTORY, 0))
            _supported = True
        except OSError as exc:
            _supported = exc.errno not in (errno.ENOSYS, errno.EPERM, errno.EINVAL)
        finally:
            os.close(root)
    return _supported


def _parts(path: str) -> list[str]:
    """``"a/b/c"`` → ``["a", "b", "c"]``; absolute paths, ``..`` and NUL are refused, ``.`` and ``//`` dropped."""
    if "\0" in path:
        raise UnsafePath(errno.EINVAL, "a NUL character in the path", path)
    if path.startswith("/"):
        raise UnsafePath(errno.EINVAL, "an absolute path where one relative to the volume is expected", path)
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafePath(errno.EXDEV, "'..' in a volume path", path)
    return parts


def _open_directory(part: str, dir_fd: int, path: str) -> int:
    """Open the directory ``part`` of ``dir_fd`` following no link; :class:`UnsafePath` (of ``path``) if it is a link
    or no directory."""
    try:
        return os.open(part, _DIRECTORY, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePath(exc.errno, f"{part!r} is a symbolic link or not a directory", path) from None
        raise


def _walk(dir_fd: int, parts: list[str], flags: int, mode: int, path: str) -> int:
    """The fallback: one ``O_NOFOLLOW`` open per component, relative to the one before."""
    current = dir_fd
    try:
        for part in parts[:-1]:
            following = _open_directory(part, current, path)
            if current != dir_fd:
                os.close(current)
            current = following
        try:
            return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=current)
        except OSError as exc:
            if exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and flags & os.O_DIRECTORY):
                raise UnsafePath(exc.errno, f"{parts[-1]!r} is a symbolic link", path) from None
            raise
    finally:
        if current != dir_fd:
            os.close(current)


def open_beneath(dir_fd: int, path: str, flags: int, mode: int = 0o600) -> int:
    """Open ``path`` below ``dir_fd`` following no link and not leaving it; :class:`UnsafePath` if it would."""
    parts = _parts(path)
    if not parts:
        return os.open(".", flags | os.O_CLOEXEC, dir_fd=dir_fd)
    if not openat2_supported():
        return _walk(dir_fd, parts, flags, mode, path)
    try:
        return _openat2(dir_fd, "/".join(parts), flags, mode)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EXDEV):
            raise UnsafePath(exc.errno, "a symbolic link or a way out of the volume", path) from None
        raise


def mkdirs_beneath(dir_fd: int, path: str, mode: int = 0o755, *, owner: Owner | None = None) -> int:
    """``mkdir -p path`` below ``dir_fd``; returns a descriptor of the last directory (the caller closes it).

    Each component is made with ``mkdirat`` (an existing one is fine) and opened ``O_NOFOLLOW|O_DIRECTORY``
    relative to its parent's descriptor, so a link planted at any name makes it fail, never follow.
    """
    current = os.dup(dir_fd)
    try:
        for part in _parts(path):
            created = False
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, mode, dir_fd=current)
                created = True
            following = _open_directory(part, current, path)
            if created and owner is not None:
                os.fchown(following, *owner)
            os.close(current)
            current = following
        return current
    except BaseException:
        os.close(current)
        raise


class NewFile:
    """A file being written beneath a volume: write to :attr:`fd`, then :meth:`commit` or :meth:`abort`."""

    def __init__(self, fd: int, parent_fd: int, temporary: str, name: str) -> None:
        self.fd = fd
        self._parent = parent_fd
        self._temporary = temporary
        self._name = name
        self._done = False

    def commit(self) -> None:
        """Close the file and rename it to its name within its directory (replacing, never following, a link)."""
        if self._done:
            return
        self._done = True
        try:
            os.close(self.fd)
            os.rename(self._temporary, self._name, src_dir_fd=self._parent, dst_dir_fd=self._parent)
        finally:
            os.close(self._parent)

    def abort(self) -> None:
        """Close and remove the temporary file. Idempotent; harmless after :meth:`commit`."""
        if self._done:
            return
        self._done = True
        try:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temporary, dir_fd=self._parent)
        finally:
            os.close(self._parent)


def _temporary_name(name: str) -> str:
    return f".{name[:200]}.golem-tmp-{os.getpid()}-{os.urandom(4).hex()}"


def create_file_beneath(
    dir_fd: int, path: str, *, mode: int = 0o644, owner: Owner | None = None, make_parents: bool = True
) -> NewFile:
    """A new regular file for ``path`` below ``dir_fd`` (see :class:`NewFile`; the module docstring says why).

    The file never has set-user-ID, set-group-ID or sticky bits, whatever ``mode`` says.
    """
    parts = _parts(path)
    if not parts:
        raise UnsafePath(errno.EISDIR, "a file name is needed, not the volume itself", path)
    parent_path = "/".join(parts[:-1])
    if make_parents:
        parent = mkdirs_beneath(dir_fd, parent_path, owner=owner)
    else:
        parent = open_beneath(dir_fd, parent_path, os.O_RDONLY | os.O_DIRECTORY)
    temporary = _temporary_name(parts[-1])
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temporary, flags, mode & 0o777, dir_fd=parent)
    except BaseException:
        os.close(parent)
        raise
    new = NewFile(fd, parent, temporary, parts[-1])
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode & 0o777)
    except BaseException:
        new.abort()
        raise
    return new


def read_file_beneath(dir_fd: int, path: str) -> int:
    """A descriptor of the *regular file* at ``path`` (opened non-blocking so a FIFO cannot hang us; then
    made blocking); :class:`UnsafePath` for anything else."""
    fd = open_beneath(dir_fd, path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePath(errno.EINVAL, "not a regular file", path)
    os.set_blocking(fd, True)
    return fd


def _copy_data(source: int, target: int) -> int:
    total = 0
    while True:
        try:
            copied = os.copy_file_range(source, target, 1 << 30)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            break
        if copied == 0:
            return total
        total += copied
    while chunk := os.read(source, _COPY_CHUNK):  # copy_file_range refused: read and write
        view = memoryview(chunk)
        while view:
            view = view[os.write(target, view) :]
        total += len(chunk)
    return total


@define
class CopyStats:
    """What :func:`copy_tree_fd` copied and what it left out (by name)."""

    files: int = 0
    directories: int = 0
    links: int = 0
    bytes: int = 0
    skipped: list[str] = field(factory=list)

    @property
    def entries(self) -> int:
        return self.files + self.directories + self.links + len(self.skipped)


def copy_file_fd(source: int, target_dir: int, name: str, mode: int, owner: Owner | None) -> int:
    """Copy the open regular file ``source`` to ``name`` in the directory ``target_dir``; the bytes copied."""
    new = create_file_beneath(target_dir, name, mode=mode, owner=owner, make_parents=False)
    try:
        copied = _copy_data(source, new.fd)
    except BaseException:
        new.abort()
        raise
    new.commit()
    return copied


def copy_tree_fd(
    source: int,
    target: int,
    *,
    owner: Owner | None = None,
    max_entries: int = 1_000_000,
    max_depth: int = 256,
    _stats: CopyStats | None = None,
    _depth: int = 0,
    _avoid: set[tuple[int, int]] | None = None,
) -> CopyStats:
    """Copy the directory open at ``source`` into the one open at ``target``, following no link.

    Every entry is looked up by one-component ``*at`` calls with ``O_NOFOLLOW`` relative to its parent's
    descriptor, so a directory swapped for a link mid-copy is left out, never followed. The target's own
    directories are remembered, so copying a directory into itself ends. More than ``max_entries`` entries
    or ``max_depth`` levels raise :class:`UnsafePath`.
    """
    stats = _stats if _stats is not None else CopyStats()
    target_info = os.fstat(target)
    avoid = _avoid if _avoid is not None else {(target_info.st_dev, target_info.st_ino)}
    if _depth > max_depth:
        raise UnsafePath(errno.ELOOP, f"the tree is more than {max_depth} directories deep", "")
    with os.scandir(source) as entries:
        names = [entry.name for entry in entries]
    for name in names:
        if stats.entries >= max_entries:
            raise UnsafePath(errno.EFBIG, f"more than {max_entries} entries to copy", name)
        try:
            info = os.stat(name, dir_fd=source, follow_symlinks=False)
        except FileNotFoundError:
            continue  # gone meanwhile
        if stat.S_ISLNK(info.st_mode):
            link = os.readlink(name, dir_fd=source)
            temporary = _temporary_name(name)
            os.symlink(link, temporary, dir_fd=target)
            if owner is not None:
                os.chown(temporary, *owner, dir_fd=target, follow_symlinks=False)
            os.rename(temporary, name, src_dir_fd=target, dst_dir_fd=target)
            stats.links += 1
        elif stat.S_ISDIR(info.st_mode):
            if (info.st_dev, info.st_ino) in avoid:
                continue
            try:
                inner = os.open(name, _DIRECTORY, dir_fd=source)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                    stats.skipped.append(name)  # swapped for a link or a file since: not followed
                    continue
                raise
            try:
                copy = mkdirs_beneath(target, name, mode=(stat.S_IMODE(info.st_mode) & 0o777) | 0o700, owner=owner)
                try:
                    made = os.fstat(copy)
                    avoid.add((made.st_dev, made.st_ino))
                    stats.directories += 1
                    copy_tree_fd(
                        inner,
                        copy,
                        owner=owner,
                        max_entries=max_entries,
                        max_depth=max_depth,
                        _stats=stats,
                        _depth=_depth + 1,
                        _avoid=avoid,
                    )
                finally:
                    os.close(copy)
            finally:
                os.close(inner)
        elif stat.S_ISREG(info.st_mode):
            try:
                data = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=source)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOENT, errno.ENXIO):
                    stats.skipped.append(name)
                    continue
                raise
            try:
                if not stat.S_ISREG(os.fstat(data).st_mode):  # swapped for a FIFO or a device since the stat
                    stats.skipped.append(name)
                    continue
                os.set_blocking(data, True)
                stats.bytes += copy_file_fd(data, target, name, stat.S_IMODE(info.st_mode), owner)
                stats.files += 1
            finally:
                os.close(data)
        else:
            stats.skipped.append(name)  # FIFO, socket, device: never opened
    return stats


class VolumeFiles:
    """The volumes of one activity as directory descriptors (see the module docstring).

    ``volumes`` maps each sandbox path (``/golem/work``) to its directory on the host, opened here once
    (``O_NOFOLLOW``: made by the provider, not the sandbox). Files the provider creates go to ``owner``.
    """

    def __init__(self, volumes: Mapping[str, str | os.PathLike[str]], owner: Owner | None = None) -> None:
        self.owner = owner
        self._fds: dict[str, int] = {}
        try:
            for path, host in volumes.items():
                self._fds[path] = os.open(host, _DIRECTORY)
        except BaseException:
            self.close()
            raise

    @property
    def paths(self) -> tuple[str, ...]:
        """The volumes' sandbox paths."""
        return tuple(self._fds)

    def close(self) -> None:
        """Close the descriptors. Idempotent."""
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)

    def split(self, path: str) -> tuple[int, str]:
        """``(descriptor of the deepest volume holding path, path relative to it)``; :class:`UnsafePath` when
        the path is not absolute, climbs with ``..``, or is in no volume."""
        try:
            normal = check_sandbox_path(path, "path")
        except ValueError as exc:
            raise UnsafePath(errno.EINVAL, str(exc), path) from None
        inside = [volume for volume in self._fds if normal == volume or normal.startswith(volume.rstrip("/") + "/")]
        if not inside:
            names = ", ".join(self._fds) or "none"
            raise UnsafePath(errno.ENOENT, f"not inside a volume (the volumes: {names})", path)
        volume = max(inside, key=len)
        return self._fds[volume], normal[len(volume) :].lstrip("/")

    def kind(self, path: str) -> str | None:
        """``"file"``, ``"directory"``, ``"other"`` (a link included), or ``None`` when nothing is there."""
        dir_fd, relative = self.split(path)
        parts = _parts(relative)
        if not parts:
            return "directory"
        try:
            parent = open_beneath(dir_fd, "/".join(parts[:-1]), os.O_PATH | os.O_DIRECTORY)
        except FileNotFoundError:
            return None
        try:
            info = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None
        finally:
            os.close(parent)
        if stat.S_ISREG(info.st_mode):
            return "file"
        return "directory" if stat.S_ISDIR(info.st_mode) else "other"

    def create(self, path: str, mode: int = 0o644) -> NewFile:
        """A new file at ``path`` (parents made), owned by the sandbox's user."""
        dir_fd, relative = self.split(path)
        return create_file_beneath(dir_fd, relative, mode=mode, owner=self.owner)

    def open_read(self, path: str) -> int:
        """A descriptor of the regular file at ``path``; no link anywhere on the way."""
        dir_fd, relative = self.split(path)
        return read_file_beneath(dir_fd, relative)

    def copy(self, source: str, destination: str) -> CopyStats:
        """Copy a file or a directory tree within the volumes; links are copied as links, never followed."""
        source_fd, source_relative = self.split(source)
        target_fd, target_relative = self.split(destination)
        opened = open_beneath(source_fd, source_relative, os.O_RDONLY | os.O_NONBLOCK)
        try:
            info = os.fstat(opened)
            if stat.S_ISDIR(info.st_mode):
                copy = mkdirs_beneath(target_fd, target_relative, owner=self.owner)
                try:
                    return copy_tree_fd(opened, copy, owner=self.owner)
                finally:
                    os.close(copy)
            if not stat.S_ISREG(info.st_mode):
                raise UnsafePath(errno.EINVAL, "neither a regular file nor a directory", source)
            os.set_blocking(opened, True)
            parts = _parts(target_relative)
            if not parts:
                raise UnsafePath(errno.EISDIR, "a file cannot replace a volume", destination)
            parent = mkdirs_beneath(target_fd, "/".join(parts[:-1]), owner=self.owner)
            try:
                copied = copy_file_fd(opened, parent, parts[-1], stat.S_IMODE(info.st_mode), self.owner)
            finally:
                os.close(parent)
            return CopyStats(files=1, bytes=copied)
        finally:
            os.close(opened)
