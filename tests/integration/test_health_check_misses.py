"""A failed health check is a miss; only ``health_check_retries`` misses in a row lose the instance.

A node busy starting hundreds of sandboxes, or restarting, may answer a state query late or with a 503 now and
then; an instance that was lost on the first such miss (as before) was a running service thrown away for a
moment's load. As in yapapi (three misses by default), the check now counts misses in a row and an answered
check starts the count again, while an answer that says the activity is gone (a 404 or 410 here;
``Unresponsive`` from a killed sandbox in ``test_services.py``) still loses the instance at once.

A fault proxy between the requestor and the node answers chosen state queries itself; the instances run on the
idle runtime and check every 0.05 s, so each test waits on the proxy's hits and the instance's events, not time.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from bench.services import Trivial
from golem_api.errors import ConfigurationError
from golem_api.events import Event, ServiceStateChanged
from golem_api.golem import Golem
from golem_api.services.cluster import Cluster
from golem_local.config import LocalNetworkConfig
from golem_local.node import LocalNode
from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.integration

_STATE = r"^GET /activity-api/v1/activity/[^/]+/state$"
_NETWORK = LocalNetworkConfig.with_providers(1, activity_runtime="idle")


class _Lost:
    """The first move of an instance to ``unresponsive`` on ``golem``'s bus, awaited with a bound."""

    def __init__(self, golem: Golem) -> None:
        self._event: asyncio.Future[ServiceStateChanged] = asyncio.get_running_loop().create_future()
        golem.bus.subscribe(self._take, ServiceStateChanged)

    def _take(self, event: Event) -> None:
        if isinstance(event, ServiceStateChanged) and event.new == "unresponsive" and not self._event.done():
            self._event.set_result(event)

    @property
    def seen(self) -> bool:
        return self._event.done()

    async def wait(self) -> ServiceStateChanged:
        return await asyncio.wait_for(asyncio.shield(self._event), 20)


@asynccontextmanager
async def _running(**run_args: object) -> AsyncIterator[tuple[FaultProxy, Cluster[Trivial], _Lost]]:
    """One running instance of ``Trivial`` behind a fault proxy, checked every 0.05 s."""
    async with LocalNode(_NETWORK) as node, FaultProxy(node.host, node.port) as proxy:
        golem = Golem(budget=1, app_key=node.app_key, api_url=proxy.url, health_check_interval=0.05)
        async with golem:
            lost = _Lost(golem)
            cluster = await golem.run_service(Trivial, **run_args)  # type: ignore[arg-type]
            await cluster.wait_running(timeout=20)
            yield proxy, cluster, lost
            await cluster.stop()


def _state_queries(proxy: FaultProxy) -> int:
    return sum(1 for request in proxy.requests if re.search(_STATE, request))


async def test_failed_checks_short_of_the_limit_leave_a_running_instance_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="golem_api")
    async with _running() as (proxy, cluster, lost):
        proxy.add(_STATE, "status", times=2, status=503)
        await proxy.wait_hits("status", 2, timeout=20)
        await proxy.wait_requests(_STATE, _state_queries(proxy) + 1, timeout=20)  # one answered: the count restarts
        proxy.add(_STATE, "status", times=1, status=408)  # an error answer other than "gone" is a miss too
        proxy.add(_STATE, "status", times=1, status=500)
        await proxy.wait_hits("status", 4, timeout=20)
        # Three more checks after the misses, answered: the instance is still running and checked.
        await proxy.wait_requests(_STATE, _state_queries(proxy) + 3, timeout=20)
        (instance,) = cluster.instances
        assert instance.state.id == "running"
        assert not lost.seen
    failed = [r.getMessage() for r in caplog.records if "health check failed" in r.getMessage()]
    assert len(failed) == 4, failed
    assert ["(1 of 3 in a row)" in m for m in failed] == [True, False, True, False]
    assert ["(2 of 3 in a row)" in m for m in failed] == [False, True, False, True]
    assert "503" in failed[0], "the warning says what the node answered"
    assert "408" in failed[2]


async def test_three_failed_checks_in_a_row_lose_the_instance_and_say_why() -> None:
    async with _running() as (proxy, cluster, lost):
        proxy.add(_STATE, "status", times=3, status=503)
        event = await lost.wait()
        (instance,) = cluster.instances
        assert instance.state.id == "unresponsive"
    assert len(proxy.hits_of("status")) == 3
    assert "503" in (event.reason or "")
    assert "failed 3 times in a row" in (event.reason or "")


async def test_run_service_may_lose_an_instance_on_its_first_failed_check() -> None:
    async with _running(health_check_retries=1) as (proxy, cluster, lost):
        proxy.add(_STATE, "status", times=1, status=503)
        event = await lost.wait()
        assert cluster.instances[0].state.id == "unresponsive"
    assert len(proxy.hits_of("status")) == 1
    assert "503" in (event.reason or "")
    assert "in a row" not in (event.reason or "")


@pytest.mark.parametrize("status", [404, 410])
async def test_an_answer_that_the_activity_is_gone_loses_the_instance_at_once(status: int) -> None:
    async with _running() as (proxy, cluster, lost):
        proxy.add(_STATE, "status", times=1, status=status)
        event = await lost.wait()
        assert cluster.instances[0].state.id == "unresponsive"
    assert len(proxy.hits_of("status")) == 1
    assert str(status) in (event.reason or "")


_BAD = [0, -1, 1.5, True, "3"]


async def test_a_bad_health_check_retries_is_named() -> None:
    for bad in _BAD:
        with pytest.raises(
            ConfigurationError, match=rf"health_check_retries must be a whole number, 1 or more, got {bad!r}"
        ):
            Golem(budget=1, health_check_retries=bad)  # type: ignore[arg-type]
    async with LocalNode(_NETWORK) as node, Golem(budget=1, app_key=node.app_key, api_url=node.url) as golem:
        for bad in _BAD:
            with pytest.raises(ConfigurationError, match=rf"health_check_retries .*got {bad!r}"):
                await golem.run_service(Trivial, health_check_retries=bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="start_attempts must be a whole number, 1 or more, got 0"):
            await golem.run_service(Trivial, start_attempts=0)
