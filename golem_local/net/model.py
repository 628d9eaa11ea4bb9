"""The VPN records of the local node, with the daemon's rules for them (yagna 0.17.6, observed and read).

A :class:`VpnRegistry` holds the networks of every identity; each :class:`NetworkRecord` its address range,
the requestor's own addresses in it and the nodes (``{ip: node id}``) the requestor announced. Nothing here
touches the machine's network: :mod:`golem_local.net.plane` builds the namespaces, and only for networks an
activity joins.

The rules, as the daemon applies them (see the module ``golem_local.net.api`` for the HTTP side):

- ``POST /net`` ``{"ip", "mask"?, "gateway"?}``: ``ip`` may carry a prefix (``10.0.0.0/16``, the mask is then
  ignored); else the prefix is the count of leading one bits of ``mask`` (default /24 for IPv4, /128 for IPv6);
  host bits are kept as given (``10.2.0.7/16``); ``gateway`` is answered as given, or the first host of the
  range. The requestor's own first address is always the first host. The same range may be created any
  number of times; the id is a fresh UUIDv4 in its 32-hex form.
- addresses: any address of the range (also its network and broadcast addresses); again → no change.
- nodes: any node id (not checked); an address of the range; an address another node holds is silently
  kept for the first; one node may hold several addresses.
- ownership: an identity sees only its networks; an id it does not own is **404** ``Network not found`` when
  it owns no network at all and **403** with an empty body when it owns some.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from attrs import define, field

__all__ = [
    "IpAddress",
    "IpNetwork",
    "NetworkRecord",
    "VpnApiError",
    "VpnRegistry",
    "first_host",
    "forbidden_address",
    "parse_ip",
]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


class VpnApiError(Exception):
    """An answer of the net API other than success: ``status`` with ``{"message": message}``, or an empty body
    when ``message`` is ``None`` (the daemon's 403 and 504), or ``text`` as ``text/plain`` (its body errors)."""

    def __init__(self, status: int, message: str | None = None, *, text: str | None = None) -> None:
        super().__init__(message or text or f"HTTP {status}")
        self.status = status
        self.message = message
        self.text = text


def parse_ip(text: object, *, family: str = "IP") -> IpAddress:
    """An IP address, or 400 with the daemon's words (``Invalid IP address: invalid IP address syntax``)."""
    try:
        if not isinstance(text, str):
            raise ValueError
        address = ipaddress.ip_address(text)
    except ValueError:
        raise VpnApiError(400, f"Invalid IP address: invalid {family} address syntax") from None
    if family == "IPv4" and address.version != 4:
        raise VpnApiError(400, "Invalid IP address: invalid IPv4 address syntax")
    return address


def forbidden_address(address: IpAddress) -> bool:
    """Whether the daemon refuses ``address`` for a node or a connection (loopback, unspecified, multicast,
    the IPv4 broadcast address)."""
    return address.is_loopback or address.is_unspecified or address.is_multicast or address == _BROADCAST


def first_host(network: IpNetwork) -> IpAddress:
    """The first host of ``network``: the address after the network address (the address itself for /32, /128)."""
    if network.num_addresses == 1:
        return network.network_address
    return network.network_address + 1


def _prefix_of_mask(mask: IpAddress) -> int:
    """The count of leading one bits of ``mask`` (``255.0.255.0`` → 8, as the daemon counts)."""
    bits = int(mask)
    width = mask.max_prefixlen
    prefix = 0
    while prefix < width and bits & (1 << (width - 1 - prefix)):
        prefix += 1
    return prefix


@define
class NetworkRecord:
    """One network: its id, owner, range (``address``/``prefix``, host bits as given), mask and gateway,
    the requestor's addresses in it (first host first) and the announced nodes, ``{ip: node id}``."""

    network_id: str
    owner: str
    address: IpAddress
    prefix: int
    gateway: str
    addresses: list[IpAddress] = field(factory=list)
    nodes: dict[IpAddress, str] = field(factory=dict)

    @property
    def network(self) -> IpNetwork:
        """The address range."""
        return ipaddress.ip_network(f"{self.address}/{self.prefix}", strict=False)

    @property
    def mask(self) -> str:
        """The netmask, dotted (or the IPv6 form)."""
        return str(self.network.netmask)

    @property
    def requestor_ip(self) -> IpAddress:
        """The requestor's own first address: the first host of the range."""
        return self.addresses[0]

    def to_json(self) -> dict[str, Any]:
        """``{"id", "ip": "<address>/<prefix>", "mask", "gateway"}``."""
        return {
            "id": self.network_id,
            "ip": f"{self.address}/{self.prefix}",
            "mask": self.mask,
            "gateway": self.gateway,
        }

    def addresses_json(self) -> list[dict[str, str]]:
        """``[{"ip": "<address>/<prefix>"}, …]``: with the prefix, as the daemon answers (not as its spec says)."""
        return [{"ip": f"{address}/{self.prefix}"} for address in self.addresses]

    def nodes_json(self) -> list[dict[str, str]]:
        """``[{"id", "ip"}, …]``, one entry per address of each node."""
        return [{"id": node_id, "ip": str(address)} for address, node_id in self.nodes.items()]

    def add_address(self, text: object) -> IpAddress:
        """Add one of the requestor's addresses (400 outside the range; again: no change)."""
        address = parse_ip(text)
        if address.version != self.address.version or address not in self.network:
            raise VpnApiError(400, f"Network not found for IP address: {address}")
        if address not in self.addresses:
            self.addresses.append(address)
        return address

    def add_node(self, node_id: str, text: object) -> bool:
        """Announce ``node_id`` at an address; False when another node holds it already (the daemon says 200)."""
        address = parse_ip(text)
        if forbidden_address(address):
            raise VpnApiError(400, f"IP address not allowed: {address}")
        if address.version != self.address.version or address not in self.network:
            raise VpnApiError(400, f"Invalid network IP address: {address}")
        holder = self.nodes.get(address)
        if holder is not None and holder != node_id:
            return False
        self.nodes[address] = node_id
        return True

    def remove_node(self, node_id: str) -> list[IpAddress]:
        """Forget every address of ``node_id`` (none: no change); the addresses it held."""
        gone = [address for address, holder in self.nodes.items() if holder == node_id]
        for address in gone:
            del self.nodes[address]
        return gone


def new_network(owner: str, body: Mapping[str, Any]) -> NetworkRecord:
    """A network from a ``NewNetwork`` body (already checked to have a string ``ip``), by the daemon's rules."""
    ip_text: str = body["ip"]
    mask_text = body.get("mask")
    gateway_text = body.get("gateway")
    address_text, slash, prefix_text = ip_text.partition("/")
    address = parse_ip(address_text)
    if slash:
        if not prefix_text.isdigit() or int(prefix_text) > address.max_prefixlen:
            raise VpnApiError(400, f"Invalid network CIDR: {address}/{prefix_text}")
        prefix = int(prefix_text)
    elif mask_text is not None:
        mask = parse_ip(mask_text, family="IPv4" if address.version == 4 else "IPv6")
        prefix = _prefix_of_mask(mask)
    else:
        prefix = 24 if address.version == 4 else 128
    if gateway_text is not None:
        parse_ip(gateway_text)
    record = NetworkRecord(
        network_id=uuid.uuid4().hex,
        owner=owner,
        address=address,
        prefix=prefix,
        gateway=str(gateway_text) if gateway_text is not None else "",
    )
    record.addresses.append(first_host(record.network))
    if gateway_text is None:
        record.gateway = str(first_host(record.network))
    return record


class VpnRegistry:
    """The networks of every identity of the node, by id."""

    def __init__(self) -> None:
        self._networks: dict[str, NetworkRecord] = {}

    def __iter__(self) -> Iterator[NetworkRecord]:
        return iter(list(self._networks.values()))

    def create(self, owner: str, body: Mapping[str, Any]) -> NetworkRecord:
        """A new network of ``owner`` (see :func:`new_network`)."""
        record = new_network(owner, body)
        self._networks[record.network_id] = record
        return record

    def of(self, owner: str) -> list[NetworkRecord]:
        """``owner``'s networks, sorted by id (as the daemon's ``GET /net``)."""
        return sorted((r for r in self._networks.values() if r.owner == owner), key=lambda r: r.network_id)

    def find(self, network_id: str) -> NetworkRecord | None:
        """A network by id whoever owns it (for the providers' exe-units), or ``None``."""
        return self._networks.get(network_id)

    def get(self, owner: str, network_id: str) -> NetworkRecord:
        """``owner``'s network ``network_id``; else 404 ``Network not found`` (owns none) or 403 (owns some)."""
        record = self._networks.get(network_id)
        if record is not None and record.owner == owner:
            return record
        if any(r.owner == owner for r in self._networks.values()):
            raise VpnApiError(403)
        raise VpnApiError(404, "Network not found")

    def remove(self, owner: str, network_id: str) -> NetworkRecord:
        """Remove ``owner``'s network (same errors as :meth:`get`)."""
        record = self.get(owner, network_id)
        del self._networks[network_id]
        return record
