"""Parsing the daemon's JSON into the REST models: camelCase in, snake_case out, exact money."""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from golem_api._rest.models import (
    ActivityState,
    ActivityUsage,
    Agreement,
    AgreementEvent,
    AgreementOperationEvent,
    Allocation,
    DebitNote,
    DemandDecoration,
    Identity,
    Invoice,
    PaymentEvent,
    PropertyQueryEvent,
    Proposal,
    ProposalEvent,
    ProposalRejectedEvent,
    UnknownMarketEvent,
    parse_market_event,
)

REQUESTOR = "0x1111111111111111111111111111111111111111"
PROVIDER = "0x2222222222222222222222222222222222222222"

PROPOSAL: dict[str, Any] = {
    "properties": {
        "golem.inf.mem.gib": 4.0,
        "golem.com.pricing.model.linear.coeffs": [0.001, 0.002, 0.0],
        "golem.com.usage.vector": ["golem.usage.duration_sec", "golem.usage.cpu_sec"],
        "golem.node.id.name": "local-provider-1",
    },
    "constraints": "(&(golem.srv.comp.expiration>1714557600000))",
    "proposalId": "R-4c0b1e",
    "issuerId": PROVIDER,
    "state": "Draft",
    "timestamp": "2024-05-01T10:00:00.123456789Z",
    "prevProposalId": "R-prev",
    "someFutureField": {"ignored": True},
}

AGREEMENT: dict[str, Any] = {
    "agreementId": "a1b2c3",
    "demand": {
        "properties": {"golem.srv.comp.expiration": 1714557600000},
        "constraints": "(golem.runtime.name=vm)",
        "demandId": "d-1",
        "requestorId": REQUESTOR,
        "timestamp": "2024-05-01T10:00:00Z",
    },
    "offer": {
        "properties": {"golem.runtime.name": "vm"},
        "constraints": "()",
        "offerId": "o-1",
        "providerId": PROVIDER,
        "timestamp": "2024-05-01T09:59:00Z",
    },
    "validTo": "2024-05-01T11:00:00.000000Z",
    "approvedDate": "2024-05-01T10:00:05.5+00:00",
    "state": "Approved",
    "timestamp": "2024-05-01T10:00:01Z",
    "appSessionId": "session-7",
}

DEBIT_NOTE: dict[str, Any] = {
    "debitNoteId": "dn-1",
    "issuerId": PROVIDER,
    "recipientId": REQUESTOR,
    "payeeAddr": PROVIDER,
    "payerAddr": REQUESTOR,
    "paymentPlatform": "erc20-holesky-tglm",
    "previousDebitNoteId": None,
    "timestamp": "2024-05-01T10:02:00.000000001Z",
    "agreementId": "a1b2c3",
    "activityId": "act-1",
    "totalAmountDue": "0.000123456789012345678",
    "usageCounterVector": [120.0, 33],
    "paymentDueDate": "2024-05-01T10:12:00Z",
    "status": "RECEIVED",
}

INVOICE: dict[str, Any] = {
    "invoiceId": "inv-1",
    "issuerId": PROVIDER,
    "recipientId": REQUESTOR,
    "payeeAddr": PROVIDER,
    "payerAddr": REQUESTOR,
    "paymentPlatform": "erc20-holesky-tglm",
    "timestamp": "2024-05-01T11:00:00Z",
    "agreementId": "a1b2c3",
    "activityIds": ["act-1", "act-2"],
    "amount": "1.100000000000000001",
    "paymentDueDate": "2024-05-02T11:00:00Z",
    "status": "RECEIVED",
}


def at(hour: int, minute: int, second: int, micro: int = 0) -> datetime:
    return datetime(2024, 5, 1, hour, minute, second, micro, tzinfo=timezone.utc)


def without(data: dict[str, Any], key: str) -> dict[str, Any]:
    result = copy.deepcopy(data)
    del result[key]
    return result


def test_proposal_keeps_properties_and_truncates_nanoseconds() -> None:
    proposal = Proposal.from_json(PROPOSAL)
    assert proposal.proposal_id == "R-4c0b1e"
    assert proposal.issuer_id == PROVIDER
    assert proposal.properties["golem.com.pricing.model.linear.coeffs"] == [0.001, 0.002, 0.0]
    assert proposal.constraints.startswith("(&")
    assert proposal.state == "Draft"
    assert proposal.timestamp == at(10, 0, 0, 123456)
    assert proposal.prev_proposal_id == "R-prev"


