"""The GVMI image file, byte for byte as ``gvmkit-build`` writes it and Golem's ``vm`` runtime reads it.

A Golem VM image (``.gvmi``)::

    offset 0        a squashfs 4.0 file system of the whole root file system (superblock magic ``hsqs``; its
                    ``bytes_used`` field, u64 LE at offset 40, is its size), zero-padded to a multiple of 4096
    offset S        CRC-32 (IEEE, :func:`zlib.crc32`) of the JSON, 4 bytes little-endian
    offset S+4      the JSON metadata: a *flat* Docker container config (``{"Env": […], "Cmd": […], …}``, not
                    ``{"Config": {…}}``), PascalCase keys in the order of Docker's ContainerConfig, unset keys
                    left out rather than ``null``
    offset S+4+N    N, the JSON's length, as 8 ASCII decimal digits (``00000278``)

The **image hash** is the SHA3-224 hex digest of the whole file. A squashfs reader (the kernel, ``unsquashfs``,
``squashfuse``) ignores what follows ``bytes_used``, so the file is also a plain squashfs image.

:func:`write_gvmi` makes one with ``mksquashfs`` (Debian package ``squashfs-tools``) from a directory or from
an uncompressed tar stream (``docker export``), reproducibly: the root directory is always ``root:root 0755``,
the superblock's time is fixed (``SOURCE_DATE_EPOCH`` for a tar, 0 for a directory), and ``mksquashfs`` 4.5
is deterministic whatever the number of threads; so the same tree and metadata give the same hash.
:func:`verify_image` checks a file made anywhere (trailer, CRC, squashfs superblock, padding, hash) and says
what is wrong with it; :func:`unpack_image` unpacks the file system with ``unsquashfs``.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from attrs import field, frozen

from golem_local.images.errors import ImageFormatError
from golem_shared.errors import ConfigurationError
from golem_shared.imagehash import file_sha3

__all__ = [
    "COMPRESSIONS",
    "CONFIG_KEYS",
    "DEFAULT_COMPRESSION",
    "EPOCH",
    "ImageInfo",
    "ImageMetadata",
    "encode_trailer",
    "gvmi_from_squashfs",
    "make_squashfs",
    "read_metadata",
    "unpack_image",
    "unpack_squashfs",
    "verify_image",
    "write_gvmi",
]

EPOCH = 0
"""The modification time the builder gives files it copies in (so ``.pyc`` files compiled from them match)."""

COMPRESSIONS = ("gzip", "lzo", "lz4", "xz", "zstd")
"""The squashfs compressors ``mksquashfs`` offers and ``gvmkit-build`` accepts."""

DEFAULT_COMPRESSION = ("gzip", 1)
"""gzip at level 1: every squashfs reader (any provider's kernel) has it, and it is as fast as zstd level 3
within a factor 2 (``gvmkit-build``'s own default, lzo at level 8, is about 20 times slower to write)."""

CONFIG_KEYS = (
    "Hostname",
    "Domainname",
    "User",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "ExposedPorts",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "Env",
    "Cmd",
    "Healthcheck",
    "ArgsEscaped",
    "Image",
    "Volumes",
    "WorkingDir",
    "Entrypoint",
    "NetworkDisabled",
    "MacAddress",
    "OnBuild",
    "Labels",
    "StopSignal",
    "StopTimeout",
    "Shell",
)
"""Docker's ContainerConfig keys in the order gvmkit-build writes them (bollard's struct order)."""

_LENGTH_DIGITS = 8
_CRC = 4
_MAX_JSON = 10**_LENGTH_DIGITS - 1
_PAGE = 4096
_MAGIC = b"hsqs"
_SUPERBLOCK = struct.Struct("<4sIIIIHHHHHHQQQQQQQQ")  # squashfs 4.0, 96 bytes
_COMPRESSOR_IDS = {1: "gzip", 2: "lzma", 3: "lzo", 4: "xz", 5: "lz4", 6: "zstd"}
_TOOL_TIMEOUT = 3600.0  # seconds mksquashfs / unsquashfs may take (a very large tree on a slow disk)
_SQUASHFS_HINT = "install squashfs-tools (`apt-get install -y squashfs-tools`; scripts/bootstrap.sh does it)"


def _strings(values: Any) -> tuple[str, ...]:
    return tuple(str(value) for value in values)


def _optional_strings(values: Any) -> tuple[str, ...] | None:
    return None if values is None else _strings(values)


def _labels(values: Mapping[str, str]) -> dict[str, str]:
    return {str(key): str(value) for key, value in values.items()}


@frozen
class ImageMetadata:
    """What an image says about itself: the Docker container config at the end of a GVMI.

    ``env`` holds ``NAME=value`` strings in order; ``entrypoint`` and ``cmd`` are ``None`` when not set;
    ``working_dir`` is ``""`` when not set (Docker's default, ``/``).
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

    def to_json(self) -> dict[str, Any]:
        """The container config as gvmkit-build writes it: Docker's keys in its order, unset keys left out."""
        config: dict[str, Any] = {
            "Hostname": "",
            "Domainname": "",
            "AttachStdin": False,
            "AttachStdout": False,
            "AttachStderr": False,
            "ExposedPorts": {port: {} for port in self.exposed_ports} or None,
            "Tty": False,
            "OpenStdin": False,
            "StdinOnce": False,
            "Env": list(self.env),
            "Cmd": None if self.cmd is None else list(self.cmd),
            "Volumes": {path: {} for path in self.volumes} or None,
            "WorkingDir": self.working_dir,
            "Entrypoint": None if self.entrypoint is None else list(self.entrypoint),
            "Labels": dict(self.labels) or None,
        }
        return {key: config[key] for key in CONFIG_KEYS if config.get(key) is not None}

    @classmethod
    def from_json(cls, config: Any) -> ImageMetadata:
        """Read a container config (unknown keys ignored, ``null`` as unset); ``ValueError`` if it is not one."""
        if not isinstance(config, dict):
            raise ValueError(f"the metadata is a {type(config).__name__}, not a JSON object")

        def listed(key: str) -> list[Any] | None:
            value = config.get(key)
            if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise ValueError(f"{key} is {value!r}, not a list of strings")
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


def encode_trailer(metadata: ImageMetadata) -> bytes:
    """What follows the squashfs: CRC-32 (LE) of the JSON, the JSON, its length as 8 digits."""
    data = json.dumps(metadata.to_json(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(data) > _MAX_JSON:
        raise ImageFormatError(f"the metadata is {len(data)} bytes of JSON, more than a GVMI can hold")
    return struct.pack("<I", zlib.crc32(data)) + data + f"{len(data):0{_LENGTH_DIGITS}d}".encode("ascii")


@frozen
class ImageInfo:
    """What :func:`verify_image` found: the hash, the file's size, the squashfs's size and compressor, the
    metadata."""

    hash: str
    size: int
    squashfs_size: int
    compression: str
    metadata: ImageMetadata


def _not_gvmi(name: str, what: str) -> ImageFormatError:
    return ImageFormatError(
        f"{name} is not a GVMI image: {what}; build the image with `golem-api image build DIR --tag NAME:VERSION` "
        "or `gvmkit-build`, and copy it again if it was cut short"
    )


def _trailer(source: IO[bytes], name: str) -> tuple[ImageMetadata, int]:
    """The metadata at the end of an open image, and the size of what precedes it (the squashfs part)."""
    size = source.seek(0, os.SEEK_END)
    if size < _LENGTH_DIGITS + _CRC + 2:
        raise _not_gvmi(name, f"it is {size} bytes long, too short to be an image")
    source.seek(size - _LENGTH_DIGITS)
    digits = source.read(_LENGTH_DIGITS)
    if not digits.isdigit():
        raise _not_gvmi(name, f"it does not end with the 8-digit length of its metadata (it ends with {digits!r})")
    length = int(digits)
    payload = size - _LENGTH_DIGITS - length - _CRC
    if payload < 0:
        raise _not_gvmi(name, f"it says its metadata is {length} bytes long, more than the file holds")
    source.seek(payload)
    (crc,) = struct.unpack("<I", source.read(_CRC))
    data = source.read(length)
    if zlib.crc32(data) != crc:
        raise _not_gvmi(name, "its metadata does not match its CRC32 (the file is damaged or truncated)")
    try:
        metadata = ImageMetadata.from_json(json.loads(data.decode("utf-8")))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _not_gvmi(name, f"its metadata is not a container config: {exc}") from None
    return metadata, payload


def read_metadata(path: Path) -> ImageMetadata:
    """The metadata of the image file at ``path``; :class:`ImageFormatError` if it is not an image."""
    with open(path, "rb") as source:
        return _trailer(source, str(path))[0]


def _superblock(source: IO[bytes], name: str, payload: int) -> tuple[int, str]:
    """``(bytes_used, compressor)`` of the squashfs at the start of ``source``, checked against ``payload``."""
    source.seek(0)
    raw = source.read(_SUPERBLOCK.size)
    if len(raw) < _SUPERBLOCK.size or raw[:4] != _MAGIC:
        raise _not_gvmi(name, f"it does not start with a squashfs file system (magic 'hsqs'; found {raw[:4]!r})")
    fields = _SUPERBLOCK.unpack(raw)
    compressor, major, minor, bytes_used = fields[5], fields[9], fields[10], fields[12]
    if (major, minor) != (4, 0):
        raise _not_gvmi(name, f"its squashfs is version {major}.{minor}, not 4.0")
    if bytes_used > payload:
        raise _not_gvmi(
            name, f"its squashfs says it is {bytes_used} bytes long but only {payload} bytes precede the metadata"
        )
    gap = payload - bytes_used
    if gap >= _PAGE:
        raise _not_gvmi(name, f"{gap} bytes lie between the squashfs and the metadata (at most 4095 of padding)")
    source.seek(bytes_used)
    if source.read(gap).strip(b"\0"):
        raise _not_gvmi(name, "the padding after the squashfs is not zeros")
    return bytes_used, _COMPRESSOR_IDS.get(compressor, f"unknown ({compressor})")


def verify_image(path: Path, expected_hash: str | None = None) -> ImageInfo:
    """Check everything that can be checked without mounting the image at ``path``; return what was found.

    The trailer (8 digits, the CRC-32 of the JSON, a container config), the squashfs superblock (magic,
    version 4.0, a size that fits, zero padding under 4096 bytes), and, when ``expected_hash`` is given
    (``sha3:`` prefixes accepted), the SHA3-224 of the whole file. Raises :class:`ImageFormatError` naming the
    file, what is wrong and what to do.
    """
    name = str(path)
    try:
        with open(path, "rb") as source:
            metadata, payload = _trailer(source, name)
            bytes_used, compression = _superblock(source, name, payload)
    except OSError as exc:
        raise ImageFormatError(f"cannot read the image {name}: {exc.strerror or exc}") from exc
    digest = file_sha3(path)
    if expected_hash is not None:
        wanted = expected_hash.rsplit(":", 1)[-1].strip().lower()
        if wanted != digest:
            raise ImageFormatError(
                f"{name} has the hash {digest}, not the expected {wanted}: it is another image, or it was changed "
                "or damaged on the way; fetch it again, or use the hash it has"
            )
    return ImageInfo(digest, path.stat().st_size, bytes_used, compression, metadata)


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ConfigurationError(f"{name} is not installed: {_SQUASHFS_HINT}")
    return found


def _compression_args(compression: str, level: int | None) -> list[str]:
    if compression not in COMPRESSIONS:
        raise ConfigurationError(f"unknown compression {compression!r}; choose one of {', '.join(COMPRESSIONS)}")
    args = ["-comp", compression]
    if level is not None:
        if compression in ("lz4", "xz"):
            raise ConfigurationError(f"{compression} has no compression level; leave the level out")
        args += ["-Xcompression-level", str(level)]
    if compression == "lz4":
        args.append("-Xhc")  # as gvmkit-build: lz4 without -Xhc gains nothing over lzo
    return args


def make_squashfs(
    source: Path | IO[bytes],
    destination: Path,
    *,
    compression: str = DEFAULT_COMPRESSION[0],
    level: int | None = DEFAULT_COMPRESSION[1],
    source_date_epoch: int = 0,
    exclude: Sequence[str] = (),
    wrap: Sequence[str] = (),
    pass_fds: Sequence[int] = (),
) -> None:
    """Write the squashfs of ``source`` (a directory, or an open uncompressed tar stream) to ``destination``.

    A directory's contents become ``/`` with owners, modes and times as on disk. A tar stream is read by
    ``mksquashfs -tar`` (owners, modes and devices from its headers, nothing unpacked); its entries newer than
    ``source_date_epoch`` are clamped to it, and the root and the superblock get it. ``exclude`` are
    ``mksquashfs -wildcards`` patterns (``dev/*``). ``wrap`` is put before the ``mksquashfs`` command (to run
    it in the user namespace that owns the tree, with ``pass_fds`` kept open).
    Raises :class:`ImageFormatError` if ``mksquashfs`` fails, ``ConfigurationError`` if it is missing.
    """
    options = [
        "-noappend",
        "-quiet",
        "-no-progress",
        *_compression_args(compression, level),
        # the image's / is root:root 0755 whatever the source: a tar may have no "./" entry (mksquashfs 4.5
        # would make it 0777), and a build directory may be 0700
        "-root-mode",
        "0755",
        "-root-uid",
        "0",
        "-root-gid",
        "0",
    ]
    if exclude:
        options += ["-wildcards", "-e", *exclude]
    env = {key: value for key, value in os.environ.items() if key != "SOURCE_DATE_EPOCH"}
    mksquashfs = _tool("mksquashfs")
    if isinstance(source, Path):
        if not source.is_dir():
            raise ImageFormatError(f"{source} is not a directory to make an image of")
        command = [*wrap, mksquashfs, str(source), str(destination), *options, "-mkfs-time", "0"]
        stdin: Any = subprocess.DEVNULL
    else:
        # in tar mode -mkfs-time and -root-time are ignored: SOURCE_DATE_EPOCH sets both, and clamps newer entries
        env["SOURCE_DATE_EPOCH"] = str(source_date_epoch)
        command = [*wrap, mksquashfs, "-", str(destination), "-tar", *options]
        stdin = source
    try:
        process = subprocess.run(
            command,
            stdin=stdin,
            capture_output=True,
            env=env,
            timeout=_TOOL_TIMEOUT,
            pass_fds=tuple(pass_fds),
            check=False,
        )
    except subprocess.TimeoutExpired:
        destination.unlink(missing_ok=True)
        raise ImageFormatError(
            f"mksquashfs did not finish writing {destination} within {_TOOL_TIMEOUT:.0f} s"
        ) from None
    if process.returncode != 0:
        destination.unlink(missing_ok=True)
        said = (process.stderr or process.stdout).decode(errors="replace").strip()[-2000:]
        raise ImageFormatError(f"mksquashfs could not write {destination} (exit code {process.returncode}): {said}")


def gvmi_from_squashfs(squashfs: Path, metadata: ImageMetadata, destination: Path) -> str:
    """Write the GVMI of the squashfs file ``squashfs`` (copied) with ``metadata`` to ``destination``; return
    its hash."""
    partial = _partial(destination)
    shutil.copyfile(squashfs, partial)
    return _finish_gvmi(partial, metadata, destination)


def _partial(destination: Path) -> Path:
    """Where the GVMI for ``destination`` is written before :func:`_finish_gvmi` moves it there."""
    return destination.with_name(destination.name + ".part")


def _finish_gvmi(partial: Path, metadata: ImageMetadata, destination: Path) -> str:
    """Append the trailer of ``metadata`` to the squashfs ``partial``, move it to ``destination``; return its hash."""
    with open(partial, "ab") as out:
        out.write(encode_trailer(metadata))
    os.replace(partial, destination)
    return file_sha3(destination)


def write_gvmi(
    source: Path | IO[bytes],
    metadata: ImageMetadata,
    destination: Path,
    *,
    compression: str = DEFAULT_COMPRESSION[0],
    level: int | None = DEFAULT_COMPRESSION[1],
    source_date_epoch: int = 0,
    exclude: Sequence[str] = (),
    wrap: Sequence[str] = (),
    pass_fds: Sequence[int] = (),
) -> str:
    """Write the GVMI of ``source`` (see :func:`make_squashfs`) with ``metadata`` to ``destination``; return its
    hash (SHA3-224 hex). Same tree (or tar bytes) and metadata, same file."""
    partial = _partial(destination)
    make_squashfs(
        source,
        partial,
        compression=compression,
        level=level,
        source_date_epoch=source_date_epoch,
        exclude=exclude,
        wrap=wrap,
        pass_fds=pass_fds,
    )
    return _finish_gvmi(partial, metadata, destination)


def unpack_squashfs(path: Path, destination: Path, *, wrap: Sequence[str] = (), pass_fds: Sequence[int] = ()) -> None:
    """Unpack the squashfs at the start of ``path`` (a GVMI or a bare squashfs) into the new directory
    ``destination`` (see :func:`unpack_image`)."""
    # -n: no progress bar; -ig and -no-exit-code: a device node or owner it cannot make is not fatal
    command = [*wrap, _tool("unsquashfs"), "-n", "-q", "-no-xattrs", "-ig", "-no-exit-code", "-d", str(destination)]
    try:
        process = subprocess.run(
            [*command, str(path)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_TOOL_TIMEOUT,
            pass_fds=tuple(pass_fds),
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ImageFormatError(f"unsquashfs did not finish unpacking {path} within {_TOOL_TIMEOUT:.0f} s") from None
    if process.returncode != 0 or not destination.is_dir():
        said = (process.stderr or process.stdout).decode(errors="replace").strip()[-2000:]
        raise ImageFormatError(
            f"cannot unpack {path} into {destination} (unsquashfs exit code {process.returncode}): {said}"
        )


def unpack_image(
    path: Path, destination: Path, *, wrap: Sequence[str] = (), pass_fds: Sequence[int] = ()
) -> ImageMetadata:
    """Unpack the file system of the image at ``path`` into the new directory ``destination``; return the metadata.

    ``unsquashfs`` keeps owners and modes when it can (as root, or in a user namespace that maps them: ``wrap``
    is put before the command); extended attributes are not restored, and device nodes that cannot be made are
    skipped (the sandbox makes its own ``/dev``). Raises :class:`ImageFormatError` if the file is not an image
    or cannot be unpacked.
    """
    name = str(path)
    with open(path, "rb") as source:
        metadata, payload = _trailer(source, name)
        _superblock(source, name, payload)
    unpack_squashfs(path, destination, wrap=wrap, pass_fds=pass_fds)
    return metadata
