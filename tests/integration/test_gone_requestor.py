"""A requestor that disappears does not block its provider: local providers announce and enforce the debit-note
acceptance timeout and the payment timeout, as real ones do, then terminate the agreement and offer again.

A real requestor process holding the only provider's agreement (with an activity that bills every second) is
killed with SIGKILL; a new requestor then gets an agreement from that provider within seconds. The node runs in
this process with short timeouts set through ``ProviderSpec``. Synchronised on the processes' output and on the
market's events; the time to the new agreement is the assertion.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from golem_api.golem import Golem
from golem_api.payload import VmPayload
from golem_local.config import LocalNetworkConfig, ProviderSpec
from golem_local.market_model import AgreementState
from golem_local.node import LocalNode
from golem_local.provider import DEBIT_NOTE_ACCEPT_TIMEOUT, PAYMENT_TIMEOUT
from tests.processes import holding_requestor

pytestmark = pytest.mark.integration

_SHORT = 2  # seconds: the timeout that ends the agreement (the other is a minute)


@pytest.fixture(params=[DEBIT_NOTE_ACCEPT_TIMEOUT, pytest.param(PAYMENT_TIMEOUT, marks=pytest.mark.slow)])
async def node(request: pytest.FixtureRequest) -> AsyncIterator[LocalNode]:
    short = request.param == DEBIT_NOTE_ACCEPT_TIMEOUT
    solo = ProviderSpec(
        name="solo",
        debit_note_interval_sec=1,
        debit_note_accept_timeout_sec=_SHORT if short else 60,
        payment_timeout_sec=60 if short else _SHORT,
    )
    async with LocalNode(LocalNetworkConfig(providers=[solo], activity_runtime="idle")) as running:
        yield running


async def test_a_provider_whose_requestor_was_killed_is_free_again_within_seconds(node: LocalNode) -> None:
    (provider,) = node.providers
    offer = provider.offer_properties(0)
    timeouts = {key: offer[key] for key in (DEBIT_NOTE_ACCEPT_TIMEOUT, PAYMENT_TIMEOUT)}
    assert sorted(timeouts.values()) == [_SHORT, 60], "both are announced in the offer"
    (key,) = [key for key, value in timeouts.items() if value == _SHORT]
    async with holding_requestor(node.app_key, node.url, bound=60) as old:
        assert provider.agreement_id == old
    killed_at = time.monotonic()  # SIGKILLed: it accepts no more debit notes, and ends nothing

    async with Golem(budget=1, app_key=node.app_key, api_url=node.url) as golem:
        demand = await golem.create_demand(VmPayload(min_mem_gib=0.5, min_storage_gib=1.0))
        agreement = await demand.agreement(timeout=_SHORT + 15)
        waited = time.monotonic() - killed_at

    print(f"\nthe provider served a new requestor {waited:.2f} s after the old one was killed")
    assert agreement.provider_id == provider.node_id
    assert waited < _SHORT + 4
    ended = node.market.get_agreement(old)
    assert ended.state is AgreementState.TERMINATED
    assert ended.terminator == "Provider"
    assert ended.reason is not None
    assert key in ended.reason["message"]
    what = "accepted" if key == DEBIT_NOTE_ACCEPT_TIMEOUT else "paid"
    assert f"not {what} within {_SHORT} s" in ended.reason["message"]
    old_invoices = [i for i in node.ledger.invoices() if i.agreement_id == old]
    assert len(old_invoices) == 1, "the provider invoiced the agreement it ended"
