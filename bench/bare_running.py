"""The floor of time to running: the same REST requests as ``Golem.run_service`` sends, made with bare aiohttp.

    python -m bench.bare_running --url URL --app-key KEY --instances 200

Against a node of ``--instances`` providers: an allocation, the demand's decorations and subscription, then for
every offer (as it comes, all at once) a counter-proposal, and on the provider's Draft an agreement created,
confirmed and waited for, an activity created, one ``deploy`` + ``start`` batch sent and its results polled
until both are done. No checks beyond the HTTP status, no events, no state machines, no retries, no scoring:
what a requestor cannot do with less. Prints one JSON line: the seconds from the allocation to the last
instance started, and how many requests of each kind were sent (so the count and kinds can be held against
what ``golem-api`` sent).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp

__all__ = ["main", "run"]

_PLATFORM = "erc20-holesky-tglm"
_ECHOED = (
    "golem.com.scheme.payu.debit-note.interval-sec?",
    "golem.com.scheme.payu.payment-timeout-sec?",
    "golem.com.payment.debit-notes.accept-timeout?",
)
_SCRIPT = json.dumps([{"deploy": {}}, {"start": {"args": []}}])


def _stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Bare:
    """One aiohttp session against the node; counts each request by its kind."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self.sent: Counter[str] = Counter()

    async def call(self, kind: str, method: str, path: str, *, body: Any = None, params: Any = None) -> Any:
        self.sent[kind] += 1
        async with self.session.request(method, self.url + path, json=body, params=params) as response:
            text = await response.text()
            if response.status >= 300:
                raise RuntimeError(f"{method} {path} answered {response.status}: {text[:200]}")
            return json.loads(text) if text else None


async def _start_instance(bare: _Bare, draft_id: str, valid_to: str) -> None:
    """Agreement on the Draft, activity, ``deploy`` + ``start``, polled until both are done."""
    agreement = await bare.call(
        "create agreement", "POST", "/market-api/v1/agreements", body={"proposalId": draft_id, "validTo": valid_to}
    )
    await bare.call("confirm agreement", "POST", f"/market-api/v1/agreements/{agreement}/confirm")
    await bare.call(
        "wait for approval", "POST", f"/market-api/v1/agreements/{agreement}/wait", params={"timeout": "60"}
    )
    created = await bare.call("create activity", "POST", "/activity-api/v1/activity", body=agreement)
    activity = created["activityId"] if isinstance(created, dict) else created
    batch = await bare.call("exec", "POST", f"/activity-api/v1/activity/{activity}/exec", body={"text": _SCRIPT})
    while True:
        results = await bare.call(
            "batch results", "GET", f"/activity-api/v1/activity/{activity}/exec/{batch}", params={"timeout": "30"}
        )
        if any(r.get("isBatchFinished") for r in results):
            if len(results) < 2 or any(r.get("result") != "Ok" for r in results):
                raise RuntimeError(f"activity {activity}: deploy/start failed: {results}")
            return


async def run(
    url: str, app_key: str, instances: int, properties: dict[str, Any], constraints: str, budget: str = "1000"
) -> dict[str, Any]:
    """Start ``instances`` instances as bare as can be; the seconds it took and the requests sent."""
    headers = {"Authorization": f"Bearer {app_key}"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        bare = _Bare(session, url)
        began, cpu_began = time.perf_counter(), time.process_time()
        allocation = await bare.call(
            "allocation",
            "POST",
            "/payment-api/v1/allocations",
            body={"paymentPlatform": _PLATFORM, "totalAmount": budget, "makeDeposit": False},
        )
        decoration = await bare.call(
            "demand decorations",
            "GET",
            "/payment-api/v1/demandDecorations",
            params={"allocationIds": allocation["allocationId"]},
        )
        expires = datetime.now(timezone.utc) + timedelta(hours=1)
        demand_properties = {
            "golem.srv.comp.expiration": int(expires.timestamp() * 1000),
            **properties,
            **{p["key"]: p["value"] for p in decoration.get("properties", [])},
        }
        demand_constraints = "(&" + constraints + "".join(decoration.get("constraints", [])) + ")"
        subscription = await bare.call(
            "subscribe demand",
            "POST",
            "/market-api/v1/demands",
            body={"properties": demand_properties, "constraints": demand_constraints},
        )
        valid_to = _stamp(expires)
        countered: set[str] = set()
        started: list[asyncio.Task[None]] = []
        try:
            while len(started) < instances:
                events = await bare.call(
                    "demand events",
                    "GET",
                    f"/market-api/v1/demands/{subscription}/events",
                    params={"timeout": "5", "maxEvents": "1000"},
                )
                for event in events:
                    proposal = event.get("proposal")
                    if event.get("eventType") != "ProposalEvent" or proposal is None:
                        continue
                    if proposal["state"] == "Initial" and proposal["issuerId"] not in countered:
                        countered.add(proposal["issuerId"])
                        counter = dict(demand_properties)
                        counter["golem.com.payment.chosen-platform"] = _PLATFORM
                        counter.update({k: proposal["properties"][k] for k in _ECHOED if k in proposal["properties"]})
                        await bare.call(
                            "counter proposal",
                            "POST",
                            f"/market-api/v1/demands/{subscription}/proposals/{proposal['proposalId']}",
                            body={"properties": counter, "constraints": demand_constraints},
                        )
                    elif proposal["state"] == "Draft":
                        started.append(asyncio.ensure_future(_start_instance(bare, proposal["proposalId"], valid_to)))
            await asyncio.gather(*started)
        finally:
            for task in started:
                task.cancel()
            await asyncio.gather(*started, return_exceptions=True)
        took = time.perf_counter() - began
        cpu = time.process_time() - cpu_began
    return {"instances": instances, "running_after_s": took, "start_cpu_s": cpu, "sent": dict(bare.sent)}


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, run, print the JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.bare_running", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--app-key", required=True)
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--subnet", default="public")
    parser.add_argument("--budget", default="1000", help="GLM of the allocation")
    args = parser.parse_args(argv)
    from golem_api.payload import VmPayload

    payload = VmPayload(min_mem_gib=0.5)  # bench.services.Trivial's payload: the same demand
    properties = {"golem.node.debug.subnet": args.subnet, "golem.srv.caps.multi-activity": True}
    properties.update(payload.demand_properties())
    constraints = "".join(
        [f"(golem.node.debug.subnet={args.subnet})", "(golem.com.pricing.model=linear)", *payload.demand_constraints()]
    )
    figures = asyncio.run(run(args.url, args.app_key, args.instances, properties, constraints, args.budget))
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
