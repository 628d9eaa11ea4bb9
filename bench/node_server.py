"""A local Golem network in a process of its own, for benchmarks that measure a requestor process alone.

    python -m bench.node_server --providers 200 --runtime idle

Prints one JSON line ``{"url": …, "app_key": …, "subnet": …, "pid": …}`` once the node serves, then runs until
its standard input is closed (the parent's way to stop it), and stops the node. With ``--ledger`` it then prints a
second JSON line with what its ledger holds: per invoice its status and how many accept calls it got, per debit
note the same (for ``bench/soak.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from decimal import Decimal
from typing import Any

from golem_local.config import LocalNetworkConfig
from golem_local.ledger import Ledger
from golem_local.node import LocalNode

__all__ = ["main", "serve"]


def ledger_summary(ledger: Ledger) -> dict[str, Any]:
    """Each document's status and number of accept calls, and what was paid."""
    return {
        "invoices": [
            [i.document_id, i.agreement_id, i.status, i.accept_calls, str(i.amount)] for i in ledger.invoices()
        ],
        "debit_notes": [[n.status, n.accept_calls] for n in ledger.debit_notes()],
        "total_paid": str(ledger.total_paid),
    }


async def serve(
    providers: int,
    runtime: str,
    port: int,
    *,
    ledger: bool = False,
    balance: Decimal | None = None,
    debit_note_interval: int | None = None,
) -> None:
    """Serve the node until standard input reaches its end (the requestor holding ``balance``, if given; the
    providers billing every ``debit_note_interval`` s, if given)."""
    funds = {} if balance is None else {"requestor_balance": balance}
    terms = {} if debit_note_interval is None else {"debit_note_interval_sec": debit_note_interval}
    config = LocalNetworkConfig.with_providers(providers, activity_runtime=runtime, **funds, **terms)
    async with LocalNode(config, port=port) as node:
        info = {"url": node.url, "app_key": node.app_key, "subnet": config.subnet, "pid": os.getpid()}
        print(json.dumps(info), flush=True)
        await asyncio.to_thread(sys.stdin.read)
    if ledger:
        print(json.dumps(ledger_summary(node.ledger)), flush=True)


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and serve."""
    parser = argparse.ArgumentParser(prog="python -m bench.node_server", description=__doc__.splitlines()[0])
    parser.add_argument("--providers", type=int, default=10, help="number of local providers (default 10)")
    parser.add_argument("--runtime", choices=("vm", "idle"), default="vm", help="what runs activities")
    parser.add_argument("--port", type=int, default=0, help="port to serve on (default: any free one)")
    parser.add_argument("--ledger", action="store_true", help="print what the ledger holds when stopped")
    parser.add_argument("--balance", type=Decimal, default=None, help="the requestor's funds (default 1000 GLM)")
    parser.add_argument(
        "--debit-note-interval", type=int, default=None, help="seconds between debit notes (default: the network's)"
    )
    args = parser.parse_args(argv)
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    asyncio.run(
        serve(
            args.providers,
            args.runtime,
            args.port,
            ledger=args.ledger,
            balance=args.balance,
            debit_note_interval=args.debit_note_interval,
        )
    )


if __name__ == "__main__":
    main()
