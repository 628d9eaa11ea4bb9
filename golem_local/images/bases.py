"""Base images without a registry: ``FROM debian:*`` and ``FROM python:*`` made from Debian's own packages.

No container registry is needed: a base is a root file system made by ``mmdebstrap`` (Debian package
``mmdebstrap``) from ``deb.debian.org``, the way the official Docker images are made, and cached as an
uncompressed tar under :func:`cache_dir` ``/bases``:

- ``debian:<suite>[-slim]`` (``bookworm``, ``12``, ``trixie``, ``13``, ``bullseye``, ``11``, ``stable``,
  ``latest``…): Debian's ``minbase`` variant with merged ``/usr``, without man pages, documentation and
  locales, and with the apt settings of the official images (no ``.deb`` files or package lists left behind
  by ``apt-get install``); about 75 MB, like ``debian:bookworm-slim``. The non-slim tags get the same.
- ``python:<version>[-slim][-<suite>]``: that plus Debian's ``python3``, ``pip``, ``venv`` and
  ``ca-certificates``, with ``python``, ``python3``, ``pip``, ``pip3`` in ``/usr/local/bin`` and pip allowed to
  install as root into ``/usr/local`` (as in the official images). **The Python is Debian's**: 3.11 on
  bookworm, 3.13 on trixie, 3.9 on bullseye. A tag asking for another version (``python:3.8-slim``) gets the
  suite's Python, and the build log says so; a tag naming a suite (``3.12-slim-trixie``) gets that suite.
- ``scratch``: nothing.

Anything else (``ubuntu:*``: no Ubuntu archive is among the registries this project may use; ``alpine``,
``nginx``, ``node``…) is refused by :func:`resolve_base` with what to write instead. A base is made once and
kept: the same base tar gives the same image hash. ``refresh=True`` makes it again from today's archive.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from attrs import frozen

from golem_local.images.registry import golem_api_home
from golem_shared.errors import ConfigurationError

__all__ = [
    "BASE_TIMEOUT",
    "CACHE_ENV",
    "Base",
    "BaseUnavailable",
    "BuiltBase",
    "cache_dir",
    "ensure_base",
    "resolve_base",
]

CACHE_ENV = "GOLEM_API_CACHE"
"""The environment variable naming the build cache (bases, build layers); default ``$GOLEM_API_HOME/cache``."""

BASE_TIMEOUT = 1200.0
"""Seconds making a base may take (mmdebstrap downloads about 100 packages), and another build may wait for it."""

DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PYTHON_PATH = "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"

_SUITES = {
    "bookworm": "bookworm",
    "12": "bookworm",
    "oldstable": "bookworm",
    "trixie": "trixie",
    "13": "trixie",
    "stable": "trixie",
    "latest": "trixie",
    "bullseye": "bullseye",
    "11": "bullseye",
}
_SUITE_PYTHON = {"bookworm": "3.11", "trixie": "3.13", "bullseye": "3.9"}
_PYTHON_SUITE = {version: suite for suite, version in _SUITE_PYTHON.items()}
_DEFAULT_PYTHON_SUITE = "bookworm"
_OFFICIAL_REPOSITORY = re.compile(
    r"(?:(?:docker\.io|index\.docker\.io|registry-1\.docker\.io)/)?(?:library/)?([a-z0-9._-]+)"
)
_LOCK_POLL = 0.5

_ENGINE_HINT = "or build with a container engine that can pull it (`golem-api image build --engine docker` or `podman`)"
_SUGGESTIONS = {
    "ubuntu": "no Ubuntu archive is among the registries this machine may use; start FROM debian:bookworm-slim "
    "(same apt-get, Debian's package names)",
    "alpine": "start FROM debian:bookworm-slim and install what you need with "
    "`RUN apt-get update && apt-get install -y --no-install-recommends PACKAGE` (Debian's names for apk's)",
    "nginx": "start FROM debian:bookworm-slim and `RUN apt-get update && apt-get install -y "
    "--no-install-recommends nginx`",
    "node": "start FROM debian:bookworm-slim and `RUN apt-get update && apt-get install -y "
    "--no-install-recommends nodejs npm`",
    "busybox": "start FROM debian:bookworm-slim (busybox: `apt-get install -y busybox`)",
    "postgres": "start FROM debian:bookworm-slim and `RUN apt-get update && apt-get install -y postgresql`",
    "redis": "start FROM debian:bookworm-slim and `RUN apt-get update && apt-get install -y redis-server`",
    "golang": "start FROM debian:bookworm-slim and `RUN apt-get update && apt-get install -y golang`",
}


class BaseUnavailable(ValueError):
    """The ``FROM`` names a base the builder cannot make; the message says what to write instead."""


@frozen
class Base:
    """How a ``FROM`` reference is made: ``kind`` (``"debian"``, ``"python"``, ``"scratch"``) and Debian
    ``suite``, the image config it starts with (``env``, ``cmd``), and a ``note`` for the build log."""

    reference: str
    kind: str
    suite: str
    env: tuple[tuple[str, str], ...]
    cmd: tuple[str, ...] | None
    note: str

    @property
    def name(self) -> str:
        """The cache name: ``debian-bookworm``, ``python-bookworm``."""
        return f"{self.kind}-{self.suite}"


@frozen
class BuiltBase:
    """A base made and cached: its tar, the tar's SHA-256, and the Python version in it (``""`` if none)."""

    base: Base
    tar: Path
    sha256: str
    python_version: str
    created: str


