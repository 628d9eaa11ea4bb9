"""The node's reading of a sandbox agent's events (golem_local.runtime.agent_channel), fed as a pipe would."""

from __future__ import annotations

import asyncio
import json

from golem_local.runtime.agent_channel import HIGH_WATER, AgentChannel, BadEvent


class FakePipe(asyncio.ReadTransport):
    """Records what the channel asks of its pipe."""

    def __init__(self) -> None:
        super().__init__()
        self.paused = False
        self.closed = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True


def out(command_id: int, data: bytes) -> bytes:
    line = json.dumps({"ev": "out", "id": command_id, "fd": 1, "size": len(data)}) + "\n"
    return line.encode() + data


def exit_event(command_id: int, code: int) -> bytes:
    return b'{"ev":"exit","id":%d,"code":%d}\n' % (command_id, code)


def channel(*, line_limit: int = 1 << 20, output_limit: int = 1 << 20) -> tuple[AgentChannel, FakePipe]:
    pipe = FakePipe()
    made = AgentChannel(line_limit=line_limit, output_limit=output_limit)
    made.connection_made(pipe)
    return made, pipe


async def drain(made: AgentChannel) -> list[object]:
    items: list[object] = []
    while (item := await made.next_event()) is not None:
        items.append(item)
    return items


async def test_events_come_whole_and_in_order_however_the_pipe_cuts_them() -> None:
    stream = out(1, b"x" * 1000) + b'{"ev":"ready"}\n' + out(1, b"yz") + exit_event(1, 0)
    for piece_size in (1, 7, 100, len(stream)):
        made, _ = channel()
        for at in range(0, len(stream), piece_size):
            made.data_received(stream[at : at + piece_size])
        made.connection_lost(None)
        assert await drain(made) == [
            ({"ev": "out", "id": 1, "fd": 1, "size": 1000}, b"x" * 1000),
            ({"ev": "ready"}, b""),
            ({"ev": "out", "id": 1, "fd": 1, "size": 2}, b"yz"),
            ({"ev": "exit", "id": 1, "code": 0}, b""),
        ]


async def test_a_reader_waiting_gets_the_event_when_it_arrives_and_none_at_the_end() -> None:
    made, _ = channel()
    waiting = asyncio.ensure_future(made.next_event())
    await asyncio.sleep(0)
    assert not waiting.done()
    made.data_received(exit_event(3, 1))
    assert await waiting == ({"ev": "exit", "id": 3, "code": 1}, b"")
    ending = asyncio.ensure_future(made.next_event())
    await asyncio.sleep(0)
    made.data_received(out(3, b"abc")[:-1])  # cut short by the end: dropped
    made.connection_lost(None)
    assert await ending is None


async def test_bad_lines_are_reported_and_reading_goes_on() -> None:
    made, _ = channel(line_limit=50, output_limit=10)
    made.data_received(b"not json\n")
    made.data_received(b'{"ev":"out","id":1,"fd":1,"size":11}\n')
    made.data_received(b'{"ev":"out","id":1,"fd":1,"size":true}\n')
    made.data_received(b'{"ev":"log","text":"' + b"a" * 60)
    made.data_received(b"a" * 60 + b'"}\n')
    made.data_received(exit_event(1, 0))
    made.connection_lost(None)
    items = await drain(made)
    assert [type(item) for item in items[:4]] == [BadEvent] * 4
    assert "11 bytes" in str(items[1])
    assert "exceeded 50 bytes" in str(items[3])
    assert items[4:] == [({"ev": "exit", "id": 1, "code": 0}, b"")]


async def test_the_pipe_is_not_read_while_the_reader_lags_behind() -> None:
    made, pipe = channel()
    piece = out(1, b"x" * (1 << 20))
    made.data_received(piece)
    made.data_received(piece)
    assert not pipe.paused
    made.data_received(piece)
    assert pipe.paused  # 3 MiB waiting for the reader
    await made.next_event()
    assert pipe.paused
    await made.next_event()
    assert not pipe.paused  # 1 MiB left: read on
    assert HIGH_WATER == 2 << 20
    made.close()
    assert pipe.closed
    assert await drain(made) == [({"ev": "out", "id": 1, "fd": 1, "size": 1 << 20}, b"x" * (1 << 20))]


async def test_pieces_of_one_stream_that_wait_together_reach_the_reader_as_one() -> None:
    """The agent sends what a command's pipe held at each read (often 16 KiB); the ones that wait for the reader
    at once are joined, up to an event's limit, and never across another event or stream."""
    made, _ = channel(output_limit=10)
    stream = out(1, b"ab") + out(1, b"cd") + out(1, b"efgh") + out(1, b"ijklm")  # 2 + 2 + 4 = 8; + 5 > 10
    stream += out(2, b"n") + b'{"ev":"ready"}\n' + out(2, b"o")
    stream += json.dumps({"ev": "out", "id": 2, "fd": 2, "size": 1}).encode() + b"\n" + b"p"
    made.data_received(stream)
    made.connection_lost(None)
    assert await drain(made) == [
        ({"ev": "out", "id": 1, "fd": 1, "size": 8}, b"abcdefgh"),
        ({"ev": "out", "id": 1, "fd": 1, "size": 5}, b"ijklm"),
        ({"ev": "out", "id": 2, "fd": 1, "size": 1}, b"n"),
        ({"ev": "ready"}, b""),
        ({"ev": "out", "id": 2, "fd": 1, "size": 1}, b"o"),
        ({"ev": "out", "id": 2, "fd": 2, "size": 1}, b"p"),
    ]


async def test_a_piece_taken_by_the_reader_is_not_joined_to_afterwards() -> None:
    made, _ = channel()
    made.data_received(out(1, b"first"))
    assert await made.next_event() == ({"ev": "out", "id": 1, "fd": 1, "size": 5}, b"first")
    made.data_received(out(1, b"second") + out(1, b"third"))
    assert await made.next_event() == ({"ev": "out", "id": 1, "fd": 1, "size": 11}, b"secondthird")
