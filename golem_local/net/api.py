"""The net API of the local node, as yagna 0.17.6 serves it: ``/net-api/v1`` and, the same, ``/net-api/v2/vpn``.

Routes (below each prefix): ``GET``/``POST /net``, ``GET``/``DELETE /net/{id}``, ``GET``/``POST
/net/{id}/addresses``, ``GET``/``POST /net/{id}/nodes``, ``DELETE /net/{id}/nodes/{nodeId}``, and the
WebSocket ``GET /net/{id}/tcp/{ip}/{port}``; plus ``GET /net-api/v2/net/status``. Answers follow the daemon's
(recorded in ``/work/proto/vpn/daemon_answers.md``, summed up in ``docs/local-network.md``): success bodies
``null``; ``{"message"}`` errors with 400/404/409; 403 and 504 with an empty body; ``text/plain`` for bodies
that are not the expected JSON (``Content type error``, ``Json deserialize error: …``); an empty 404 for any
other path under ``/net-api`` (``/net/{id}/tcp``, ``/raw/…``, a trailing slash).

The WebSocket connects first and upgrades after, as the daemon does, so that a failure is an HTTP answer: the
port must be a u16 (404 ``can not parse "70000" to a u16``), the network the caller's (403/404), the address an
IP (400) that may be used (400 ``IP address not allowed``); then the TCP connection inside the VPN (from the
requestor's first address): refused → 400 ``Socket closed``; nobody there or no answer within 5 s → 504. Only
a connected stream gets its 101. Then binary and text frames from the client are bytes for the stream, what
the stream says goes back in binary frames, either end closing closes the other (the daemon leaves the TCP
connection open when the client closes the WebSocket; this node closes it), and the server pings the client
after 10 s without a frame from it and closes when no pong comes within 5 s (the daemon pings every 5 s and
closes after 10 s without a frame: about the same patience, in aiohttp's terms).

Differences from the daemon, on purpose: an address with no member answers 504 at once (the daemon waits its
5 s); the text of a ``Json deserialize error`` has no line and column.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import WSMsgType, web

from golem_local.limits import MAX_JSON_DEPTH, json_depth
from golem_local.net.model import NetworkRecord, VpnApiError, forbidden_address
from golem_local.net.vpn import LocalVpn, TcpRefused, TcpUnreachable
from golem_shared.tasks import TaskSet

__all__ = ["NET_PREFIXES", "add_net_routes"]

_log = logging.getLogger(__name__)

NET_PREFIXES = ("/net-api/v1", "/net-api/v2/vpn")
_READ_CHUNK = 256 * 1024
_WRITE_BUFFER = 1024 * 1024  # bytes queued towards the member before the relay waits for them to drain
_HEARTBEAT = 10.0  # aiohttp pings after this much silence and closes when no pong follows within half of it

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _answer(error: VpnApiError) -> web.Response:
    if error.text is not None:
        return web.Response(status=error.status, text=error.text, content_type="text/plain")
    if error.message is None:
        return web.Response(status=error.status)
    return _json({"message": error.message}, error.status)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(body, separators=(",", ":")), content_type="application/json")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "sequence"
    if isinstance(value, dict):
        return "map"
    return f"string {json.dumps(value)}"


async def _body(request: web.Request, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON object of a request with string fields ``required`` and string-or-null ``optional``, or 400 in
    ``text/plain`` as the daemon's body extractor answers (``Content type error``, ``Json deserialize error``)."""
    if request.content_type != "application/json":
        raise VpnApiError(400, text="Content type error")
    raw = await request.read()
    try:
        data = json.loads(raw)
    except RecursionError:  # serde_json's limit is 128 levels; the words are its own
        raise VpnApiError(400, text="Json deserialize error: recursion limit exceeded") from None
    except ValueError as exc:
        raise VpnApiError(400, text=f"Json deserialize error: {exc}") from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise VpnApiError(400, text="Json deserialize error: recursion limit exceeded")
    if isinstance(data, str):  # a JSON string holding the object: the daemon's extractor accepts that too
        with contextlib.suppress(ValueError):
            data = json.loads(data)
    if not isinstance(data, dict):
        raise VpnApiError(400, text=f"Json deserialize error: invalid type: {_kind(data)}, expected a map")
    for name in required:
        if name not in data:
            raise VpnApiError(400, text=f"Json deserialize error: missing field `{name}`")
    for name in (*required, *optional):
        value = data.get(name)
        if isinstance(value, str) or (value is None and name in optional):
            continue
        raise VpnApiError(400, text=f"Json deserialize error: invalid type: {_kind(value)}, expected a string")
    return data


