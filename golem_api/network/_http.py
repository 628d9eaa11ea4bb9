"""HTTP/1.x over a :class:`~golem_api.network.connection.TcpConnection`, for :class:`~.proxy.HttpProxy`: the
request written out, the response's head parsed and its body read by ``Content-Length``, chunks, or to the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Protocol

from attrs import frozen

__all__ = [
    "HOP_BY_HOP",
    "HttpResponseError",
    "ResponseHead",
    "body_chunks",
    "body_length",
    "read_head",
    "request_bytes",
]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers that belong to one hop, never forwarded."""
MAX_HEAD = 64 * 1024
"""Most bytes of a response's status line and headers."""
_CHUNK = 64 * 1024


class HttpResponseError(Exception):
    """The server's answer is not HTTP/1.x as expected (the message says what)."""


class _Stream(Protocol):
    async def read(self, n: int = -1) -> bytes: ...

    async def readexactly(self, n: int) -> bytes: ...

    async def readuntil(self, separator: bytes = b"\n") -> bytes: ...


@frozen
class ResponseHead:
    """A response's status line and headers (in their order, duplicates kept)."""

    version: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` (any case), or ``None``."""
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        return values[-1] if values else None


def request_bytes(method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    """An HTTP/1.1 request that asks the server to close the connection after answering."""
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{key}: {value}" for key, value in headers if key.lower() not in HOP_BY_HOP | {"content-length"}]
    if body or method.upper() in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def read_head(stream: _Stream) -> ResponseHead:
    """Read and parse the status line and headers (informational 1xx answers are skipped)."""
    while True:
        raw = await _read_head_bytes(stream)
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HttpResponseError(f"not an HTTP/1.x status line: {lines[0][:100]!r}")
        headers = []
        for line in lines[1:]:
            if not line:
                continue
            name, colon, value = line.partition(":")
            if not colon or not name.strip():
                raise HttpResponseError(f"a malformed header line: {line[:100]!r}")
            headers.append((name.strip(), value.strip()))
        status = int(parts[1])
        if 100 <= status < 200 and status != 101:
            continue
        return ResponseHead(parts[0], status, parts[2] if len(parts) > 2 else "", tuple(headers))


async def _read_head_bytes(stream: _Stream) -> bytes:
    try:
        raw = await stream.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise HttpResponseError("the server closed the connection without answering") from None
        raise HttpResponseError(f"the server's answer ended inside its head: {exc.partial[:100]!r}") from None
    if len(raw) > MAX_HEAD:
        raise HttpResponseError(f"the server's status line and headers exceed {MAX_HEAD} bytes")
    return raw[:-4]


def body_length(head: ResponseHead, method: str) -> int | None:
    """The body's length when known in advance (0 for HEAD, 204, 304), else ``None``."""
    if method.upper() == "HEAD" or head.status in (204, 304):
        return 0
    if (head.header("transfer-encoding") or "").lower().endswith("chunked"):
        return None
    length = head.header("content-length")
    if length is None:
        return None
    if not length.isdigit():
        raise HttpResponseError(f"Content-Length {length!r} is not a number")
    return int(length)


async def body_chunks(stream: _Stream, head: ResponseHead, method: str) -> AsyncIterator[bytes]:
    """The response's body, piece by piece: ``Content-Length`` bytes, the decoded chunks, or all until the end."""
    length = body_length(head, method)
    chunked = (head.header("transfer-encoding") or "").lower().endswith("chunked")
    if length is not None:
        left = length
        while left:
            data = await stream.read(min(left, _CHUNK))
            if not data:
                raise HttpResponseError(f"the body ended {left} bytes before its Content-Length of {length}")
            left -= len(data)
            yield data
    elif chunked:
        try:
            while True:
                size_line = (await stream.readuntil(b"\r\n"))[:-2].split(b";", 1)[0].strip()
                try:
                    size = int(size_line, 16)
                except ValueError:
                    raise HttpResponseError(f"a malformed chunk size {size_line[:40]!r}") from None
                if size == 0:
                    while (await stream.readuntil(b"\r\n")) != b"\r\n":
                        pass  # trailers
                    return
                data = await stream.readexactly(size + 2)
                yield data[:-2]
        except asyncio.IncompleteReadError:
            raise HttpResponseError("the chunked body ended before its last chunk") from None
    else:
        while data := await stream.read(_CHUNK):
            yield data
