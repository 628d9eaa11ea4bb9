"""The allocator's thresholds: raised once per process on glibc, left alone when asked to."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from golem_shared.allocator import keep_freed_memory

_PROBE = "from golem_shared.allocator import keep_freed_memory as k; print(k(), k())"


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_the_thresholds_are_raised_once_and_stay_raised() -> None:
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True
    said = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True).stdout
    assert said.split() == ["True", "True"]


def test_golem_malloc_defaults_leaves_the_allocator_as_it_is() -> None:
    env = {**os.environ, "GOLEM_MALLOC_DEFAULTS": "1"}
    said = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, env=env).stdout
    assert said.split() == ["False", "False"]


def test_a_buffer_grows_to_the_size_asked_keeping_what_it_held_and_never_shrinks() -> None:
    from golem_shared.allocator import grow

    buffer = bytearray(b"head")
    grow(buffer, 1 << 20)
    assert len(buffer) == 1 << 20
    assert buffer[:4] == b"head"
    buffer[4:] = bytes((1 << 20) - 4)  # filled in place afterwards, as a chunk's room is
    assert buffer.count(0) == (1 << 20) - 4
    with pytest.raises(ValueError, match="longer"):
        grow(buffer, 10)
    assert len(buffer) == 1 << 20
