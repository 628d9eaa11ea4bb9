"""VPNs end to end on the local network: real sandboxes in network namespaces, real TCP (slow: needs root).

The instances run ``python3`` servers inside their bubblewrap sandboxes; the requestor reaches them through
the node's WebSocket (``Node.connect``, ``TcpProxy``, ``HttpProxy``) and they reach each other by their VPN
addresses. Also shown: what a sandbox cannot reach (the host, the internet, another network), clear errors for
bad addresses and ports and a removed network, and that no namespace outlives the node. Servers say they are
ready by creating a file after ``bind`` (the start command waits for it, bounded); nothing sleeps.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import pytest

from golem_api import (
    Golem,
    HttpProxy,
    NetworkAddressError,
    NetworkError,
    Service,
    TcpProxy,
    VmPayload,
    VpnConnectionError,
    VpnConnectionTimeoutError,
)
from golem_api.errors import GolemError
from golem_api.network import Network
from golem_api.services.cluster import Cluster
from golem_local.config import LocalNetworkConfig
from golem_local.net import netns
from golem_local.node import LocalNode

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(netns.unavailable_reason() is not None, reason=str(netns.unavailable_reason())),
]

# A server that answers every request with its greeting and, for /fetch?url=…, what it fetched from there
# (instance to instance); it creates /tmp/ready once it listens.
SERVER = r"""
import http.server, sys, urllib.request, urllib.parse
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        if "url" in query:
            try:
                body = urllib.request.urlopen(query["url"][0], timeout=5).read()
            except Exception as exc:
                body = ("error: %r" % exc).encode()
        else:
            body = sys.argv[1].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("0.0.0.0", 80), H)
open("/tmp/ready", "w").close()
server.serve_forever()
"""
WAIT_READY = "for i in $(seq 1000); do [ -e /tmp/ready ] && exit 0; sleep 0.01; done; echo not ready >&2; exit 1"


class WebServer(Service):
    """An HTTP server on port 80 of the instance, greeting with ``greeting`` (default: its name)."""

    def __init__(self, greeting: str | None = None, deploy_args: dict[str, Any] | None = None) -> None:
        self.greeting = greeting
        self.extra_deploy = deploy_args or {}

    @staticmethod
    async def get_payload() -> VmPayload:
        return VmPayload()

    async def start(self) -> Any:
        script = self._ctx.new_script(timeout=30)
        script.deploy(**self.extra_deploy)
        script.start()
        script.run("/bin/sh", "-c", f"(python3 -c '{SERVER}' '{self.greeting or self.name}' &) ; {WAIT_READY}")
        yield script


async def sh(*argv: str) -> str:
    """Run a command on the host (bounded); its stdout. It must succeed."""
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 0, f"{argv} failed"
    return out.decode()


async def run(instance: Service, command: str) -> str:
    """Run ``sh -c command`` in the instance; its stdout."""
    script = instance.ctx.new_script(timeout=20)
    result = script.run("/bin/sh", "-c", command)
    await instance.ctx.run_script(script)
    return (await result).stdout or ""


async def fetch_from(instance: Service, url: str) -> str:
    """What ``instance`` gets from ``url`` (HTTP GET from inside its sandbox), or the error it met."""
    code = (
        "import sys, urllib.request\n"
        "try:\n"
        "    print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())\n"
        "except Exception as exc:\n"
        "    print('error:', exc)\n"
    )
    return (await run(instance, f"python3 -c \"{code}\" '{url}'")).strip()


async def probe_from(instance: Service, host: str, port: int) -> str:
    """The outcome of a TCP connect from inside ``instance``: ``connected`` or the error's name."""
    code = (
        "import socket, sys\n"
        "s = socket.socket()\n"
        "s.settimeout(3)\n"
        "try:\n"
        "    s.connect((sys.argv[1], int(sys.argv[2])))\n"
        "    print('connected')\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__, exc.errno)\n"
    )
    return (await run(instance, f'python3 -c "{code}" {host} {port}')).strip()


@pytest.fixture
async def golem() -> AsyncIterator[Golem]:
    async with Golem(budget=5.0, local_network=LocalNetworkConfig.with_providers(4), event_consumer=None) as running:
        yield running


