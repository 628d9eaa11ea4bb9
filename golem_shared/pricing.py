"""The linear price model of the ``payu`` scheme: what a given usage costs.

An offer announces ``golem.com.usage.vector`` (the names of its usage counters) and
``golem.com.pricing.model.linear.coeffs``: one price per counter, in the same order, then the fixed
start price last. The cost of a usage vector ``u`` is ``start + sum(coeff[i] * u[i])``.

Both sides use this module: local providers to bill, the requestor to score offers and to check that a
debit note or an invoice asks for no more than the agreed prices say.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from attrs import frozen

from golem_shared.errors import MarketError

__all__ = [
    "CPU_SEC",
    "DURATION_SEC",
    "LinearPricing",
]

DURATION_SEC = "golem.usage.duration_sec"
CPU_SEC = "golem.usage.cpu_sec"

_USAGE_VECTOR = "golem.com.usage.vector"
_COEFFS = "golem.com.pricing.model.linear.coeffs"
_MODEL = "golem.com.pricing.model"


def _decimal(value: object) -> Decimal:
    # str() first: Decimal(0.1) would carry the binary float's noise into money.
    return Decimal(str(value))


@frozen
class LinearPricing:
    """Prices per usage counter plus a start price, all in the payment platform's token (``Decimal``)."""

    usage_vector: tuple[str, ...]
    coeffs: tuple[Decimal, ...]
    start_price: Decimal

    @classmethod
    def from_properties(cls, properties: Mapping[str, Any]) -> LinearPricing:
        """Read the price model from an offer's (or an agreement's) flat properties."""
        model = properties.get(_MODEL)
        if model != "linear":
            raise MarketError(f"the offer's pricing model is {model!r}, not 'linear'")
        vector = properties.get(_USAGE_VECTOR)
        raw = properties.get(_COEFFS)
        if not isinstance(vector, list) or not isinstance(raw, list):
            raise MarketError(f"the offer lacks {_USAGE_VECTOR} or {_COEFFS}: {vector!r}, {raw!r}")
        if len(raw) != len(vector) + 1:
            raise MarketError(
                f"{_COEFFS} has {len(raw)} values for {len(vector)} usage counters; "
                f"expected one per counter plus the start price ({len(vector) + 1})"
            )
        prices = tuple(_decimal(c) for c in raw)
        return cls(usage_vector=tuple(str(v) for v in vector), coeffs=prices[:-1], start_price=prices[-1])

    def to_properties(self) -> dict[str, Any]:
        """The flat properties announcing this model (floats on the wire, as real providers send)."""
        return {
            "golem.com.scheme": "payu",
            _MODEL: "linear",
            _USAGE_VECTOR: list(self.usage_vector),
            _COEFFS: [float(c) for c in (*self.coeffs, self.start_price)],
        }

    def price_of(self, counter: str) -> Decimal:
        """The price of one unit of ``counter``; zero when the offer does not meter it."""
        try:
            return self.coeffs[self.usage_vector.index(counter)]
        except ValueError:
            return Decimal(0)

    def cost(self, usage: Sequence[float | Decimal]) -> Decimal:
        """The amount due for a usage vector ordered like ``usage_vector``, start price included."""
        if len(usage) != len(self.usage_vector):
            raise MarketError(
                f"usage vector {list(usage)!r} has {len(usage)} values; "
                f"the price model meters {len(self.usage_vector)}: {list(self.usage_vector)!r}"
            )
        return self.start_price + sum(
            (c * _decimal(u) for c, u in zip(self.coeffs, usage, strict=True)), start=Decimal(0)
        )

    def cost_of(self, usage: Mapping[str, float | Decimal]) -> Decimal:
        """The amount due for usage given by counter name; counters not named count as zero."""
        return self.cost([usage.get(name, 0) for name in self.usage_vector])
