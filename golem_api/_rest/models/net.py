"""Values of the net API: :class:`NetworkInfo` (a VPN as the node describes it), :class:`NetworkAddress`,
:class:`NetworkNode`."""

from __future__ import annotations

from typing import Any

from attrs import frozen

from golem_api._rest.models._fields import Fields

__all__ = ["NetworkAddress", "NetworkInfo", "NetworkNode"]


@frozen
class NetworkInfo:
    """A VPN: its id, its range (``ip`` as the daemon answers it, ``"192.168.0.0/24"``), mask and gateway."""

    id: str
    ip: str
    mask: str | None = None
    gateway: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> NetworkInfo:
        """Parse ``{"id", "ip", "mask", "gateway"}``."""
        f = Fields("Network", data)
        return cls(id=f.text("id"), ip=f.text("ip"), mask=f.opt_text("mask"), gateway=f.opt_text("gateway"))


@frozen
class NetworkAddress:
    """One of the requestor's addresses in a VPN (the daemon answers it with its prefix: ``192.168.0.1/24``)."""

    ip: str

    @classmethod
    def from_json(cls, data: Any) -> NetworkAddress:
        """Parse ``{"ip"}``."""
        return cls(ip=Fields("Address", data).text("ip"))


@frozen
class NetworkNode:
    """A node announced in a VPN: its node id at one address."""

    id: str
    ip: str

    @classmethod
    def from_json(cls, data: Any) -> NetworkNode:
        """Parse ``{"id", "ip"}``."""
        f = Fields("Node", data)
        return cls(id=f.text("id"), ip=f.text("ip"))
