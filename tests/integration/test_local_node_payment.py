"""The payment and activity APIs of the embedded local node, over real HTTP on loopback (plain aiohttp)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from golem_local.config import LocalNetworkConfig
from golem_local.node import LocalNode
from golem_shared.timestamps import format_timestamp, utc_now

pytestmark = pytest.mark.integration

PLATFORM = "erc20-holesky-tglm"
# One provider, billing once an hour: the only debit notes a test sees are the ones destroying an activity issues.
NETWORK = LocalNetworkConfig.with_providers(1, debit_note_interval_sec=3600)
# Every kind of event a requestor may ask for with X-Requestor-Events (without it: RECEIVED,CANCELLED).
ALL_REQUESTOR_EVENTS = {"X-Requestor-Events": "RECEIVED,ACCEPTED,REJECTED,CANCELLED,SETTLED"}


class Client:
    """A bare HTTP client of one node (a session on its URL): each call returns (status, JSON body or None)."""

    def __init__(self, session: aiohttp.ClientSession, node: LocalNode) -> None:
        self.session = session
        self.node = node

    async def call(
        self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None, **params: Any
    ) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"params": {k: str(v) for k, v in params.items()}, "headers": headers or {}}
        if body is not None:
            kwargs["json"] = body
        async with self.session.request(method, path, **kwargs) as response:
            text = await response.text()
            return response.status, (await response.json(content_type=None)) if text else None

    async def pay(
        self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None, **params: Any
    ) -> tuple[int, Any]:
        return await self.call(method, "/payment-api/v1" + path, body, headers=headers, **params)

    async def act(self, method: str, path: str, body: Any = None, **params: Any) -> tuple[int, Any]:
        return await self.call(method, "/activity-api/v1" + path, body, **params)

    async def market(self, method: str, path: str, body: Any = None, **params: Any) -> tuple[int, Any]:
        return await self.call(method, "/market-api/v1" + path, body, **params)

    async def agreement(self, app_session_id: str | None = None) -> str:
        """Negotiate an approved agreement with the node's provider, as a requestor does over the market API
        (confirmed with ``?appSessionId=`` when one is given)."""
        me = self.node.requestor_id
        properties: dict[str, Any] = {
            "golem.srv.comp.expiration": int((utc_now() + timedelta(hours=1)).timestamp() * 1000),
            "golem.node.debug.subnet": "public",
            f"golem.com.payment.platform.{PLATFORM}.address": me,
            "golem.com.payment.protocol.version": "3",
        }
        constraints = "(&(golem.node.debug.subnet=public)(golem.com.pricing.model=linear))"
        status, demand_id = await self.market(
            "POST", "/demands", {"properties": properties, "constraints": constraints}
        )
        assert status == 201, demand_id
        chosen = {**properties, "golem.com.payment.chosen-platform": PLATFORM}
        counter_body = {"properties": chosen, "constraints": constraints}
        counter_id = None
        while True:
            status, events = await self.market("GET", f"/demands/{demand_id}/events", timeout=5, maxEvents=10)
            assert status == 200, events
            assert events, "the provider did not answer within 5 s"
            for event in events:
                proposal = event.get("proposal", {})
                if proposal.get("state") == "Initial" and counter_id is None:
                    status, counter_id = await self.market(
                        "POST", f"/demands/{demand_id}/proposals/{proposal['proposalId']}", counter_body
                    )
                    assert status == 200, counter_id
                elif counter_id is not None and proposal.get("prevProposalId") == counter_id:
                    return await self._agree(demand_id, proposal["proposalId"], app_session_id)

    async def _agree(self, demand_id: str, draft_id: str, app_session_id: str | None) -> str:
        valid_to = format_timestamp(utc_now() + timedelta(hours=1))
        status, agreement_id = await self.market("POST", "/agreements", {"proposalId": draft_id, "validTo": valid_to})
        assert status == 200, agreement_id
        session = {} if app_session_id is None else {"appSessionId": app_session_id}
        assert (await self.market("POST", f"/agreements/{agreement_id}/confirm", **session))[0] == 204
        assert (await self.market("POST", f"/agreements/{agreement_id}/wait", timeout=5))[0] == 204
        await self.market("DELETE", f"/demands/{demand_id}")
        return str(agreement_id)


@pytest.fixture
async def local_node() -> AsyncIterator[LocalNode]:
    """Overrides the conftest's node (and so its ``http`` session): one provider that bills hourly."""
    async with LocalNode(NETWORK) as node:
        yield node


