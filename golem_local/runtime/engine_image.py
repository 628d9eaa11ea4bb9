"""An image of the local runtimes (an unpacked GVMI) as an image of a container engine (docker or podman).

:func:`engine_image` streams the image's root (``Image.root``) as a tar into ``<engine> import``, with the
image's ``Env`` and ``WorkingDir`` as changes, and tags it ``golem-local/gvmi:<hash>``, once: an image the engine
already holds under that tag is used as it is. The tree is unpacked in the sandboxes' user namespace (its files
belong to host ids ``base…base+count``, :func:`~golem_local.runtime.rootfs.image_uid_range`); the tar gives
them back the ids they have in the image (``base`` → ``0``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tarfile
import time
from pathlib import Path
from typing import IO

from golem_local.runtime.base import RuntimeFailure
from golem_local.runtime.container_engine import ENGINE_ENV, ContainerEngine, find_engine
from golem_local.runtime.image import Image
from golem_local.runtime.rootfs import image_uid_range

__all__ = ["IMPORT_TIMEOUT", "REMOVE_TIMEOUT", "EngineImages", "engine_image", "image_tag"]

IMPORT_TIMEOUT = 600.0
"""Seconds an ``import`` may take."""
REMOVE_TIMEOUT = 60.0
"""Seconds :meth:`EngineImages.aclose` may take to remove every image it imported."""
_log = logging.getLogger(__name__)


def image_tag(image: Image) -> str:
    """The engine's tag of ``image``: by its hash, else by its root's path."""
    name = image.hash[:32] if image.hash else hashlib.sha256(str(image.root).encode()).hexdigest()[:32]
    return f"localhost/golem-local-gvmi:{name}"


def _write_tar(root: Path, sink: IO[bytes]) -> None:
    base, count = image_uid_range()

    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
        if base <= info.uid < base + count:
            info.uid -= base
        if base <= info.gid < base + count:
            info.gid -= base
        info.uname = info.gname = ""
        return info

    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(root.iterdir()):
            tar.add(entry, arcname=entry.name, filter=owned)


async def engine_image(engine: ContainerEngine, image: Image) -> tuple[str, bool]:
    """The tag of ``image`` in ``engine``, imported first if it is not there yet; and whether it was imported
    now (``False``: the engine had it already, from this node, another or the user).

    Raises :class:`RuntimeFailure` for an image without a whole root file system (nothing to import) or when
    the engine refuses it (its words).
    """
    if image.root is None or not image.rootfs:
        raise RuntimeFailure(
            "the container runtime runs GVMI images (a whole root file system); this activity's image has none: "
            "name a GVMI in the demand (golem_api.vm.repo / a task package), or use the vm runtime"
        )
    tag = image_tag(image)
    code, _ = await engine.call("image", "inspect", tag)
    if code == 0:
        return tag, False
    changes = [f"ENV {key}={value}" for key, value in image.env.items()]
    changes.append(f"WORKDIR {image.working_dir or '/'}")
    arguments = [item for change in changes for item in ("--change", change)]
    read_fd, write_fd = os.pipe()
    try:
        process = await asyncio.create_subprocess_exec(
            engine.program,
            "import",
            *arguments,
            "-",
            tag,
            stdin=read_fd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=engine.env(),
        )
    except BaseException:
        os.close(write_fd)
        raise
    finally:
        os.close(read_fd)
    failure: list[BaseException] = []
    root = image.root

    def produce() -> None:
        with os.fdopen(write_fd, "wb") as sink:
            try:
                _write_tar(root, sink)
            except BrokenPipeError:
                pass  # the engine gave up: its answer says why
            except Exception as exc:
                failure.append(exc)

    producing = asyncio.create_task(asyncio.to_thread(produce))
    try:
        said, _ = await asyncio.wait_for(process.communicate(), IMPORT_TIMEOUT)
    except asyncio.TimeoutError:
        raise RuntimeFailure(f"`{engine.name} import` did not import the image within {IMPORT_TIMEOUT:.0f} s") from None
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        await producing
    if failure:
        raise RuntimeFailure(f"the image at {root} could not be read for the engine: {failure[0]}")
    if process.returncode != 0:
        raise RuntimeFailure(f"`{engine.name} import` refused the image {tag}: {said.decode(errors='replace')[-500:]}")
    return tag, True


class EngineImages:
    """The images one owner (a node, or a lone runtime) imported into container engines, removed at :meth:`aclose`.

    Only what :func:`engine_image` imported for this owner is removed: an image the engine had before (the
    user's, another node's, an earlier run's) is used as it is and left there. Removal is a plain ``rmi``
    (never ``--force``): an image a container still uses (another node's, on the same engine) stays, and a
    line says so. The whole removal is bounded by :data:`REMOVE_TIMEOUT`.

    Images are removed when the owner closes, not when its last activity ends: a node runs one image for many
    activities in turn, and importing costs a tar of the whole root each time. The owner also keeps the engine
    it found (:meth:`engine`), so that each activity does not look for it again.
    """

    def __init__(self) -> None:
        self._engines: dict[tuple[str, str], ContainerEngine] = {}
        self._imported: dict[tuple[ContainerEngine, str], None] = {}
        self._locks: dict[str, asyncio.Lock] = {}  # one import of an image at a time
        self._closed = False

    @property
    def imported(self) -> list[str]:
        """The tags imported so far and not yet removed, in order."""
        return [tag for _engine, tag in self._imported]

    async def engine(self, wanted: str | None = None) -> ContainerEngine:
        """:func:`~.container_engine.find_engine`'s answer, asked once per engine name and ``DOCKER_HOST`` (asking
        costs a few hundred milliseconds: ``podman info``); an engine that stops answering later fails the
        calls made to it, with its words."""
        key = (wanted or os.environ.get(ENGINE_ENV) or "", os.environ.get("DOCKER_HOST") or "")
        found = self._engines.get(key)
        if found is None:
            found = self._engines[key] = await find_engine(wanted)
        return found

    async def acquire(self, engine: ContainerEngine, image: Image) -> str:
        """The tag of ``image`` in ``engine`` (imported when missing, and then remembered for removal)."""
        if self._closed:
            raise RuntimeFailure("the local node is stopping: no image can be imported now")
        async with self._locks.setdefault(image_tag(image), asyncio.Lock()):
            tag, imported = await engine_image(engine, image)
        if imported:
            self._imported[(engine, tag)] = None
        return tag

    async def aclose(self) -> None:
        """Remove the images imported here (``rmi``, not forced), within :data:`REMOVE_TIMEOUT` in all."""
        self._closed = True
        deadline = time.monotonic() + REMOVE_TIMEOUT
        while self._imported:
            engine, tag = next(iter(self._imported))
            del self._imported[(engine, tag)]
            left = deadline - time.monotonic()
            if left <= 0:
                _log.warning("container runtime: no time left to remove the image %s from %s", tag, engine.name)
                continue
            code, said = await engine.call("rmi", tag, timeout=left)
            if code != 0:
                _log.info("container runtime: %s kept the image %s: %s", engine.name, tag, said[-300:])
