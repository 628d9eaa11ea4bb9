"""Running one service instance through its lifecycle, from its agreement to its end.

An :class:`InstanceRunner` owns one task per instance (the cluster owns the runners). The task:

1. waits for an agreement from the cluster's demand (``pending``), passing over providers this instance
   already failed to start on while others are at hand;
2. in a VPN (``run_service(network=…)``), announces the provider's node in it at the instance's address;
   creates an activity, starts the health check, and drives the ``start`` handler (``starting``); a failure
   there (an exception, a failed command the handler did not catch, the activity lost) ends the agreement
   and, while attempts remain, starts over on a new agreement (``restart`` → ``pending``, ``ServiceRespawned``);
3. drives ``run`` (``running``) until it returns, fails or the instance is stopped;
4. drives ``shutdown`` with a time bound (``stopping``), then destroys the activity, removes the node from the
   VPN and terminates the agreement (``terminated``).

The health check is a second owned task: every ``health_check_interval`` seconds it asks the provider for the
activity's state (with a bound), except while a script's results long-poll is in flight (that poll is the check
then: it is answered or fails within its own bound, and a failed poll fails the script). A check that fails (no
answer within the bound, no connection, an error other than 404 or 410: a busy or restarting node) is a miss,
logged as a warning; ``health_check_retries`` misses in a row (3 by default, as in yapapi) lose the instance, and
an answered check or a long-poll in flight starts the count again. An answer that the activity is gone loses it at
once: ``Unresponsive``, ``Terminated`` without our asking, 404 or 410; as does an agreement that was ended (say, by
the payment checks). A lost instance's handler is cancelled, it goes ``unresponsive`` and its activity and
agreement are ended. A lost instance stays ``unresponsive`` unless it was still starting, in which case it is
respawned like a failed start. When the requestor ended the agreement for a fault of its own making (the budget ran
out: ``Agreement.failure``), the check wakes at once and the instance ends ``terminated`` with that failure as its
cause (``exc_info``), not ``unresponsive``.

A script cut short may leave its batch running on the provider (the activity API cannot kill a batch). Before
``shutdown`` runs, such a batch may finish within the shutdown's bound (``shutdown_timeout``, which the wait
counts against), as on the exe-unit the shutdown's script would run after it; if it has not, the activity is
ended (which kills it) and ``shutdown``, which could not run anything, is skipped.
A script whose timeout passed has ended its activity already: in ``start`` that is a failed start (respawned),
elsewhere the handler's failure, after which the instance stops.

Handlers are driven one ``yield`` at a time: each yielded script is run with ``WorkContext.run_script`` and its
results are sent back into the generator, or its error thrown in at the ``yield`` (``agen.athrow``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from attrs import frozen

from golem_api.activity.work_context import UNFINISHED_GRACE
from golem_api.errors import ActivityError, GolemError, GoneError, NotFoundError
from golem_api.events import EventBus, ServiceRespawned
from golem_api.services.service import Service
from golem_shared.tasks import within

if TYPE_CHECKING:
    from golem_api.activity.activity import Activity
    from golem_api.activity.storage import GsbStorage
    from golem_api.market.agreement import Agreement
    from golem_api.market.negotiation import Demand
    from golem_api.network.network import Network

__all__ = ["InstanceRunner", "InstanceSettings"]


_log = logging.getLogger(__name__)

T = TypeVar("T")

CLEANUP_TIMEOUT = 10.0
"""Seconds allowed for destroying an activity and, separately, for terminating an agreement."""
_MIN_STATE_TIMEOUT = 5.0  # the health check waits at least this long for an answer


@frozen(kw_only=True)
class InstanceSettings:
    """How a cluster runs its instances (see ``Golem.run_service`` for the meaning of each)."""

    stream_output: bool = False
    health_check_interval: float = 5.0
    health_check_retries: int = 3
    start_attempts: int = 3
    agreement_timeout: float = 300.0
    shutdown_timeout: float = 15.0


class _Interrupted(Exception):
    """The step in progress was cut short: the instance was stopped or lost its activity."""


class InstanceRunner:
    """Drives one :class:`Service` instance; :meth:`launch` starts its task, :meth:`request_stop` ends it."""

    def __init__(
        self,
        service: Service,
        *,
        demand: Demand,
        storage: GsbStorage,
        bus: EventBus,
        settings: InstanceSettings,
        network: Network | None = None,
        network_address: str | None = None,
    ) -> None:
        self.service = service
        self._network = network
        self._network_address = network_address
        self._demand = demand
        self._storage = storage
        self._bus = bus
        self._settings = settings
        self._task: asyncio.Task[None] | None = None
        self._step: asyncio.Task[Any] | None = None
        self._stoppable = False  # may a stop request cut the current step short?
        self._stop_reason: str | None = None
        self._lost: str | None = None
        self._cause: GolemError | None = None  # the requestor's own reason the instance was lost (the budget)
        self._agreement: Agreement | None = None
        self._activity: Activity | None = None
        self._health: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<InstanceRunner {self.service!r}>"

    # --- what the cluster calls -------------------------------------------------------------------

    def launch(self) -> None:
        """Start the instance's task."""
        if self._task is None:
            self._task = asyncio.create_task(self._main(), name=f"service instance {self.service.name}")

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The instance's task (``None`` before :meth:`launch`)."""
        return self._task

    def request_stop(self, reason: str = "stopped by the requestor") -> None:
        """Ask the instance to stop: it runs ``shutdown`` if it got that far, then ends ``terminated``."""
        if self._stop_reason is not None:
            return
        self._stop_reason = reason
        if self._stoppable and self._step is not None:
            self._step.cancel()

    async def finish(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the task to end by itself, then cancel it and await its clean-up."""
        task = self._task
        if task is None:
            self._end(self._stop_reason or "stopped before it was launched")
            return
        await asyncio.wait({task}, timeout=timeout)
        if not task.done():
            _log.warning("%r did not stop within %.0f s; cancelling it", self.service, timeout)
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            _log.error("%r ended with an error: %s", self.service, task.exception())

    # --- the lifecycle ----------------------------------------------------------------------------

    async def _main(self) -> None:
        service = self.service
        try:
            await self._lifecycle()
        except asyncio.CancelledError:
            await self._release("the service instance was cancelled", success=False)
            self._end("the service instance was cancelled")
            raise
        except Exception as exc:  # not the user's handler failing (that is handled): a fault of ours
            _log.exception("%r failed unexpectedly", service)
            service._record_failure(exc)
            await self._release(f"unexpected failure: {exc}", success=False)
            self._end(f"unexpected failure: {exc}")

    def _end(self, reason: str) -> None:
        """Move to ``terminated`` from wherever the instance is, unless it rests (terminated, unresponsive)."""
        if self.service.state.id not in ("terminated", "unresponsive"):
            self.service._change("terminate", reason=reason)

    async def _lifecycle(self) -> None:
        service = self.service
        avoid: set[str] = set()
        attempt = 0
        while True:
            attempt += 1
            self._lost = None
            try:
                agreement = await self._run_step(self._get_agreement(avoid), stoppable=True)
            except _Interrupted:
                service._change("terminate", reason=self._stop_reason)
                return
            except GolemError as exc:
                service._record_failure(exc)
                service._change("terminate", reason=f"no agreement: {exc}")
                return
            service._agreement = agreement
            service._change("start", reason=f"agreement {agreement.agreement_id} with {agreement.provider_name!r}")
            try:
                failure = await self._start()
            except _Interrupted:
                await self._stop_phase(self._stop_reason or "stopped")
                return
            if failure is None:
                break
            await self._release(failure, success=False)
            if attempt >= self._settings.start_attempts or self._stop_reason is not None:
                if service.state.id == "starting":  # else it rests unresponsive
                    service._change("terminate", reason=f"gave up after {attempt} start attempt(s): {failure}")
                return
            avoid.add(agreement.provider_id)
            self._bus.emit(
                ServiceRespawned(
                    service=type(service).__name__,
                    instance=service.name,
                    failed_provider_name=agreement.provider_name,
                    reason=failure,
                )
            )
            reset = service.reset()
            if inspect.isawaitable(reset):  # yapapi's reset is a coroutine; a plain method works too
                await reset
            service._change("restart", reason=f"respawning: {failure}")
            service._agreement = None
        service._change("ready")
        try:
            await self._run_step(self._drive("run"), stoppable=True)
            reason = "the run handler finished"
        except _Interrupted:
            if self._lost is not None:
                await self._become_unresponsive()
                return
            reason = self._stop_reason or "stopped"
        except Exception as exc:
            service._record_failure(exc)
            reason = f"the run handler failed: {type(exc).__name__}: {exc}"
            _log.warning("%r: %s", service, reason)
        await self._stop_phase(reason)

    async def _get_agreement(self, avoid: set[str]) -> Agreement:
        return await self._demand.agreement(self._settings.agreement_timeout, avoid=avoid)

    async def _start(self) -> str | None:
        """Open the activity and drive ``start``: ``None`` when it succeeded, else why it failed (the instance
        is then ``starting``, or ``unresponsive`` when it lost its activity). ``_Interrupted`` when stopped."""
        service = self.service
        try:
            await self._run_step(self._join_network(), stoppable=True)
            await self._run_step(self._open(), stoppable=True)
            await self._run_step(self._drive("start"), stoppable=True)
        except _Interrupted:
            if self._lost is None:
                raise
            lost = self._lost
            await self._become_unresponsive()
            return lost
        except Exception as exc:
            service._record_failure(exc)
            return f"start failed on {service.provider_name!r}: {type(exc).__name__}: {exc}"
        if self._stop_reason is not None:
            raise _Interrupted
        return None

    async def _join_network(self) -> None:
        """In a VPN: announce the provider's node at the instance's address (before the deploy that names it)."""
        if self._network is None:
            return
        assert self.service._agreement is not None
        self._agreement = self.service._agreement
        self.service._network_node = await self._network.add_node(
            self.service._agreement.provider_id, self._network_address
        )

    async def _open(self) -> None:
        from golem_api.activity.work_context import WorkContext

        assert self.service._agreement is not None
        self._agreement = self.service._agreement
        activity = await self._agreement.create_activity()
        self._activity = activity
        node = self.service._network_node
        self.service._work_context = WorkContext(
            activity,
            self._storage,
            self._bus,
            stream_output=self._settings.stream_output,
            deploy_args=node.get_deploy_args() if node is not None else None,
        )
        self._health = asyncio.create_task(
            self._watch(activity, self._agreement), name=f"health check of {self.service.name}"
        )

    async def _stop_phase(self, reason: str) -> None:
        """``stopping``: drive ``shutdown`` (bounded), then end the activity and the agreement."""
        service = self.service
        service._change("stop", reason=reason)
        ctx = service._work_context
        bound = self._settings.shutdown_timeout
        if ctx is not None:
            # The script cut short by the stop (a stats command, a plot) may finish its batch first, as the exe-unit
            # would run ``shutdown`` after it; a command that is not done by then is killed with the activity.
            waited = asyncio.get_running_loop().time()
            await ctx.settle_unfinished(max(bound, UNFINISHED_GRACE))
            bound = max(0.0, bound - (asyncio.get_running_loop().time() - waited))
            if ctx.activity.ending:
                _log.warning(
                    "%r: the shutdown handler is not run: the activity was ended (%s)", service, ctx.activity.end_reason
                )
                ctx = None
        if ctx is not None:
            try:
                await self._run_step(self._drive("shutdown"), stoppable=False, timeout=bound)
            except _Interrupted:
                if self._lost is not None:
                    await self._become_unresponsive()
                    return
            except asyncio.TimeoutError:
                _log.warning(
                    "%r: the shutdown handler did not finish within %g s", service, self._settings.shutdown_timeout
                )
            except Exception as exc:
                service._record_failure(exc)
                _log.warning("%r: the shutdown handler failed: %r", service, exc)
        await self._release(reason)
        service._change("terminate", reason=reason)

    async def _become_unresponsive(self) -> None:
        reason = self._lost or "the activity was lost"
        if self._cause is not None:  # not the provider's doing: the instance ends as a failure of that cause
            self.service._record_failure(self._cause)
            await self._release(reason, success=False)
            self.service._change("terminate", reason=reason)
            return
        self.service._change("mark_unresponsive", reason=reason)
        await self._release(reason, success=False)

    # --- steps ------------------------------------------------------------------------------------

    async def _run_step(self, coro: Coroutine[Any, Any, T], *, stoppable: bool, timeout: float | None = None) -> T:
        """Await ``coro`` as a task that a stop request (when ``stoppable``) or a lost activity cancels.

        Raises ``_Interrupted`` when it was cut short that way, ``asyncio.TimeoutError`` after ``timeout``.
        """
        if self._lost is not None or (stoppable and self._stop_reason is not None):
            coro.close()
            raise _Interrupted
        step = asyncio.create_task(coro)
        self._step, self._stoppable = step, stoppable
        try:
            await asyncio.wait({step}, timeout=timeout)
        finally:
            if not step.done():  # our own task is being cancelled, or the time is up
                step.cancel()
                await asyncio.wait({step})
            self._step, self._stoppable = None, False
        if self._lost is not None or (stoppable and self._stop_reason is not None):
            if not step.cancelled():
                with contextlib.suppress(BaseException):
                    step.result()  # retrieved, so that asyncio does not report it as lost
            raise _Interrupted
        if step.cancelled():
            raise asyncio.TimeoutError
        return step.result()

    async def _drive(self, name: str) -> None:
        """Run a handler: send each yielded script, resume the generator with its results or its error
        (:func:`golem_api.activity.handlers.drive_handler`)."""
        from golem_api.activity.handlers import drive_handler

        service = self.service
        handler = service._handler(name)()
        await drive_handler(handler, service.ctx, name=f"{type(service).__name__}.{name}")

    # --- health -----------------------------------------------------------------------------------

    async def _watch(self, activity: Activity, agreement: Agreement) -> None:
        """Every interval, check that the activity is alive; when it is gone, or ``health_check_retries`` checks
        in a row failed, mark it lost."""
        interval = self._settings.health_check_interval
        allowed = self._settings.health_check_retries
        timeout = max(interval, _MIN_STATE_TIMEOUT)
        misses = 0
        while True:
            # A period, cut short when the agreement ends (the payment checks may end it at any moment).
            with contextlib.suppress(asyncio.TimeoutError):
                await within(agreement.wait_ending(), interval)
            reason = self._ended(activity, agreement)
            if reason is None and activity.long_polled:
                # A script's results long-poll is in flight: a bounded question to the provider about this
                # activity, whose failure fails the script. No state query beside it (a start waiting for its
                # turn on a busy provider would otherwise ask both every interval).
                misses = 0
            elif reason is None:
                miss: str | None = None
                try:
                    state = await within(activity.state(), timeout)
                except (NotFoundError, GoneError) as exc:
                    reason = f"the activity's state could not be read: {exc}"
                except GolemError as exc:  # before TimeoutError: a 408 is both, and says what the node answered
                    miss = f"the activity's state could not be read: {exc}"
                except asyncio.TimeoutError:
                    miss = f"the provider did not report the activity's state within {timeout:g} s"
                else:
                    misses = 0
                    ended = state.state == "Terminated" and self.service.state.id != "stopping"
                    if state.state == "Unresponsive" or ended:
                        why = state.reason or state.error_message or "no reason given"
                        reason = f"activity {activity.activity_id} is {state.state}: {why}"
                # The agreement, or the activity by this side, ended while the query was out: say that rather
                # than what the query got (gone, or nothing).
                reason = self._ended(activity, agreement) or reason
                if reason is None and miss is not None:
                    misses += 1
                    if misses >= allowed:
                        reason = f"{miss} (health check failed {misses} times in a row)" if misses > 1 else miss
                    else:
                        _log.warning(
                            "%r on %r: health check failed (%d of %d in a row): %s",
                            self.service,
                            agreement.provider_name,
                            misses,
                            allowed,
                            miss,
                        )
            if reason is not None:
                _log.warning("%r on %r is lost: %s", self.service, agreement.provider_name, reason)
                self._lost = reason
                if self._step is not None:
                    self._step.cancel()
                return

    def _ended(self, activity: Activity, agreement: Agreement) -> str | None:
        """Why the instance is lost when its agreement or activity was ended (else ``None``); a failure of the
        requestor's own making (the budget, a script's timeout) becomes its cause."""
        if agreement.failure is not None:
            self._cause = agreement.failure
            return str(agreement.failure)
        if agreement.terminated or agreement.end_reason is not None:
            return f"agreement {agreement.agreement_id} was terminated: {agreement.end_reason or 'no reason'}"
        if activity.ending:  # the requestor ended it (a script's timeout): a failure, not the provider's
            reason = f"{activity!r} was ended: {activity.end_reason}"
            self._cause = ActivityError(reason)
            return reason
        return None

    async def _stop_watch(self) -> None:
        health, self._health = self._health, None
        if health is not None and health is not asyncio.current_task():
            health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await health

    async def _release(self, reason: str, *, success: bool = True) -> None:
        """Stop the health check, destroy the activity and terminate the agreement (each bounded)."""
        await self._stop_watch()
        activity, self._activity = self._activity, None
        agreement, self._agreement = self._agreement, None
        self.service._work_context = None
        if activity is not None:
            try:
                await asyncio.wait_for(activity.destroy(), CLEANUP_TIMEOUT)
            except (GolemError, asyncio.TimeoutError) as exc:
                _log.warning("could not destroy %r: %r", activity, exc)
        node, self.service._network_node = self.service._network_node, None
        if node is not None:
            try:
                await asyncio.wait_for(node.network.remove_node(node.node_id), CLEANUP_TIMEOUT)
            except (GolemError, asyncio.TimeoutError) as exc:
                _log.warning("could not remove %s from %r: %r", node.node_id, node.network, exc)
        agreement = agreement or self.service._agreement
        if agreement is not None and not agreement.terminated:
            try:
                await asyncio.wait_for(agreement.terminate(reason, success=success), CLEANUP_TIMEOUT)
            except (GolemError, asyncio.TimeoutError) as exc:
                _log.warning("could not terminate %r: %r", agreement, exc)
