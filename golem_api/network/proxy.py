"""Reach a service inside a VPN from this machine: :class:`TcpProxy` (a local port forwarded to an instance's
port) and :class:`HttpProxy` (a local HTTP server spreading requests over a cluster's running instances).

::

    async with TcpProxy(db, 6379, local_port=6379) as proxy:        # db: a Service (or its network_node)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)

    async with HttpProxy(cluster, remote_port=80, port=8080) as proxy:
        print(proxy.url)                                            # http://127.0.0.1:8080, round-robin

Both listen on ``127.0.0.1`` unless told otherwise (``port=0``/``local_port=0``: any free port, shown by
``.port`` once started), open one TCP stream into the VPN per local connection or request (the node's
WebSocket, :class:`~golem_api.network.connection.TcpConnection`), and close everything at ``aclose()`` (or at
the end of ``async with``).

yapapi's ``yapapi.contrib.service`` names, and their equivalents here:

- ``SocketProxy(ports=[8484]).run_server(service, 4242)`` → ``await TcpProxy(service, 4242, local_port=8484).start()``
- ``SocketProxy(ports=[…]).run(cluster)`` → one ``TcpProxy`` per instance and remote port
- ``LocalHttpProxy(cluster, 8080).run()`` with ``HttpProxyService(remote_port=80)`` instances →
  ``await HttpProxy(cluster, remote_port=80, port=8080).start()`` with instances of any ``Service``
- ``SocketProxy.stop()``, ``LocalHttpProxy.stop()`` → ``aclose()`` (or ``async with``)
- ``node.get_websocket_uri(port)`` and an aiohttp WebSocket of one's own → ``await node.connect(port)``

Differences on purpose: the HTTP proxy streams the answer's body whatever its framing (``Content-Length``,
chunked, or until the end) where yapapi's expects a ``Content-Length``; a request is answered ``502`` when the
instance refuses the connection or answers something that is not HTTP, ``504`` when it does not answer within
``timeout``, ``503`` when no instance is running, each with a line saying which; a client of ``TcpProxy`` whose
stream cannot be opened is disconnected at once (the reason is logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, TypeVar

from golem_api.errors import ConfigurationError, GolemError, NetworkError, VpnConnectionTimeoutError
from golem_api.network import _http
from golem_api.network.connection import FRAME_SIZE, TcpConnection
from golem_shared.tasks import TaskSet

if TYPE_CHECKING:
    from aiohttp import web

    from golem_api.network.network import Node

__all__ = ["HttpProxy", "TcpProxy"]

_log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
"""Seconds the HTTP proxy waits for an instance to start answering a request."""
DEFAULT_MAX_REQUEST_SIZE = 128 * 1024 * 1024
"""Largest request body the HTTP proxy takes (yapapi's default)."""
_LOCAL_READ = 256 * 1024


class _Member(Protocol):
    """A service instance as the proxies see it."""

    @property
    def network_node(self) -> Node | None: ...

    @property
    def name(self) -> str: ...

    @property
    def state(self) -> object: ...


def _node_of(target: Node | _Member) -> Node:
    node = getattr(target, "network_node", target)
    if node is None:
        raise NetworkError(
            f"{target!r} is not in a VPN (no network_node): run its service with run_service(..., network=network)"
        )
    return node  # type: ignore[return-value]


def _check_port(value: object, what: str, *, allow_zero: bool) -> int:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 65535:
        any_port = " (0: any free port)" if allow_zero else ""
        raise ConfigurationError(f"{what} must be a TCP port number, {low}-65535{any_port}, got {value!r}")
    return value


_Self = TypeVar("_Self", bound="_Listener")


class _Listener:
    """A local listener started by :meth:`start` and stopped by :meth:`aclose`; ``async with`` does both."""

    async def start(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self: _Self) -> _Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class TcpProxy(_Listener):
    """A local TCP port forwarded to ``remote_port`` of a VPN member (yapapi's ``SocketProxy``, one port).

    ``target`` is a service instance (its current ``network_node`` is looked up at each connection) or a
    :class:`~golem_api.network.network.Node`.
    """

    def __init__(
        self, target: Node | _Member, remote_port: int, *, local_port: int = 0, host: str = "127.0.0.1"
    ) -> None:
        self.target = target
        self.remote_port = _check_port(remote_port, "remote_port", allow_zero=False)
        self.host = host
        self._requested_port = _check_port(local_port, "local_port", allow_zero=True)
        self._server: asyncio.Server | None = None
        self._tasks = TaskSet(f"TCP proxy to port {remote_port}", logger=_log)
        self.connections = 0

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}" if self._server is not None else "not started"
        return f"<TcpProxy {where} -> {self.target!r} port {self.remote_port}>"

    @property
    def port(self) -> int:
        """The local port (the bound one once started)."""
        if self._server is not None and self._server.sockets:
            port: int = self._server.sockets[0].getsockname()[1]
            return port
        return self._requested_port

    async def start(self) -> None:
        """Listen on ``host:local_port``; ``ConfigurationError`` if that port cannot be taken."""
        if self._server is not None:
            return
        _node_of(self.target)  # fail now when the target is not in a VPN
        try:
            self._server = await asyncio.start_server(self._accept, self.host, self._requested_port)
        except OSError as exc:
            raise ConfigurationError(
                f"the TCP proxy cannot listen on {self.host}:{self._requested_port}: {exc.strerror or exc}; "
                "choose another local_port, or 0 for any free one"
            ) from exc
        _log.info("TCP proxy %s:%d -> %r port %d", self.host, self.port, self.target, self.remote_port)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._tasks.spawn(self._serve(reader, writer), name=f"TCP proxy connection {self.connections}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                connection = await _node_of(self.target).connect(self.remote_port)
            except GolemError as exc:
                _log.warning("TCP proxy on port %d: cannot open the stream: %s", self.port, exc)
                return
            async with connection:
                await _pump(reader, writer, connection)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def aclose(self) -> None:
        """Stop listening and close every forwarded connection. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self._tasks.aclose(timeout=10.0)
        if server is not None:
            await server.wait_closed()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: TcpConnection) -> None:
    """Carry bytes both ways until either side ends (a WebSocket cannot half-close: the first end ends both)."""

    async def upstream() -> None:
        with contextlib.suppress(ConnectionError, OSError, NetworkError):
            while data := await reader.read(_LOCAL_READ):
                await connection.write(data)

    async def downstream() -> None:
        with contextlib.suppress(ConnectionError, OSError, NetworkError):
            while data := await connection.read(4 * FRAME_SIZE):
                writer.write(data)
                await writer.drain()

    tasks = TaskSet("TCP proxy pump", logger=_log)
    up = tasks.spawn(upstream(), name="to the instance")
    down = tasks.spawn(downstream(), name="from the instance")
    try:
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await tasks.aclose()


Instances = Callable[[], Sequence[_Member]]


def _instances_of(target: object) -> Instances:
    if callable(target):
        return target
    if hasattr(target, "instances"):
        return lambda: list(target.instances)
    if isinstance(target, Iterable):
        members = list(target)
        return lambda: members
    raise ConfigurationError(f"HttpProxy takes a cluster or a list of service instances, got {target!r}")


class HttpProxy(_Listener):
    """A local HTTP server that sends each request to ``remote_port`` of the next running instance (round-robin)
    through the VPN (yapapi's ``LocalHttpProxy``).

    ``instances`` is a :class:`~golem_api.services.cluster.Cluster` (its instances are looked at for each
    request), a list of instances, or a function returning them. ``remote_host``, when given, replaces the
    ``Host`` header sent to the instances. ``timeout`` bounds the wait for an instance's answer to begin.
    """

    def __init__(
        self,
        instances: object,
        remote_port: int = 80,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        remote_host: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
    ) -> None:
        self._instances = _instances_of(instances)
        self.remote_port = _check_port(remote_port, "remote_port", allow_zero=False)
        self.host = host
        self.remote_host = remote_host
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigurationError(f"timeout must be a number of seconds above 0, got {timeout!r}")
        self.timeout = float(timeout)
        self.max_request_size = max_request_size
        self._requested_port = _check_port(port, "port", allow_zero=True)
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None
        self.requests = 0

    def __repr__(self) -> str:
        where = self.url if self._runner is not None else "not started"
        return f"<HttpProxy {where} -> port {self.remote_port}, {self.requests} request(s)>"

    @property
    def port(self) -> int:
        """The local port (the bound one once started)."""
        return self._bound_port if self._bound_port is not None else self._requested_port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen on ``host:port``; ``ConfigurationError`` if that port cannot be taken."""
        if self._runner is not None:
            return
        from aiohttp import web  # the server side of aiohttp, loaded only by those who serve

        app = web.Application(client_max_size=self.max_request_size)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigurationError(
                f"the HTTP proxy cannot listen on {self.host}:{self._requested_port}: {exc.strerror or exc}; "
                "choose another port, or 0 for any free one"
            ) from exc
        self._runner = runner
        self._bound_port = runner.addresses[0][1]
        _log.info("HTTP proxy at %s -> port %d of the running instances", self.url, self.remote_port)

    async def aclose(self) -> None:
        """Stop serving (requests under way are cut). Idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def _pick(self) -> _Member | None:
        running = [
            i for i in self._instances() if getattr(i.state, "id", None) == "running" and i.network_node is not None
        ]
        if not running:
            return None
        chosen = running[self.requests % len(running)]
        self.requests += 1
        return chosen

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        instance = self._pick()
        if instance is None:
            return web.Response(status=503, text="No service instance is running (in a VPN) to take the request.\n")
        node = instance.network_node
        assert node is not None
        where = f"{instance.name} ({node.ip}:{self.remote_port})"
        headers = [
            (key, self.remote_host if key.lower() == "host" and self.remote_host else value)
            for key, value in request.headers.items()
        ]
        body = await request.read() if request.can_read_body else b""
        try:
            connection = await asyncio.wait_for(node.connect(self.remote_port), self.timeout)
        except (asyncio.TimeoutError, VpnConnectionTimeoutError):
            return web.Response(status=504, text=f"{where} did not accept the connection in time.\n")
        except GolemError as exc:
            return web.Response(status=502, text=f"{where}: {exc}\n")
        async with connection:
            await connection.write(_http.request_bytes(request.method, request.path_qs, headers, body))
            try:
                head = await asyncio.wait_for(_http.read_head(connection), self.timeout)
                length = _http.body_length(head, request.method)
            except asyncio.TimeoutError:
                return web.Response(status=504, text=f"{where} did not answer within {self.timeout:g} s.\n")
            except (_http.HttpResponseError, GolemError) as exc:
                return web.Response(status=502, text=f"{where} answered something that is not HTTP: {exc}\n")
            response = web.StreamResponse(status=head.status, reason=head.reason or None)
            for key, value in head.headers:
                if key.lower() not in _http.HOP_BY_HOP | {"content-length"}:
                    response.headers.add(key, value)
            if length is not None:
                response.content_length = length
            await response.prepare(request)
            try:
                async for chunk in _http.body_chunks(connection, head, request.method):
                    await response.write(chunk)
            except (_http.HttpResponseError, GolemError) as exc:
                _log.warning("HTTP proxy: the answer of %s broke off: %s", where, exc)
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write_eof()
            return response
