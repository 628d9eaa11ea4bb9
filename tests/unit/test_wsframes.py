"""Chunk frames of the GSB WebSocket without aiohttp's copies: a client's frame masked in place, a server's frames
split into ours (joined once, unmasked in place) and the rest (aiohttp's, byte for byte)."""

from __future__ import annotations

import itertools
import os
import random
import struct
from typing import Any

import pytest

from golem_shared.wsframes import HEADROOM, BinarySplitter, MaskedSender, mask_frame


def _unmask(key: bytes, data: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def _client_frame(payload: bytes, *, opcode: int = 2, fin: bool = True, key: bytes = b"\x01\x02\x03\x04") -> bytes:
    """A client's masked frame, written out by hand after RFC 6455."""
    first = (0x80 if fin else 0) | opcode
    if len(payload) < 126:
        head = bytes((first, 0x80 | len(payload)))
    elif len(payload) < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, len(payload))
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, len(payload))
    return head + key + _unmask(key, payload)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65_535, 65_536, 70_001])
@pytest.mark.parametrize("start", [HEADROOM, 17, 18, 19])
def test_a_frame_masked_in_place_is_the_frame_rfc_6455_describes(size: int, start: int) -> None:
    payload = os.urandom(size)
    buffer = bytearray(os.urandom(start)) + payload
    wire = mask_frame(buffer, start, b"\xa1\xb2\xc3\xd4")
    assert bytes(wire) == _client_frame(payload, key=b"\xa1\xb2\xc3\xd4")


def test_a_header_needs_its_room() -> None:
    with pytest.raises(ValueError, match="needs 14 bytes"):
        mask_frame(bytearray(70_000), 8, b"abcd")


def test_each_frame_gets_a_fresh_key() -> None:
    keys = {bytes(MaskedSender.prepare(bytearray(HEADROOM + 200), HEADROOM)[4:8]) for _ in range(20)}
    assert len(keys) > 15


class _Inner:
    """Stands for aiohttp's parser: keeps what it is fed."""

    def __init__(self) -> None:
        self.fed = bytearray()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        assert isinstance(data, bytes)
        self.fed += data
        return False, b""

    def feed_eof(self) -> None:
        pass


def _split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(cuts), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(points)]


def _run(pieces: list[bytes], limit: int = 100_000, refuse: bytes | None = None) -> tuple[list[bytes], bytes]:
    ours: list[bytes] = []

    def on_binary(payload: bytearray) -> bool:
        assert isinstance(payload, bytearray)
        if refuse is not None and bytes(payload) == refuse:
            return False
        ours.append(bytes(payload))
        return True

    inner = _Inner()
    splitter = BinarySplitter(inner, on_binary, limit)
    for piece in pieces:
        assert splitter.feed_data(piece) == (False, b"")
    return ours, bytes(inner.fed)


def test_whole_binary_frames_are_ours_and_every_other_frame_goes_to_aiohttp_byte_for_byte() -> None:
    generator = random.Random(5)
    big, small, empty = os.urandom(70_000), os.urandom(300), b""
    theirs = [
        _client_frame(b"ping!", opcode=0x9),
        _client_frame(b"text", opcode=0x1),
        _client_frame(b"part", opcode=0x2, fin=False),  # fragments: aiohttp joins them
        _client_frame(b"rest", opcode=0x0),
        _client_frame(os.urandom(200_001)),  # beyond the limit: aiohttp refuses it
        bytes((0x82, 3)) + b"abc",  # not masked
        _client_frame(struct.pack("!H", 1000) + b"bye", opcode=0x8),
    ]
    stream = [
        _client_frame(big),
        theirs[0],
        _client_frame(small),
        theirs[1],
        theirs[2],
        theirs[3],
        _client_frame(empty),
        theirs[4],
        theirs[5],
        _client_frame(big[:126]),
        theirs[6],
    ]
    whole = b"".join(stream)
    expected_ours = [big, small, empty, big[:126]]
    expected_theirs = b"".join(theirs)
    for cuts in ([], list(range(1, 40)), [generator.randrange(len(whole)) for _ in range(60)]):
        assert _run(_split(whole, cuts), limit=100_000) == (expected_ours, expected_theirs)
    # a byte at a time through the small frames
    small_part = b"".join(stream[1:4])
    assert _run([small_part[i : i + 1] for i in range(len(small_part))]) == ([small], theirs[0] + theirs[1])