def test_initial_proposal_has_no_previous_one() -> None:
    assert Proposal.from_json(without(PROPOSAL, "prevProposalId")).prev_proposal_id is None


def test_agreement_is_flattened_from_demand_and_offer() -> None:
    agreement = Agreement.from_json(AGREEMENT)
    assert agreement.agreement_id == "a1b2c3"
    assert agreement.state == "Approved"
    assert agreement.requestor_id == REQUESTOR
    assert agreement.provider_id == PROVIDER
    assert agreement.demand_properties == {"golem.srv.comp.expiration": 1714557600000}
    assert agreement.offer_properties == {"golem.runtime.name": "vm"}
    assert agreement.demand_constraints == "(golem.runtime.name=vm)"
    assert agreement.offer_constraints == "()"
    assert agreement.valid_to == at(11, 0, 0)
    assert agreement.approved_date == at(10, 0, 5, 500000)
    assert agreement.app_session_id == "session-7"


def test_agreement_not_yet_approved() -> None:
    data = without(without(AGREEMENT, "approvedDate"), "appSessionId")
    agreement = Agreement.from_json({**data, "state": "Pending"})
    assert agreement.approved_date is None
    assert agreement.app_session_id is None


def test_market_events_are_told_apart_by_event_type() -> None:
    date = "2024-05-01T10:00:03.000000000Z"
    events = [
        parse_market_event({"eventType": "ProposalEvent", "eventDate": date, "proposal": PROPOSAL}),
        parse_market_event(
            {"eventType": "ProposalRejectedEvent", "eventDate": date, "proposalId": "R-1", "reason": {"message": "no"}}
        ),
        parse_market_event({"eventType": "ProposalRejectedEvent", "eventDate": date, "proposalId": "R-2"}),
        parse_market_event({"eventType": "AgreementEvent", "eventDate": date, "agreement": AGREEMENT}),
        parse_market_event({"eventType": "PropertyQueryEvent", "eventDate": date, "propertyQuery": {"x": 1}}),
        parse_market_event({"eventType": "SomethingNewEvent", "eventDate": date, "extra": 1}),
    ]
    proposal_event, rejected, rejected_bare, agreement_event, query, unknown = events
    assert isinstance(proposal_event, ProposalEvent)
    assert proposal_event.proposal.proposal_id == "R-4c0b1e"
    assert proposal_event.event_date == at(10, 0, 3)
    assert isinstance(rejected, ProposalRejectedEvent)
    assert (rejected.proposal_id, rejected.reason) == ("R-1", {"message": "no"})
    assert isinstance(rejected_bare, ProposalRejectedEvent)
    assert rejected_bare.reason is None
    assert isinstance(agreement_event, AgreementEvent)
    assert agreement_event.agreement.agreement_id == "a1b2c3"
    assert isinstance(query, PropertyQueryEvent)
    assert query.raw["propertyQuery"] == {"x": 1}
    assert isinstance(unknown, UnknownMarketEvent)
    assert unknown.event_type == "SomethingNewEvent"
    assert unknown.raw["extra"] == 1


def test_agreement_operation_events() -> None:
    terminated = AgreementOperationEvent.from_json(
        {
            "eventType": "AgreementTerminatedEvent",
            "eventDate": "2024-05-01T10:30:00Z",
            "agreementId": "a1b2c3",
            "terminator": "Requestor",
            "signature": "0xsig",
            "reason": {"message": "Finished", "golem.requestor.code": "Success"},
        }
    )
    assert terminated.event_type == "AgreementTerminatedEvent"
    assert terminated.terminator == "Requestor"
    assert terminated.reason == {"message": "Finished", "golem.requestor.code": "Success"}
    approved = AgreementOperationEvent.from_json(
        {"eventType": "AgreementApprovedEvent", "eventDate": "2024-05-01T10:00:05Z", "agreementId": "a1b2c3"}
    )
    assert (approved.agreement_id, approved.reason, approved.terminator) == ("a1b2c3", None, None)
    assert approved.event_date == at(10, 0, 5)


