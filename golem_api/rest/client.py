"""The HTTP client of the daemon's API: one session, one method that sends and translates failures."""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp

from golem_api.errors import GolemError, ServerError
from golem_api.rest import routes
from golem_api.rest.activity import ActivityApi
from golem_api.rest.config import ApiConfig
from golem_api.rest.http_errors import error_for_status, node_message, unreachable_error
from golem_api.rest.market import MarketApi
from golem_api.rest.models import Identity
from golem_api.rest.payment import PaymentApi
from golem_api.rest.routes import ABSENT, ROUTES, Route

__all__ = ["RestClient"]

T = TypeVar("T")

_log = logging.getLogger("golem_api.rest")
_KNOWN_ROUTES = frozenset(ROUTES)
# aiohttp >= 3.10 raises ConnectionTimeoutError when connecting takes too long; 3.9 has no such class.
_CONNECT_TIMEOUT: type[Exception] = getattr(aiohttp, "ConnectionTimeoutError", aiohttp.ServerTimeoutError)


class RestClient:
    """Typed access to a Golem node's REST API (a yagna daemon or the embedded local node).

    Use it as an async context manager, or call :meth:`close`; the HTTP session is created on first use,
    inside the running event loop.
    """

    def __init__(self, config: ApiConfig, *, connect_timeout: float = 5.0, request_timeout: float = 30.0) -> None:
        self.config = config
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._market = MarketApi(self._request)
        self._payment = PaymentApi(self._request)
        self._activity = ActivityApi(self._request)

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
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session; the client cannot be used afterwards. Closing twice is harmless."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise GolemError("this RestClient is closed; create a new one")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self.config.app_key}"},
                timeout=self._timeout(self.request_timeout),
            )
        return self._session

    def _timeout(self, total: float) -> aiohttp.ClientTimeout:
        limit = None if math.isinf(total) else total
        return aiohttp.ClientTimeout(total=limit, sock_connect=self.connect_timeout)

    async def _request(
        self,
        route: Route,
        *path_args: str,
        params: Mapping[str, str | None] | None = None,
        json: Any = ABSENT,
        timeout: float | None = None,
        parse: Callable[[Any], T],
    ) -> T:
        """Send ``route``, return ``parse(answer)``; every failure becomes a :class:`GolemError`.

        ``json`` is sent as a JSON body (``None`` sends ``null``); leave it out to send no body.
        ``timeout`` replaces the client's request timeout (long-polls pass their own plus a margin;
        ``math.inf`` means no limit).
        """
        if route not in _KNOWN_ROUTES:
            raise ValueError(f"{route} is not in golem_api.rest.routes.ROUTES")
        unknown = set(params or ()) - set(route.query)
        if unknown:
            raise ValueError(f"{route} has no query parameters {sorted(unknown)}")
        url = self.config.url_for(route.api) + route.expand(*path_args)
        full_path = urlsplit(url).path
        query = {key: value for key, value in (params or {}).items() if value is not None}
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
        except aiohttp.ClientConnectorError as exc:
            raise unreachable_error(route.method, url, str(exc.os_error) or type(exc).__name__) from exc
        except _CONNECT_TIMEOUT as exc:
            reason = f"no connection within {self.connect_timeout:g} s"
            raise unreachable_error(route.method, url, reason) from exc
        except asyncio.TimeoutError as exc:
            raise unreachable_error(route.method, url, f"no answer within {total:g} s") from exc
        except aiohttp.ClientError as exc:
            raise unreachable_error(route.method, url, str(exc) or type(exc).__name__) from exc
        _log.debug("%s %s -> %d (%.0f ms)", route.method, full_path, status, (time.monotonic() - started) * 1000)
        if not 200 <= status < 300:
            raise error_for_status(route.method, full_path, status, text)
        try:
            answer = jsonlib.loads(text) if text.strip() else None
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
