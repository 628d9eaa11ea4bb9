"""The gftp messages of the GSB API (daemon >= 0.13), shared by the requestor and the local node.

A requestor that serves or receives a file binds a GSB service on ``/public/gftp/<id>`` with
``POST /gsb-api/v1/services`` and talks over the WebSocket ``/gsb-api/v1/services/<servicesId>``
(subprotocol ``gsb+flexbuffers``). Every frame is one FlexBuffers map:

- request (node → requestor): ``{"id", "component", "payload"}`` with ``component`` one of
  ``GetMetadata`` (no payload) → ``{"fileSize"}``; ``GetChunk {"offset", "size"}`` → ``{"offset", "content"}``;
  ``UploadChunk {"chunk": {"offset", "content"}}`` → ``null``; ``UploadFinished {"hash"?}`` → ``null``.
- response (requestor → node): ``{"id", "payload"}`` or ``{"id", "error": {"ReadError": "…"}}``.

The provider side names such a file ``gftp://<requestor-node-id>/<id>``.

Chunks are the bulk of the traffic, so both ends handle their content without copies of their own:
:func:`chunk_request` and :func:`chunk_response` build a frame with room for the content and hand out a view of
that room, to be filled in place (read from the file straight into the frame); ``decode_*(frame, views=True)``
give a chunk's content as a read-only view of the frame instead of a copy. The frames are the same bytes the
package's builder makes for the same values.
"""

from __future__ import annotations

import struct
from typing import Any

from attrs import frozen
from flatbuffers import flexbuffers

from golem_shared import flexread
from golem_shared.allocator import grow
from golem_shared.errors import GolemError

__all__ = [
    "GET_CHUNK",
    "GET_METADATA",
    "GSB_SUBPROTOCOL",
    "UPLOAD_CHUNK",
    "UPLOAD_FINISHED",
    "ChunkFrame",
    "GftpMessageError",
    "GsbRequest",
    "GsbResponse",
    "chunk_request",
    "chunk_response",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "gftp_address",
    "gftp_url",
    "parse_gftp_url",
]

GSB_SUBPROTOCOL = "gsb+flexbuffers"
GET_METADATA = "GetMetadata"
GET_CHUNK = "GetChunk"
UPLOAD_CHUNK = "UploadChunk"
UPLOAD_FINISHED = "UploadFinished"


class GftpMessageError(GolemError):
    """A GSB frame that is not a valid gftp message (the text says what is wrong with it)."""


@frozen
class GsbRequest:
    """A call to a bound service: ``component`` names the message, ``payload`` its fields."""

    id: str
    component: str
    payload: Any = None


@frozen
class GsbResponse:
    """The answer to the request with the same ``id``: a payload, or an error ``{variant: message}``."""

    id: str
    payload: Any = None
    error: dict[str, str] | None = None


def _decode_map(
    frame: bytes | bytearray | memoryview, what: str, views: bool = False, frozen: bool = False
) -> dict[str, Any]:
    try:
        value = flexread.loads(frame, views=views, frozen=frozen)
    except (ValueError, RecursionError, UnicodeDecodeError, struct.error) as exc:
        raise GftpMessageError(f"a GSB {what} frame of {len(frame)} bytes is not FlexBuffers: {exc}") from None
    if not isinstance(value, dict) or not isinstance(value.get("id"), str):
        raise GftpMessageError(f"a GSB {what} must be a map with a string 'id', got {value!r:.200}")
    return value


