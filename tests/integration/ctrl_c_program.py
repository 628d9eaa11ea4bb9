"""A requestor program for the Ctrl-C tests: ``python -m tests.integration.ctrl_c_program``.

It runs two service instances on the embedded local network under ``asyncio.run``, as a user's program does;
their ``shutdown`` handlers hang (only the exit's bounds end them). It prints ``RUNNING`` once both instances
run, logs to stderr, and when it ends (``asyncio.run`` raising ``KeyboardInterrupt`` after Ctrl-C) prints one
JSON line with what the node's ledger says: agreements, invoices issued, accepted, and what was paid.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

from golem_api.golem import Golem
from golem_api.payload import Payload, VmPayload
from golem_api.services.service import Handler, Service
from golem_local.config import LocalNetworkConfig

_golem: Golem | None = None


class Stubborn(Service):
    """``shutdown`` runs a command, then never returns."""

    @staticmethod
    async def get_payload() -> Payload:
        return VmPayload(min_mem_gib=0.5, min_storage_gib=1.0)

    async def shutdown(self) -> Handler:
        script = self._ctx.new_script(timeout=10)
        script.run("/bin/true")
        yield script
        await asyncio.get_running_loop().create_future()


async def main() -> None:
    global _golem
    _golem = Golem(budget=1, local_network=LocalNetworkConfig.with_providers(2), shutdown_timeout=60)
    async with _golem as golem:
        cluster = await golem.run_service(Stubborn, num_instances=2)
        await cluster.wait_running(timeout=60)
        print("RUNNING", flush=True)
        await asyncio.get_running_loop().create_future()  # until Ctrl-C


def report() -> dict[str, Any]:
    assert _golem is not None
    assert _golem.local_node is not None
    ledger = _golem.local_node.ledger
    invoices = ledger.invoices()
    return {
        "agreements": len(_golem.agreements),
        "terminated": sum(a.terminated for a in _golem.agreements),
        "invoices": len(invoices),
        "accepted": sum(i.accepted for i in invoices),
        "accept_calls": [i.accept_calls for i in invoices],
        "paid": str(ledger.total_paid),
        "spent": str(_golem.spent),
    }


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    ending = "returned"
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        ending = "KeyboardInterrupt"
    print(json.dumps({"ending": ending, **report()}), flush=True)