def test_read_in_place_as_the_connection_does_the_frames_split_the_same() -> None:
    """The connection reads into the frame being received when there is one (``room``/``filled``), into a scratch
    buffer otherwise: the same frames come out either way, however the reads fall."""
    generator = random.Random(11)
    payloads = [os.urandom(n) for n in (70_000, 0, 300, 1 << 20, 126)]
    ping = _client_frame(b"ping", opcode=0x9)
    stream = b"".join(_client_frame(p) + ping for p in payloads)
    for _ in range(5):
        ours: list[bytes] = []
        inner = _Inner()

        def keep(payload: bytearray, ours: list[bytes] = ours) -> bool:
            ours.append(bytes(payload))
            return True

        splitter = BinarySplitter(inner, keep, 1 << 21)
        at = 0
        while at < len(stream):
            size = generator.choice([1, 3, 100, 5000, 300_000])
            room = splitter.room()
            if room is not None:
                take = min(size, len(room), len(stream) - at)
                room[:take] = stream[at : at + take]
                splitter.filled(take)
            else:
                take = min(size, len(stream) - at)
                splitter.feed_data(stream[at : at + take])
            at += take
        assert ours == payloads
        assert bytes(inner.fed) == ping * len(payloads)


def test_a_frame_the_callback_refuses_goes_to_aiohttp_as_it_came() -> None:
    bad, good = b"not a gsb frame", os.urandom(1000)
    stream = _client_frame(bad) + _client_frame(good)
    assert _run(_split(stream, [7, 30]), refuse=bad) == ([good], _client_frame(bad))


def test_the_end_of_the_stream_reaches_aiohttp() -> None:
    ended: list[bool] = []

    class Inner(_Inner):
        def feed_eof(self) -> None:
            ended.append(True)

    BinarySplitter(Inner(), lambda payload: True, 10).feed_eof()
    assert ended == [True]


def test_aiohttps_end_of_stream_answer_is_passed_back() -> None:
    class Closing(_Inner):
        def feed_data(self, data: bytes) -> tuple[bool, bytes]:
            return True, b"tail"

    splitter: Any = BinarySplitter(Closing(), lambda payload: True, 10)
    assert splitter.feed_data(_client_frame(b"x", opcode=0x8)) == (True, b"tail")


async def test_through_aiohttp_frames_sent_masked_in_place_reach_the_splitter_and_the_rest_reaches_aiohttp() -> None:
    """Both ends on a real aiohttp connection: this aiohttp's objects are the ones the fast paths expect (else they
    would fall back silently), chunks sent both ways arrive whole, and pings, text and the close still work."""
    import aiohttp
    from aiohttp import web

    from golem_shared.wsframes import install_splitter, masked_sender

    got: list[bytes] = []
    through_aiohttp: list[tuple[str, Any]] = []
    installed: list[bool] = []
    reading_in_place: list[str] = []

    def keep(payload: bytearray) -> bool:
        got.append(bytes(payload))
        return True

    async def handler(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(max_msg_size=1 << 24)
        await socket.prepare(request)
        installed.append(install_splitter(request, keep, 1 << 24))
        reading_in_place.append(type(request.transport.get_protocol()).__name__)  # type: ignore[union-attr]
        async for message in socket:
            through_aiohttp.append((message.type.name, message.data))
            if message.type is aiohttp.WSMsgType.TEXT:
                await socket.send_str("seen " + message.data)
        return socket

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    chunks = [os.urandom(n) for n in (3 << 20, 100, 0, 70_000)]
    try:
        async with aiohttp.ClientSession() as session, session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
            sender = masked_sender(ws)
            assert sender is not None
            for chunk in chunks:
                buffer = bytearray(HEADROOM) + chunk
                await sender.send(buffer, HEADROOM)
            await ws.send_bytes(b"via aiohttp")
            await ws.ping(b"hi")
            await ws.send_str("hello")
            reply = await ws.receive(timeout=10)
            assert reply.data == "seen hello"
    finally:
        await runner.cleanup()
    assert installed == [True]
    assert reading_in_place == ["_ReadingInPlace"]
    assert got == [*chunks, b"via aiohttp"]
    assert through_aiohttp == [("TEXT", "hello")]
