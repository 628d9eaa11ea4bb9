"""One negotiate-run-pay cycle against a Golem node with ya-aioclient, the daemon's generated Python client.

Run with the interpreter that has ya-aioclient 0.6.4 (``.venv-yapapi/bin/python``; its pins conflict with
golem-api's, so it is not importable from the test venv)::

    .venv-yapapi/bin/python tests/fidelity/ya_aioclient_cycle.py --url http://127.0.0.1:PORT --app-key KEY

It uses only ya-aioclient's API classes, so every answer goes through the generated deserialiser (with its
client-side validation of required fields) into ya-aioclient's own models. Each answer is then checked to be
the model the client declares, with no nested model left as a plain dict, and the script prints one JSON
object: the model type of every answer (``answers``), the ids involved and the amounts accepted. Any failure
exits non-zero with the reason on stderr. Every wait is bounded (``--deadline`` seconds in all).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import ya_activity  # type: ignore[import-not-found]  # only in .venv-yapapi
import ya_market  # type: ignore[import-not-found]  # only in .venv-yapapi
import ya_payment  # type: ignore[import-not-found]  # only in .venv-yapapi
from ya_activity.api import RequestorControlApi, RequestorStateApi  # type: ignore[import-not-found]
from ya_market.api import RequestorApi as MarketRequestorApi  # type: ignore[import-not-found]
from ya_payment.api import RequestorApi as PaymentRequestorApi  # type: ignore[import-not-found]

__all__ = ["main", "run_cycle"]

PLATFORM = "erc20-holesky-tglm"
_PRIMITIVES = {"str", "int", "float", "bool", "date", "datetime", "object", "file"}


class CycleError(Exception):
    """A step of the cycle did not go as a requestor expects; the message says which and why."""


def _model_problems(value: Any, declared: str, where: str) -> list[str]:
    """Where ``value`` (deserialised as ``declared``, a swagger type name) still holds raw dicts for models."""
    if value is None:
        return []
    if declared.startswith("list["):
        inner = declared[5:-1]
        return [p for i, item in enumerate(value) for p in _model_problems(item, inner, f"{where}[{i}]")]
    if declared.startswith("dict(") or declared in _PRIMITIVES or declared.startswith("oneOf["):
        return []
    if isinstance(value, dict):
        return [f"{where}: a raw dict where the model {declared} was expected: {value!r:.200}"]
    types: dict[str, str] = getattr(value, "openapi_types", {})
    return [p for name, kind in types.items() for p in _model_problems(getattr(value, name), kind, f"{where}.{name}")]


class Cycle:
    """The requestor's side of one agreement, step by step, recording the type of every answer."""

    def __init__(self, url: str, app_key: str) -> None:
        auth = {"header_name": "authorization", "header_value": f"Bearer {app_key}"}
        self.market_client = ya_market.ApiClient(ya_market.Configuration(host=f"{url}/market-api/v1"), **auth)
        self.payment_client = ya_payment.ApiClient(ya_payment.Configuration(host=f"{url}/payment-api/v1"), **auth)
        self.activity_client = ya_activity.ApiClient(ya_activity.Configuration(host=f"{url}/activity-api/v1"), **auth)
        self.market = MarketRequestorApi(self.market_client)
        self.payment = PaymentRequestorApi(self.payment_client)
        self.control = RequestorControlApi(self.activity_client)
        self.state = RequestorStateApi(self.activity_client)
        self.answers: dict[str, list[str]] = {}
        self.problems: list[str] = []

    async def close(self) -> None:
        for client in (self.market_client, self.payment_client, self.activity_client):
            await client.close()

    async def call(self, name: str, declared: str, answer: Awaitable[Any]) -> Any:
        """Await ``answer`` (one API call), record the answer's type and check it is fully deserialised."""
        value = await answer
        kinds = [type(item).__name__ for item in value] if isinstance(value, list) else [type(value).__name__]
        self.answers.setdefault(name, []).extend(kinds)
        self.problems.extend(_model_problems(value, declared, name))
        return value

    async def run(self) -> dict[str, Any]:
        now = datetime.now(timezone.utc)
        allocation = await self.call(
            "create_allocation",
            "Allocation",
            self.payment.create_allocation(
                ya_payment.models.Allocation(
                    allocation_id="",
                    payment_platform=PLATFORM,
                    total_amount="1",
                    spent_amount="0",
                    remaining_amount="0",
                    timestamp=now,
                    timeout=now + timedelta(hours=1),
                    make_deposit=False,
                )
            ),
        )
        await self.call("get_allocations", "list[Allocation]", self.payment.get_allocations())
        decoration = await self.call(
            "get_demand_decorations",
            "MarketDecoration",
            self.payment.get_demand_decorations([allocation.allocation_id]),
        )
        properties: dict[str, Any] = {
            "golem.srv.comp.expiration": int((now + timedelta(hours=1)).timestamp() * 1000),
            "golem.node.debug.subnet": "public",
            **{prop.key: prop.value for prop in decoration.properties},
        }
        constraints = "(&" + "".join(["(golem.runtime.name=vm)", *decoration.constraints]) + ")"
        demand = ya_market.models.DemandOfferBase(properties=properties, constraints=constraints)
        subscription = await self.call("subscribe_demand", "str", self.market.subscribe_demand(demand))
        try:
            agreement_id = await self._negotiate(subscription, properties, constraints)
        finally:
            await self.call("unsubscribe_demand", "None", self.market.unsubscribe_demand(subscription))
        await self.call("confirm_agreement", "None", self.market.confirm_agreement(agreement_id))
        await self.call(
            "wait_for_approval",
            "None",
            self.market.wait_for_approval(agreement_id, timeout=10, _request_timeout=12),
        )
        agreement = await self.call("get_agreement", "Agreement", self.market.get_agreement(agreement_id))
        if agreement.state != "Approved":
            raise CycleError(f"the agreement {agreement_id} is {agreement.state!r} after approval, not 'Approved'")
        stdout = await self._run_activity(agreement_id)
        await self.call(
            "terminate_agreement",
            "None",
            self.market.terminate_agreement(agreement_id, request_body={"message": "cycle done"}),
        )
        debit_notes, invoice_amount = await self._pay(agreement_id, allocation.allocation_id, now)
        await self.call("release_allocation", "None", self.payment.release_allocation(allocation.allocation_id))
        return {
            "answers": self.answers,
            "problems": self.problems,
            "agreement_id": agreement_id,
            "stdout": stdout,
            "debit_notes_accepted": debit_notes,
            "invoice_amount": invoice_amount,
        }

    async def _negotiate(self, subscription: str, properties: dict[str, Any], constraints: str) -> str:
        """Counter the first Initial proposal, reject any other, and make an agreement from the provider's Draft."""
        counter_body = ya_market.models.DemandOfferBase(
            properties={**properties, "golem.com.payment.chosen-platform": PLATFORM}, constraints=constraints
        )
        counter_id: str | None = None
        for _ in range(10):
            events = await self.call(
                "collect_offers",
                "list[Event]",
                self.market.collect_offers(subscription, timeout=3, max_events=10, _request_timeout=5),
            )
            for event in events:
                if not isinstance(event, ya_market.models.ProposalEvent):
                    continue
                proposal = event.proposal
                if proposal.state == "Initial" and counter_id is None:
                    offer = await self.call(
                        "get_proposal_offer",
                        "Proposal",
                        self.market.get_proposal_offer(subscription, proposal.proposal_id),
                    )
                    counter_id = await self.call(
                        "counter_proposal_demand",
                        "str",
                        self.market.counter_proposal_demand(subscription, offer.proposal_id, counter_body),
                    )
                elif proposal.state == "Initial":
                    await self.call(
                        "reject_proposal_offer",
                        "None",
                        self.market.reject_proposal_offer(
                            subscription, proposal.proposal_id, request_body={"message": "one provider is enough"}
                        ),
                    )
                elif counter_id is not None and proposal.prev_proposal_id == counter_id:
                    valid_to = datetime.now(timezone.utc) + timedelta(hours=1)
                    agreement_proposal = ya_market.models.AgreementProposal(
                        proposal_id=proposal.proposal_id, valid_to=valid_to
                    )
                    agreement_id: str = await self.call(
                        "create_agreement", "str", self.market.create_agreement(agreement_proposal)
                    )
                    return agreement_id
        raise CycleError("no provider answered the counter-proposal with a Draft within 10 polls of 3 s")

    async def _run_activity(self, agreement_id: str) -> str:
        """Create an activity, deploy, start and run ``echo``, read the results, destroy it: the run's stdout."""
        activity_id = await self.call(
            "create_activity", "oneOf[CreateActivityResult, str]", self.control.create_activity(agreement_id)
        )
        if not isinstance(activity_id, str):
            raise CycleError(f"create_activity with an agreement id must answer an id string, got {activity_id!r}")
        script = [
            {"deploy": {}},
            {"start": {"args": []}},
            {
                "run": {
                    "entry_point": "/bin/echo",
                    "args": ["hello from ya-aioclient"],
                    "capture": {"stdout": {"atEnd": {"format": "str"}}, "stderr": {"atEnd": {"format": "str"}}},
                }
            },
        ]
        request = ya_activity.models.ExeScriptRequest(text=json.dumps(script))
        batch_id = await self.call("call_exec", "str", self.control.call_exec(activity_id, request))
        results: list[Any] = []
        for _ in range(10):
            results = await self.call(
                "get_exec_batch_results",
                "list[ExeScriptCommandResult]",
                self.control.get_exec_batch_results(activity_id, batch_id, timeout=3, _request_timeout=5),
            )
            if results and results[-1].is_batch_finished:
                break
        else:
            raise CycleError(f"batch {batch_id} did not finish within 10 polls of 3 s")
        failed = [r for r in results if r.result != "Ok"]
        if failed or len(results) != len(script):
            raise CycleError(f"the script did not run to the end: {[r.to_dict() for r in results]}")
        await self.call("get_activity_state", "ActivityState", self.state.get_activity_state(activity_id))
        await self.call("get_activity_usage", "ActivityUsage", self.state.get_activity_usage(activity_id))
        await self.call("destroy_activity", "None", self.control.destroy_activity(activity_id))
        return str(results[-1].stdout)

    async def _pay(self, agreement_id: str, allocation_id: str, since: datetime) -> tuple[int, str]:
        """Accept every debit note of the agreement, then its invoice: (debit notes accepted, invoice amount)."""
        accepted_notes = 0
        after = since
        invoice_amount: str | None = None
        note_after = since
        for _ in range(10):
            notes = await self.call(
                "get_debit_note_events",
                "list[DebitNoteEvent]",
                self.payment.get_debit_note_events(after_timestamp=note_after, timeout=0, _request_timeout=5),
            )
            for event in notes:
                note_after = event.event_date
                if not isinstance(event, ya_payment.models.DebitNoteReceivedEvent):
                    continue
                note = await self.call("get_debit_note", "DebitNote", self.payment.get_debit_note(event.debit_note_id))
                if note.agreement_id != agreement_id:
                    continue
                acceptance = ya_payment.models.Acceptance(
                    total_amount_accepted=note.total_amount_due, allocation_id=allocation_id
                )
                await self.call(
                    "accept_debit_note",
                    "None",
                    self.payment.accept_debit_note(note.debit_note_id, acceptance),
                )
                accepted_notes += 1
            events = await self.call(
                "get_invoice_events",
                "list[InvoiceEvent]",
                self.payment.get_invoice_events(after_timestamp=after, timeout=3, _request_timeout=5),
            )
            for event in events:
                after = event.event_date
                if not isinstance(event, ya_payment.models.InvoiceReceivedEvent):
                    continue
                invoice = await self.call("get_invoice", "Invoice", self.payment.get_invoice(event.invoice_id))
                if invoice.agreement_id != agreement_id:
                    continue
                acceptance = ya_payment.models.Acceptance(
                    total_amount_accepted=invoice.amount, allocation_id=allocation_id
                )
                await self.call(
                    "accept_invoice",
                    "None",
                    self.payment.accept_invoice(invoice.invoice_id, acceptance),
                )
                invoice_amount = str(Decimal(invoice.amount))
            if invoice_amount is not None:
                return accepted_notes, invoice_amount
        raise CycleError(f"no invoice for agreement {agreement_id} arrived within 10 polls of 3 s")


async def run_cycle(url: str, app_key: str, deadline: float) -> dict[str, Any]:
    """The cycle's summary; ``CycleError`` or an API exception when a step fails, TimeoutError past ``deadline``."""
    cycle = Cycle(url, app_key)
    try:
        return await asyncio.wait_for(cycle.run(), deadline)
    finally:
        await cycle.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the node's root URL, e.g. http://127.0.0.1:7465")
    parser.add_argument("--app-key", required=True, help="the node's app key")
    parser.add_argument("--deadline", type=float, default=40.0, help="seconds the whole cycle may take")
    args = parser.parse_args()
    try:
        summary = asyncio.run(run_cycle(args.url, args.app_key, args.deadline))
    except Exception as exc:
        print(f"ya-aioclient cycle failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
