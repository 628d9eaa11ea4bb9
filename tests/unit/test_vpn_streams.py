"""A TCP stream over the node's WebSocket (``TcpConnection``) and HTTP/1.x over it (the HTTP proxy's parser),
against an in-memory WebSocket: reading as ``asyncio.StreamReader`` does, flow control that never deadlocks,
frames of at most 64 KiB, and every framing of a response body."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from golem_api import NetworkError
from golem_api.network import _http, connection
from golem_api.network.connection import FRAME_SIZE, TcpConnection


class FakeWs:
    """The client side of a WebSocket: ``receive`` takes from ``incoming``; ``send_bytes`` records frames."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[aiohttp.WSMessage] = asyncio.Queue()
        self.frames: list[bytes] = []
        self.closed = False
        self.receives = 0

    def feed(self, data: bytes) -> None:
        self.incoming.put_nowait(aiohttp.WSMessage(aiohttp.WSMsgType.BINARY, data, None))

    def end(self) -> None:
        self.incoming.put_nowait(aiohttp.WSMessage(aiohttp.WSMsgType.CLOSED, None, None))

    async def receive(self) -> aiohttp.WSMessage:
        self.receives += 1
        return await self.incoming.get()

    async def send_bytes(self, data: bytes) -> None:
        self.frames.append(data)

    async def close(self) -> None:
        self.closed = True
        self.end()


def stream(ws: FakeWs) -> TcpConnection:
    return TcpConnection(ws, ip="192.168.0.2", port=80, network_id="n")  # type: ignore[arg-type]


async def test_reads_as_a_stream_reader_does() -> None:
    ws = FakeWs()
    conn = stream(ws)
    ws.feed(b"first line\nsecond ")
    ws.incoming.put_nowait(aiohttp.WSMessage(aiohttp.WSMsgType.TEXT, "line\nrest", None))  # text frames: bytes too
    assert await conn.readline() == b"first line\n"
    assert await conn.readuntil(b"\n") == b"second line\n"
    assert await conn.readexactly(2) == b"re"
    ws.feed(b"!")
    ws.end()
    assert await conn.read() == b"st!"
    assert conn.at_eof()
    assert await conn.read(10) == b""
    with pytest.raises(asyncio.IncompleteReadError):
        await conn.readexactly(1)
    await conn.aclose()
    assert ws.closed


async def test_a_slow_reader_stops_the_frames_and_a_large_read_never_deadlocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "READ_BUFFER", 10)
    ws = FakeWs()
    conn = stream(ws)
    for _ in range(5):
        ws.feed(b"0123456789")
    await asyncio.sleep(0)  # let the receiver take what it may
    for _ in range(3):
        await asyncio.sleep(0)
    assert ws.receives == 1  # one frame filled the buffer: the receiver waits for room before taking another
    assert await conn.readexactly(35) == b"0123456789" * 3 + b"01234"  # more than the buffer: no deadlock
    ws.end()
    assert await conn.read() == b"56789" + b"0123456789"
    await conn.aclose()


async def test_writes_go_out_in_frames_of_at_most_64_kib_and_not_after_close() -> None:
    ws = FakeWs()
    conn = stream(ws)
    await conn.write(b"x" * (FRAME_SIZE * 2 + 1))
    assert [len(frame) for frame in ws.frames] == [FRAME_SIZE, FRAME_SIZE, 1]
    assert conn.bytes_sent == FRAME_SIZE * 2 + 1
    await conn.aclose()
    with pytest.raises(NetworkError, match=r"192\.168\.0\.2:80 in network n is closed; open a new connection"):
        await conn.write(b"late")


class Bytes:
    """A stream over fixed bytes (what ``_http`` reads through)."""

    def __init__(self, data: bytes) -> None:
        self.reader = asyncio.StreamReader()
        self.reader.feed_data(data)
        self.reader.feed_eof()

    async def read(self, n: int = -1) -> bytes:
        return await self.reader.read(n)

    async def readexactly(self, n: int) -> bytes:
        return await self.reader.readexactly(n)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        return await self.reader.readuntil(separator)


async def body_of(raw: bytes, method: str = "GET") -> tuple[int, bytes]:
    source = Bytes(raw)
    head = await _http.read_head(source)
    return head.status, b"".join([chunk async for chunk in _http.body_chunks(source, head, method)])


def test_a_request_asks_to_close_and_drops_hop_by_hop_headers() -> None:
    headers = [("Host", "localhost:8080"), ("Connection", "keep-alive"), ("Transfer-Encoding", "chunked"), ("X-A", "1")]
    assert _http.request_bytes("POST", "/a?b=1", headers, b"hi") == (
        b"POST /a?b=1 HTTP/1.1\r\nHost: localhost:8080\r\nX-A: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    )
    assert _http.request_bytes("GET", "/", [], b"") == b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize(
    ("raw", "method", "expected"),
    [
        (b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA", "GET", (200, b"hello")),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n1\r\n!\r\n0\r\nT: 1\r\n\r\n",
            "GET",
            (200, b"hello!"),
        ),
        (b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nto the end", "GET", (200, b"to the end")),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno!", "GET", (404, b"no!")),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", "HEAD", (200, b"")),
        (b"HTTP/1.1 204 No Content\r\n\r\n", "GET", (204, b"")),
    ],
)
async def test_response_bodies_of_every_framing_are_read(raw: bytes, method: str, expected: tuple[int, bytes]) -> None:
    assert await body_of(raw, method) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", "closed the connection without answering"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nbroken\r\n\r\n", "a malformed header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "ended 5 bytes before its Content-Length of 10"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "a malformed chunk size"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "Content-Length 'x' is not a number"),
    ],
)
async def test_an_answer_that_is_not_http_says_what_is_wrong(raw: bytes, expected: str) -> None:
    with pytest.raises(_http.HttpResponseError, match=expected):
        await body_of(raw)


def test_head_headers_are_looked_up_in_any_case() -> None:
    head = _http.ResponseHead("HTTP/1.1", 200, "OK", (("X-A", "1"), ("x-a", "2")))
    assert head.header("X-a") == "2"
    assert head.header("missing") is None
