"""Offer scoring and the linear price model: what decides who gets the work, and what it costs."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from golem_api import ConfigurationError, LeastExpensiveLinearPayu, LinearPricing, MarketError, Offer

DURATION = "golem.usage.duration_sec"
CPU = "golem.usage.cpu_sec"


def offer(name: str, duration: float, cpu: float, start: float, **extra: Any) -> Offer:
    properties = {
        "golem.node.id.name": name,
        "golem.com.scheme": "payu",
        "golem.com.pricing.model": "linear",
        "golem.com.usage.vector": [DURATION, CPU],
        "golem.com.pricing.model.linear.coeffs": [duration, cpu, start],
        **extra,
    }
    return Offer(proposal_id=f"p-{name}", provider_id=f"0x{name}", properties=properties)


def test_cost_is_start_price_plus_usage_times_prices_exactly() -> None:
    pricing = LinearPricing.from_properties(offer("a", 0.1, 0.2, 0.3).properties)
    assert pricing.cost([10, 5]) == Decimal("2.3")
    assert pricing.cost_of({CPU: 1}) == Decimal("0.5")
    assert pricing.price_of("golem.usage.gib") == 0


def test_price_model_with_a_wrong_number_of_coefficients_is_explained() -> None:
    properties = dict(offer("a", 0.1, 0.2, 0.3).properties)
    properties["golem.com.pricing.model.linear.coeffs"] = [0.1, 0.2]
    with pytest.raises(MarketError, match="one per counter plus the start price"):
        LinearPricing.from_properties(properties)


def test_cheapest_offer_scores_highest() -> None:
    strategy = LeastExpensiveLinearPayu()
    cheap = strategy.judge(offer("cheap", 0.0001, 0.0001, 0.0))
    dear = strategy.judge(offer("dear", 0.001, 0.001, 0.01))
    assert cheap.score is not None
    assert dear.score is not None
    assert cheap.score > dear.score


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        (offer("a", 0.5, 0.0, 0.0), "golem.usage.duration_sec"),
        (offer("a", 0.0, 0.5, 0.0), "golem.usage.cpu_sec"),
        (offer("a", 0.0, 0.0, 2.0), "start price"),
        (offer("a", 0.0, 0.0, 0.0, **{"golem.com.scheme": "other"}), "payu"),
    ],
)
def test_offers_over_the_caps_are_turned_down_with_the_reason(candidate: Offer, reason: str) -> None:
    verdict = LeastExpensiveLinearPayu().judge(candidate)
    assert verdict.score is None
    assert reason in verdict.reason


def test_allow_and_deny_lists_match_ids_or_names() -> None:
    assert LeastExpensiveLinearPayu(deny={"bad"}).judge(offer("bad", 0, 0, 0)).score is None
    assert LeastExpensiveLinearPayu(deny={"0xbad"}).judge(offer("bad", 0, 0, 0)).score is None
    only = LeastExpensiveLinearPayu(allow={"good"})
    assert only.judge(offer("good", 0, 0, 0)).accepted
    assert "allow list" in only.judge(offer("other", 0, 0, 0)).reason


def test_a_provider_that_failed_to_confirm_ranks_below_an_equal_one() -> None:
    strategy = LeastExpensiveLinearPayu()
    strategy.provider_failed("0xflaky")
    flaky = strategy.judge(offer("flaky", 0.0001, 0.0001, 0.0))
    steady = strategy.judge(offer("steady", 0.0001, 0.0001, 0.0))
    assert flaky.score is not None
    assert steady.score is not None
    assert flaky.score < steady.score


def test_bad_strategy_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="max_start_price"):
        LeastExpensiveLinearPayu(max_start_price=-1)
    with pytest.raises(ConfigurationError, match="collection"):
        LeastExpensiveLinearPayu(deny="bad")  # type: ignore[arg-type]


async def test_each_draft_is_judged_once_however_many_agreements_pick_among_them() -> None:
    from datetime import datetime, timezone
    from typing import cast

    from golem_api.events import EventBus
    from golem_api.market.negotiation import Demand, _Draft

    judged: list[str] = []

    class Counting(LeastExpensiveLinearPayu):
        def judge(self, candidate: Offer) -> Any:
            judged.append(candidate.provider_id)
            return super().judge(candidate)

    demand = Demand(
        rest=cast(Any, None),
        bus=EventBus(),
        strategy=Counting(),
        properties={},
        constraints="",
        payment_platform="erc20-holesky-tglm",
        expiration=datetime.now(timezone.utc),
    )
    drafts = [offer(name, price, 0.0001, 0.0) for name, price in (("b", 0.0002), ("a", 0.0001), ("c", 0.0003))]
    demand._drafts.extend(_Draft(f"draft-{o.provider_id}", o) for o in drafts)
    picked = [(await demand._best_draft(deadline=1e12, avoid=())).offer.provider_id for _ in drafts]

    assert picked == ["0xa", "0xb", "0xc"]  # the cheapest first, as before
    assert sorted(judged) == ["0xa", "0xb", "0xc"]  # not 3 + 2 + 1 judgements
