"""Server-sent events as the daemon streams a batch's runtime events, cut into chunks anywhere."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from datetime import datetime, timezone
from typing import Any

import pytest

from golem_api._rest import routes
from golem_api._rest.activity import EVENT_STREAM, ActivityApi
from golem_api._rest.models import RuntimeEvent
from golem_api._rest.routes import Route
from golem_api._rest.sse import SseFrame, SseParser
from golem_api.errors import ConfigurationError, ServerError


def frames_of(stream: bytes, *, chunk: int | None = None) -> list[SseFrame]:
    parser = SseParser()
    if chunk is None:
        return parser.feed(stream)
    frames: list[SseFrame] = []
    for start in range(0, len(stream), chunk):
        frames.extend(parser.feed(stream[start : start + chunk]))
    return frames


def runtime_frame(data: dict[str, Any], seq: int) -> bytes:
    return f"event: runtime\ndata: {json.dumps(data)}\nid: {seq}\n\n".encode()


STARTED = {"batch_id": "b1", "index": 0, "timestamp": "2024-05-01T10:00:00.123456789", "kind": {"started": {}}}
OUTPUT = {"batch_id": "b1", "index": 0, "timestamp": "2024-05-01T10:00:01", "kind": {"stdout": "zażółć\n"}}
FINISHED = {
    "batch_id": "b1",
    "index": 0,
    "timestamp": "2024-05-01T10:00:02",
    "kind": {"finished": {"return_code": 3, "message": "exit 3"}},
}
DAEMON_STREAM = (
    runtime_frame(STARTED, 0) + b":ping\n" + runtime_frame(OUTPUT, 1) + b":ping\n" + runtime_frame(FINISHED, 2)
)


def test_a_whole_stream_gives_each_runtime_frame_and_skips_pings() -> None:
    frames = frames_of(DAEMON_STREAM)
    assert [f.event for f in frames] == ["runtime"] * 3
    assert [json.loads(f.data) for f in frames] == [STARTED, OUTPUT, FINISHED]
    assert [f.id for f in frames] == ["0", "1", "2"]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64])
def test_chunks_cut_anywhere_give_the_same_frames(chunk: int) -> None:
    # Cuts fall inside field names, inside "\n\n", and inside the two-byte UTF-8 characters of the output.
    assert frames_of(DAEMON_STREAM, chunk=chunk) == frames_of(DAEMON_STREAM)


def test_multi_line_data_is_joined_with_line_feeds() -> None:
    (frame,) = frames_of(b"data: first\ndata:second\ndata\ndata:  indented\n\n")
    assert frame.data == "first\nsecond\n\n indented"
    assert frame.event == "message"


@pytest.mark.parametrize("newline", [b"\r\n", b"\r", b"\n"])
def test_every_line_ending_is_understood(newline: bytes) -> None:
    stream = newline.join([b"event: runtime", b"data: {}", b"", b"data: 2", b"", b""])
    assert frames_of(stream, chunk=1) == [SseFrame("runtime", "{}"), SseFrame("message", "2")]


def test_comments_frames_without_data_and_unknown_fields_dispatch_nothing() -> None:
    stream = b": a comment\n\nevent: lonely\n\nretry: 100\nfoo: bar\n\n:ping\n"
    assert frames_of(stream) == []


def test_an_unfinished_frame_is_held_until_its_blank_line() -> None:
    parser = SseParser()
    assert parser.feed(b'event: runtime\ndata: {"a"') == []
    assert parser.feed(b": 1}\r") == []
    assert parser.feed(b"\n") == []  # the LF of the CRLF above, not a blank line
    assert parser.feed(b"\r\n") == [SseFrame("runtime", '{"a": 1}')]


def test_a_byte_order_mark_at_the_start_is_dropped() -> None:
    assert frames_of(b"\xef\xbb\xbfdata: x\n\n", chunk=1) == [SseFrame("message", "x")]


def test_the_last_id_stays_with_later_frames() -> None:
    frames = frames_of(b"id: 7\ndata: a\n\ndata: b\n\n")
    assert [f.id for f in frames] == ["7", "7"]


def test_runtime_events_read_the_daemons_snake_case_and_the_specs_camel_case() -> None:
    started = RuntimeEvent.from_json(STARTED)
    assert (started.batch_id, started.index, started.kind) == ("b1", 0, "started")
    assert started.timestamp == datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=timezone.utc)
    finished = RuntimeEvent.from_json(FINISHED)
    assert (finished.return_code, finished.message) == (3, "exit 3")
    camel = RuntimeEvent.from_json({"batchId": "b2", "index": 1, "timestamp": "x", "kind": {"stderr": [104, 105]}})
    assert (camel.batch_id, camel.kind, camel.payload, camel.timestamp) == ("b2", "stderr", "hi", None)
    with pytest.raises(ValueError, match="kind"):
        RuntimeEvent.from_json({"batch_id": "b", "index": 0, "kind": {"a": 1, "b": 2}})


class FakeStream:
    """A StreamOpener that answers with canned chunks and records what was asked."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.asked: list[tuple[Route, tuple[str, ...], str]] = []
        self.closed = False

    @contextlib.asynccontextmanager
    async def __call__(
        self, route: Route, *path_args: str, params: Mapping[str, str | None] | None = None, accept: str
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        self.asked.append((route, path_args, accept))

        async def body() -> AsyncGenerator[bytes, None]:
            for chunk in self.chunks:
                yield chunk

        chunks = body()
        try:
            yield chunks
        finally:
            await chunks.aclose()
            self.closed = True


async def refuse(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("no JSON request expected")


async def test_the_activity_api_streams_runtime_events_from_split_chunks() -> None:
    stream = b"event: other\ndata: {}\n\n" + DAEMON_STREAM
    opener = FakeStream([stream[i : i + 5] for i in range(0, len(stream), 5)])
    api = ActivityApi(refuse, opener)
    async with api.stream_exec_batch_results("act", "b1") as events:
        kinds = [(event.kind, event.payload) async for event in events]
    assert kinds == [("started", {}), ("stdout", "zażółć\n"), ("finished", {"return_code": 3, "message": "exit 3"})]
    assert opener.asked == [(routes.GET_EXEC_BATCH_RESULTS, ("act", "b1"), EVENT_STREAM)]
    assert opener.closed


async def test_a_runtime_frame_that_is_not_an_event_is_a_server_error() -> None:
    api = ActivityApi(refuse, FakeStream([b"event: runtime\ndata: [1, 2]\n\n"]))
    async with api.stream_exec_batch_results("act", "b1") as events:
        with pytest.raises(ServerError, match="unexpected event"):
            await events.__anext__()


async def test_an_activity_api_without_a_stream_opener_says_so() -> None:
    with pytest.raises(ConfigurationError, match="stream opener"):
        async with ActivityApi(refuse).stream_exec_batch_results("act", "b1"):
            pass
