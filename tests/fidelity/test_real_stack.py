"""The real stack, end to end: golem-api's ``Golem`` pays our REST-driven provider on a real local chain.

The stack (``tests/fidelity/realstack/``): anvil as chain 17000 (holesky's id), our ERC-20 token minted to the
requestor, and two real yagna 0.17.6 daemons talking offline in central-net mode, each paying and paid on
``erc20-holesky-tglm`` through anvil.

The provider is the local network's own provider code, :class:`~golem_local.provider_rest.RestProvider`: the
same ``LocalProvider`` negotiation and ``ActivityHub`` billing as the local network's providers, speaking the
provider daemon's REST API as a real provider agent does (offers, counters, approval, agreement events,
activity events answered with ``PUT …/state``, debit notes, invoices).

The requestor is golem-api's ``Golem`` pointed at the requestor daemon with its app key and URL, as with
``YAGNA_APPKEY``. What the test covers:

* market: the demand meets the provider's offer, the provider counters, ``Demand.agreement`` creates and
  confirms an agreement, the provider approves it; the agreement's ``demandId`` on the daemon is the demand's
  subscription id (and its ``offerId`` the offer's);
* activity, as far as the wheel allows: it ships no exe-unit, so no command can run. The provider answers the
  daemon's ``CreateActivity`` (the hub creates, meters and later bills the activity) and reports it
  ``Initialized``, so ``Agreement.create_activity`` returns an activity whose state the requestor reads; the
  activity costs the start price plus the seconds it lives. Destroying it (on ``terminate``) makes the provider
  issue its last debit note, which golem-api checks and accepts;
* payment: the agreement ends, the provider invoices the activity's final amount, golem-api's ``PaymentManager``
  accepts the invoice exactly once (also as the provider's daemon sees it), ``Golem`` exits (the allocation is
  released), ``yagna payment process now`` runs the requestor's payment cycle, the provider's daemon reports the
  invoice ``SETTLED``, and ``balanceOf(provider)`` on the chain grew by exactly the invoiced amount.

Figures (seconds per phase, amounts, transactions) are printed (``pytest -s``); ``docs/fidelity.md`` holds a run's.
A second test compiles the token's source with solcjs and checks it matches the committed bytecode.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from golem_api import Golem
from golem_api.events import (
    ActivityCreated,
    AgreementConfirmed,
    DebitNoteAccepted,
    DocumentRefused,
    Event,
    InvoiceAccepted,
    InvoiceReceived,
    ProposalRejectedByProvider,
)
from golem_api.payload import VmPayload
from golem_local.config import ProviderSpec
from golem_local.provider_rest import RestProvider
from golem_shared.timestamps import format_timestamp, utc_now
from tests.fidelity.realstack.stack import (
    BUILD,
    PLATFORM,
    WEI,
    Daemon,
    Processes,
    RealStack,
    StackError,
    compile_token,
    payments_config,
    start_stack,
    token_bytecode,
)

pytestmark = pytest.mark.slow

SUBNET = "realstack"
MARKET_TIMEOUT = 30.0  # seconds for an agreement (about 0.5 s here)
DOCUMENT_TIMEOUT = 30.0  # seconds for the invoice to arrive and be accepted (about 1 s)
SETTLE_TIMEOUT = 60.0  # seconds for the payment to be on chain and settled (about 2 s with `process now`)

E = TypeVar("E", bound=Event)


class Phases:
    """Wall-clock seconds of the test's phases, printed as they end."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        began = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = time.monotonic() - began
            print(f"[{time.monotonic() - self.started:6.2f} s] {name}: {self.seconds[name]:.2f} s")