def cache_dir() -> Path:
    """``$GOLEM_API_CACHE``, else :func:`~golem_local.images.registry.golem_api_home` ``/ "cache"``."""
    chosen = os.environ.get(CACHE_ENV)
    return Path(chosen).expanduser() if chosen else golem_api_home() / "cache"


def _split(reference: str) -> tuple[str, str]:
    """``(repository, tag)`` of an image reference (digests dropped; ``latest`` when no tag)."""
    name = reference.strip().split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    else:
        tag = "latest"
    return name.lower(), tag.lower()


def resolve_base(reference: str) -> Base:
    """How the ``FROM`` ``reference`` is made here; :class:`BaseUnavailable` saying what to do for others."""
    repository, tag = _split(reference)
    if repository == "scratch":
        return Base(reference, "scratch", "none", (), None, "scratch: an empty root file system")
    match = _OFFICIAL_REPOSITORY.fullmatch(repository)
    short = match.group(1) if match else repository.rsplit("/", 1)[-1]
    if match is None:
        raise BaseUnavailable(
            f"the base image {reference!r} is not one the builder can make without a registry (it makes debian:*, "
            f"python:* and scratch from Debian's packages); start from one of these, {_ENGINE_HINT}"
        )
    if short == "debian":
        words = tag.split("-")
        suite = _SUITES.get(words[0])
        if suite is None or any(word not in ("slim",) and not re.fullmatch(r"\d{8}", word) for word in words[1:]):
            raise BaseUnavailable(
                f"debian:{tag} names no Debian release the builder knows; use debian:bookworm-slim (12), "
                "debian:trixie-slim (13) or debian:bullseye-slim (11)"
            )
        return Base(
            reference,
            "debian",
            suite,
            (("PATH", DEBIAN_PATH),),
            ("bash",),
            f"{reference}: Debian {suite} (minbase, slim), made from deb.debian.org",
        )
    if short == "python":
        words = tag.split("-")
        version = words[0] if re.fullmatch(r"3(\.\d+){0,2}", words[0]) else ""
        named = [_SUITES[word] for word in words if word in _SUITES and word not in ("latest", "stable")]
        unknown = [w for w in words[1 if version else 0 :] if w not in ("slim", "latest") and w not in _SUITES]
        if unknown:
            raise BaseUnavailable(
                f"python:{tag}: the builder makes python:<version>[-slim][-bookworm|-trixie|-bullseye] from "
                f"Debian's Python; {', '.join(unknown)!r} is not one of these parts; write e.g. python:3.11-slim"
            )
        minor = ".".join(version.split(".")[:2])
        suite = named[0] if named else _PYTHON_SUITE.get(minor, _DEFAULT_PYTHON_SUITE)
        has = _SUITE_PYTHON[suite]
        if minor and minor not in ("3", has):
            note = (
                f"{reference}: Debian {suite}'s Python {has}, NOT {minor}: Debian ships no Python {minor} "
                f"(bookworm has 3.11, trixie 3.13, bullseye 3.9); pip install works as usual; "
                "use --engine docker for the official image"
            )
        else:
            note = f"{reference}: Debian {suite}'s Python {has} (python3, pip, venv), made from deb.debian.org"
        env = (("PATH", PYTHON_PATH), ("LANG", "C.UTF-8"))
        return Base(reference, "python", suite, env, ("python3",), note)
    suggestion = _SUGGESTIONS.get(short)
    hint = suggestion if suggestion is not None else "start FROM debian:bookworm-slim and apt-get install what it needs"
    raise BaseUnavailable(
        f"the builder cannot make the base image {reference!r} without a registry (it makes debian:*, python:* and "
        f"scratch from Debian's packages): {hint}, {_ENGINE_HINT}"
    )


