"""The local node's net API answers as yagna 0.17.6 does (``/work/proto/vpn/daemon_answers.md``), over HTTP.

No activity joins a network here, so no namespace is made: these are the control-plane answers (records,
addresses, nodes, the 403/404 quirk, body errors) and the WebSocket's refusals before any TCP connection. The
data plane is in ``test_vpn.py`` (slow: real sandboxes). Every JSON answer is also checked against the
official spec by the integration fixtures (with the daemon's documented deviations).
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest

from golem_api import Golem, NetworkError
from golem_local.config import LocalNetworkConfig
from golem_local.net import netns
from golem_local.node import LocalNode

V1 = "/net-api/v1"
V2 = "/net-api/v2/vpn"
UNKNOWN = "0123456789abcdef0123456789abcdef"


async def call(
    http: aiohttp.ClientSession, method: str, path: str, body: Any = None, **kw: Any
) -> tuple[int, str, Any]:
    """``(status, content type, body)``: JSON decoded when it is JSON, else the text."""
    async with http.request(method, path, json=body, **kw) as response:
        text = await response.text()
        if response.content_type == "application/json":
            return response.status, response.content_type, await response.json()
        return response.status, response.content_type, text


async def create(http: aiohttp.ClientSession, body: dict[str, Any], prefix: str = V1) -> dict[str, Any]:
    status, _, network = await call(http, "POST", f"{prefix}/net", body)
    assert status == 200, network
    assert isinstance(network, dict)
    return network


async def test_an_identity_without_networks_gets_404_network_not_found_on_both_prefixes(
    http: aiohttp.ClientSession,
) -> None:
    for prefix in (V1, V2):
        assert await call(http, "GET", f"{prefix}/net") == (200, "application/json", [])
        for method in ("GET", "DELETE"):
            assert await call(http, method, f"{prefix}/net/{UNKNOWN}") == (
                404,
                "application/json",
                {"message": "Network not found"},
            )


@pytest.mark.parametrize(
    ("body", "ip", "mask", "gateway"),
    [
        ({"ip": "192.168.0.0", "mask": "255.255.255.0"}, "192.168.0.0/24", "255.255.255.0", "192.168.0.1"),
        ({"ip": "10.0.0.0/16"}, "10.0.0.0/16", "255.255.0.0", "10.0.0.1"),
        ({"ip": "10.1.0.0"}, "10.1.0.0/24", "255.255.255.0", "10.1.0.1"),
        ({"ip": "10.2.0.7", "mask": "255.255.0.0"}, "10.2.0.7/16", "255.255.0.0", "10.2.0.1"),
        ({"ip": "10.3.0.0", "gateway": "172.16.0.1"}, "10.3.0.0/24", "255.255.255.0", "172.16.0.1"),
        ({"ip": "10.5.0.0", "mask": "255.255.255.255"}, "10.5.0.0/32", "255.255.255.255", "10.5.0.0"),
        ({"ip": "10.6.0.0", "mask": "255.0.255.0"}, "10.6.0.0/8", "255.0.0.0", "10.0.0.1"),
        ({"ip": "192.168.0.0", "id": "my-own-id", "mask": None}, "192.168.0.0/24", "255.255.255.0", "192.168.0.1"),
    ],
)
async def test_a_new_network_is_answered_as_the_daemon_does(
    http: aiohttp.ClientSession, body: dict[str, Any], ip: str, mask: str, gateway: str
) -> None:
    network = await create(http, body)
    assert re.fullmatch(r"[0-9a-f]{32}", network["id"])
    assert network == {"id": network["id"], "ip": ip, "mask": mask, "gateway": gateway}
    assert await call(http, "GET", f"{V2}/net/{network['id']}") == (200, "application/json", network)


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        ({"ip": "banana"}, "application/json", {"message": "Invalid IP address: invalid IP address syntax"}),
        (
            {"ip": "10.6.0.0", "mask": "banana"},
            "application/json",
            {"message": "Invalid IP address: invalid IPv4 address syntax"},
        ),
        (
            {"ip": "10.7.0.0", "gateway": "x"},
            "application/json",
            {"message": "Invalid IP address: invalid IP address syntax"},
        ),
        ({}, "text/plain", "Json deserialize error: missing field `ip`"),
        ({"ip": 5}, "text/plain", "Json deserialize error: invalid type: integer `5`, expected a string"),
    ],
)
async def test_a_bad_new_network_is_a_400_with_the_daemons_words(
    http: aiohttp.ClientSession, body: dict[str, Any], content_type: str, expected: Any
) -> None:
    assert await call(http, "POST", f"{V1}/net", body) == (400, content_type, expected)


async def test_a_body_that_is_not_json_is_a_400_in_text(http: aiohttp.ClientSession) -> None:
    status, kind, text = await call(http, "POST", f"{V1}/net", data=b'{"ip":"10.20.0.0"}')
    assert (status, kind, text) == (400, "text/plain", "Content type error")  # no JSON content type
    headers = {"Content-Type": "application/json"}
    status, kind, text = await call(http, "POST", f"{V1}/net", data=b"{not json", headers=headers)
    assert (status, kind) == (400, "text/plain")
    assert text.startswith("Json deserialize error: ")


async def test_networks_are_listed_by_id_and_unknown_ids_are_403_once_the_caller_owns_one(
    http: aiohttp.ClientSession,
) -> None:
    made = [await create(http, {"ip": f"10.{n}.0.0"}) for n in range(3)]
    status, _, listed = await call(http, "GET", f"{V1}/net")
    assert status == 200
    assert listed == sorted(made, key=lambda network: network["id"])
    assert await call(http, "GET", f"{V1}/net/{UNKNOWN}") == (403, "application/octet-stream", "")
    assert await call(http, "GET", f"{V1}/net/{UNKNOWN}/nodes") == (403, "application/octet-stream", "")
    first = made[0]["id"]
    assert await call(http, "DELETE", f"{V1}/net/{first}") == (200, "application/json", None)
    assert await call(http, "DELETE", f"{V1}/net/{first}") == (403, "application/octet-stream", "")
    for network in made[1:]:
        assert await call(http, "DELETE", f"{V2}/net/{network['id']}") == (200, "application/json", None)
    assert await call(http, "GET", f"{V1}/net/{first}") == (404, "application/json", {"message": "Network not found"})


async def test_requestor_addresses_carry_the_prefix_and_collapse_duplicates(http: aiohttp.ClientSession) -> None:
    network = (await create(http, {"ip": "192.168.0.0", "mask": "255.255.255.0"}))["id"]
    path = f"{V1}/net/{network}/addresses"
    assert await call(http, "GET", path) == (200, "application/json", [{"ip": "192.168.0.1/24"}])
    for ip in ("192.168.0.1", "192.168.0.10", "192.168.0.10", "192.168.0.255", "192.168.0.0"):
        assert await call(http, "POST", path, {"ip": ip}) == (200, "application/json", None)
    for ip in ("10.9.9.9", "127.0.0.1"):
        assert await call(http, "POST", path, {"ip": ip}) == (
            400,
            "application/json",
            {"message": f"Network not found for IP address: {ip}"},
        )
    assert await call(http, "POST", path, {"ip": "banana"}) == (
        400,
        "application/json",
        {"message": "Invalid IP address: invalid IP address syntax"},
    )
    assert (await call(http, "POST", path, {}))[:2] == (400, "text/plain")
    _status, _, addresses = await call(http, "GET", path)
    assert addresses == [{"ip": f"192.168.0.{n}/24"} for n in (1, 10, 255, 0)]
    assert await call(http, "POST", f"{V1}/net/{UNKNOWN}/addresses", {"ip": "192.168.0.5"}) == (
        403,
        "application/octet-stream",
        "",
    )


async def test_nodes_take_any_id_keep_the_first_holder_of_an_address_and_leave_all_at_once(
    http: aiohttp.ClientSession, local_node: LocalNode
) -> None:
    network = (await create(http, {"ip": "192.168.0.0", "mask": "255.255.255.0"}))["id"]
    path = f"{V1}/net/{network}/nodes"
    one, two = "0x" + "1" * 40, "0x" + "2" * 40
    for node_id, ip in [
        (one, "192.168.0.2"),
        (one, "192.168.0.2"),
        (two, "192.168.0.2"),  # taken: 200, and the first mapping stays
        (one, "192.168.0.4"),
        (two, "192.168.0.3"),
        (local_node.requestor_id, "192.168.0.1"),  # the requestor may add itself (golem-js does)
        ("not-a-node-id", "192.168.0.9"),
    ]:
        assert await call(http, "POST", path, {"id": node_id, "ip": ip}) == (200, "application/json", None)
    assert await call(http, "POST", path, {"id": two, "ip": "10.9.9.9"}) == (
        400,
        "application/json",
        {"message": "Invalid network IP address: 10.9.9.9"},
    )
    assert await call(http, "POST", path, {"id": two, "ip": "127.0.0.1"}) == (
        400,
        "application/json",
        {"message": "IP address not allowed: 127.0.0.1"},
    )
    assert await call(http, "POST", path, {"ip": "192.168.0.9"}) == (
        400,
        "text/plain",
        "Json deserialize error: missing field `id`",
    )
    status, _, nodes = await call(http, "GET", path)
    assert status == 200
    assert sorted(map(tuple, (n.values() for n in nodes))) == sorted(
        [
            (one, "192.168.0.2"),
            (one, "192.168.0.4"),
            (two, "192.168.0.3"),
            (local_node.requestor_id, "192.168.0.1"),
            ("not-a-node-id", "192.168.0.9"),
        ]
    )
    for node_id in (one, one, "0x" + "9" * 40):
        assert await call(http, "DELETE", f"{path}/{node_id}") == (200, "application/json", None)
    _status, _, nodes = await call(http, "GET", path)
    assert {n["id"] for n in nodes} == {two, local_node.requestor_id, "not-a-node-id"}


@pytest.mark.parametrize(
    "path",
    ["/net-api/v1/net/", f"/net-api/v1/net/{UNKNOWN}/tcp", "/net-api/v1/net/x/raw/from/1.1.1.1/to/2.2.2.2"],
)
async def test_other_paths_are_an_empty_404(http: aiohttp.ClientSession, path: str) -> None:
    assert await call(http, "GET", path) == (404, "application/octet-stream", "")


async def test_the_v2_status_names_the_node(http: aiohttp.ClientSession, local_node: LocalNode) -> None:
    status, _, body = await call(http, "GET", "/net-api/v2/net/status")
    assert status == 200
    assert body["nodeId"] == local_node.requestor_id
    assert body["listenIp"] == f"127.0.0.1:{local_node.port}"
    assert (body["publicIp"], body["sessions"]) == (None, 0)


async def ws_refusal(http: aiohttp.ClientSession, path: str) -> tuple[int, str]:
    """Open ``path`` as a WebSocket that must be refused; the status and the body of the refusal."""
    async with http.get(
        path,
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    ) as response:
        assert response.status != 101
        return response.status, await response.text()


async def test_the_tcp_websocket_refuses_before_connecting_as_the_daemon_does(
    http: aiohttp.ClientSession, local_node: LocalNode
) -> None:
    network = (await create(http, {"ip": "192.168.0.0", "mask": "255.255.255.0"}))["id"]
    tcp = f"{V1}/net/{network}/tcp"
    assert await ws_refusal(http, f"{tcp}/192.168.0.3/70000") == (404, 'can not parse "70000" to a u16')
    assert await ws_refusal(http, f"{tcp}/banana/8080") == (
        400,
        '{"message":"Invalid IP address: invalid IP address syntax"}',
    )
    assert await ws_refusal(http, f"{tcp}/127.0.0.1/8080") == (400, '{"message":"IP address not allowed: 127.0.0.1"}')
    assert await ws_refusal(http, f"{V1}/net/{UNKNOWN}/tcp/192.168.0.3/8080") == (403, "")
    # Nobody is at these addresses: 504 with an empty body, at once (the daemon waits its 5 s first).
    for path in (f"{tcp}/192.168.0.99/8080", f"{tcp}/10.9.9.9/8080", f"{V2}/net/{network}/tcp/192.168.0.3/8080"):
        assert await ws_refusal(http, path) == (504, "")
    async with http.get(f"{tcp}/192.168.0.3/8080") as plain:  # no upgrade headers: the same answer
        assert (plain.status, await plain.text()) == (504, "")
    url = f"{local_node.url}{tcp}/192.168.0.3/8080"
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(url) as response:
            assert response.status == 401
        async with anonymous.get(url, params={"authToken": local_node.app_key}) as response:
            assert response.status == 504  # the app key in the query is accepted


async def test_golem_says_when_the_local_network_cannot_run_vpns() -> None:
    config = LocalNetworkConfig.with_providers(1, vpn=False)
    async with Golem(budget=1.0, local_network=config, event_consumer=None) as golem:
        with pytest.raises(
            NetworkError,
            match=r"cannot run VPNs here: VPNs are off for this node \(LocalNetworkConfig\(vpn=False\)",
        ):
            await golem.create_network("192.168.0.0/24")
        assert golem.local_node is not None
        assert "golem.runtime.capabilities" not in golem.local_node.providers[0].runtime_offer.properties


async def test_providers_offer_vpn_where_the_machine_allows_it(local_node: LocalNode) -> None:
    offered = local_node.providers[0].runtime_offer.properties.get("golem.runtime.capabilities")
    assert offered == (["vpn"] if local_node.vpn.available else None)
    assert local_node.vpn.available == (netns.unavailable_reason() is None)
