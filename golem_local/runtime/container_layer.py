"""A created container's writable layer moved onto the activity's size-limited file system (root only).

Both engines keep a container's writable layer, with the ``overlay`` storage driver (docker's ``overlay2``,
podman's ``overlay``), in one directory of their own storage: its ``UpperDir`` (``diff``, what the container
writes) and ``WorkDir`` (``work``, overlayfs' scratch space, which must be on the same mount as ``diff``) side
by side, with the driver's small files (``link``, ``lower``). Between ``create`` and ``start`` nothing is
mounted from it yet, so :meth:`WritableLayer.move` copies that directory (``cp -a``: nearly empty) into the
activity's file system and bind-mounts the copy over it: the engine then mounts the container's root with its
upper layer on the activity's file system, and the kernel refuses writes past its size (``ENOSPC``), as for the
volumes. :meth:`WritableLayer.release` unmounts it once the container has stopped (the engine has unmounted
the root by then), before the engine removes the container.

Docker only. Podman's storage library (seen with podman 4.3 in ``/proc/self/mountinfo``), when it mounts a
layer, bind-mounts its ``overlay`` directory over itself (not recursively) if it is not a mount point yet, and
that mount comes and goes with podman's use: a mount made under it is then hidden under podman's (the
container's root would still be written to podman's storage) and, worse, can no longer be unmounted by its path
while it keeps podman from deleting the layer. Other storage drivers (``vfs``, ``btrfs``…) are left as they are
too: :meth:`~WritableLayer.move` says why it did not move the layer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from golem_local.runtime.base import RuntimeFailure
from golem_local.runtime.container_engine import ContainerEngine
from golem_local.runtime.storage import run_checked

__all__ = ["WritableLayer"]

_log = logging.getLogger(__name__)
_OVERLAY = ("overlay", "overlay2")


class WritableLayer:
    """The bind mount of one container's layer directory (see the module docstring)."""

    def __init__(self, directory: Path, target: Path) -> None:
        self.directory = directory
        self.target = target
        self._mounted = True

    def in_place(self) -> bool:
        """Whether the engine's layer directory still shows the activity's copy (a mount over the engine's
        storage made after ours would hide it: the layer would be written to the engine's storage again)."""
        try:
            return self.directory.stat().st_dev == self.target.stat().st_dev
        except OSError:
            return False

    @classmethod
    async def move(cls, engine: ContainerEngine, container: str, target: Path) -> WritableLayer | str:
        """Move ``container``'s writable layer (created, not started) into the new directory ``target``.

        Returns the moved layer, or why the layer stays where the engine keeps it (a storage driver other than
        overlay); raises :class:`RuntimeFailure` when a step fails.
        """
        if engine.name == "podman":
            return (
                "podman binds its overlay directory over itself when it mounts a layer (containers/storage), which "
                "hides a mount made under it, so its writable layer stays in podman's storage"
            )
        code, said = await engine.call("inspect", "--format", "{{json .GraphDriver}}", container)
        if code != 0:
            raise RuntimeFailure(f"`{engine.name} inspect {container}` failed: {said[-300:]}")
        try:
            driver = json.loads(said)
            name = str(driver.get("Name", ""))
            data = driver.get("Data") or {}
            upper, work = Path(str(data.get("UpperDir", ""))), Path(str(data.get("WorkDir", "")))
        except (ValueError, AttributeError):
            raise RuntimeFailure(
                f"`{engine.name} inspect` gave no storage driver for {container}: {said[-300:]}"
            ) from None
        if name not in _OVERLAY:
            return f"the {engine.name} storage driver is {name or 'unknown'}, not overlay"
        layer = upper.parent
        if not upper.is_absolute() or work.parent != layer or not layer.is_dir():
            return f"the {engine.name} layer of {container} is not one directory ({upper}, {work})"
        await asyncio.to_thread(target.mkdir, mode=0o700)
        await run_checked("cp", "-a", "--", f"{layer}/.", str(target))
        await run_checked("mount", "--bind", str(target), str(layer))
        return cls(layer, target)

    async def release(self) -> None:
        """Unmount the layer (lazily when something still holds it). Idempotent."""
        if not self._mounted:
            return
        self._mounted = False
        try:
            await run_checked("umount", str(self.directory))
        except RuntimeFailure as exc:
            _log.warning("container runtime: the layer %s: %s; unmounting it lazily", self.directory, exc)
            try:
                await run_checked("umount", "-l", str(self.directory))
            except RuntimeFailure as again:
                _log.error("container runtime: cannot unmount the layer %s: %s", self.directory, again)