async def serve(
    golem: Golem, network: Network, count: int, addresses: Sequence[str] | None = None, **params: Any
) -> Cluster[WebServer]:
    cluster = await golem.run_service(
        WebServer, num_instances=count, instance_params=[params] * count, network=network, network_addresses=addresses
    )
    await cluster.wait_running(timeout=30)
    return cluster


async def test_the_requestor_reaches_instances_through_node_connect_and_both_proxies(golem: Golem) -> None:
    network = await golem.create_network("192.168.0.1/24")
    cluster = await serve(golem, network, 2, ["192.168.0.10"])
    first, second = cluster.instances
    assert (first.network_node and first.network_node.ip, second.network_node and second.network_node.ip) == (
        "192.168.0.10",
        "192.168.0.2",
    )
    assert first.network is network
    assert network.nodes_dict == {
        "192.168.0.1": network.owner_id,
        "192.168.0.10": first.provider_id,
        "192.168.0.2": second.provider_id,
    }
    assert golem.local_node is not None
    record = golem.local_node.vpn.registry.find(network.network_id)
    assert record is not None
    assert {str(ip): node for ip, node in record.nodes.items()} == {
        "192.168.0.10": first.provider_id,
        "192.168.0.2": second.provider_id,
    }
    # The sandbox sits at its address, with the hostname in its own /etc/hosts.
    addresses = await run(first, "ip -4 -o addr show dev eth0; cat /etc/hosts")
    assert "192.168.0.10/24" in addresses
    assert "192.168.0.10\tgolem-vm" in addresses

    assert first.network_node is not None
    async with await first.network_node.connect(80) as conn:
        await conn.write(b"GET / HTTP/1.0\r\n\r\n")
        answer = await conn.read()
    assert answer.startswith(b"HTTP/1.0 200 OK")
    assert answer.endswith(f"\r\n\r\n{first.name}".encode())

    async with TcpProxy(first, 80) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        assert (await reader.read()).endswith(first.name.encode())
        writer.close()
        await writer.wait_closed()

    async with HttpProxy(cluster, remote_port=80) as http_proxy, aiohttp.ClientSession() as session:
        greetings = []
        for _ in range(4):
            async with session.get(http_proxy.url + "/any/path?x=1") as response:
                assert response.status == 200
                greetings.append(await response.text())
    assert greetings == [first.name, second.name, first.name, second.name]  # round-robin over running instances


async def test_instances_reach_each_other_by_vpn_address_and_by_the_deploy_hosts_names(golem: Golem) -> None:
    network = await golem.create_network("10.20.0.0/16")
    db = await serve(golem, network, 1, ["10.20.5.5"], greeting="rows from the db")
    front = await serve(golem, network, 1, deploy_args={"hosts": {"db": "10.20.5.5"}})
    [instance] = front.instances
    assert await fetch_from(instance, "http://10.20.5.5/") == "rows from the db"
    assert await fetch_from(instance, "http://db/") == "rows from the db"
    assert "10.20.5.5\tdb" in await run(instance, "cat /etc/hosts")
    # …and through the proxy, the front end answers with what it fetched from the db by its VPN address.
    async with (
        HttpProxy(front, port=0) as proxy,
        aiohttp.ClientSession() as session,
        session.get(proxy.url + "/?url=http://10.20.5.5/") as response,
    ):
        assert await response.text() == "rows from the db"
    assert db.instances[0].network_node is not None


