"""The provider side of the ExeScript ``transfer`` command on the local exe-unit.

One side of a transfer is inside the activity (``container:/path``, a path in one of its volumes); the
other is the requestor's (``gftp://<requestor node id>/<id>``, served over the GSB API, see
:mod:`golem_local.gsb`) or a web server (``http(s)://``, download only). ``container:`` to
``container:`` copies within the activity.

* download ``gftp → container``: ``GetMetadata`` gives ``fileSize``; then ``GetChunk {offset, size}`` in
  chunks of :data:`FETCH_CHUNK_SIZE`, :data:`FETCH_IN_FLIGHT` outstanding at once (a new one asked as the oldest is
  answered), each checked for its offset and length, written into a new file beneath the volume (parent
  directories created) that replaces ``path`` only once complete;
* upload ``container → gftp``: ``UploadChunk {"chunk": {offset, content}}`` per chunk, :data:`IN_FLIGHT`
  unanswered at once, then ``UploadFinished {"hash"}`` with the SHA3-256 hex digest of the whole file, as the
  daemon's gftp sends it. Each chunk's frame is built in a thread while earlier chunks are on the wire: the
  file is read straight into the frame and hashed there, so the hash costs no second pass, the content is
  copied once (file to frame), and the event loop only sends it.

Every file is reached through the activity's :class:`~golem_local.safefs.VolumeFiles` (``runtime.volume_files()``):
beneath a descriptor of its volume, following no symbolic link, so neither a link a command left in a
volume nor one a daemon swaps in while the transfer waits for the requestor leads to a file of the host;
``container:`` to ``container:`` copies links as links. Files the provider writes belong to the sandbox's
user.

Everything that goes wrong raises :class:`ProviderTransferError` (or the runtime's ``RuntimeFailure``), whose
message the exe-unit puts in the command's Error result.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from golem_local.safefs import NewFile, UnsafePath, VolumeFiles
from golem_shared.errors import LocalNodeError
from golem_shared.gftp import (
    GET_CHUNK,
    GET_METADATA,
    UPLOAD_CHUNK,
    UPLOAD_FINISHED,
    GftpMessageError,
    GsbRequest,
    chunk_request,
    encode_request,
    gftp_address,
    parse_gftp_url,
)

__all__ = [
    "CHUNK_SIZE",
    "FETCH_CHUNK_SIZE",
    "FETCH_IN_FLIGHT",
    "IN_FLIGHT",
    "ContainerPaths",
    "FileTransfer",
    "GsbCaller",
    "ProviderTransferError",
]

CHUNK_SIZE = 1024 * 1024
"""Bytes sent per ``UploadChunk`` (the requestor's WebSocket must take a frame of that size: aiohttp's default
limit is 4 MiB, which golem-core keeps)."""

IN_FLIGHT = 8
"""``UploadChunk`` calls outstanding at once in one transfer."""

FETCH_CHUNK_SIZE = 4 * 1024 * 1024
"""Bytes asked for per ``GetChunk`` (what answers a call is the requestor's to send, any size: the larger the
chunk, the fewer calls; 1 MiB chunks cost the node about a fifth more CPU per MB than 4 MiB ones)."""

FETCH_IN_FLIGHT = 4
"""``GetChunk`` calls outstanding at once in one transfer (16 MiB)."""
_CONTAINER = "container:"


class ProviderTransferError(LocalNodeError):
    """A ``transfer`` command could not be carried out; the message says which side failed and why."""


class GsbCaller(Protocol):
    """What the transfer needs of the GSB router: calls to a bound service, each within ``timeout``."""

    async def call(self, address: str, component: str, payload: Any, *, timeout: float) -> Any:
        """The answer's payload; raises ``GsbCallError`` (a ``LocalNodeError``) when there is none."""
        ...

    def new_call_id(self) -> str:
        """An id for :meth:`call_frame`."""
        ...

    async def call_frame(self, address: str, component: str, call_id: str, frame: bytes, *, timeout: float) -> Any:
        """:meth:`call` with the request encoded already, under ``call_id``."""
        ...


class ContainerPaths(Protocol):
    """What the transfer needs of the runtime: its volumes, as descriptors."""

    def volume_files(self) -> VolumeFiles:
        """The activity's volumes; ``RuntimeFailure`` when it has none (not deployed)."""
        ...


@contextlib.contextmanager
def _refusals(path: str) -> Iterator[None]:
    """File errors as transfer errors that name the sandbox path (never a host path)."""
    try:
        yield
    except UnsafePath as exc:
        raise ProviderTransferError(
            f"{path} is refused: {exc.strerror}; transfers follow no symbolic link and stay in the volumes"
        ) from None
    except FileNotFoundError:
        raise ProviderTransferError(f"{path} does not exist in the activity; check the path") from None
    except OSError as exc:
        raise ProviderTransferError(f"{path}: {exc.strerror or exc}") from None


