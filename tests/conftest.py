"""Markers for the whole suite.

``slow``: outside clients (yapapi, ya-aioclient, the real daemon), real processes and images, the notebook,
the docs build, benchmarks' smoke runs, installs at the lowest allowed versions. ``./scripts/test -m "not slow"``
runs the rest in under a minute. A module opts in with ``pytestmark = pytest.mark.slow``; the modules listed
here are slow as a whole.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from golem_local.images.bases import CACHE_ENV, cache_dir

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
    # real processes attacked, killed or hung, and real root file systems: seconds each
    "test_sandbox_attacks.py",
    "test_rootfs_runtime.py",
    "test_stuck_work.py",
    "test_gone_requestor.py",
    "test_container_runtime.py",  # a real container engine: seconds per container
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if path.name in _SLOW_MODULES or _SLOW_FOLDERS & set(path.parts):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def _shared_build_cache() -> Iterator[Path]:
    """One build cache (Debian bases, RUN layers) for the whole session and its subprocesses, even those that get a
    ``GOLEM_API_HOME`` of their own: ``$GOLEM_API_CACHE`` if set, else the user's (``$GOLEM_API_HOME/cache``), so
    the bases are made once per machine, not once per test (the first build of a base takes 20-50 s)."""
    chosen = cache_dir()
    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(chosen)
    try:
        yield chosen
    finally:
        if before is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = before
