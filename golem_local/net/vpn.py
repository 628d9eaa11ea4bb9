"""``LocalVpn``: the node's VPNs, as the REST API, the relay and the providers' exe-units see them.

It holds the records (:class:`~golem_local.net.model.VpnRegistry`) and, where this machine allows it, the data
plane (:class:`~golem_local.net.plane.DataPlane`): a requestor creates networks and announces nodes over REST;
an activity whose ``deploy`` names a network joins it (:meth:`LocalVpn.joiner` gives the runtime its
:class:`~golem_local.runtime.base.NetworkJoiner`); the requestor reaches a member's TCP port through the relay
(:meth:`LocalVpn.open_tcp`). When the data plane is not available (see :attr:`LocalVpn.unavailable`) the API
still answers, providers do not offer the ``vpn`` capability, and a ``deploy`` with ``net`` fails saying why.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from golem_local.net import netns
from golem_local.net.model import NetworkRecord, VpnApiError, VpnRegistry, forbidden_address
from golem_local.net.plane import DataPlane, InstanceNetns, Join
from golem_local.runtime.base import DeployNetwork, NetworkJoiner, NetworkLease, RuntimeFailure

__all__ = ["TCP_CONNECT_TIMEOUT", "LocalVpn", "Relay", "TcpRefused", "TcpUnreachable"]

_log = logging.getLogger(__name__)

TCP_CONNECT_TIMEOUT = 5.0
"""Seconds a TCP connection into a VPN may take to be established (the daemon's ``TCP_CONN_TIMEOUT``)."""


class TcpUnreachable(Exception):
    """Nothing answered at the address (no member there, or no answer in time): the daemon's 504."""


class TcpRefused(Exception):
    """The member refused the connection (nothing listens on the port): the daemon's 400 ``Socket closed``."""


class _Lease:
    """A :class:`NetworkLease`: the activity's namespace, released once."""

    def __init__(self, vpn: LocalVpn, instance: InstanceNetns) -> None:
        self._vpn = vpn
        self._instance = instance

    @property
    def netns_path(self) -> Path:
        return self._instance.path

    async def release(self) -> None:
        await self._vpn._release(self._instance)


class LocalVpn:
    """The node's VPNs (see the module docstring). ``enabled=False`` builds no data plane at all."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.registry = VpnRegistry()
        reason = (
            netns.unavailable_reason()
            if enabled
            else "VPNs are off for this node (LocalNetworkConfig(vpn=False), or activity_runtime='idle')"
        )
        self.unavailable: str | None = reason
        self._plane = DataPlane(netns.node_prefix()) if reason is None else None
        self._relays: dict[str, set[Relay]] = {}
        self._instances: set[InstanceNetns] = set()
        self._closed = False

    def __repr__(self) -> str:
        state = "ready" if self._plane is not None else f"API only ({self.unavailable})"
        return f"<LocalVpn networks={len(list(self.registry))} {state}>"

    @property
    def available(self) -> bool:
        """Whether activities can join VPNs on this machine."""
        return self._plane is not None

    def namespaces(self) -> list[str]:
        """The network namespaces this node has now (hubs and activities), by name."""
        return netns.list_netns(self._plane.prefix) if self._plane is not None else []

    async def start(self) -> None:
        """Remove namespaces left behind by nodes whose process is gone."""
        if self._plane is not None:
            await netns.remove_stale()

    async def aclose(self) -> None:
        """Close the relayed connections, then remove every namespace of this node (activities ended first)."""
        self._closed = True
        for network_id in list(self._relays):
            await self._close_relays(network_id)
        for instance in list(self._instances):
            await self._release(instance)
        if self._plane is not None:
            await self._plane.aclose()

    # -- the REST API's operations -----------------------------------------------------------------------

    async def remove(self, owner: str, network_id: str) -> None:
        """Remove ``owner``'s network: its relayed connections are closed, its hub removed."""
        self.registry.remove(owner, network_id)
        await self._close_relays(network_id)
        if self._plane is not None:
            await self._plane.remove_hub(network_id)

    async def add_address(self, owner: str, network_id: str, body: Mapping[str, Any]) -> None:
        """Add one of the requestor's addresses (and put it on the hub's bridge when the hub exists)."""
        record = self.registry.get(owner, network_id)
        address = record.add_address(body["ip"])
        if self._plane is not None and isinstance(address, ipaddress.IPv4Address):
            try:
                await self._plane.add_requestor_address(network_id, address)
            except netns.NetnsError as exc:
                _log.error("local VPN: %s", exc)

    # -- the exe-unit's side -------------------------------------------------------------------------------

    def joiner(self) -> NetworkJoiner | None:
        """What a runtime calls at ``deploy`` to join the VPNs of its ``net`` (``None``: no data plane here)."""
        if self._plane is None:
            return None
        return self._join

    async def _join(self, networks: Sequence[DeployNetwork], *, holder_pid: int | None = None) -> NetworkLease:
        if self._plane is None or self._closed:
            raise RuntimeFailure(f"this provider cannot join VPNs: {self.unavailable or 'the node is stopping'}")
        joins = [self._check(position, entry) for position, entry in enumerate(networks)]
        seen = [join.network_id for join in joins]
        for network_id in seen:
            if seen.count(network_id) > 1:
                raise RuntimeFailure(f"deploy: net names network {network_id} twice; join each network once")
        try:
            instance = await self._plane.attach(joins, holder_pid=holder_pid)
        except netns.NetnsError as exc:
            raise RuntimeFailure(f"deploy: cannot join the VPN: {exc}") from exc
        self._instances.add(instance)
        return _Lease(self, instance)

    def _check(self, position: int, entry: DeployNetwork) -> Join:
        where = f"deploy: net[{position}]"
        record = self.registry.find(entry.network_id)
        if record is None:
            raise RuntimeFailure(
                f"{where}: network {entry.network_id!r} does not exist on this node (removed, or never created): "
                "create it first (Golem.create_network, POST /net-api/v1/net)"
            )
        network = record.network
        if not isinstance(network, ipaddress.IPv4Network):
            raise RuntimeFailure(f"{where}: network {entry.network_id} is IPv6 ({network}); the local VPN is IPv4 only")
        try:
            given = ipaddress.ip_network(f"{entry.ip}/{entry.mask}" if entry.mask else entry.ip, strict=False)
        except ValueError as exc:
            raise RuntimeFailure(
                f"{where}: ip {entry.ip!r} / mask {entry.mask!r} is not an address range: {exc}"
            ) from None
        if given != network:
            raise RuntimeFailure(
                f"{where}: ip {entry.ip!r} mask {entry.mask!r} is {given}, but network {entry.network_id} is {network}"
            )
        try:
            node_ip = ipaddress.IPv4Address(entry.node_ip)
        except ValueError:
            raise RuntimeFailure(f"{where}: nodeIp {entry.node_ip!r} is not an IPv4 address") from None
        if node_ip not in network or forbidden_address(node_ip):
            raise RuntimeFailure(f"{where}: nodeIp {node_ip} is not an address of network {network}")
        if network.prefixlen < 31 and node_ip in (network.network_address, network.broadcast_address):
            raise RuntimeFailure(f"{where}: nodeIp {node_ip} is the network or broadcast address of {network}")
        if node_ip in record.addresses:
            raise RuntimeFailure(
                f"{where}: nodeIp {node_ip} is the requestor's own address in network {network}; "
                "give the instance another address"
            )
        for address in entry.nodes:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise RuntimeFailure(f"{where}: nodes has {address!r}, which is not an IP address") from None
        requestor = tuple(a for a in record.addresses if isinstance(a, ipaddress.IPv4Address))
        return Join(network_id=record.network_id, network=network, requestor_addresses=requestor, node_ip=node_ip)

    async def _release(self, instance: InstanceNetns) -> None:
        self._instances.discard(instance)
        if self._plane is not None:
            await self._plane.detach(instance)

    # -- the relay's side ------------------------------------------------------------------------------------

    async def open_tcp(
        self, record: NetworkRecord, address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TCP connection from the requestor's first address to ``address:port`` in ``record``'s VPN.

        :class:`TcpUnreachable` when no activity is at the address (at once) or nothing answers within
        :data:`TCP_CONNECT_TIMEOUT`; :class:`TcpRefused` when the activity refuses (nothing listens there).
        """
        plane = self._plane
        if plane is None or not isinstance(address, ipaddress.IPv4Address):
            raise TcpUnreachable(f"no VPN data plane here for {address}")
        dialer = plane.dialer(record.network_id)
        if dialer is None or not plane.member_at(record.network_id, address):
            raise TcpUnreachable(f"no activity is at {address} in network {record.network_id}")
        try:
            return await asyncio.wait_for(dialer.open_connection(str(address), port), TCP_CONNECT_TIMEOUT)
        except asyncio.TimeoutError:
            raise TcpUnreachable(f"{address}:{port} did not answer within {TCP_CONNECT_TIMEOUT:g} s") from None
        except ConnectionRefusedError:
            raise TcpRefused(f"{address}:{port} refused the connection") from None
        except (OSError, netns.NetnsError) as exc:
            raise TcpUnreachable(f"{address}:{port} cannot be reached: {exc}") from exc

    def track_relay(self, network_id: str, relay: Relay) -> Callable[[], None]:
        """Register an open relay so that removing the network (or the node stopping) closes it; returns the
        function that unregisters it."""
        relays = self._relays.setdefault(network_id, set())
        relays.add(relay)

        def forget() -> None:
            relays.discard(relay)

        return forget

    async def _close_relays(self, network_id: str) -> None:
        for relay in list(self._relays.pop(network_id, set())):
            await relay.aclose()

    def check_open(self) -> None:
        """500 ``Cancelled`` (the daemon's word for a stopped VPN actor) when the node is stopping."""
        if self._closed:
            raise VpnApiError(500, "Cancelled")


class Relay(Protocol):
    """An open requestor connection into a VPN, closed when its network goes."""

    async def aclose(self) -> None:
        """Close both ends."""
        ...
