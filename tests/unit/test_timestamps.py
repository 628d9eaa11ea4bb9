"""Timestamps as the daemon writes them (nanoseconds, Z or offsets) parse to UTC and format back."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from golem_shared.timestamps import format_timestamp, parse_timestamp


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00.123456789Z", datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=timezone.utc)),
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, 0, 0, tzinfo=timezone.utc)),
        ("2024-05-01T12:00:00.5+02:00", datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=timezone.utc)),
    ],
)
def test_daemon_timestamps_parse_to_utc(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected


def test_format_round_trips_microseconds() -> None:
    moment = datetime(2024, 5, 1, 10, 0, 0, 1, tzinfo=timezone.utc)
    assert format_timestamp(moment) == "2024-05-01T10:00:00.000001Z"
    assert parse_timestamp(format_timestamp(moment)) == moment


def test_garbage_and_naive_times_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="not an RFC 3339 timestamp: 'yesterday'"):
        parse_timestamp("yesterday")
    with pytest.raises(ValueError, match="no timezone"):
        format_timestamp(datetime(2024, 1, 1))
