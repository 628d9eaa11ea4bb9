"""``Service``: what users subclass to describe a long-lived program on a provider.

A subclass says what to run (``get_payload``) and how, in three asynchronous-generator handlers that
``yield`` scripts made with ``self._ctx.new_script()``::

    class Clock(Service):
        @staticmethod
        async def get_payload() -> Payload:
            return VmPayload(min_mem_gib=0.5)

        async def run(self):
            while True:
                script = self._ctx.new_script()
                now = script.run("/bin/date")
                yield script                   # resumes when every command of the script has finished
                print((await now).stdout)

``results = yield script`` hands the handler the list of :class:`CommandResult` (also awaitable, so yapapi's
``future_results = yield script; results = await future_results`` works); a command that failed raises
:class:`~golem_api.errors.CommandExecutionError` inside the handler, at that ``yield``, so the handler may catch
it and go on (:mod:`golem_api.activity.handlers`). The cluster drives the handlers
(:mod:`golem_api.services._runner`); this class holds what an instance is: its parameters, its name, its state
and the provider it runs on.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from statemachine import State

from golem_api.errors import ConfigurationError, GolemError
from golem_api.events import EventBus, ServiceStateChanged
from golem_api.services.state import AVAILABLE_STATES, ServiceState

if TYPE_CHECKING:
    from golem_api.activity.script import Script
    from golem_api.activity.work_context import WorkContext
    from golem_api.market.agreement import Agreement
    from golem_api.network.network import Network, Node
    from golem_api.payload import Payload

__all__ = ["HANDLERS", "ExcInfo", "Handler", "Service", "check_handlers"]

ExcInfo = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
Handler = AsyncGenerator["Script", Any]
"""What ``start``, ``run`` and ``shutdown`` return: a generator of scripts that receives their results
(a :class:`~golem_api.activity.handlers.ScriptResults`, or a :class:`~golem_api.activity.handlers.PendingResults`
for a script made with ``wait_for_results=False``)."""

HANDLERS = ("start", "run", "shutdown")


class _Nothing:
    """An awaitable that is already done (what the default ``reset`` returns)."""

    def __await__(self) -> Generator[Any, None, None]:
        yield from ()


_NOTHING = _Nothing()


def check_handlers(service_class: type[Service]) -> None:
    """Raise ``TypeError`` when a handler of ``service_class`` is not an asynchronous generator function."""
    for name in HANDLERS:
        handler = getattr(service_class, name, None)
        if not inspect.isasyncgenfunction(handler):
            raise TypeError(
                f"{service_class.__name__}.{name} must be an asynchronous generator (an `async def` that "
                f"yields scripts made with self._ctx.new_script()), got {handler!r}"
            )


class Service:
    """Base class of services: override ``get_payload`` and the handlers ``start``, ``run``, ``shutdown``.

    Instances are made by the cluster as ``ServiceClass(**params)`` for each dict of ``instance_params``, so
    a subclass's ``__init__`` takes those parameters as keywords (it need not call ``super().__init__()``).

    What an instance shows: ``state`` (compare with ``ServiceState.running``; ``state.id`` is the name),
    ``is_available``, ``provider_name``, ``provider_id``, ``exc_info`` (of the last handler failure,
    ``(None, None, None)`` when there was none), ``name`` (the ``instance_name`` parameter, or
    ``"<Class>-<n>"``), and, while it runs on a provider, ``ctx`` (also ``self._ctx``, as in yapapi). An
    instance run with ``run_service(..., network=…)`` also shows ``network`` and ``network_node`` (its address
    and node id in the VPN) while it holds a provider.
    """

    name: str = ""
    _service_id: str | None = None
    _work_context: WorkContext | None = None
    _agreement: Agreement | None = None
    _machine: ServiceState | None = None
    _bus: EventBus | None = None
    _exc_info: ExcInfo = (None, None, None)
    _network_node: Node | None = None

    def __init__(self, _id: str | None = None) -> None:
        """Subclasses may call ``super().__init__()`` (as yapapi's do) or not; ``_id`` sets :attr:`id`."""
        if _id is not None:
            if not isinstance(_id, str) or not _id:
                raise ConfigurationError(f"a service instance's _id must be a non-empty string, got {_id!r}")
            self._service_id = _id

    @property
    def id(self) -> str:
        """The instance's unique id (a random UUID unless ``_id`` was given), as in yapapi."""
        if self._service_id is None:
            self._service_id = str(uuid.uuid4())
        return self._service_id

    # --- what subclasses override ---------------------------------------------------------------

    @staticmethod
    async def get_payload() -> Payload | None:
        """The payload to run; ``None`` means ``run_service(..., payload=…)`` must give one."""
        return None

    async def start(self) -> Handler:
        """Deploy and start the payload (the default yields one script: ``deploy()`` then ``start()``)."""
        script = self.ctx.new_script()
        script.deploy(**self.get_deploy_args())
        script.start()
        yield script

    async def run(self) -> Handler:
        """The service's work while it runs (the default waits until the instance is stopped)."""
        await asyncio.get_running_loop().create_future()  # never resolved: cancelled on stop
        yield self.ctx.new_script()  # pragma: no cover - never reached

    async def shutdown(self) -> Handler:
        """Stop the payload before the activity is destroyed (the default yields ``terminate()``)."""
        script = self.ctx.new_script()
        script.terminate()
        yield script

    def reset(self) -> Awaitable[None] | None:
        """Called before the instance is started again on a new agreement, after ``start`` failed.

        Override it as a plain method or as ``async def reset(self)`` (yapapi's form): the cluster awaits what
        it returns when that is awaitable. The default does nothing (and may be awaited).
        """
        return _NOTHING

    def get_deploy_args(self) -> dict[str, Any]:
        """The arguments of this instance's ``deploy`` command: the VPN's ``net`` when it runs in one (yapapi's
        name; ``script.deploy()`` adds them by itself, so overriding ``start`` need not call this)."""
        return self._network_node.get_deploy_args() if self._network_node is not None else {}

    # --- what an instance shows -----------------------------------------------------------------

    @property
    def ctx(self) -> WorkContext:
        """The work context of the activity this instance runs in (only while it has one)."""
        if self._work_context is None:
            raise GolemError(
                f"service instance {self.name or type(self).__name__!r} has no activity "
                f"(state {self.state.id}): scripts can only be made inside its handlers"
            )
        return self._work_context

    @property
    def _ctx(self) -> WorkContext:
        """``ctx`` under the name yapapi's handlers use: ``self._ctx.new_script()``."""
        return self.ctx

    @property
    def state(self) -> State:
        """The current :class:`ServiceState` state, e.g. ``ServiceState.running``."""
        if self._machine is None:
            return ServiceState.pending
        return self._machine.state

    @property
    def is_available(self) -> bool:
        """True while the instance holds a provider: starting, running or stopping."""
        return self.state.id in AVAILABLE_STATES

    @property
    def provider_name(self) -> str | None:
        """The name of the provider the instance runs (or last ran) on."""
        return self._agreement.provider_name if self._agreement is not None else None

    @property
    def provider_id(self) -> str | None:
        """The node id of the provider the instance runs (or last ran) on."""
        return self._agreement.provider_id if self._agreement is not None else None

    @property
    def network_node(self) -> Node | None:
        """The instance's place in its VPN (``.ip``, ``.node_id``, ``.connect(port)``), while it holds a provider
        and was run with ``network=``; else ``None``."""
        return self._network_node

    @property
    def network(self) -> Network | None:
        """The VPN the instance is in, or ``None``."""
        return self._network_node.network if self._network_node is not None else None

    @property
    def exc_info(self) -> ExcInfo:
        """``(type, exception, traceback)`` of the last handler failure; ``(None, None, None)`` if none."""
        return self._exc_info

    def __repr__(self) -> str:
        where = f" on {self.provider_name!r}" if self.provider_name else ""
        address = f" @ {self._network_node.ip}" if self._network_node is not None else ""
        return f"<{type(self).__name__} {self.name!r} {self.state.id}{where}{address}>"

    # --- what the cluster does ------------------------------------------------------------------

    def _attach(self, *, name: str, bus: EventBus) -> None:
        """Give the instance its name (unless its ``__init__`` set one) and its state machine."""
        if self._machine is not None:
            raise GolemError(f"{self!r} already belongs to a cluster; make a new instance for another one")
        if not isinstance(getattr(self, "name", None), str) or not self.name:
            self.name = name
        self._bus = bus
        self._machine = ServiceState(on_change=self._report_change)

    def _report_change(self, old: str, new: str, reason: str | None) -> None:
        if self._bus is not None:
            self._bus.emit(
                ServiceStateChanged(
                    service=type(self).__name__,
                    instance=self.name,
                    old=old,
                    new=new,
                    provider_name=self.provider_name,
                    reason=reason,
                )
            )

    def _change(self, transition: str, reason: str | None = None) -> None:
        """Fire a :class:`ServiceState` transition (``start``, ``ready``, ``stop``, …)."""
        assert self._machine is not None, "the instance is not attached to a cluster"
        self._machine.send(transition, reason=reason)

    def _handler(self, name: str) -> Callable[[], Handler]:
        handler: Callable[[], Handler] = getattr(self, name)
        return handler

    def _record_failure(self, exc: BaseException) -> None:
        self._exc_info = (type(exc), exc, exc.__traceback__)
