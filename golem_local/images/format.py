"""The local image file format: a GVMI laid out as Golem's, with a tar of the file tree where GVMI has squashfs.

A Golem VM image (GVMI, as ``gvmkit-build`` writes it) is::

    [squashfs of the root file system][CRC32 of the JSON, 4 bytes LE][JSON metadata][JSON length, 8 ASCII digits]

An image of the local network keeps that layout and that metadata (a Docker container config: ``Env``,
``Entrypoint``, ``Cmd``, ``WorkingDir``, ``Volumes``, ``Labels``), but its payload is an **uncompressed tar**
(POSIX pax format) of the image's own files only: the local ``vm`` runtime has no VM and no kernel to boot,
so it needs no system tree, and the machine may have no squashfs tools. A real provider cannot run it
(its payload is not squashfs) and the local runtime cannot run a real GVMI; the hash, the metadata and the
way the file is named, served and verified are the same.

The image hash is the SHA3-224 hex digest of the whole file. Files are written deterministically: entries
sorted by path, every time stamp :data:`EPOCH`, owner and group 0 with no names, so the same tree and
metadata always give the same bytes, hence the same hash. Uncompressed, so that no compressor version
enters the bytes either.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import struct
import tarfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from attrs import field, frozen

from golem_local.images.errors import ImageFormatError

__all__ = [
    "BASE_LABEL",
    "EPOCH",
    "ImageMetadata",
    "read_metadata",
    "unpack_image",
    "write_image",
]

EPOCH = 0
"""The modification time of every entry of an image (and of files the builder copies in)."""

BASE_LABEL = "golem-api.base"
"""The label recording the ``FROM`` of the Dockerfile, so that the runtime knows which base to show."""

_TRAILER = 8  # the JSON length, 8 ASCII digits
_CRC = 4
_CHUNK = 1 << 20


def _strings(values: Any) -> tuple[str, ...]:
    return tuple(str(value) for value in values)


def _optional_strings(values: Any) -> tuple[str, ...] | None:
    return None if values is None else _strings(values)


def _labels(values: Mapping[str, str]) -> dict[str, str]:
    return {str(key): str(value) for key, value in values.items()}


@frozen
class ImageMetadata:
    """What the image says about itself (the Docker container config of a GVMI).

    ``env`` holds ``NAME=value`` strings in order; ``entrypoint`` and ``cmd`` are ``None`` when not set;
    ``working_dir`` is ``""`` when not set (Docker's default, ``/``); ``labels`` include :data:`BASE_LABEL`.
    """

    env: tuple[str, ...] = field(default=(), converter=_strings)
    entrypoint: tuple[str, ...] | None = field(default=None, converter=_optional_strings)
    cmd: tuple[str, ...] | None = field(default=None, converter=_optional_strings)
    working_dir: str = ""
    volumes: tuple[str, ...] = field(default=(), converter=_strings)
    labels: Mapping[str, str] = field(factory=dict, converter=_labels)
    exposed_ports: tuple[str, ...] = field(default=(), converter=_strings)

    @property
    def env_dict(self) -> dict[str, str]:
        """``env`` as a mapping (a later entry of a name wins)."""
        return dict(entry.partition("=")[::2] for entry in self.env)

    @property
    def base(self) -> str:
        """The ``FROM`` the image was built on (``""`` when not recorded)."""
        return self.labels.get(BASE_LABEL, "")

    def to_json(self) -> dict[str, Any]:
        """The Docker container config keys (``Env``, ``Entrypoint``, ``Cmd``, …), ``null`` where unset."""
        return {
            "Cmd": None if self.cmd is None else list(self.cmd),
            "Entrypoint": None if self.entrypoint is None else list(self.entrypoint),
            "Env": list(self.env),
            "ExposedPorts": {port: {} for port in self.exposed_ports} or None,
            "Labels": dict(self.labels) or None,
            "Volumes": {path: {} for path in self.volumes} or None,
            "WorkingDir": self.working_dir,
        }

    @classmethod
    def from_json(cls, config: Any) -> ImageMetadata:
        """Read a container config (the keys of :meth:`to_json`; missing ones are unset); ``ValueError`` if it
        is not one."""
        if not isinstance(config, dict):
            raise ValueError(f"the metadata is a {type(config).__name__}, not a JSON object")

        def listed(key: str) -> list[Any] | None:
            value = config.get(key)
            if value is not None and not isinstance(value, list):
                raise ValueError(f"{key} is {value!r}, not a list")
            return value

        def mapping(key: str) -> dict[str, Any]:
            value = config.get(key) or {}
            if not isinstance(value, dict):
                raise ValueError(f"{key} is {value!r}, not an object")
            return value

        working_dir = config.get("WorkingDir") or ""
        if not isinstance(working_dir, str):
            raise ValueError(f"WorkingDir is {working_dir!r}, not a string")
        return cls(
            env=listed("Env") or (),
            entrypoint=listed("Entrypoint"),
            cmd=listed("Cmd"),
            working_dir=working_dir,
            volumes=sorted(mapping("Volumes")),
            labels=mapping("Labels"),
            exposed_ports=sorted(mapping("ExposedPorts")),
        )


def _entries(root: Path, relative: str = "") -> Iterator[tuple[str, os.stat_result, Path]]:
    """``(archive name, lstat, host path)`` of everything under ``root``, sorted by name, parents first."""
    directory = root / relative if relative else root
    for name in sorted(os.listdir(directory)):
        path = directory / name
        member = f"{relative}/{name}" if relative else name
        info = path.lstat()
        yield member, info, path
        if stat.S_ISDIR(info.st_mode):
            yield from _entries(root, member)


def _tar_info(member: str, info: os.stat_result, path: Path) -> tarfile.TarInfo:
    entry = tarfile.TarInfo(member)
    entry.mode = stat.S_IMODE(info.st_mode)
    entry.mtime = EPOCH
    entry.uid = entry.gid = 0
    entry.uname = entry.gname = ""
    if stat.S_ISDIR(info.st_mode):
        entry.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(info.st_mode):
        entry.type = tarfile.SYMTYPE
        entry.linkname = os.readlink(path)
    elif stat.S_ISREG(info.st_mode):
        entry.type = tarfile.REGTYPE
        entry.size = info.st_size
    else:
        raise ImageFormatError(
            f"{path} is neither a file, a directory nor a symbolic link (a socket, pipe or device); "
            "images hold only those: remove it in the step that made it"
        )
    return entry


def write_image(tree: Path, metadata: ImageMetadata, destination: Path) -> str:
    """Write the image of ``tree`` (its contents appear at ``/``) with ``metadata`` to ``destination``.

    Returns the image hash (SHA3-224 hex of the file). Hard links are stored as separate files.
    """
    config = json.dumps(metadata.to_json(), sort_keys=True, separators=(",", ":")).encode("utf-8")
    digest = hashlib.sha3_224()
    with open(destination, "wb") as raw:
        out = _HashingWriter(raw, digest)
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for member, info, path in _entries(tree):
                entry = _tar_info(member, info, path)
                if entry.type == tarfile.REGTYPE:
                    with open(path, "rb") as content:
                        tar.addfile(entry, content)
                else:
                    tar.addfile(entry)
        out.write(struct.pack("<I", zlib.crc32(config)))
        out.write(config)
        out.write(f"{len(config):0{_TRAILER}d}".encode("ascii"))
    return digest.hexdigest()


class _HashingWriter(io.RawIOBase):
    """A write-only file that hashes what it passes on (so the image is hashed as it is written)."""

    def __init__(self, target: IO[bytes], digest: Any) -> None:
        self._target = target
        self._digest = digest

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._target.write(view)
        self._digest.update(view)
        return len(view)


class _Window(io.RawIOBase):
    """The first ``size`` bytes of a file, read-only: the tar payload without the metadata behind it."""

    def __init__(self, source: IO[bytes], size: int) -> None:
        self._source = source
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), self._left)
        if wanted <= 0:
            return 0
        data = self._source.read(wanted)
        view[: len(data)] = data
        self._left -= len(data)
        return len(data)


def _trailer(source: IO[bytes], name: str) -> tuple[ImageMetadata, int]:
    """Read the metadata at the end of an open image; return it with the payload's size."""
    size = source.seek(0, os.SEEK_END)
    if size < _TRAILER + _CRC + 2:
        raise ImageFormatError(f"{name} is {size} bytes long, too short to be an image")
    source.seek(size - _TRAILER)
    length_text = source.read(_TRAILER)
    if not length_text.isdigit():
        raise ImageFormatError(
            f"{name} does not end with the 8-digit metadata length of an image (found {length_text!r}); "
            "is it an image built by `golem-api image build`?"
        )
    length = int(length_text)
    payload = size - _TRAILER - length - _CRC
    if payload < 0:
        raise ImageFormatError(f"{name} says its metadata is {length} bytes long, more than the file holds")
    source.seek(payload)
    (crc,) = struct.unpack("<I", source.read(_CRC))
    config = source.read(length)
    if zlib.crc32(config) != crc:
        raise ImageFormatError(f"{name}: the metadata does not match its CRC32; the file is damaged")
    try:
        metadata = ImageMetadata.from_json(json.loads(config))
    except ValueError as exc:
        raise ImageFormatError(f"{name}: the metadata is not a container config: {exc}") from None
    return metadata, payload


def read_metadata(path: Path) -> ImageMetadata:
    """The metadata of the image file at ``path``; :class:`ImageFormatError` if it is not an image."""
    with open(path, "rb") as source:
        return _trailer(source, str(path))[0]


def _check_member(entry: tarfile.TarInfo, name: str) -> None:
    parts = entry.name.split("/")
    if entry.name.startswith("/") or ".." in parts:
        raise ImageFormatError(f"{name}: the entry {entry.name!r} would land outside the image's tree; refused")
    if not (entry.isdir() or entry.isreg() or entry.issym()):
        raise ImageFormatError(
            f"{name}: the entry {entry.name!r} is not a file, a directory or a symbolic link; refused"
        )


def unpack_image(path: Path, destination: Path) -> ImageMetadata:
    """Unpack the image file at ``path`` into the new directory ``destination``; return its metadata.

    Entries with absolute paths or ``..``, links, devices and anything written through a symbolic link
    are refused with :class:`ImageFormatError` (symbolic links themselves may point anywhere: they are
    followed only inside the sandbox).
    """
    name = str(path)
    with open(path, "rb") as source:
        metadata, payload = _trailer(source, name)
        source.seek(0)
        destination.mkdir(parents=True)
        root = destination.resolve()
        directories: list[tuple[Path, int]] = []  # their modes are set last: one may forbid writing into it
        try:
            with tarfile.open(fileobj=io.BufferedReader(_Window(source, payload)), mode="r|") as tar:
                for entry in tar:
                    _check_member(entry, name)
                    target = root / entry.name
                    parent = target.parent.resolve()
                    if parent != root and root not in parent.parents:
                        raise ImageFormatError(f"{name}: the entry {entry.name!r} goes through a symbolic link")
                    if entry.isdir():
                        target.mkdir(exist_ok=True)
                        directories.append((target, entry.mode))
                        continue
                    if entry.issym():
                        os.symlink(entry.linkname, target)
                        continue
                    content = tar.extractfile(entry)
                    assert content is not None
                    with open(target, "xb") as out:  # "x": never through a link, never over an earlier entry
                        while chunk := content.read(_CHUNK):
                            out.write(chunk)
                    os.chmod(target, entry.mode)
                    os.utime(target, (entry.mtime, entry.mtime))
        except tarfile.TarError as exc:
            raise ImageFormatError(f"{name}: the file tree is not a valid tar: {exc}") from None
        except OSError as exc:
            raise ImageFormatError(f"{name}: cannot unpack it into {destination}: {exc}") from exc
    for directory, mode in reversed(directories):
        os.chmod(directory, mode)
        os.utime(directory, (EPOCH, EPOCH))
    return metadata
