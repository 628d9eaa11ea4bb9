"""``Golem``: the engine. It chooses the node, holds the budget, negotiates, and pays on the way out.

With no app key configured (neither ``app_key=`` nor ``YAGNA_APPKEY``) it starts the embedded local Golem
network inside the running event loop; with one, it talks to that yagna daemon. Everything it starts is
entered on one :class:`contextlib.AsyncExitStack` and unwound in reverse order on exit.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import TYPE_CHECKING, Any

from golem_api import _local
from golem_api._images import resolve_image
from golem_api._rest.client import RestClient
from golem_api._rest.config import ApiConfig
from golem_api._summary import SummaryLogger
from golem_api.errors import ConfigurationError, GolemError, NetworkError
from golem_api.events import (
    Consumer,
    Event,
    EventBus,
    GolemStarted,
    GolemStopped,
    UnpaidAgreementsWarning,
)
from golem_api.market.agreement import Agreement
from golem_api.market.negotiation import Demand
from golem_api.market.strategy import LeastExpensiveLinearPayu, MarketStrategy
from golem_api.network.network import Network, NetworkState
from golem_api.payload import Payload, with_capabilities
from golem_api.payment._manager import PaymentManager
from golem_api.services._arguments import (
    check_network_addresses,
    check_service_class,
    plan_instances,
    resolve_payload,
)
from golem_api.services._runner import InstanceSettings
from golem_api.services.cluster import Cluster, ServiceT
from golem_shared.constraints import all_of
from golem_shared.timestamps import utc_now

if TYPE_CHECKING:
    from golem_api._local import LocalNetworkConfig, LocalNode
    from golem_api.activity.storage import GsbStorage

__all__ = ["INTERRUPTED_INVOICE_TIMEOUT", "INTERRUPTED_STOP_TIMEOUT", "Golem", "payment_platform"]

_log = logging.getLogger("golem_api")

DEFAULT_EXPIRATION = timedelta(minutes=30)
INTERRUPTED_STOP_TIMEOUT = 2.5
"""Seconds the clusters get to stop (``shutdown`` handlers included) when the run was interrupted (Ctrl-C,
cancellation); then their instances are cancelled, which still ends their activities and agreements."""
INTERRUPTED_INVOICE_TIMEOUT = 2.0
"""Seconds to wait for invoices (at most ``invoice_timeout``) when the run was interrupted."""
_MAINNETS = frozenset({"mainnet", "polygon"})


def payment_platform(driver: str, network: str) -> str:
    """The platform name for a driver and network: ``erc20-holesky-tglm``, ``erc20-polygon-glm``, …"""
    token = "glm" if network in _MAINNETS else "tglm"
    return f"{driver}-{network}-{token}"


def _seconds(name: str, value: object, *, allow_zero: bool = False) -> float:
    """A positive (or, with ``allow_zero``, non-negative) finite number of seconds, or ``ConfigurationError``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (0 <= value < float("inf") if allow_zero else 0 < value < float("inf"))
    ):
        kind = "zero or more" if allow_zero else "more than zero"
        raise ConfigurationError(f"{name} must be a number of seconds, {kind}, got {value!r}")
    return float(value)


