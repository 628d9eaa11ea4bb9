"""What the API classes send and how they read the answers, through a fake transport (no sockets)."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from golem_api._rest import routes
from golem_api._rest.activity import ActivityApi
from golem_api._rest.market import MarketApi
from golem_api._rest.models import ProposalEvent, ProposalRejectedEvent
from golem_api._rest.payment import PaymentApi
from golem_api._rest.routes import ABSENT, POLL_MARGIN
from golem_api.errors import AgreementError, ConfigurationError, GoneError, RequestTimeoutError
from tests.unit.fake_node import FakeNode

WHEN = datetime(2024, 5, 1, 10, 0, 0, 250000, tzinfo=timezone.utc)
PROPOSAL = {
    "properties": {"golem.inf.mem.gib": 4.0},
    "constraints": "()",
    "proposalId": "p-2",
    "issuerId": "0xprovider",
    "state": "Draft",
    "timestamp": "2024-05-01T10:00:00Z",
    "prevProposalId": "p-1",
}


async def test_subscribe_and_counter_send_the_demand() -> None:
    node = FakeNode({routes.SUBSCRIBE_DEMAND: "sub-1", routes.COUNTER_PROPOSAL: "p-3"})
    market = MarketApi(node)
    properties = {"golem.srv.comp.expiration": 1714557600000}
    assert await market.subscribe_demand(properties, "(golem.runtime.name=vm)") == "sub-1"
    assert node.last.json == {"properties": properties, "constraints": "(golem.runtime.name=vm)"}
    assert await market.counter_proposal("sub-1", "p-2", properties, "()") == "p-3"
    assert node.last.path == "/demands/sub-1/proposals/p-2"


async def test_collecting_events_long_polls_with_a_margin() -> None:
    event = {"eventType": "ProposalEvent", "eventDate": "2024-05-01T10:00:00Z", "proposal": PROPOSAL}
    rejected = {"eventType": "ProposalRejectedEvent", "eventDate": "2024-05-01T10:00:01Z", "proposalId": "p-1"}
    node = FakeNode({routes.COLLECT_DEMAND_EVENTS: [event, rejected]})
    events = await MarketApi(node).collect_demand_events("sub-1", timeout=3, max_events=7)
    assert [type(e) for e in events] == [ProposalEvent, ProposalRejectedEvent]
    assert node.last.params == {"timeout": "3.0", "maxEvents": "7"}
    assert node.last.timeout == 3 + POLL_MARGIN


async def test_reject_proposal_sends_a_message_or_null() -> None:
    node = FakeNode()
    market = MarketApi(node)
    await market.reject_proposal("s", "p", "too expensive")
    assert node.last.json == {"message": "too expensive"}
    await market.reject_proposal("s", "p")
    assert node.last.json is None


async def test_create_and_confirm_an_agreement() -> None:
    node = FakeNode({routes.CREATE_AGREEMENT: "agr-1"})
    market = MarketApi(node)
    assert await market.create_agreement("p-2", WHEN) == "agr-1"
    assert node.last.json == {"proposalId": "p-2", "validTo": "2024-05-01T10:00:00.250000Z"}
    await market.confirm_agreement("agr-1")
    assert (node.last.path, node.last.params, node.last.json) == ("/agreements/agr-1/confirm", {}, ABSENT)
    await market.confirm_agreement("agr-1", app_session_id="session")
    assert node.last.params == {"appSessionId": "session"}


@pytest.mark.parametrize("word", ["Rejected", "Cancelled", "Expired", "Terminated"])
async def test_wait_for_approval_turns_gone_into_an_agreement_error(word: str) -> None:
    gone = GoneError(method="POST", path="/market-api/v1/agreements/agr-1/wait", status=410, message=word)
    node = FakeNode({routes.WAIT_FOR_APPROVAL: gone})
    with pytest.raises(AgreementError) as info:
        await MarketApi(node).wait_for_approval("agr-1", timeout=2)
    assert info.value.agreement_id == "agr-1"
    assert word in str(info.value)
    assert info.value.__cause__ is gone
    assert node.last.params == {"timeout": "2.0"}
    assert node.last.timeout == 2 + POLL_MARGIN


async def test_wait_for_approval_finds_the_state_in_a_longer_message() -> None:
    gone = GoneError(method="POST", path="/w", status=410, message="Agreement agr-1 was rejected by provider")
    with pytest.raises(AgreementError, match="not approved: Rejected"):
        await MarketApi(FakeNode({routes.WAIT_FOR_APPROVAL: gone})).wait_for_approval("agr-1")


async def test_wait_for_approval_lets_a_timeout_through() -> None:
    timeout = RequestTimeoutError(method="POST", path="/w", status=408, message="Timeout")
    with pytest.raises(RequestTimeoutError):
        await MarketApi(FakeNode({routes.WAIT_FOR_APPROVAL: timeout})).wait_for_approval("agr-1")


async def test_waiting_forever_has_no_http_time_limit() -> None:
    node = FakeNode()
    await MarketApi(node).approve_agreement("agr-1", timeout=0)
    assert node.last.timeout == float("inf")
    assert node.last.params == {"timeout": "0.0"}


async def test_terminate_sends_the_reason_as_given() -> None:
    node = FakeNode()
    reason = {"message": "Finished", "golem.requestor.code": "Success"}
    await MarketApi(node).terminate_agreement("agr-1", reason)
    assert node.last.json == reason
    await MarketApi(node).cancel_agreement("agr-1")
    assert node.last.json is None


async def test_agreement_events_since_a_moment() -> None:
    node = FakeNode({routes.COLLECT_AGREEMENT_EVENTS: []})
    assert await MarketApi(node).collect_agreement_events(after=WHEN, timeout=1.5) == []
    assert node.last.params == {"timeout": "1.5", "maxEvents": "10", "afterTimestamp": "2024-05-01T10:00:00.250000Z"}
    await MarketApi(node).collect_agreement_events()
    assert "afterTimestamp" not in node.last.params


async def test_allocation_amounts_go_out_as_plain_decimal_strings() -> None:
    allocation = {
        "allocationId": "al-1",
        "address": "0xme",
        "paymentPlatform": "erc20-holesky-tglm",
        "totalAmount": "0.0000001",
        "spentAmount": "0",
        "remainingAmount": "0.0000001",
        "timestamp": "2024-05-01T10:00:00Z",
        "makeDeposit": False,
    }
    node = FakeNode({routes.CREATE_ALLOCATION: allocation})
    created = await PaymentApi(node).create_allocation(
        payment_platform="erc20-holesky-tglm", total_amount=Decimal("1E-7"), timeout=WHEN
    )
    assert created.total_amount == Decimal("0.0000001")
    assert node.last.json == {
        "paymentPlatform": "erc20-holesky-tglm",
        "totalAmount": "0.0000001",
        "makeDeposit": False,
        "timeout": "2024-05-01T10:00:00.250000Z",
    }


@pytest.mark.parametrize("amount", [Decimal(-1), Decimal("NaN"), 1.5])
async def test_a_bad_amount_is_refused_before_sending(amount: Any) -> None:
    node = FakeNode()
    with pytest.raises(ConfigurationError, match="total_amount"):
        await PaymentApi(node).create_allocation(payment_platform="p", total_amount=amount)
    assert node.sent == []


async def test_accepting_documents() -> None:
    node = FakeNode()
    payment = PaymentApi(node)
    await payment.accept_debit_note("dn-1", amount=Decimal("0.000123000"), allocation_id="al-1")
    assert node.last.path == "/debitNotes/dn-1/accept"
    assert node.last.json == {"totalAmountAccepted": "0.000123000", "allocationId": "al-1"}
    await payment.accept_invoice("inv-1", amount=Decimal("2"), allocation_id="al-1")
    assert node.last.path == "/invoices/inv-1/accept"
    assert node.last.json == {"totalAmountAccepted": "2", "allocationId": "al-1"}


async def test_demand_decorations_joins_the_ids() -> None:
    node = FakeNode({routes.DEMAND_DECORATIONS: {"properties": [], "constraints": []}})
    await PaymentApi(node).demand_decorations(["a", "b"])
    assert node.last.params == {"allocationIds": "a,b"}
    with pytest.raises(ConfigurationError):
        await PaymentApi(node).demand_decorations("ab")


async def test_payment_events_after_a_moment() -> None:
    node = FakeNode(
        {
            routes.COLLECT_INVOICE_EVENTS: [
                {"eventType": "InvoiceReceivedEvent", "eventDate": "2024-05-01T10:00:00Z", "invoiceId": "i-1"}
            ]
        }
    )
    events = await PaymentApi(node).collect_invoice_events(after=WHEN, timeout=2)
    assert [e.document_id for e in events] == ["i-1"]
    assert node.last.params == {"timeout": "2.0", "maxEvents": "100", "afterTimestamp": "2024-05-01T10:00:00.250000Z"}
    assert node.last.timeout == 2 + POLL_MARGIN


@pytest.mark.parametrize("answer", ["act-1", {"activityId": "act-1", "credentials": None}])
async def test_create_activity_sends_a_json_string_and_reads_either_answer(answer: Any) -> None:
    node = FakeNode({routes.CREATE_ACTIVITY: answer})
    assert await ActivityApi(node).create_activity("agr-1") == "act-1"
    assert node.last.json == "agr-1"


async def test_ids_are_percent_encoded_and_must_not_be_empty() -> None:
    node = FakeNode({routes.GET_ACTIVITY_STATE: {"state": ["Ready", None]}})
    await ActivityApi(node).get_state("a/b c")
    assert node.last.path == "/activity/a%2Fb%20c/state"
    with pytest.raises(ConfigurationError, match="activityId"):
        await ActivityApi(node).get_state("")
