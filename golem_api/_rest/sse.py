"""Server-sent events (``text/event-stream``), read incrementally: :class:`SseParser`.

The daemon streams a batch's runtime events as ``event: runtime``, ``data: <json>``, ``id: <n>`` lines ended by
a blank line, and sends ``:ping`` comment lines every 15 s. Network chunks cut lines, frames and even UTF-8
characters anywhere, so the parser keeps what it has not understood yet and hands out whole frames only.
It follows the W3C EventSource rules that matter to a client: lines end with LF, CRLF or CR; ``field: value``
loses one space after the colon; a line without a colon is a field with an empty value; a line starting with
``:`` is a comment; several ``data`` lines are joined with LF; a frame without data is not dispatched;
unknown fields (``retry`` included) are ignored. A long line (a mebibyte of output in one event) comes in many
chunks: the chunks without a line end are only set aside, and joined once the one that ends the line comes,
so that a line costs its length, not its length times its number of chunks.
"""

from __future__ import annotations

import codecs

from attrs import frozen

__all__ = ["SseFrame", "SseParser"]


@frozen
class SseFrame:
    """One dispatched event: its ``event`` name (``"message"`` when none was sent), ``data`` and last ``id``."""

    event: str
    data: str
    id: str | None = None


class SseParser:
    """Feed it the bytes of a stream as they come; :meth:`feed` returns the frames completed by them."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._pos = 0  # where the unread part of _buffer starts (0 whenever feed returns)
        self._parts: list[str] = []  # text after _buffer in which no line ends (joined when one does)
        self._after_cr = False
        self._started = False
        self._event = ""
        self._data: list[str] = []
        self._last_id: str | None = None

    def feed(self, chunk: bytes) -> list[SseFrame]:
        """Take the next ``chunk`` of the stream; return every frame it completes, in order."""
        text = self._decoder.decode(chunk)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        if "\n" not in text and "\r" not in text:
            if text:
                self._parts.append(text)
            return []
        if self._parts:
            text = "".join([self._buffer, *self._parts, text])
            self._buffer, self._parts = "", []
        self._buffer += text
        frames: list[SseFrame] = []
        while True:
            line = self._next_line()
            if line is None:
                return frames
            frame = self._line(line)
            if frame is not None:
                frames.append(frame)

    def _next_line(self) -> str | None:
        """The next whole line of the buffer, read from :attr:`_pos` on (the buffer is cut down to what is left
        only when no whole line is: slicing it after every line copied a long line's rest several times)."""
        buffer, pos = self._buffer, self._pos
        if pos >= len(buffer):
            self._buffer, self._pos = "", 0
            return None
        if self._after_cr and buffer.startswith("\n", pos):  # the LF of a CRLF cut between two chunks
            pos += 1
        self._after_cr = False
        lf = buffer.find("\n", pos)
        cr = buffer.find("\r", pos, lf if lf >= 0 else len(buffer))  # only a CR before the LF matters
        if lf < 0 and cr < 0:
            self._buffer, self._pos = buffer[pos:] if pos else buffer, 0
            return None
        if cr >= 0:
            end = cr
            if buffer.startswith("\n", cr + 1):
                skip = 2
            else:  # a CR, maybe followed by an LF that has not come yet
                skip, self._after_cr = 1, cr == len(buffer) - 1
        else:
            end, skip = lf, 1
        self._pos = end + skip
        return buffer[pos:end]

    def _line(self, line: str) -> SseFrame | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        colon = line.find(":")
        if colon < 0:
            name, value = line, ""
        else:  # one slice of a long value, not two (it may be a mebibyte of output)
            name = line[:colon]
            value = line[colon + 2 :] if line.startswith(" ", colon + 1) else line[colon + 1 :]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._last_id = value
        return None

    def _dispatch(self) -> SseFrame | None:
        event, data = self._event, self._data
        self._event, self._data = "", []
        if not data:
            return None
        joined = data[0] if len(data) == 1 else "\n".join(data)
        return SseFrame(event=event or "message", data=joined, id=self._last_id)