class Recorder:
    """Every event of the bus, and a bounded wait for the first that matches."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._arrived = asyncio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._arrived.set()

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    async def first(self, kind: type[E], predicate: Callable[[E], bool], timeout: float) -> E:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            found = [e for e in self.of(kind) if predicate(e)]
            if found:
                return found[0]
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                seen = [type(e).__name__ for e in self.events]
                raise AssertionError(f"no {kind.__name__} within {timeout:g} s; events so far: {seen}")
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)


async def daemon_call(
    session: aiohttp.ClientSession,
    daemon: Daemon,
    path: str,
    *,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Any:
    """``GET path`` on a daemon with its own app key; the decoded JSON (the test's own look, not golem-api's)."""
    async with session.get(
        daemon.url + path,
        params=params,
        headers={"Authorization": f"Bearer {daemon.app_key}", **(headers or {})},
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as response:
        assert response.status == 200, f"{daemon.name}: GET {path} answered {response.status}: {await response.text()}"
        return await response.json()


async def settled_on_provider(
    session: aiohttp.ClientSession, daemon: Daemon, invoice_id: str, since: str, timeout: float
) -> list[dict[str, Any]]:
    """Long-poll the provider daemon's invoice events until the invoice's ``InvoiceSettledEvent``; all its events."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"the provider's daemon did not report invoice {invoice_id} settled within {timeout:g} s"
        events = await daemon_call(
            session,
            daemon,
            "/payment-api/v1/invoiceEvents",
            params={"afterTimestamp": since, "timeout": f"{min(left, 5.0):.1f}"},
            timeout=min(left, 5.0) + 10,
        )
        mine = [e for e in events if e.get("invoiceId") == invoice_id]
        if any(e["eventType"] == "InvoiceSettledEvent" for e in mine):
            return mine


