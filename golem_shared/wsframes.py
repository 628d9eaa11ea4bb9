"""Large binary WebSocket frames of the GSB API without the WebSocket library's copies: :func:`send_masked`
(a client sending) and :class:`BinarySplitter` (a server receiving).

A chunk of a transfer crosses the GSB WebSocket as one binary frame of up to a few MiB. aiohttp sends a client's
frame by copying it, masking the copy and joining it to its header (two copies), and reads a frame at the other
end by copying every read, joining them, copying that to mask it and copying it again to ``bytes`` (four copies):
measured on a 1 GB upload, these copies were about a third of the CPU of each process. Here:

- a client builds the frame with :data:`HEADROOM` bytes free before it (:func:`golem_shared.gftp.chunk_response`),
  and :func:`send_masked` writes the header and a fresh random mask into that room, masks the frame in place and
  hands the whole to the connection's transport: no copy of its own;
- a server's connection parses its frames through :class:`BinarySplitter` (installed by :func:`install_splitter`
  in place of aiohttp's parser once the handshake is done): a whole, unfragmented, uncompressed, masked binary
  frame is joined once from the reads, unmasked in place and handed to a callback; every other frame (text, close,
  ping, pong, fragments, compressed or too large ones) is passed, byte for byte, to aiohttp's own parser, which
  deals with it as before.

The frames on the wire are the ones RFC 6455 describes (a client's masked with an unpredictable key), so either end
still talks to any WebSocket peer (yagna's). Both use aiohttp's C masking function and reach into aiohttp's
connection objects; where those are missing (another aiohttp), :func:`masked_sender` and :func:`install_splitter`
say so and the caller uses aiohttp's own ``send_bytes`` and ``receive``.
"""

from __future__ import annotations

import asyncio
import secrets
import struct
from collections.abc import Callable
from typing import Any, cast

from golem_shared.allocator import grow

__all__ = ["HEADROOM", "BinarySplitter", "MaskedSender", "install_splitter", "masked_sender"]

HEADROOM = 16
"""Bytes kept free before a frame for its WebSocket header (at most 14: 2, 8 for the length, 4 for the mask);
16 keeps the frame itself aligned as it would be at the start of a buffer."""

_BINARY = 0x2
_FIN = 0x80
_MASKED = 0x80


def _find_masking() -> Callable[[bytes, bytearray], None] | None:
    """aiohttp's masking function, ``(mask: bytes, data: bytearray) -> None`` (C where its extensions are built):
    in ``aiohttp._websocket.helpers`` from 3.11 on, in ``aiohttp.http_websocket`` before; None when neither has it
    (then each end uses aiohttp's own send and receive)."""
    try:
        from aiohttp._websocket.helpers import websocket_mask

        return cast("Callable[[bytes, bytearray], None]", websocket_mask)
    except ImportError:
        pass
    try:  # aiohttp 3.10
        from aiohttp import http_websocket

        found = getattr(http_websocket, "_websocket_mask", None)
    except ImportError:  # pragma: no cover
        return None
    return cast("Callable[[bytes, bytearray], None]", found) if callable(found) else None


_mask_in_place = _find_masking()


def _header(length: int) -> bytes:
    """A masked binary frame's header up to the mask."""
    if length < 126:
        return bytes((_FIN | _BINARY, _MASKED | length))
    if length < 65536:
        return struct.pack("!BBH", _FIN | _BINARY, _MASKED | 126, length)
    return struct.pack("!BBQ", _FIN | _BINARY, _MASKED | 127, length)


def mask_frame(buffer: bytearray, start: int, key: bytes) -> memoryview:
    """Turn ``buffer[start:]`` into a client's masked binary frame with ``key``, its header written just before
    ``start``; the frame's bytes on the wire (a view of ``buffer``). ``start`` is at least 14."""
    if _mask_in_place is None:  # pragma: no cover
        raise RuntimeError("aiohttp's WebSocket masking function is not available")
    head = _header(len(buffer) - start) + key
    begin = start - len(head)
    if begin < 0:
        raise ValueError(f"a WebSocket header needs {len(head)} bytes before the frame, there are {start}")
    # the masking function works on a whole bytearray from its first byte: the key turned so that the frame's
    # first byte gets its first byte, the header's bytes (masked too) written again after
    turn = start % 4
    _mask_in_place(key[-turn:] + key[:-turn] if turn else key, buffer)
    buffer[begin:start] = head
    return memoryview(buffer)[begin:]


