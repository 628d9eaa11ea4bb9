"""Fixtures for talking to a real local node over loopback.

Every answer a local node gives in these tests is validated against the official specs
(``tests/spec_validator.py``): the autouse fixture :func:`_answers_follow_the_specs` adds a tracing hook to every
aiohttp session made during the test (the ``http`` fixture's and golem-api's own ``RestClient``'s alike) and
fails the test at teardown with each answer that broke the spec, naming the operation and what broke.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from golem_local.node import LocalNode
from tests.spec_validator import spec_trace_config


@pytest.fixture(autouse=True)
def _answers_follow_the_specs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Check each answer of each ``LocalNode`` started in the test against the specs; fail at teardown if any broke."""
    origins: set[str] = set()
    problems: list[str] = []
    trace = spec_trace_config(lambda: origins, problems)

    start = LocalNode.start

    @functools.wraps(start)
    async def start_and_watch(node: LocalNode) -> None:
        await start(node)
        origins.add(node.url)

    session_init = aiohttp.ClientSession.__init__

    @functools.wraps(session_init)
    def init_with_trace(session: aiohttp.ClientSession, *args: Any, **kwargs: Any) -> None:
        kwargs["trace_configs"] = [*(kwargs.get("trace_configs") or ()), trace]
        session_init(session, *args, **kwargs)

    monkeypatch.setattr(LocalNode, "start", start_and_watch)
    monkeypatch.setattr(aiohttp.ClientSession, "__init__", init_with_trace)
    yield
    if problems:
        listed = "\n".join(f"- {problem}" for problem in problems)
        pytest.fail(f"{len(problems)} answer(s) of the local node break the official specs:\n{listed}")


@pytest.fixture
async def local_node() -> AsyncIterator[LocalNode]:
    """A running local node with the default network (three providers), stopped after the test."""
    async with LocalNode() as node:
        yield node


@pytest.fixture
async def http(local_node: LocalNode) -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp session on the node's URL that sends its app key (paths start with ``/``).

    Its answers are validated against the specs like every other session's (see the module docstring).
    """
    headers = {"Authorization": f"Bearer {local_node.app_key}"}
    async with aiohttp.ClientSession(base_url=local_node.url, headers=headers) as session:
        yield session