# -- making and caching bases ------------------------------------------------------------------------------

_APT_LIKE_DOCKER = r"""mkdir -p "$1/etc/apt/apt.conf.d"
cat > "$1/etc/apt/apt.conf.d/docker-clean" <<EOT
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb \
/var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb \
/var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOT
printf 'Acquire::GzipIndexes "true";\n' > "$1/etc/apt/apt.conf.d/docker-gzip-indexes"
printf 'Acquire::Languages "none";\n' > "$1/etc/apt/apt.conf.d/docker-no-languages"
printf 'Apt::AutoRemove::SuggestsImportant "false";\n' > "$1/etc/apt/apt.conf.d/docker-autoremove-suggests"
"""
_CLEAN = (
    r"""rm -f "$1/etc/resolv.conf" "$1/etc/hostname" "$1/etc/hosts"; """
    r"""rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin"""
)
_PYTHON_HOOK = (
    r"""rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED; mkdir -p "$1/usr/local/bin"; """
    r"""for name in python python3; do ln -sf /usr/bin/python3 "$1/usr/local/bin/$name"; done; """
    r"""for name in pip pip3; do ln -sf /usr/bin/pip3 "$1/usr/local/bin/$name"; done"""
)


def mmdebstrap_command(base: Base, output: Path) -> list[str]:
    """The ``mmdebstrap`` command that writes ``base`` as an uncompressed tar to ``output``."""
    mode = "root" if os.geteuid() == 0 else "unshare"
    command = ["mmdebstrap", "--variant=minbase", f"--mode={mode}", "--format=tar"]
    if base.kind == "python":
        command.append("--include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates")
    for option in (
        "path-exclude=/usr/share/man/*",
        "path-exclude=/usr/share/doc/*",
        "path-include=/usr/share/doc/*/copyright",
        "path-exclude=/usr/share/info/*",
        "path-exclude=/usr/share/locale/*",
        "path-include=/usr/share/locale/locale.alias",
        "path-exclude=/usr/share/lintian/*",
    ):
        command.append(f"--dpkgopt={option}")
    command += ['--aptopt=Acquire::Languages "none"', "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr"]
    command += [f"--customize-hook={_APT_LIKE_DOCKER}", f"--customize-hook={_CLEAN}"]
    if base.kind == "python":
        command.append(f"--customize-hook={_PYTHON_HOOK}")
    return [*command, base.suite, str(output)]


def _python_version(tar: Path) -> str:
    """The version of the ``python3.X`` package installed in the base (``""`` if none), from dpkg's status."""
    with tarfile.open(tar, "r:") as archive:
        member = next((m for m in archive if m.name in ("./var/lib/dpkg/status", "var/lib/dpkg/status")), None)
        if member is None:
            return ""
        content = archive.extractfile(member)
        text = content.read().decode(errors="replace") if content is not None else ""
    found = re.search(r"^Package: python3\.\d+\n(?:.+\n)*?Version: (\d+\.\d+\.\d+)", text, re.M)
    return found.group(1) if found else ""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.asynccontextmanager