async def test_a_sandbox_reaches_its_network_only(golem: Golem, unused_tcp_port: int) -> None:
    host_ips = [
        line.split()[2].split("/")[0]
        for line in (await sh("ip", "-4", "-br", "addr")).splitlines()
        if len(line.split()) > 2 and not line.startswith("lo")
    ]
    assert host_ips  # the host's own addresses (eth0…), which no sandbox may reach
    connections = 0

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    listener = await asyncio.start_server(count, "0.0.0.0", unused_tcp_port)  # the host's loopback and addresses
    try:
        a = await golem.create_network("192.168.0.0/24")
        b = await golem.create_network("192.168.0.0/24")  # the same range, another network
        c = await golem.create_network("10.10.0.0/24")
        [in_a] = (await serve(golem, a, 1, ["192.168.0.10"], greeting="network a")).instances
        [in_b] = (await serve(golem, b, 1, ["192.168.0.10"], greeting="network b")).instances
        await serve(golem, c, 1, ["10.10.0.2"], greeting="network c")
        [a_client] = (await serve(golem, a, 1, greeting="client in a")).instances
        assert await fetch_from(a_client, "http://192.168.0.10/") == "network a"
        assert await fetch_from(in_b, "http://192.168.0.10/") == "network b"
        assert in_a.network_node is not None
        assert in_b.network_node is not None
        async with await in_b.network_node.connect(80) as conn:  # the requestor reaches each network's own .10
            await conn.write(b"GET / HTTP/1.0\r\n\r\n")
            assert (await conn.read()).endswith(b"network b")
        assert await probe_from(a_client, "10.10.0.2", 80) == f"OSError {errno.ENETUNREACH}"
        assert await probe_from(a_client, "127.0.0.1", unused_tcp_port) == "ConnectionRefusedError 111"
        for ip in host_ips:
            assert await probe_from(a_client, ip, unused_tcp_port) == f"OSError {errno.ENETUNREACH}"
        assert await probe_from(a_client, "1.1.1.1", 80) == f"OSError {errno.ENETUNREACH}"  # no route
        assert await probe_from(a_client, "192.168.0.1", 80) == "ConnectionRefusedError 111"  # the requestor's hub
        refused = await run(
            a_client, "ip addr add 192.168.0.99/24 dev eth0 2>&1; ip route add default dev eth0 2>&1; true"
        )
        assert refused.count("Operation not permitted") == 2
        host_links = await sh("ip", "-o", "link")
        assert not re.search(r"^\d+: (br0|p\d+)[:@]", host_links, re.MULTILINE)  # no VPN link in the host
    finally:
        listener.close()
        await listener.wait_closed()
    assert connections == 0  # nothing from any sandbox reached the host's listener


async def test_bad_addresses_ports_and_a_removed_network_fail_clearly(golem: Golem) -> None:
    network = await golem.create_network("192.168.0.0/24")
    cluster = await serve(golem, network, 1, ["192.168.0.10"])
    [instance] = cluster.instances
    assert instance.network_node is not None
    with pytest.raises(
        VpnConnectionError, match=r"192\.168\.0\.10:81 .* was refused: is a server listening on port 81"
    ):
        await instance.network_node.connect(81)
    with pytest.raises(VpnConnectionTimeoutError, match=r"nothing answered at 192\.168\.0\.99:80"):
        await network.connect("192.168.0.99", 80)
    with pytest.raises(NetworkAddressError, match=r"10\.0\.0\.1:80: the address is not inside network"):
        await network.connect("10.0.0.1", 80)
    with pytest.raises(NetworkAddressError, match=r"network_addresses\[0\] '192\.168\.0\.10' is already taken by 0x"):
        await golem.run_service(WebServer, network=network, network_addresses=["192.168.0.10"])
    with pytest.raises(NetworkAddressError, match=r"'192\.168\.1\.7' is not inside the network 192\.168\.0\.0/24"):
        await golem.run_service(WebServer, network=network, network_addresses=["192.168.1.7"])
    async with TcpProxy(instance, 81) as proxy:  # the local client is let go at once; the reason is logged
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()

    open_stream = await instance.network_node.connect(80)
    await network.remove()
    assert await asyncio.wait_for(open_stream.read(), 10) == b""  # its streams end with it
    with pytest.raises(NetworkError, match="was removed; create a new one"):
        await network.connect("192.168.0.10", 80)
    with pytest.raises(NetworkError, match="is removed: its instances could not join it"):
        await golem.run_service(WebServer, network=network)
    assert golem.local_node is not None
    assert golem.local_node.vpn.registry.find(network.network_id) is None


