"""One retry policy for every call to the node that is safe to repeat.

A call is *safe to repeat* when doing it twice has the effect of doing it once: reads, long-polls, and the
calls the daemon answers the same way the second time (accepting a debit note or an invoice, terminating an
agreement, destroying an activity, releasing an allocation, withdrawing a demand). Creating things (a demand,
an agreement, an activity, a batch) and countering a proposal are not: they are never retried here.

A failure is *transient* when the node may well answer next time: no HTTP answer at all
(:class:`~golem_api.errors.NodeUnreachableError`: a refused or dropped connection, a time-out) or a server
error (5xx, except 501, which says the node never does that). Everything else (4xx, a malformed answer)
is the answer, and is raised at once.

:func:`retry` repeats a call on transient failures with an exponential backoff (:class:`RetryPolicy`: from
``first_delay`` doubling up to ``max_delay``) until it succeeds or ``deadline`` seconds have passed, then
raises the last failure. A node that has not answered any request for ``deadline`` seconds already
(``NodeUnreachableError.down_for``) gets no more retries, so that clean-up after a node died does not wait a
whole deadline per call. Each retry is logged as a warning naming the call and the failure. Loops that must
outlive any outage (the payment and offer pollers) pause with :meth:`RetryPolicy.delays` instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from attrs import Attribute, field, frozen

from golem_api.errors import ConfigurationError, GolemError, NodeUnreachableError, ServerError

__all__ = ["DEFAULT_POLICY", "RetryPolicy", "is_transient", "retry"]

T = TypeVar("T")

_log = logging.getLogger("golem_api.retry")


def _positive(_instance: object, attribute: Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
        raise ConfigurationError(f"RetryPolicy.{attribute.name} must be a positive number of seconds, got {value!r}")


@frozen(kw_only=True)
class RetryPolicy:
    """How transient failures are retried: waits from ``first_delay`` s, times ``factor``, at most
    ``max_delay`` s each, for at most ``deadline`` s in all (from the first attempt)."""

    first_delay: float = field(default=0.2, validator=_positive)
    factor: float = field(default=2.0, validator=_positive)
    max_delay: float = field(default=2.0, validator=_positive)
    deadline: float = field(default=10.0, validator=_positive)

    def delays(self) -> Iterator[float]:
        """The pauses before each retry: ``first_delay``, growing by ``factor``, capped at ``max_delay``, forever."""
        delay = self.first_delay
        while True:
            yield delay
            delay = min(delay * self.factor, self.max_delay)


DEFAULT_POLICY = RetryPolicy()
"""The policy of every retried call of golem-api: 0.2 s, 0.4 s, 0.8 s, 1.6 s, then every 2 s, for 10 s."""


def is_transient(exc: BaseException) -> bool:
    """True when the node may answer differently next time: no answer at all, or a 5xx other than 501."""
    if isinstance(exc, NodeUnreachableError):
        return True
    return isinstance(exc, ServerError) and exc.status >= 500 and exc.status != 501


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    policy: RetryPolicy = DEFAULT_POLICY,
    logger: logging.Logger = _log,
) -> T:
    """``await call()``, again after each transient failure (see the module docstring), within ``policy``.

    ``what`` names the call in the warnings (``"accepting invoice 1f3…"``). Non-transient failures, and the
    last transient one once ``policy.deadline`` would pass, are raised as they are.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + policy.deadline
    delays = policy.delays()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except GolemError as exc:
            if not is_transient(exc):
                raise
            delay = next(delays)
            gone_long = isinstance(exc, NodeUnreachableError) and exc.down_for >= policy.deadline
            if gone_long or loop.time() + delay > deadline:
                logger.warning("%s failed %d time(s) within %g s; giving up: %s", what, attempt, policy.deadline, exc)
                raise
            logger.warning("%s failed (attempt %d), retrying in %.1f s: %s", what, attempt, delay, exc)
        await asyncio.sleep(delay)  # a back-off pause between attempts, not a wait for an event
