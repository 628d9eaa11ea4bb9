"""The requestor's VPN objects without a node: ``Network``/``Node`` (yapapi's shape and rules, clear errors before
anything is sent), ``run_service``'s address checks, the ``vpn`` capability, the ``deploy`` arguments."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest

from golem_api import (
    ConfigurationError,
    CustomPayload,
    NetworkAddressError,
    NetworkError,
    Service,
    VmPayload,
    VpnConnectionError,
    VpnConnectionTimeoutError,
)
from golem_api._rest import routes
from golem_api._rest.config import ApiConfig
from golem_api._rest.net import NetApi
from golem_api._rest.routes import ABSENT
from golem_api.activity.script import Script
from golem_api.errors import BadRequestError, NotFoundError, ServerError
from golem_api.network.network import Network, NetworkState
from golem_api.payload import with_capabilities
from golem_api.services._arguments import check_network_addresses
from tests.unit.fake_node import FakeNode

OWNER = "0x" + "a" * 40
PROVIDER = "0x" + "b" * 40
NET_ID = "9e93bd05901c41b8b6aa4e86ba7af7ad"


class Node(FakeNode):
    """Answers the net routes as the daemon does; ``refuse`` makes the TCP WebSocket fail with that error."""

    refuse: Exception | None = None

    async def websocket(self, route: Any, *path_args: str, protocols: tuple[str, ...]) -> Any:
        await self(route, *path_args, parse=lambda data: data)
        assert self.refuse is not None
        raise self.refuse


def fake_rest() -> tuple[Any, Node]:
    node = Node()
    node.answers[routes.CREATE_NETWORK] = {"id": NET_ID, "ip": "192.168.0.0/24", "mask": "255.255.255.0"}
    rest = SimpleNamespace(net=NetApi(node, node.websocket), config=ApiConfig.for_node("http://127.0.0.1:7465", "k"))
    return rest, node


def sent(node: Node) -> list[tuple[str, str, Any]]:
    return [(s.route.method, s.path, None if s.json is ABSENT else s.json) for s in node.sent]


async def test_create_sends_the_range_then_takes_the_first_host_as_yapapi_does() -> None:
    rest, node = fake_rest()
    network = await Network.create(rest, "192.168.0.1/24", OWNER)
    assert sent(node) == [
        ("POST", "/net", {"ip": "192.168.0.0", "mask": "255.255.255.0"}),
        ("POST", f"/net/{NET_ID}/addresses", {"ip": "192.168.0.1"}),
    ]
    assert (network.network_id, network.network_address, network.netmask) == (NET_ID, "192.168.0.0", "255.255.255.0")
    assert (network.owner_ip, network.gateway, network.state) == ("192.168.0.1", None, NetworkState.ready)
    assert network.nodes_dict == {"192.168.0.1": OWNER}
    assert network.nodes == []


async def test_owner_ip_mask_and_gateway_are_sent_as_given() -> None:
    rest, node = fake_rest()
    network = await Network.create(rest, "10.0.0.0", OWNER, owner_ip="10.0.0.5", mask="255.255.0.0", gateway="10.0.0.1")
    assert sent(node)[0] == ("POST", "/net", {"ip": "10.0.0.0", "mask": "255.255.0.0", "gateway": "10.0.0.1"})
    assert sent(node)[1][2] == {"ip": "10.0.0.5"}
    assert (network.owner_ip, network.gateway) == ("10.0.0.5", "10.0.0.1")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"ip": "banana"}, "'banana' is not an address range"),
        ({"ip": "192.168.0.0", "mask": "255.0.255.0"}, "is not an address range"),
        (
            {"ip": "192.168.0.0/24", "owner_ip": "10.0.0.1"},
            "owner_ip '10.0.0.1' is not inside the network 192.168.0.0/24",
        ),
        ({"ip": "192.168.0.0/24", "owner_ip": "192.168.0.255"}, "is the network or broadcast address"),
        ({"ip": "192.168.0.0/24", "owner_ip": "x"}, "owner_ip 'x' is not an IP address"),
        ({"ip": "192.168.0.0/24", "gateway": "nope"}, "gateway 'nope' is not an IP address"),
    ],
)
async def test_a_bad_range_or_address_is_refused_before_anything_is_sent(kwargs: dict[str, Any], expected: str) -> None:
    rest, node = fake_rest()
    with pytest.raises(NetworkAddressError, match=re.escape(expected)):
        await Network.create(rest, owner_id=OWNER, **kwargs)
    assert node.sent == []


async def test_nodes_get_the_lowest_free_address_or_the_one_given() -> None:
    rest, node = fake_rest()
    network = await Network.create(rest, "192.168.0.0/24", OWNER)
    first = await network.add_node(PROVIDER)
    second = await network.add_node("0x" + "c" * 40, "192.168.0.20")
    third = await network.add_node("0x" + "d" * 40)
    assert [first.ip, second.ip, third.ip] == ["192.168.0.2", "192.168.0.20", "192.168.0.3"]
    assert sent(node)[-1] == ("POST", f"/net/{NET_ID}/nodes", {"id": "0x" + "d" * 40, "ip": "192.168.0.3"})
    assert network.nodes == [first, second, third]
    await network.remove_node(PROVIDER)
    assert sent(node)[-1] == ("DELETE", f"/net/{NET_ID}/nodes/{PROVIDER}", None)
    assert (await network.add_node("0x" + "e" * 40)).ip == "192.168.0.2"  # freed, so the lowest again


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        (
            "10.9.9.9",
            "node address '10.9.9.9' is not inside the network 192.168.0.0/24; choose an address from "
            "192.168.0.1 to 192.168.0.254",
        ),
        ("192.168.0.1", "is already the requestor's own address"),
        ("192.168.0.2", f"is already taken by {PROVIDER}"),
        ("192.168.0.0", "is the network or broadcast address"),
        ("192.168.0", "is not an IP address"),
    ],
)
async def test_a_bad_node_address_says_what_is_wrong_and_sends_nothing(ip: str, expected: str) -> None:
    rest, node = fake_rest()
    network = await Network.create(rest, "192.168.0.0/24", OWNER)
    await network.add_node(PROVIDER, "192.168.0.2")
    before = len(node.sent)
    with pytest.raises(NetworkAddressError, match=re.escape(expected)):
        await network.add_node("0x" + "c" * 40, ip)
    assert len(node.sent) == before


async def test_a_full_network_says_so() -> None:
    rest, _node = fake_rest()
    network = await Network.create(rest, "10.0.0.0/30", OWNER)  # hosts .1 (the requestor) and .2
    await network.add_node(PROVIDER)
    with pytest.raises(NetworkAddressError, match=r"no free address is left in network .* \(10\.0\.0\.0/30, 2 taken\)"):
        await network.add_node("0x" + "c" * 40)


async def test_a_node_the_daemon_refuses_is_not_kept() -> None:
    rest, node = fake_rest()
    network = await Network.create(rest, "192.168.0.0/24", OWNER)
    node.answers[routes.ADD_NODE] = BadRequestError(method="POST", path="/", status=400, message="no")
    with pytest.raises(BadRequestError):
        await network.add_node(PROVIDER, "192.168.0.7")
    assert "192.168.0.7" not in network.nodes_dict


async def test_deploy_args_are_yapapis_and_carry_a_gateway_only_when_given() -> None:
    rest, _node = fake_rest()
    network = await Network.create(rest, "192.168.0.0/24", OWNER)
    node = await network.add_node(PROVIDER)
    assert node.get_deploy_args() == {
        "net": [
            {
                "id": NET_ID,
                "ip": "192.168.0.0",
                "mask": "255.255.255.0",
                "nodeIp": "192.168.0.2",
                "nodes": {"192.168.0.1": OWNER, "192.168.0.2": PROVIDER},
            }
        ]
    }
    assert node.get_websocket_uri(80) == f"ws://127.0.0.1:7465/net-api/v1/net/{NET_ID}/tcp/192.168.0.2/80"
    rest, _node = fake_rest()
    gated = await Network.create(rest, "192.168.0.0/24", OWNER, gateway="192.168.0.254")
    assert (await gated.add_node(PROVIDER)).get_deploy_args()["net"][0]["gateway"] == "192.168.0.254"


@pytest.mark.parametrize(
    ("error", "kind", "expected"),
    [
        (
            BadRequestError(method="GET", path="/", status=400, message=""),
            VpnConnectionError,
            "was refused: is a server listening on port 81",
        ),
        (
            ServerError(method="GET", path="/", status=504, message=""),
            VpnConnectionTimeoutError,
            "nothing answered at 192.168.0.2:81",
        ),
        (
            NotFoundError(method="GET", path="/", status=404, message="Network not found"),
            VpnConnectionError,
            "may have been removed",
        ),
    ],
)
async def test_a_refused_tcp_stream_is_a_vpn_error_naming_the_address(
    error: Exception, kind: type[Exception], expected: str
) -> None:
    rest, node = fake_rest()
    network = await Network.create(rest, "192.168.0.0/24", OWNER)
    node.refuse = error
    with pytest.raises(kind, match=re.escape(expected)) as failure:
        await network.connect("192.168.0.2", 81)
    assert sent(node)[-1] == ("GET", f"/net/{NET_ID}/tcp/192.168.0.2/81", None)
    assert isinstance(failure.value, VpnConnectionError)
    assert (failure.value.ip, failure.value.port, failure.value.network_id) == ("192.168.0.2", 81, NET_ID)
    if kind is VpnConnectionTimeoutError:
        assert isinstance(failure.value, TimeoutError)


async def test_connecting_outside_the_network_or_to_a_bad_port_sends_nothing() -> None:
    rest, node = fake_rest()
    network = await Network.create(rest, "192.168.0.0/24", OWNER)
    before = len(node.sent)
    with pytest.raises(NetworkAddressError, match=r"10\.0\.0\.2:80: the address is not inside network"):
        await network.connect("10.0.0.2", 80)
    with pytest.raises(ConfigurationError, match="port must be a TCP port number, 1-65535, got 70000"):
        await network.connect("192.168.0.2", 70000)
    assert len(node.sent) == before


async def test_a_removed_network_is_removed_once_and_refuses_what_follows() -> None:
    rest, node = fake_rest()
    network = await Network.create(rest, "192.168.0.0/24", OWNER)
    async with network:
        pass
    await network.remove()
    assert [s for s in sent(node) if s[0] == "DELETE"] == [("DELETE", f"/net/{NET_ID}", None)]
    assert network.state is NetworkState.removed
    with pytest.raises(NetworkError, match=f"cannot add node {PROVIDER}: network {NET_ID} .* was removed"):
        await network.add_node(PROVIDER)
    with pytest.raises(NetworkError, match="was removed; create a new one"):
        await network.connect("192.168.0.2", 80)
    await network.remove_node(PROVIDER)  # nothing to do, no error


async def test_removing_a_network_the_node_forgot_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    rest, node = fake_rest()
    network = await Network.create(rest, "192.168.0.0/24", OWNER)
    node.answers[routes.REMOVE_NETWORK] = NotFoundError(method="DELETE", path="/", status=404, message="gone")
    await network.remove()
    assert network.state is NetworkState.removed
    assert "already removed" in caplog.text


async def test_run_service_addresses_are_checked_before_anything_runs() -> None:
    rest, _node = fake_rest()
    network = await Network.create(rest, "192.168.0.0/24", OWNER)
    await network.add_node(PROVIDER, "192.168.0.2")
    assert check_network_addresses(network, ["192.168.0.10"], 3) == ["192.168.0.10", None, None]
    assert check_network_addresses(network, None, 2) == []
    with pytest.raises(ConfigurationError, match="was given without a network"):
        check_network_addresses(None, ["192.168.0.10"], 1)
    with pytest.raises(ConfigurationError, match="must be a list of addresses"):
        check_network_addresses(network, "192.168.0.10", 1)  # type: ignore[arg-type]
    with pytest.raises(
        NetworkAddressError, match=r"network_addresses\[1\] '192.168.0.10' is also network_addresses\[0\]"
    ):
        check_network_addresses(network, ["192.168.0.10", "192.168.0.10"], 2)
    with pytest.raises(NetworkAddressError, match=r"network_addresses\[0\] '192.168.0.2' is already taken"):
        check_network_addresses(network, ["192.168.0.2"], 1)
    with pytest.raises(NetworkAddressError, match=r"network_addresses\[0\] '10.1.1.1' is not inside"):
        check_network_addresses(network, ["10.1.1.1"], 1)


def test_a_network_asks_providers_for_the_vpn_capability_once() -> None:
    vm = with_capabilities(VmPayload(), "vpn")
    assert "(golem.runtime.capabilities=vpn)" in vm.demand_constraints()
    assert with_capabilities(vm, "vpn") is vm
    custom = with_capabilities(CustomPayload(properties={"a": 1}, constraints=("(x=1)",)), "vpn")
    assert custom.demand_constraints() == ["(x=1)", "(golem.runtime.capabilities=vpn)"]
    assert custom.demand_properties() == {"a": 1}


async def test_deploy_starts_from_the_contexts_deploy_args_and_service_shows_them() -> None:
    rest, _node = fake_rest()
    network = await Network.create(rest, "192.168.0.0/24", OWNER)
    node = await network.add_node(PROVIDER)
    script = Script(SimpleNamespace(deploy_args=node.get_deploy_args()))  # type: ignore[arg-type]
    plain = script.deploy()
    assert plain._body["net"][0]["nodeIp"] == "192.168.0.2"
    own = Script(SimpleNamespace(deploy_args=node.get_deploy_args())).deploy(net=[], env={"A": "1"})  # type: ignore[arg-type]
    assert own._body == {"net": [], "env": {"A": "1"}}
    service = Service()
    assert (service.get_deploy_args(), service.network_node, service.network) == ({}, None, None)
    service._network_node = node
    assert service.get_deploy_args() == node.get_deploy_args()
    assert (service.network_node, service.network) == (node, network)
    assert repr(service).endswith("@ 192.168.0.2>")
