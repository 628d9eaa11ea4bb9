"""Timestamps as the daemon writes them: RFC 3339 in UTC.

The daemon writes up to nine fraction digits (``2024-05-01T10:00:00.123456789Z``); Python keeps six, so
parsing truncates to microseconds. Everything here is timezone-aware UTC.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

__all__ = ["format_timestamp", "parse_timestamp", "utc_now"]

_RFC3339 = re.compile(
    r"^(?P<base>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d+))?(?P<tz>Z|z|[+-]\d{2}:?\d{2})?$"
)


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


def format_timestamp(moment: datetime) -> str:
    """``2024-05-01T10:00:00.123456Z``: always microseconds, always ``Z``."""
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {moment!r} has no timezone; use a timezone-aware datetime")
    if moment.tzinfo is not timezone.utc:
        moment = moment.astimezone(timezone.utc)
    # isoformat, not strftime: the same text (four-digit year, six fraction digits) in a fraction of the time
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_timestamp(text: str) -> datetime:
    """Parse an RFC 3339 timestamp (any number of fraction digits, ``Z`` or an offset) into UTC."""
    if len(text) == 27 and text[-1] == "Z" and text[10] == "T" and text[19] == "." and text[20:26].isdigit():
        # What format_timestamp writes (the local node's every timestamp), read without the general pattern.
        try:
            parsed = datetime.fromisoformat(text[:-1])
        except ValueError:
            parsed = None  # not quite that shape after all: the general way says what is wrong
        if parsed is not None and parsed.tzinfo is None:
            return parsed.replace(tzinfo=timezone.utc)
    match = _RFC3339.match(text.strip())
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    frac = (match["frac"] or "")[:6].ljust(6, "0")
    tz = match["tz"] or "Z"
    if tz in ("Z", "z"):
        tz = "+00:00"
    elif ":" not in tz:
        tz = f"{tz[:3]}:{tz[3:]}"
    try:
        parsed = datetime.fromisoformat(f"{match['base'].replace(' ', 'T')}.{frac}{tz}")
        return parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError) as exc:  # a day that does not exist, or a moment outside years 1-9999 in UTC
        raise ValueError(f"not a valid moment: {text!r} ({exc})") from None
