"""ya-aioclient, the daemon's generated Python client, drives one negotiate-run-pay cycle against the local node.

The cycle (``ya_aioclient_cycle.py``) runs in ``.venv-yapapi`` (ya-aioclient 0.6.4 as yapapi 0.13.1 pins it;
its pins conflict with ours) against a ``LocalNode`` started here. Every answer must deserialise into
ya-aioclient's own models, with the generated client's validation of required fields, and none may leave a
nested model as a raw dict; the node's ledger must then show the invoice accepted for the amount the client saw.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import pytest

from golem_local.node import LocalNode

ROOT = Path(__file__).resolve().parents[2]
YAPAPI_PYTHON = ROOT / ".venv-yapapi" / "bin" / "python"
CYCLE = Path(__file__).with_name("ya_aioclient_cycle.py")
DEADLINE = 30.0  # seconds for the whole cycle (it takes well under one on a quiet machine)

# The model ya-aioclient must produce for each call of the cycle (one entry per answer, or per item of a list).
EXPECTED_MODELS = {
    "create_allocation": {"Allocation"},
    "get_allocations": {"Allocation"},
    "get_demand_decorations": {"MarketDecoration"},
    "subscribe_demand": {"str"},
    "collect_offers": {"ProposalEvent"},
    "get_proposal_offer": {"Proposal"},
    "counter_proposal_demand": {"str"},
    "create_agreement": {"str"},
    "get_agreement": {"Agreement"},
    "create_activity": {"str"},
    "call_exec": {"str"},
    "get_exec_batch_results": {"ExeScriptCommandResult"},
    "get_activity_state": {"ActivityState"},
    "get_activity_usage": {"ActivityUsage"},
    "get_debit_note_events": {"DebitNoteReceivedEvent"},
    "get_debit_note": {"DebitNote"},
    "get_invoice_events": {"InvoiceReceivedEvent"},
    "get_invoice": {"Invoice"},
}


async def test_ya_aioclient_negotiates_runs_and_pays_with_its_own_models() -> None:
    if not YAPAPI_PYTHON.exists():
        pytest.skip(f"{YAPAPI_PYTHON} is missing: run scripts/bootstrap.sh with GOLEM_API_WITH_YAPAPI=1 to create it")
    async with LocalNode() as node:
        process = await asyncio.create_subprocess_exec(
            str(YAPAPI_PYTHON),
            str(CYCLE),
            "--url",
            node.url,
            "--app-key",
            node.app_key,
            "--deadline",
            str(DEADLINE),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), DEADLINE + 10)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            raise
        assert process.returncode == 0, err.decode()
        summary = json.loads(out)

        assert summary["problems"] == [], "answers left as raw dicts:\n" + "\n".join(summary["problems"])
        answers = summary["answers"]
        for call, models in EXPECTED_MODELS.items():
            assert set(answers.get(call, [])) == models, f"{call}: ya-aioclient made {answers.get(call)}"
        assert summary["stdout"] == "hello from ya-aioclient\n"
        assert summary["debit_notes_accepted"] >= 1

        invoices = [i for i in node.ledger.invoices() if i.agreement_id == summary["agreement_id"]]
        assert len(invoices) == 1
        assert invoices[0].accepted
        assert invoices[0].accepted_amount == Decimal(summary["invoice_amount"]) > 0
        notes = [n for n in node.ledger.debit_notes() if n.agreement_id == summary["agreement_id"]]
        assert notes
        assert all(n.accepted for n in notes)
