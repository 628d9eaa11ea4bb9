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
