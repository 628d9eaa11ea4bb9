"""golem-api's ``Network`` against the real yagna daemon (offline: no provider, so no data flows).

It creates a network as ``Golem.create_network`` does, announces a node, reads the daemon's answers back with
golem-api's models, connects to an address where nobody is (the daemon answers 504 after its 5 s; golem-api
raises ``VpnConnectionTimeoutError`` naming the address) and removes the network, which the daemon then no
longer lists.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from golem_api._rest.client import RestClient
from golem_api._rest.config import ApiConfig
from golem_api.errors import ApiError, VpnConnectionError, VpnConnectionTimeoutError
from golem_api.network.network import Network, NetworkState
from tests.fidelity.conftest import YagnaDaemon


@pytest.fixture
async def rest(yagna_daemon: YagnaDaemon) -> AsyncIterator[RestClient]:
    async with RestClient(ApiConfig.for_node(yagna_daemon.url, yagna_daemon.app_key)) as client:
        yield client


async def test_a_network_lives_its_whole_life_on_the_real_daemon(rest: RestClient, yagna_daemon: YagnaDaemon) -> None:
    network = await Network.create(rest, "192.168.0.1/24", yagna_daemon.identity)
    try:
        assert re.fullmatch(r"[0-9a-f]{32}", network.network_id)
        info = await rest.net.get_network(network.network_id)
        assert (info.ip, info.mask, info.gateway) == ("192.168.0.0/24", "255.255.255.0", "192.168.0.1")
        assert [a.ip for a in await rest.net.list_addresses(network.network_id)] == ["192.168.0.1/24"]
        node = await network.add_node(yagna_daemon.provider_id)
        assert node.ip == "192.168.0.2"
        assert [(n.id, n.ip) for n in await rest.net.list_nodes(network.network_id)] == [
            (yagna_daemon.provider_id, "192.168.0.2")
        ]
        await network.refresh_nodes()  # yapapi's re-announcement: a 200 again
        with pytest.raises(VpnConnectionTimeoutError, match=r"nothing answered at 192\.168\.0\.2:80"):
            await node.connect(80)  # no provider behind the node: the daemon's 504 after 5 s
        with pytest.raises(VpnConnectionError):  # the requestor's own address: nothing listens there
            await network.connect("192.168.0.1", 80)
        await network.remove_node(yagna_daemon.provider_id)
        assert await rest.net.list_nodes(network.network_id) == []
    finally:
        await network.remove()
    assert network.state is NetworkState.removed
    assert network.network_id not in [n.id for n in await rest.net.list_networks()]
    with pytest.raises(ApiError) as gone:
        await rest.net.get_network(network.network_id)
    assert gone.value.status in (403, 404)
