"""How a ``run`` command keeps its output: ``script.run(cmd, *args, stdout=…, stderr=…)``.

Each of ``stdout`` and ``stderr`` takes a mode name or a :class:`CaptureContext` (yapapi's name and shape)::

    script.run("/bin/sh", "-c", "make", stdout="stream", stderr=CaptureContext.build("tail", limit=4096))

========================  ==================================================================================
``None`` / ``"stream"``   (the default) streamed as it is written, so ``on_stdout`` callbacks get it line by
                          line, and all of it kept for the result; ``limit`` caps what is kept
``"all"``                 kept whole and given with the result at the end; nothing streams
``"head"`` / ``"tail"``   the first / last ``limit`` bytes, at the end
``"headTail"``            the first and last ``limit // 2`` bytes or so, at the end
``"discard"``             dropped: the result has ``None`` for it (the daemon's ``run`` without a capture)
========================  ==================================================================================

``fmt`` is ``"str"`` (text, the default) or ``"bin"`` (bytes on the wire; the result still shows them as
text decoded as UTF-8). The modes are the ExeScript ``capture`` field of the daemon's ``run`` command
(``{"stream": {"limit"?, "format"?}}`` or ``{"atEnd": {"head"|"tail"|"headTail": n?, "format"?}}``).
Anything else raises :class:`~golem_api.errors.ConfigurationError` naming the value and the modes.
"""

from __future__ import annotations

from typing import Any, Literal

from attrs import frozen

from golem_api.errors import ConfigurationError

__all__ = ["CAPTURE_MODES", "CaptureContext", "capture_spec"]

Mode = Literal["head", "tail", "headTail", "stream"]
"""Where and how much output is kept (the ExeScript names; yapapi's ``CaptureMode`` values)."""
Format = Literal["str", "bin"]
"""Text or bytes on the wire (yapapi's ``CaptureFormat`` values)."""

CAPTURE_MODES = ("stream", "all", "head", "tail", "headTail", "discard")
"""The mode names :meth:`CaptureContext.build` and ``run(stdout=…)`` accept (``None`` means ``"stream"``)."""

_LIMITED: dict[str, Mode] = {"head": "head", "tail": "tail", "headTail": "headTail"}


def _limit(limit: object, mode: str) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise ConfigurationError(
            f"the capture limit of mode {mode!r} must be a positive number of bytes, got {limit!r}"
        )
    return limit


def _format(fmt: object) -> Format | None:
    if fmt is None:
        return None
    if fmt == "str":
        return "str"
    if fmt == "bin":
        return "bin"
    raise ConfigurationError(f"a capture format must be 'str' or 'bin', got {fmt!r}")


@frozen
class CaptureContext:
    """One output stream's capture: a ``mode`` (``"head"``, ``"tail"``, ``"headTail"`` or ``"stream"``), a byte
    ``limit`` and a format ``fmt`` (``"str"`` or ``"bin"``).

    Build it with :meth:`build` (as in yapapi); ``CaptureContext.build()`` (mode ``"all"``) keeps the whole
    output and gives it at the end.
    """

    mode: Mode
    limit: int | None = None
    fmt: Format | None = None

    @classmethod
    def build(cls, mode: str | None = None, limit: int | None = None, fmt: str | None = None) -> CaptureContext:
        """A capture for ``mode`` (one of :data:`CAPTURE_MODES` but ``"discard"``; ``None`` is ``"all"``)."""
        if mode in (None, "all"):
            if limit is not None:
                raise ConfigurationError(
                    f"capture mode 'all' keeps everything and takes no limit (got limit={limit!r}); "
                    "use 'head' or 'tail' to keep a part"
                )
            return cls("head", None, _format(fmt))
        if mode == "stream":
            return cls("stream", _limit(limit, mode), _format(fmt))
        if isinstance(mode, str) and mode in _LIMITED:
            if limit is None:
                raise ConfigurationError(f"capture mode {mode!r} needs limit= (how many bytes to keep)")
            return cls(_LIMITED[mode], _limit(limit, mode), _format(fmt))
        raise ConfigurationError(
            f"unknown capture mode {mode!r}: use one of 'stream', 'all', 'head', 'tail', 'headTail' "
            "(or 'discard' in run(stdout=…, stderr=…))"
        )

    def is_streaming(self) -> bool:
        """True for the ``stream`` mode: output comes as it is written."""
        return self.mode == "stream"

    def to_dict(self) -> dict[str, Any]:
        """The ExeScript ``capture`` value for one stream."""
        inner: dict[str, Any] = {}
        if self.mode == "stream":
            if self.limit is not None:
                inner["limit"] = self.limit
        elif self.limit is not None:
            inner[self.mode] = self.limit
        if self.fmt is not None:
            inner["format"] = self.fmt
        return {"stream" if self.mode == "stream" else "atEnd": inner}


DEFAULT_CAPTURE = CaptureContext("stream", None, "str")
"""What ``run`` uses when ``stdout`` / ``stderr`` is not given: streamed text, all of it kept."""


def capture_spec(value: object, stream: str) -> dict[str, Any] | None:
    """The ExeScript capture of one stream for ``run(stdout=value)``; ``None`` for ``"discard"`` (no capture)."""
    if value is None:
        return DEFAULT_CAPTURE.to_dict()
    if isinstance(value, CaptureContext):
        return value.to_dict()
    if value == "discard":
        return None
    if isinstance(value, str):
        if value == "stream":
            return DEFAULT_CAPTURE.to_dict()
        if value in _LIMITED:
            raise ConfigurationError(
                f"{stream}={value!r} needs a limit: write {stream}=CaptureContext.build({value!r}, limit=…)"
            )
        return CaptureContext.build(value).to_dict()
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict) and type(value).__name__ == "CaptureContext":
        raise ConfigurationError(
            f"{stream}={value!r} is another library's CaptureContext: build it with "
            "golem_api.CaptureContext.build(mode, limit, fmt) instead (same arguments)"
        )
    raise ConfigurationError(
        f"{stream} must be a capture mode ({', '.join(repr(m) for m in CAPTURE_MODES)}) or a "
        f"golem_api.CaptureContext, got {value!r}"
    )