def test_allocation_amounts_are_exact_decimals() -> None:
    allocation = Allocation.from_json(
        {
            "allocationId": "alloc-1",
            "address": REQUESTOR,
            "paymentPlatform": "erc20-holesky-tglm",
            "totalAmount": "10.000000000000000001",
            "spentAmount": "0",
            "remainingAmount": 10,
            "timestamp": "2024-05-01T10:00:00Z",
            "timeout": "2024-05-02T10:00:00Z",
            "makeDeposit": False,
            "deposit": None,
        }
    )
    assert allocation.total_amount == Decimal("10.000000000000000001")
    assert allocation.spent_amount == Decimal(0)
    assert allocation.remaining_amount == Decimal(10)
    assert allocation.timeout == datetime(2024, 5, 2, 10, tzinfo=timezone.utc)
    assert allocation.make_deposit is False


def test_a_float_amount_is_read_through_its_shortest_repr() -> None:
    data = {**DEBIT_NOTE, "totalAmountDue": 0.1}
    assert DebitNote.from_json(data).total_amount_due == Decimal("0.1")


def test_debit_note() -> None:
    note = DebitNote.from_json(DEBIT_NOTE)
    assert note.debit_note_id == "dn-1"
    assert note.total_amount_due == Decimal("0.000123456789012345678")
    assert note.usage_counter_vector == (120.0, 33.0)
    assert note.previous_debit_note_id is None
    assert note.payment_due_date == at(10, 12, 0)
    assert note.timestamp == at(10, 2, 0)
    assert (note.agreement_id, note.activity_id, note.status) == ("a1b2c3", "act-1", "RECEIVED")


def test_invoice() -> None:
    invoice = Invoice.from_json(INVOICE)
    assert invoice.amount == Decimal("1.100000000000000001")
    assert invoice.activity_ids == ("act-1", "act-2")
    assert invoice.payment_due_date == datetime(2024, 5, 2, 11, tzinfo=timezone.utc)


def test_payment_events_of_both_kinds() -> None:
    debit = PaymentEvent.from_json(
        {"eventType": "DebitNoteReceivedEvent", "eventDate": "2024-05-01T10:02:00.5Z", "debitNoteId": "dn-1"}
    )
    invoice = PaymentEvent.from_json(
        {
            "eventType": "InvoiceRejectedEvent",
            "eventDate": "2024-05-01T11:00:00Z",
            "invoiceId": "inv-1",
            "rejection": {"rejectionReason": "BAD_SERVICE", "totalAmountAccepted": "0"},
        }
    )
    assert (debit.event_type, debit.document_id, debit.reason) == ("DebitNoteReceivedEvent", "dn-1", None)
    assert debit.event_date == at(10, 2, 0, 500000)
    assert (invoice.event_type, invoice.document_id) == ("InvoiceRejectedEvent", "inv-1")
    assert invoice.reason == {"rejectionReason": "BAD_SERVICE", "totalAmountAccepted": "0"}


def test_demand_decoration_turns_key_value_pairs_into_properties() -> None:
    decoration = DemandDecoration.from_json(
        {
            "properties": [
                {"key": "golem.com.payment.platform.erc20-holesky-tglm.address", "value": REQUESTOR},
                {"key": "golem.com.payment.protocol.version", "value": "3"},
            ],
            "constraints": [
                "(golem.com.payment.platform.erc20-holesky-tglm.address=*)",
                "(golem.com.payment.protocol.version>1)",
            ],
        }
    )
    assert decoration.properties == {
        "golem.com.payment.platform.erc20-holesky-tglm.address": REQUESTOR,
        "golem.com.payment.protocol.version": "3",
    }
    assert decoration.constraints[1] == "(golem.com.payment.protocol.version>1)"


def test_activity_state_and_usage() -> None:
    moving = ActivityState.from_json({"state": ["Initialized", "Deployed"]})
    assert (moving.state, moving.next_state) == ("Initialized", "Deployed")
    ended = ActivityState.from_json(
        {"state": ["Terminated", None], "reason": "destroyed", "errorMessage": "runtime exited"}
    )
    assert ended == ActivityState("Terminated", None, "destroyed", "runtime exited")
    usage = ActivityUsage.from_json({"currentUsage": [12.5, 3], "timestamp": 1714557600})
    assert usage == ActivityUsage((12.5, 3.0), 1714557600)
    assert ActivityUsage.from_json({"timestamp": 1714557600}).current_usage is None


