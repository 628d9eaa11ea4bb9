"""A yapapi 0.13.1 requestor for a runtime with a usage counter of its own (``test-counters``), written for this
suite in the shape of yapapi's custom-usage-counter example: one service on ``golem.runtime.name=test-counters``,
offers capped per counter (the custom one included), a few ``sleep`` commands, and after each the usage and cost
the provider reports, printed as one JSON line. Run with yapapi's own interpreter (``.venv-yapapi``)."""

import argparse
import asyncio
import json
from dataclasses import dataclass
from decimal import Decimal

from yapapi import Golem
from yapapi.log import enable_default_logger
from yapapi.payload import Payload
from yapapi.props import inf
from yapapi.props.base import constraint
from yapapi.services import Service, ServiceState
from yapapi.strategy import LeastExpensiveLinearPayuMS

COUNTER = "golem.usage.custom.counter"


@dataclass
class CountersPayload(Payload):
    runtime: str = constraint(inf.INF_RUNTIME_NAME, default="test-counters")


class Sleeper(Service):
    @staticmethod
    async def get_payload():
        return CountersPayload()

    def __init__(self, *args, rounds, sleep_ms, **kwargs):
        super().__init__(*args, **kwargs)
        self.rounds = rounds
        self.sleep_ms = sleep_ms

    async def run(self):
        for number in range(1, self.rounds + 1):
            script = self._ctx.new_script()
            slept = script.run("sleep", str(self.sleep_ms))
            yield script
            result = await slept
            usage = await self._ctx.get_usage()
            cost = await self._ctx.get_cost()
            print(
                json.dumps(
                    {"round": number, "stdout": result.stdout, "usage": usage.current_usage, "cost": float(cost)}
                ),
                flush=True,
            )


async def main(rounds, sleep_ms, max_counter_price):
    strategy = LeastExpensiveLinearPayuMS(
        max_price_for={
            "golem.usage.cpu_sec": Decimal("0.2"),
            "golem.usage.duration_sec": Decimal("0.1"),
            COUNTER: Decimal(max_counter_price),
        }
    )
    async with Golem(budget=1.0, strategy=strategy) as golem:
        cluster = await golem.run_service(Sleeper, instance_params=[{"rounds": rounds, "sleep_ms": sleep_ms}])
        # yapapi offers no event for it; its examples poll too
        while not cluster.instances or any(s.state != ServiceState.terminated for s in cluster.instances):  # noqa: ASYNC110
            await asyncio.sleep(0.5)
        print("all services terminated", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sleep-ms", type=int, default=200)
    parser.add_argument("--max-counter-price", default="0.1")
    parser.add_argument("--log-file", required=True)
    args = parser.parse_args()
    enable_default_logger(log_file=args.log_file, debug_activity_api=True, debug_payment_api=True)
    asyncio.run(main(args.rounds, args.sleep_ms, args.max_counter_price))
