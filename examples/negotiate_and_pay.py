"""Negotiate with every provider of the embedded local Golem network, run an activity on each, and pay.

    python examples/negotiate_and_pay.py [--providers 3] [--hold 1.5] [--budget 1.0]

With YAGNA_APPKEY set it talks to that yagna daemon instead (the live network needs tokens and providers).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from decimal import Decimal

from rich.console import Console
from rich.table import Table

from golem_api import Golem, GolemError, LocalNetworkConfig, VmPayload
from golem_api.events import Event, InvoiceAccepted


async def main(providers: int, hold: float, budget: Decimal) -> None:
    console = Console()
    paid: dict[str, Decimal] = {}
    network = LocalNetworkConfig.with_providers(providers, debit_note_interval_sec=1)
    async with Golem(budget=budget, local_network=network) as golem:

        def record(event: Event) -> None:
            if isinstance(event, InvoiceAccepted):
                paid[event.provider_name] = event.amount

        golem.bus.subscribe(record, InvoiceAccepted)
        demand = await golem.create_demand(VmPayload(min_mem_gib=0.5, min_storage_gib=2.0))
        agreements = [await demand.agreement(timeout=20) for _ in range(providers)]
        table = Table(title="Agreements")
        for column in ("provider", "start price", "per duration s", "per CPU s"):
            table.add_column(column)
        for agreement in agreements:
            pricing = agreement.pricing
            table.add_row(
                agreement.provider_name,
                str(pricing.start_price),
                str(pricing.price_of("golem.usage.duration_sec")),
                str(pricing.price_of("golem.usage.cpu_sec")),
            )
        console.print(table)
        activities = await asyncio.gather(*(a.create_activity() for a in agreements))
        console.print(f"Running {len(activities)} activities for {hold:g} s…")
        await asyncio.sleep(hold)
    bill = Table(title="Paid")
    bill.add_column("provider")
    bill.add_column("invoice", justify="right")
    for name, amount in sorted(paid.items()):
        bill.add_row(name, f"{amount:.8f}")
    bill.add_row("[bold]total", f"[bold]{golem.spent:.8f}")
    console.print(bill)
    console.print(f"Budget {budget}, spent {golem.spent} (exact).")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", type=int, default=3, help="how many local providers (default 3)")
    parser.add_argument("--hold", type=float, default=1.5, help="seconds to keep the activities (default 1.5)")
    parser.add_argument("--budget", type=Decimal, default=Decimal("1.0"), help="budget in tokens (default 1.0)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    try:
        asyncio.run(main(args.providers, args.hold, args.budget))
    except GolemError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