@pytest.fixture
def client(local_node: LocalNode, http: aiohttp.ClientSession) -> Client:
    return Client(http, local_node)


@pytest.fixture
async def poor_client() -> AsyncIterator[Client]:
    """A node without providers whose requestor holds 10 GLM."""
    async with LocalNode(LocalNetworkConfig(providers=(), requestor_balance=Decimal(10))) as node:
        headers = {"Authorization": f"Bearer {node.app_key}"}
        async with aiohttp.ClientSession(base_url=node.url, headers=headers) as session:
            yield Client(session, node)


async def test_allocation_is_created_read_listed_and_released(client: Client) -> None:
    status, created = await client.pay("POST", "/allocations", {"paymentPlatform": PLATFORM, "totalAmount": "2.5"})
    assert status == 201
    allocation_id = created["allocationId"]
    assert created["address"] == client.node.requestor_id
    assert (created["totalAmount"], created["spentAmount"], created["remainingAmount"]) == ("2.5", "0", "2.5")
    assert created["makeDeposit"] is False
    assert await client.pay("GET", f"/allocations/{allocation_id}") == (200, created)
    status, listed = await client.pay("GET", "/allocations")
    assert [a["allocationId"] for a in listed] == [allocation_id]

    assert await client.pay("DELETE", f"/allocations/{allocation_id}") == (200, None)
    assert (await client.pay("DELETE", f"/allocations/{allocation_id}"))[0] == 410
    assert (await client.pay("GET", f"/allocations/{allocation_id}"))[0] == 410
    assert await client.pay("GET", "/allocations") == (200, [])
    status, body = await client.pay("DELETE", "/allocations/no-such-allocation")
    assert status == 404
    assert "no-such-allocation" in body["message"]

    with_timeout = {"paymentPlatform": PLATFORM, "totalAmount": "1", "timeout": "2030-01-01T00:00:00Z"}
    status, created = await client.pay("POST", "/allocations", with_timeout)
    assert (status, created["timeout"]) == (201, "2030-01-01T00:00:00.000000Z")
    assert (await client.pay("POST", "/allocations", {**with_timeout, "timeout": "soon"}))[0] == 400


async def test_allocation_beyond_the_balance_is_refused_with_the_figures(poor_client: Client) -> None:
    assert (await poor_client.pay("POST", "/allocations", {"paymentPlatform": PLATFORM, "totalAmount": "7"}))[0] == 201
    status, body = await poor_client.pay("POST", "/allocations", {"paymentPlatform": PLATFORM, "totalAmount": "4"})
    assert status == 400
    assert "Insufficient funds to make allocation: requested 4, available 3 on erc20-holesky-tglm" in body["message"]
    status, body = await poor_client.pay("POST", "/allocations", {"paymentPlatform": "zksync", "totalAmount": "1"})
    assert status == 400
    assert "zksync" in body["message"]
    assert PLATFORM in body["message"]
    for amount in ("0", "-1", "lots"):
        status, _ = await poor_client.pay("POST", "/allocations", {"paymentPlatform": PLATFORM, "totalAmount": amount})
        assert status == 400, amount


