"""File transfer with providers over the node's GSB API, without a ``gftp`` program: :class:`GsbStorage`.

To send data, the requestor *publishes* it: binds a gftp service (``GetMetadata``, ``GetChunk``) on
``/public/gftp/<id>`` and answers the provider's requests for chunks over the service's WebSocket; the provider
fetches ``gftp://<requestor-node-id>/<id>``. To get data, it *receives*: binds ``UploadChunk`` and
``UploadFinished`` and writes each chunk at its offset as it comes (chunks may come in any order), then checks
the SHA3-256 hash the provider sends at the end and that no byte is missing. Each chunk is written in a
thread of the receiver's own and, when it continues what came before (as providers send them), hashed in
another while the next ones arrive: a chunk is answered once it is queued (at most :data:`HASH_BACKLOG` wait
for either thread), so the provider keeps several on the wire, the event loop neither writes nor hashes, and
the hash needs no second pass. Received bytes go to a file (the
caller's, or an unnamed temporary one for :meth:`GsbStorage.receive_bytes`), never into a growing buffer: the
memory a download holds is bounded, and ``result()`` reads the bytes back in one piece.

Each published or received item owns its binding, its WebSocket and the task that answers on it;
``close()`` ends all three (unbinding is what the daemon needs to forget the address). :class:`GsbStorage` is
an async context manager that closes whatever is still open when it exits::

    async with GsbStorage(rest) as storage:
        published = await storage.publish_bytes(b"hello")     # published.url: gftp://0x…/…
        receiving = await storage.receive_bytes()
        ...  # a transfer command on the provider
        data = await receiving.result(timeout=10)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import tempfile
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp

from golem_api.errors import (
    ApiError,
    ConfigurationError,
    GolemError,
    NodeUnreachableError,
    TransferError,
    TransferTimeoutError,
)
from golem_shared.allocator import keep_freed_memory
from golem_shared.gftp import (
    GET_CHUNK,
    GET_METADATA,
    UPLOAD_CHUNK,
    UPLOAD_FINISHED,
    GftpMessageError,
    GsbRequest,
    GsbResponse,
    chunk_response,
    decode_request,
    encode_response,
    gftp_address,
    gftp_url,
)
from golem_shared.tasks import TaskSet
from golem_shared.wsframes import HEADROOM, MaskedSender, masked_sender

if TYPE_CHECKING:
    from golem_api._rest.client import RestClient
    from golem_api._rest.gsb import GsbServices

__all__ = ["ANSWERS_AHEAD", "HASH_BACKLOG", "GsbStorage", "Published", "Receiving"]

_log = logging.getLogger(__name__)

S = TypeVar("S", bound="_Service")

_HASH_BLOCK = 1024 * 1024  # bytes read at a time when hashing a received file
_READ_MAX = 0x7FFFF000  # the most one read(2) returns on Linux

ANSWERS_AHEAD = 2
"""Answers of one service being prepared or waiting to be sent at most: the next chunk is read while one is on
the wire (the local node asks for 4 chunks of 4 MiB at once); the next request is read once one is sent."""

HASH_BACKLOG = 8
"""Received chunks queued for writing or hashing at most; beyond it, the next one is answered only once the
oldest is written and hashed."""


class _Service:
    """One bound gftp service: its binding, its WebSocket and the task answering on it."""

    components: tuple[str, ...] = ()

    def __init__(self, storage: GsbStorage, file_id: str, node_id: str) -> None:
        self._storage = storage
        self.file_id = file_id
        self.url = gftp_url(node_id, file_id)
        self._binding: GsbServices | None = None
        self._ws: aiohttp.ClientWebSocketResponse[bool] | None = None
        self._tasks = TaskSet(f"gftp service {file_id}", logger=_log)
        self._closed = False
        self._preparing: set[asyncio.Future[_Wire]] = set()  # answers being built in the storage's reading thread
        self.requests = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {self.url} ({state})>"

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._closed

    async def _open(self) -> None:
        rest = self._storage.rest
        try:
            self._binding = await rest.gsb.bind_services(gftp_address(self.file_id), self.components)
            self._ws = await rest.gsb.connect(self._binding.services_id)
        except BaseException:
            await self.aclose()
            raise
        self._tasks.spawn(self._serve(self._ws), name=f"gftp {self.file_id}")

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse[bool]) -> None:
        """Read requests and queue their answers in order; a chunk's frame is read, built and masked in a thread
        while earlier answers are on the wire (:meth:`_send`), at most :data:`ANSWERS_AHEAD` at once."""
        sender = masked_sender(ws)  # chunks sent without aiohttp's copies where it can be
        outbox: asyncio.Queue[asyncio.Future[_Wire] | None] = asyncio.Queue(ANSWERS_AHEAD - 1)  # + the one sent
        sending = asyncio.ensure_future(self._send(ws, sender, outbox))
        try:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.BINARY:
                    _log.debug("%r: ignoring a %s frame", self, message.type.name)
                    continue
                try:
                    request = decode_request(message.data, views=True)  # a chunk's content: a view, no copy
                except GftpMessageError as exc:
                    _log.warning("%r: %s", self, exc)
                    continue
                self.requests += 1
                await outbox.put(await self._answer(request, sender))
                if sending.done():
                    break
        except (aiohttp.ClientError, ConnectionError) as exc:
            _log.debug("%r: the WebSocket broke: %s", self, exc)
        finally:
            sending.cancel()  # what is still queued cannot be sent any more: the socket is gone
            (ended,) = await asyncio.gather(sending, return_exceptions=True)
            if isinstance(ended, Exception):  # a bug: the provider's calls then time out, so say why here
                _log.error("%r: sending answers failed", self, exc_info=ended)
            self._disconnected()

    async def _send(
        self,
        ws: aiohttp.ClientWebSocketResponse[bool],
        sender: MaskedSender | None,
        outbox: asyncio.Queue[asyncio.Future[_Wire] | None],
    ) -> None:
        """Send the answers in the order they were asked for, each once it is ready."""
        try:
            while (answer := await outbox.get()) is not None:
                masked, data = await answer
                if masked and sender is not None and isinstance(data, memoryview):
                    await sender.write(data)
                else:
                    await ws.send_bytes(data)  # type: ignore[arg-type]  # a bytearray or view: sent as bytes
        except (aiohttp.ClientError, ConnectionError) as exc:
            _log.debug("%r: the WebSocket broke: %s", self, exc)
        finally:
            while not outbox.empty():  # a reader waiting for room goes on (and sees that this ended)
                outbox.get_nowait()

    async def _answer(self, request: GsbRequest, sender: MaskedSender | None) -> asyncio.Future[_Wire]:
        """The answer to ``request``: a future of its frame (a chunk's is read into its frame in a thread)."""
        loop = asyncio.get_running_loop()
        try:
            payload = await self._handle(request.component, request.payload)
            if isinstance(payload, _Chunk):  # the content read straight into the answer's frame
                reader = self._storage._reader
                preparing = loop.run_in_executor(reader, self._chunk_answer, request.id, payload, sender)
                self._preparing.add(preparing)  # it reads the file: awaited before the file is closed
                preparing.add_done_callback(self._preparing.discard)
                return preparing
            frame = encode_response(GsbResponse(id=request.id, payload=payload))
        except _GftpFailure as failure:
            frame = _error_frame(request.id, failure)
        except Exception as exc:  # a bug here must not kill the service silently: tell the provider
            _log.exception("%r: failed to answer %s", self, request.component)
            frame = _error_frame(request.id, exc)
        ready: asyncio.Future[_Wire] = loop.create_future()
        ready.set_result((False, frame))
        return ready

    def _chunk_answer(self, call_id: str, chunk: _Chunk, sender: MaskedSender | None) -> _Wire:
        """In a thread: the chunk's frame, its content read into it and, with ``sender``, masked for it."""
        try:
            frame = chunk_response(call_id, chunk.offset, chunk.size, headroom=HEADROOM if sender else 0)
            chunk.fill(frame.content)
        except Exception as exc:  # the file cut short (a _GftpFailure), or a bug: tell the provider
            if not isinstance(exc, _GftpFailure):
                _log.exception("%r: failed to answer GetChunk", self)
            return False, _error_frame(call_id, exc)
        if sender is None:
            return False, frame.frame
        return True, sender.prepare(frame.buffer, frame.start)

    async def _handle(self, component: str, payload: Any) -> Any:
        raise _GftpFailure("InternalError", f"{component} is not served here")

    def _disconnected(self) -> None:
        """The WebSocket ended (closed by us, unbound, or the node went away)."""

    async def aclose(self) -> None:
        """Stop answering, close the WebSocket and unbind the service. Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        self._storage._forget(self)
        await self._tasks.aclose()
        await self._quiesce()
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        binding, self._binding = self._binding, None
        if binding is not None:
            try:
                await self._storage.rest.gsb.unbind_services(binding.services_id)
            except (ApiError, NodeUnreachableError) as exc:
                _log.debug("%r: unbinding %s failed: %s", self, binding.services_id, exc)
        self._release()

    async def _quiesce(self) -> None:
        """Let the work the service started end, once it no longer answers (before :meth:`_release`): the
        answers still being built (one chunk's read each, soon over)."""
        await asyncio.gather(*self._preparing, return_exceptions=True)

    def _release(self) -> None:
        """Free what the service holds (files) once it no longer answers."""


_Wire = tuple[bool, "bytes | memoryview"]
"""An answer ready to send: (masked already, its bytes)."""


def _error_frame(call_id: str, exc: Exception) -> bytes:
    if isinstance(exc, _GftpFailure):
        return encode_response(GsbResponse(id=call_id, error={exc.variant: str(exc)}))
    return encode_response(GsbResponse(id=call_id, error={"InternalError": f"{type(exc).__name__}: {exc}"}))


class _Chunk:
    """A ``GetChunk`` answer of ``size`` bytes at ``offset`` that ``fill`` writes into its frame."""

    def __init__(self, offset: int, size: int, fill: Callable[[memoryview], None]) -> None:
        self.offset = offset
        self.size = size
        self.fill = fill


class _GftpFailure(Exception):
    """An error answer to a gftp request: ``variant`` is the daemon's error name (``ReadError``, …)."""

    def __init__(self, variant: str, message: str) -> None:
        self.variant = variant
        super().__init__(message)


class Published(_Service):
    """Data served to providers at :attr:`url` until :meth:`close`."""

    components = (GET_METADATA, GET_CHUNK)

    def __init__(
        self, storage: GsbStorage, file_id: str, node_id: str, *, data: bytes | None = None, path: Path | None = None
    ) -> None:
        super().__init__(storage, file_id, node_id)
        self._data = data
        self._fd: int | None = None
        if path is not None:
            self._fd = os.open(path, os.O_RDONLY)
            self.size = os.fstat(self._fd).st_size
        else:
            self.size = len(data or b"")

    async def _handle(self, component: str, payload: Any) -> Any:
        if component == GET_METADATA:
            return {"fileSize": self.size}
        if component != GET_CHUNK:
            return await super()._handle(component, payload)
        offset, size = _field(payload, "offset"), _field(payload, "size")
        if offset > self.size:
            raise _GftpFailure("ReadError", f"offset {offset} is beyond the end of the data ({self.size} bytes)")
        size = min(size, self.size - offset)
        if self._fd is not None:
            fd = self._fd

            def fill(room: memoryview) -> None:
                got = 0
                while got < size and (n := os.preadv(fd, [room[got:]], offset + got)):
                    got += n
                if got < size:
                    raise _GftpFailure(
                        "ReadError", f"the file served ends at {offset + got} bytes, not {self.size}: it was cut short"
                    )

            return _Chunk(offset, size, fill)
        content = (self._data or b"")[offset : offset + size]
        return {"offset": offset, "content": content}

    def _release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class Receiving(_Service):
    """A place at :attr:`url` where a provider uploads data; :meth:`result` (or :meth:`wait`) when it is done."""

    components = (UPLOAD_CHUNK, UPLOAD_FINISHED)

    def __init__(
        self, storage: GsbStorage, file_id: str, node_id: str, *, path: Path | None = None, limit: int | None = None
    ) -> None:
        super().__init__(storage, file_id, node_id)
        self.path = path
        self.limit = limit
        if path is not None:
            self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        else:  # unnamed (O_TMPFILE where the system has it): gone with its descriptor
            with tempfile.TemporaryFile(prefix="golem-download-") as spool:
                self._fd = os.dup(spool.fileno())
        self._ranges: list[tuple[int, int]] = []
        self._size = 0
        self._done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        # The SHA3-256 of the bytes 0.._hashed, fed in order in the receiver's own thread as chunks come;
        # None once a chunk came out of order: the whole data is then hashed from the file at the end.
        self._digest: Any = hashlib.sha3_256()
        self._hashed = 0
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"gftp-hash-{file_id[:8]}")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"gftp-write-{file_id[:8]}")
        self._jobs: deque[asyncio.Future[None]] = deque()  # writes and hashes not yet awaited, oldest first
        self._write_error: OSError | None = None

    @property
    def done(self) -> bool:
        """True once the provider finished the upload (or it failed)."""
        return self._done.done()

    async def wait(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for the provider's ``UploadFinished``; return the size received.

        Raises :class:`TransferError` when the upload broke (too large, bytes missing, a wrong hash, the
        connection lost) or did not finish in time.
        """
        try:
            return await asyncio.wait_for(asyncio.shield(self._done), timeout)
        except asyncio.TimeoutError:
            raise TransferTimeoutError(
                f"the upload to {self.url} did not finish within {timeout:g} s "
                f"({self._received()} bytes received); did the provider's transfer command run?"
            ) from None

    async def result(self, timeout: float) -> bytes:
        """The bytes received, once the provider finished (see :meth:`wait`), read back in one piece.

        Only for :meth:`GsbStorage.receive_bytes`; a file receiver writes into its file instead.
        """
        if self.path is not None:
            raise ConfigurationError(f"{self!r} writes to {self.path}; use `await receiving.wait(timeout)` instead")
        size = await self.wait(timeout)
        if self._fd is None:
            raise TransferError(f"{self.url} was closed before its data was read; read the result before closing")
        return await asyncio.to_thread(_read_all, self._fd, size)

    def _received(self) -> int:
        return sum(end - start for start, end in self._ranges)

    def _fail(self, message: str) -> _GftpFailure:
        if not self._done.done():
            self._done.set_exception(TransferError(message))
        return _GftpFailure("WriteError", message)

    async def _handle(self, component: str, payload: Any) -> Any:
        if self._done.done():
            raise _GftpFailure("WriteError", f"the upload to {self.url} is already over")
        if component == UPLOAD_CHUNK:
            chunk = payload.get("chunk") if isinstance(payload, dict) else None
            offset, content = _field(chunk, "offset"), _content(chunk)
            end = offset + len(content)
            if self.limit is not None and end > self.limit:
                raise self._fail(f"the data sent to {self.url} is larger than the limit of {self.limit} bytes")
            if self._write_error is not None:
                raise self._fail(self._write_failure())
            self._queue(offset, content)
            self._ranges.append((offset, end))
            await self._settle(HASH_BACKLOG)
            return None
        if component == UPLOAD_FINISHED:
            expected = payload.get("hash") if isinstance(payload, dict) else None
            size = await self._finish(expected if isinstance(expected, str) else None)
            self._done.set_result(size)
            return None
        return await super()._handle(component, payload)

    def _write(self, fd: int, offset: int, content: bytes | memoryview) -> None:
        """In the writing thread: all of ``content`` at ``offset``; the first failure is kept (later chunks fail)."""
        if self._write_error is not None:
            return
        view = memoryview(content)
        try:
            while view:  # pwrite may write less than asked (a full disk answers ENOSPC instead)
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
        except OSError as exc:
            self._write_error = exc

    def _write_failure(self) -> str:
        error = self._write_error
        where = str(self.path) if self.path is not None else "its temporary file"
        return f"the data sent to {self.url} could not be written to {where}: {error.strerror if error else '?'}"

    def _queue(self, offset: int, content: bytes | memoryview) -> None:
        """Queue the chunk's write and, when it continues what came before, its hashing."""
        if self._fd is None:
            raise _GftpFailure("WriteError", f"{self.url} is closed")
        loop = asyncio.get_running_loop()
        self._jobs.append(loop.run_in_executor(self._writer, self._write, self._fd, offset, content))
        if self._digest is not None and offset != self._hashed:
            self._digest = None  # out of order: the whole data is hashed from the file at the end instead
        if self._digest is not None:
            self._hashed += len(content)
            self._jobs.append(loop.run_in_executor(self._hasher, self._digest.update, content))

    async def _settle(self, backlog: int) -> None:
        """Await the oldest jobs while more than ``backlog`` chunks wait (and any that are done)."""
        while self._jobs and (len(self._jobs) > 2 * backlog or self._jobs[0].done()):
            await self._jobs.popleft()

    async def _finish(self, expected_hash: str | None) -> int:
        size = 0
        for start, end in sorted(self._ranges):
            if start > size:
                raise self._fail(f"the data sent to {self.url} misses bytes {size}..{start - 1}")
            size = max(size, end)
        self._size = size
        await self._settle(0)
        if self._write_error is not None:
            raise self._fail(self._write_failure())
        if expected_hash is not None:
            actual = await self._hash(size)
            if actual.lower() != expected_hash.strip().lower():
                message = f"the data sent to {self.url} has SHA3-256 {actual}, but the provider sent {expected_hash}"
                if not self._done.done():
                    self._done.set_exception(TransferError(message))
                raise _GftpFailure("IntegrityError", message)
        return size

    async def _hash(self, size: int) -> str:
        if self._digest is not None and self._hashed == size:
            digest: str = self._digest.hexdigest()
            return digest
        if self._fd is None:
            raise _GftpFailure("WriteError", f"{self.url} is closed")
        return await asyncio.to_thread(_hash_fd, self._fd, size)

    def _disconnected(self) -> None:
        if not self._done.done():
            self._done.set_exception(
                TransferError(f"the connection for {self.url} ended before the provider finished the upload")
            )

    async def _quiesce(self) -> None:
        """The writes and hashes still queued end (at most HASH_BACKLOG chunks each: soon over) before the file
        is closed; then the threads go."""
        await super()._quiesce()
        jobs, self._jobs = list(self._jobs), deque()
        await asyncio.gather(*jobs, return_exceptions=True)
        self._hasher.shutdown(wait=False)
        self._writer.shutdown(wait=False)

    def _release(self) -> None:
        if not self._done.done():
            self._done.set_exception(TransferError(f"{self.url} was closed before the provider finished the upload"))
        self._done.exception()  # retrieved: nobody may ever wait for an upload that was abandoned
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _read_all(fd: int, size: int) -> bytes:
    """The first ``size`` bytes of ``fd``: one read, into one object, when the system allows it."""
    data = os.pread(fd, size, 0)
    if len(data) == size:
        return data
    pieces = [data]  # more than one read(2) gives (2 GiB on Linux): joined, at twice the size for a moment
    offset = len(data)
    while offset < size:
        piece = os.pread(fd, min(size - offset, _READ_MAX), offset)
        if not piece:
            raise TransferError(f"the received data ends at {offset} bytes of {size}; its file was cut short")
        pieces.append(piece)
        offset += len(piece)
    return b"".join(pieces)


def _hash_fd(fd: int, size: int) -> str:
    digest = hashlib.sha3_256()
    offset = 0
    while offset < size and (block := os.pread(fd, min(_HASH_BLOCK, size - offset), offset)):
        digest.update(block)
        offset += len(block)
    return digest.hexdigest()


def _field(payload: Any, key: str) -> int:
    value = payload.get(key) if isinstance(payload, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _GftpFailure("InternalError", f"the request needs a non-negative integer {key!r}, got {value!r}")
    return value


def _content(chunk: Any) -> bytes | memoryview:
    value = chunk.get("content") if isinstance(chunk, dict) else None
    if isinstance(value, (bytes, memoryview)):
        return value  # a view is of the request's frame, which nothing changes
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value)
    raise _GftpFailure(
        "InternalError", f"an UploadChunk needs 'chunk': {{'offset', 'content': bytes}}, got {chunk!r:.80}"
    )


class GsbStorage:
    """Publishes and receives data for providers through the node's GSB API; closes everything on exit."""

    def __init__(self, rest: RestClient) -> None:
        keep_freed_memory()  # chunks of a mebibyte pass through several buffers: no page faults for each
        self.rest = rest
        self._node_id: str | None = None
        self._services: set[_Service] = set()
        self._closed = False
        # the thread that reads the chunks served (started on first use): one for every published item, so one
        # arena of the C allocator, whose freed frames the next ones reuse (a thread per item made an arena each)
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gftp-read")

    def __repr__(self) -> str:
        return f"<GsbStorage {len(self._services)} open>"

    async def __aenter__(self) -> GsbStorage:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every published and received item still open; the storage cannot be used afterwards."""
        self._closed = True
        for service in list(self._services):
            await service.aclose()
        self._reader.shutdown(wait=False)  # every read has ended: each service awaited its own

    async def node_id(self) -> str:
        """The requestor's node id, the host part of its ``gftp://`` URLs (``GET /me``, asked once)."""
        if self._node_id is None:
            self._node_id = (await self.rest.identity()).identity
        return self._node_id

    async def publish_bytes(self, data: bytes) -> Published:
        """Serve ``data`` to providers; ``published.url`` is what a transfer command reads from."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ConfigurationError(f"publish_bytes takes bytes, got {type(data).__name__}")
        return await self._start(Published(self, self._new_id(), await self.node_id(), data=bytes(data)))

    async def publish_file(self, path: Path) -> Published:
        """Serve the file at ``path`` chunk by chunk (it is not read into memory)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigurationError(f"cannot publish {str(path)!r}: it is not a file")
        node_id = await self.node_id()
        try:
            published = Published(self, self._new_id(), node_id, path=path)
        except OSError as exc:
            raise ConfigurationError(f"cannot publish {str(path)!r}: {exc.strerror or exc}") from exc
        return await self._start(published)

    async def receive_bytes(self, *, limit: int | None = None) -> Receiving:
        """A place for a provider to upload to, for ``result()`` to give as bytes; ``limit`` refuses uploads of more
        bytes. What comes goes to an unnamed temporary file meanwhile, so only the result is held in memory."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ConfigurationError(f"limit must be a number of bytes (0 or more) or None, got {limit!r}")
        return await self._start(Receiving(self, self._new_id(), await self.node_id(), limit=limit))

    async def receive_file(self, path: Path) -> Receiving:
        """A place for a provider to upload to, written into the file at ``path`` (created or truncated)."""
        path = Path(path)
        if not path.parent.is_dir():
            raise ConfigurationError(
                f"cannot receive into {str(path)!r}: the directory {str(path.parent)!r} is missing"
            )
        node_id = await self.node_id()
        try:
            receiving = Receiving(self, self._new_id(), node_id, path=path)
        except OSError as exc:
            raise ConfigurationError(f"cannot receive into {str(path)!r}: {exc.strerror or exc}") from exc
        return await self._start(receiving)

    def _new_id(self) -> str:
        if self._closed:
            raise GolemError("this GsbStorage is closed; create a new one")
        return secrets.token_hex(16)

    async def _start(self, service: S) -> S:
        self._services.add(service)
        await service._open()
        return service

    def _forget(self, service: _Service) -> None:
        self._services.discard(service)