def _plain(value: Any) -> Any:
    # flexbuffers gives blobs back as bytearray; hand out immutable bytes
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class _Room:
    """Stands for a blob of ``size`` bytes in a value given to :class:`_Builder`: the builder leaves that many
    bytes for it (zeros) and notes where, to be filled in place once the frame is built."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


_SLACK = 256  # bytes beyond a room kept allocated, so that the small writes after it do not move the buffer
_UNWRITTEN = 64 * 1024  # rooms of this size or more are made without zeroing them first


class _Builder(flexbuffers.Builder):  # type: ignore[misc]  # the package has no type hints
    """The package's builder, but reading a map's key (to sort the keys) without copying the rest of the
    buffer (its own way copied everything after the key, a whole chunk for a map that holds one), and taking
    a :class:`_Room` as a blob whose bytes come later (``room`` is where)."""

    room = -1

    def _ReadKey(self, offset: int) -> bytearray:
        buf: bytearray = self._buf
        return buf[offset : buf.find(0, offset)]

    def Add(self, *args: Any) -> None:
        if len(args) == 1 and isinstance(args[0], _Room):
            self.Blob(args[0])
        else:
            super().Add(*args)

    def _WriteBlob(self, data: Any, append_zero: bool, type_: Any) -> int:
        if not isinstance(data, _Room):
            loc: int = super()._WriteBlob(data, append_zero, type_)
            return loc
        # the package's own steps for a blob (its length, aligned, then its bytes), the bytes left as zeros
        bit_width = flexbuffers.BitWidth.U(data.size)
        byte_width = self._Align(bit_width)
        self._Write(flexbuffers.U, data.size, byte_width)
        buf: bytearray = self._buf
        self.room = len(buf)
        if data.size >= _UNWRITTEN:  # room whose bytes are never written before its fill
            grow(buf, self.room + data.size + _SLACK)
        else:
            buf.extend(bytes(data.size + _SLACK))
        del buf[-_SLACK:]  # the allocation stays: what follows (a few small vectors) fits in it
        self._stack.append(flexbuffers.Value(self.room, type_, bit_width))
        return self.room


class ChunkFrame:
    """A frame built with room for a chunk's content: send :attr:`frame` once :attr:`content` (a writable view
    of the room, as long as the chunk) is filled. The frame is ``buffer[start:]``: ``start`` bytes before it are
    free (a WebSocket header can be written there, see :func:`golem_shared.wsframes.mask_frame`)."""

    def __init__(self, buffer: bytearray, start: int, room: int, size: int) -> None:
        self.buffer = buffer
        self.start = start
        self.content = memoryview(buffer)[room : room + size]
        # a bytearray: a WebSocket sends it as well as bytes (and aiohttp's types say bytes)
        self.frame: bytes = buffer if not start else memoryview(buffer)[start:]  # type: ignore[assignment]


def _room_frame(value: Any, size: int, headroom: int) -> ChunkFrame:
    builder = _Builder()
    if headroom:  # a multiple of 8: every alignment the builder makes, and so every byte, stays the same
        builder._buf = bytearray(headroom)
    builder.Add(value)
    buffer: bytearray = builder.Finish()
    return ChunkFrame(buffer, headroom, builder.room, size)


def _dumps(value: Any) -> bytes:
    builder = _Builder()
    builder.Add(value)
    # the builder's own buffer, not a copy of it: a WebSocket sends a bytearray as well as bytes
    frame: bytes = builder.Finish()
    return frame


def encode_request(request: GsbRequest) -> bytes:
    """One FlexBuffers frame for ``request`` (a missing payload is sent as an empty map)."""
    payload = {} if request.payload is None else request.payload
    return _dumps({"id": request.id, "component": request.component, "payload": payload})


def chunk_request(call_id: str, offset: int, size: int, *, headroom: int = 0) -> ChunkFrame:
    """An ``UploadChunk`` request frame for ``size`` bytes at ``offset``; fill its ``content`` before sending.
    The same bytes as ``encode_request`` makes for the same chunk, ``headroom`` (a multiple of 8) free bytes
    before them."""
    value = {"id": call_id, "component": UPLOAD_CHUNK, "payload": {"chunk": {"offset": offset, "content": _Room(size)}}}
    return _room_frame(value, size, headroom)


def chunk_response(call_id: str, offset: int, size: int, *, headroom: int = 0) -> ChunkFrame:
    """A ``GetChunk`` answer frame for ``size`` bytes at ``offset``; fill its ``content`` before sending.
    The same bytes as ``encode_response`` makes for the same chunk (``headroom``: as for :func:`chunk_request`)."""
    return _room_frame({"id": call_id, "payload": {"offset": offset, "content": _Room(size)}}, size, headroom)


def decode_request(frame: bytes | bytearray | memoryview, *, views: bool = False) -> GsbRequest:
    """Parse a request frame; raises :class:`GftpMessageError` when it is not one. With ``views`` a blob of a
    ``bytes`` frame (a chunk's content) is a read-only view of the frame, not a copy."""
    value = _decode_map(frame, "request", views)
    component = value.get("component")
    if not isinstance(component, str):
        raise GftpMessageError(f"a GSB request needs a string 'component', got {component!r}")
    return GsbRequest(id=value["id"], component=component, payload=_plain(value.get("payload")))


def encode_response(response: GsbResponse) -> bytes:
    """One FlexBuffers frame for ``response``: ``{id, payload}`` or ``{id, error}``."""
    if response.error is not None:
        return _dumps({"id": response.id, "error": response.error})
    return _dumps({"id": response.id, "payload": response.payload})


def decode_response(frame: bytes | bytearray | memoryview, *, views: bool = False, frozen: bool = False) -> GsbResponse:
    """Parse a response frame; raises :class:`GftpMessageError` when it is not one (``views``: as for
    :func:`decode_request`; ``frozen``: the frame is a ``bytearray`` that nothing changes any more, so its blobs
    may be views too)."""
    value = _decode_map(frame, "response", views, frozen)
    error = value.get("error")
    if error is not None and not isinstance(error, dict):
        error = {"Error": str(error)}
    return GsbResponse(id=value["id"], payload=_plain(value.get("payload")), error=error)


def gftp_address(file_id: str) -> str:
    """The GSB address a file is served on: ``/public/gftp/<id>``."""
    return f"/public/gftp/{file_id}"


def gftp_url(node_id: str, file_id: str) -> str:
    """The URL a provider uses for a served file: ``gftp://<node-id>/<id>``."""
    return f"gftp://{node_id}/{file_id}"


def parse_gftp_url(url: str) -> tuple[str, str]:
    """``(node_id, file_id)`` of a ``gftp://`` URL; raises :class:`GftpMessageError` for anything else."""
    prefix = "gftp://"
    rest = url[len(prefix) :] if url.startswith(prefix) else ""
    node_id, _, file_id = rest.partition("/")
    if not node_id or not file_id or "/" in file_id:
        raise GftpMessageError(f"not a gftp URL of the form gftp://<node-id>/<file-id>: {url!r}")
    return node_id, file_id
