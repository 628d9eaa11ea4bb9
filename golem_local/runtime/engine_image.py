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
import os
import tarfile
from pathlib import Path
from typing import IO

from golem_local.runtime.base import RuntimeFailure
from golem_local.runtime.image import Image
from golem_local.runtime.rootfs import image_uid_range

__all__ = ["IMPORT_TIMEOUT", "engine_image", "image_tag"]

IMPORT_TIMEOUT = 600.0
"""Seconds an ``import`` may take."""
_locks: dict[str, asyncio.Lock] = {}


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


async def _exec(program: str, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        program,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode(errors="replace")


async def engine_image(program: str, image: Image) -> str:
    """The tag of ``image`` in the engine run by ``program``, imported first if it is not there yet.

    Raises :class:`RuntimeFailure` for an image without a whole root file system (nothing to import) or when
    the engine refuses it (its words).
    """
    if image.root is None or not image.rootfs:
        raise RuntimeFailure(
            "the container runtime runs GVMI images (a whole root file system); this activity's image has none: "
            "name a GVMI in the demand (golem_api.vm.repo / a task package), or use the vm runtime"
        )
    tag = image_tag(image)
    async with _locks.setdefault(tag, asyncio.Lock()):
        code, _ = await _exec(program, "image", "inspect", tag)
        if code == 0:
            return tag
        changes = [f"ENV {key}={value}" for key, value in image.env.items()]
        changes.append(f"WORKDIR {image.working_dir or '/'}")
        arguments = [item for change in changes for item in ("--change", change)]
        read_fd, write_fd = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                program,
                "import",
                *arguments,
                "-",
                tag,
                stdin=read_fd,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
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
            raise RuntimeFailure(f"`{program} import` did not import the image within {IMPORT_TIMEOUT:.0f} s") from None
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
            await producing
        if failure:
            raise RuntimeFailure(f"the image at {root} could not be read for the engine: {failure[0]}")
        if process.returncode != 0:
            raise RuntimeFailure(f"`{program} import` refused the image {tag}: {said.decode(errors='replace')[-500:]}")
        return tag