async def test_demand_decorations_carry_the_payer_address(client: Client) -> None:
    _, allocation = await client.pay("POST", "/allocations", {"paymentPlatform": PLATFORM, "totalAmount": "1"})
    status, decorations = await client.pay("GET", "/demandDecorations", allocationIds=allocation["allocationId"])
    assert status == 200
    assert decorations == {
        "properties": [
            {"key": f"golem.com.payment.platform.{PLATFORM}.address", "value": client.node.requestor_id},
            {"key": "golem.com.payment.protocol.version", "value": "3"},
        ],
        "constraints": [f"(golem.com.payment.platform.{PLATFORM}.address=*)", "(golem.com.payment.protocol.version>1)"],
    }
    assert (await client.pay("GET", "/demandDecorations", allocationIds="nope"))[0] == 400


async def test_activity_is_created_in_either_body_form_and_destroyed(client: Client) -> None:
    agreement_id = await client.agreement()
    status, as_string = await client.act("POST", "/activity", agreement_id)
    assert status == 200
    assert isinstance(as_string, str)
    status, as_object = await client.act("POST", "/activity", {"agreementId": agreement_id, "requestorPubKey": "00"})
    assert status == 200
    assert set(as_object) == {"activityId"}

    assert await client.act("GET", f"/activity/{as_string}/state") == (
        200,
        {"state": ["Initialized", None]},
    )
    status, usage = await client.act("GET", f"/activity/{as_string}/usage")
    assert status == 200
    assert len(usage["currentUsage"]) == 2
    assert all(isinstance(value, float) and value >= 0 for value in usage["currentUsage"])
    assert isinstance(usage["timestamp"], int)
    assert await client.act("GET", f"/activity/{as_string}/agreement") == (200, agreement_id)

    assert await client.act("DELETE", f"/activity/{as_string}") == (200, None)
    status, state = await client.act("GET", f"/activity/{as_string}/state")
    assert state["state"] == ["Terminated", None]
    for method, path in (("GET", "/state"), ("GET", "/usage"), ("DELETE", "")):
        assert (await client.act(method, f"/activity/nope{path}"))[0] == 404
    assert (await client.act("POST", "/activity", {"agreement": agreement_id}))[0] == 400
    assert (await client.act("POST", "/activity", "no-such-agreement"))[0] == 404


async def test_debit_note_events_long_poll_strictly_after_and_acceptance_charges_once(client: Client) -> None:
    _, allocation = await client.pay("POST", "/allocations", {"paymentPlatform": PLATFORM, "totalAmount": "5"})
    agreement_id = await client.agreement()
    _, activity_id = await client.act("POST", "/activity", agreement_id)

    # The poll starts before the debit note exists: it must wake when destroying the activity issues one.
    poll = asyncio.create_task(client.pay("GET", "/debitNoteEvents", timeout=10, maxEvents=5))
    assert (await client.act("DELETE", f"/activity/{activity_id}"))[0] == 200
    status, events = await poll
    assert status == 200
    (event,) = events
    assert event["eventType"] == "DebitNoteReceivedEvent"
    assert await client.pay("GET", "/debitNoteEvents", afterTimestamp=event["eventDate"], timeout=0) == (200, [])
    assert (await client.pay("GET", "/debitNoteEvents", timeout=0))[1] == [event]

    status, note = await client.pay("GET", f"/debitNotes/{event['debitNoteId']}")
    assert status == 200
    assert (note["agreementId"], note["activityId"], note["status"]) == (agreement_id, activity_id, "RECEIVED")
    assert note["recipientId"] == client.node.requestor_id
    due = Decimal(note["totalAmountDue"])
    assert due > 0

    accept = f"/debitNotes/{note['debitNoteId']}/accept"
    wrong = {"totalAmountAccepted": "123.45", "allocationId": allocation["allocationId"]}
    status, body = await client.pay("POST", accept, wrong)
    assert status == 400
    assert "123.45" in body["message"]
    assert note["totalAmountDue"] in body["message"]
    acceptance = {"totalAmountAccepted": note["totalAmountDue"], "allocationId": allocation["allocationId"]}
    assert await client.pay("POST", accept, acceptance) == (200, None)
    assert await client.pay("POST", accept, acceptance) == (200, None)
    _, after = await client.pay("GET", f"/allocations/{allocation['allocationId']}")
    assert Decimal(after["spentAmount"]) == due
    assert Decimal(after["remainingAmount"]) == Decimal(5) - due
    assert client.node.ledger.total_paid == due
    assert (await client.pay("GET", f"/debitNotes/{note['debitNoteId']}"))[1]["status"] == "ACCEPTED"
    # The requestor's own acceptance is an event only when asked for (X-Requestor-Events, as yagna 0.17.6).
    assert await client.pay("GET", "/debitNoteEvents", afterTimestamp=event["eventDate"], timeout=0) == (200, [])
    status, accepted = await client.pay(
        "GET", "/debitNoteEvents", headers=ALL_REQUESTOR_EVENTS, afterTimestamp=event["eventDate"], timeout=0
    )
    assert [e["eventType"] for e in accepted] == ["DebitNoteAcceptedEvent"]
    assert (await client.pay("POST", f"/debitNotes/{note['debitNoteId']}/reject", {}))[0] == 501


