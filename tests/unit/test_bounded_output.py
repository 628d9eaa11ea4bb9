"""The requestor keeps a bounded part of each streamed output (golem_api.activity._results)."""

from __future__ import annotations

from golem_api.activity._results import BoundedText, bounded
from golem_shared.output import was_cut


def test_bounded_text_keeps_the_start_and_the_end_and_says_what_it_left_out() -> None:
    kept = BoundedText(limit=32)
    for piece in ("a" * 10, "b" * 100, "c" * 30):
        kept.add(piece)
    value = kept.value()
    assert value.startswith(
        "aa\n[... 108 characters of output left out here"
    )  # 32 // 16 = 2 from the start, 30 from the end
    assert value.endswith("c" * 30)
    assert was_cut(value)
    short = BoundedText(limit=32)
    short.add("hello")
    assert short.value() == "hello"
    assert not was_cut(short.value())


def test_bounded_leaves_short_texts_alone() -> None:
    assert bounded(None) is None
    assert bounded("x" * 10, limit=10) == "x" * 10
    assert was_cut(bounded("x" * 11, limit=10))
