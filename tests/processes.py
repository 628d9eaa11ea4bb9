"""The processes the slow tests start, as a user starts them: ``golem-api node`` in its own process, image builds
through the CLI, a program run with a bound, a requestor holding a provider until it is killed.

Every read and every exit has a bound, and whatever a failed check leaves running is killed.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
APP_KEY = "yapapi-fidelity-test-app-key"  # the app key :class:`NodeProcess` gives its node unless told otherwise
LINE_BOUND = 15.0  # seconds one line of a process's output may take
EXIT_BOUND = 10.0  # seconds a process may take to exit once asked to
BUILD_BOUND = 600.0  # seconds an image build may take (a first one makes its Debian base: up to a minute or two)
PIPE = asyncio.subprocess.PIPE


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any daemon settings, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("YAGNA_", "GOLEM_"))}
    env.update(extra)
    return env


def example_env(home: Path) -> dict[str, str]:
    """The environment an example runs in on the embedded network: no ``YAGNA_*``, a ``GOLEM_API_HOME`` of its own."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("YAGNA_")}
    env.update(PYTHONUNBUFFERED="1", GOLEM_API_HOME=str(home))
    return env


def client_env(url: str, bin_dir: Path, app_key: str = APP_KEY, **extra: str) -> dict[str, str]:
    """What a client of ``golem-api node`` at ``url`` runs with: the variables the node prints, ``bin_dir`` first on
    ``PATH``, unbuffered output, plus ``extra``."""
    return clean_env(
        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        YAGNA_APPKEY=app_key,
        YAGNA_API_URL=url,
        YAGNA_SUBNET="public",
        GOLEM_REGISTRY_URL=url,
        PYTHONUNBUFFERED="1",
        **extra,
    )


def shim(bin_dir: Path, name: str, arguments: str) -> Path:
    """A program ``bin_dir/name`` that runs ``python -m <arguments> "$@"`` with this interpreter."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    program = bin_dir / name
    program.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m {arguments} "$@"\n')
    program.chmod(0o755)
    return program


def gftp_shim(bin_dir: Path) -> Path:
    """A ``gftp`` program in ``bin_dir`` that runs ``golem-api gftp`` with this interpreter."""
    return shim(bin_dir, "gftp", "golem_api._cli gftp")


def running(pid: int) -> bool:
    """Whether process ``pid`` has not ended (a zombie has: it only waits for its parent to collect it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


async def kill(process: asyncio.subprocess.Process, bound: float = EXIT_BOUND) -> None:
    """Make sure ``process`` is gone (after a failed check)."""
    if process.returncode is None:
        process.kill()
        await asyncio.wait_for(process.wait(), bound)


class Finished(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


async def run(*argv: str, bound: float, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> Finished:
    """Run ``argv`` to its end, at most ``bound`` seconds (killed after, or when the wait is cancelled)."""
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=None if env is None else dict(env), stdout=PIPE, stderr=PIPE
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), bound)
    finally:
        await kill(process)
    assert process.returncode is not None
    return Finished(process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


async def build_image(registry: Path, context: Path, tag: str, *build_args: str, bound: float = BUILD_BOUND) -> None:
    """``golem-api image build context --tag tag --registry registry [--build-arg ...]``; it must succeed."""
    arguments = [arg for value in build_args for arg in ("--build-arg", value)]
    command = ["image", "build", str(context), "--tag", tag, "--registry", str(registry), *arguments]
    done = await run(sys.executable, "-m", "golem_api", *command, bound=bound, env=clean_env())
    assert done.returncode == 0, f"golem-api image build failed:\n{done.stdout}\n{done.stderr}"


class NodeProcess:
    """``golem-api node`` as a user runs it: its own process, on a free port, stopped with SIGTERM."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.url = ""

    @classmethod
    async def start(
        cls,
        registry: Path | None = None,
        *,
        providers: int = 3,
        app_key: str = APP_KEY,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stderr: int = PIPE,
        line_bound: float = LINE_BOUND,
        extra: Sequence[str] = (),
    ) -> NodeProcess:
        """Start the node (in ``clean_env`` unless ``env`` is given; ``extra`` options added) and read its output up
        to "Press Ctrl-C"."""
        options = ["--port", "0", "--providers", str(providers), "--app-key", app_key, *extra]
        if registry is not None:
            options += ["--registry", str(registry)]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "golem_api",
            "node",
            *options,
            cwd=cwd,
            env=clean_env(PYTHONUNBUFFERED="1") if env is None else dict(env),
            stdout=PIPE,
            stderr=stderr,
        )
        node = cls(process)
        try:
            while not (line := await node.next_line(line_bound)).startswith("Press Ctrl-C"):
                match = re.match(r"Local Golem network running at (http://\S+)", line)
                if match:
                    node.url = match.group(1)
        except BaseException:
            await kill(process)
            raise
        assert node.url, "golem-api node did not say where it runs:\n" + "\n".join(node.lines)
        return node

    async def next_line(self, bound: float = LINE_BOUND) -> str:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), bound)
        assert raw, "golem-api node ended early:\n" + "\n".join(self.lines)
        self.lines.append(raw.decode().rstrip("\n"))
        return self.lines[-1]

    async def stop(self, bound: float = EXIT_BOUND) -> tuple[int, str, str]:
        """SIGTERM, then ``(exit code, rest of stdout, stderr)``."""
        self.process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(self.process.communicate(), bound)
        assert self.process.returncode is not None
        return self.process.returncode, out.decode(), err.decode()

    async def stop_cleanly(self) -> str:
        """:meth:`stop`, which must end with exit code 0 and no traceback: the rest of stdout."""
        code, rest, err = await self.stop()
        assert code == 0, f"golem-api node exited with {code}:\n{err}"
        assert "Traceback" not in err
        return rest

    async def kill(self) -> None:
        await kill(self.process)


@asynccontextmanager
async def running_node(registry: Path | None = None) -> AsyncIterator[NodeProcess]:
    """:meth:`NodeProcess.start`, killed at the end if it is still running."""
    node = await NodeProcess.start(registry)
    try:
        yield node
    finally:
        await node.kill()


HOLDER = """
import asyncio, sys
from golem_api.golem import Golem
from golem_api.payload import VmPayload

async def main() -> None:
    async with Golem(budget=1, app_key=sys.argv[1], api_url=sys.argv[2], event_consumer=None) as golem:
        demand = await golem.create_demand(VmPayload(min_mem_gib=0.5, min_storage_gib=1.0))
        agreement = await demand.agreement(timeout=20)
        await agreement.create_activity()
        print("HOLDING", agreement.agreement_id, flush=True)
        await asyncio.get_running_loop().create_future()

asyncio.run(main())
"""


@asynccontextmanager
async def holding_requestor(
    app_key: str, url: str, *, bound: float, env: Mapping[str, str] | None = None
) -> AsyncIterator[str]:
    """A golem-api requestor process that takes an agreement and an activity and holds them (yields the agreement's
    id, at most ``bound`` seconds after the start), SIGKILLed at the end: it accepts no more debit notes, and ends
    nothing."""
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, app_key, url, cwd=ROOT, env=None if env is None else dict(env), stdout=PIPE
    )
    try:
        assert holder.stdout is not None
        held = (await asyncio.wait_for(holder.stdout.readline(), bound)).decode().split()
        assert held[:1] == ["HOLDING"], held
        yield held[1]
    finally:
        await kill(holder)
