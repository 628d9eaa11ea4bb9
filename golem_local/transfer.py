"""The provider side of the ExeScript ``transfer`` command on the local exe-unit.

One side of a transfer is inside the activity (``container:/path``, a path in one of its volumes); the
other is the requestor's (``gftp://<requestor node id>/<id>``, served over the GSB API, see
:mod:`golem_local.gsb`) or a web server (``http(s)://``, download only). ``container:`` to
``container:`` copies within the activity.

* download ``gftp → container``: ``GetMetadata`` gives ``fileSize``; then ``GetChunk {offset, size}`` in
  chunks of :data:`CHUNK_SIZE`, a few in flight at once, each checked for its offset and length, written
  into ``runtime.container_path(path)`` (parent directories created; a partial file is removed on failure);
* upload ``container → gftp``: ``UploadChunk {"chunk": {offset, content}}`` per chunk, then
  ``UploadFinished {"hash"}`` with the SHA3-256 hex digest of the whole file, as the daemon's gftp sends it.

Everything that goes wrong raises :class:`TransferError` (or the runtime's ``RuntimeFailure`` for a path
outside the volumes), whose message the exe-unit puts in the command's Error result.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from golem_shared.errors import LocalNodeError
from golem_shared.gftp import (
    GET_CHUNK,
    GET_METADATA,
    UPLOAD_CHUNK,
    UPLOAD_FINISHED,
    GftpMessageError,
    gftp_address,
    parse_gftp_url,
)

__all__ = [
    "CHUNK_SIZE",
    "ContainerPaths",
    "FileTransfer",
    "GsbCaller",
    "ProviderTransferError",
]

CHUNK_SIZE = 256 * 1024
"""Bytes asked for or sent per gftp chunk."""

_IN_FLIGHT = 4  # GetChunk calls outstanding at once
_CONTAINER = "container:"


class ProviderTransferError(LocalNodeError):
    """A ``transfer`` command could not be carried out; the message says which side failed and why."""


class GsbCaller(Protocol):
    """What the transfer needs of the GSB router: calls to a bound service, each within ``timeout``."""

    async def call(self, address: str, component: str, payload: Any, *, timeout: float) -> Any:
        """The answer's payload; raises ``GsbCallError`` (a ``LocalNodeError``) when there is none."""
        ...


class ContainerPaths(Protocol):
    """What the transfer needs of the runtime: host paths of paths inside the activity's volumes."""

    def container_path(self, path: str) -> Path:
        """The host path of ``path``; ``RuntimeFailure`` when it is not inside a volume."""
        ...


def _field(payload: Any, key: str, what: str) -> Any:
    if not isinstance(payload, dict) or key not in payload:
        raise ProviderTransferError(f"the requestor's answer to {what} lacks {key!r}: {payload!r:.200}")
    return payload[key]


def _content(chunk: Any, offset: int, expected: int, url: str) -> bytes:
    content = _field(chunk, "content", GET_CHUNK)
    if isinstance(content, list) and all(isinstance(b, int) for b in content):
        content = bytes(content)
    if not isinstance(content, (bytes, bytearray)):
        raise ProviderTransferError(
            f"GetChunk of {url} at offset {offset} answered content of type {type(content).__name__}"
        )
    got_offset = chunk.get("offset", offset)
    if got_offset != offset or len(content) != expected:
        raise ProviderTransferError(
            f"GetChunk of {url} asked for {expected} bytes at offset {offset} and got {len(content)} bytes "
            f"at offset {got_offset}; the file may have changed while it was served"
        )
    return bytes(content)