def _budget(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ConfigurationError(f"budget must be a number (e.g. 1.0 or '1.0'), got {value!r}")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ConfigurationError(f"budget must be a number (e.g. 1.0 or '1.0'), got {value!r}") from None
    if not amount.is_finite() or amount <= 0:
        raise ConfigurationError(f"budget must be a positive amount of tokens, got {value!r}")
    return amount


def _tolerance(value: float | Decimal | str) -> Decimal:
    try:
        tolerance = Decimal(str(value))
    except InvalidOperation:
        raise ConfigurationError(f"price_tolerance must be a number such as 0.01 (1 %), got {value!r}") from None
    if not tolerance.is_finite() or tolerance < 0:
        raise ConfigurationError(f"price_tolerance must be a non-negative fraction such as 0.01, got {value!r}")
    return tolerance


class Golem:
    """The requestor engine: ``async with Golem(budget=1.0) as golem: …``.

    Parameters mirror yapapi's: ``budget`` (tokens, any number type; kept as ``Decimal``), ``subnet_tag``,
    ``payment_driver``, ``payment_network``, ``app_key`` / ``api_url`` (else ``YAGNA_APPKEY`` /
    ``YAGNA_API_URL``). ``strategy`` scores offers (default :class:`LeastExpensiveLinearPayu`);
    ``local_network`` configures the embedded network when it is used; ``invoice_timeout`` bounds the
    wait for invoices on exit; ``event_consumer`` replaces the default summary log (``None`` for none).
    ``health_check_interval`` is how often (seconds) each service instance's activity is checked for life
    (``run_service`` may override it); ``shutdown_timeout`` bounds each instance's ``shutdown`` handler when
    a cluster stops. ``price_tolerance`` (relative, default 0.01) is how much more than the agreed price of
    the reported usage a debit note or invoice may ask before it is refused. Without ``local_network``, the
    embedded network takes ``subnet_tag`` and the payment platform from these parameters. Create it anywhere,
    even outside a running loop: nothing touches the loop before ``async with``.

    Leaving ``async with`` because of a cancellation or ``KeyboardInterrupt`` (Ctrl-C under ``asyncio.run``)
    still stops every cluster and pays what is owed, with short bounds (:data:`INTERRUPTED_STOP_TIMEOUT`,
    :data:`INTERRUPTED_INVOICE_TIMEOUT`) so that the program ends within seconds.
    """

    def __init__(
        self,
        *,
        budget: float | Decimal | str,
        subnet_tag: str = "public",
        payment_driver: str = "erc20",
        payment_network: str = "holesky",
        app_key: str | None = None,
        api_url: str | None = None,
        strategy: MarketStrategy | None = None,
        local_network: LocalNetworkConfig | None = None,
        invoice_timeout: float = 30.0,
        event_consumer: Consumer | str | None = "default",
        health_check_interval: float = 5.0,
        shutdown_timeout: float = 15.0,
        price_tolerance: float | Decimal | str = Decimal("0.01"),
    ) -> None:
        self.budget = _budget(budget)
        for name, value in (
            ("subnet_tag", subnet_tag),
            ("payment_driver", payment_driver),
            ("payment_network", payment_network),
        ):
            if not isinstance(value, str) or not value or any(c in value for c in "()=*"):
                raise ConfigurationError(f"{name} must be a plain non-empty name, got {value!r}")
        if invoice_timeout < 0:
            raise ConfigurationError(f"invoice_timeout must not be negative, got {invoice_timeout!r}")
        self.health_check_interval = _seconds("health_check_interval", health_check_interval)
        self.shutdown_timeout = _seconds("shutdown_timeout", shutdown_timeout, allow_zero=True)
        self.price_tolerance = _tolerance(price_tolerance)
        self.subnet_tag = subnet_tag
        self.payment_driver = payment_driver
        self.payment_network = payment_network
        self.payment_platform = payment_platform(payment_driver, payment_network)
        self.strategy: MarketStrategy = strategy if strategy is not None else LeastExpensiveLinearPayu()
        self._app_key = app_key
        self._api_url = api_url
        self._local_network = local_network
        self._invoice_timeout = invoice_timeout
        self.bus = EventBus()
        self.summary: SummaryLogger | None = None
        if event_consumer == "default":
            self.summary = SummaryLogger()
            self.bus.subscribe(self.summary)
        elif callable(event_consumer):
            self.bus.subscribe(event_consumer)
        elif event_consumer is not None:
            raise ConfigurationError(f"event_consumer must be callable or None, got {event_consumer!r}")
        self.local_node: LocalNode | None = None
        self.agreements: list[Agreement] = []
        self._stack: AsyncExitStack | None = None
        self._rest: RestClient | None = None
        self._payments: PaymentManager | None = None
        self._demands: list[Demand] = []
        self._storage: GsbStorage | None = None
        self.clusters: list[Cluster[Any]] = []
        self.networks: list[Network] = []
        self._identity: str | None = None
        self._interrupted = False

    def __repr__(self) -> str:
        where = "local network" if self.local_node else (self._api_url or "yagna")
        state = "running" if self._stack else "stopped"
        return f"<Golem budget={self.budget} platform={self.payment_platform} on {where}, {state}>"

    # --- lifecycle --------------------------------------------------------------------------------

    async def __aenter__(self) -> Golem:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._interrupted = exc_type is not None and issubclass(exc_type, asyncio.CancelledError | KeyboardInterrupt)
        await self.aclose()

    async def start(self) -> None:
        """Connect to the node (starting the local network when no app key is set) and allocate the budget."""
        if self._stack is not None:
            raise GolemError("this Golem is already started; use one `async with Golem(...)` at a time")
        stack = AsyncExitStack()
        self._stack = stack
        try:
            config, local = await self._connect(stack)
            self._rest = await stack.enter_async_context(RestClient(config))
            identity = await self._rest.identity()
            self._identity = identity.identity
            from golem_api.activity.storage import GsbStorage

            self._storage = await stack.enter_async_context(GsbStorage(self._rest))
            self._payments = PaymentManager(
                self._rest,
                self.bus,
                budget=self.budget,
                platform=self.payment_platform,
                price_tolerance=self.price_tolerance,
            )
            await self._payments.start()
            stack.push_async_callback(self._payments.aclose)
            stack.push_async_callback(self._settle)
            stack.push_async_callback(self._remove_networks)
            stack.push_async_callback(self._stop_clusters)
            self.bus.emit(GolemStarted(api_url=config.root_url, identity=identity.identity, local=local))
        except BaseException:
            self._stack = None
            await stack.aclose()
            raise

    async def _connect(self, stack: AsyncExitStack) -> tuple[ApiConfig, bool]:
        app_key = self._app_key or os.environ.get("YAGNA_APPKEY")
        if app_key:
            return ApiConfig.from_env(app_key=app_key, api_url=self._api_url), False
        if self._api_url:
            raise ConfigurationError(
                f"api_url={self._api_url!r} was given without an app key: pass app_key= or set YAGNA_APPKEY "
                "(`yagna app-key list` shows it), or drop api_url to use the embedded local network"
            )
        # Without a configuration of its own, the local network takes the requestor's subnet and payment
        # platform, so that `Golem(payment_network="polygon", subnet_tag="devnet")` also works locally.
        config = self._local_network or _local.default_config(
            payment_platform=self.payment_platform, subnet=self.subnet_tag
        )
        node = _local.new_node(config)
        self.local_node = await stack.enter_async_context(node)
        _log.info(
            "No YAGNA_APPKEY set: started the embedded local Golem network at %s with %d providers "
            "(set YAGNA_APPKEY to use a yagna daemon)",
            node.url,
            len(node.providers),
        )
        return ApiConfig.for_node(node.url, node.app_key), True

    async def aclose(self) -> None:
        """Withdraw demands, end agreements, pay invoices (bounded wait), release the allocation.

        ``async with Golem(…)`` calls it on the way out; :meth:`stop` is the same, under yapapi's name.
        """
        stack, self._stack = self._stack, None
        if stack is None:
            return
        if self._interrupted:
            _log.info("Interrupted: stopping the services and paying what is owed (bounded to a few seconds)")
        try:
            await stack.aclose()
        finally:
            self._interrupted = False
            self.bus.emit(GolemStopped())

    async def stop(self) -> None:
        """yapapi's name for :meth:`aclose`."""
        await self.aclose()

    async def _stop_clusters(self) -> None:
        """Stop every cluster (each instance's shutdown is bounded) before payments are settled."""
        clusters, self.clusters = self.clusters, []
        if not clusters:
            return
        stopping = [cluster.stop() for cluster in clusters]
        bound = INTERRUPTED_STOP_TIMEOUT if self._interrupted else None
        _done, late = await asyncio.wait(stopping, timeout=bound)
        if late:
            _log.warning("the services did not stop within %g s of the interruption; cancelling them", bound)
            for cluster in clusters:
                cluster.abort()
            await asyncio.wait(late)  # each cancelled instance ends its activity and agreement, bounded
        for cluster, task in zip(clusters, stopping, strict=True):
            if not task.cancelled() and task.exception() is not None:
                _log.error("stopping %r failed: %r", cluster, task.exception())

    async def _remove_networks(self) -> None:
        """Remove the networks this Golem created (after the clusters stopped: their nodes are gone)."""
        networks, self.networks = self.networks, []
        for network in networks:
            await network.remove()

    async def _settle(self) -> None:
        for demand in self._demands:
            await demand.aclose()
        self._demands.clear()
        for agreement in self.agreements:
            try:
                await agreement.terminate()
            except GolemError as exc:
                _log.warning("could not terminate %r: %s", agreement, exc)
        assert self._payments is not None
        ids = [a.agreement_id for a in self.agreements]
        waited = min(self._invoice_timeout, INTERRUPTED_INVOICE_TIMEOUT) if self._interrupted else self._invoice_timeout
        unpaid = await self._payments.wait_for_invoices(ids, waited)
        if unpaid:
            self.bus.emit(UnpaidAgreementsWarning(agreement_ids=tuple(unpaid), waited=waited))

    # --- what users call ------------------------------------------------------------------------

    @property
    def spent(self) -> Decimal:
        """What this run has accepted to pay so far."""
        return self._payments.spent if self._payments else Decimal(0)

    def _require_started(self) -> tuple[RestClient, PaymentManager]:
        if self._rest is None or self._payments is None or self._stack is None:
            raise GolemError("Golem is not started: use `async with Golem(budget=…) as golem:`")
        return self._rest, self._payments

    async def create_demand(
        self,
        payload: Payload,
        *,
        expiration: datetime | None = None,
        no_offers_warning_after: float = 15.0,
    ) -> Demand:
        """Publish a demand for ``payload`` and start negotiating; ``await demand.agreement()`` for agreements."""
        rest, payments = self._require_started()
        if not isinstance(payload, Payload):
            raise ConfigurationError(
                f"payload must have demand_properties() and demand_constraints() (e.g. VmPayload), got {payload!r}"
            )
        # A vm.repo image: resolved against the local node's registry on the local network, else a real one.
        payload = await resolve_image(payload, local_registry=self.local_node.url if self.local_node else None)
        expires = expiration or utc_now() + DEFAULT_EXPIRATION
        if expires.tzinfo is None:
            raise ConfigurationError(f"expiration {expires!r} has no timezone: use datetime.now(timezone.utc) + …")
        if expires <= utc_now():
            raise ConfigurationError(f"expiration {expires.isoformat()} is in the past")
        decoration = await rest.payment.demand_decorations([payments.allocation_id])
        properties: dict[str, Any] = {
            "golem.srv.comp.expiration": int(expires.timestamp() * 1000),
            "golem.node.debug.subnet": self.subnet_tag,
            "golem.srv.caps.multi-activity": True,
            **payload.demand_properties(),
            **decoration.properties,
        }
        constraints = all_of(
            f"(golem.node.debug.subnet={self.subnet_tag})",
            "(golem.com.pricing.model=linear)",
            *payload.demand_constraints(),
            *decoration.constraints,
        )
        demand = Demand(
            rest=rest,
            bus=self.bus,
            strategy=self.strategy,
            properties=properties,
            constraints=str(constraints),
            payment_platform=self.payment_platform,
            expiration=expires,
            no_offers_warning_after=no_offers_warning_after,
            on_agreement=self._adopt,
        )
        await demand.start()
        self._demands.append(demand)
        return demand

    async def run_service(
        self,
        service_class: type[ServiceT],
        num_instances: int | None = None,
        instance_params: Iterable[Mapping[str, Any]] | None = None,
        payload: Payload | None = None,
        expiration: datetime | None = None,
        *,
        stream_output: bool = False,
        health_check_interval: float | None = None,
        respawn_unstarted_instances: bool = True,
        start_attempts: int = 3,
        agreement_timeout: float = 300.0,
        network: Network | None = None,
        network_addresses: Sequence[str] | None = None,
    ) -> Cluster[ServiceT]:
        """Run instances of ``service_class`` (a :class:`~golem_api.services.service.Service` subclass).

        yapapi's rules: each dict of ``instance_params`` becomes ``service_class(**params)``; ``num_instances``
        takes precedence (``ValueError`` when ``instance_params`` runs out first); omitting both runs one
        instance. The payload is ``payload`` or ``await service_class.get_payload()``. Returns the
        :class:`Cluster` at once; instances get agreements and start in the background.

        ``stream_output`` streams commands' output to the event bus as it comes; ``health_check_interval``
        (default: the one given to ``Golem``) is how often each activity is checked for life; an instance whose
        ``start`` fails is respawned on another provider up to ``start_attempts`` tries in all (once only
        with ``respawn_unstarted_instances=False``); an instance gives up waiting for an agreement after
        ``agreement_timeout`` s. Handlers that are not asynchronous generators raise ``TypeError``; other bad
        arguments raise ``ConfigurationError`` naming them.

        ``network`` (from :meth:`create_network`) puts every instance in that VPN: the demand asks for providers
        offering the ``vpn`` capability, each instance's provider is added to the network before its ``deploy``
        (which then carries the network), at ``network_addresses[i]`` for the i-th instance when given, else at
        the next free address; ``instance.network_node`` shows where. A bad or taken address raises
        :class:`~golem_api.errors.NetworkAddressError` before anything is sent.
        """
        self._require_started()
        assert self._storage is not None
        check_service_class(service_class)
        planned = plan_instances(service_class, num_instances, instance_params)
        if network is not None and not isinstance(network, Network):
            raise ConfigurationError(f"network must be made by `await golem.create_network(...)`, got {network!r}")
        if network is not None and network.state is not NetworkState.ready:
            raise NetworkError(
                f"{network!r} is {network.state.value}: its instances could not join it; create a new network",
                network_id=network.network_id,
            )
        addresses = check_network_addresses(network, network_addresses, len(planned))
        if isinstance(start_attempts, bool) or not isinstance(start_attempts, int) or start_attempts < 1:
            raise ConfigurationError(f"start_attempts must be a whole number, 1 or more, got {start_attempts!r}")
        settings = InstanceSettings(
            stream_output=bool(stream_output),
            health_check_interval=self.health_check_interval
            if health_check_interval is None
            else _seconds("health_check_interval", health_check_interval),
            start_attempts=start_attempts if respawn_unstarted_instances else 1,
            agreement_timeout=_seconds("agreement_timeout", agreement_timeout),
            shutdown_timeout=self.shutdown_timeout,
        )
        resolved = await resolve_payload(service_class, payload)
        if network is not None:
            resolved = with_capabilities(resolved, "vpn")
        demand = await self.create_demand(resolved, expiration=expiration)
        cluster = Cluster(
            service_class,
            demand=demand,
            storage=self._storage,
            bus=self.bus,
            settings=settings,
            summary=self.summary,
            network=network,
        )
        self.clusters.append(cluster)
        try:
            cluster.spawn_planned(planned, addresses)
        except BaseException:
            self.clusters.remove(cluster)
            await cluster.stop()
            raise
        return cluster

    async def create_network(
        self, ip: str, owner_ip: str | None = None, mask: str | None = None, gateway: str | None = None
    ) -> Network:
        """Create a VPN between this requestor and the instances run in it (``run_service(network=…)``).

        ``ip`` is its range (``"192.168.0.0/24"``, or ``"192.168.0.0"`` with ``mask="255.255.255.0"``);
        ``owner_ip`` the requestor's address in it (default: the first host, ``.1``); ``gateway`` is passed on
        to the providers (yagna's exe-unit ignores it). ``Golem`` removes the network when it stops. Raises
        :class:`~golem_api.errors.NetworkAddressError` for a range or address that does not fit, and
        :class:`~golem_api.errors.NetworkError` when the local network cannot run VPNs on this machine.
        """
        rest, _payments = self._require_started()
        if self.local_node is not None:
            reason = _local.vpn_unavailable(self.local_node)
            if reason is not None:
                raise NetworkError(f"the local network cannot run VPNs here: {reason}")
        assert self._identity is not None
        network = await Network.create(rest, ip, self._identity, owner_ip, mask=mask, gateway=gateway)
        self.networks.append(network)
        return network

    def _adopt(self, agreement: Agreement) -> None:
        assert self._payments is not None
        self.agreements.append(agreement)
        self._payments.track(agreement)

    def subscribe(self, consumer: Consumer, *kinds: type[Event]) -> Any:
        """Shortcut for ``golem.bus.subscribe``."""
        return self.bus.subscribe(consumer, *kinds)
