"""The host's Python environment, shown in the sandbox where a ``python`` image has its Python: ``/usr/local``.

An image built ``FROM python:3.X…`` on the local network does not carry a Python: the sandbox shows the one
golem-api runs under, read-only, laid out as in the official ``python`` images (a tmpfs at ``/usr/local``,
made read-only once filled)::

    /usr/local/bin/python3.X               the host's interpreter (see "Relocation")
    /usr/local/bin/python3, python         symbolic links to it
    /usr/local/bin/pip, pip3, pip3.X       ``exec /usr/local/bin/python3.X -m pip "$@"``
    /usr/local/lib/python3.X               the standard library of ``sys.base_prefix``
    /usr/local/lib/python3.X/site-packages the site-packages of the environment golem-api runs in (its venv)
    /usr/local/lib/libpython3.X.so…        for a shared build

So ``python3``, ``/usr/bin/env python3`` and ``#!/usr/local/bin/python`` find it, what golem-api's
environment has installed (numpy, matplotlib with the ``examples`` extra) is importable, and
``pip install numpy`` answers "Requirement already satisfied" without a network. The ``3.X`` of the
``FROM`` is not honoured: it is always the host's version. Nothing of a home directory is shown: the
installation is bound at ``/usr/local``, not at its own path (pyenv keeps it under ``~/.pyenv``).

Relocation: Python finds its standard library from where its executable is, so it runs from
``/usr/local/bin``, but a shared build (``--enable-shared``, as pyenv makes) also records the absolute
directory of ``libpython`` as its ELF ``RUNPATH``. When that directory is ``sys.base_prefix/lib``, a copy of
the executable (17 KB) gets the ``RUNPATH`` ``$ORIGIN/../lib`` instead, the same length or shorter, padded
with NULs: the directory beside ``bin``, which is where ``libpython`` is shown. When the executable cannot be
rewritten so (not ELF64, another ``RUNPATH``), commands get ``LD_LIBRARY_PATH=/usr/local/lib``. Commands
also get ``PIP_DISABLE_PIP_VERSION_CHECK=1`` and ``PIP_ROOT_USER_ACTION=ignore``: pip would otherwise wait
on the network the sandbox does not have, and warn about the root user that everything in it is.
"""

from __future__ import annotations

import functools
import struct
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path

from attrs import field, frozen

from golem_shared.errors import SandboxUnavailableError

__all__ = [
    "PREFIX",
    "HostPython",
    "PythonLayout",
    "host_python",
    "prepare_python",
    "python_image_env",
]

PREFIX = "/usr/local"
"""Where the host's Python appears in the sandbox."""

_ORIGIN_LIB = b"$ORIGIN/../lib"
_DT_RPATH = 15
_DT_RUNPATH = 29
_SHT_DYNAMIC = 6


@frozen
class HostPython:
    """The Python golem-api runs under: its version, executable, standard library, site-packages, libraries."""

    version: str  # "3.11"
    full_version: str  # "3.11.7"
    executable: Path  # the real interpreter binary of the base installation
    stdlib: Path
    site_packages: Path | None  # None: the base installation's own (inside ``stdlib``)
    libraries: tuple[Path, ...]  # libpython*.so* of a shared build
    libdir: Path


@frozen
class PythonLayout:
    """What the sandbox shows under ``/usr/local`` (see the module docstring), in mount order."""

    directories: tuple[str, ...]
    files: tuple[tuple[Path, str], ...]  # (host path, sandbox path), read-only
    symlinks: tuple[tuple[str, str], ...]  # (target, sandbox path)
    env: Mapping[str, str] = field(factory=dict)


@functools.cache
def host_python() -> HostPython:
    """The running Python's installation; :class:`SandboxUnavailableError` if it cannot be shown in a sandbox."""
    major, minor = sys.version_info[:2]
    version = f"{major}.{minor}"
    base = Path(sys.base_prefix)
    stdlib = Path(sysconfig.get_path("stdlib"))
    candidates = [base / "bin" / f"python{version}", base / "bin" / "python3", Path(sys.executable)]
    executable = next((path.resolve() for path in candidates if path.exists()), None)
    if executable is None or not (stdlib / "os.py").exists():
        raise SandboxUnavailableError(
            f"cannot show this machine's Python (prefix {base}) as a python image's: its interpreter or standard "
            "library is not where a CPython installation has them; run golem-api under a regular CPython"
        )
    purelib = Path(sysconfig.get_path("purelib"))
    site_packages = None if purelib == stdlib / "site-packages" else purelib
    if site_packages is not None and not (stdlib / "site-packages").is_dir():
        raise SandboxUnavailableError(
            f"cannot show the site-packages {purelib} as a python image's: the standard library {stdlib} has no "
            "site-packages directory to show it at"
        )
    libdir = Path(sysconfig.get_config_var("LIBDIR") or base / "lib")
    shared = bool(sysconfig.get_config_var("Py_ENABLE_SHARED"))
    libraries = tuple(sorted(libdir.glob(f"libpython{version}*.so*"))) + tuple(libdir.glob("libpython3.so"))
    return HostPython(
        version=version,
        full_version=".".join(str(part) for part in sys.version_info[:3]),
        executable=executable,
        stdlib=stdlib,
        site_packages=site_packages,
        libraries=libraries if shared else (),
        libdir=libdir,
    )


