"""An activity's usage as a program reads it: counters by name and the time the provider measured them.

:meth:`WorkContext.get_usage <golem_api.activity.work_context.WorkContext.get_usage>` gives an
:class:`ActivityUsage` (yapapi's name and shape)::

    usage = await ctx.get_usage()
    usage.current_usage      # {"golem.usage.duration_sec": 12.0, "golem.usage.cpu_sec": 0.4}
    usage.timestamp          # datetime(…, tzinfo=timezone.utc), or None when the provider gave none
    await ctx.get_cost()     # Decimal: that usage at the agreed linear prices, start price included

The provider reports bare numbers in the order of its offer's ``golem.usage.vector``; the names come from
the agreement's price model. ``WorkContext.get_raw_usage()`` gives the node's answer as it is.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING

from attrs import define, field

if TYPE_CHECKING:
    from golem_api._rest.models import ActivityUsage as RawUsage
    from golem_shared.pricing import LinearPricing

__all__ = ["ActivityUsage", "cost_of_usage", "usage_by_name"]


@define
class ActivityUsage:
    """The usage counters of an activity by name, and when the provider measured them (UTC)."""

    current_usage: dict[str, float] = field(factory=dict)
    timestamp: datetime | None = None


def usage_by_name(raw: RawUsage, pricing: LinearPricing) -> ActivityUsage:
    """Name the raw counters after the agreement's usage vector; a counter without a name keeps its index."""
    values = raw.current_usage or ()
    names = list(pricing.usage_vector)
    counters = {(names[i] if i < len(names) else f"counter-{i}"): float(value) for i, value in enumerate(values)}
    when = datetime.fromtimestamp(raw.timestamp, tz=timezone.utc) if raw.timestamp else None
    return ActivityUsage(current_usage=counters, timestamp=when)


def cost_of_usage(raw: RawUsage, pricing: LinearPricing) -> Decimal | None:
    """What ``raw`` costs at the agreed prices (start price included); ``None`` when the provider reported none."""
    if not raw.current_usage:
        return None
    counters = dict(zip(pricing.usage_vector, raw.current_usage, strict=False))
    return pricing.cost_of(counters)
