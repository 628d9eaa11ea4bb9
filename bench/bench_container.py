"""How long an activity of the ``container`` runtime takes, next to the ``vm`` runtime's (the floor, same run).

Prints, for each engine that answers (podman; docker when a daemon answers, or a private one with
``--private-dockerd`` as root), the median and fastest of ``RUNS`` cycles of ``deploy`` + ``start`` (no server:
the idle main process) + one ``true`` + ``stop`` on the tiny root of :mod:`tests.tinyroot` (imported once,
before the cycles), and the same cycles with the ``vm`` runtime on the same image. An engine that does not
answer is named with why.

Run: ``.venv/bin/python bench/bench_container.py [--runs 10] [--private-dockerd]`` (root for ``vm``'s root file
system and for a private dockerd).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from golem_local.images.cache import image_from_metadata, unpack_for_sandboxes
from golem_local.images.format import ImageMetadata, write_gvmi
from golem_local.runtime.base import DeploySettings, RunProcess, Runtime
from golem_local.runtime.container import ContainerRuntime
from golem_local.runtime.container_engine import find_engine
from golem_local.runtime.engine_image import EngineImages
from golem_local.runtime.image import Image
from golem_local.runtime.rootfs import user_namespace
from golem_local.runtime.vm import VmRuntime
from golem_shared.errors import SandboxUnavailableError
from tests.dockerd import private_dockerd, why_no_dockerd
from tests.tinyroot import make_tiny_root

RUNS = 10


def tiny_image(base: Path) -> Image:
    """The tiny root as a GVMI, unpacked as a provider's cache does."""
    metadata = ImageMetadata(env=("PATH=/bin",), working_dir="/", volumes=("/golem/out",))
    digest = write_gvmi(make_tiny_root(base / "tree"), metadata, base / "tiny.gvmi")
    unpacked = unpack_for_sandboxes(base / "tiny.gvmi", base / "cache", user_namespace())
    return image_from_metadata(unpacked, base / "cache", digest)


async def cycles(make: Callable[[int], Runtime], runs: int) -> list[float]:
    """Seconds of each of ``runs`` deploy + start + ``true`` + stop cycles of runtimes made by ``make``."""
    took = []
    for index in range(runs):
        runtime = make(index)
        began = time.perf_counter()
        try:
            await runtime.deploy(DeploySettings())
            await runtime.start([])
            code = await runtime.run_command(RunProcess("/bin/sh", ("-c", "true")), lambda _s, _d: None)
            assert code == 0, f"true exited with {code}"
        finally:
            await runtime.stop()
        took.append(time.perf_counter() - began)
    return took


def _containers(image: Image, base: Path, engine: str, images: EngineImages) -> Callable[[int], Runtime]:
    def make(index: int) -> Runtime:
        return ContainerRuntime(image, base / f"{engine}{index}", engine=engine, images=images)

    return make


async def measure(
    runs: int, base: Path, engines: tuple[str, ...] = ("podman", "docker")
) -> dict[str, list[float] | str]:
    """Seconds per cycle by runtime (``vm``, then ``engines``), or why an engine was not measured."""
    image = tiny_image(base / "image")
    found: dict[str, list[float] | str] = {"vm": await cycles(lambda i: VmRuntime(image, base / f"vm{i}"), runs)}
    for engine in engines:
        try:
            await find_engine(engine)
        except SandboxUnavailableError as exc:
            found[engine] = str(exc)
            continue
        images = EngineImages()
        try:
            await images.acquire(await images.engine(engine), image)  # the import is not part of a cycle
            found[engine] = await cycles(_containers(image, base, engine, images), runs)
        finally:
            await images.aclose()
    return found


def report(found: dict[str, list[float] | str]) -> list[str]:
    """One line per runtime: median and fastest, and the ratio to the ``vm`` floor."""
    floor = found["vm"]
    assert isinstance(floor, list)
    lines = []
    for name, figures in found.items():
        if isinstance(figures, str):
            lines.append(f"{name:>6}: not measured: {figures}")
            continue
        median = statistics.median(figures)
        ratio = median / statistics.median(floor)
        lines.append(
            f"{name:>6}: deploy+start+true+stop median {median:.3f} s, fastest {min(figures):.3f} s "
            f"over {len(figures)}; {ratio:.1f}x the vm floor"
        )
    return lines


@contextlib.contextmanager
def _docker_daemon(private: bool) -> Iterator[None]:
    if not private:
        yield
        return
    why = why_no_dockerd()
    if why is not None:
        raise SystemExit(f"--private-dockerd: {why}")
    before = os.environ.get("DOCKER_HOST")
    with private_dockerd() as host:
        os.environ["DOCKER_HOST"] = host
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS, help=f"cycles per runtime (default {RUNS})")
    parser.add_argument("--private-dockerd", action="store_true", help="start a docker daemon of its own (root)")
    args = parser.parse_args()
    with _docker_daemon(args.private_dockerd), tempfile.TemporaryDirectory(prefix="bench-container-") as base:
        os.chmod(base, 0o711)
        for line in report(asyncio.run(measure(args.runs, Path(base)))):
            print(line)


if __name__ == "__main__":
    main()
