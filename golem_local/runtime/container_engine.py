"""Which container engine the ``container`` runtime uses, and how it calls it.

By default docker when its daemon answers (``docker version``; the docker client honours ``DOCKER_HOST``, so a
daemon on another socket is one variable away), else podman when it works. :data:`ENGINE_ENV` names one
engine instead (``docker`` or ``podman``): then only that one is used, and its absence is an error saying so.
:class:`ContainerEngine` is the chosen one: its name, its program and the docker host it was chosen with;
every call of the runtime goes through :meth:`ContainerEngine.call` (bounded) or :meth:`ContainerEngine.argv`
(for streamed calls), always to that same daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path

from attrs import frozen

from golem_local.images.engine import engine_usable
from golem_shared.errors import SandboxUnavailableError

__all__ = ["ENGINE_ENV", "QUERY_TIMEOUT", "ContainerEngine", "find_engine"]

ENGINE_ENV = "GOLEM_LOCAL_CONTAINER_ENGINE"
"""The environment variable that names the container runtime's engine (``docker`` or ``podman``); unset or
empty: docker when its daemon answers, else podman."""
QUERY_TIMEOUT = 30.0
"""Seconds one engine call (run, inspect, stop, rm, rmi…) may take."""
_ENGINES = ("docker", "podman")


@frozen
class ContainerEngine:
    """One engine: ``name`` (``docker`` or ``podman``), its ``program``, and ``host``, the ``DOCKER_HOST`` it
    was found with (docker only; ``None``: the default socket)."""

    name: str
    program: str
    host: str | None = None

    def env(self) -> dict[str, str] | None:
        """The environment of the engine's calls (``None``: this process's own)."""
        if self.host is None or os.environ.get("DOCKER_HOST") == self.host:
            return None
        return {**os.environ, "DOCKER_HOST": self.host}

    async def call(self, *args: str, timeout: float = QUERY_TIMEOUT, cwd: Path | None = None) -> tuple[int, str]:
        """Run ``<program> args…`` to its end (killed after ``timeout``: code -1), in ``cwd`` when given (else
        this process's working directory); ``(exit code, its output)``."""
        process = await asyncio.create_subprocess_exec(
            self.program,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env(),
            cwd=cwd,
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), timeout)
        except asyncio.TimeoutError:
            return -1, f"`{self.name} {' '.join(args[:2])}` did not finish within {timeout:g} s"
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        return process.returncode or 0, out.decode(errors="replace").strip()


async def find_engine(wanted: str | None = None) -> ContainerEngine:
    """The engine to use: ``wanted``, else :data:`ENGINE_ENV`'s, else the first that answers of docker, podman.

    Raises :class:`SandboxUnavailableError` naming the engine asked for and why it cannot be used, or what to
    install or start when none answers.
    """
    named = wanted or os.environ.get(ENGINE_ENV) or None
    if named is not None and named not in _ENGINES:
        source = "engine" if wanted else ENGINE_ENV
        raise SandboxUnavailableError(
            f"the container runtime cannot use the engine {named!r} ({source}): name docker or podman, or leave "
            "it unset for docker when its daemon answers, else podman"
        )
    candidates = (named,) if named is not None else _ENGINES
    reasons = []
    for name in candidates:
        why = await engine_usable(name)
        program = shutil.which(name)
        if why is None and program is not None:
            host = os.environ.get("DOCKER_HOST") or None if name == "docker" else None
            return ContainerEngine(name=name, program=program, host=host)
        reasons.append(why or f"{name} is not installed")
    if named is not None:
        raise SandboxUnavailableError(
            f"the container runtime was told to use {named} ({ENGINE_ENV} or engine=), but {reasons[0]}: start it "
            f"or install it, or unset {ENGINE_ENV}"
        )
    raise SandboxUnavailableError(
        "the container runtime needs a container engine, and none answers here: start a docker daemon "
        "(`dockerd`, `systemctl start docker`; DOCKER_HOST for another socket) or install podman and runc "
        f"(`apt-get install podman runc`) ({'; '.join(reasons)})"
    )