def python_image_env() -> dict[str, str]:
    """What a ``python`` base image adds to an image's ``Env`` (as the official images do)."""
    return {
        "PATH": "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "PYTHON_VERSION": host_python().full_version,
    }


def _runpath_offset(binary: bytes) -> tuple[int, bytes] | None:
    """The file offset and value of the ``RUNPATH`` (or ``RPATH``) string of an ELF64 little-endian file."""
    if binary[:4] != b"\x7fELF" or binary[4] != 2 or binary[5] != 1:
        return None
    try:
        (shoff,) = struct.unpack_from("<Q", binary, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", binary, 0x3A)
        headers = [struct.unpack_from("<IIQQQQIIQQ", binary, shoff + i * shentsize) for i in range(shnum)]
        for header in headers:
            if header[1] != _SHT_DYNAMIC:
                continue
            strings = headers[header[6]][4]  # the file offset of the string table the dynamic section uses
            for start in range(header[4], header[4] + header[5], 16):
                tag, value = struct.unpack_from("<qQ", binary, start)
                if tag == 0:
                    break
                if tag in (_DT_RPATH, _DT_RUNPATH):
                    offset = strings + value
                    return offset, binary[offset : binary.index(b"\0", offset)]
    except (struct.error, IndexError, ValueError):
        return None
    return None


def _relocated(executable: Path, libdir: Path) -> bytes | None:
    """The executable with ``RUNPATH`` ``$ORIGIN/../lib`` when it names ``libdir`` alone; ``None`` otherwise."""
    binary = executable.read_bytes()
    found = _runpath_offset(binary)
    if found is None:
        return None
    offset, value = found
    if value != str(libdir).encode() or len(_ORIGIN_LIB) > len(value):
        return None
    patched = _ORIGIN_LIB + b"\0" * (len(value) - len(_ORIGIN_LIB))
    return binary[:offset] + patched + binary[offset + len(value) :]


def prepare_python(directory: Path) -> PythonLayout:
    """Write the files the layout needs (the relocated interpreter, the pip scripts) into ``directory``.

    Called for each sandbox that shows the host's Python (once per activity, once per build); it writes
    two small files. Raises :class:`SandboxUnavailableError` when this Python cannot be shown.
    """
    python = host_python()
    version = python.version
    bin_dir, lib_dir = f"{PREFIX}/bin", f"{PREFIX}/lib"
    stdlib = f"{lib_dir}/python{version}"
    directory.mkdir(parents=True, exist_ok=True)
    env = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_ROOT_USER_ACTION": "ignore", "PIP_NO_INPUT": "1"}
    executable = python.executable
    if python.libraries:
        relocated = _relocated(executable, python.libdir)
        if relocated is not None:
            executable = directory / f"python{version}"
            executable.write_bytes(relocated)
            executable.chmod(0o755)
        elif not str(python.libdir).startswith("/usr/lib"):
            env["LD_LIBRARY_PATH"] = lib_dir
    pip = directory / "pip"
    pip.write_text(f'#!/bin/sh\nexec {bin_dir}/python{version} -m pip "$@"\n')
    pip.chmod(0o755)
    files: list[tuple[Path, str]] = [(executable, f"{bin_dir}/python{version}")]
    files += [(pip, f"{bin_dir}/{name}") for name in ("pip", "pip3", f"pip{version}")]
    files.append((python.stdlib, stdlib))
    if python.site_packages is not None:
        files.append((python.site_packages, f"{stdlib}/site-packages"))
    files += [(library, f"{lib_dir}/{library.name}") for library in python.libraries]
    symlinks = ((f"python{version}", f"{bin_dir}/python3"), (f"python{version}", f"{bin_dir}/python"))
    return PythonLayout(directories=(bin_dir, lib_dir), files=tuple(files), symlinks=symlinks, env=env)
