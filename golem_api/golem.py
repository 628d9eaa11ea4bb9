"""``Golem``: the engine. It chooses the node, holds the budget, negotiates, and pays on the way out.

With no app key configured (neither ``app_key=`` nor ``YAGNA_APPKEY``) it starts the embedded local Golem
network inside the running event loop; with one, it talks to that yagna daemon. Everything it starts is
entered on one :class:`contextlib.AsyncExitStack` and unwound in reverse order on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import threading
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping, Sequence
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
from golem_api.tasks.executor import DEFAULT_MAX_WORKERS, DEFAULT_TASK_ATTEMPTS, DEFAULT_TIMEOUT, Job, check_worker
from golem_shared.constraints import all_of
from golem_shared.timestamps import utc_now

if TYPE_CHECKING:
    from golem_api._local import LocalNetworkConfig, LocalNode
    from golem_api.activity.activity import Activity
    from golem_api.activity.storage import GsbStorage
    from golem_api.activity.work_context import WorkContext
    from golem_api.tasks.executor import D, R, WorkerFunction
    from golem_api.tasks.task import Task

__all__ = [
    "DEFAULT_PAYMENT_DRIVER",
    "DEFAULT_PAYMENT_NETWORK",
    "DEFAULT_SUBNET",
    "HURRIED_EXIT_TIMEOUT",
    "INTERRUPTED_INVOICE_TIMEOUT",
    "INTERRUPTED_STOP_TIMEOUT",
    "Golem",
    "payment_platform",
]

_log = logging.getLogger("golem_api")

DEFAULT_EXPIRATION = timedelta(minutes=30)
INTERRUPTED_STOP_TIMEOUT = 2.5
"""Seconds the clusters get to stop (``shutdown`` handlers included) when the run was interrupted (Ctrl-C,
cancellation); then their instances are cancelled, which still ends their activities and agreements."""
INTERRUPTED_INVOICE_TIMEOUT = 2.0
"""Seconds to wait for invoices (at most ``invoice_timeout``) when the run was interrupted."""
HURRIED_EXIT_TIMEOUT = 3.0
"""Seconds from a second Ctrl-C to the end of the clean-up: the services are cancelled at once, the agreements
ended and what arrives paid; what is still unpaid then is said, and the program goes on leaving."""
_MAINNETS = frozenset({"mainnet", "polygon"})
DEFAULT_SUBNET = "public"
"""The subnet when neither ``subnet_tag=`` nor ``YAGNA_SUBNET`` says one."""
DEFAULT_PAYMENT_DRIVER = "erc20"
"""The payment driver when neither ``payment_driver=`` nor ``YAGNA_PAYMENT_DRIVER`` says one."""
DEFAULT_PAYMENT_NETWORK = "holesky"
"""The payment network when neither ``payment_network=`` nor ``YAGNA_PAYMENT_NETWORK`` says one."""


def _setting(name: str, value: str | None, variable: str, default: str, *, lower: bool = False) -> str:
    """``value``, else ``$variable``, else ``default`` (yapapi's order); a plain name without filter syntax."""
    where = f"{name}={value!r}"
    if value is None:
        value = os.environ.get(variable) or default
        where = f"{variable}={value!r} (from the environment)" if os.environ.get(variable) else where
    if not isinstance(value, str) or not value.strip() or any(c in value for c in "()=*"):
        raise ConfigurationError(f"{where}: {name} must be a plain non-empty name such as {default!r}")
    value = value.strip()
    return value.lower() if lower else value


def payment_platform(driver: str, network: str) -> str:
    """The platform name for a driver and network: ``erc20-holesky-tglm``, ``erc20-polygon-glm``, …"""
    token = "glm" if network in _MAINNETS else "tglm"
    return f"{driver}-{network}-{token}"


def _is_asyncio_runner_handler(handler: object) -> bool:
    """Whether ``handler`` is the SIGINT handler ``asyncio.run`` installs (Python 3.11+)."""
    func = handler.func if isinstance(handler, functools.partial) else handler
    return getattr(func, "__name__", "") == "_on_sigint" and "asyncio" in getattr(func, "__module__", "")


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


def _count(name: str, value: object) -> int:
    """A whole number, 1 or more, or ``ConfigurationError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a whole number, 1 or more, got {value!r}")
    return value


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


def _check_strategy(strategy: object) -> None:
    """A strategy answers ``judge(offer)`` and ``provider_failed(id)``; a yapapi-style one is pointed elsewhere."""
    protocol_stub = getattr(MarketStrategy, "judge", None)  # a subclass of the protocol that did not define it
    stub = not callable(getattr(strategy, "judge", None)) or getattr(type(strategy), "judge", None) is protocol_stub
    if stub or not callable(getattr(strategy, "provider_failed", None)):
        hint = (
            "; it scores offers as yapapi's do (score_offer): subclass golem_api.ScoringStrategy instead"
            if hasattr(strategy, "score_offer")
            else ""
        )
        raise ConfigurationError(
            f"strategy {strategy!r} must define judge(offer) -> Verdict and provider_failed(provider_id) "
            f"(see golem_api.LeastExpensiveLinearPayu){hint}"
        )


class Golem:
    """The requestor engine: ``async with Golem(budget=1.0) as golem: …``.

    Parameters mirror yapapi's: ``budget`` (tokens, any number type; kept as ``Decimal``), ``subnet_tag``,
    ``payment_driver``, ``payment_network`` (``None``, the default, takes ``YAGNA_SUBNET``,
    ``YAGNA_PAYMENT_DRIVER``, ``YAGNA_PAYMENT_NETWORK`` from the environment, else ``public``, ``erc20``,
    ``holesky``), ``app_key`` / ``api_url`` (else ``YAGNA_APPKEY`` / ``YAGNA_API_URL``). ``strategy`` scores
    offers (default :class:`LeastExpensiveLinearPayu`); ``local_network`` configures the embedded network when
    it is used; ``invoice_timeout`` bounds the wait for invoices on exit; ``event_consumer`` replaces the default
    summary log (``None`` for none).
    ``health_check_interval`` is how often (seconds) each service instance's activity is checked for life and
    ``health_check_retries`` how many checks in a row that fail (no answer in time, a busy or unreachable
    node) lose the instance (3, yapapi's default; an answer that the activity is gone loses it at once;
    ``run_service`` may override both); ``shutdown_timeout`` bounds each instance's ``shutdown`` handler when
    a cluster stops. ``price_tolerance`` (relative, default 0.01) is how much more than the agreed price of
    the reported usage a debit note or invoice may ask before it is refused. Without ``local_network``, the
    embedded network takes ``subnet_tag`` and the payment platform from these parameters. Create it anywhere,
    even outside a running loop: nothing touches the loop before ``async with``.

    Leaving ``async with`` because of a cancellation or ``KeyboardInterrupt`` (Ctrl-C under ``asyncio.run``)
    still stops every cluster and pays what is owed, with short bounds (:data:`INTERRUPTED_STOP_TIMEOUT`,
    :data:`INTERRUPTED_INVOICE_TIMEOUT`) so that the program ends within seconds.

    Ctrl-C, once or more: while it runs in the main thread under ``asyncio.run`` (or with Python's own SIGINT
    handler), ``Golem`` counts the presses itself. The first interrupts the program as ``asyncio.run`` would (the
    main task is cancelled, and ``asyncio.run`` raises ``KeyboardInterrupt`` at the end) and the exit above runs;
    a second one, during that exit, stops waiting for the services' ``shutdown`` handlers, ends the agreements and
    pays what arrives within :data:`HURRIED_EXIT_TIMEOUT` s; a third leaves at once. Each step logs what it left
    unpaid. Clean-up faults (a node that no longer answers, say) are logged, not raised: the exit raises only
    what the program can act on.
    """

    def __init__(
        self,
        *,
        budget: float | Decimal | str,
        subnet_tag: str | None = None,
        payment_driver: str | None = None,
        payment_network: str | None = None,
        app_key: str | None = None,
        api_url: str | None = None,
        strategy: MarketStrategy | None = None,
        local_network: LocalNetworkConfig | None = None,
        invoice_timeout: float = 30.0,
        event_consumer: Consumer | str | None = "default",
        health_check_interval: float = 5.0,
        health_check_retries: int = 3,
        shutdown_timeout: float = 15.0,
        price_tolerance: float | Decimal | str = Decimal("0.01"),
    ) -> None:
        self.budget = _budget(budget)
        subnet_tag = _setting("subnet_tag", subnet_tag, "YAGNA_SUBNET", DEFAULT_SUBNET)
        payment_driver = _setting(
            "payment_driver", payment_driver, "YAGNA_PAYMENT_DRIVER", DEFAULT_PAYMENT_DRIVER, lower=True
        )
        payment_network = _setting(
            "payment_network", payment_network, "YAGNA_PAYMENT_NETWORK", DEFAULT_PAYMENT_NETWORK, lower=True
        )
        if invoice_timeout < 0:
            raise ConfigurationError(f"invoice_timeout must not be negative, got {invoice_timeout!r}")
        self.health_check_interval = _seconds("health_check_interval", health_check_interval)
        self.health_check_retries = _count("health_check_retries", health_check_retries)
        self.shutdown_timeout = _seconds("shutdown_timeout", shutdown_timeout, allow_zero=True)
        self.price_tolerance = _tolerance(price_tolerance)
        self.subnet_tag = subnet_tag
        self.payment_driver = payment_driver
        self.payment_network = payment_network
        self.payment_platform = payment_platform(payment_driver, payment_network)
        self.strategy: MarketStrategy = strategy if strategy is not None else LeastExpensiveLinearPayu()
        _check_strategy(self.strategy)
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
        self.jobs: list[Job[Any, Any]] = []
        self.networks: list[Network] = []
        self._identity: str | None = None
        self._interrupted = False
        self._presses = 0  # Ctrl-C presses counted while running
        self._hurry = asyncio.Event()  # a second Ctrl-C: skip the services' shutdown, pay within a hard bound
        self._give_up = asyncio.Event()  # a third Ctrl-C: leave now
        self._sigint_previous: Any = None
        self._owner: asyncio.Task[Any] | None = None
        self._closing = False
        self._stopping_clusters: list[Cluster[Any]] = []

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
            stack.push_async_callback(self._carry_on, "releasing the allocation", self._payments.aclose)
            stack.push_async_callback(self._carry_on, "ending the agreements and paying them", self._settle)
            stack.push_async_callback(self._carry_on, "removing the networks", self._remove_networks)
            stack.push_async_callback(self._carry_on, "stopping the jobs", self._stop_jobs)
            stack.push_async_callback(self._carry_on, "stopping the services", self._stop_clusters)
            self.bus.emit(GolemStarted(api_url=config.root_url, identity=identity.identity, local=local))
        except BaseException:
            self._stack = None
            await stack.aclose()
            raise
        self._closing = False
        self._presses = 0
        self._hurry, self._give_up = asyncio.Event(), asyncio.Event()
        self._watch_interrupts()

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

        ``async with Golem(…)`` calls it on the way out; :meth:`stop` is the same, under yapapi's name. A step
        that fails for a reason of the node's (it no longer answers) is logged and the next one runs.
        """
        stack, self._stack = self._stack, None
        if stack is None:
            return
        self._closing = True
        if self._interrupted:
            _log.info("Interrupted: stopping the services and paying what is owed (bounded to a few seconds)")
        closing = asyncio.ensure_future(stack.aclose())
        try:
            await self._until_closed(closing)
        finally:
            self._unwatch_interrupts()
            self._interrupted = False
            self.bus.emit(GolemStopped())

    async def _until_closed(self, closing: asyncio.Future[None]) -> None:
        """Await the clean-up; after a second Ctrl-C at most :data:`HURRIED_EXIT_TIMEOUT` s, after a third none."""
        give_up: asyncio.Future[Any] = asyncio.ensure_future(self._give_up.wait())
        hurry: asyncio.Future[Any] = asyncio.ensure_future(self._hurry.wait())
        deadline: asyncio.Future[Any] | None = None
        try:
            while not closing.done():
                waiting: set[asyncio.Future[Any]] = {closing, give_up, hurry if deadline is None else deadline}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if deadline is None and hurry.done():
                    deadline = asyncio.ensure_future(asyncio.sleep(HURRIED_EXIT_TIMEOUT))  # the hard bound
                out_of_time = deadline is not None and deadline.done()
                if (give_up.done() or out_of_time) and not closing.done():
                    how = "at once (a third Ctrl-C)" if give_up.done() else f"{HURRIED_EXIT_TIMEOUT:g} s after Ctrl-C"
                    self._say_unpaid(how)
                    closing.cancel()  # what is left of the clean-up runs on, cancelled: the node is still stopped
                    await asyncio.wait({closing})
                    if not closing.cancelled() and closing.exception() is not None:
                        _log.debug("clean-up after giving up: %r", closing.exception())
                    return
        finally:
            for waiter in (give_up, hurry, deadline):
                if waiter is not None:
                    waiter.cancel()
        closing.result()

    def _say_unpaid(self, how: str) -> None:
        """Log (and emit) what the exit leaves unpaid: agreements not ended, invoices not accepted."""
        payments = self._payments
        unpaid = [a for a in self.agreements if payments is None or not payments.settled(a.agreement_id)]
        if not unpaid:
            _log.warning("Left %s: every agreement was settled", how)
            return
        listed = ", ".join(
            f"{a.agreement_id} with {a.provider_name!r} ({'ended' if a.terminated else 'not ended'})" for a in unpaid
        )
        _log.warning("Left %s: %d agreement(s) left unpaid: %s", how, len(unpaid), listed)
        self.bus.emit(UnpaidAgreementsWarning(agreement_ids=tuple(a.agreement_id for a in unpaid), waited=0.0))

    async def stop(self) -> None:
        """yapapi's name for :meth:`aclose`."""
        await self.aclose()

    async def _carry_on(self, what: str, step: Callable[[], Awaitable[None]]) -> None:
        """Run a clean-up step; a fault of the node's is logged and the exit goes on to the next step."""
        try:
            await step()
        except GolemError as exc:
            _log.error("%s failed, carrying on: %s", what[0].upper() + what[1:], exc)

    # --- Ctrl-C -----------------------------------------------------------------------------------

    def _watch_interrupts(self) -> None:
        """Count Ctrl-C presses ourselves while running (see the class docstring), where that is safe."""
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGINT)
        if previous is not signal.default_int_handler and not _is_asyncio_runner_handler(previous):
            return  # someone else handles Ctrl-C (a notebook kernel, the program itself): leave it to them
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGINT, self._on_interrupt)
        except (NotImplementedError, RuntimeError, ValueError):
            return
        self._sigint_previous = previous
        self._owner = asyncio.current_task()

    def _unwatch_interrupts(self) -> None:
        previous, self._sigint_previous = self._sigint_previous, None
        if previous is None:
            return
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)
            signal.signal(signal.SIGINT, previous)

    def _on_interrupt(self) -> None:
        self._presses += 1
        if self._presses == 1 and not self._closing:
            _log.warning(
                "Ctrl-C: stopping the services (up to %g s) and paying what is owed; Ctrl-C again to hurry",
                INTERRUPTED_STOP_TIMEOUT,
            )
            if _is_asyncio_runner_handler(self._sigint_previous):
                self._sigint_previous(signal.SIGINT, None)  # as asyncio.run does: cancel the main task, count it
            elif self._owner is not None:
                self._owner.cancel()
        elif not self._hurry.is_set():
            self._interrupted = True
            _log.warning(
                "Ctrl-C during the exit: not waiting for the services any more; ending the agreements and paying "
                "what is owed within %g s (Ctrl-C once more to leave at once, leaving providers unpaid)",
                HURRIED_EXIT_TIMEOUT,
            )
            self._hurry.set()
            for cluster in self._stopping_clusters:
                cluster.abort()
        elif not self._give_up.is_set():
            _log.warning("Ctrl-C once more: leaving now")
            self._give_up.set()

    # --- the steps of the exit --------------------------------------------------------------------

    async def _stop_clusters(self) -> None:
        """Stop every cluster (each instance's shutdown is bounded) before payments are settled."""
        clusters, self.clusters = self.clusters, []
        self._stopping_clusters = clusters
        if not clusters:
            return
        stopping = [cluster._stopping() for cluster in clusters]
        if self._hurry.is_set():
            for cluster in clusters:
                cluster.abort()
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

    async def _stop_jobs(self) -> None:
        """Stop the task jobs still running (each bounds its own stop) before payments are settled."""
        jobs, self.jobs = self.jobs, []
        for job in jobs:
            if not job.done:
                await job.aclose()

    async def _remove_networks(self) -> None:
        """Remove the networks this Golem created (after the clusters stopped: their nodes are gone)."""
        networks, self.networks = self.networks, []
        for network in networks:
            await network.remove()

    async def _settle(self) -> None:
        for demand in self._demands:
            await demand.aclose()
        self._demands.clear()
        assert self._payments is not None
        payments = self._payments
        ending = [agreement.terminate() for agreement in self.agreements if not agreement.terminated]
        for agreement, outcome in zip(
            [a for a in self.agreements if not a.terminated],
            await asyncio.gather(*ending, return_exceptions=True),
            strict=True,
        ):
            if isinstance(outcome, GolemError):
                _log.warning("could not terminate %r: %s", agreement, outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
        # An agreement that could not be ended gets no invoice: it is not waited for, and is said to be unpaid.
        ended = [a.agreement_id for a in self.agreements if a.terminated]
        waited = min(self._invoice_timeout, INTERRUPTED_INVOICE_TIMEOUT) if self._interrupted else self._invoice_timeout
        if self._hurry.is_set():
            waited = min(waited, HURRIED_EXIT_TIMEOUT)
        no_invoice = await payments.wait_for_invoices(ended, waited)
        for agreement_id, why in payments.unpaid.items():
            _log.warning("Agreement %s left unpaid: %s", agreement_id, why)
        unpaid = no_invoice + [a.agreement_id for a in self.agreements if not a.terminated]
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
        health_check_retries: int | None = None,
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
        and ``health_check_retries`` (default: those given to ``Golem``) are how often each activity is checked
        for life and how many checks in a row that fail lose its instance; an instance whose
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
        start_attempts = _count("start_attempts", start_attempts)
        settings = InstanceSettings(
            stream_output=bool(stream_output),
            health_check_interval=self.health_check_interval
            if health_check_interval is None
            else _seconds("health_check_interval", health_check_interval),
            health_check_retries=self.health_check_retries
            if health_check_retries is None
            else _count("health_check_retries", health_check_retries),
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

    # --- the Task API and the low-level path --------------------------------------------------------

    def execute_tasks(
        self,
        worker: WorkerFunction[D, R],
        data: Iterable[Task[D, R]] | AsyncIterable[Task[D, R]],
        payload: Payload,
        max_workers: int | None = None,
        timeout: timedelta | float | None = None,
        job_id: str | None = None,
        implicit_init: bool = True,
        *,
        task_attempts: int = DEFAULT_TASK_ATTEMPTS,
    ) -> Job[D, R]:
        """Run ``worker`` over the tasks of ``data`` on providers of ``payload``; iterate the result for the
        tasks whose results were accepted (yapapi's ``execute_tasks``; :mod:`golem_api.tasks.executor`).

        ``worker(ctx, tasks)`` is an asynchronous generator function that takes tasks from ``tasks`` and yields
        scripts; ``data`` is an iterable or asynchronous iterable of :class:`~golem_api.tasks.task.Task`
        (read a few at a time, so an endless generator works). ``max_workers`` (default 5) bounds the workers
        running at once, ``timeout`` (a ``timedelta`` or seconds; default 15 minutes) the whole job,
        ``task_attempts`` (default 3) the tries of each task; ``implicit_init=False`` leaves ``deploy`` and
        ``start`` to the worker. ``job_id`` names the job (default ``"1"``, ``"2"``, …). Nothing runs until
        the returned :class:`~golem_api.tasks.executor.Job` is iterated. Bad arguments raise
        ``ConfigurationError`` (``TypeError`` for a worker that is not an asynchronous generator function).
        """
        from golem_api.tasks.task import Task

        self._require_started()
        check_worker(worker)
        if isinstance(data, Task):
            raise ConfigurationError(f"data must be an iterable of tasks, not one task: write [{data!r}]")
        if isinstance(data, str | bytes | Mapping) or not isinstance(data, Iterable | AsyncIterable):
            raise ConfigurationError(
                f"data must be an iterable (or asynchronous iterable) of Task objects, got {data!r}"
            )
        if not isinstance(payload, Payload):
            raise ConfigurationError(
                f"payload must have demand_properties() and demand_constraints() (e.g. await vm.repo(…)), "
                f"got {payload!r}"
            )
        workers = _count("max_workers", DEFAULT_MAX_WORKERS if max_workers is None else max_workers)
        task_attempts = _count("task_attempts", task_attempts)
        if not isinstance(implicit_init, bool):
            raise ConfigurationError(f"implicit_init must be True or False, got {implicit_init!r}")
        if timeout is None:
            timeout = DEFAULT_TIMEOUT
        seconds = _seconds("timeout", timeout.total_seconds() if isinstance(timeout, timedelta) else timeout)
        if job_id is None:
            job_id = str(len(self.jobs) + 1)
            while any(job.id == job_id for job in self.jobs):
                job_id = f"{job_id}+"
        elif not isinstance(job_id, str) or not job_id:
            raise ConfigurationError(f"job_id must be a non-empty string, got {job_id!r}")
        elif any(job.id == job_id for job in self.jobs):
            raise ConfigurationError(f"job_id {job_id!r} is already used by a job of this Golem; choose another")
        job: Job[D, R] = Job(
            self,
            worker,
            data,
            payload,
            job_id=job_id,
            max_workers=workers,
            timeout=seconds,
            implicit_init=implicit_init,
            task_attempts=task_attempts,
        )
        self.jobs.append(job)
        return job

    def work_context(self, activity: Activity, *, stream_output: bool = False) -> WorkContext:
        """A :class:`~golem_api.activity.work_context.WorkContext` for an activity of this engine, for the
        low-level path: ``demand = await golem.create_demand(payload)``, ``agreement = await
        demand.agreement()``, ``ctx = golem.work_context(await agreement.create_activity())``, then
        ``await ctx.run_script(script)``. ``stream_output`` streams every ``run``'s output as events."""
        from golem_api.activity.activity import Activity
        from golem_api.activity.work_context import WorkContext

        self._require_started()
        assert self._storage is not None
        if not isinstance(activity, Activity):
            raise ConfigurationError(
                f"work_context takes an Activity (from `await agreement.create_activity()`), got {activity!r}"
            )
        return WorkContext(activity, self._storage, self.bus, stream_output=stream_output)