async def test_ended_agreement_is_invoiced_and_settled_on_acceptance(client: Client) -> None:
    _, allocation = await client.pay("POST", "/allocations", {"paymentPlatform": PLATFORM, "totalAmount": "5"})
    agreement_id = await client.agreement()
    _, activity_id = await client.act("POST", "/activity", agreement_id)
    status, _ = await client.market("POST", f"/agreements/{agreement_id}/terminate", {"message": "done"})
    assert status == 200

    status, events = await client.pay("GET", "/invoiceEvents", timeout=10)
    assert status == 200
    (received,) = events
    assert received["eventType"] == "InvoiceReceivedEvent"
    _, invoice = await client.pay("GET", f"/invoices/{received['invoiceId']}")
    assert (invoice["agreementId"], invoice["activityIds"], invoice["status"]) == (
        agreement_id,
        [activity_id],
        "RECEIVED",
    )
    _, notes = await client.pay("GET", "/debitNotes")
    assert [n["totalAmountDue"] for n in notes] == [invoice["amount"]]  # the last note is the whole bill
    assert (await client.act("GET", f"/activity/{activity_id}/state"))[1]["state"][0] == "Terminated"

    acceptance = {"totalAmountAccepted": invoice["amount"], "allocationId": allocation["allocationId"]}
    assert await client.pay("POST", f"/invoices/{invoice['invoiceId']}/accept", acceptance) == (200, None)
    assert await client.pay("GET", "/invoiceEvents", afterTimestamp=received["eventDate"], timeout=0) == (200, [])
    _, later = await client.pay(
        "GET", "/invoiceEvents", headers=ALL_REQUESTOR_EVENTS, afterTimestamp=received["eventDate"], timeout=0
    )
    assert [e["eventType"] for e in later] == ["InvoiceAcceptedEvent", "InvoiceSettledEvent"]
    assert (await client.pay("GET", f"/invoices/{invoice['invoiceId']}"))[1]["status"] == "SETTLED"
    _, after = await client.pay("GET", f"/allocations/{allocation['allocationId']}")
    assert after["spentAmount"] == invoice["amount"]
    provider = client.node.providers[0]
    assert client.node.ledger.provider_balance(provider.node_id) == Decimal(invoice["amount"])


async def _settled_invoice(client: Client, app_session_id: str | None = None) -> tuple[str, str]:
    """An agreement with one activity, ended, invoiced and its invoice accepted (so settled): (agreement, invoice)."""
    _, allocation = await client.pay("POST", "/allocations", {"paymentPlatform": PLATFORM, "totalAmount": "5"})
    agreement_id = await client.agreement(app_session_id)
    status, activity_id = await client.act("POST", "/activity", agreement_id)
    assert status == 200, activity_id
    status, _ = await client.market("POST", f"/agreements/{agreement_id}/terminate", {"message": "done"})
    assert status == 200
    after: dict[str, str] = {}
    while True:  # long-polls the invoice events until the one of this agreement
        status, events = await client.pay("GET", "/invoiceEvents", headers=ALL_REQUESTOR_EVENTS, timeout=10, **after)
        assert status == 200, events
        assert events, "no invoice within 10 s of the end of the agreement"
        after = {"afterTimestamp": events[-1]["eventDate"]}
        for event in events:
            _, invoice = await client.pay("GET", f"/invoices/{event['invoiceId']}")
            if invoice["agreementId"] == agreement_id:
                acceptance = {"totalAmountAccepted": invoice["amount"], "allocationId": allocation["allocationId"]}
                assert await client.pay("POST", f"/invoices/{invoice['invoiceId']}/accept", acceptance) == (200, None)
                return agreement_id, str(invoice["invoiceId"])


