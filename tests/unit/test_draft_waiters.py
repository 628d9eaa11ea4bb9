"""Instances waiting for an agreement are woken one per Draft that arrives, and no Draft is lost on the way.

At the start of a big cluster every instance waits in ``Demand.agreement`` for a provider's Draft. Each Draft
woke all of them (a thousand instances: a thousand looks at the drafts per Draft, all but one for nothing); now
it wakes the longest-waiting one, and a woken call that is cancelled before it looks passes its Draft on.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any, cast

from golem_api.events import EventBus
from golem_api.market.negotiation import Demand, _Draft
from golem_api.market.strategy import Offer, Verdict


class _Everyone:
    """A strategy that takes every offer, all equal."""

    def judge(self, offer: Offer) -> Verdict:
        return Verdict(1.0)

    def provider_failed(self, provider_id: str) -> None:
        pass


def _demand() -> Demand:
    return Demand(
        rest=cast(Any, None),  # looking for a Draft asks the node nothing
        bus=EventBus(),
        strategy=cast(Any, _Everyone()),
        properties={},
        constraints="()",
        payment_platform="erc20-holesky-tglm",
        expiration=datetime.now(timezone.utc) + timedelta(hours=1),
    )


def _arrives(demand: Demand, provider: str) -> None:
    """A provider's Draft, as the collector hands it over."""
    demand._drafts.append(_Draft(f"draft-{provider}", Offer(f"draft-{provider}", provider, {})))
    demand._wake_waiters(1)


async def _settle() -> None:
    """Let every task that can run do so (no time passes)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_each_draft_goes_to_one_waiting_instance_oldest_first() -> None:
    demand = _demand()
    deadline = asyncio.get_running_loop().time() + 60
    waiting = [asyncio.ensure_future(demand._best_draft(deadline, frozenset())) for _ in range(3)]
    await _settle()
    assert len(demand._draft_waiters) == 3

    _arrives(demand, "p1")
    await _settle()
    assert [w.done() for w in waiting] == [True, False, False]
    assert waiting[0].result().offer.provider_id == "p1"
    assert len(demand._draft_waiters) == 2, "the other two were woken for nothing"

    _arrives(demand, "p2")
    _arrives(demand, "p3")
    drafts = await asyncio.gather(*waiting[1:])
    assert sorted(d.offer.provider_id for d in drafts) == ["p2", "p3"]


async def test_a_draft_whose_woken_instance_is_cancelled_goes_to_the_next() -> None:
    demand = _demand()
    deadline = asyncio.get_running_loop().time() + 60
    first = asyncio.ensure_future(demand._best_draft(deadline, frozenset()))
    second = asyncio.ensure_future(demand._best_draft(deadline, frozenset()))
    await _settle()

    _arrives(demand, "p1")  # wakes the first …
    first.cancel()  # … which is cancelled before it looks at the drafts
    await _settle()
    assert first.cancelled()
    assert second.done()
    assert second.result().offer.provider_id == "p1"
