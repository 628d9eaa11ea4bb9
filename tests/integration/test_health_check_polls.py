"""A starting instance whose script's results long-poll is in flight is not also asked for its state.

Hundreds of instances waiting for their sandboxes on a busy provider each held a results long-poll and, every
health-check interval, sent a state query beside it: work for both sides of the machine the sandboxes were
starting on. The poll is already a bounded question to the provider about the activity (answered, or failed
within its timeout, failing the script), so the health check skips its query while one is in flight.

A fault proxy holds the first results long-poll, so one instance stays starting with its poll in flight while
the other runs; the running one's state queries show the health checks going on, the held one's show none
until its poll is let through, and it then runs and is checked like the other.
"""

from __future__ import annotations

import re

import pytest

from bench.services import Trivial
from golem_api.golem import Golem
from golem_local.config import LocalNetworkConfig
from golem_local.node import LocalNode
from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.integration

_RESULTS_POLL = r"^GET /activity-api/v1/activity/[^/]+/exec/[^/?]+\?.*timeout="
_STATE = r"^GET /activity-api/v1/activity/([^/]+)/state$"


async def test_no_state_query_beside_a_results_long_poll_in_flight() -> None:
    network = LocalNetworkConfig.with_providers(2, activity_runtime="idle")
    async with LocalNode(network) as node, FaultProxy(node.host, node.port) as proxy:
        proxy.add(_RESULTS_POLL, "hold")
        golem = Golem(budget=1, app_key=node.app_key, api_url=proxy.url, health_check_interval=0.05)
        async with golem:
            cluster = await golem.run_service(Trivial, num_instances=2)
            await proxy.wait_hits("hold", 1, timeout=20)
            held = re.search(r"/activity/([^/]+)/exec/", proxy.hits_of("hold")[0])
            assert held is not None
            held_activity = held.group(1)
            # The other instance runs and is checked every 0.05 s: ten of its state queries are ten intervals.
            others = rf"^GET /activity-api/v1/activity/(?!{held_activity}/)[^/]+/state$"
            await proxy.wait_requests(others, 10, timeout=20)
            asked = [r for r in proxy.requests if re.search(_STATE, r) and held_activity in r]
            assert asked == [], f"the starting instance was asked for its state beside its long-poll: {asked}"
            assert sorted(i.state.id for i in cluster.instances) == ["running", "starting"]

            proxy.release()
            await cluster.wait_running(timeout=20)
            # Running, with no script in flight: its health checks go on as before.
            await proxy.wait_requests(rf"^GET /activity-api/v1/activity/{held_activity}/state$", 2, timeout=20)
            await cluster.stop()
