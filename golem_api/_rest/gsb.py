"""The GSB API (``/gsb-api/v1``): services the requestor binds on the node's bus, and their WebSocket.

A requestor that serves or receives a file over gftp binds a service on ``/public/gftp/<id>`` with the
components it answers (``POST /services`` → 201 ``{"servicesId", "listen": {"on", "components"}}``), opens
``/services/<servicesId>`` as a WebSocket (subprotocol ``gsb+flexbuffers``) and answers the requests that
arrive there; ``DELETE /services/<servicesId>`` unbinds them and closes the socket. The frames are encoded by
:mod:`golem_shared.gftp`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from attrs import frozen

from golem_api._rest import routes
from golem_api._rest.models._fields import Fields, parse_nothing
from golem_api._rest.routes import Requester, WebSocketOpener
from golem_api.errors import ConfigurationError
from golem_shared.gftp import GSB_SUBPROTOCOL

if TYPE_CHECKING:
    import aiohttp

__all__ = ["GsbApi", "GsbServices"]


@frozen
class GsbServices:
    """Services bound on the bus: ``services_id`` names them for the WebSocket and for unbinding."""

    services_id: str
    on: str
    components: tuple[str, ...]

    @classmethod
    def from_json(cls, data: Any) -> GsbServices:
        """Parse ``{"servicesId", "listen": {"on", "components"}}``."""
        f = Fields("ServicesResponse", data)
        listen = f.nested("listen")
        return cls(services_id=f.text("servicesId"), on=listen.text("on"), components=listen.texts("components"))


class GsbApi:
    """Calls of ``/gsb-api/v1``; get it as ``RestClient.gsb``."""

    def __init__(self, request: Requester, open_websocket: WebSocketOpener) -> None:
        self._request = request
        self._open_websocket = open_websocket

    async def bind_services(self, on: str, components: Sequence[str]) -> GsbServices:
        """Bind the ``components`` (message names such as ``GetChunk``) under the bus address ``on``."""
        if not on.startswith("/"):
            raise ConfigurationError(f"a GSB address starts with '/', e.g. '/public/gftp/<id>'; got {on!r}")
        if isinstance(components, str) or not components or not all(isinstance(c, str) and c for c in components):
            raise ConfigurationError(f"components must be a non-empty list of message names, got {components!r}")
        body = {"listen": {"on": on, "components": list(components)}}
        return await self._request(routes.BIND_SERVICES, json=body, parse=GsbServices.from_json)

    async def unbind_services(self, services_id: str) -> None:
        """Unbind services; the node closes their WebSocket and cancels requests still pending."""
        await self._request(routes.UNBIND_SERVICES, services_id, parse=parse_nothing)

    async def connect(self, services_id: str) -> aiohttp.ClientWebSocketResponse[bool]:
        """Open the WebSocket on which the node sends requests to the bound services; the caller closes it."""
        return await self._open_websocket(routes.SERVICE_MESSAGES, services_id, protocols=(GSB_SUBPROTOCOL,))
