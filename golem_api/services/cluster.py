"""``Cluster``: the instances of one service class, run from one demand, stopped together.

``Golem.run_service`` returns a cluster at once; its instances get agreements and start in the background,
each in a task of its own (:class:`~golem_api.services._runner.InstanceRunner`) that the cluster owns::

    cluster = await golem.run_service(Clock, num_instances=2)
    await cluster.wait_running(timeout=60)
    print(cluster)                      # <Cluster Clock: 2 instances (running: 2)>
    cluster.stop()                      # schedules the stop; `await cluster.stop()` also waits for it

``stop()`` returns an ``asyncio.Task``: called as a plain statement (as in yapapi) it starts stopping every
instance (each runs its ``shutdown`` handler, bounded, then ends its activity and agreement); awaited, it
returns once they all ended. Calling it again returns the same task. Cancelling that task (Ctrl-C during
``await cluster.stop()``) only stops the waiting: the stop goes on, and ``Golem``'s exit, which stops every
cluster and waits for them (within its bounds) before it settles payments, takes it over.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from golem_api.errors import GolemError, GolemTimeoutError
from golem_api.events import Event, EventBus, ServiceStateChanged
from golem_api.services._arguments import check_network_addresses, plan_instances
from golem_api.services._runner import CLEANUP_TIMEOUT, InstanceRunner, InstanceSettings
from golem_api.services.service import Service
from golem_shared.tasks import wait_event

if TYPE_CHECKING:
    from rich.console import RenderableType

    from golem_api._summary import SummaryLogger
    from golem_api.activity.storage import GsbStorage
    from golem_api.market.negotiation import Demand
    from golem_api.network.network import Network

__all__ = ["Cluster", "ServiceT"]

ServiceT = TypeVar("ServiceT", bound=Service)

_STOP_MARGIN = 2 * CLEANUP_TIMEOUT + 5.0  # beyond the shutdown handler's bound: destroy, terminate, slack


async def _await_shielded(task: asyncio.Task[None]) -> None:
    await asyncio.shield(task)


class Cluster(Generic[ServiceT]):
    """The running instances of ``service_class``; made by ``Golem.run_service``.

    It renders as a table of its instances (name, provider, state, uptime, cost so far): ``rich.print(cluster)``
    in a terminal, or ``cluster`` as the last line of a notebook cell. Uptime and cost come from ``summary``
    (the engine's ``golem.summary``).
    """

    def __init__(
        self,
        service_class: type[ServiceT],
        *,
        demand: Demand,
        storage: GsbStorage,
        bus: EventBus,
        settings: InstanceSettings,
        summary: SummaryLogger | None = None,
        network: Network | None = None,
    ) -> None:
        self.service_class = service_class
        self.network = network
        """The VPN the instances join (``run_service(network=…)``), or ``None``."""
        self.summary = summary
        self.demand = demand
        self.settings = settings
        self._storage = storage
        self._bus = bus
        self._runners: list[InstanceRunner] = []
        self._numbers = itertools.count(1)
        self._instance_stops: list[asyncio.Task[None]] = []
        self._stop_task: asyncio.Task[None] | None = None
        self._stop_waiter: asyncio.Task[None] | None = None

    # --- instances --------------------------------------------------------------------------------

    @property
    def instances(self) -> list[ServiceT]:
        """A copy of the list of instances, in the order they were spawned."""
        return [runner.service for runner in self._runners]  # type: ignore[misc]

    @property
    def stopped(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop_task is not None

    def spawn_instances(
        self,
        num_instances: int | None = None,
        instance_params: Iterable[Mapping[str, Any]] | None = None,
        network_addresses: Sequence[str] | None = None,
    ) -> list[ServiceT]:
        """Add instances (same rules as ``run_service``); they start in the background. Returns them.

        ``network_addresses`` gives the first ones their VPN addresses (the cluster's ``network``), as in
        ``run_service``.
        """
        planned = plan_instances(self.service_class, num_instances, instance_params)
        addresses = check_network_addresses(self.network, network_addresses, len(planned))
        return self.spawn_planned(planned, addresses)

    def spawn_planned(
        self, planned: Iterable[Mapping[str, Any]], network_addresses: Sequence[str | None] = ()
    ) -> list[ServiceT]:
        """Add one instance per dict of constructor keywords, already checked by ``plan_instances``; the
        first ones get ``network_addresses`` (checked by ``check_network_addresses``)."""
        if self._stop_task is not None:
            raise GolemError(f"{self!r} was stopped; run the service again to get new instances")
        spawned: list[ServiceT] = []
        for params in planned:
            service = self.service_class(**params)
            default_name = params.get("instance_name")
            if not isinstance(default_name, str) or not default_name:
                default_name = f"{self.service_class.__name__}-{next(self._numbers)}"
            service._attach(name=default_name, bus=self._bus)
            spawned.append(service)
        for index, service in enumerate(spawned):
            runner = InstanceRunner(
                service,
                demand=self.demand,
                storage=self._storage,
                bus=self._bus,
                settings=self.settings,
                network=self.network,
                network_address=network_addresses[index] if index < len(network_addresses) else None,
            )
            self._runners.append(runner)
            runner.launch()
        return spawned

    def stop_instance(self, instance: Service) -> asyncio.Task[None]:
        """Stop one instance (its ``shutdown`` runs); await the returned task to wait until it has ended."""
        runner = next((r for r in self._runners if r.service is instance), None)
        if runner is None:
            raise GolemError(f"{instance!r} is not an instance of {self!r}")
        runner.request_stop("stopped by the requestor")
        task = asyncio.create_task(self._finish(runner), name=f"stopping {instance.name}")
        self._instance_stops.append(task)
        return task

    async def _finish(self, runner: InstanceRunner) -> None:
        await runner.finish(self.settings.shutdown_timeout + _STOP_MARGIN)

    # --- stopping ---------------------------------------------------------------------------------

    def stop(self) -> asyncio.Task[None]:
        """Stop every instance; returns a task that ends when they all ended (calling again returns it).

        Cancelling the returned task cancels the waiting, not the stop.
        """
        stopping = self._stopping()
        if self._stop_waiter is None:
            self._stop_waiter = asyncio.create_task(_await_shielded(stopping), name=f"waiting for {self!r} to stop")
        return self._stop_waiter

    def _stopping(self) -> asyncio.Task[None]:
        """The task that stops every instance (started on the first call)."""
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self._stop_all(), name=f"stopping {self!r}")
        return self._stop_task

    def abort(self) -> None:
        """Cancel every instance's task at once, without waiting for handlers; each still ends its activity and
        agreement (bounded). For an interrupted run: ``Golem`` calls it when a stop takes too long."""
        for runner in self._runners:
            task = runner.task
            if task is not None and not task.done():
                task.cancel()

    async def _stop_all(self) -> None:
        for runner in self._runners:
            runner.request_stop("the cluster was stopped")
        await asyncio.gather(*(self._finish(runner) for runner in self._runners))
        if self._instance_stops:
            await asyncio.gather(*self._instance_stops)
        await self.demand.aclose()

    async def __aenter__(self) -> Cluster[ServiceT]:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # --- waiting ----------------------------------------------------------------------------------

    async def wait_running(self, timeout: float = 60.0) -> None:
        """Return once every instance is ``running``.

        Raises ``GolemError`` when an instance ended (``terminated`` or ``unresponsive``) before it ran,
        :class:`~golem_api.errors.GolemTimeoutError` after ``timeout`` s.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        changed = asyncio.Event()

        def wake(_event: Event) -> None:
            changed.set()

        subscription = self._bus.subscribe(wake, ServiceStateChanged)
        try:
            while True:
                instances = self.instances
                ended = [i for i in instances if i.state.id in ("terminated", "unresponsive")]
                if ended:
                    details = "; ".join(f"{i.name}: {i.state.id} ({i.exc_info[1]!r})" for i in ended)
                    raise GolemError(f"{len(ended)} instance(s) of {self!r} ended before running: {details}")
                if all(i.state.id == "running" for i in instances):
                    return
                changed.clear()
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise GolemTimeoutError(
                        f"not every instance was running after {timeout:g} s: {self!r}", timeout=timeout
                    )
                await wait_event(changed, remaining)
        finally:
            self._bus.unsubscribe(subscription)

    def __rich__(self) -> RenderableType:
        """The instances as a table (:func:`golem_api.console.status_table`)."""
        from golem_api.console import status_table

        return status_table(self.instances, self.summary, title=repr(self))

    def _repr_html_(self) -> str:
        """The instances' table as HTML, for notebooks."""
        from golem_api.console import to_html

        return to_html(self.__rich__())

    def __repr__(self) -> str:
        counts = Counter(runner.service.state.id for runner in self._runners)
        states = ", ".join(f"{state}: {n}" for state, n in sorted(counts.items()))
        stopped = ", stopped" if self._stop_task is not None else ""
        return (
            f"<Cluster {self.service_class.__name__}: {len(self._runners)} instance(s)"
            f"{f' ({states})' if states else ''}{stopped}>"
        )
