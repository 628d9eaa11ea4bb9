"""The build cache of the builder's own interpreter: the tree after a ``RUN`` step, kept as a squashfs.

A layer is keyed by everything that led to it (:func:`chain`): the base tar's SHA-256, then each step that
changes the tree (``COPY`` with the SHA-256 of what it copies, ``WORKDIR``, ``VOLUME``, ``RUN`` with its
command, environment and directory). A build that finds the layer of one of its ``RUN`` steps starts from it
and skips everything before; when nothing follows the last ``RUN`` but metadata, the layer *is* the image's
file system (it is written with the image's compression), so the second build of a Dockerfile takes the time
of copying one file and gives the same hash.

Layers live in ``<cache>/layers/<key>.sqfs`` (:func:`~golem_local.images.bases.cache_dir`); the least
recently used go when the total passes ``$GOLEM_API_BUILD_CACHE_GIB`` (default 4 GiB).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["LIMIT_ENV", "BuildCache", "chain"]

LIMIT_ENV = "GOLEM_API_BUILD_CACHE_GIB"
_DEFAULT_LIMIT_GIB = 4.0
_FORMAT = "golem-api-layer-1"  # changes when what a key covers changes


def chain(previous: str, *parts: Any) -> str:
    """The key after ``previous`` and a step described by ``parts`` (JSON-serialisable)."""
    data = json.dumps([_FORMAT, previous, *parts], sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()


class BuildCache:
    """Layers under ``directory`` (see the module docstring)."""

    def __init__(self, directory: Path, *, limit_bytes: int | None = None) -> None:
        self.directory = directory
        if limit_bytes is None:
            try:
                gib = float(os.environ.get(LIMIT_ENV, _DEFAULT_LIMIT_GIB))
            except ValueError:
                gib = _DEFAULT_LIMIT_GIB
            limit_bytes = int(gib * (1 << 30))
        self.limit_bytes = limit_bytes

    @property
    def layers(self) -> Path:
        return self.directory / "layers"

    def path_of(self, key: str) -> Path:
        return self.layers / f"{key}.sqfs"

    def find(self, key: str) -> Path | None:
        """The layer ``key`` if kept (marked as just used), else ``None``."""
        path = self.path_of(key)
        try:
            os.utime(path)
        except OSError:
            return None
        return path

    def partial(self, key: str) -> Path:
        """Where to write layer ``key`` before :meth:`store` moves it in place."""
        self.layers.mkdir(parents=True, exist_ok=True)
        return self.layers / f".{key}.{os.getpid()}.part"

    def store(self, key: str, written: Path) -> Path:
        """Keep ``written`` (from :meth:`partial`) as layer ``key``."""
        target = self.path_of(key)
        os.replace(written, target)
        return target

    def evict(self, keep: set[str]) -> None:
        """Remove the least recently used layers, never those in ``keep``, until the total is within the limit."""
        if not self.layers.is_dir():
            return
        entries = []
        for path in self.layers.glob("*.sqfs"):
            with contextlib.suppress(OSError):
                info = path.stat()
                entries.append((info.st_mtime, info.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _mtime, size, path in sorted(entries, key=lambda entry: entry[0]):
            if total <= self.limit_bytes:
                break
            if path.stem in keep:
                continue
            with contextlib.suppress(OSError):
                path.unlink()
                total -= size
