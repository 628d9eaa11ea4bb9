"""The embedded local Golem network: a yagna-compatible node on loopback with local providers.

::

    async with LocalNode() as node:          # 3 providers, a funded requestor, any free port
        print(node.url, node.app_key)        # what YAGNA_API_URL and YAGNA_APPKEY would be

The node serves ``GET /me``, ``/market-api/v1``, ``/payment-api/v1`` and ``/activity-api/v1`` behind the
app-key check, as the requestor identity ``requestor_id``. Its providers run in-process on the same
:class:`~golem_api.local.market.LocalMarket`; the :class:`~golem_api.local.activity.ActivityHub` meters
their activities and is their ``Billing``; the :class:`~golem_api.local.ledger.Ledger` holds the money.

Nothing is bound to an event loop before :meth:`LocalNode.start`, which runs in the caller's loop (a
notebook's included); :meth:`LocalNode.stop` stops the providers and the activities and closes the server.
A node runs once: build a new one to start again.
"""

from __future__ import annotations

import logging
from types import TracebackType

from aiohttp import web

from golem_api.errors import LocalNodeError
from golem_api.local.activity import ActivityHub
from golem_api.local.activity_api import add_activity_routes
from golem_api.local.config import LocalNetworkConfig
from golem_api.local.eventlog import StrictClock
from golem_api.local.http import APP_KEY, auth_middleware, error_middleware, json_response
from golem_api.local.identity import NodeIdentities, new_app_key
from golem_api.local.ledger import Ledger
from golem_api.local.market import LocalMarket
from golem_api.local.market_api import add_market_routes
from golem_api.local.payment_api import add_payment_routes
from golem_api.local.provider import LocalProvider

__all__ = ["LocalNode"]

_log = logging.getLogger(__name__)

_SHUTDOWN_TIMEOUT = 0.5  # seconds open requests (long-polls) get to finish when the node stops


class LocalNode:
    """A local Golem network reachable over HTTP at :attr:`url` with :attr:`app_key` (an async context manager).

    ``port=0`` takes any free port. The ids are fresh for every node: ``requestor_id`` and each provider's
    ``node_id`` (which is also its payment address).
    """

    def __init__(
        self,
        config: LocalNetworkConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        app_key: str | None = None,
    ) -> None:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise LocalNodeError(f"port must be 0 (any free port) or 1-65535, not {port!r}")
        if app_key is not None and not app_key.strip():
            raise LocalNodeError("app_key must not be empty: leave it out to have one generated")
        self.config = config if config is not None else LocalNetworkConfig()
        self.host = host
        self.port = port
        self.app_key = app_key if app_key is not None else new_app_key()
        ids = NodeIdentities()
        self.requestor_id = ids.node_id("requestor")
        clock = StrictClock()
        self.market = LocalMarket(clock)
        self.ledger: Ledger = Ledger(
            clock, self.requestor_id, self.config.requestor_balance, self.config.payment_platform
        )
        provider_ids = {spec.name: ids.node_id(f"provider/{spec.name}") for spec in self.config.providers}
        self.activities = ActivityHub(
            self.market,
            self.ledger,
            providers={provider_ids[spec.name]: spec for spec in self.config.providers},
        )
        self.providers: tuple[LocalProvider, ...] = tuple(
            LocalProvider(
                spec,
                self.market,
                node_id=provider_ids[spec.name],
                payment_platform=self.config.payment_platform,
                billing=self.activities,
            )
            for spec in self.config.providers
        )
        self._runner: web.AppRunner | None = None
        self._started = False

    def __repr__(self) -> str:
        where = self.url if self._runner is not None else "not running"
        return f"<LocalNode {where} requestor={self.requestor_id} providers={len(self.providers)}>"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the root URL to use as ``YAGNA_API_URL`` (the bound port once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server is up."""
        return self._runner is not None

    def build_app(self) -> web.Application:
        """The aiohttp application of the node: errors first, then the app-key check, then every API."""
        app = web.Application(middlewares=[error_middleware, auth_middleware])
        app[APP_KEY] = self.app_key
        app.router.add_get("/me", self._me)
        add_market_routes(app, self.market, node_id=self.requestor_id)
        add_payment_routes(app, self.ledger)
        add_activity_routes(app, self.activities)
        return app

    async def _me(self, request: web.Request) -> web.StreamResponse:
        return json_response({"identity": self.requestor_id, "name": "requestor", "role": "manager"})

    async def start(self) -> None:
        """Serve the node on ``host:port`` and start the providers; ``LocalNodeError`` if the port is taken."""
        if self._started:
            raise LocalNodeError("this LocalNode was already started: create a new LocalNode to start again")
        self._started = True
        # handler_cancellation: a request whose client went away is cancelled, as the daemon drops it, so that
        # abandoned long-polls do not hold the node open when it stops.
        runner = web.AppRunner(
            self.build_app(), access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT, handler_cancellation=True
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise LocalNodeError(
                f"the local node cannot listen on {self.host}:{self.port}: {exc.strerror or exc}; "
                "is another node running there? Choose another port, or port=0 for any free one"
            ) from exc
        self._runner = runner
        self.port = runner.addresses[0][1]
        try:
            for provider in self.providers:
                await provider.start()
        except BaseException:
            await self.stop()
            raise
        _log.debug("local Golem node at %s with %d providers", self.url, len(self.providers))

    async def stop(self) -> None:
        """Stop the providers and the activities, then close the server. Calling it twice is harmless."""
        self._started = True  # a stopped node never starts (again)
        for provider in self.providers:
            await provider.stop()
        await self.activities.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> LocalNode:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
