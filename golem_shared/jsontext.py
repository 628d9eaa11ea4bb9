"""JSON strings of command output, fast: :func:`dumps_str` and :func:`loads_str`.

A command's output travels in runtime events as a JSON string, a mebibyte at a time. The ``json`` module's C
encoder escapes it character by character (about 3.5 ms per MB on the 2-core machine) and its decoder takes the
slow path at every escape (about 6 ms per MB of text with a newline every 80 characters). Output is mostly ASCII
with few kinds of characters to escape, so these do the same with one ``str.replace`` per kind present: about
0.7 ms per MB for text with nothing to escape, 1.6 ms with newlines. The results are exactly the ``json``
module's (``ensure_ascii``); text beyond ASCII (encoding) and ``\\uXXXX`` escapes (decoding) go to it.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps_str", "escape_str", "loads_str"]

# what ``json.dumps`` writes for each character it escapes in ASCII text (the rest of 0x00-0x1f, and 0x7f: \u00XX)
_ESCAPES = {chr(code): f"\\u{code:04x}" for code in (*range(0x20), 0x7F)}
_ESCAPES.update({"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", '"': '\\"', "\\": "\\\\"})
_ESCAPED = tuple(char for char in _ESCAPES if char != "\\")
# the escapes ``loads_str`` undoes by replacement (the two-character ones ``dumps_str`` writes, and ``\/``)
_SIMPLE = {"\\b": "\b", "\\f": "\f", "\\n": "\n", "\\r": "\r", "\\t": "\t", "\\/": "/"}  # \\" last, apart


def dumps_str(text: str) -> str:
    """``json.dumps(text)``: the JSON string of ``text``, quotes included."""
    if not text.isascii():  # an O(1) check: str knows whether it is ASCII
        return json.dumps(text)
    return '"' + escape_str(text) + '"'


def escape_str(text: str) -> str:
    """The JSON string of ``text`` without its quotes (``json.dumps(text)[1:-1]``): for a caller that writes the
    quotes with what surrounds them, sparing a copy of the text (``text`` itself when nothing needs escaping)."""
    if not text.isascii():
        return json.dumps(text)[1:-1]
    if "\\" in text:
        text = text.replace("\\", "\\\\")  # first: the escapes added below bring backslashes of their own
    for char in _ESCAPED:
        if char in text:
            text = text.replace(char, _ESCAPES[char])
    return text


def loads_str(body: str) -> str:
    """``json.loads('"' + body + '"')``: the text of a JSON string's ``body`` (without its quotes) when it is
    valid; ``ValueError`` when it holds a bare quote or an escape JSON does not know. (Raw control characters,
    which JSON wants escaped, are let through.)"""
    if "\\" not in body:
        if '"' in body:
            raise ValueError(f"a bare quote in the body of a JSON string: {body[:80]!r}")
        return body
    if "\\u" in body:
        return _json_loads(body)
    # every backslash starts an escape: the \\ ones first (split on), then the others in what lies between
    parts = body.split("\\\\")
    for index, part in enumerate(parts):
        for escape, char in _SIMPLE.items():
            if escape in part:
                part = part.replace(escape, char)
        if part.count('"') != part.count('\\"'):
            raise ValueError(f"a bare quote in the body of a JSON string: {body[:80]!r}")
        part = part.replace('\\"', '"')
        if "\\" in part:
            return _json_loads(body)  # an escape unknown to JSON: let json say what
        parts[index] = part
    return "\\".join(parts)


def _json_loads(body: str) -> str:
    value: Any = json.loads('"' + body + '"')
    if not isinstance(value, str):  # pragma: no cover - a quoted body decodes to a string or fails
        raise ValueError("not a JSON string")
    return value
