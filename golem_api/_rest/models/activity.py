"""Activity objects as the daemon sends them: state, usage, batch results, running commands, runtime events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from attrs import frozen

from golem_api._rest.models._fields import Fields
from golem_shared.timestamps import parse_timestamp

__all__ = [
    "RUNTIME_EVENT_KINDS",
    "ActivityState",
    "ActivityUsage",
    "ExeScriptCommandResult",
    "ExeScriptCommandState",
    "RuntimeEvent",
]


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


def _output_text(model: str, key: str, value: object) -> str | None:
    """Command output as text: a string as is; a byte list (``format: bin``) decoded as UTF-8."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b < 256 for b in value):
        return bytes(value).decode("utf-8", errors="replace")
    raise ValueError(f"{model}: field {key!r} should be a string or a list of bytes, got {value!r:.80}")


@frozen
class ExeScriptCommandResult:
    """The result of one command of a batch (``GET /activity/{id}/exec/{batchId}``).

    ``result`` is ``"Ok"`` or ``"Error"``; ``is_batch_finished`` is true on the last command the batch
    will run (the daemon also sets it on every item answered to a ``commandIndex`` query).
    """

    index: int
    event_date: datetime
    result: str
    stdout: str | None = None
    stderr: str | None = None
    message: str | None = None
    is_batch_finished: bool = False

    @property
    def success(self) -> bool:
        """True when the command succeeded (``result == "Ok"``)."""
        return self.result == "Ok"

    @classmethod
    def from_json(cls, data: Any) -> ExeScriptCommandResult:
        """Parse ``{index, eventDate, result, stdout?, stderr?, message?, isBatchFinished?}``."""
        f = Fields("ExeScriptCommandResult", data)
        result = f.text("result")
        if result not in ("Ok", "Error"):
            raise ValueError(f"ExeScriptCommandResult: field 'result' should be 'Ok' or 'Error', got {result!r}")
        return cls(
            index=f.integer("index"),
            event_date=f.time("eventDate"),
            result=result,
            stdout=_output_text("ExeScriptCommandResult", "stdout", f.raw.get("stdout")),
            stderr=_output_text("ExeScriptCommandResult", "stderr", f.raw.get("stderr")),
            message=f.opt_text("message"),
            is_batch_finished=f.flag("isBatchFinished", False),
        )


@frozen
class ExeScriptCommandState:
    """A command an activity is running now (``GET /activity/{id}/command``): its name and parameters."""

    command: str
    batch_id: str | None = None
    progress: str | None = None
    params: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> ExeScriptCommandState:
        """Parse ``{command, batchId, progress?, params?}``."""
        f = Fields("ExeScriptCommandState", data)
        return cls(
            command=f.text("command"),
            batch_id=f.opt_text("batchId"),
            progress=f.opt_text("progress"),
            params=f.texts("params"),
        )


RUNTIME_EVENT_KINDS = ("finished", "progress", "started", "stderr", "stdout")
"""The kinds of :class:`RuntimeEvent` the daemon sends; others are kept with their raw payload."""


@frozen
class RuntimeEvent:
    """One event of a batch's event stream (SSE ``event: runtime``).

    ``kind`` is ``"started"`` (payload ``{"command": {…}}``), ``"finished"`` (``{"return_code", "message"}``),
    ``"stdout"`` / ``"stderr"`` (the text written, bytes decoded as UTF-8), ``"progress"`` (an object) or any
    other name a newer node sends. The daemon writes the fields in snake_case and the spec in camelCase: both
    are read. ``timestamp`` is in UTC (the daemon sends it without a zone, meaning UTC). ``sequence`` is the
    frame's SSE ``id`` when it is a number (the local node numbers a batch's events from 0, so a jump means
    events the reader did not get), else ``None``.
    """

    batch_id: str
    index: int
    timestamp: datetime | None
    kind: str
    payload: Any = None
    sequence: int | None = None

    @property
    def return_code(self) -> int | None:
        """The exit code of a ``finished`` event (``None`` for other kinds)."""
        if self.kind != "finished" or not isinstance(self.payload, dict):
            return None
        code = self.payload.get("return_code", self.payload.get("returnCode"))
        return code if isinstance(code, int) and not isinstance(code, bool) else None

    @property
    def message(self) -> str | None:
        """The message of a ``finished`` event, if any."""
        if self.kind != "finished" or not isinstance(self.payload, dict):
            return None
        message = self.payload.get("message")
        return message if isinstance(message, str) else None

    @classmethod
    def from_json(cls, data: Any) -> RuntimeEvent:
        """Parse ``{batch_id|batchId, index, timestamp, kind: {name: payload}}``."""
        f = Fields("RuntimeEvent", data)
        batch_id = f.opt_text("batch_id") or f.text("batchId")
        stamp = f.raw.get("timestamp")
        try:
            timestamp = parse_timestamp(stamp) if isinstance(stamp, str) else None
        except ValueError:
            timestamp = None
        kind_field = f.raw.get("kind")
        if isinstance(kind_field, str):  # a unit variant
            name, payload = kind_field, None
        elif isinstance(kind_field, dict) and len(kind_field) == 1:
            ((name, payload),) = kind_field.items()
        else:
            raise ValueError(f"RuntimeEvent: field 'kind' should be {{name: payload}}, got {kind_field!r:.80}")
        if name in ("stdout", "stderr"):
            payload = _output_text("RuntimeEvent", f"kind.{name}", payload) or ""
        return cls(batch_id=batch_id, index=f.integer("index"), timestamp=timestamp, kind=name, payload=payload)
