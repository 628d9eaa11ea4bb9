"""Markers for the whole suite.

``slow``: outside clients (yapapi, ya-aioclient, the real daemon), real processes and images, the notebook,
the docs build, benchmarks' smoke runs, installs at the lowest allowed versions. ``./scripts/test -m "not slow"``
runs the rest in under a minute. A module opts in with ``pytestmark = pytest.mark.slow``; the modules listed
here are slow as a whole.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_SLOW_FOLDERS = {"fidelity"}
_SLOW_MODULES = {
    "test_notebook.py",
    "test_simple_service_example.py",
    "test_interrupt.py",
    "test_docs_build.py",
    "test_bench_smoke.py",
    "test_images.py",
    "test_packaging.py",
    "test_lowest_versions.py",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if path.name in _SLOW_MODULES or _SLOW_FOLDERS & set(path.parts):
            item.add_marker(pytest.mark.slow)