async def _locked(path: Path, timeout: float):  # type: ignore[no-untyped-def]
    """Hold an exclusive lock on ``path`` (another process making the same base waits, at most ``timeout``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:  # noqa: ASYNC230 - a lock file, opened once
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConfigurationError(
                        f"another build has held {path} for {timeout:.0f} s; if none is running, remove the file"
                    ) from None
                await asyncio.sleep(_LOCK_POLL)  # another process's base build: nothing to wait on but the lock
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


async def ensure_base(
    base: Base, *, log: Callable[[str], None], refresh: bool = False, cache: Path | None = None
) -> BuiltBase:
    """The cached tar of ``base``, made first when missing (or when ``refresh``); the output of
    ``mmdebstrap`` goes to ``log``. Raises :class:`ConfigurationError` saying what to install or fix."""
    directory = (cache if cache is not None else cache_dir()) / "bases"
    tar = directory / f"{base.name}.tar"
    info_file = directory / f"{base.name}.json"
    async with _locked(directory / f".{base.name}.lock", BASE_TIMEOUT):
        if refresh or not tar.exists() or not info_file.exists():
            await _make(base, tar, log)
            info = {
                "reference": base.reference,
                "suite": base.suite,
                "kind": base.kind,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "sha256": await asyncio.to_thread(_sha256, tar),
                "python_version": await asyncio.to_thread(_python_version, tar) if base.kind == "python" else "",
            }
            partial = info_file.with_suffix(".json.part")
            partial.write_text(json.dumps(info, indent=2) + "\n")
            os.replace(partial, info_file)
        info = json.loads(info_file.read_text())
    return BuiltBase(base, tar, str(info["sha256"]), str(info.get("python_version", "")), str(info["created"]))


async def run_streaming(
    command: list[str], env: dict[str, str], timeout: float, each: Callable[[bytes], None], *, lines: bool
) -> int:
    """Run ``command`` (no stdin, stderr into stdout, a session of its own) and give its output to ``each``, line by
    line if ``lines`` else as it comes; at most ``timeout`` seconds. Its exit code, or -1 if it ran out of time
    (killed then, as when the wait is cancelled)."""
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    stdout = process.stdout
    assert stdout is not None

    async def pump() -> int:
        while data := await (stdout.readline() if lines else stdout.read(65536)):
            each(data)
        return await process.wait()

    try:
        return await asyncio.wait_for(pump(), timeout)
    except asyncio.TimeoutError:
        return -1
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


async def _make(base: Base, tar: Path, log: Callable[[str], None]) -> None:
    if shutil.which("mmdebstrap") is None:
        raise ConfigurationError(
            f"making the base {base.reference} needs mmdebstrap: install it (`apt-get install -y mmdebstrap "
            "squashfs-tools uidmap`; scripts/bootstrap.sh does it), or build with --engine docker/podman"
        )
    if os.geteuid() != 0 and shutil.which("newuidmap") is None:
        raise ConfigurationError(
            f"making the base {base.reference} as a user other than root needs newuidmap and a subordinate id range "
            "(`apt-get install uidmap`; `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER`)"
        )
    tar.parent.mkdir(parents=True, exist_ok=True)
    partial = tar.with_name(tar.name + ".part")
    partial.unlink(missing_ok=True)
    log(f" → making the base {base.name} with mmdebstrap from deb.debian.org (once; cached in {tar.parent})\n")
    started = time.monotonic()
    env = {**os.environ, "SOURCE_DATE_EPOCH": "0", "LC_ALL": "C.UTF-8"}
    tail: list[str] = []

    def each(line: bytes) -> None:
        text = line.decode(errors="replace")
        tail[:] = [*tail[-30:], text]
        if text.startswith(("I: ", "E: ", "W: ")):
            log("   " + text)

    code = await run_streaming(mmdebstrap_command(base, partial), env, BASE_TIMEOUT, each, lines=True)
    if code == -1:
        tail.append(f"(stopped after {BASE_TIMEOUT:.0f} s)\n")
    if code != 0:
        partial.unlink(missing_ok=True)
        raise ConfigurationError(
            f"mmdebstrap could not make the base {base.reference} (exit code {code}); check that deb.debian.org "
            f"is reachable (a proxy: set http_proxy), then build again. Its last lines:\n{''.join(tail[-15:])}"
        )
    os.replace(partial, tar)
    size = tar.stat().st_size  # noqa: ASYNC240 - one stat
    log(f" → base {base.name} made in {time.monotonic() - started:.1f} s ({size / 1e6:.1f} MB)\n")
