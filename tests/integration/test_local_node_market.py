"""The market API of the embedded local node, over real HTTP on loopback with plain aiohttp."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from golem_api.errors import LocalNodeError
from golem_local.identity import is_node_id
from golem_local.node import LocalNode
from golem_shared.timestamps import format_timestamp, parse_timestamp, utc_now
from tests.integration.agreements import call
from tests.processes import NodeProcess

pytestmark = pytest.mark.integration

PLATFORM = "erc20-holesky-tglm"
M = "/market-api/v1"


def demand(node: LocalNode) -> dict[str, Any]:
    return {
        "properties": {
            "golem.srv.comp.expiration": int((utc_now() + timedelta(minutes=30)).timestamp() * 1000),
            "golem.node.debug.subnet": "public",
            f"golem.com.payment.platform.{PLATFORM}.address": node.requestor_id,
            "golem.com.payment.protocol.version": "3",
            "golem.com.payment.chosen-platform": PLATFORM,
        },
        "constraints": "(&(golem.runtime.name=vm)(golem.inf.mem.gib>=0.5)(golem.com.pricing.model=linear))",
    }


async def subscribe(http: aiohttp.ClientSession, node: LocalNode) -> tuple[str, list[dict[str, Any]]]:
    """A demand and the Initial proposals of every provider (long-polls until all have come)."""
    status, sub_id = await call(http, "POST", f"{M}/demands", demand(node))
    assert status == 201
    initial: list[dict[str, Any]] = []
    while len(initial) < len(node.providers):
        status, events = await call(http, "GET", f"{M}/demands/{sub_id}/events", timeout=5, maxEvents=10)
        assert status == 200
        assert events, "the providers' Initial proposals did not come"
        initial += [e["proposal"] for e in events]
    return sub_id, initial


async def negotiate(http: aiohttp.ClientSession, node: LocalNode) -> tuple[str, str, dict[str, Any]]:
    """Counter the first Initial proposal; returns (demand id, our counter's id, the provider's Draft)."""
    sub_id, (initial, *_) = await subscribe(http, node)
    status, counter_id = await call(
        http, "POST", f"{M}/demands/{sub_id}/proposals/{initial['proposalId']}", demand(node)
    )
    assert status == 200
    status, events = await call(http, "GET", f"{M}/demands/{sub_id}/events", timeout=5)
    assert status == 200
    (event,) = events
    return sub_id, counter_id, event["proposal"]


async def approved_agreement(http: aiohttp.ClientSession, node: LocalNode) -> str:
    _sub_id, _counter_id, draft = await negotiate(http, node)
    valid_to = format_timestamp(utc_now() + timedelta(minutes=1))
    status, agreement_id = await call(
        http, "POST", f"{M}/agreements", {"proposalId": draft["proposalId"], "validTo": valid_to}
    )
    assert status == 200
    assert (await call(http, "POST", f"{M}/agreements/{agreement_id}/confirm"))[0] == 204
    assert (await call(http, "POST", f"{M}/agreements/{agreement_id}/wait", timeout=5))[0] == 204
    return str(agreement_id)


async def test_me_names_the_requestor(local_node: LocalNode, http: aiohttp.ClientSession) -> None:
    assert await call(http, "GET", "/me") == (
        200,
        {"identity": local_node.requestor_id, "name": "requestor", "role": "manager"},
    )
    assert is_node_id(local_node.requestor_id)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-the-key"}])
async def test_a_missing_or_wrong_app_key_is_401(local_node: LocalNode, headers: dict[str, str]) -> None:
    async with aiohttp.ClientSession(base_url=local_node.url, headers=headers) as anonymous:
        status, body = await call(anonymous, "GET", f"{M}/demands")
    assert status == 401
    assert set(body) == {"message"}
    assert "app key" in body["message"]


async def test_a_demand_gets_one_initial_proposal_from_each_provider(
    local_node: LocalNode, http: aiohttp.ClientSession
) -> None:
    sub_id, initial = await subscribe(http, local_node)
    assert sorted(p["issuerId"] for p in initial) == sorted(p.node_id for p in local_node.providers)
    assert {p["state"] for p in initial} == {"Initial"}
    assert sorted(p["properties"]["golem.node.id.name"] for p in initial) == [
        "local-provider-1",
        "local-provider-2",
        "local-provider-3",
    ]
    for proposal in initial:
        assert set(proposal) == {"properties", "constraints", "proposalId", "issuerId", "state", "timestamp"}
        parse_timestamp(proposal["timestamp"])
    # Nothing more to come: the long-poll waits its timeout and answers an empty list.
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await call(http, "GET", f"{M}/demands/{sub_id}/events", timeout=0.3) == (200, [])
    assert loop.time() - started >= 0.25
    status, proposal = await call(http, "GET", f"{M}/demands/{sub_id}/proposals/{initial[0]['proposalId']}")
    assert (status, proposal) == (200, initial[0])


async def test_a_counter_proposal_is_answered_by_the_providers_draft(
    local_node: LocalNode, http: aiohttp.ClientSession
) -> None:
    sub_id, counter_id, draft = await negotiate(http, local_node)
    assert isinstance(counter_id, str)
    assert draft["state"] == "Draft"
    assert draft["prevProposalId"] == counter_id
    assert draft["issuerId"] in {p.node_id for p in local_node.providers}
    status, ours = await call(http, "GET", f"{M}/demands/{sub_id}/proposals/{counter_id}")
    assert (status, ours["issuerId"], ours["state"]) == (200, local_node.requestor_id, "Draft")


async def test_an_agreement_is_created_confirmed_approved_and_terminated(
    local_node: LocalNode, http: aiohttp.ClientSession
) -> None:
    agreement_id = await approved_agreement(http, local_node)
    status, agreement = await call(http, "GET", f"{M}/agreements/{agreement_id}")
    assert status == 200
    assert agreement["state"] == "Approved"
    assert agreement["demand"]["requestorId"] == local_node.requestor_id
    assert agreement["offer"]["providerId"] in {p.node_id for p in local_node.providers}
    assert agreement["offer"]["properties"]["golem.com.pricing.model"] == "linear"
    assert {"validTo", "approvedDate", "timestamp"} <= set(agreement)

    assert await call(http, "POST", f"{M}/agreements/{agreement_id}/terminate", {"message": "done"}) == (200, None)
    status, body = await call(http, "POST", f"{M}/agreements/{agreement_id}/terminate", {"message": "again"})
    assert status == 410
    assert body["message"].startswith("Terminated")
    status, body = await call(http, "POST", f"{M}/agreements/{agreement_id}/wait", timeout=1)
    assert status == 410
    assert body["message"].startswith("Terminated")


async def test_agreement_events_are_read_strictly_after_a_timestamp(
    local_node: LocalNode, http: aiohttp.ClientSession
) -> None:
    agreement_id = await approved_agreement(http, local_node)
    await call(http, "POST", f"{M}/agreements/{agreement_id}/terminate", {"message": "done"})
    status, events = await call(http, "GET", f"{M}/agreementEvents", timeout=0)
    assert status == 200
    assert [e["eventType"] for e in events] == ["AgreementApprovedEvent", "AgreementTerminatedEvent"]
    assert events[1]["terminator"] == "Requestor"
    assert events[1]["reason"] == {"message": "done"}
    assert {e["agreementId"] for e in events} == {agreement_id}

    status, later = await call(http, "GET", f"{M}/agreementEvents", timeout=0, afterTimestamp=events[0]["eventDate"])
    assert (status, later) == (200, events[1:])
    status, none = await call(http, "GET", f"{M}/agreementEvents", timeout=0.1, afterTimestamp=events[1]["eventDate"])
    assert (status, none) == (200, [])


async def test_an_initial_proposal_cannot_become_an_agreement(
    local_node: LocalNode, http: aiohttp.ClientSession
) -> None:
    _sub_id, (initial, *_) = await subscribe(http, local_node)
    valid_to = format_timestamp(utc_now() + timedelta(minutes=1))
    status, body = await call(
        http, "POST", f"{M}/agreements", {"proposalId": initial["proposalId"], "validTo": valid_to}
    )
    assert status == 400
    assert "no negotiation took place: counter at least once" in body["message"]


async def test_the_daemons_error_statuses(local_node: LocalNode, http: aiohttp.ClientSession) -> None:
    sub_id, counter_id, draft = await negotiate(http, local_node)
    proposals = f"{M}/demands/{sub_id}/proposals"
    _, ours = await call(http, "GET", f"{proposals}/{counter_id}")
    # Our own proposal cannot be countered (400); the Initial one was countered already (410).
    assert (await call(http, "POST", f"{proposals}/{counter_id}", demand(local_node)))[0] == 400
    status, body = await call(http, "POST", f"{proposals}/{ours['prevProposalId']}", demand(local_node))
    assert status == 410
    assert "already countered" in body["message"]
    # One agreement per Draft (409), and terminating it before approval is a conflict (409).
    valid_to = format_timestamp(utc_now() + timedelta(minutes=1))
    request = {"proposalId": draft["proposalId"], "validTo": valid_to}
    status, agreement_id = await call(http, "POST", f"{M}/agreements", request)
    assert status == 200
    assert (await call(http, "POST", f"{M}/agreements", request))[0] == 409
    assert (await call(http, "POST", f"{M}/agreements/{agreement_id}/terminate"))[0] == 409
    assert (await call(http, "POST", f"{M}/agreements/{agreement_id}/wait", timeout=0.1))[0] == 409  # unconfirmed
    # The Draft is now Accepted: countering it is gone (410).
    assert (await call(http, "POST", f"{proposals}/{draft['proposalId']}", demand(local_node)))[0] == 410
    # Cancelling answers 200 (the daemon's code), and confirming afterwards is gone (410).
    assert await call(http, "POST", f"{M}/agreements/{agreement_id}/cancel", {"message": "no"}) == (200, None)
    status, body = await call(http, "POST", f"{M}/agreements/{agreement_id}/confirm")
    assert status == 410
    assert body["message"].startswith("Cancelled")
    # A validTo that is not a timestamp, and a reason that is not an object: 400.
    assert (await call(http, "POST", f"{M}/agreements", {"proposalId": counter_id, "validTo": "soon"}))[0] == 400
    assert (await call(http, "POST", f"{proposals}/{draft['proposalId']}/reject", [1]))[0] == 400


async def test_unknown_ids_are_404_naming_the_id(http: aiohttp.ClientSession) -> None:
    for method, path in [
        ("GET", f"{M}/demands/no-such-demand/events"),
        ("DELETE", f"{M}/demands/no-such-demand"),
        ("GET", f"{M}/demands/no-such-demand/proposals/p"),
        ("GET", f"{M}/agreements/no-such-demand"),
    ]:
        status, body = await call(http, method, path, timeout=0) if method == "GET" else await call(http, method, path)
        assert status == 404, path
        assert "no-such-demand" in body["message"], path


async def test_unsubscribing_answers_204_then_404(local_node: LocalNode, http: aiohttp.ClientSession) -> None:
    _, sub_id = await call(http, "POST", f"{M}/demands", demand(local_node))
    assert await call(http, "DELETE", f"{M}/demands/{sub_id}") == (204, None)
    assert (await call(http, "DELETE", f"{M}/demands/{sub_id}"))[0] == 404  # as the real daemon answers
    assert (await call(http, "GET", f"{M}/demands/{sub_id}/events", timeout=0))[0] == 404


async def test_malformed_json_and_bad_constraints_are_400(http: aiohttp.ClientSession) -> None:
    async with http.post(f"{M}/demands", data=b"{not json", headers={"Content-Type": "application/json"}) as response:
        assert response.status == 400
        assert "not valid JSON" in (await response.json())["message"]
    status, body = await call(http, "POST", f"{M}/demands", {"properties": {}, "constraints": "(a=>1)"})
    assert status == 400
    assert "position 2" in body["message"]
    status, body = await call(http, "GET", f"{M}/agreementEvents", timeout="soon")
    assert status == 400


async def test_the_provider_side_routes_serve_offers(http: aiohttp.ClientSession) -> None:
    offer = {"properties": {"golem.runtime.name": "vm"}, "constraints": "()"}
    status, offer_id = await call(http, "POST", f"{M}/offers", offer)
    assert status == 201
    status, offers = await call(http, "GET", f"{M}/offers")
    assert [o["offerId"] for o in offers] == [offer_id]
    assert await call(http, "GET", f"{M}/offers/{offer_id}/events", timeout=0) == (200, [])
    # An offer is not a demand: the requestor-side routes do not know it.
    assert (await call(http, "GET", f"{M}/demands/{offer_id}/events", timeout=0))[0] == 404
    assert (await call(http, "GET", f"{M}/demands/{offer_id}/proposals/p"))[0] == 404
    assert await call(http, "DELETE", f"{M}/offers/{offer_id}") == (204, None)


async def test_a_taken_port_is_a_local_node_error_naming_it(local_node: LocalNode) -> None:
    with pytest.raises(LocalNodeError, match=f":{local_node.port}"):
        await LocalNode(port=local_node.port).start()


@pytest.mark.slow  # over a second of real processes and waits (the quick run keeps its minute)
async def test_the_cli_serves_a_node_until_sigterm() -> None:
    node = await NodeProcess.start(providers=2, app_key="cli-test-key", env=os.environ, line_bound=30)
    try:
        printed = node.lines
        assert printed[-2].startswith("  export"), printed
        export = printed[-2].split()
        assert "YAGNA_APPKEY=cli-test-key" in export
        url = next(word.split("=", 1)[1] for word in export if word.startswith("YAGNA_API_URL="))
        async with aiohttp.ClientSession(base_url=url, headers={"Authorization": "Bearer cli-test-key"}) as session:
            status, me = await call(session, "GET", "/me")
        assert status == 200
        assert me["identity"] in printed[1]
        code, rest, _err = await node.stop(bound=30)
    finally:
        await node.kill()
    assert code == 0
    assert rest.rstrip().endswith("Stopped.")


def test_a_node_built_outside_any_loop_runs_inside_one() -> None:
    node = LocalNode()  # nothing may be bound to a loop here

    async def use() -> int:
        async with node, aiohttp.ClientSession(headers={"Authorization": f"Bearer {node.app_key}"}) as session:
            status, _ = await call(session, "GET", node.url + "/me")
            return status

    assert asyncio.run(use()) == 200
    assert not node.running
