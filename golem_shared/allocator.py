"""The C allocator's thresholds for a process that moves data in buffers of a mebibyte: :func:`keep_freed_memory`.

Transfers and streamed output pass every mebibyte through a few buffers of about that size (a chunk's frame, the
WebSocket library's masked copy of it, the transport's unsent remainder, a socket read). With glibc's defaults
each of them is fresh memory: a block that large is mapped for it and unmapped when freed, or taken from the top
of the heap which is handed back to the system as soon as more than twice the largest such block lies free there
(the trim threshold). Fresh memory costs a page fault per 4 KiB on first touch: measured on the 2-core machine,
an upload took about 900 page faults and 2.3 ms of kernel time per MB in the requestor (of 3.0 ms in all), none
and 0.5 ms with the thresholds below.

:func:`keep_freed_memory` raises both thresholds (``mallopt``), process-wide, once: blocks up to
:data:`MMAP_THRESHOLD` come from the heap, and up to :data:`TRIM_THRESHOLD` of freed heap is kept for the next
blocks instead of being handed back. The cost is that memory: a process keeps up to that much more resident
after a burst of large buffers (its peak is what it was). Larger blocks (``download_bytes`` of a big file) are
still mapped and unmapped as before. Elsewhere than on glibc, or with ``GOLEM_MALLOC_DEFAULTS=1`` in the
environment, it does nothing. The local node calls it when it starts, the requestor when its file storage is made
(``Golem`` makes it when it starts).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from typing import Any

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "grow", "keep_freed_memory"]

MMAP_THRESHOLD = 16 * 1024 * 1024
"""Blocks below this many bytes come from the heap (glibc's default starts at 128 KiB and follows the largest
block freed)."""

TRIM_THRESHOLD = 64 * 1024 * 1024
"""Freed memory at the top of the heap kept for later blocks, up to this many bytes."""

_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3

_lock = threading.Lock()
_done: bool | None = None


def keep_freed_memory() -> bool:
    """Raise the allocator's thresholds (once per process); True when they are raised (now or before)."""
    global _done
    with _lock:
        if _done is None:
            _done = _tune()
        return _done


def _tune() -> bool:
    if os.environ.get("GOLEM_MALLOC_DEFAULTS") == "1":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
        gnu = getattr(libc, "gnu_get_libc_version", None)
    except OSError:
        return False
    if mallopt is None or gnu is None:  # not glibc: its allocator has other knobs, or none
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def _resizer() -> Any:
    """CPython's ``PyByteArray_Resize``, or None elsewhere."""
    try:
        resize = ctypes.pythonapi.PyByteArray_Resize
    except (AttributeError, OSError):  # pragma: no cover - not CPython
        return None
    resize.argtypes = (ctypes.py_object, ctypes.c_ssize_t)
    resize.restype = ctypes.c_int
    return resize


_resize = _resizer()


def grow(buffer: bytearray, size: int) -> None:
    """Make ``buffer`` ``size`` bytes long (at least as long as it is) without writing the new bytes where CPython
    allows it (``PyByteArray_Resize``: what they hold is arbitrary), with zeros elsewhere: for a buffer filled in
    place right after (a file or a socket read into it), which writing zeros first would cost a pass over it."""
    if size < len(buffer):
        raise ValueError(f"grow makes a buffer longer: {size} < {len(buffer)} bytes")
    if _resize is None:  # pragma: no cover - not CPython
        buffer.extend(bytes(size - len(buffer)))
    elif _resize(buffer, size) != 0:  # pragma: no cover - ctypes raises the error CPython set
        raise MemoryError(f"a bytearray of {size} bytes")