class _Routes:
    def __init__(self, vpn: LocalVpn, owner: str, node_id: str) -> None:
        self.vpn = vpn
        self.owner = owner
        self.node_id = node_id

    def record(self, request: web.Request) -> NetworkRecord:
        return self.vpn.registry.get(self.owner, request.match_info["network_id"])

    async def list_networks(self, request: web.Request) -> web.StreamResponse:
        return _json([record.to_json() for record in self.vpn.registry.of(self.owner)])

    async def create_network(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request, ("ip",), ("mask", "gateway"))
        record = self.vpn.registry.create(self.owner, body)
        _log.debug("local VPN: network %s (%s/%s) created", record.network_id, record.address, record.prefix)
        return _json(record.to_json())

    async def get_network(self, request: web.Request) -> web.StreamResponse:
        return _json(self.record(request).to_json())

    async def remove_network(self, request: web.Request) -> web.StreamResponse:
        await self.vpn.remove(self.owner, request.match_info["network_id"])
        return _json(None)

    async def list_addresses(self, request: web.Request) -> web.StreamResponse:
        return _json(self.record(request).addresses_json())

    async def add_address(self, request: web.Request) -> web.StreamResponse:
        self.record(request)  # 403/404 before the body, as the daemon
        body = await _body(request, ("ip",))
        await self.vpn.add_address(self.owner, request.match_info["network_id"], body)
        return _json(None)

    async def list_nodes(self, request: web.Request) -> web.StreamResponse:
        return _json(self.record(request).nodes_json())

    async def add_node(self, request: web.Request) -> web.StreamResponse:
        record = self.record(request)
        body = await _body(request, ("id", "ip"))
        record.add_node(body["id"], body["ip"])
        return _json(None)

    async def remove_node(self, request: web.Request) -> web.StreamResponse:
        self.record(request).remove_node(request.match_info["node_id"])
        return _json(None)

    async def status(self, request: web.Request) -> web.StreamResponse:
        host, port = request.transport.get_extra_info("sockname")[:2] if request.transport else ("127.0.0.1", 0)
        return _json({"nodeId": self.node_id, "listenIp": f"{host}:{port}", "publicIp": None, "sessions": 0})

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=404)

    async def connect_tcp(self, request: web.Request) -> web.StreamResponse:
        port_text = request.match_info["port"]
        if not port_text.isdigit() or int(port_text) > 65535:
            raise VpnApiError(404, text=f'can not parse "{port_text}" to a u16')
        record = self.record(request)
        try:
            address = ipaddress.ip_address(request.match_info["ip"])
        except ValueError:
            raise VpnApiError(400, "Invalid IP address: invalid IP address syntax") from None
        if forbidden_address(address):
            raise VpnApiError(400, f"IP address not allowed: {address}")
        self.vpn.check_open()
        try:
            reader, writer = await self.vpn.open_tcp(record, address, int(port_text))
        except TcpRefused:
            raise VpnApiError(400, "Socket closed") from None
        except TcpUnreachable as exc:
            _log.debug("local VPN: %s", exc)
            raise VpnApiError(504) from None
        ws = web.WebSocketResponse(heartbeat=_HEARTBEAT, max_msg_size=0, compress=False)
        if not ws.can_prepare(request).ok:
            writer.close()
            raise VpnApiError(400, "the connection is made over a WebSocket: send the upgrade headers")
        relay = _TcpRelay(ws, reader, writer, f"{address}:{port_text} in {record.network_id}")
        forget = self.vpn.track_relay(record.network_id, relay)
        try:
            await ws.prepare(request)
            await relay.run()
        finally:
            forget()
            await relay.aclose()
        return ws


class _TcpRelay:
    """One requestor connection: WebSocket frames to and from a TCP stream inside a VPN."""

    def __init__(
        self, ws: web.WebSocketResponse, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str
    ) -> None:
        self.ws = ws
        self.reader = reader
        self.writer = writer
        self.name = name
        self._tasks = TaskSet(f"VPN relay to {name}", logger=_log)

    async def run(self) -> None:
        """Carry bytes both ways until either end closes."""
        self._tasks.spawn(self._to_client(), name=f"VPN relay {self.name}: to the requestor")
        try:
            async for message in self.ws:
                if message.type is WSMsgType.BINARY:
                    self.writer.write(message.data)
                elif message.type is WSMsgType.TEXT:
                    self.writer.write(message.data.encode())
                else:
                    break
                if self.writer.transport.get_write_buffer_size() > _WRITE_BUFFER:
                    await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            _log.debug("VPN relay %s: the member's side failed: %r", self.name, exc)

    async def _to_client(self) -> None:
        try:
            while data := await self.reader.read(_READ_CHUNK):
                await self.ws.send_bytes(data)
        except (ConnectionError, OSError) as exc:
            _log.debug("VPN relay %s: %r", self.name, exc)
        await self.ws.close()

    async def aclose(self) -> None:
        """Close the TCP stream and the WebSocket, and end the pump (idempotent)."""
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)
        await self._tasks.aclose(timeout=5.0)
        with contextlib.suppress(ConnectionError, OSError):
            await self.ws.close()


def _wrap(handler: Handler) -> Handler:
    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except VpnApiError as exc:
            return _answer(exc)

    return answer


def add_net_routes(app: web.Application, vpn: LocalVpn, *, owner: str, node_id: str) -> None:
    """Serve the net API of ``vpn`` for the identity ``owner`` (the node's requestor); ``node_id`` is what
    ``/net-api/v2/net/status`` names."""
    routes = _Routes(vpn, owner, node_id)
    table: Mapping[tuple[str, str], Handler] = {
        ("GET", "/net"): routes.list_networks,
        ("POST", "/net"): routes.create_network,
        ("GET", "/net/{network_id}"): routes.get_network,
        ("DELETE", "/net/{network_id}"): routes.remove_network,
        ("GET", "/net/{network_id}/addresses"): routes.list_addresses,
        ("POST", "/net/{network_id}/addresses"): routes.add_address,
        ("GET", "/net/{network_id}/nodes"): routes.list_nodes,
        ("POST", "/net/{network_id}/nodes"): routes.add_node,
        ("DELETE", "/net/{network_id}/nodes/{node_id}"): routes.remove_node,
        ("GET", "/net/{network_id}/tcp/{ip}/{port}"): routes.connect_tcp,
    }
    for prefix in NET_PREFIXES:
        for (method, path), handler in table.items():
            app.router.add_route(method, prefix + path, _wrap(handler))
    app.router.add_get("/net-api/v2/net/status", _wrap(routes.status))
    app.router.add_route("*", "/net-api/{tail:.*}", routes.not_found)
