"""Market strategies: which offers to take, and in what order.

A strategy scores an :class:`Offer`; ``None`` turns it down (with a reason), a higher score is better.
The engine tells the strategy when a provider failed to confirm an agreement, so that it can prefer others.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from decimal import Decimal
from typing import Any, Protocol

from attrs import define, field, frozen

from golem_api.errors import ConfigurationError, MarketError
from golem_shared.pricing import CPU_SEC, DURATION_SEC, LinearPricing

__all__ = ["LeastExpensiveLinearPayu", "MarketStrategy", "Offer", "Verdict"]


@frozen
class Offer:
    """A provider's proposal as a strategy sees it."""

    proposal_id: str
    provider_id: str
    properties: Mapping[str, Any]

    @property
    def provider_name(self) -> str:
        name = self.properties.get("golem.node.id.name")
        return str(name) if name else self.provider_id

    @property
    def pricing(self) -> LinearPricing | None:
        """The offer's linear price model, or ``None`` when it has none (or a broken one)."""
        try:
            return LinearPricing.from_properties(self.properties)
        except MarketError:
            return None


@frozen
class Verdict:
    """A strategy's answer: a ``score`` (higher is better), or ``None`` and the ``reason`` for refusing."""

    score: float | None
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return self.score is not None


class MarketStrategy(Protocol):
    """What the engine asks of a strategy."""

    def judge(self, offer: Offer) -> Verdict:
        """Score ``offer`` or turn it down."""
        ...

    def provider_failed(self, provider_id: str) -> None:
        """The provider did not confirm an agreement; future scores may take that into account."""
        ...


def _non_negative(_instance: object, attribute: Any, value: Decimal) -> None:
    if value < 0:
        raise ConfigurationError(f"{attribute.name} must not be negative, got {value}")


def _price_caps(value: Mapping[str, Decimal | float | str]) -> dict[str, Decimal]:
    caps = {str(k): Decimal(str(v)) for k, v in value.items()}
    for counter, cap in caps.items():
        if cap < 0:
            raise ConfigurationError(f"the price cap for {counter!r} must not be negative, got {cap}")
    return caps


def _decimal(value: Decimal | float | str) -> Decimal:
    return Decimal(str(value))


def _names(value: Collection[str] | None) -> frozenset[str] | None:
    if isinstance(value, str):
        raise ConfigurationError(f"give provider ids or names as a collection of strings, not {value!r}")
    return None if value is None else frozenset(value)


def _deny_names(value: Collection[str] | None) -> frozenset[str]:
    return _names(value) or frozenset()


@define(kw_only=True)
class LeastExpensiveLinearPayu:
    """Take linear ``payu`` offers under price caps, the cheapest first.

    The score is ``1 / (1 + cost)`` where the cost is what ``expected_time_secs`` of every metered
    counter would cost, start price included. Each failure of a provider to confirm an agreement
    halves its score. ``allow`` (when given) and ``deny`` hold provider ids or names.
    """

    expected_time_secs: float = 60.0
    max_start_price: Decimal = field(default=Decimal("1.0"), converter=_decimal, validator=_non_negative)
    max_price_for: dict[str, Decimal] = field(
        factory=lambda: {DURATION_SEC: Decimal("0.1"), CPU_SEC: Decimal("0.2")},
        converter=_price_caps,
    )
    allow: frozenset[str] | None = field(default=None, converter=_names)
    deny: frozenset[str] = field(factory=frozenset, converter=_deny_names)
    failure_penalty: float = 0.5
    _failures: dict[str, int] = field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        if self.expected_time_secs <= 0:
            raise ConfigurationError(f"expected_time_secs must be positive, got {self.expected_time_secs}")
        if not 0 < self.failure_penalty <= 1:
            raise ConfigurationError(f"failure_penalty must be in (0, 1], got {self.failure_penalty}")

    def judge(self, offer: Offer) -> Verdict:
        names = {offer.provider_id, offer.provider_name}
        if self.allow is not None and not names & self.allow:
            return Verdict(None, f"provider {offer.provider_name!r} is not in the allow list")
        if names & self.deny:
            return Verdict(None, f"provider {offer.provider_name!r} is in the deny list")
        if offer.properties.get("golem.com.scheme") != "payu":
            return Verdict(None, f"payment scheme {offer.properties.get('golem.com.scheme')!r} is not 'payu'")
        pricing = offer.pricing
        if pricing is None:
            return Verdict(None, "the offer has no valid linear price model")
        if pricing.start_price > self.max_start_price:
            return Verdict(None, f"start price {pricing.start_price} is over the cap {self.max_start_price}")
        for counter, cap in self.max_price_for.items():
            price = pricing.price_of(counter)
            if price > cap:
                return Verdict(None, f"price for {counter} {price} is over the cap {cap}")
        cost = pricing.start_price + sum(
            (pricing.price_of(counter) * Decimal(str(self.expected_time_secs)) for counter in pricing.usage_vector),
            start=Decimal(0),
        )
        score = 1.0 / (1.0 + float(cost))
        score *= self.failure_penalty ** self._failures.get(offer.provider_id, 0)
        return Verdict(score)

    def provider_failed(self, provider_id: str) -> None:
        self._failures[provider_id] = self._failures.get(provider_id, 0) + 1
