"""Shared helpers of integration tests: plain-HTTP calls to a local node and an approved agreement from it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import aiohttp

from golem_local.node import LocalNode
from golem_shared.timestamps import format_timestamp, utc_now

PLATFORM = "erc20-holesky-tglm"
MARKET = "/market-api/v1"
ACTIVITY = "/activity-api/v1"


async def call(http: aiohttp.ClientSession, method: str, path: str, body: Any = None, **params: Any) -> tuple[int, Any]:
    """(status, decoded JSON body or None for an empty one)."""
    kwargs: dict[str, Any] = {"params": {k: str(v) for k, v in params.items()}}
    if body is not None:
        kwargs["json"] = body
    async with http.request(method, path, **kwargs) as response:
        text = await response.text()
        return response.status, (await response.json(content_type=None)) if text else None


async def approved_agreement(
    http: aiohttp.ClientSession,
    node: LocalNode,
    *,
    extra_properties: dict[str, Any] | None = None,
    runtime: str = "vm",
) -> str:
    """Negotiate over the market API, as a requestor does, an agreement that a provider (of ``runtime``) approves."""
    properties: dict[str, Any] = {
        "golem.srv.comp.expiration": int((utc_now() + timedelta(hours=1)).timestamp() * 1000),
        "golem.node.debug.subnet": "public",
        f"golem.com.payment.platform.{PLATFORM}.address": node.requestor_id,
        "golem.com.payment.protocol.version": "3",
        **(extra_properties or {}),
    }
    constraints = f"(&(golem.node.debug.subnet=public)(golem.runtime.name={runtime}))"
    status, demand_id = await call(
        http, "POST", f"{MARKET}/demands", {"properties": properties, "constraints": constraints}
    )
    assert status == 201, demand_id
    counter = {"properties": {**properties, "golem.com.payment.chosen-platform": PLATFORM}, "constraints": constraints}
    counter_id = None
    try:
        while True:
            status, events = await call(http, "GET", f"{MARKET}/demands/{demand_id}/events", timeout=5, maxEvents=10)
            assert status == 200, events
            assert events, "no provider answered within 5 s"
            for event in events:
                proposal = event.get("proposal", {})
                if proposal.get("state") == "Initial" and counter_id is None:
                    status, counter_id = await call(
                        http, "POST", f"{MARKET}/demands/{demand_id}/proposals/{proposal['proposalId']}", counter
                    )
                    assert status == 200, counter_id
                elif counter_id is not None and proposal.get("prevProposalId") == counter_id:
                    valid_to = format_timestamp(utc_now() + timedelta(hours=1))
                    body = {"proposalId": proposal["proposalId"], "validTo": valid_to}
                    status, agreement_id = await call(http, "POST", f"{MARKET}/agreements", body)
                    assert status == 200, agreement_id
                    assert (await call(http, "POST", f"{MARKET}/agreements/{agreement_id}/confirm"))[0] == 204
                    status, answer = await call(http, "POST", f"{MARKET}/agreements/{agreement_id}/wait", timeout=5)
                    assert status == 204, answer
                    return str(agreement_id)
    finally:
        await call(http, "DELETE", f"{MARKET}/demands/{demand_id}")


async def new_activity(http: aiohttp.ClientSession, node: LocalNode, **agreement_options: Any) -> str:
    """An ``Initialized`` activity on a fresh approved agreement."""
    agreement_id = await approved_agreement(http, node, **agreement_options)
    status, activity_id = await call(http, "POST", f"{ACTIVITY}/activity", agreement_id)
    assert status == 200, activity_id
    return str(activity_id)
