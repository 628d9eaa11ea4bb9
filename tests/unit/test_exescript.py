"""ExeScript parsing and output capture of the local exe-unit (no node, no sandbox)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from golem_local.exescript import (
    Capture,
    CaptureMode,
    DeployCommand,
    ExeScriptError,
    OutputCapture,
    RunCommand,
    SignCommand,
    StartCommand,
    TerminateCommand,
    TransferCommand,
    parse_exescript,
)
from golem_local.runtime.base import DeployNetwork


def parse(*commands: Any) -> list[Any]:
    return parse_exescript(json.dumps(list(commands)))


def capture_of(mode: dict[str, Any]) -> CaptureMode:
    [command] = parse({"run": {"entry_point": "/bin/true", "capture": {"stdout": mode}}})
    assert isinstance(command, RunCommand)
    assert command.capture.stdout is not None
    return command.capture.stdout


def test_every_command_parses_with_the_daemons_field_names() -> None:
    commands = parse(
        {
            "deploy": {
                "net": [
                    {
                        "id": "n",
                        "ip": "10.0.0.0",
                        "mask": "255.255.0.0",
                        "nodeIp": "10.0.0.2",
                        "nodes": {"10.0.0.1": "r"},
                    }
                ],
                "hosts": {"master": "10.0.0.1"},
                "hostname": "box",
                "volumes": {"/golem/data": {"storage": {"size": "1g"}}},
                "env": {"A": "1"},
                "progress": {"updateInterval": "300ms"},
            }
        },
        {"start": {"args": ["-x"]}},
        {"run": {"entry_point": "/bin/sh", "args": ["-c", "true"], "env": {"B": "2"}}},
        {
            "transfer": {
                "from": "gftp://0xabc/f",
                "to": "container:/golem/in/f",
                "format": "zip",
                "depth": 2,
                "fileset": "*.o",
            }
        },
        {"sign": {}},
        {"terminate": {}},
    )
    deploy, start, run, transfer, sign, terminate = commands
    assert isinstance(deploy, DeployCommand)
    assert (deploy.env, deploy.hostname, deploy.volumes) == ({"A": "1"}, "box", ("/golem/data",))
    assert deploy.net == (
        DeployNetwork(network_id="n", ip="10.0.0.0", node_ip="10.0.0.2", mask="255.255.0.0", nodes={"10.0.0.1": "r"}),
    )
    assert deploy.hosts == {"master": "10.0.0.1"}
    assert isinstance(start, StartCommand)
    assert (start.args, start.state_name, start.params) == (("-x",), "Start", ["-x"])
    assert isinstance(run, RunCommand)
    assert (run.entry_point, run.args, run.env, run.capture) == ("/bin/sh", ("-c", "true"), {"B": "2"}, Capture())
    assert run.params == ["/bin/sh", "-c", "true"]
    assert isinstance(transfer, TransferCommand)
    assert (transfer.source, transfer.destination, transfer.format, transfer.depth) == (
        "gftp://0xabc/f",
        "container:/golem/in/f",
        "zip",
        2,
    )
    assert transfer.params == ["gftp://0xabc/f", "container:/golem/in/f"]
    assert isinstance(sign, SignCommand)
    assert isinstance(terminate, TerminateCommand)
    assert [c.index for c in commands] == list(range(6))
    assert deploy.params is None
    assert run.raw == {"run": {"entry_point": "/bin/sh", "args": ["-c", "true"], "env": {"B": "2"}}}


@pytest.mark.parametrize(
    ("text", "index", "expected"),
    [
        ("{", None, "not valid JSON"),
        ('{"deploy": {}}', None, "must be a JSON array"),
        ("[]", None, "no commands"),
        ('[{"deploy": {}}, "start"]', 1, "exactly one key"),
        ('[{"deploy": {}, "start": {}}]', 0, "exactly one key"),
        ('[{"deploy": {}}, {"exec": {}}]', 1, "unknown command 'exec'"),
        ('[{"run": []}]', 0, "body must be an object"),
        ('[{"run": {}}]', 0, "'entry_point' must be a non-empty string"),
        ('[{"run": {"entry_point": "x", "args": "-c"}}]', 0, "'args' must be a list of strings"),
        ('[{"run": {"entry_point": "x", "capture": {"stdout": "stream"}}}]', 0, "capture.stdout must be"),
        ('[{"run": {"entry_point": "x", "capture": {"stdin": {}}}}]', 0, "knows only 'stdout' and 'stderr'"),
        ('[{"run": {"entry_point": "x", "capture": {"stdout": {"atEnd": {"head": 1, "tail": 2}}}}}]', 0, "one of"),
        ('[{"run": {"entry_point": "x", "capture": {"stdout": {"stream": {"limit": -1}}}}}]', 0, "limit"),
        ('[{"run": {"entry_point": "x", "capture": {"stderr": {"atEnd": {"format": "hex"}}}}}]', 0, "'str' or 'bin'"),
        ('[{"transfer": {"to": "container:/x"}}]', 0, "'from' must be"),
        ('[{"transfer": {"from": "a", "to": "b", "depth": "deep"}}]', 0, "'depth'"),
        ('[{"deploy": {"env": {"A": 1}}}]', 0, "'env' must be an object of string values"),
        ('[{"deploy": {"volumes": 3}}]', 0, "'volumes'"),
        ('[{"deploy": {"net": {"id": "n"}}}]', 0, "'net' must be a list of networks"),
        ('[{"deploy": {"net": [{"id": "n", "ip": "10.0.0.0"}]}}]', 0, "net[0].nodeIp must be a non-empty string"),
        ('[{"deploy": {"net": [{"id": "n", "ip": "1.0.0.0", "nodeIp": "1.0.0.2", "nodes": [1]}]}}]', 0, "net[0].nodes"),
        ('[{"deploy": {"hosts": {"db": 5}}}]', 0, "'hosts' must be an object of string values"),
        ('[{"start": {"args": [1]}}]', 0, "'args'"),
    ],
)
def test_malformed_scripts_say_which_command_and_what_is_wrong(text: str, index: int | None, expected: str) -> None:
    with pytest.raises(ExeScriptError) as failure:
        parse_exescript(text)
    assert failure.value.index == index
    assert expected in str(failure.value)
    where = "the ExeScript" if index is None else f"command #{index}"
    assert str(failure.value).startswith(where)


def test_nul_and_depth_are_found_wherever_they_hide_and_only_there() -> None:
    # The text is walked only when it could hold them; these must still be refused…
    with pytest.raises(ExeScriptError, match="NUL"):
        parse({"run": {"entry_point": "/bin/echo", "args": ["a", "b\x00c"]}})
    with pytest.raises(ExeScriptError, match="NUL"):
        parse({"run": {"entry_point": "/bin/echo", "env": {"K\x00": "v"}}})
    deep: Any = []
    for _ in range(70):
        deep = [deep]
    with pytest.raises(ExeScriptError, match="levels deep"):
        parse({"run": {"entry_point": "/bin/echo", "args": [], "x": deep}})
    # … and what merely looks like them is not: an escaped backslash before "u0000", brackets inside strings.
    [command] = parse({"run": {"entry_point": "/bin/echo", "args": ["\\u0000", "[" * 100, "{" * 100]}})
    assert isinstance(command, RunCommand)
    assert command.args == ("\\u0000", "[" * 100, "{" * 100)


def test_text_must_be_a_string() -> None:
    with pytest.raises(ExeScriptError, match="'text' must be a string"):
        parse_exescript([{"deploy": {}}])


def test_capture_modes_follow_the_daemon() -> None:
    assert capture_of({"stream": {}}) == CaptureMode(stream=True, format="str", head=None, tail=0)
    assert capture_of({"stream": {"limit": 4, "format": "binary"}}) == CaptureMode(True, "bin", 4, 0)
    assert capture_of({"atEnd": {}}) == CaptureMode(stream=False, format="str", head=None, tail=0)
    assert capture_of({"atEnd": {"head": 3, "format": "string"}}) == CaptureMode(False, "str", 3, 0)
    assert capture_of({"atEnd": {"tail": 3}}) == CaptureMode(False, "str", 0, 3)
    assert capture_of({"atEnd": {"headTail": 5}}) == CaptureMode(False, "str", 3, 2)
    assert capture_of({"atEnd": {"part": None, "headTail": 4.0}}) == CaptureMode(False, "str", 2, 2)


def feed(mode: dict[str, Any] | None, *pieces: bytes) -> tuple[list[Any], Any]:
    capture = OutputCapture(None if mode is None else capture_of(mode))
    streamed = [capture.write(piece) for piece in pieces]
    return [s for s in streamed if s is not None], capture.result()


def test_output_is_kept_as_the_mode_says() -> None:
    assert feed(None, b"lost") == ([], None)
    assert feed({"atEnd": {}}, b"ab", b"cd") == ([], "abcd")
    assert feed({"atEnd": {}}) == ([], None)  # no output is null, not ""
    assert feed({"atEnd": {"head": 3}}, b"ab", b"cd") == ([], "abc")
    assert feed({"atEnd": {"tail": 3}}, b"ab", b"cd", b"e") == ([], "cde")
    assert feed({"atEnd": {"headTail": 4}}, b"0123", b"456789") == ([], "0189")
    assert feed({"atEnd": {"headTail": 10}}, b"abc") == ([], "abc")  # a short output is not repeated
    assert feed({"atEnd": {"format": "bin"}}, b"\x00\xff") == ([], [0, 255])
    assert feed({"atEnd": {}}, b"caf\xe9") == ([], "café")  # not UTF-8: read as Latin-1


def test_streamed_output_is_sent_and_kept_up_to_the_limit() -> None:
    assert feed({"stream": {}}, b"a\n", b"b\n") == (["a\n", "b\n"], "a\nb\n")
    assert feed({"stream": {"limit": 3}}, b"ab", b"cd", b"ef") == (["ab", "c"], "abc")
    assert feed({"stream": {"format": "bin"}}, b"\x01", b"\x02") == ([[1], [2]], [1, 2])
    # a character split across two pieces arrives whole in the second event
    assert feed({"stream": {}}, "é".encode()[:1], "é".encode()[1:]) == (["é"], "é")


def test_a_piece_nobody_reads_is_not_decoded_and_the_next_one_starts_where_it_should() -> None:
    capture = OutputCapture(capture_of({"stream": {}}))
    text = "naïve café — 日本語 🙂 done"
    data = text.encode()
    for cut in range(1, len(data)):  # a first piece nobody reads, cut anywhere (within a character too)
        capture = OutputCapture(capture_of({"stream": {}}))
        assert capture.write(data[:cut], read=lambda size: False) == ""
        second = capture.write(data[cut:], read=lambda size: True)
        whole = OutputCapture(capture_of({"stream": {}}))
        first = whole.write(data[:cut]) or ""
        assert second == text[len(first) :]  # what decoding every piece would have sent for the second
        assert capture.result() == text  # the result keeps all of it either way
    binary = OutputCapture(capture_of({"stream": {"format": "bin"}}))
    assert binary.write(b"\x01\x02", read=lambda size: size < 2) == ""
    assert binary.write(b"\x03", read=lambda size: size < 2) == [3]


@given(st.lists(st.binary(max_size=40), max_size=8), st.integers(min_value=0, max_value=60))
def test_head_tail_keeps_the_ends_of_the_output(pieces: list[bytes], size: int) -> None:
    _, kept = feed({"atEnd": {"headTail": size, "format": "bin"}}, *pieces)
    output = b"".join(pieces)
    head = (size + 1) // 2
    expected = output if len(output) <= size else output[:head] + output[len(output) - (size - head) :]
    assert (bytes(kept) if kept is not None else b"") == expected


def test_the_node_keeps_a_bounded_head_and_tail_with_a_note() -> None:
    capture = OutputCapture(capture_of({"atEnd": {}}), limit=32)
    for piece in (b"a" * 10, b"b" * 100, b"c" * 30):
        capture.write(piece)
    kept = capture.result()
    assert isinstance(kept, str)
    assert kept.startswith("aa\n[... 108 bytes of output left out here")
    assert kept.endswith("]\n" + "b" * 0 + "c" * 30)
    assert capture.total == 140
    # what the mode asks for itself, within the limit, is kept as the daemon keeps it, without a note
    assert feed({"atEnd": {"tail": 3}}, b"x" * 100, b"end") == ([], "end")
    streamed = OutputCapture(capture_of({"stream": {}}), limit=8)
    assert [streamed.write(b"0123456789") for _ in range(3)] == ["0123456789"] * 3  # every piece still streams
    assert "bytes of output left out here" in str(streamed.result())


@pytest.mark.slow  # 1.8 s of random writes checked against a reference
def test_an_output_ring_keeps_the_last_bytes_of_any_writes_holding_little_more_than_that() -> None:
    import random

    from golem_local.exescript import _Ring

    ring = _Ring(1 << 20)
    assert ring.value() == b""
    assert len(ring) == 0
    ring.write(b"abc")
    assert ring.value() == b"abc"
    generator = random.Random(3)
    for size in (1 << 20, 1000, 7):
        ring, written = _Ring(size), bytearray()
        for _ in range(400):
            piece = generator.randbytes(generator.choice([1, 10, 5000, 70_000, (1 << 20) + 5]))
            ring.write(piece)
            written += piece
            assert len(ring) == min(len(written), size)
            assert ring._held <= 2 * size + 70_000  # what it holds beyond what it keeps: at most one piece
        assert ring.value() == bytes(written[-size:])
    big = bytes(1 << 20)
    ring = _Ring(1 << 20)
    ring.write(big)
    assert ring._pieces[0] is big  # a piece of the ring's size is kept, not copied
    ring = _Ring(1000)
    ring.write(bytes(range(200)) * 6)
    kept = ring._pieces[0]
    assert isinstance(kept, memoryview)  # a piece up to twice the ring's size: its end as a view, not a copy
    assert ring.value() == (bytes(range(200)) * 6)[-1000:]
    assert _Ring(0).value() == b""