async def test_golem_pays_our_rest_driven_provider_on_a_local_chain(real_stack: RealStack) -> None:
    stack, chain = real_stack, real_stack.chain
    phases = Phases()
    print(f"\nstack: {stack.yagna_version}, {stack.anvil_version}, token {stack.token} ({stack.token_source})")
    print("stack start: " + ", ".join(f"{k} {v:.2f} s" for k, v in stack.timings.items()))
    spec = ProviderSpec(name="realstack-provider", subnet=SUBNET, debit_note_interval_sec=60, cpu_threads=1)
    recorder = Recorder()
    provider_address = stack.provider.identity
    since = format_timestamp(utc_now() - timedelta(seconds=1))

    async with aiohttp.ClientSession() as session:
        with phases.phase("provider: offer published over REST"):
            provider = RestProvider(stack.provider.url, stack.provider.app_key, spec, payment_platform=PLATFORM)
            await provider.start()
        try:
            assert provider.node_id == provider_address
            assert provider.provider is not None
            offer_id = provider.provider.offer_id
            balance_before = chain.balance_of(stack.token, provider_address)

            golem = Golem(
                budget="0.5",
                app_key=stack.requestor.app_key,
                api_url=stack.requestor.url,
                payment_network="holesky",
                payment_driver="erc20",
                subnet_tag=SUBNET,
                invoice_timeout=DOCUMENT_TIMEOUT,
            )
            golem.subscribe(recorder)
            with phases.phase("requestor: Golem started (allocation)"):
                await golem.start()
            try:
                with phases.phase("market: demand -> approved agreement"):
                    demand = await golem.create_demand(VmPayload())
                    agreement = await demand.agreement(timeout=MARKET_TIMEOUT)
                demand_id = demand.subscription_id
                assert recorder.of(AgreementConfirmed)[0].provider_name == "realstack-provider"
                on_daemon = await daemon_call(
                    session, stack.requestor, f"/market-api/v1/agreements/{agreement.agreement_id}"
                )
                assert on_daemon["state"] == "Approved"
                assert on_daemon["demand"]["demandId"] == demand_id  # the local node must mirror this
                assert on_daemon["offer"]["offerId"] == offer_id

                with phases.phase("activity: created (the provider answers CreateActivity)"):
                    activity = await agreement.create_activity()
                    state = await activity.state()
                assert (state.state, state.next_state) == ("Initialized", None)
                assert provider.hub is not None
                assert [a.activity_id for a in provider.hub.activities(agreement.agreement_id)] == [
                    activity.activity_id
                ]

                with phases.phase("activity destroyed: its last debit note accepted"):
                    await activity.destroy()
                    # The daemon reports no usage (no exe-unit sets it), so golem-api checks the invoice against
                    # the debit notes it accepted: the test lets the last one be accepted before the invoice comes.
                    note = await recorder.first(
                        DebitNoteAccepted, lambda e: e.activity_id == activity.activity_id, DOCUMENT_TIMEOUT
                    )
                with phases.phase("agreement terminated"):
                    await agreement.terminate()
                with phases.phase("invoice: issued by the provider, accepted by golem-api"):
                    accepted = await recorder.first(
                        InvoiceAccepted, lambda e: e.agreement_id == agreement.agreement_id, DOCUMENT_TIMEOUT
                    )
            finally:
                with phases.phase("requestor: Golem exits (allocation released)"):
                    await golem.aclose()

            with phases.phase("payment: process now -> on chain -> provider daemon SETTLED"):
                await asyncio.to_thread(
                    stack.requestor.cli, "payment", "process", "now", "--network", "holesky", "--driver", "erc20"
                )
                provider_events = await settled_on_provider(
                    session, stack.provider, accepted.invoice_id, since, SETTLE_TIMEOUT
                )
            provider_invoice = await daemon_call(
                session, stack.provider, f"/payment-api/v1/invoices/{accepted.invoice_id}"
            )
            requestor_invoice = await daemon_call(
                session, stack.requestor, f"/payment-api/v1/invoices/{accepted.invoice_id}"
            )
            payments = await daemon_call(
                session, stack.provider, "/payment-api/v1/payments", params={"afterTimestamp": since}
            )
            # What the requestor's daemon shows of the invoice: Received (and Cancelled) only, unless asked for more
            # with X-Requestor-Events (the local node filters the same way; golem-js relies on it).
            requestor_kinds: dict[str, list[str]] = {}
            for label, headers in (("default", {}), ("asked", {"X-Requestor-Events": "RECEIVED,ACCEPTED,SETTLED"})):
                events = await daemon_call(
                    session,
                    stack.requestor,
                    "/payment-api/v1/invoiceEvents",
                    params={"afterTimestamp": since, "timeout": "0"},
                    headers=headers,
                )
                requestor_kinds[label] = [e["eventType"] for e in events if e.get("invoiceId") == accepted.invoice_id]
        finally:
            await provider.aclose()

    # What the provider issued, in order: the activity's last debit note, then the agreement's invoice.
    issued = [(d.kind, d.document_id, d.amount, d.sent, d.error) for d in provider.payments.issued]
    assert [(kind, sent, error) for kind, _, _, sent, error in issued] == [
        ("debit note", True, None),
        ("invoice", True, None),
    ], issued
    (_, note_id, note_amount, _, _), (_, invoice_id, invoice_amount, _, _) = issued
    assert invoice_id == accepted.invoice_id
    assert invoice_amount == note_amount == accepted.amount
    assert invoice_amount >= spec.start_price  # the start price, plus the seconds the activity lived
    assert provider.provider.offer_id != offer_id  # once billed, the provider offers again

    # golem-api accepted each document once, and refused none.
    assert [e.invoice_id for e in recorder.of(InvoiceReceived)] == [invoice_id]
    assert [e.invoice_id for e in recorder.of(InvoiceAccepted)] == [invoice_id]
    assert [e.debit_note_id for e in recorder.of(DebitNoteAccepted)] == [note_id] == [note.debit_note_id]
    assert recorder.of(DocumentRefused) == []
    assert [e.activity_id for e in recorder.of(ActivityCreated)] == [activity.activity_id]
    # ... and so the provider's daemon saw it: one acceptance, then the settlement.
    assert [e["eventType"] for e in provider_events] == ["InvoiceAcceptedEvent", "InvoiceSettledEvent"]
    assert requestor_kinds["default"] == ["InvoiceReceivedEvent"]
    assert requestor_kinds["asked"][:2] == ["InvoiceReceivedEvent", "InvoiceAcceptedEvent"], requestor_kinds
    assert provider_invoice["status"] == "SETTLED"
    assert requestor_invoice["status"] in ("ACCEPTED", "SETTLED")
    assert Decimal(provider_invoice["amount"]) == invoice_amount

    # The chain: the provider's token balance grew by exactly the invoiced amount.
    balance_after = chain.balance_of(stack.token, provider_address)
    invoiced_wei = int(invoice_amount * WEI)
    transfers = chain.transfers_to(stack.token, provider_address)
    assert balance_after - balance_before == invoiced_wei, (balance_before, balance_after, invoiced_wei, transfers)
    assert sum(t["value"] for t in transfers) == invoiced_wei
    assert {t["from"] for t in transfers} == {stack.requestor.identity.lower()}
    paid = sum(Decimal(p["amount"]) for p in payments)
    assert paid == invoice_amount, payments
    # The provider daemon's payments name their transactions: ``details`` is the tx hash, base64.
    assert {"0x" + base64.b64decode(p["details"]).hex() for p in payments} == {t["tx"] for t in transfers}
    for daemon in (stack.requestor, stack.provider):
        assert daemon.panics() == [], f"{daemon.name} panicked; see {daemon.log_path}"

    print(f"agreement {agreement.agreement_id} (demand {demand_id})")
    print(f"debit note {note_id}: {note_amount} tGLM; invoice {invoice_id}: {invoice_amount} tGLM")
    print(f"provider balance: {balance_before} -> {balance_after} wei (+{balance_after - balance_before})")
    for transfer in transfers:
        print(f"transfer {transfer['tx']} (block {transfer['block']}): {transfer['value']} wei")
    print(f"deploy tx {stack.transactions['deploy']}, mint tx {stack.transactions['mint']}")
    print(f"the test after the stack's start: {time.monotonic() - phases.started:.2f} s")