class BadDeploy(Service):
    """Deploys with the ``net`` it is given, whatever it says."""

    def __init__(self, net: list[dict[str, Any]]) -> None:
        self.net = net

    @staticmethod
    async def get_payload() -> VmPayload:
        return VmPayload(capabilities=["vpn"])

    async def start(self) -> Any:
        script = self._ctx.new_script(timeout=20)
        script.deploy(net=self.net)
        yield script


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            {"id": "0" * 32, "ip": "10.0.0.0", "mask": "255.255.255.0", "nodeIp": "10.0.0.2"},
            "does not exist on this node",
        ),
        ({"ip": "192.168.0.0", "mask": "255.255.0.0", "nodeIp": "192.168.0.2"}, "is 192.168.0.0/16, but network"),
        ({"ip": "192.168.0.0", "mask": "255.255.255.0", "nodeIp": "192.168.0.1"}, "is the requestor's own address"),
        ({"ip": "192.168.0.0", "mask": "255.255.255.0", "nodeIp": "192.168.0.10"}, "already used by another activity"),
        ({"ip": "192.168.0.0", "mask": "255.255.255.0", "nodeIp": "192.168.0.255"}, "network or broadcast address"),
    ],
)
async def test_a_deploy_with_a_bad_net_fails_with_what_is_wrong(
    golem: Golem, entry: dict[str, Any], expected: str
) -> None:
    network = await golem.create_network("192.168.0.0/24")
    await serve(golem, network, 1, ["192.168.0.10"])
    cluster = await golem.run_service(
        BadDeploy, instance_params=[{"net": [{"id": network.network_id, **entry}]}], start_attempts=1
    )
    with pytest.raises(GolemError, match=re.escape(expected)):
        await cluster.wait_running(timeout=30)


async def test_no_namespace_outlives_the_node_and_stale_ones_are_removed_at_start() -> None:
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await dead.wait()
    stale = f"golemvpn-{dead.pid}-1-v1"
    await sh("ip", "netns", "add", stale)
    try:
        async with Golem(budget=1.0, local_network=LocalNetworkConfig.with_providers(1), event_consumer=None) as golem:
            assert stale not in netns.list_netns(netns.BASE_PREFIX)  # a node whose process is gone left it
            node = golem.local_node
            assert isinstance(node, LocalNode)
            network = await golem.create_network("192.168.0.0/24")
            await serve(golem, network, 1)
            mine = node.vpn.namespaces()
            assert len(mine) == 2  # the hub and the instance
            assert all(name.startswith(f"golemvpn-{os.getpid()}-") for name in mine)
        assert [name for name in netns.list_netns(netns.BASE_PREFIX) if name in mine] == []
    finally:
        if stale in netns.list_netns(stale):
            await sh("ip", "netns", "del", stale)


class TwoNetworks(Service):
    """Joins its cluster's network and a second one in one deploy (eth0 and eth1), as a deploy with two
    ``net`` entries does."""

    def __init__(self, second: Network) -> None:
        self.second = second

    @staticmethod
    async def get_payload() -> VmPayload:
        return VmPayload()

    async def start(self) -> Any:
        assert self.provider_id is not None
        other = await self.second.add_node(self.provider_id)
        script = self._ctx.new_script(timeout=30)
        script.deploy(net=[*self.get_deploy_args()["net"], *other.get_deploy_args()["net"]])
        script.start()
        yield script


async def test_one_activity_can_join_two_networks(golem: Golem) -> None:
    a = await golem.create_network("192.168.0.0/24")
    b = await golem.create_network("10.30.0.0/24")
    await serve(golem, a, 1, ["192.168.0.10"], greeting="server in a")
    await serve(golem, b, 1, ["10.30.0.10"], greeting="server in b")
    both = await golem.run_service(TwoNetworks, instance_params=[{"second": b}], network=a)
    await both.wait_running(timeout=30)
    [instance] = both.instances
    links = await run(instance, "ip -4 -o addr show")
    assert re.search(r"eth0\s+inet 192\.168\.0\.\d+/24", links)
    assert re.search(r"eth1\s+inet 10\.30\.0\.\d+/24", links)
    assert await fetch_from(instance, "http://192.168.0.10/") == "server in a"
    assert await fetch_from(instance, "http://10.30.0.10/") == "server in b"
