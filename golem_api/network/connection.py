"""``TcpConnection``: one TCP stream to ``ip:port`` inside a VPN, carried by the node's WebSocket.

The node (yagna, or the local node) makes the TCP connection inside the VPN from the requestor's address and
only then upgrades the request to a WebSocket; from there binary frames carry the stream's bytes both ways::

    async with await network.connect("192.168.0.2", 6379) as conn:    # or service.network_node.connect(6379)
        await conn.write(b"PING\\r\\n")
        print(await conn.readline())

Reading is that of :class:`asyncio.StreamReader` (``read``, ``readexactly``, ``readline``, ``readuntil``), with
flow control: when :data:`READ_BUFFER` bytes wait unread, frames are no longer taken from the node, so a slow
reader slows the sender down (while paused it cannot answer the node's pings either: a reader that leaves the
buffer full for longer than the node's heartbeat, 10 s on yagna, loses the connection). ``write`` sends in
frames of at most :data:`FRAME_SIZE` bytes (yapapi's chunk).
A WebSocket has no half-close: closing the connection closes the stream in both directions, and the end of the
stream from the other side shows as ``at_eof()`` (``read()`` returns ``b""``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from types import TracebackType

import aiohttp

from golem_api.errors import GolemError, NetworkError
from golem_shared.tasks import TaskSet

__all__ = ["FRAME_SIZE", "READ_BUFFER", "TcpConnection"]

_log = logging.getLogger(__name__)

FRAME_SIZE = 64 * 1024
"""Most bytes sent in one WebSocket frame."""
READ_BUFFER = 4 * 1024 * 1024
"""Unread bytes held before the connection stops taking frames from the node."""
_CLOSE_TIMEOUT = 5.0


class TcpConnection:
    """A TCP stream inside a VPN (see the module docstring); made by ``Network.connect`` / ``Node.connect``."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse[bool],
        *,
        ip: str,
        port: int,
        network_id: str,
        on_close: Callable[[TcpConnection], None] | None = None,
    ) -> None:
        self.ip = ip
        self.port = port
        self.network_id = network_id
        self._ws = ws
        self._on_close = on_close
        self._buffer = bytearray()
        self._eof = False
        self._error: BaseException | None = None
        self._data = asyncio.Event()  # set when bytes or the end arrive
        self._room = asyncio.Event()  # set when bytes were taken, or a reader waits for more
        self._readers_waiting = 0
        self._closed = False
        self._tasks = TaskSet(f"TCP connection to {ip}:{port}", logger=_log)
        self._tasks.spawn(self._receive(), name=f"VPN stream {ip}:{port} in {network_id}")
        self.bytes_sent = 0
        self.bytes_received = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("at end" if self._eof else "open")
        return f"<TcpConnection {self.ip}:{self.port} in {self.network_id} {state}>"

    # -- reading ---------------------------------------------------------------------------------------------

    async def _receive(self) -> None:
        try:
            while True:
                while len(self._buffer) >= READ_BUFFER and not self._readers_waiting and not self._closed:
                    self._room.clear()
                    await self._room.wait()
                message = await self._ws.receive()
                if message.type is aiohttp.WSMsgType.BINARY:
                    data: bytes = message.data
                elif message.type is aiohttp.WSMsgType.TEXT:
                    data = message.data.encode()
                else:
                    if message.type is aiohttp.WSMsgType.ERROR:
                        self._error = NetworkError(
                            f"the stream to {self.ip}:{self.port} broke: {message.data!r}", network_id=self.network_id
                        )
                    break
                self._buffer += data
                self.bytes_received += len(data)
                self._data.set()
        finally:
            self._eof = True
            self._data.set()

    async def _wait(self) -> None:
        """Wait for more bytes (or the end); the receiver goes on past its buffer limit meanwhile."""
        self._readers_waiting += 1
        self._room.set()
        self._data.clear()
        try:
            await self._data.wait()
        finally:
            self._readers_waiting -= 1

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        self._room.set()  # room again: the receiver may go on
        return data

    def _check_error(self) -> None:
        if self._error is not None and not self._buffer:
            raise self._error

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes as soon as some are there (``-1``: everything until the end); ``b""`` at the end."""
        if n == 0:
            return b""
        if n < 0:
            while not self._eof:
                await self._wait()
            self._check_error()
            return self._take(len(self._buffer))
        while not self._buffer and not self._eof:
            await self._wait()
        self._check_error()
        return self._take(min(n, len(self._buffer)))

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes; :class:`asyncio.IncompleteReadError` when the stream ends first."""
        while len(self._buffer) < n and not self._eof:
            await self._wait()
        if len(self._buffer) < n:
            self._check_error()
            raise asyncio.IncompleteReadError(self._take(len(self._buffer)), n)
        return self._take(n)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        """Bytes up to and including ``separator``; :class:`asyncio.IncompleteReadError` when the stream ends first."""
        start = 0
        while (found := self._buffer.find(separator, start)) < 0:
            if self._eof:
                self._check_error()
                raise asyncio.IncompleteReadError(self._take(len(self._buffer)), None)
            start = max(0, len(self._buffer) - len(separator) + 1)
            await self._wait()
        return self._take(found + len(separator))

    async def readline(self) -> bytes:
        """A line with its ``\\n``; at the end, what is left (possibly ``b""``)."""
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial

    def at_eof(self) -> bool:
        """Whether the stream has ended and everything was read."""
        return self._eof and not self._buffer

    # -- writing ---------------------------------------------------------------------------------------------

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` (in frames of at most :data:`FRAME_SIZE`); :class:`NetworkError` once the stream ended."""
        if self._closed or self._ws.closed:
            raise NetworkError(
                f"the stream to {self.ip}:{self.port} in network {self.network_id} is closed; open a new connection",
                network_id=self.network_id,
            )
        view = memoryview(data)
        try:
            for start in range(0, len(view), FRAME_SIZE):
                await self._ws.send_bytes(bytes(view[start : start + FRAME_SIZE]))
        except (ConnectionError, aiohttp.ClientError) as exc:
            raise NetworkError(
                f"the stream to {self.ip}:{self.port} broke while sending: {exc}", network_id=self.network_id
            ) from exc
        self.bytes_sent += len(view)

    # -- closing ---------------------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    async def aclose(self) -> None:
        """Close the stream (both directions) and the WebSocket. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._room.set()
        with contextlib.suppress(ConnectionError, aiohttp.ClientError, asyncio.TimeoutError, GolemError):
            await asyncio.wait_for(self._ws.close(), _CLOSE_TIMEOUT)
        await self._tasks.aclose(timeout=_CLOSE_TIMEOUT)
        if self._on_close is not None:
            self._on_close(self)

    async def __aenter__(self) -> TcpConnection:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
