"""The FlexBuffers reader of GSB frames: the values the ``flatbuffers`` package's reader gives, and clear refusals."""

from __future__ import annotations

import os
import random
from typing import Any

import pytest
from flatbuffers import flexbuffers

from golem_shared import flexread
from golem_shared.gftp import (
    GftpMessageError,
    GsbRequest,
    GsbResponse,
    chunk_request,
    chunk_response,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)


def _plain(value: Any) -> Any:
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


VALUES: list[Any] = [
    None,
    0,
    -5,
    2**40,
    -(2**40),
    3.5,
    True,
    "",
    "zażółć",
    b"",
    os.urandom(70_000),
    [1, "a", None, 2.5, [True, b"x"]],
    list(range(300)),
    [-1, 70_000, -(2**33)],
    {},
    {"b": 1, "a": {"c": [1, 2], "d": b"xy"}, "k" * 300: "v" * 70_000},
    {"id": "7", "component": "UploadChunk", "payload": {"chunk": {"offset": 2**31, "content": os.urandom(1 << 20)}}},
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_it_reads_what_the_package_writes_as_the_package_reads_it(value: Any) -> None:
    frame = bytes(flexbuffers.Dumps(value))
    assert flexread.loads(frame) == _plain(flexbuffers.Loads(frame))


def test_typed_and_fixed_vectors_and_indirect_scalars_read_as_the_package_reads_them() -> None:
    for build in (
        lambda b: b.TypedVectorFromElements([1.5, 2.5]),
        lambda b: b.TypedVectorFromElements([True, False]),
        lambda b: b.FixedTypedVectorFromElements([1.0, 2.0, 3.0]),
        lambda b: b.IndirectInt(-7),
        lambda b: b.IndirectFloat(2.5),
    ):
        builder = flexbuffers.Builder()
        build(builder)
        frame = bytes(builder.Finish())
        assert flexread.loads(frame) == flexbuffers.Loads(frame)


def test_gsb_frames_round_trip_with_a_mebibyte_chunk() -> None:
    content = os.urandom(1 << 20)
    request = GsbRequest(id="3", component="UploadChunk", payload={"chunk": {"offset": 1 << 20, "content": content}})
    assert decode_request(encode_request(request)) == request
    response = GsbResponse(id="4", payload={"offset": 0, "content": content})
    assert decode_response(encode_response(response)) == response


@pytest.mark.parametrize("size", [0, 1, 200, 255, 256, 65_535, 65_536, (1 << 20) + 3])
@pytest.mark.parametrize(("call_id", "offset"), [("1", 0), ("12345", 1 << 31), ("x" * 300, 1 << 40)])
def test_a_chunk_frame_filled_in_place_is_the_frame_the_package_builds_for_the_same_chunk(
    size: int, call_id: str, offset: int
) -> None:
    content = os.urandom(size)
    request = chunk_request(call_id, offset, size)
    request.content[:] = content
    payload = {"chunk": {"offset": offset, "content": content}}
    assert bytes(request.frame) == bytes(
        encode_request(GsbRequest(id=call_id, component="UploadChunk", payload=payload))
    )
    response = chunk_response(call_id, offset, size)
    response.content[:] = content
    answer = GsbResponse(id=call_id, payload={"offset": offset, "content": content})
    assert bytes(response.frame) == bytes(encode_response(answer))
    assert bytes(response.frame) == bytes(flexbuffers.Dumps({"id": call_id, "payload": answer.payload}))
    # with room for a WebSocket header before it: the same frame, after that room
    roomy = chunk_response(call_id, offset, size, headroom=16)
    roomy.content[:] = content
    assert roomy.start == 16
    assert bytes(roomy.buffer[16:]) == bytes(roomy.frame) == bytes(response.frame)
    roomy_request = chunk_request(call_id, offset, size, headroom=16)
    roomy_request.content[:] = content
    assert bytes(roomy_request.frame) == bytes(request.frame)


def test_decoding_with_views_gives_a_chunk_as_a_read_only_view_of_the_frame() -> None:
    content = os.urandom(70_000)
    frame = bytes(encode_response(GsbResponse(id="4", payload={"offset": 9, "content": content})))
    got = decode_response(frame, views=True).payload["content"]
    assert isinstance(got, memoryview)
    assert got.readonly
    assert got == content
    assert got.obj is frame
    request = GsbRequest(id="3", component="UploadChunk", payload={"chunk": {"offset": 0, "content": content}})
    assert decode_request(bytes(encode_request(request)), views=True) == request
    # a buffer that may change is copied from, views or not
    assert isinstance(decode_response(bytearray(frame), views=True).payload["content"], bytes)
    # unless its owner says nothing changes it any more: then a read-only view of it
    owned = bytearray(frame)
    viewed = decode_response(owned, views=True, frozen=True).payload["content"]
    assert isinstance(viewed, memoryview)
    assert viewed.readonly
    assert viewed.obj is owned
    assert viewed == content


def test_a_damaged_frame_is_refused_as_not_flexbuffers_never_with_another_error() -> None:
    frame = bytes(encode_request(GsbRequest(id="1", component="GetChunk", payload={"offset": 5, "size": 30})))
    generator = random.Random(17)
    messages: list[str] = []
    for _ in range(3000):
        damaged = bytearray(frame)
        for _ in range(generator.randint(1, 4)):
            damaged[generator.randrange(len(damaged))] = generator.randrange(256)
        try:
            decode_request(bytes(damaged))
        except GftpMessageError as exc:
            messages.append(str(exc))
    assert len(messages) > 1000
    assert all("FlexBuffers" in message or "GSB request" in message for message in messages)
    with pytest.raises(GftpMessageError, match="frame of 2 bytes is not FlexBuffers"):
        decode_request(b"\x01\x02")
