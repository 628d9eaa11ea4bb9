"""Building with a container engine (docker or podman): the whole Dockerfile, whatever it holds, into a GVMI.

:func:`build_with_engine` does what ``gvmkit-build`` does after ``docker build``, without its helper container:

1. bases: every ``FROM`` image the engine has not got is pulled; when it cannot be pulled (no registry
   reachable) and the builder can make it from Debian's packages (:mod:`~golem_local.images.bases`), that tar
   is imported under the official name (``python:3.8-slim``, ``docker.io/library/python:3.8-slim`` for
   podman) with the image config of the official image, so an unmodified ``FROM`` resolves locally;
2. ``build --network host`` (a daemon started with ``--bridge=none`` has no other network for ``RUN``), tagged
   with the image's tag; podman also gets the host's CA bundle over the image's for ``RUN`` steps
   (``--volume``), docker cannot be given one;
3. ``image inspect``: its ``Config`` becomes the GVMI metadata (``User`` dropped as by gvmkit-build: the VM runs
   commands as root);
4. ``create`` + ``export`` streamed into ``mksquashfs -tar`` (nothing unpacked; owners from the tar), with
   ``SOURCE_DATE_EPOCH`` = the image's creation time, so the files the engine adds to every export
   (``/.dockerenv``, ``/etc/hostname``…) get fixed times and the same image always gives the same hash;
   ``.dockerenv`` and ``dev/*`` are left out;
5. the container is removed; the image stays in the engine (its layer cache makes the next build fast).

:func:`usable_engine` says which engine answers here (docker when its daemon does, else podman).
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from golem_local.images.bases import BaseUnavailable, ensure_base, resolve_base, run_streaming
from golem_local.images.errors import DockerfileError, ImageBuildError, ImageFormatError
from golem_local.images.format import ImageMetadata, write_gvmi
from golem_shared.errors import ConfigurationError

__all__ = ["BUILD_TIMEOUT", "build_with_engine", "engine_usable", "usable_engine"]

BUILD_TIMEOUT = 3600.0
"""Seconds the engine's ``build`` may take."""
_QUERY_TIMEOUT = 20.0
_PULL_TIMEOUT = 300.0
_EXPORT_TIMEOUT = 1800.0
_FROM = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?\s*$", re.I)
_CREATED = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:?\d\d)?")
_CA_TARGET = "/etc/ssl/certs/ca-certificates.crt"


async def _run(argv: list[str], timeout: float, env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``argv``; ``(exit code, stdout, stderr)``, or code -1 when it did not end within ``timeout``."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env) if env is not None else None,
        )
    except OSError as exc:
        return -1, "", str(exc)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        return -1, "", f"did not finish within {timeout:.0f} s"
    return process.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


def _environment(engine: str) -> dict[str, str]:
    env = dict(os.environ)
    if engine == "docker" and "DOCKER_BUILDKIT" not in env and shutil.which("docker-buildx") is None:
        # a recent CLI without the buildx plugin refuses to build unless told to use the classic builder
        plugins = [
            Path(p) / "docker-buildx" for p in ("/usr/libexec/docker/cli-plugins", "/usr/lib/docker/cli-plugins")
        ]
        if (
            not any(plugin.exists() for plugin in plugins)
            and not (Path.home() / ".docker/cli-plugins/docker-buildx").exists()
        ):
            env["DOCKER_BUILDKIT"] = "0"
    return env


async def engine_usable(engine: str) -> str | None:
    """``None`` if ``engine`` (``"docker"``, ``"podman"``) can build here, else why not."""
    program = shutil.which(engine)
    if program is None:
        return f"{engine} is not installed"
    query = (
        ["version", "--format", "{{.Server.Version}}"] if engine == "docker" else ["info", "--format", "{{.Host.Arch}}"]
    )
    code, _out, err = await _run([program, *query], _QUERY_TIMEOUT)
    if code != 0:
        return f"{engine} does not answer ({err.strip()[-300:] or f'exit code {code}'})"
    return None