def _field(payload: Any, key: str, what: str) -> Any:
    if not isinstance(payload, dict) or key not in payload:
        raise ProviderTransferError(f"the requestor's answer to {what} lacks {key!r}: {payload!r:.200}")
    return payload[key]


def _content(chunk: Any, offset: int, expected: int, url: str) -> bytes | memoryview:
    content = _field(chunk, "content", GET_CHUNK)
    if isinstance(content, list) and all(isinstance(b, int) for b in content):
        content = bytes(content)
    if not isinstance(content, (bytes, bytearray, memoryview)):
        raise ProviderTransferError(
            f"GetChunk of {url} at offset {offset} answered content of type {type(content).__name__}"
        )
    got_offset = chunk.get("offset", offset)
    if got_offset != offset or len(content) != expected:
        raise ProviderTransferError(
            f"GetChunk of {url} asked for {expected} bytes at offset {offset} and got {len(content)} bytes "
            f"at offset {got_offset}; the file may have changed while it was served"
        )
    return bytes(content) if isinstance(content, bytearray) else content  # a view is of the answer's frame


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
            files = runtime.volume_files()
            path = source[len(_CONTAINER) :]
            if to_container:
                target = destination[len(_CONTAINER) :]
                with _refusals(f"{path} or {target}"):
                    await asyncio.to_thread(files.copy, path, target)
                return
            with _refusals(source):
                fd = files.open_read(path)
            await self._upload(fd, destination)
            return
        if not to_container:
            raise ProviderTransferError(
                f"one side of a transfer must be in the activity (container:/path); got from {source!r} "
                f"to {destination!r}"
            )
        if not source.startswith(("gftp://", "http://", "https://")):
            raise ProviderTransferError(
                f"cannot transfer from {source!r}: the source must be container:/path, gftp://<node>/<id> "
                "or an http(s) URL"
            )
        files = runtime.volume_files()
        target = destination[len(_CONTAINER) :]
        with _refusals(destination):
            files.split(target)  # a path outside the volumes fails before anything is fetched
        if source.startswith("gftp://"):
            await self._download(source, files, target)
        else:
            await self._fetch(source, files, target)

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

    async def download(self, url: str, target: Path) -> None:
        """Fetch the requestor's ``gftp://`` ``url`` into the host file ``target`` (a task package's image: golem-js
        publishes ``imageUrl: "file://..."`` so); ``target`` is removed when it fails or is cancelled."""
        address, size = await self._metadata(url)
        try:
            with open(target, "wb") as file:  # noqa: ASYNC230 - chunks of 1 MiB to a file of the node
                await self._pieces(address, size, url, file.write)
        except BaseException:
            target.unlink(missing_ok=True)  # noqa: ASYNC240 - also when cancelled, no await
            raise

    async def _metadata(self, url: str) -> tuple[str, int]:
        """The GSB address of ``url`` and its size, from the requestor's ``GetMetadata``."""
        address = self._address(url)
        size = _field(await self._call(address, GET_METADATA, {}), "fileSize", GET_METADATA)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ProviderTransferError(f"GetMetadata of {url} answered fileSize {size!r}, not a byte count")
        return address, size

    async def _pieces(self, address: str, size: int, url: str, write: Callable[[bytes | memoryview], object]) -> None:
        """Give ``write`` the file's content in order, in a thread (one piece at a time, while the next ones
        come), :data:`FETCH_IN_FLIGHT` ``GetChunk`` calls outstanding at once (a new one asked as soon as the oldest
        is answered)."""

        async def chunk(offset: int) -> bytes | memoryview:
            expected = min(FETCH_CHUNK_SIZE, size - offset)
            answer = await self._call(address, GET_CHUNK, {"offset": offset, "size": expected})
            return _content(answer, offset, expected, url)

        calls: deque[asyncio.Future[bytes | memoryview]] = deque()
        writing: asyncio.Future[object] | None = None

        async def put(piece: bytes | memoryview) -> None:
            nonlocal writing
            if writing is not None:
                await asyncio.shield(writing)  # cancelled or not, a write ends before the file closes
            writing = asyncio.ensure_future(asyncio.to_thread(write, piece))

        try:
            for offset in range(0, size, FETCH_CHUNK_SIZE):
                calls.append(asyncio.ensure_future(chunk(offset)))
                if len(calls) >= FETCH_IN_FLIGHT:
                    await put(await calls.popleft())
            while calls:
                await put(await calls.popleft())
            if writing is not None:
                await asyncio.shield(writing)
        finally:
            for call in calls:
                call.cancel()
            # every call ends (each within its timeout, cancelled ones at once), and the last write, before the
            # transfer fails or the file closes
            await asyncio.gather(*calls, *([writing] if writing is not None else []), return_exceptions=True)

    async def _download(self, url: str, files: VolumeFiles, target: str) -> None:
        address, size = await self._metadata(url)
        # Opened only now, after the requestor answered: whatever the sandbox did meanwhile, the file is made
        # beneath the volume's descriptor, and only a complete one replaces what is at the path.
        with _refusals(f"container:{target}"):
            new = files.create(target)
        with _writing(new, target) as file:
            await self._pieces(address, size, url, file.write)

    async def _upload(self, fd: int, url: str) -> None:
        """Send the file in chunks, :data:`IN_FLIGHT` unanswered at once; the next chunk's frame is built, read
        into and hashed in a thread (hashlib releases the GIL) while the earlier ones are sent and a slot frees:
        the event loop neither reads nor hashes, and the hash overlaps the sending."""
        try:
            address = self._address(url)
            size = os.fstat(fd).st_size  # what the frames make room for; a file that changes meanwhile still works
        except BaseException:
            os.close(fd)
            raise
        digest = hashlib.sha3_256()

        def read_next(call_id: str, offset: int) -> tuple[bytes, int]:
            """The frame of the chunk at ``offset`` and its length (0 at the end of the file)."""
            room = min(CHUNK_SIZE, size - offset) if offset < size else CHUNK_SIZE
            if offset >= size and not os.pread(fd, 1, offset):
                return b"", 0  # the end (the common case: the size known at the start)
            frame = chunk_request(call_id, offset, room)
            content = frame.content
            got = 0
            while got < room and (n := os.preadv(fd, [content[got:]], offset + got)):
                got += n
            if got < room:  # the file shrank (or grew past its size): a frame for what there is, copied
                piece = bytes(content[:got])
                digest.update(piece)
                if not piece:
                    return b"", 0
                chunk = {"chunk": {"offset": offset, "content": piece}}
                return encode_request(GsbRequest(id=call_id, component=UPLOAD_CHUNK, payload=chunk)), got
            digest.update(content)
            return frame.frame, room

        def read(offset: int) -> asyncio.Future[tuple[str, tuple[bytes, int]]]:
            call_id = self.gsb.new_call_id()
            return asyncio.ensure_future(asyncio.to_thread(lambda: (call_id, read_next(call_id, offset))))

        try:
            sends: deque[asyncio.Future[Any]] = deque()
            reading = read(0)
            try:
                offset = 0
                while True:
                    # cancelled or not, a read ends before the file closes
                    call_id, (frame, length) = await asyncio.shield(reading)
                    if not length:
                        break
                    call = self.gsb.call_frame(address, UPLOAD_CHUNK, call_id, frame, timeout=self.call_timeout)
                    sends.append(asyncio.ensure_future(call))
                    offset += length
                    reading = read(offset)  # while a slot frees
                    while len(sends) >= IN_FLIGHT or (sends and sends[0].done()):
                        await sends.popleft()
                while sends:
                    await sends.popleft()
            finally:
                for send in sends:
                    send.cancel()
                # the read ends before the file closes; every call ends before the transfer fails
                await asyncio.gather(*sends, reading, return_exceptions=True)
        finally:
            os.close(fd)
        await self._call(address, UPLOAD_FINISHED, {"hash": digest.hexdigest()})

    async def _fetch(self, url: str, files: VolumeFiles, target: str) -> None:
        timeout = aiohttp.ClientTimeout(total=None, connect=self.call_timeout, sock_read=self.call_timeout)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
                if response.status >= 400:
                    raise ProviderTransferError(f"GET {url} answered {response.status} {response.reason}")
                with _refusals(f"container:{target}"):
                    new = files.create(target)
                with _writing(new, target) as file:
                    async for piece in response.content.iter_chunked(CHUNK_SIZE):
                        file.write(piece)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise ProviderTransferError(f"GET {url} failed: {exc or type(exc).__name__}") from None


@contextlib.contextmanager
def _writing(new: NewFile, target: str) -> Iterator[Any]:
    """A file object on ``new``: committed when the block ends well, removed when it fails or is cancelled."""
    try:
        file = os.fdopen(os.dup(new.fd), "wb")
    except BaseException:
        new.abort()
        raise
    try:
        with file:
            yield file
    except BaseException:
        new.abort()
        raise
    with _refusals(f"container:{target}"):
        new.commit()