class FileTransfer:
    """Transfers of one local node: ``gftp`` URLs must name ``requestor_id``, the node's only requestor."""

    def __init__(self, gsb: GsbCaller, requestor_id: str, *, call_timeout: float = 60.0) -> None:
        self.gsb = gsb
        self.requestor_id = requestor_id
        self.call_timeout = call_timeout

    async def transfer(self, runtime: ContainerPaths, source: str, destination: str) -> None:
        """Copy ``source`` to ``destination`` (see the module docstring for the URL forms)."""
        to_container = destination.startswith(_CONTAINER)
        if source.startswith(_CONTAINER):
            if not (to_container or destination.startswith("gftp://")):
                raise ProviderTransferError(
                    f"cannot transfer to {destination!r}: the destination must be container:/path or "
                    "gftp://<node>/<id> (uploads to http(s) are not supported)"
                )
            path = runtime.container_path(source[len(_CONTAINER) :])
            if not path.exists():
                raise ProviderTransferError(f"the source {source} does not exist in the activity; check the path")
            if to_container:
                await asyncio.to_thread(_copy, path, runtime.container_path(destination[len(_CONTAINER) :]))
                return
            if not path.is_file():
                raise ProviderTransferError(f"the source {source} is not a file; only files can be sent over gftp")
            await self._upload(path, destination)
            return
        if not to_container:
            raise ProviderTransferError(
                f"one side of a transfer must be in the activity (container:/path); got from {source!r} "
                f"to {destination!r}"
            )
        target = runtime.container_path(destination[len(_CONTAINER) :])
        if not source.startswith(("gftp://", "http://", "https://")):
            raise ProviderTransferError(
                f"cannot transfer from {source!r}: the source must be container:/path, gftp://<node>/<id> "
                "or an http(s) URL"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if source.startswith("gftp://"):
                await self._download(source, target)
            else:
                await self._fetch(source, target)
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    def _address(self, url: str) -> str:
        try:
            node_id, file_id = parse_gftp_url(url)
        except GftpMessageError as exc:
            raise ProviderTransferError(str(exc)) from None
        if node_id.lower() != self.requestor_id.lower():
            raise ProviderTransferError(
                f"{url} names node {node_id}, but the only requestor on the local network is "
                f"{self.requestor_id}: serve the file from that node"
            )
        return gftp_address(file_id)

    async def _call(self, address: str, component: str, payload: Any) -> Any:
        return await self.gsb.call(address, component, payload, timeout=self.call_timeout)

    async def _download(self, url: str, target: Path) -> None:
        address = self._address(url)
        size = _field(await self._call(address, GET_METADATA, {}), "fileSize", GET_METADATA)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ProviderTransferError(f"GetMetadata of {url} answered fileSize {size!r}, not a byte count")

        async def chunk(offset: int) -> bytes:
            expected = min(CHUNK_SIZE, size - offset)
            answer = await self._call(address, GET_CHUNK, {"offset": offset, "size": expected})
            return _content(answer, offset, expected, url)

        offsets = list(range(0, size, CHUNK_SIZE))
        with target.open("wb") as file:
            for start in range(0, len(offsets), _IN_FLIGHT):
                window = offsets[start : start + _IN_FLIGHT]
                # return_exceptions: every call of the window ends (each within its timeout) before one fails
                pieces = await asyncio.gather(*(chunk(offset) for offset in window), return_exceptions=True)
                for piece in pieces:
                    if isinstance(piece, BaseException):
                        raise piece
                    file.write(piece)

    async def _upload(self, path: Path, url: str) -> None:
        address = self._address(url)
        digest = hashlib.sha3_256()
        offset = 0
        with path.open("rb") as file:
            while piece := file.read(CHUNK_SIZE):
                digest.update(piece)
                await self._call(address, UPLOAD_CHUNK, {"chunk": {"offset": offset, "content": piece}})
                offset += len(piece)
        await self._call(address, UPLOAD_FINISHED, {"hash": digest.hexdigest()})

    async def _fetch(self, url: str, target: Path) -> None:
        timeout = aiohttp.ClientTimeout(total=None, connect=self.call_timeout, sock_read=self.call_timeout)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
                if response.status >= 400:
                    raise ProviderTransferError(f"GET {url} answered {response.status} {response.reason}")
                with target.open("wb") as file:
                    async for piece in response.content.iter_chunked(CHUNK_SIZE):
                        file.write(piece)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise ProviderTransferError(f"GET {url} failed: {exc or type(exc).__name__}") from None


def _copy(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, destination, dirs_exist_ok=True)
    else:
        shutil.copyfile(source, destination)
