"""A FlexBuffers reader for GSB frames: the same values as ``flexbuffers.Loads``, found by position.

The ``flatbuffers`` package's reader looks every map key up by slicing the buffer from the key to its end, so
each key read copies whatever follows it: a frame carrying a 1 MiB chunk was copied a dozen times to read its
five keys. This reader walks the buffer by offsets and copies each string and blob once, into the value it
returns. It gives what ``flexbuffers.Loads`` gives (maps as dicts, vectors as lists, blobs as ``bytes``,
strings and keys as ``str``), and raises ``ValueError`` on a buffer that is not FlexBuffers. With ``views``,
the blobs of a ``bytes`` buffer (immutable) are read-only views of it instead of copies.

The layout (the FlexBuffers specification): the last byte is the root's byte width, the one before it the root's
packed type (``type << 2 | log2 width``), the root before them. Scalars are stored in their parent's slot;
every other value's slot holds its distance back to the value. A string or blob, and a vector, has its length
just before it; a vector's element types follow its elements; a map is a vector of values with, before its
length, the offset and byte width of its sorted keys' vector.
"""

from __future__ import annotations

import struct
from typing import Any

__all__ = ["loads"]

_NULL, _INT, _UINT, _FLOAT, _KEY, _STRING = 0, 1, 2, 3, 4, 5
_INDIRECT_INT, _INDIRECT_UINT, _INDIRECT_FLOAT = 6, 7, 8
_MAP, _VECTOR = 9, 10
_VECTOR_INT, _VECTOR_UINT, _VECTOR_FLOAT, _VECTOR_KEY, _VECTOR_STRING = 11, 12, 13, 14, 15
_BLOB, _BOOL, _VECTOR_BOOL = 25, 26, 36
_TYPED = {_VECTOR_INT: _INT, _VECTOR_UINT: _UINT, _VECTOR_FLOAT: _FLOAT, _VECTOR_KEY: _KEY}
_TYPED[_VECTOR_STRING] = _STRING
_TYPED[_VECTOR_BOOL] = _BOOL
_FIXED = {16: (_INT, 2), 17: (_UINT, 2), 18: (_FLOAT, 2), 19: (_INT, 3), 20: (_UINT, 3), 21: (_FLOAT, 3)}
_FIXED.update({22: (_INT, 4), 23: (_UINT, 4), 24: (_FLOAT, 4)})
_FLOATS = {4: struct.Struct("<f"), 8: struct.Struct("<d")}


