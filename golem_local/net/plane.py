"""The data plane of the local VPNs: a hub namespace per VPN, a namespace per activity, veth pairs between.

::

    host netns          the node (REST, WebSockets on 127.0.0.1); nothing of any VPN: no bridge, veth or route
        │ NetnsDialer thread: setns(hub) once, then socket() on request
    <prefix>v<k>        hub of one VPN: lo, br0 holding the requestor's addresses (192.168.0.1/24), one port
        │ veth           per member (p<n>), created inside the hub so that no end ever shows in the host netns
    <prefix>i<k>        one activity: lo, eth0 = its nodeIp/prefix (eth1… for further VPNs), no default route;
                        its bubblewrap sandbox is started inside it (nsenter --net=… bwrap --share-net …), or
                        a podman container (--network ns:…); a docker container's own namespace is named
                        so instead, and given the links (``attach(holder_pid=…)``)

The namespaces are owned by the initial user namespace; a sandbox's user namespace is a child of it with no
capabilities, so nothing in a sandbox can change addresses or routes or open raw sockets. There is no route
out of a VPN: an instance reaches the members of its VPNs and nothing else (not the host, not the internet,
not another VPN, even one with the same range). IPv6 is off on the VPN links (no link-local chatter); inside
an instance ports below 1024 may be bound by its uid 0 (``ip_unprivileged_port_start=0``), as in a VM.

Teardown order matters (``ip netns del`` only removes a name; a namespace lives while anything holds it):
the sandbox's processes end first (the runtime stops them), then the relayed connections of the node and the
dialer thread, then the names are deleted. :meth:`DataPlane.detach` and :meth:`DataPlane.remove_hub` assume
that order; :meth:`DataPlane.aclose` removes everything left.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from attrs import define, field, frozen

from golem_local.net.netns import (
    NETNS_DIR,
    NetnsDialer,
    NetnsError,
    add_netns,
    delete_netns,
    ip_batch,
    list_netns,
    run_ip,
    write_sysctls,
)

__all__ = ["DEFAULT_MTU", "DataPlane", "InstanceNetns", "Join"]

_log = logging.getLogger(__name__)

DEFAULT_MTU = 1500
"""MTU of the VPN links (a Golem VM's eth0 has 1220; loopback-like speed matters more here)."""

_HUB_SYSCTLS = {
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
    "net.ipv4.ip_forward": "0",
}
_INSTANCE_SYSCTLS = {
    "net.ipv6.conf.default.disable_ipv6": "1",  # the VPN links (made later) only; lo keeps ::1
    "net.ipv4.ip_forward": "0",
    "net.ipv4.ip_unprivileged_port_start": "0",  # uid 0 of the sandbox may listen on port 80, as in a VM
}


@frozen
class Join:
    """An activity joining one VPN: its id and range, the requestor's addresses in it, the activity's address."""

    network_id: str
    network: ipaddress.IPv4Network
    requestor_addresses: tuple[ipaddress.IPv4Address, ...]
    node_ip: ipaddress.IPv4Address


@define
class _Hub:
    network_id: str
    netns: str
    network: ipaddress.IPv4Network
    dialer: NetnsDialer
    addresses: set[ipaddress.IPv4Address] = field(factory=set)
    members: dict[ipaddress.IPv4Address, str] = field(factory=dict)  # address -> instance namespace


@define(eq=False)
class InstanceNetns:
    """The namespace of one activity and where it sits in each of its VPNs."""

    name: str
    joins: tuple[Join, ...]
    released: bool = False

    @property
    def path(self) -> Path:
        """``/run/netns/<name>``, for ``nsenter --net=``."""
        return NETNS_DIR / self.name


class DataPlane:
    """The namespaces of one node's VPNs, named ``<prefix>v<k>`` (hubs) and ``<prefix>i<k>`` (activities)."""

    def __init__(self, prefix: str, *, mtu: int = DEFAULT_MTU) -> None:
        self.prefix = prefix
        self.mtu = mtu
        self._hubs: dict[str, _Hub] = {}
        self._hub_locks: dict[str, asyncio.Lock] = {}
        self._numbers = itertools.count(1)
        self._taken: dict[tuple[str, ipaddress.IPv4Address], str] = {}  # (network, address) -> instance
        self._closed = False

    def __repr__(self) -> str:
        return f"<DataPlane {self.prefix}* hubs={len(self._hubs)} members={len(self._taken)}>"

    # -- what the node asks ------------------------------------------------------------------------------

    def member_at(self, network_id: str, address: ipaddress.IPv4Address) -> bool:
        """Whether an activity is in ``network_id`` at ``address`` now."""
        return (network_id, address) in self._taken

    def dialer(self, network_id: str) -> NetnsDialer | None:
        """The dialer of ``network_id``'s hub, if the hub exists (an activity joined it)."""
        hub = self._hubs.get(network_id)
        return hub.dialer if hub is not None else None

    def holder(self, network_id: str, address: ipaddress.IPv4Address) -> str | None:
        """The namespace of the activity at ``address`` in ``network_id``, if any."""
        return self._taken.get((network_id, address))

    # -- activities ----------------------------------------------------------------------------------------

    async def attach(self, joins: Sequence[Join], *, holder_pid: int | None = None) -> InstanceNetns:
        """A namespace for one activity, in every VPN of ``joins`` (``eth0``, ``eth1``, … in that order).

        A new namespace, or with ``holder_pid`` the one that process runs in, named (``ip netns attach``) and
        given the VPN links: a docker container's, which docker makes itself and cannot be told to join. Its
        links end with it; :meth:`detach` then removes the name only.

        The addresses are reserved before anything is built, so two activities never get the same one;
        ``NetnsError`` (naming the address, or the failing command) when one is taken or a step fails.
        """
        if self._closed:
            raise NetnsError("the local node is stopping: no VPN can be joined now")
        name = f"{self.prefix}i{next(self._numbers)}"
        for join in joins:
            holder = self._taken.get((join.network_id, join.node_ip))
            if holder is not None:
                raise NetnsError(
                    f"the address {join.node_ip} of network {join.network_id} is already used by another activity; "
                    "give each instance its own address"
                )
        for join in joins:
            self._taken[(join.network_id, join.node_ip)] = name
        instance = InstanceNetns(name=name, joins=tuple(joins))
        try:
            if holder_pid is None:
                await add_netns(name)
            else:
                await run_ip("netns", "attach", name, str(holder_pid))
            await write_sysctls(name, _INSTANCE_SYSCTLS)
            commands = ["link set lo up"]
            for index, join in enumerate(joins):
                hub = await self._hub(join)
                port = f"p{next(self._numbers)}"
                await ip_batch(
                    [
                        f"link add {port} mtu {self.mtu} type veth peer name eth{index} netns {name}",
                        f"link set {port} master br0 up",
                    ],
                    netns=hub.netns,
                )
                hub.members[join.node_ip] = name
                commands += [
                    f"addr add {join.node_ip}/{join.network.prefixlen} dev eth{index}",
                    f"link set eth{index} mtu {self.mtu} up",
                ]
            await ip_batch(commands, netns=name)
        except BaseException:
            await self.detach(instance)
            raise
        _log.debug("local VPN: %s joined %s", name, ", ".join(f"{j.network_id} at {j.node_ip}" for j in joins))
        return instance

    async def detach(self, instance: InstanceNetns) -> None:
        """Take the activity out of its VPNs and remove its namespace (its sandbox must have ended). Idempotent."""
        if instance.released:
            return
        instance.released = True
        for join in instance.joins:
            if self._taken.get((join.network_id, join.node_ip)) == instance.name:
                del self._taken[(join.network_id, join.node_ip)]
            hub = self._hubs.get(join.network_id)
            if hub is not None and hub.members.get(join.node_ip) == instance.name:
                del hub.members[join.node_ip]
        await delete_netns(instance.name)  # its veth ends go with it, and their peers in the hubs

    # -- VPNs --------------------------------------------------------------------------------------------------

    async def _hub(self, join: Join) -> _Hub:
        lock = self._hub_locks.setdefault(join.network_id, asyncio.Lock())
        async with lock:
            hub = self._hubs.get(join.network_id)
            if hub is None:
                hub = await self._make_hub(join.network_id, join.network, join.requestor_addresses)
                self._hubs[join.network_id] = hub
            return hub

    async def _make_hub(
        self, network_id: str, network: ipaddress.IPv4Network, addresses: Iterable[ipaddress.IPv4Address]
    ) -> _Hub:
        netns = f"{self.prefix}v{next(self._numbers)}"
        usable = [address for address in addresses if _usable(address, network)]
        await add_netns(netns)
        dialer = NetnsDialer(netns)
        try:
            await write_sysctls(netns, _HUB_SYSCTLS)
            await ip_batch(
                [
                    "link set lo up",
                    f"link add br0 mtu {self.mtu} type bridge",
                    *(f"addr add {address}/{network.prefixlen} dev br0" for address in usable),
                    "link set br0 up",
                ],
                netns=netns,
            )
            await dialer.start()
        except BaseException:
            await dialer.aclose()
            await delete_netns(netns)
            raise
        _log.debug("local VPN: hub %s for network %s (%s)", netns, network_id, network)
        return _Hub(network_id=network_id, netns=netns, network=network, dialer=dialer, addresses=set(usable))

    async def add_requestor_address(self, network_id: str, address: ipaddress.IPv4Address) -> None:
        """Put another of the requestor's addresses on the hub's bridge (when the hub exists)."""
        hub = self._hubs.get(network_id)
        if hub is None or address in hub.addresses or not _usable(address, hub.network):
            return
        hub.addresses.add(address)
        await run_ip("addr", "add", f"{address}/{hub.network.prefixlen}", "dev", "br0", netns=hub.netns)

    async def remove_hub(self, network_id: str) -> None:
        """Remove a VPN's hub (its relayed connections must be closed): members lose their link to it."""
        hub = self._hubs.pop(network_id, None)
        self._hub_locks.pop(network_id, None)
        for key in [key for key in self._taken if key[0] == network_id]:
            del self._taken[key]
        if hub is None:
            return
        await hub.dialer.aclose()
        await delete_netns(hub.netns)

    async def aclose(self) -> None:
        """Remove every hub and every namespace with this plane's prefix (after the activities ended)."""
        self._closed = True
        for network_id in list(self._hubs):
            await self.remove_hub(network_id)
        self._taken.clear()
        for name in list_netns(self.prefix):
            await delete_netns(name)


def _usable(address: ipaddress.IPv4Address, network: ipaddress.IPv4Network) -> bool:
    """Whether ``address`` can be a host on the bridge (not the network or broadcast address of a range)."""
    if address not in network:
        return False
    if network.prefixlen >= 31:
        return True
    return address not in (network.network_address, network.broadcast_address)