def test_identity() -> None:
    me = Identity.from_json({"identity": REQUESTOR, "name": "requestor", "role": "manager"})
    assert me == Identity(REQUESTOR, "requestor", "manager")
    assert Identity.from_json({"identity": REQUESTOR}).name is None


@pytest.mark.parametrize(
    ("parse", "data", "words"),
    [
        (Proposal.from_json, without(PROPOSAL, "proposalId"), ["Proposal", "'proposalId'", "missing"]),
        (DebitNote.from_json, without(DEBIT_NOTE, "totalAmountDue"), ["DebitNote", "'totalAmountDue'"]),
        (Invoice.from_json, without(INVOICE, "paymentDueDate"), ["Invoice", "'paymentDueDate'"]),
        (
            Agreement.from_json,
            {**AGREEMENT, "offer": without(AGREEMENT["offer"], "providerId")},
            ["Agreement.offer", "'providerId'"],
        ),
        (Agreement.from_json, without(AGREEMENT, "demand"), ["Agreement", "'demand'"]),
        (ActivityUsage.from_json, {"currentUsage": []}, ["ActivityUsage", "'timestamp'"]),
        (parse_market_event, {"eventDate": "2024-05-01T10:00:00Z"}, ["MarketEvent", "'eventType'"]),
        (
            parse_market_event,
            {"eventType": "ProposalEvent", "eventDate": "2024-05-01T10:00:00Z"},
            ["ProposalEvent", "'proposal'"],
        ),
        (
            PaymentEvent.from_json,
            {"eventType": "DebitNoteReceivedEvent", "eventDate": "2024-05-01T10:00:00Z"},
            ["PaymentEvent", "'debitNoteId'", "'invoiceId'"],
        ),
    ],
)
def test_a_missing_field_is_named(parse: Any, data: Any, words: list[str]) -> None:
    with pytest.raises(ValueError, match="missing") as info:
        parse(data)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    ("parse", "data", "words"),
    [
        (Proposal.from_json, {**PROPOSAL, "timestamp": "yesterday"}, ["'timestamp'", "RFC 3339", "'yesterday'"]),
        (Invoice.from_json, {**INVOICE, "amount": "1,5"}, ["'amount'", "decimal", "'1,5'"]),
        (Invoice.from_json, {**INVOICE, "amount": "NaN"}, ["'amount'", "decimal"]),
        (Proposal.from_json, {**PROPOSAL, "properties": []}, ["'properties'", "object"]),
        (DebitNote.from_json, {**DEBIT_NOTE, "usageCounterVector": ["x"]}, ["'usageCounterVector'"]),
        (ActivityState.from_json, {"state": "Ready"}, ["ActivityState", "'state'"]),
        (Allocation.from_json, ["not", "an", "object"], ["Allocation", "JSON object"]),
    ],
)
def test_a_field_of_the_wrong_shape_is_named(parse: Any, data: Any, words: list[str]) -> None:
    with pytest.raises(ValueError, match=r"should be|expected") as info:
        parse(data)
    for word in words:
        assert word in str(info.value)


def test_a_results_list_leaves_out_unparsed_the_commands_before_since() -> None:
    from golem_api._rest.activity import _before
    from golem_api._rest.models import ExeScriptCommandResult
    from golem_api._rest.models._fields import parse_list

    answer = [{"index": 0, "eventDate": "2026-01-01T00:00:00Z", "result": "Ok", "stdout": "a"}]
    answer += [{"index": 1, "broken": "never parsed"}]  # parsing it would fail: it must be skipped
    answer += [{"index": 2, "eventDate": "2026-01-01T00:00:01Z", "result": "Ok", "stdout": "c"}]
    assert _before(0) is None
    parsed = parse_list(ExeScriptCommandResult.from_json, skip=_before(2))(answer)
    assert [(item.index, item.stdout) for item in parsed] == [(2, "c")]
