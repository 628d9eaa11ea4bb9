"""How a command's output that was too long to keep whole is written: its start, a note, its end.

The local node keeps at most a bounded part of each output of a command for its result (and the requestor at
most a bounded part of what it streams); what it leaves out is replaced by :func:`left_out_note`, so that a
reader sees that the text was cut, where, and how much is missing, and :func:`was_cut` can tell it from
code.
"""

from __future__ import annotations

__all__ = ["MARKER", "left_out_note", "was_cut"]

MARKER = "of output left out here"


def left_out_note(left_out: int, head: int, tail: int, unit: str = "bytes") -> str:
    """The note put between the kept start (``head`` units) and end (``tail`` units) of a cut output."""
    return (
        f"\n[... {left_out} {unit} {MARKER}: only the first {head} and the last {tail} {unit} of each output are kept; "
        "stream it (run(on_stdout=...)) or write it to a file (run(stdout_file=...)) to get all of it ...]\n"
    )


def was_cut(text: str | None) -> bool:
    """Whether ``text`` is an output with a :func:`left_out_note` in it."""
    return text is not None and f"{MARKER}: only the first" in text