async def usable_engine() -> str | None:
    """``"docker"`` when a docker daemon answers, else ``"podman"`` when podman works, else ``None``."""
    for engine in ("docker", "podman"):
        if await engine_usable(engine) is None:
            return engine
    return None


def _from_lines(dockerfile: Path) -> list[tuple[int, str]]:
    """``(line, image)`` of each ``FROM`` naming an image (not a build stage, ``scratch`` or a variable)."""
    found: list[tuple[int, str]] = []
    stages: set[str] = set()
    for number, line in enumerate(dockerfile.read_text(encoding="utf-8").splitlines(), start=1):
        match = _FROM.match(line)
        if match is None:
            continue
        image, stage = match.group(1), match.group(2)
        if image.lower() not in stages and image != "scratch" and "$" not in image:
            found.append((number, image))
        if stage:
            stages.add(stage.lower())
    return found


def _engine_name(engine: str, reference: str) -> str:
    """The name to import a base as: podman resolves short names through docker.io/library only if told so."""
    if engine != "podman":
        return reference
    first = reference.split("/", 1)[0]
    if "/" in reference and ("." in first or ":" in first or first == "localhost"):
        return reference
    return f"docker.io/{reference}" if "/" in reference else f"docker.io/library/{reference}"


async def _ensure_bases(engine: str, program: str, dockerfile: Path, log: Any, env: Mapping[str, str]) -> list[str]:
    notes: list[str] = []
    for line, reference in _from_lines(dockerfile):
        name = _engine_name(engine, reference)
        code, _out, _err = await _run([program, "image", "inspect", name], _QUERY_TIMEOUT, env)
        if code == 0:
            continue
        log(f" → {engine} has no {reference}: pulling it\n")
        code, _out, pulled = await _run([program, "pull", name], _PULL_TIMEOUT, env)
        if code == 0:
            continue
        try:
            base = resolve_base(reference)
        except BaseUnavailable as exc:
            raise DockerfileError(
                f"{engine} cannot pull {reference} ({pulled.strip()[-300:]}), and without a registry {exc}",
                path=str(dockerfile),
                line=line,
                instruction="FROM",
            ) from None
        if base.kind == "scratch":
            continue
        built = await ensure_base(base, log=log)
        changes = [f"ENV {key}={value}" for key, value in base.env]
        if built.python_version:
            changes.append(f"ENV PYTHON_VERSION={built.python_version}")
        if base.cmd is not None:
            changes.append(f"CMD {json.dumps(list(base.cmd))}")
        arguments = [item for change in changes for item in ("--change", change)]
        log(f" → no registry answers: importing {base.note} as {name}\n")
        code, _out, err = await _run([program, "import", *arguments, str(built.tar), name], _PULL_TIMEOUT, env)
        if code != 0:
            raise ImageBuildError(
                f"{engine} could not import the base {name}: {err.strip()[-500:]}", path=str(dockerfile)
            )
        notes.append(f"{base.note} (imported into {engine} as {name})")
    return notes