class MaskedSender:
    """Sends a client's binary frames built with :data:`HEADROOM` bytes of room, straight to the transport."""

    def __init__(self, transport: Any, protocol: Any) -> None:
        self._transport = transport
        self._protocol = protocol

    @staticmethod
    def prepare(buffer: bytearray, start: int) -> memoryview:
        """``buffer[start:]`` made a frame with a fresh random mask (in place: do not reuse ``buffer``); what
        :meth:`write` sends. Any thread may prepare."""
        return mask_frame(buffer, start, secrets.token_bytes(4))

    async def write(self, frame: memoryview) -> None:
        """Send a frame :meth:`prepare` made; waits while the transport's buffer is full. ``ConnectionResetError``
        when the connection is closing."""
        if self._transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        self._transport.write(frame)
        if getattr(self._protocol, "_paused", False):
            await self._protocol._drain_helper()

    async def send(self, buffer: bytearray, start: int) -> None:
        """:meth:`prepare` and :meth:`write` ``buffer[start:]``."""
        await self.write(self.prepare(buffer, start))


def masked_sender(ws: Any) -> MaskedSender | None:
    """A :class:`MaskedSender` on the connection of aiohttp's client WebSocket ``ws``; None when this aiohttp's
    objects are not as expected (then send with ``ws.send_bytes``)."""
    writer = getattr(ws, "_writer", None)
    transport = getattr(writer, "transport", None)
    protocol = getattr(writer, "protocol", None)
    if (
        _mask_in_place is None
        or not getattr(writer, "use_mask", False)
        or transport is None
        or not hasattr(protocol, "_drain_helper")
    ):
        return None
    return MaskedSender(transport, protocol)


_HEAD, _OURS, _THEIRS = 0, 1, 2


class BinarySplitter:
    """Parses a server's incoming WebSocket bytes (``feed_data`` as aiohttp's parsers): whole masked binary frames
    of at most ``limit`` bytes go to ``on_binary`` (a ``bytearray`` of the unmasked payload, the callback's to
    keep), everything else to ``inner``, aiohttp's own parser, unchanged; so does a frame ``on_binary`` refuses
    (returns False for), as it came."""

    def __init__(self, inner: Any, on_binary: Callable[[bytearray], bool], limit: int) -> None:
        self._inner = inner
        self._on_binary = on_binary
        self._limit = limit
        self._state = _HEAD
        self._head = b""
        self._payload = bytearray()  # the current frame of ours, filled in place
        self._filled = 0
        self._left = 0  # payload bytes of the current frame still to come
        self._key = b""
        self._header = b""

    def feed_eof(self) -> None:
        self._inner.feed_eof()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        view = memoryview(data)
        at, end = 0, len(data)
        while at < end:
            if self._state == _HEAD:
                if self._head:
                    view = memoryview(self._head + bytes(view[at:]))
                    at, end, self._head = 0, len(view), b""
                parsed = self._parse_head(view, at)
                if parsed is None:
                    self._head = bytes(view[at:])
                    break
                length, size, ours = parsed
                if ours:
                    self._header = bytes(view[at : at + size])
                    self._key = self._header[-4:]
                    self._state, self._left, at = _OURS, length, at + size
                    self._payload, self._filled = bytearray(), 0
                    grow(self._payload, length)  # every byte is written by the reads that follow
                else:
                    self._state, self._left = _THEIRS, size + length  # the header goes to aiohttp with the rest
                if self._left == 0:  # an empty frame of ours
                    self._deliver()
                continue
            take = min(self._left, end - at)
            if self._state == _OURS:
                self._payload[self._filled : self._filled + take] = view[at : at + take]
                at += take
                self.filled(take)
            else:
                piece = data if take == len(data) and view.obj is data else bytes(view[at : at + take])
                eof, tail = self._inner.feed_data(piece)
                self._left -= take
                at += take
                if not self._left:
                    self._state = _HEAD
                if eof:
                    return eof, tail
        return False, b""

    def _parse_head(self, view: memoryview, at: int) -> tuple[int, int, bool] | None:
        """(payload length, header size, ours?) of the frame starting at ``at``, or None when incomplete."""
        if len(view) - at < 2:
            return None
        first, second = view[at], view[at + 1]
        length, size = second & 0x7F, 2
        if length == 126:
            size = 4
            if len(view) - at < size:
                return None
            length = int.from_bytes(view[at + 2 : at + 4], "big")
        elif length == 127:
            size = 10
            if len(view) - at < size:
                return None
            length = int.from_bytes(view[at + 2 : at + 10], "big")
        masked = bool(second & _MASKED)
        if masked:
            size += 4
            if len(view) - at < size:
                return None
        ours = first == _FIN | _BINARY and masked and length <= self._limit
        return length, size, ours

    def room(self) -> memoryview | None:
        """Where the next bytes read go straight into the frame being received, if one is (then call
        :meth:`filled` with how many were read there)."""
        if self._state != _OURS or not self._left:
            return None
        return memoryview(self._payload)[self._filled :]

    def filled(self, count: int) -> None:
        """``count`` more bytes of the current frame of ours are in place."""
        self._filled += count
        self._left -= count
        if not self._left:
            self._deliver()

    def _deliver(self) -> None:
        payload, self._payload = self._payload, bytearray()
        self._state = _HEAD
        if _mask_in_place is not None:
            _mask_in_place(self._key, payload)
        if not self._on_binary(payload):  # refused: to aiohttp's parser as it came (masked again)
            if _mask_in_place is not None:
                _mask_in_place(self._key, payload)
            self._inner.feed_data(self._header + payload)