async def test_a_busy_rest_provider_refuses_over_rest_then_offers_again(real_stack: RealStack) -> None:
    """The provider's refusals and its fresh offer, on the real daemons: while it serves one agreement it rejects
    a second demand's counter-proposal (golem-api hears why); once that agreement has ended and been invoiced
    (nothing ran: an invoice of 0, as on the local network) it publishes a fresh offer, which the second demand
    turns into an agreement of its own, matched by the provider to its counter-proposal by content."""
    stack = real_stack
    spec = ProviderSpec(name="busy-provider", subnet=SUBNET, debit_note_interval_sec=60, cpu_threads=1)
    recorder = Recorder()
    async with RestProvider(stack.provider.url, stack.provider.app_key, spec, payment_platform=PLATFORM) as provider:
        assert provider.provider is not None
        first_offer = provider.provider.offer_id
        async with Golem(
            budget="0.1",
            app_key=stack.requestor.app_key,
            api_url=stack.requestor.url,
            payment_network="holesky",
            payment_driver="erc20",
            subnet_tag=SUBNET,
            invoice_timeout=DOCUMENT_TIMEOUT,
        ) as golem:
            golem.subscribe(recorder)
            first = await golem.create_demand(VmPayload())
            serving = await first.agreement(timeout=MARKET_TIMEOUT)
            second = await golem.create_demand(VmPayload())
            refused = await recorder.first(ProposalRejectedByProvider, lambda e: True, MARKET_TIMEOUT)
            assert refused.provider_name == "busy-provider"
            assert refused.reason == f"busy: already serving agreement {serving.agreement_id}"

            await serving.terminate()
            await recorder.first(InvoiceAccepted, lambda e: e.agreement_id == serving.agreement_id, DOCUMENT_TIMEOUT)
            again = await second.agreement(timeout=MARKET_TIMEOUT)
            assert provider.provider.offer_id != first_offer
            assert provider.provider.agreement_id == again.agreement_id
            await again.terminate()
            await recorder.first(InvoiceAccepted, lambda e: e.agreement_id == again.agreement_id, DOCUMENT_TIMEOUT)
    accepted = recorder.of(InvoiceAccepted)
    assert sorted(e.agreement_id for e in accepted) == sorted([serving.agreement_id, again.agreement_id])
    assert [e.amount for e in accepted] == [Decimal(0), Decimal(0)]
    assert [(d.kind, d.amount, d.sent) for d in provider.payments.issued] == [("invoice", Decimal(0), True)] * 2
    assert recorder.of(DocumentRefused) == []


def test_the_token_source_compiles_to_the_committed_bytecode() -> None:
    """The committed ``build/`` bytecode is what solcjs makes of ``TestGLM.sol`` (so CI may skip compiling)."""
    code, source = token_bytecode()
    assert source == "cached", f"no bytecode committed in {BUILD} for the current TestGLM.sol"
    with tempfile.TemporaryDirectory() as out:
        assert compile_token(Path(out)) == code


def test_a_payment_config_the_daemons_cannot_load_fails_the_start_with_their_own_line(tmp_path: Path) -> None:
    """yagna falls back to the public holesky RPC, silently but for one log line, when ``config-payments.toml``
    does not load (here a required key is missing); the stack does not start on that fallback.

    A daemon on that fallback does not finish its graceful shutdown within 10 s (its erc20 driver keeps
    resolving the public RPC's DNS entries), so it gets one second before SIGKILL."""

    def without_chain_id(rpc_url: str, token: str) -> str:
        return payments_config(rpc_url, token).replace("chain-id = 17000\n", "")

    processes = Processes()
    try:
        with pytest.raises(StackError, match=r"failed while starting: .*Config file found but failed to load"):
            start_stack(tmp_path, processes, config=without_chain_id)
    finally:
        processes.stop_all(grace=1.0)
