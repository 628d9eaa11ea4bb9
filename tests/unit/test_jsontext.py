"""Fast JSON strings of output: exactly what the ``json`` module makes and reads, for any text."""

from __future__ import annotations

import json
import random

import pytest

from golem_shared.jsontext import dumps_str, escape_str, loads_str

_ALPHABET = 'ab \n\r\t\b\f"\\/u0\x00\x01\x1f\x7fé€😀'


def _texts() -> list[str]:
    generator = random.Random(7)
    texts = ["", "x" * 1000, "line\n" * 50, 'C:\\users\\"q"', "\\u0041", "tab\tand\\n literal", "😀 and é"]
    for _ in range(3000):
        texts.append("".join(generator.choice(_ALPHABET) for _ in range(generator.randint(0, 12))))
    return texts


def test_dumps_str_writes_what_json_dumps_writes() -> None:
    for text in _texts():
        assert dumps_str(text) == json.dumps(text), repr(text)
        assert escape_str(text) == json.dumps(text)[1:-1], repr(text)


def test_loads_str_reads_what_json_loads_reads_from_json_and_from_hand_written_escapes() -> None:
    for text in _texts():
        assert loads_str(json.dumps(text)[1:-1]) == text, repr(text)
        assert loads_str(json.dumps(text, ensure_ascii=False)[1:-1]) == text, repr(text)
    assert loads_str("a\\/b") == "a/b"
    assert loads_str("\\ud83d\\ude00") == "😀"


@pytest.mark.parametrize("body", ['a"b', 'a\\\\"b', "a\\qb", "a\\", "\\x41"])
def test_loads_str_refuses_what_is_not_the_body_of_a_json_string(body: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the json module's own errors are ValueErrors too
        loads_str(body)


def test_an_output_event_is_framed_and_read_back_as_json_would() -> None:
    from golem_api._rest.activity import _event_json
    from golem_local.activity_api import _sse_frame

    for text in _texts()[:300]:
        for stream in ("stdout", "stderr"):
            event = {"batch_id": "b1", "index": 3, "timestamp": "2026-12-01T10:00:00.123456", "kind": {stream: text}}
            data = json.dumps(event, separators=(",", ":"))
            assert _sse_frame(event, 9) == f"event: runtime\ndata: {data}\nid: 9\n\n".encode()
            assert _event_json(data) == event
            assert _event_json(json.dumps(event, separators=(",", ":"), ensure_ascii=False)) == event
    for other in ({"index": 1, "kind": {"finished": {"return_code": 0}}}, {"kind": {"stdout": [1, 2]}}):
        data = json.dumps(other, separators=(",", ":"))
        assert _sse_frame(other, 1) == f"event: runtime\ndata: {data}\nid: 1\n\n".encode()
        assert _event_json(data) == other
    assert _event_json('{"index":1,"kind":{"stdout":"a"},"x":{"y":"z"}}') == {
        "index": 1,
        "kind": {"stdout": "a"},
        "x": {"y": "z"},
    }
