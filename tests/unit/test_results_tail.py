"""A results answer is decoded from the first result a poller lacks: the same results as decoding it all."""

from __future__ import annotations

import json
from typing import Any

from golem_api._rest.activity import _results_from


def _results(count: int, stdout: str = "") -> list[dict[str, Any]]:
    return [
        {"index": i, "eventDate": "2026-12-01T06:00:00Z", "result": "Ok", "stdout": stdout, "isBatchFinished": False}
        for i in range(count)
    ]


def test_a_compact_answer_is_decoded_from_the_result_asked_for() -> None:
    text = json.dumps(_results(12), separators=(",", ":"))
    assert _results_from(10)(text) == _results(12)[10:]
    assert _results_from(0)(text) == _results(12)


def test_output_that_looks_like_a_result_does_not_move_the_start() -> None:
    # Inside a JSON string every quote is escaped: the text {"index":3, of an output is not the marker.
    results = _results(5, stdout='{"index":3,"result":"Ok"}')
    text = json.dumps(results, separators=(",", ":"))
    assert _results_from(3)(text) == results[3:]


def test_an_answer_of_another_shape_is_decoded_whole() -> None:
    text = json.dumps(_results(4), indent=1)  # spaces after the colons: no compact marker
    assert _results_from(2)(text) == _results(4)