_SCRATCH = 256 * 1024  # bytes read at a time outside frames of ours (as asyncio's own reads)


class _ReadingInPlace(asyncio.BufferedProtocol):
    """Stands between a connection's transport and aiohttp's protocol: the socket is read straight into the frame
    a :class:`BinarySplitter` is receiving; other bytes are read into a scratch buffer and given to aiohttp's
    protocol as it would have got them (which feeds them to the splitter). Everything else is aiohttp's."""

    def __init__(self, protocol: Any, splitter: BinarySplitter) -> None:
        self._protocol = protocol
        self._splitter = splitter
        self._scratch = bytearray(_SCRATCH)
        self._into: memoryview | None = None

    def get_buffer(self, sizehint: int) -> memoryview | bytearray:
        self._into = self._splitter.room()
        return self._scratch if self._into is None else self._into

    def buffer_updated(self, nbytes: int) -> None:
        if self._into is not None:
            self._into = None
            self._splitter.filled(nbytes)
        else:
            self._protocol.data_received(bytes(self._scratch[:nbytes]))

    def eof_received(self) -> bool | None:
        result: bool | None = self._protocol.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        self._protocol.connection_lost(exc)

    def pause_writing(self) -> None:
        self._protocol.pause_writing()

    def resume_writing(self) -> None:
        self._protocol.resume_writing()


def install_splitter(request: Any, on_binary: Callable[[bytearray], bool], limit: int) -> bool:
    """Parse the frames of the aiohttp server connection of ``request`` (after its WebSocket handshake) through a
    :class:`BinarySplitter`, reading the frames of ours straight into place where the transport allows it; False
    when this aiohttp's objects are not as expected (nothing changed then)."""
    protocol = getattr(request, "protocol", None)
    inner = getattr(protocol, "_payload_parser", None)
    if _mask_in_place is None or protocol is None or inner is None or not hasattr(inner, "feed_data"):
        return False
    splitter = BinarySplitter(inner, on_binary, limit)
    protocol._payload_parser = splitter
    transport = getattr(protocol, "transport", None)
    if transport is not None and transport.get_protocol() is protocol and not transport.is_closing():
        transport.set_protocol(_ReadingInPlace(protocol, splitter))
    return True
