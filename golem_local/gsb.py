"""The GSB API of the local node (``/gsb-api/v1``): a requestor binds services that the node's providers call.

This is how a requestor serves files without a ``gftp`` program (daemon >= 0.13)::

    POST   /gsb-api/v1/services {"listen": {"on": "/public/gftp/<id>", "components": [...]}}
           -> 201 {"servicesId": sid, "listen": {"on", "components"}}   (no ``links``: neither the spec
                                         nor the daemon (0.17) has them)
    GET    /gsb-api/v1/services/<sid>    WebSocket, subprotocol ``gsb+flexbuffers``; the app key may also come
                                         as ``?authToken=`` (browsers cannot set headers on a WebSocket)
    DELETE /gsb-api/v1/services/<sid>    200; closes the WebSocket and fails the calls still waiting

Frames are binary FlexBuffers (:mod:`golem_shared.gftp`): the node sends requests ``{id, component, payload}``
and the requestor answers ``{id, payload}`` or ``{id, error: {variant: message}}``.

The provider side reaches a bound service through :meth:`GsbRouter.call`, which matches answers to requests
by id and always ends within its ``timeout``: :class:`GsbCallError` when no service is bound on the address
(or it lacks the component), when nobody connects to the WebSocket in time, when the service answers an
error, or when the socket closes or the service is unbound before the answer. A second WebSocket on the
same services replaces the first one (whose waiting calls fail), as on the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from golem_local.http import HttpError, json_response, read_json
from golem_shared.errors import LocalNodeError
from golem_shared.gftp import (
    GSB_SUBPROTOCOL,
    GftpMessageError,
    GsbRequest,
    GsbResponse,
    decode_response,
    encode_request,
)
from golem_shared.tasks import wait_event
from golem_shared.wsframes import install_splitter

__all__ = [
    "GSB_PREFIX",
    "GsbCallError",
    "GsbRouter",
    "add_gsb_routes",
]

GSB_PREFIX = "/gsb-api/v1"

_log = logging.getLogger(__name__)

_MAX_FRAME = 16 * 1024 * 1024  # bytes of one WebSocket frame from the requestor (a chunk with its envelope)
_CLOSE_TIMEOUT = 2.0  # seconds a closing handshake may take


class GsbCallError(LocalNodeError):
    """A call to a bound GSB service did not get an answer; the message says why and what to do."""


class _Services:
    """One ``POST /services``: its address prefix, components, current WebSocket and waiting calls."""

    def __init__(self, services_id: str, on: str, components: tuple[str, ...]) -> None:
        self.services_id = services_id
        self.on = on
        self.components = components
        self.socket: web.WebSocketResponse | None = None
        self.connected = asyncio.Event()
        self.pending: dict[str, tuple[web.WebSocketResponse, asyncio.Future[Any]]] = {}
        self.closed = False

    def fail_pending(self, reason: str, socket: web.WebSocketResponse | None = None) -> None:
        """Fail the calls waiting for an answer (those sent over ``socket``, or all of them)."""
        for call_id, (sent_on, future) in list(self.pending.items()):
            if socket is None or sent_on is socket:
                del self.pending[call_id]
                if not future.done():
                    future.set_exception(GsbCallError(reason))


class GsbRouter:
    """The services requestors have bound, and calls to them from the provider side."""

    def __init__(self) -> None:
        self._services: dict[str, _Services] = {}
        self._ids = itertools.count(1)

    # -- binding ------------------------------------------------------------------------------------------

    def bind(self, on: str, components: list[str]) -> _Services:
        """Bind ``components`` on the address ``on``; 400 when already bound or malformed."""
        if not on.startswith("/"):
            raise HttpError(
                400, f"listen.on must be a GSB address starting with '/', e.g. /public/gftp/<id>; got {on!r}"
            )
        if any(s.on == on for s in self._services.values()):
            raise HttpError(400, f"GSB services on {on} are already bound: DELETE them first, or use another address")
        services = _Services(secrets.token_hex(16), on, tuple(components))
        self._services[services.services_id] = services
        return services

    def get(self, services_id: str) -> _Services:
        """Bound services by id; 404 when unknown."""
        services = self._services.get(services_id)
        if services is None:
            raise HttpError(404, f"no GSB services with id {services_id} are bound here")
        return services

    async def unbind(self, services_id: str) -> None:
        """Unbind: close the WebSocket and fail the waiting calls; 404 when unknown."""
        services = self.get(services_id)
        del self._services[services_id]
        await self._shut(services, f"the GSB services on {services.on} were unbound (DELETE /services)")

    async def _shut(self, services: _Services, reason: str) -> None:
        services.closed = True
        services.fail_pending(reason)
        services.connected.set()  # wake callers waiting for a connection: they see `closed`
        socket, services.socket = services.socket, None
        if socket is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(socket.close(code=WSCloseCode.GOING_AWAY, message=b"unbound"), _CLOSE_TIMEOUT)

    async def aclose(self) -> None:
        """Unbind everything (the node is stopping)."""
        services, self._services = list(self._services.values()), {}
        for item in services:
            await self._shut(item, "the local node is shutting down")

    # -- calling ------------------------------------------------------------------------------------------

    def _find(self, address: str, component: str) -> _Services:
        services = next((s for s in self._services.values() if s.on == address), None)
        if services is None:
            raise GsbCallError(
                f"no GSB service is bound on {address}: the requestor must POST /gsb-api/v1/services "
                f"with listen.on = {address} and keep its WebSocket open while the transfer runs"
            )
        if component not in services.components:
            raise GsbCallError(
                f"the GSB service on {address} does not listen for {component} (its components: "
                f"{', '.join(services.components) or 'none'}); bind it with that component"
            )
        return services

    def new_call_id(self) -> str:
        """An id for a call of :meth:`call_frame` (unique among this router's calls)."""
        return str(next(self._ids))

    async def call(self, address: str, component: str, payload: Any, *, timeout: float) -> Any:
        """Send ``component`` with ``payload`` to the service bound on ``address``; its answer's payload.

        Raises :class:`GsbCallError` (see the module docstring); never waits longer than ``timeout``. Blobs
        in the answer (a chunk's content) are read-only views of its frame.
        """
        call_id = self.new_call_id()
        frame = encode_request(GsbRequest(id=call_id, component=component, payload=payload))
        return await self.call_frame(address, component, call_id, frame, timeout=timeout)

    async def call_frame(self, address: str, component: str, call_id: str, frame: bytes, *, timeout: float) -> Any:
        """:meth:`call` with the request already encoded (``frame``, for ``component``, with the id ``call_id``
        from :meth:`new_call_id`): a chunk built in place, see :func:`golem_shared.gftp.chunk_request`."""
        services = self._find(address, component)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if services.socket is None and not await wait_event(services.connected, timeout):
            raise GsbCallError(
                f"nobody connected to the WebSocket of the GSB service on {address} within {timeout:g} s: "
                f"open gsb-api/v1/services/{services.services_id} before starting the transfer"
            ) from None
        socket = services.socket
        if services.closed:
            raise GsbCallError(f"the GSB service on {address} was unbound before {component} could be sent")
        if socket is None:
            raise GsbCallError(f"the WebSocket of the GSB service on {address} closed before {component} could be sent")
        future: asyncio.Future[Any] = loop.create_future()
        services.pending[call_id] = (socket, future)
        try:
            await socket.send_bytes(frame)
            return await asyncio.wait_for(future, max(deadline - loop.time(), 0.0))
        except asyncio.TimeoutError:
            raise GsbCallError(
                f"the GSB service on {address} did not answer {component} within {timeout:g} s"
            ) from None
        except ConnectionError as exc:
            raise GsbCallError(f"the WebSocket of the GSB service on {address} is closed: {exc}") from None
        finally:
            services.pending.pop(call_id, None)

    # -- the WebSocket ------------------------------------------------------------------------------------

    async def serve(self, request: web.Request, services: _Services) -> web.WebSocketResponse:
        """Run the WebSocket of ``services`` until either side closes it."""
        socket = web.WebSocketResponse(protocols=(GSB_SUBPROTOCOL,), max_msg_size=_MAX_FRAME, autoping=True)
        await socket.prepare(request)
        old, services.socket = services.socket, socket
        if old is not None:
            services.fail_pending(f"the WebSocket of the GSB service on {services.on} was replaced by a new one", old)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    old.close(code=WSCloseCode.POLICY_VIOLATION, message=b"replaced by a new connection"),
                    _CLOSE_TIMEOUT,
                )
        services.connected.set()

        def binary(frame: bytearray) -> bool:  # a whole frame from the splitter, as it is read: no queue, no copy
            try:
                response = decode_response(frame, views=True, frozen=True)
            except GftpMessageError:
                return False  # then it comes through the loop below, which closes the socket
            self._settle(services, response)
            return True

        install_splitter(request, binary, _MAX_FRAME)
        try:
            async for message in socket:
                if message.type is not WSMsgType.BINARY:
                    if message.type is WSMsgType.TEXT:
                        await socket.close(
                            code=WSCloseCode.UNSUPPORTED_DATA, message=b"frames must be binary FlexBuffers"
                        )
                    break
                try:
                    response = decode_response(message.data, views=True)
                except GftpMessageError as exc:
                    reason = str(exc).encode("ascii", "replace")[:120]
                    await socket.close(code=WSCloseCode.POLICY_VIOLATION, message=reason)
                    break
                self._settle(services, response)
        finally:
            if services.socket is socket:
                services.socket = None
                services.connected.clear()
            services.fail_pending(f"the WebSocket of the GSB service on {services.on} closed before answering", socket)
        return socket

    @staticmethod
    def _settle(services: _Services, response: GsbResponse) -> None:
        waiting = services.pending.get(response.id)
        if waiting is None:
            _log.debug("GSB service %s: answer to unknown call %s ignored", services.on, response.id)
            return
        future = waiting[1]
        if future.done():
            return
        if response.error is not None:
            detail = "; ".join(f"{k}: {v}" for k, v in response.error.items()) or "(no detail)"
            future.set_exception(GsbCallError(f"the GSB service on {services.on} answered an error: {detail}"))
        else:
            future.set_result(response.payload)