async def _kinds(client: Client, path: str, headers: dict[str, str] | None = None, **params: Any) -> list[str]:
    status, events = await client.pay("GET", path, headers=headers, timeout=0, **params)
    assert status == 200, events
    return [event["eventType"] for event in events]


async def test_the_requestor_sees_received_events_unless_its_header_asks_for_more(client: Client) -> None:
    await _settled_invoice(client)
    # yagna 0.17.6: without X-Requestor-Events, RECEIVED and CANCELLED only (golem-js takes every event it gets for
    # a new document, so an Accepted event it did not ask for looked like a duplicate).
    assert await _kinds(client, "/invoiceEvents") == ["InvoiceReceivedEvent"]
    assert set(await _kinds(client, "/debitNoteEvents")) == {"DebitNoteReceivedEvent"}
    assert await _kinds(client, "/invoiceEvents", ALL_REQUESTOR_EVENTS) == [
        "InvoiceReceivedEvent",
        "InvoiceAcceptedEvent",
        "InvoiceSettledEvent",
    ]
    settled = {"X-Requestor-Events": "SETTLED"}
    assert await _kinds(client, "/invoiceEvents", settled) == ["InvoiceSettledEvent"]
    # The names are split at commas and nothing else: no trimming, case counts, an empty value selects nothing.
    untrimmed = {"X-Requestor-Events": "RECEIVED, SETTLED"}
    assert await _kinds(client, "/invoiceEvents", untrimmed) == ["InvoiceReceivedEvent"]
    assert await _kinds(client, "/invoiceEvents", {"X-Requestor-Events": "received,Settled"}) == []
    assert await _kinds(client, "/invoiceEvents", {"X-Requestor-Events": ""}) == []
    # The provider's header concerns documents the caller issued: the requestor's events do not change with it.
    provider_side = {"X-Provider-Events": "RECEIVED,ACCEPTED,SETTLED"}
    assert await _kinds(client, "/invoiceEvents", provider_side) == ["InvoiceReceivedEvent"]
    # maxEvents counts the events that pass the filter.
    assert await _kinds(client, "/invoiceEvents", settled, maxEvents=1) == ["InvoiceSettledEvent"]


async def test_payment_events_keep_to_the_app_session_of_their_agreement(client: Client) -> None:
    first_agreement, first = await _settled_invoice(client, app_session_id="session-a")
    second_agreement, second = await _settled_invoice(client, app_session_id="session-b")

    async def documents(path: str, key: str, **params: Any) -> list[str]:
        status, events = await client.pay("GET", path, timeout=0, **params)
        assert status == 200, events
        return [event[key] for event in events]

    assert await documents("/invoiceEvents", "invoiceId") == [first, second]
    assert await documents("/invoiceEvents", "invoiceId", appSessionId="session-a") == [first]
    assert await documents("/invoiceEvents", "invoiceId", appSessionId="session-b") == [second]
    assert await documents("/invoiceEvents", "invoiceId", appSessionId="no-such-session") == []
    _, notes = await client.pay("GET", "/debitNotes")
    for session, agreement in (("session-a", first_agreement), ("session-b", second_agreement)):
        expected = {note["debitNoteId"] for note in notes if note["agreementId"] == agreement}
        assert expected, f"no debit note for {agreement}"
        noted = await documents("/debitNoteEvents", "debitNoteId", appSessionId=session)
        assert set(noted) == expected
