"""``Network`` and ``Node``: a VPN between the requestor and its service instances, in yapapi's shape.

::

    network = await golem.create_network("192.168.0.1/24")          # the requestor is 192.168.0.1
    cluster = await golem.run_service(Db, network=network, network_addresses=["192.168.0.10"])
    ...
    db = cluster.instances[0]
    db.network_node.ip                       # "192.168.0.10"
    async with await db.network_node.connect(6379) as conn: …   # a TCP stream to 192.168.0.10:6379

A :class:`Network` is made by ``Golem.create_network`` (``POST /net``, then the requestor's own address with
``POST /net/{id}/addresses``); ``run_service(network=…)`` adds a :class:`Node` for each instance's provider
before its ``deploy`` (``POST /net/{id}/nodes``) and removes it when the instance ends; the ``deploy`` command
carries the network as yapapi's does (:meth:`Node.get_deploy_args`). ``Golem`` removes its networks when it
stops (``network.remove()`` does it earlier; ``async with network:`` too).

Addresses: given ones must be inside the range and free (:class:`~golem_api.errors.NetworkAddressError`
otherwise, before anything is sent); without one, a node gets the lowest free host address. The requestor's
own address (``owner_ip``) defaults to the first host (``.1``), as yagna's own first address always is.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import logging
from types import TracebackType
from typing import TYPE_CHECKING, Any

from attrs import frozen

from golem_api.errors import (
    ApiError,
    GolemError,
    NetworkAddressError,
    NetworkError,
    NotFoundError,
    VpnConnectionError,
    VpnConnectionTimeoutError,
)
from golem_api.network.connection import TcpConnection

if TYPE_CHECKING:
    from golem_api._rest.client import RestClient

__all__ = ["Network", "NetworkState", "Node"]

_log = logging.getLogger(__name__)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class NetworkState(enum.Enum):
    """Where a :class:`Network` is in its life (yapapi's names)."""

    creating = "creating"
    ready = "ready"
    removing = "removing"
    removed = "removed"


@frozen(eq=False)
class Node:
    """A member of a VPN: the Golem node ``node_id`` at ``ip`` in ``network`` (yapapi's ``Node``)."""

    network: Network
    node_id: str
    ip: str

    def get_deploy_args(self) -> dict[str, Any]:
        """The ``deploy`` command's arguments that put the activity in the network, as yapapi sends them:
        ``{"net": [{"id", "ip": network address, "mask", "nodeIp", "nodes": {ip: node id}}]}`` (plus
        ``gateway`` when the network was created with one)."""
        network = self.network
        entry: dict[str, Any] = {
            "id": network.network_id,
            "ip": network.network_address,
            "mask": network.netmask,
            "nodeIp": self.ip,
            "nodes": network.nodes_dict,
        }
        if network.gateway is not None:
            entry["gateway"] = network.gateway
        return {"net": [entry]}

    def get_websocket_uri(self, port: int) -> str:
        """``ws://…/net-api/v1/net/{id}/tcp/{ip}/{port}``: the node's WebSocket for a TCP stream to ``port``
        (what yapapi's proxies open; :meth:`connect` does it for you)."""
        return self.network.websocket_uri(self.ip, port)

    async def connect(self, port: int) -> TcpConnection:
        """A TCP stream to this node's ``port`` (see :meth:`Network.connect`)."""
        return await self.network.connect(self.ip, port)


class Network:
    """A VPN of the requestor (see the module docstring); made by ``Golem.create_network``.

    What it shows, with yapapi's names: ``network_id``, ``network_address`` (``"192.168.0.0"``), ``netmask``,
    ``gateway`` (``None`` unless given), ``owner_ip``, ``nodes_dict`` (``{ip: node id}``, the requestor's own
    address included), ``state``; :meth:`add_node`, :meth:`remove_node`, :meth:`remove`.
    """

    def __init__(
        self,
        rest: RestClient,
        ip: str,
        owner_id: str,
        owner_ip: str | None = None,
        mask: str | None = None,
        gateway: str | None = None,
    ) -> None:
        self._rest = rest
        self._network_id: str | None = None
        self._ip_network = _parse_network(ip, mask)
        self._owner_id = owner_id
        self._gateway = str(_parse_address(gateway, "gateway")) if gateway else None
        self._owner_ip = _parse_address(owner_ip, "owner_ip") if owner_ip else _first_host(self._ip_network)
        self._check_inside(self._owner_ip, "owner_ip")
        self._state = NetworkState.creating
        self._nodes: dict[str, Node] = {}  # ip -> node
        self._lock = asyncio.Lock()
        self._connections: set[TcpConnection] = set()

    @classmethod
    async def create(
        cls,
        rest: RestClient,
        ip: str,
        owner_id: str,
        owner_ip: str | None = None,
        mask: str | None = None,
        gateway: str | None = None,
    ) -> Network:
        """Create the network on the node and take the requestor's address in it."""
        network = cls(rest, ip, owner_id, owner_ip, mask, gateway)
        info = await rest.net.create_network(network.network_address, network.netmask, network._gateway)
        network._network_id = info.id
        try:
            await network.add_owner_address(str(network._owner_ip))
        except BaseException:
            await network.remove()
            raise
        network._state = NetworkState.ready
        _log.info("Created network %s", network)
        return network

    def __repr__(self) -> str:
        return (
            f"<Network {self._network_id or '(not created)'} {self._ip_network.with_prefixlen} owner "
            f"{self._owner_ip}, {len(self.nodes)} node(s), {self._state.value}>"
        )

    __str__ = __repr__

    # -- what it shows ---------------------------------------------------------------------------------------

    @property
    def network_id(self) -> str:
        """The id the node gave the network."""
        if self._network_id is None:
            raise NetworkError("the network is not created yet: use `await golem.create_network(...)`")
        return self._network_id

    @property
    def state(self) -> NetworkState:
        """``creating``, ``ready``, ``removing`` or ``removed``."""
        return self._state

    @property
    def ip_network(self) -> IpNetwork:
        """The address range, as an :mod:`ipaddress` network."""
        return self._ip_network

    @property
    def network_address(self) -> str:
        """The network address of the range, without the prefix (``"192.168.0.0"``)."""
        return str(self._ip_network.network_address)

    @property
    def netmask(self) -> str:
        """The netmask, dotted (``"255.255.255.0"``)."""
        return str(self._ip_network.netmask)

    @property
    def gateway(self) -> str | None:
        """The gateway given at creation, else ``None``."""
        return self._gateway

    @property
    def owner_ip(self) -> str:
        """The requestor's address in the network."""
        return str(self._owner_ip)

    @property
    def owner_id(self) -> str:
        """The requestor's node id."""
        return self._owner_id

    @property
    def nodes_dict(self) -> dict[str, str]:
        """``{ip: node id}`` of every member, the requestor's own address included."""
        return {ip: node.node_id for ip, node in self._nodes.items()}

    @property
    def nodes(self) -> list[Node]:
        """The members other than the requestor, in the order they were added."""
        return [node for node in self._nodes.values() if node.ip != self.owner_ip]

    # -- members ---------------------------------------------------------------------------------------------

    def _check_ready(self, what: str) -> None:
        if self._state in (NetworkState.removing, NetworkState.removed):
            raise NetworkError(
                f"cannot {what}: network {self._network_id} ({self._ip_network}) was removed; create a new one",
                network_id=self._network_id,
            )

    def _check_inside(self, address: IpAddress, what: str) -> None:
        if address.version != self._ip_network.version or address not in self._ip_network:
            raise NetworkAddressError(
                f"{what} {str(address)!r} is not inside the network {self._ip_network}; "
                f"choose an address from {_first_host(self._ip_network)} to {_last_host(self._ip_network)}",
                network_id=self._network_id,
            )
        if self._ip_network.num_addresses > 2 and address in (
            self._ip_network.network_address,
            self._ip_network.broadcast_address,
        ):
            raise NetworkAddressError(
                f"{what} {str(address)!r} is the network or broadcast address of {self._ip_network}; "
                "choose a host address",
                network_id=self._network_id,
            )

    def _check_free(self, address: IpAddress, what: str) -> None:
        holder = self._nodes.get(str(address))
        if holder is not None:
            whose = "the requestor's own address" if holder.node_id == self._owner_id else f"taken by {holder.node_id}"
            raise NetworkAddressError(
                f"{what} {str(address)!r} is already {whose} in network {self._network_id}; "
                "give each node its own address (or leave it out for the next free one)",
                network_id=self._network_id,
            )

    def check_free_address(self, ip: object, what: str = "address") -> str:
        """``ip`` normalised, when it could be given to a new node now; else :class:`NetworkAddressError`
        (not an address, outside the range, the network or broadcast address, or taken)."""
        self._check_ready(f"use {what} {ip!r}")
        address = _parse_address(ip, what)
        self._check_inside(address, what)
        self._check_free(address, what)
        return str(address)

    async def add_owner_address(self, ip: str) -> None:
        """Give the requestor the address ``ip`` in the network (``create`` does it for ``owner_ip``)."""
        self._check_ready("add an address")
        address = _parse_address(ip, "owner address")
        self._check_inside(address, "owner address")
        async with self._lock:
            self._check_free(address, "owner address")
            await self._rest.net.add_address(self.network_id, str(address))
            self._nodes[str(address)] = Node(self, self._owner_id, str(address))

    async def add_node(self, node_id: str, ip: str | None = None) -> Node:
        """Add the Golem node ``node_id`` at ``ip`` (default: the lowest free host address) and announce it."""
        self._check_ready(f"add node {node_id}")
        if not isinstance(node_id, str) or not node_id:
            raise NetworkError(f"node_id must be a Golem node id such as '0x…', got {node_id!r}")
        address = _parse_address(ip, "node address") if ip is not None else None
        if address is not None:
            self._check_inside(address, "node address")
        async with self._lock:
            if address is None:
                address = self._next_free()
            self._check_free(address, "node address")
            node = Node(self, node_id, str(address))
            self._nodes[node.ip] = node  # reserved while the node is told
            try:
                await self._rest.net.add_node(self.network_id, node_id, node.ip)
            except BaseException:
                self._nodes.pop(node.ip, None)
                raise
        return node

    async def remove_node(self, node_id: str) -> None:
        """Remove every address of ``node_id`` from the network (a removed network: nothing to do)."""
        if self._state is NetworkState.removed:
            return
        async with self._lock:
            with contextlib.suppress(NotFoundError):  # the network is already gone on the node
                await self._rest.net.remove_node(self.network_id, node_id)
            for ip in [ip for ip, node in self._nodes.items() if node.node_id == node_id and ip != self.owner_ip]:
                del self._nodes[ip]

    async def refresh_nodes(self) -> None:
        """Announce every member again (yapapi does it once its instances run; harmless)."""
        for node in list(self._nodes.values()):
            if node.ip == self.owner_ip:
                continue
            await self._rest.net.add_node(self.network_id, node.node_id, node.ip)

    def _next_free(self) -> IpAddress:
        for address in self._ip_network.hosts():
            if str(address) not in self._nodes:
                return address
        raise NetworkAddressError(
            f"no free address is left in network {self._network_id} ({self._ip_network}, "
            f"{len(self._nodes)} taken); create a larger network",
            network_id=self._network_id,
        )

    # -- TCP -------------------------------------------------------------------------------------------------

    def websocket_uri(self, ip: str, port: int) -> str:
        """The node's WebSocket URL for a TCP stream to ``ip:port`` in the network."""
        base = self._rest.config.net_url
        scheme = "wss" if base.startswith("https:") else "ws"
        return f"{scheme}{base[base.index(':') :]}/net/{self.network_id}/tcp/{ip}/{port}"

    async def connect(self, ip: str, port: int) -> TcpConnection:
        """A TCP stream from the requestor's address to ``ip:port`` in the network.

        Raises :class:`~golem_api.errors.VpnConnectionError` when it is refused (nothing listens there),
        :class:`~golem_api.errors.VpnConnectionTimeoutError` when nothing answers (no member at ``ip``, or not
        in time), :class:`~golem_api.errors.NetworkAddressError` for an address outside the network and
        :class:`~golem_api.errors.NetworkError` when the network was removed.
        """
        self._check_ready(f"connect to {ip}:{port}")
        address = _parse_address(ip, "address to connect to")
        if address.version != self._ip_network.version or address not in self._ip_network:
            raise NetworkAddressError(
                f"cannot connect to {address}:{port}: the address is not inside network {self._network_id} "
                f"({self._ip_network}); use an instance's address (service.network_node.ip)",
                network_id=self._network_id,
            )
        where = f"{address}:{port} in network {self._network_id} ({self._ip_network})"
        try:
            ws = await self._rest.net.connect_tcp(self.network_id, str(address), port)
        except ApiError as exc:
            raise _connect_error(exc, where, self._network_id, str(address), port) from exc
        connection = TcpConnection(
            ws, ip=str(address), port=port, network_id=self.network_id, on_close=self._connections.discard
        )
        self._connections.add(connection)
        return connection

    # -- the end ---------------------------------------------------------------------------------------------

    async def remove(self) -> None:
        """Close the network's TCP streams and remove the network from the node (once; later calls do nothing)."""
        if self._state in (NetworkState.removing, NetworkState.removed):
            return
        self._state = NetworkState.removing
        try:
            for connection in list(self._connections):
                await connection.aclose()
            if self._network_id is not None:
                try:
                    await self._rest.net.remove_network(self._network_id)
                    _log.info("Removed network %s", self)
                except NotFoundError:
                    _log.warning("network %s was already removed on the node", self._network_id)
                except GolemError as exc:
                    _log.warning("could not remove network %s: %s", self._network_id, exc)
        finally:
            self._state = NetworkState.removed

    async def __aenter__(self) -> Network:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.remove()


def _connect_error(exc: ApiError, where: str, network_id: str | None, ip: str, port: int) -> NetworkError:
    if exc.status == 504:
        return VpnConnectionTimeoutError(
            f"nothing answered at {where}: no instance has that address, or it did not answer in time "
            f"(the node waits 5 s); check the address (service.network_node.ip)",
            network_id=network_id,
            ip=ip,
            port=port,
        )
    if exc.status == 400:
        return VpnConnectionError(
            f"the connection to {where} was refused: is a server listening on port {port} there "
            "(on 0.0.0.0 or that address)?",
            network_id=network_id,
            ip=ip,
            port=port,
        )
    return VpnConnectionError(
        f"cannot connect to {where}: the node answered {exc.status} {exc.message or ''}".rstrip()
        + "; the network may have been removed",
        network_id=network_id,
        ip=ip,
        port=port,
    )


def _parse_network(ip: object, mask: object) -> IpNetwork:
    if not isinstance(ip, str) or not ip:
        raise NetworkAddressError(f"the network's ip must be an address range such as '192.168.0.0/24', got {ip!r}")
    if mask is not None and not isinstance(mask, str):
        raise NetworkAddressError(f"mask must be a netmask such as '255.255.255.0', got {mask!r}")
    text = f"{ip}/{mask}" if mask else ip
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise NetworkAddressError(
            f"{text!r} is not an address range ({exc}); write it as '192.168.0.0/24', or ip='192.168.0.0' with "
            "mask='255.255.255.0'"
        ) from None


def _parse_address(text: object, what: str) -> IpAddress:
    if not isinstance(text, str):
        raise NetworkAddressError(f"{what} must be an IP address such as '192.168.0.2', got {text!r}")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise NetworkAddressError(f"{what} {text!r} is not an IP address; write it as '192.168.0.2'") from None


def _first_host(network: IpNetwork) -> IpAddress:
    return network.network_address if network.num_addresses == 1 else network.network_address + 1


def _last_host(network: IpNetwork) -> IpAddress:
    if network.num_addresses <= 2:
        return network.broadcast_address
    return network.broadcast_address - 1