def _created(inspect: Mapping[str, Any]) -> int:
    """The image's creation time (seconds since the epoch, UTC), from ``image inspect``'s ``Created``."""
    match = _CREATED.match(str(inspect.get("Created", "")))
    if match is None:
        return 0
    seconds = calendar.timegm(time.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S"))
    zone = match.group(2)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        hours, minutes = int(zone[1:3]), int(zone[-2:])
        seconds -= sign * (hours * 3600 + minutes * 60)
    return seconds


async def build_with_engine(
    engine: str,
    context: Path,
    dockerfile: Path,
    destination: Path,
    *,
    tag: str | None,
    build_args: Mapping[str, str],
    log: Any,
    host_ca: Path | None,
    compression: tuple[str, int | None],
    timeout: float = BUILD_TIMEOUT,
) -> tuple[ImageMetadata, tuple[str, ...]]:
    """Build ``dockerfile`` with ``engine`` and write the GVMI to ``destination`` (see the module docstring).

    Returns the image's metadata and notes on the bases. Raises ``ConfigurationError`` when the engine is not
    usable here, :class:`DockerfileError` for a base it can neither pull nor be given, and
    :class:`ImageBuildError` when the build or the export fails.
    """
    why = await engine_usable(engine)
    if why is not None:
        raise ConfigurationError(
            f"cannot build with {engine}: {why}; start it (a docker daemon: `dockerd`, or `systemctl start docker`), "
            "or build with --engine none (the builder's own interpreter) or --engine auto"
        )
    program = shutil.which(engine)
    assert program is not None
    env = _environment(engine)
    notes = await _ensure_bases(engine, program, dockerfile, log, env)
    image = tag or f"golem-api-build/{uuid.uuid4().hex[:12]}:latest"
    command = [program, "build", "--network", "host", "-f", str(dockerfile), "-t", image]
    for name, value in build_args.items():
        command += ["--build-arg", f"{name}={value}"]
    if engine == "podman" and host_ca is not None:
        command += ["--volume", f"{host_ca}:{_CA_TARGET}:ro"]
    command.append(str(context))
    log(f" → {engine} build --network host -t {image} {context}\n")
    tail = b""

    def each(chunk: bytes) -> None:
        nonlocal tail
        tail = (tail + chunk)[-2000:]
        log(chunk.decode(errors="replace"))

    code = await run_streaming(command, env, timeout, each, lines=False)
    if code != 0:
        raise ImageBuildError(
            f"`{engine} build` failed ({'timed out' if code == -1 else f'exit code {code}'}); it said:\n"
            f"{tail.decode(errors='replace').strip()}",
            path=str(dockerfile),
        )
    code, out, err = await _run([program, "image", "inspect", image], _QUERY_TIMEOUT, env)
    if code != 0:
        raise ImageBuildError(f"`{engine} image inspect {image}` failed: {err.strip()[-500:]}", path=str(dockerfile))
    inspect = json.loads(out)[0]
    config = dict(inspect.get("Config") or {})
    user = config.pop("User", "") or ""
    if user not in ("", "root", "0", "0:0", "root:root"):
        notes.append(f"USER {user} is not kept: Golem VMs run every command as root (gvmkit-build does the same)")
    metadata = ImageMetadata.from_json(config)
    code, out, err = await _run([program, "create", image, "true"], _QUERY_TIMEOUT, env)
    if code != 0:
        raise ImageBuildError(f"`{engine} create {image}` failed: {err.strip()[-500:]}", path=str(dockerfile))
    container = out.strip().splitlines()[-1]
    try:
        await asyncio.to_thread(
            _export, program, container, metadata, destination, _created(inspect), compression, env, dockerfile
        )
    finally:
        await _run([program, "rm", "-f", container], _QUERY_TIMEOUT, env)
    return metadata, tuple(notes)


def _export(
    program: str,
    container: str,
    metadata: ImageMetadata,
    destination: Path,
    created: int,
    compression: tuple[str, int | None],
    env: Mapping[str, str],
    dockerfile: Path,
) -> None:
    with subprocess.Popen(
        [program, "export", container],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
    ) as export:
        assert export.stdout is not None
        try:
            write_gvmi(
                export.stdout,
                metadata,
                destination,
                compression=compression[0],
                level=compression[1],
                source_date_epoch=created,
                exclude=(".dockerenv", "dev/*"),
            )
            code = export.wait(_EXPORT_TIMEOUT)
        except (ImageFormatError, subprocess.TimeoutExpired) as exc:
            export.kill()
            export.wait()
            raise ImageBuildError(f"exporting the built image failed: {exc}", path=str(dockerfile)) from exc
        said = export.stderr.read().decode(errors="replace").strip()[-500:] if export.stderr else ""
    if code != 0:
        raise ImageBuildError(f"`export {container}` failed (exit code {code}): {said}", path=str(dockerfile))
