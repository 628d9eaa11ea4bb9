"""golem-api's ``LeastExpensiveLinearPayu`` caps the price of a runtime's own counter: two ``test-counters``
providers, one pricing ``golem.usage.custom.counter`` over the requestor's cap; the offer of that one is refused
saying why, and the agreement is made with the other."""

from __future__ import annotations

import asyncio

from golem_api import CustomPayload, Golem, LocalNetworkConfig, ProviderSpec
from golem_api.market.strategy import LeastExpensiveLinearPayu, Offer, Verdict
from golem_local.runtime.counters import COUNTER

BOUND = 30.0


class Recording(LeastExpensiveLinearPayu):
    """The real strategy, keeping each provider's verdict; ``judged`` is set once both providers were judged."""

    def __init__(self, **settings: object) -> None:
        super().__init__(**settings)  # type: ignore[arg-type]
        self.verdicts: dict[str, Verdict] = {}
        self.judged = asyncio.Event()

    def judge(self, offer: Offer) -> Verdict:
        verdict = super().judge(offer)
        self.verdicts[offer.provider_name] = verdict
        if {"dear", "cheap"} <= set(self.verdicts):
            self.judged.set()
        return verdict


async def test_an_offer_pricing_a_custom_counter_over_the_cap_is_refused() -> None:
    config = LocalNetworkConfig(
        providers=(
            ProviderSpec(name="dear", runtime="test-counters", counter_prices={COUNTER: "0.5"}),
            ProviderSpec(name="cheap", runtime="test-counters", counter_prices={COUNTER: "0.001"}),
        )
    )
    strategy = Recording(
        max_price_for={"golem.usage.duration_sec": "0.1", "golem.usage.cpu_sec": "0.2", COUNTER: "0.01"}
    )
    async with Golem(budget=1.0, local_network=config, strategy=strategy, invoice_timeout=10) as golem:
        demand = await golem.create_demand(CustomPayload(constraints=("(golem.runtime.name=test-counters)",)))
        await asyncio.wait_for(strategy.judged.wait(), BOUND)
        dear, cheap = strategy.verdicts["dear"], strategy.verdicts["cheap"]
        assert dear.score is None
        assert dear.reason == f"price for {COUNTER} 0.5 is over the cap 0.01"
        assert cheap.score is not None
        agreement = await demand.agreement(timeout=BOUND)
        assert agreement.provider_name == "cheap"
        await agreement.terminate()
