"""Activity objects as the daemon sends them: state and usage."""

from __future__ import annotations

from typing import Any

from attrs import frozen

from golem_api.rest.models._fields import Fields

__all__ = ["ActivityState", "ActivityUsage"]


@frozen
class ActivityState:
    """Where an activity is (``New``, ``Initialized``, ``Deployed``, ``Ready``, ``Terminated``, …)."""

    state: str
    next_state: str | None = None
    reason: str | None = None
    error_message: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> ActivityState:
        """Parse ``{"state": [current, next_or_null], "reason"?, "errorMessage"?}``."""
        f = Fields("ActivityState", data)
        pair = f.raw.get("state")
        if (
            not isinstance(pair, list)
            or not 1 <= len(pair) <= 2
            or not isinstance(pair[0], str)
            or not all(item is None or isinstance(item, str) for item in pair)
        ):
            raise ValueError(f"ActivityState: field 'state' should be [current, next or null], got {pair!r}")
        return cls(
            state=pair[0],
            next_state=pair[1] if len(pair) == 2 else None,
            reason=f.opt_text("reason"),
            error_message=f.opt_text("errorMessage"),
        )


@frozen
class ActivityUsage:
    """The usage counters of an activity (in the order of the offer's ``golem.usage.vector``)."""

    current_usage: tuple[float, ...] | None
    timestamp: int

    @classmethod
    def from_json(cls, data: Any) -> ActivityUsage:
        """Parse ``{"currentUsage": [floats]?, "timestamp": unix_seconds}``."""
        f = Fields("ActivityUsage", data)
        return cls(current_usage=f.opt_numbers("currentUsage"), timestamp=f.integer("timestamp"))
