"""The HTTP client of the daemon's API: one session, one method that sends and translates failures."""

from __future__ import annotations

import asyncio
import contextlib
import json as jsonlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp

from golem_api._rest import routes
from golem_api._rest.activity import ActivityApi
from golem_api._rest.config import Api, ApiConfig
from golem_api._rest.gsb import GsbApi
from golem_api._rest.http_errors import error_for_status, node_message, unreachable_error
from golem_api._rest.market import MarketApi
from golem_api._rest.models import Identity
from golem_api._rest.net import NetApi
from golem_api._rest.payment import PaymentApi
from golem_api._rest.routes import ABSENT, ROUTES, Route
from golem_api.errors import GolemError, NodeUnreachableError, ServerError

__all__ = ["RestClient"]

T = TypeVar("T")

_log = logging.getLogger("golem_api._rest")
_KNOWN_ROUTES = frozenset(ROUTES)
_KEPT_TIMEOUTS = 64
# aiohttp >= 3.10 raises ConnectionTimeoutError when connecting takes too long; 3.9 has no such class.
_CONNECT_TIMEOUT: type[Exception] = getattr(aiohttp, "ConnectionTimeoutError", aiohttp.ServerTimeoutError)


class RestClient:
    """Typed access to a Golem node's REST API (a yagna daemon or the embedded local node).

    Use it as an async context manager, or call :meth:`close`; the HTTP session is created on first use,
    inside the running event loop.

    The connection pool has no limit by default (``max_connections=None``): every long-poll (an activity's
    state and results, events) holds a connection for as long as it waits, so a fixed pool (aiohttp's default
    is 100) makes every other request queue behind them once a run has that many instances starting, and
    their timeouts run out while they queue. The connections open are as many as the requests in flight,
    which the work bounds; idle ones are kept for reuse and closed after aiohttp's keep-alive time. Each is a
    file descriptor (two with the embedded local node, which serves in the same process): a run of a thousand
    instances needs a few thousand (``ulimit -n``); ``max_connections`` caps them instead.
    """

    def __init__(
        self,
        config: ApiConfig,
        *,
        connect_timeout: float = 5.0,
        request_timeout: float = 30.0,
        stream_read_timeout: float = 60.0,
        max_connections: int | None = None,
    ) -> None:
        if max_connections is not None and max_connections < 1:
            raise ValueError(f"max_connections must be at least 1 (or None: no limit), got {max_connections}")
        self.config = config
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.stream_read_timeout = stream_read_timeout
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._failing_since: float | None = None  # time.monotonic() of the first failure since the last answer
        self._bases: dict[Api, tuple[str, str]] = {}  # each API's base URL and its path, worked out once
        self._timeouts: dict[tuple[float, float], aiohttp.ClientTimeout] = {}
        self._market = MarketApi(self._request)
        self._payment = PaymentApi(self._request)
        self._activity = ActivityApi(self._request, self._stream)
        self._gsb = GsbApi(self._request, self._websocket)
        self._net = NetApi(self._request, self._websocket)

    def __repr__(self) -> str:
        return f"RestClient({self.config!r})"

    @property
    def market(self) -> MarketApi:
        """The market API: demands, offers, proposals, agreements."""
        return self._market

    @property
    def payment(self) -> PaymentApi:
        """The payment API: allocations, debit notes, invoices."""
        return self._payment

    @property
    def activity(self) -> ActivityApi:
        """The activity API: activities on agreed providers."""
        return self._activity

    @property
    def gsb(self) -> GsbApi:
        """The GSB API: services bound by the requestor (file transfer) and their WebSocket."""
        return self._gsb

    @property
    def net(self) -> NetApi:
        """The net API: VPNs and TCP streams into them."""
        return self._net

    async def identity(self) -> Identity:
        """The identity the app key acts as (``GET /me``)."""
        return await self._request(routes.IDENTITY, parse=Identity.from_json)

    async def __aenter__(self) -> RestClient:
        self._get_session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session; the client cannot be used afterwards. Closing twice is harmless."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise GolemError("this RestClient is closed; create a new one")
        if self._session is None:
            # limit=0: no limit (aiohttp's default is 100 in all, which queues requests behind long-polls).
            connector = aiohttp.TCPConnector(limit=self.max_connections or 0, limit_per_host=0)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"Authorization": f"Bearer {self.config.app_key}"},
                timeout=self._timeout(self.request_timeout),
            )
        return self._session

    def _timeout(self, total: float) -> aiohttp.ClientTimeout:
        key = (total, self.connect_timeout)
        timeout = self._timeouts.get(key)
        if timeout is None:
            limit = None if math.isinf(total) else total
            timeout = aiohttp.ClientTimeout(total=limit, sock_connect=self.connect_timeout)
            if len(self._timeouts) < _KEPT_TIMEOUTS:  # the same few come back: the client's, each long-poll's
                self._timeouts[key] = timeout
        return timeout

    async def _request(
        self,
        route: Route,
        *path_args: str,
        params: Mapping[str, str | None] | None = None,
        json: Any = ABSENT,
        timeout: float | None = None,
        parse: Callable[[Any], T],
        decode: Callable[[str], Any] = jsonlib.loads,
    ) -> T:
        """Send ``route``, return ``parse(answer)``; every failure becomes a :class:`GolemError`.

        ``json`` is sent as a JSON body (``None`` sends ``null``); leave it out to send no body.
        ``timeout`` replaces the client's request timeout (long-polls pass their own plus a margin;
        ``math.inf`` means no limit). ``decode`` turns the answer's text into JSON values (a caller that
        needs only part of a long answer may decode only that part).
        """
        url, full_path, query = self._prepare(route, path_args, params)
        headers: dict[str, str] = {}
        data: bytes | None = None
        if json is not ABSENT:
            data = jsonlib.dumps(json).encode()
            headers["Content-Type"] = "application/json"
        total = self.request_timeout if timeout is None else timeout
        session = self._get_session()
        started = time.monotonic()
        _log.debug("%s %s %s", route.method, full_path, query or "")
        try:
            async with session.request(
                route.method, url, params=query, data=data, headers=headers, timeout=self._timeout(total)
            ) as response:
                status = response.status
                text = await response.text()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise self._unreachable(route, url, exc, f"no answer within {total:g} s") from exc
        self._failing_since = None
        _log.debug("%s %s -> %d (%.0f ms)", route.method, full_path, status, (time.monotonic() - started) * 1000)
        if not 200 <= status < 300:
            raise error_for_status(route.method, full_path, status, text)
        try:
            answer = decode(text) if text.strip() else None
        except ValueError as exc:
            raise ServerError(
                method=route.method,
                path=full_path,
                status=status,
                message=f"unexpected response: not JSON: {node_message(text)!r}",
            ) from exc
        try:
            return parse(answer)
        except ValueError as exc:
            raise ServerError(
                method=route.method, path=full_path, status=status, message=f"unexpected response: {exc}"
            ) from exc

    def _prepare(
        self, route: Route, path_args: tuple[str, ...], params: Mapping[str, str | None] | None
    ) -> tuple[str, str, dict[str, str]]:
        """The URL, its path (for messages) and the query of a request; refuses routes outside the table."""
        if route not in _KNOWN_ROUTES:
            raise ValueError(f"{route} is not in golem_api._rest.routes.ROUTES")
        base = self._bases.get(route.api)
        if base is None:
            url = self.config.url_for(route.api)
            base = self._bases[route.api] = (url, urlsplit(url).path)
        expanded = route.expand(*path_args)
        if not params:
            return base[0] + expanded, base[1] + expanded, {}
        unknown = set(params) - set(route.query)
        if unknown:
            raise ValueError(f"{route} has no query parameters {sorted(unknown)}")
        query = {key: value for key, value in params.items() if value is not None}
        return base[0] + expanded, base[1] + expanded, query

    def _unreachable(self, route: Route, url: str, exc: BaseException, timed_out: str) -> NodeUnreachableError:
        """The :class:`NodeUnreachableError` for a transport failure ``exc`` (``timed_out`` says how long)."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        down_for = now - self._failing_since
        if isinstance(exc, aiohttp.ClientConnectorError):
            reason = str(exc.os_error) or type(exc).__name__
        elif isinstance(exc, _CONNECT_TIMEOUT):
            reason = f"no connection within {self.connect_timeout:g} s"
        elif isinstance(exc, asyncio.TimeoutError):
            reason = timed_out
        else:
            reason = str(exc) or type(exc).__name__
        return unreachable_error(route.method, url, reason, down_for=down_for)

    @contextlib.asynccontextmanager
    async def _stream(
        self,
        route: Route,
        *path_args: str,
        params: Mapping[str, str | None] | None = None,
        accept: str,
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Open a streaming answer (server-sent events) and give its body as chunks of bytes.

        Error statuses raise as in :meth:`_request`; an answer of another media type than ``accept`` is a
        :class:`ServerError`. The stream has no total time limit; a silence longer than
        :attr:`stream_read_timeout` ends it with :class:`NodeUnreachableError` (the daemon pings every 15 s).
        """
        url, full_path, query = self._prepare(route, path_args, params)
        session = self._get_session()
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.connect_timeout, sock_read=self.stream_read_timeout
        )
        _log.debug("%s %s %s (stream)", route.method, full_path, query or "")
        try:
            response = await session.request(
                route.method, url, params=query, headers={"Accept": accept}, timeout=timeout
            )
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise self._unreachable(route, url, exc, f"no answer within {self.stream_read_timeout:g} s") from exc
        self._failing_since = None
        async with response:
            if not 200 <= response.status < 300:
                text = await _read_text(response)
                raise error_for_status(route.method, full_path, response.status, text)
            if response.content_type != accept:
                raise ServerError(
                    method=route.method,
                    path=full_path,
                    status=response.status,
                    message=f"unexpected response: asked for {accept}, got {response.content_type or 'no type'}",
                )
            yield _Chunks(response, route, url, self)

    async def _websocket(
        self, route: Route, *path_args: str, protocols: tuple[str, ...]
    ) -> aiohttp.ClientWebSocketResponse[bool]:
        """Open a WebSocket on ``route`` with the app key; the caller closes it."""
        url, full_path, _ = self._prepare(route, path_args, None)
        session = self._get_session()
        _log.debug("%s %s (WebSocket %s)", route.method, full_path, ",".join(protocols))
        try:
            return await session.ws_connect(url, protocols=protocols, max_msg_size=_MAX_WS_MESSAGE)
        except aiohttp.WSServerHandshakeError as exc:
            raise error_for_status(route.method, full_path, exc.status, exc.message) from exc
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise self._unreachable(route, url, exc, f"no answer within {self.request_timeout:g} s") from exc


_MAX_WS_MESSAGE = 64 * 1024 * 1024  # a gftp chunk is 40 KiB on the daemon; leave room for larger ones


async def _read_text(response: aiohttp.ClientResponse) -> str:
    try:
        return await response.text()
    except (aiohttp.ClientError, asyncio.TimeoutError, UnicodeDecodeError):
        return ""


class _Chunks:
    """The body of a streaming answer as an async iterator of byte chunks; transport failures become
    :class:`NodeUnreachableError`, the end of the body ends the iteration."""

    def __init__(self, response: aiohttp.ClientResponse, route: Route, url: str, client: RestClient) -> None:
        self._response = response
        self._route = route
        self._url = url
        self._client = client

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._response.content.readany()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            silence = f"nothing received for {self._client.stream_read_timeout:g} s"
            raise self._client._unreachable(self._route, self._url, exc, silence) from exc
        if not chunk:
            raise StopAsyncIteration
        return chunk
