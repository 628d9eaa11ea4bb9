"""Fixtures for talking to a real local node over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from golem_api.local.node import LocalNode


@pytest.fixture
async def local_node() -> AsyncIterator[LocalNode]:
    """A running local node with the default network (three providers), stopped after the test."""
    async with LocalNode() as node:
        yield node


@pytest.fixture
async def http(local_node: LocalNode) -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp session on the node's URL that sends its app key (paths start with ``/``)."""
    headers = {"Authorization": f"Bearer {local_node.app_key}"}
    async with aiohttp.ClientSession(base_url=local_node.url, headers=headers) as session:
        yield session