class _GsbRoutes:
    def __init__(self, router: GsbRouter) -> None:
        self.router = router

    async def bind(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        listen = body.get("listen") if isinstance(body, dict) else None
        on = listen.get("on") if isinstance(listen, dict) else None
        components = listen.get("components") if isinstance(listen, dict) else None
        if not isinstance(on, str) or not (
            isinstance(components, list) and all(isinstance(c, str) and c for c in components)
        ):
            raise HttpError(
                400,
                'the body must be {"listen": {"on": "/public/gftp/<id>", "components": ["GetMetadata", ...]}}; '
                f"got {body!r:.200}",
            )
        services = self.router.bind(on, components)
        sid = services.services_id
        return json_response({"servicesId": sid, "listen": {"on": on, "components": components}}, status=201)

    async def unbind(self, request: web.Request) -> web.Response:
        await self.router.unbind(request.match_info["sid"])
        return json_response(None)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        services = self.router.get(request.match_info["sid"])
        return await self.router.serve(request, services)


def add_gsb_routes(app: web.Application, router: GsbRouter) -> None:
    """Serve ``router`` under ``/gsb-api/v1`` on ``app``."""
    routes = _GsbRoutes(router)
    p = GSB_PREFIX
    app.router.add_routes(
        [
            web.post(f"{p}/services", routes.bind),
            web.delete(f"{p}/services/{{sid}}", routes.unbind),
            web.get(f"{p}/services/{{sid}}", routes.messages),
        ]
    )
