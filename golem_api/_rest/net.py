"""The net API (``/net-api/v1``): VPNs between the requestor and its providers' activities.

A requestor creates a network (``POST /net`` ``{"ip", "mask"?, "gateway"?}``), takes its own address in it
(``POST /net/{id}/addresses``), announces each provider's node at an address before deploying there (``POST
/net/{id}/nodes``) and removes it when the activity ends; ``DELETE /net/{id}`` removes the network. A TCP
stream to ``ip:port`` inside the network is a WebSocket (``GET /net/{id}/tcp/{ip}/{port}``, binary frames
both ways) that the node opens only once the TCP connection is made: 400 when the member refused it (nothing
listens there), 504 when nothing answered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from golem_api._rest import routes
from golem_api._rest.models._fields import parse_list, parse_nothing
from golem_api._rest.models.net import NetworkAddress, NetworkInfo, NetworkNode
from golem_api._rest.routes import Requester, WebSocketOpener
from golem_api.errors import ConfigurationError

if TYPE_CHECKING:
    import aiohttp

__all__ = ["NetApi"]


class NetApi:
    """Calls of ``/net-api/v1``; get it as ``RestClient.net``."""

    def __init__(self, request: Requester, open_websocket: WebSocketOpener) -> None:
        self._request = request
        self._open_websocket = open_websocket

    async def create_network(self, ip: str, mask: str | None = None, gateway: str | None = None) -> NetworkInfo:
        """A new network over the range ``ip`` (``"192.168.0.0"``, or with a prefix) and ``mask``."""
        body = {"ip": ip, **({"mask": mask} if mask else {}), **({"gateway": gateway} if gateway else {})}
        return await self._request(routes.CREATE_NETWORK, json=body, parse=NetworkInfo.from_json)

    async def list_networks(self) -> list[NetworkInfo]:
        """The caller's networks."""
        return await self._request(routes.LIST_NETWORKS, parse=parse_list(NetworkInfo.from_json))

    async def get_network(self, network_id: str) -> NetworkInfo:
        """One network."""
        return await self._request(routes.GET_NETWORK, network_id, parse=NetworkInfo.from_json)

    async def remove_network(self, network_id: str) -> None:
        """Remove a network; its TCP connections end."""
        await self._request(routes.REMOVE_NETWORK, network_id, parse=parse_nothing)

    async def list_addresses(self, network_id: str) -> list[NetworkAddress]:
        """The requestor's addresses in a network."""
        return await self._request(routes.LIST_ADDRESSES, network_id, parse=parse_list(NetworkAddress.from_json))

    async def add_address(self, network_id: str, ip: str) -> None:
        """Give the requestor the address ``ip`` in a network."""
        await self._request(routes.ADD_ADDRESS, network_id, json={"ip": ip}, parse=parse_nothing)

    async def list_nodes(self, network_id: str) -> list[NetworkNode]:
        """The nodes announced in a network."""
        return await self._request(routes.LIST_NODES, network_id, parse=parse_list(NetworkNode.from_json))

    async def add_node(self, network_id: str, node_id: str, ip: str) -> None:
        """Announce the node ``node_id`` at ``ip`` in a network."""
        await self._request(routes.ADD_NODE, network_id, json={"id": node_id, "ip": ip}, parse=parse_nothing)

    async def remove_node(self, network_id: str, node_id: str) -> None:
        """Remove every address of ``node_id`` from a network."""
        await self._request(routes.REMOVE_NODE, network_id, node_id, parse=parse_nothing)

    async def connect_tcp(self, network_id: str, ip: str, port: int) -> aiohttp.ClientWebSocketResponse[bool]:
        """Open a TCP stream to ``ip:port`` in a network, as a WebSocket of binary frames; the caller closes it.

        Raises the node's refusal as an :class:`~golem_api.errors.ApiError` (400: refused or a bad address,
        504: nothing answered, 403/404: not the caller's network).
        """
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ConfigurationError(f"port must be a TCP port number, 1-65535, got {port!r}")
        return await self._open_websocket(routes.CONNECT_TCP, network_id, ip, str(port), protocols=())