class _Reader:
    def __init__(self, buf: bytes | bytearray | memoryview, views: bool = False, frozen: bool = False) -> None:
        self.raw = buf if isinstance(buf, (bytes, bytearray)) else bytes(buf)  # for find()
        self.buf = memoryview(self.raw).toreadonly()
        # a view of a buffer that may change would change: views of bytes, or of a bytearray nothing changes
        self.views = views and (isinstance(self.raw, bytes) or frozen)

    def uint(self, at: int, width: int) -> int:
        if at < 0 or at + width > len(self.buf):
            raise ValueError(f"a FlexBuffers offset {at} (+{width}) is outside the {len(self.buf)}-byte buffer")
        return int.from_bytes(self.buf[at : at + width], "little")

    def sint(self, at: int, width: int) -> int:
        if at < 0 or at + width > len(self.buf):
            raise ValueError(f"a FlexBuffers offset {at} (+{width}) is outside the {len(self.buf)}-byte buffer")
        return int.from_bytes(self.buf[at : at + width], "little", signed=True)

    def real(self, at: int, width: int) -> float:
        if width not in _FLOATS or at < 0 or at + width > len(self.buf):
            raise ValueError(f"a FlexBuffers float of {width} bytes at {at} does not fit the buffer")
        value: float = _FLOATS[width].unpack_from(self.buf, at)[0]
        return value

    def target(self, at: int, width: int) -> int:
        """The position a slot of ``width`` bytes at ``at`` points back to (itself for an empty blob: a
        vector pointing to itself recurses until ``RecursionError``, which callers treat as malformed)."""
        return at - self.uint(at, width)

    def key(self, at: int) -> str:
        end = self.raw.find(b"\0", at) if 0 <= at < len(self.raw) else -1
        if end < 0:
            raise ValueError(f"a FlexBuffers key at {at} is outside the buffer or has no terminating zero")
        return bytes(self.buf[at:end]).decode()

    def sized(self, at: int, width: int) -> memoryview:
        size = self.uint(at - width, width)
        if at + size > len(self.buf):
            raise ValueError(f"a FlexBuffers string or blob of {size} bytes at {at} runs past the buffer")
        return self.buf[at : at + size]

    def value(self, at: int, parent_width: int, packed: int) -> Any:
        """The value whose slot (``parent_width`` bytes) is at ``at``, of packed type ``packed``."""
        kind, width = packed >> 2, 1 << (packed & 3)
        if kind == _NULL:
            return None
        if kind == _INT:
            return self.sint(at, parent_width)
        if kind == _UINT:
            return self.uint(at, parent_width)
        if kind == _FLOAT:
            return self.real(at, parent_width)
        if kind == _BOOL:
            return bool(self.uint(at, parent_width))
        return self.indirect(self.target(at, parent_width), width, kind)

    def indirect(self, at: int, width: int, kind: int) -> Any:
        """The value of ``kind`` at ``at`` (not a slot: where a slot points), its own width ``width``."""
        if kind in (_INDIRECT_INT, _INT):
            return self.sint(at, width)
        if kind in (_INDIRECT_UINT, _UINT):
            return self.uint(at, width)
        if kind in (_INDIRECT_FLOAT, _FLOAT):
            return self.real(at, width)
        if kind == _BOOL:
            return bool(self.uint(at, width))
        if kind == _KEY:
            return self.key(at)
        if kind == _STRING:
            return bytes(self.sized(at, width)).decode()
        if kind == _BLOB:
            blob = self.sized(at, width)
            return blob if self.views else bytes(blob)
        if kind == _VECTOR:
            size = self.uint(at - width, width)
            types = at + size * width
            return [self.value(at + i * width, width, self.uint(types + i, 1)) for i in range(size)]
        if kind == _MAP:
            size = self.uint(at - width, width)
            types = at + size * width
            keys_at = self.target(at - 3 * width, width)
            keys_width = self.uint(at - 2 * width, width)
            if keys_width not in (1, 2, 4, 8):
                raise ValueError(f"a FlexBuffers map at {at} has keys of byte width {keys_width}")
            if self.uint(keys_at - keys_width, keys_width) != size:
                raise ValueError(f"a FlexBuffers map at {at} has {size} values but a different number of keys")
            return {
                self.key(self.target(keys_at + i * keys_width, keys_width)): self.value(
                    at + i * width, width, self.uint(types + i, 1)
                )
                for i in range(size)
            }
        if kind in _TYPED:
            return self._elements(at, width, _TYPED[kind], self.uint(at - width, width))
        if kind in _FIXED:
            element, size = _FIXED[kind]
            return self._elements(at, width, element, size)
        raise ValueError(f"FlexBuffers type {kind} at {at} is not one this reader knows")

    def _elements(self, at: int, width: int, kind: int, size: int) -> list[Any]:
        if kind in (_KEY, _STRING):
            return [self.indirect(self.target(at + i * width, width), width, kind) for i in range(size)]
        return [self.indirect(at + i * width, width, kind) for i in range(size)]


def loads(buf: bytes | bytearray | memoryview, *, views: bool = False, frozen: bool = False) -> Any:
    """The value in the FlexBuffers buffer ``buf``; ``ValueError`` when it is not one. ``views``: blobs of a
    ``bytes`` buffer (or, ``frozen``, of a ``bytearray`` the caller never changes again) as read-only
    ``memoryview`` slices of it (no copy)."""
    if len(buf) < 3:
        raise ValueError(f"a FlexBuffers buffer has at least 3 bytes, this one {len(buf)}")
    reader = _Reader(buf, views, frozen)
    width = reader.buf[-1]
    if width not in (1, 2, 4, 8) or width + 2 > len(buf):
        raise ValueError(f"a FlexBuffers root of byte width {width} does not fit a {len(buf)}-byte buffer")
    return reader.value(len(buf) - 2 - width, width, reader.buf[-2])
