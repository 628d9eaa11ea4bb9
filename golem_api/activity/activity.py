"""An activity: a run of the provider's runtime under an agreement, and the batches of commands sent to it."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from golem_api._retry import retry
from golem_api.errors import GoneError, NotFoundError
from golem_api.events import ActivityCreated, ActivityDestroyed, EventBus

if TYPE_CHECKING:
    from golem_api._rest.client import RestClient
    from golem_api._rest.models import ActivityState, ActivityUsage, ExeScriptCommandResult, RuntimeEvent
    from golem_api.market.agreement import Agreement

__all__ = ["Activity"]

_log = logging.getLogger(__name__)


class Activity:
    """One activity on a provider; ``destroy`` ends it (idempotent, retried on transient failures)."""

    def __init__(self, activity_id: str, agreement: Agreement, rest: RestClient, bus: EventBus) -> None:
        self.activity_id = activity_id
        self.agreement = agreement
        self._rest = rest
        self._bus = bus
        self._destroyed = False
        self._destroying = asyncio.Lock()
        self.end_reason: str | None = None
        """Why the requestor ends (or ended) the activity, once it was asked to."""
        self._long_polls = 0  # results long-polls in flight

    @classmethod
    async def create(cls, agreement: Agreement, rest: RestClient, bus: EventBus) -> Activity:
        """Ask the provider to start an activity under ``agreement``."""
        activity_id = await rest.activity.create_activity(agreement.agreement_id)
        bus.emit(
            ActivityCreated(
                activity_id=activity_id,
                agreement_id=agreement.agreement_id,
                provider_name=agreement.provider_name,
            )
        )
        return cls(activity_id, agreement, rest, bus)

    @property
    def destroyed(self) -> bool:
        """True once the node confirmed that the activity was destroyed."""
        return self._destroyed

    @property
    def long_polled(self) -> bool:
        """True while a results long-poll of this activity is in flight.

        Such a poll is itself a bounded question to the provider about this activity: it is answered (a
        result, or the node's "not yet" at its timeout), or it fails within ``timeout`` plus a margin, and a
        failed poll fails its script. The instance's health check skips its state query meanwhile (a starting
        instance waiting for a busy provider's sandbox asks nothing more than its poll).
        """
        return self._long_polls > 0

    @property
    def ending(self) -> bool:
        """True once the requestor asked to destroy the activity (confirmed or not)."""
        return self.end_reason is not None

    def __repr__(self) -> str:
        return f"<Activity {self.activity_id[:8]}… on {self.agreement.provider_name!r}>"

    async def state(self) -> ActivityState:
        """The activity's state as the provider reports it."""
        return await self._rest.activity.get_state(self.activity_id)

    async def usage(self) -> ActivityUsage:
        """The activity's usage counters as the provider reports them."""
        return await self._rest.activity.get_usage(self.activity_id)

    async def exec(self, commands: list[dict[str, Any]]) -> str:
        """Send a batch of ExeScript commands (``[{"deploy": {}}, {"start": {}}, …]``); returns the batch id.

        Most code builds a :class:`~golem_api.activity.script.Script` and runs it with
        :meth:`WorkContext.run_script <golem_api.activity.work_context.WorkContext.run_script>` instead.
        """
        return await self._rest.activity.exec(self.activity_id, json.dumps(commands))

    async def results(
        self, batch_id: str, command_index: int | None = None, timeout: float | None = None, *, since: int = 0
    ) -> list[ExeScriptCommandResult]:
        """The batch's finished commands; with ``timeout``, waits for ``command_index`` (or the whole batch).

        ``RequestTimeoutError`` when ``command_index`` did not finish within ``timeout`` s. ``since`` leaves out
        (unparsed) the results of the commands before that index.
        """
        if timeout is None:
            return await self._rest.activity.get_exec_batch_results(
                self.activity_id, batch_id, command_index=command_index, since=since
            )
        self._long_polls += 1
        try:
            return await self._rest.activity.get_exec_batch_results(
                self.activity_id, batch_id, command_index=command_index, timeout=timeout, since=since
            )
        finally:
            self._long_polls -= 1

    def stream(self, batch_id: str) -> AbstractAsyncContextManager[AsyncIterator[RuntimeEvent]]:
        """The batch's runtime events as they happen: ``async with activity.stream(b) as events: async for …``.

        Only events after the stream opens arrive, and the stream does not end with the batch: stop reading
        when what you wait for has come.
        """
        return self._rest.activity.stream_exec_batch_results(self.activity_id, batch_id)

    async def destroy(self, reason: str = "destroyed by the requestor") -> None:
        """End the activity (the provider kills what still runs and sends its last debit note).

        Transient failures are retried; when the node still does not confirm, the error is raised and a later
        call tries again.
        """
        if self.end_reason is None:
            self.end_reason = reason
        async with self._destroying:
            if self._destroyed:
                return
            try:
                await retry(
                    lambda: self._rest.activity.destroy_activity(self.activity_id),
                    what=f"destroying activity {self.activity_id}",
                )
            except (NotFoundError, GoneError) as exc:
                _log.debug("activity %s was already gone: %s", self.activity_id, exc)
            self._destroyed = True
        self._bus.emit(
            ActivityDestroyed(
                activity_id=self.activity_id,
                agreement_id=self.agreement.agreement_id,
                provider_name=self.agreement.provider_name,
            )
        )
