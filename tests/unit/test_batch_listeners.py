"""A batch's event-stream readers (:class:`golem_local.batch.Listener`): bounded, and lossless while they keep up."""

from __future__ import annotations

import pytest

from golem_local.batch import LISTENER_BUFFER, Batch
from golem_local.exescript import parse_exescript

PIECES = [64 * 1024, 700 * 1024, 1 << 20]


def _batch() -> Batch:
    commands = parse_exescript('[{"run": {"entry_point": "/bin/true", "capture": {"stdout": {"stream": {}}}}}]')
    batch = Batch("activity", commands)
    batch.command_started(batch.commands[0])
    return batch


@pytest.mark.parametrize("piece", PIECES, ids=lambda size: f"{size // 1024} KiB pieces")
async def test_a_reader_that_keeps_up_misses_no_piece_whatever_their_size(piece: int) -> None:
    """As the exe-unit does: offer output until the batch says congested, let the reader take it, again."""
    batch = _batch()
    listener = batch.listen()
    taken = 0
    for _round in range(3):
        while not batch.congested():
            batch.command_output(0, "stdout", "x" * piece)
        assert listener.dropped == 0
        events = await listener.take(timeout=1)
        taken += sum(len(event["kind"].get("stdout", "")) for _sequence, event in events)
    assert taken >= 3 * LISTENER_BUFFER
    assert listener.dropped == 0


async def test_a_full_reader_that_was_left_behind_misses_pieces_and_holds_at_most_one_more() -> None:
    batch = _batch()
    listener = batch.listen()
    while not batch.congested():
        batch.command_output(0, "stdout", "x" * (1 << 20))
    await batch.wait_room(timeout=0)  # nobody made room: the full reader is left behind
    for _ in range(5):
        batch.command_output(0, "stdout", "x" * (1 << 20))
    assert listener.dropped == 5
    events = await listener.take(timeout=1)
    held = sum(len(event["kind"].get("stdout", "")) for _sequence, event in events)
    assert LISTENER_BUFFER <= held <= LISTENER_BUFFER + (1 << 20)


async def test_output_nobody_would_read_is_counted_but_not_kept() -> None:
    """With no stream reading, the batch keeps output for a late reader up to its limit; past it, a piece's event
    is not made, but its id is used, so the late reader sees the gap."""
    commands = parse_exescript('[{"run": {"entry_point": "/bin/true", "capture": {"stdout": {"stream": {}}}}}]')
    batch = Batch("activity", commands, output_limit=100)
    batch.command_started(batch.commands[0])
    assert batch.reads(0, 400)  # 400 bytes are at least 100 characters: they may fit
    assert not batch.reads(0, 408)
    batch.command_output(0, "stdout", "x" * 90)
    assert batch.reads(0, 40)
    assert not batch.reads(0, 48)
    batch.command_output(0, "stdout", "")  # a piece nobody reads
    batch.command_output(0, "stdout", "y" * 10)
    listener = batch.listen()
    assert batch.reads(0, 1 << 20)  # a reader now: everything is read
    events = await listener.take(timeout=1)
    assert [sequence for sequence, _event in events] == [0, 1, 3]
    assert events[-1][1]["kind"] == {"stdout": "y" * 10}
