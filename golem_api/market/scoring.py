"""Strategies written as yapapi's: a ``score_offer(offer)`` that returns a number, ``SCORE_REJECTED`` to refuse.

golem-api's own strategy protocol is ``judge(offer) -> Verdict`` (:mod:`golem_api.market.strategy`). A yapapi
strategy ports by subclassing :class:`ScoringStrategy` instead of yapapi's ``MarketStrategy``::

    from golem_api import SCORE_REJECTED, SCORE_TRUSTED, ScoringStrategy

    class ScanStrategy(ScoringStrategy):
        async def score_offer(self, offer):
            if offer.issuer in scanned_nodes:
                return SCORE_REJECTED
            return SCORE_TRUSTED

The offer has yapapi's ``issuer`` (the provider's node id), ``id`` and ``props`` besides golem-api's
``provider_id``, ``provider_name``, ``proposal_id``, ``properties`` and ``pricing``. ``score_offer`` may be a
plain method or an ``async def``; scores are asked while negotiating, so an ``async def`` must not wait for
anything (no I/O): one that does fails with :class:`~golem_api.errors.ConfigurationError`. A score below
zero (``SCORE_REJECTED`` is -1) turns the offer down; higher scores win.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from golem_api.errors import ConfigurationError
from golem_api.market.strategy import Offer, Verdict
from golem_shared.pricing import LinearPricing

__all__ = ["SCORE_NEUTRAL", "SCORE_REJECTED", "SCORE_TRUSTED", "ScoredOffer", "ScoringStrategy"]

SCORE_NEUTRAL = 0.0
SCORE_REJECTED = -1.0
SCORE_TRUSTED = 100.0


class ScoredOffer:
    """An offer as ``score_offer`` sees it: yapapi's names (``issuer``, ``id``, ``props``) and golem-api's."""

    def __init__(self, offer: Offer) -> None:
        self.offer = offer

    def __repr__(self) -> str:
        return f"<ScoredOffer {self.id} from {self.provider_name!r}>"

    @property
    def issuer(self) -> str:
        """The provider's node id (yapapi's name)."""
        return self.offer.provider_id

    @property
    def id(self) -> str:
        """The proposal's id (yapapi's name)."""
        return self.offer.proposal_id

    @property
    def props(self) -> Mapping[str, Any]:
        """The offer's flat properties (yapapi's name)."""
        return self.offer.properties

    @property
    def provider_id(self) -> str:
        return self.offer.provider_id

    @property
    def provider_name(self) -> str:
        return self.offer.provider_name

    @property
    def proposal_id(self) -> str:
        return self.offer.proposal_id

    @property
    def properties(self) -> Mapping[str, Any]:
        return self.offer.properties

    @property
    def pricing(self) -> LinearPricing | None:
        return self.offer.pricing


class ScoringStrategy:
    """Base of strategies that score offers as yapapi's do: override :meth:`score_offer`."""

    def score_offer(self, offer: ScoredOffer) -> Any:
        """The offer's score (higher is better; below zero refuses it). The default trusts every offer."""
        return SCORE_TRUSTED

    def judge(self, offer: Offer) -> Verdict:
        """golem-api's strategy call, answered with :meth:`score_offer`."""
        score = _run_now(self.score_offer(ScoredOffer(offer)), type(self).__name__)
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise ConfigurationError(f"{type(self).__name__}.score_offer returned {score!r}; return a number")
        if score < 0:
            return Verdict(None, f"{type(self).__name__}.score_offer gave {score:g} (rejected)")
        return Verdict(float(score))

    def provider_failed(self, provider_id: str) -> None:
        """A provider did not confirm an agreement; the default does nothing."""


def _run_now(value: Any, owner: str) -> Any:
    """``value``, or what the coroutine ``value`` returns when it completes without waiting for anything."""
    if not inspect.iscoroutine(value):
        return value
    try:
        value.send(None)
    except StopIteration as done:
        return done.value
    value.close()
    raise ConfigurationError(
        f"{owner}.score_offer waited for something; scores are asked while negotiating and must come at once: "
        "compute them without awaiting (a plain `def score_offer` works too)"
    )
