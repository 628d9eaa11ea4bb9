"""The real yagna daemon as an oracle: the same request sequence to it and to the local node, answer by answer.

Both nodes get the same calls (raw aiohttp, each with its own app key) and every answer is reduced to its
status code and its *shape*: the key sets and JSON types of the body, plus the values of a few keys whose
value is part of the contract (``state``, ``eventType``, ``role``). Ids, timestamps and property values are
not compared. Every step whose (status, shape) differs must be listed in :data:`KNOWN_DIFFERENCES` with the
reason, and the test asserts that the listed ones are exactly the ones that differ, so a new difference (a
regression of the local node, or a new daemon) fails the test and an obsolete entry fails it too.

Beside the shapes, a few *meanings* are compared as values (:attr:`Target.facts`, equal on both): ``/version/get``
answers without an app key with a version golem-js accepts (>= 0.15.2); an Initial proposal has no
``prevProposalId`` and the requestor's counter-proposal names the proposal it answers; the payment event routes
take ``X-Requestor-Events``, ``X-Provider-Events`` and ``?appSessionId=``. The agreement's ``demandId``/``offerId``
(the subscriptions) and the payment event kinds each side sees need an agreement, which an offline daemon cannot
make: ``test_real_stack.py`` checks them on two real daemons, ``tests/integration`` on the local node.

The daemon runs offline (see ``conftest.py``): its market still matches a demand and an offer of two
identities of the same node (the requestor receives the ``Initial`` proposal), but whatever must reach the
other party through the network layer (a counter-proposal's delivery, a rejection) cannot be delivered.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from golem_local.node import LocalNode
from tests.fidelity.conftest import YagnaDaemon

M = "/market-api/v1"
P = "/payment-api/v1"
G = "/gsb-api/v1"
N = "/net-api/v1"
PLATFORM = "erc20-holesky-tglm"

# Well-formed ids (the daemon's formats) that no node has issued: unknown, not malformed.
UNKNOWN_SUBSCRIPTION = "0" * 32 + "-" + "0" * 64
UNKNOWN_PROPOSAL = "R-" + "0" * 64
UNKNOWN_AGREEMENT = "0" * 64
UNKNOWN_ALLOCATION = "00000000-0000-0000-0000-000000000000"
UNKNOWN_NETWORK = "0123456789abcdef0123456789abcdef"
MALFORMED_JSON = "{not json"

# Keys whose value (not only its type) is part of the contract.
VALUE_KEYS = frozenset({"eventType", "role", "state"})
# Keys whose value is an open map (offer and demand properties differ between providers): compared as "map".
OPAQUE_KEYS = frozenset({"properties"})

#: step → (daemon status, local status, reason): the deliberate or unavoidable differences, and only those.
KNOWN_DIFFERENCES: dict[str, tuple[int, int, str]] = {
    "events after counter": (
        200,
        200,
        "offline daemon: the counter goes to the provider over the network, which is closed here, so no Draft "
        "comes back ([] at the timeout); the local provider answers with its Draft at once",
    ),
    "reject proposal": (
        500,
        204,
        "offline daemon: a rejection is sent to the provider over the network; here it fails after the net's "
        "3 s timeout (the proposal is marked Rejected all the same); the local node answers 204 as the daemon "
        "does online",
    ),
    "reject unknown proposal": (
        500,
        404,
        "daemon bug: reject answers 500 for an unknown proposal where get and counter answer 404; the local "
        "node answers 404 for all three",
    ),
    "malformed subscription id": (
        400,
        404,
        "the daemon parses ids (subscription `<32 hex>-<64 hex>`) and answers 400 for a malformed one; local "
        "ids are opaque tokens of another format, so any id it did not issue is unknown: 404",
    ),
    "malformed proposal id": (400, 404, "as for subscription ids: the local node does not parse proposal ids"),
    "malformed agreement id": (400, 404, "as for subscription ids: the local node does not parse agreement ids"),
    "missing app key": (
        401,
        401,
        "the daemon's 401 body is plain text ('Missing application key'); the local node answers the spec's "
        "JSON ErrorMessage, which clients (golem-api, yapapi) read either way",
    ),
    "wrong app key": (401, 401, "as for a missing key: plain text from the daemon, JSON ErrorMessage locally"),
    "missing app key (market)": (401, 401, "as for /me"),
    "create allocation": (
        500,
        201,
        "offline daemon: its erc20 driver checks the balance on chain, which it cannot reach here; the local "
        "ledger funds the requestor and answers the Allocation",
    ),
    "unknown allocation": (
        404,
        404,
        'the daemon answers {"message": null}; the local node says which allocation it does not know',
    ),
    "malformed JSON (allocation)": (
        400,
        400,
        "the payment API of the daemon answers this 400 as plain text (the market API as JSON); the local node "
        "answers JSON ErrorMessage on every API, as the spec says",
    ),
    "malformed JSON (GSB)": (400, 400, "as for the payment API: plain text from the daemon, JSON ErrorMessage locally"),
}


def shape(value: Any, key: str | None = None) -> Any:
    """The comparable skeleton of a decoded JSON value: types and key sets, values only for ``VALUE_KEYS``."""
    if key in OPAQUE_KEYS and isinstance(value, dict):
        return "map"
    if isinstance(value, dict):
        return {k: shape(v, k) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return sorted({json.dumps(shape(item), sort_keys=True) for item in value})
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return f"str:{value}" if key in VALUE_KEYS else "str"
    return "null"


@dataclass(frozen=True)
class Answer:
    """One response reduced to what is compared."""

    status: int
    shape: Any


@dataclass
class Target:
    """A node under test: its REST root, the requestor's and the offering identity's app keys, its node id."""

    name: str
    url: str
    app_key: str
    offer_key: str
    identity: str
    answers: dict[str, Answer] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    session: aiohttp.ClientSession | None = None

    async def call(
        self,
        step: str | None,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: str | None = None,
        key: str | None = "requestor",
        headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> Any:
        """Send one request, record its ``Answer`` under ``step`` (unless None); the decoded body (text if not JSON)."""
        assert self.session is not None
        keys = {"requestor": self.app_key, "offer": self.offer_key}
        token = keys.get(key, key) if key is not None else None
        sent = {"Authorization": f"Bearer {token}"} if token is not None else {}
        sent.update(headers or {})
        kwargs: dict[str, Any] = {"params": {k: str(v) for k, v in params.items()}, "headers": sent}
        if raw is not None:
            kwargs["data"] = raw
            sent["Content-Type"] = "application/json"
        elif body is not None:
            kwargs["json"] = body
        async with self.session.request(method, self.url + path, **kwargs) as response:
            text = await response.text()
            try:
                decoded = json.loads(text) if text else None
                answer_shape = shape(decoded)
            except ValueError:
                decoded, answer_shape = text, "text"
            if step is not None:
                assert step not in self.answers, f"step names must be unique: {step!r}"
                self.answers[step] = Answer(response.status, answer_shape)
            return decoded


def demand(target: Target) -> dict[str, Any]:
    """A demand every offer of the run matches: the local providers' and the daemon's provider identity's."""
    return {
        "properties": {
            "golem.srv.comp.expiration": int((time.time() + 1800) * 1000),
            "golem.node.debug.subnet": "public",
            f"golem.com.payment.platform.{PLATFORM}.address": target.identity,
            "golem.com.payment.protocol.version": "3",
        },
        "constraints": "(&(golem.node.debug.subnet=public)(golem.runtime.name=vm))",
    }


def counter(target: Target) -> dict[str, Any]:
    """The demand again with the chosen payment platform, as a requestor counters."""
    body = demand(target)
    body["properties"]["golem.com.payment.chosen-platform"] = PLATFORM
    return body


def offer(target: Target) -> dict[str, Any]:
    """An offer like a local provider's, published on the daemon by its provider identity."""
    return {
        "properties": {
            "golem.srv.comp.expiration": int((time.time() + 1800) * 1000),
            "golem.node.debug.subnet": "public",
            "golem.runtime.name": "vm",
            "golem.inf.mem.gib": 4.0,
            "golem.com.scheme": "payu",
            "golem.com.pricing.model": "linear",
            "golem.com.usage.vector": ["golem.usage.duration_sec", "golem.usage.cpu_sec"],
            "golem.com.pricing.model.linear.coeffs": [0.0001, 0.0002, 0.0],
        },
        "constraints": "(golem.node.debug.subnet=public)",
    }


async def initial_proposals(target: Target, sub_id: str, want: int) -> list[dict[str, Any]]:
    """Collect ``want`` Initial proposals (bounded: each long-poll waits 5 s at most, three polls at most).

    Only the first poll is compared: how the proposals spread over polls is timing, not contract.
    """
    proposals: list[dict[str, Any]] = []
    for attempt in range(3):
        step = "collect initial proposals" if attempt == 0 else None
        events = await target.call(step, "GET", f"{M}/demands/{sub_id}/events", timeout=5, maxEvents=10)
        proposals += [e["proposal"] for e in events if e.get("eventType") == "ProposalEvent"]
        if len(proposals) >= want:
            return proposals
    raise AssertionError(f"{target.name}: {len(proposals)} Initial proposals came, {want} were expected")


async def run_sequence(target: Target) -> dict[str, Answer]:
    """The compared request sequence; each step is named as in the docs' table (docs/fidelity.md)."""
    await target.call("me", "GET", "/me")
    version = await target.call("version (no app key)", "GET", "/version/get", key=None)
    target.facts["version: golem-js accepts it (>= 0.15.2) without an app key"] = _new_enough(version)
    # The market: subscriptions, the Initial proposals, counter, reject, agreement from an Initial proposal.
    offer_ids = [
        await target.call("subscribe offer", "POST", f"{M}/offers", offer(target), key="offer"),
        await target.call("subscribe second offer", "POST", f"{M}/offers", offer(target), key="offer"),
    ]
    sub_id = await target.call("subscribe demand", "POST", f"{M}/demands", demand(target))
    await target.call("list demands", "GET", f"{M}/demands")
    first, second, *_ = await initial_proposals(target, sub_id, want=2)
    assert first["state"] == second["state"] == "Initial"
    first_path = f"{M}/demands/{sub_id}/proposals/{first['proposalId']}"
    await target.call("get proposal", "GET", first_path)
    valid_to = "2099-01-01T00:00:00Z"
    await target.call(
        "agreement from Initial proposal",
        "POST",
        f"{M}/agreements",
        {"proposalId": first["proposalId"], "validTo": valid_to},
    )
    counter_id = await target.call("counter proposal", "POST", first_path, counter(target))
    target.facts["Initial proposal: no prevProposalId"] = first.get("prevProposalId") is None
    own = await target.call("get own counter proposal", "GET", f"{M}/demands/{sub_id}/proposals/{counter_id}")
    if isinstance(own, dict):
        target.facts["own counter: prevProposalId is the Initial proposal"] = (
            own.get("prevProposalId") == first["proposalId"]
        )
        target.facts["own counter: issued by the requestor"] = own.get("issuerId") == target.identity
    await target.call("counter proposal twice", "POST", first_path, counter(target))
    await target.call("events after counter", "GET", f"{M}/demands/{sub_id}/events", timeout=1, maxEvents=10)
    second_path = f"{M}/demands/{sub_id}/proposals/{second['proposalId']}"
    await target.call("reject proposal", "POST", f"{second_path}/reject", {"message": "not this one"})
    await target.call("get rejected proposal", "GET", second_path)
    # Unknown (well-formed) and malformed ids.
    await target.call("unknown subscription events", "GET", f"{M}/demands/{UNKNOWN_SUBSCRIPTION}/events", timeout=0.1)
    unknown_path = f"{M}/demands/{sub_id}/proposals/{UNKNOWN_PROPOSAL}"
    await target.call("get unknown proposal", "GET", unknown_path)
    await target.call("counter unknown proposal", "POST", unknown_path, demand(target))
    await target.call("reject unknown proposal", "POST", f"{unknown_path}/reject", {"message": "x"})
    await target.call("get unknown agreement", "GET", f"{M}/agreements/{UNKNOWN_AGREEMENT}")
    await target.call("confirm unknown agreement", "POST", f"{M}/agreements/{UNKNOWN_AGREEMENT}/confirm")
    await target.call(
        "agreement from unknown proposal",
        "POST",
        f"{M}/agreements",
        {"proposalId": UNKNOWN_PROPOSAL, "validTo": valid_to},
    )
    await target.call("malformed subscription id", "GET", f"{M}/demands/nope/events", timeout=0.1)
    await target.call("malformed proposal id", "GET", f"{M}/demands/{sub_id}/proposals/nope")
    await target.call("malformed agreement id", "GET", f"{M}/agreements/nope")
    # Malformed JSON bodies.
    await target.call("malformed JSON (demand)", "POST", f"{M}/demands", raw=MALFORMED_JSON)
    await target.call("malformed JSON (counter)", "POST", first_path, raw=MALFORMED_JSON)
    await target.call("malformed JSON (agreement)", "POST", f"{M}/agreements", raw=MALFORMED_JSON)
    await target.call("malformed JSON (allocation)", "POST", f"{P}/allocations", raw=MALFORMED_JSON)
    # App keys.
    await target.call("missing app key", "GET", "/me", key=None)
    await target.call("wrong app key", "GET", "/me", key="not-the-app-key")
    await target.call("missing app key (market)", "GET", f"{M}/demands", key=None)
    await target.call("agreement events (empty)", "GET", f"{M}/agreementEvents", timeout=0.5)
    # Payments.
    await target.call("list allocations", "GET", f"{P}/allocations")
    await target.call("unknown allocation", "GET", f"{P}/allocations/{UNKNOWN_ALLOCATION}")
    allocation = {"paymentPlatform": PLATFORM, "totalAmount": "1", "makeDeposit": False}
    await target.call("create allocation", "POST", f"{P}/allocations", allocation)
    await target.call("debit-note events (empty)", "GET", f"{P}/debitNoteEvents", timeout=0.5)
    await target.call("invoice events (empty)", "GET", f"{P}/invoiceEvents", timeout=0.5)
    wide = {"X-Requestor-Events": "RECEIVED,ACCEPTED,REJECTED,CANCELLED,SETTLED"}
    await target.call("invoice events (X-Requestor-Events)", "GET", f"{P}/invoiceEvents", timeout=0, headers=wide)
    provider_side = {"X-Provider-Events": "ACCEPTED,SETTLED"}
    await target.call(
        "debit-note events (X-Provider-Events)", "GET", f"{P}/debitNoteEvents", timeout=0, headers=provider_side
    )
    await target.call("invoice events (appSessionId)", "GET", f"{P}/invoiceEvents", timeout=0, appSessionId="x")
    # GSB services.
    listen = {"listen": {"on": f"/public/gftp/fidelity-{target.name}", "components": ["GetMetadata", "GetChunk"]}}
    bound = await target.call("bind GSB services", "POST", f"{G}/services", listen)
    await target.call("bind GSB services twice", "POST", f"{G}/services", listen)
    await target.call("malformed JSON (GSB)", "POST", f"{G}/services", raw=MALFORMED_JSON)
    services_id = bound["servicesId"] if isinstance(bound, dict) else "none"
    await target.call("unbind GSB services", "DELETE", f"{G}/services/{services_id}")
    await target.call("unbind GSB services twice", "DELETE", f"{G}/services/{services_id}")
    await run_net_steps(target)
    # Unsubscribing.
    await target.call("unsubscribe demand", "DELETE", f"{M}/demands/{sub_id}")
    await target.call("unsubscribe demand twice", "DELETE", f"{M}/demands/{sub_id}")
    await target.call("events of an unsubscribed demand", "GET", f"{M}/demands/{sub_id}/events", timeout=0.1)
    for offer_id in offer_ids:
        await target.call(
            f"unsubscribe offer {offer_id == offer_ids[1]:d}", "DELETE", f"{M}/offers/{offer_id}", key="offer"
        )
    return target.answers


async def run_net_steps(target: Target) -> None:
    """The net API's control plane (VPN records; no activity joins, so nothing is connected)."""
    await target.call("list networks (none)", "GET", f"{N}/net")
    await target.call("unknown network, owning none", "GET", f"{N}/net/{UNKNOWN_NETWORK}")
    network = await target.call("create network", "POST", f"{N}/net", {"ip": "192.168.0.0", "mask": "255.255.255.0"})
    other = await target.call("create network (CIDR)", "POST", f"{N}/net", {"ip": "10.0.0.0/16"})
    await target.call("create network (bad ip)", "POST", f"{N}/net", {"ip": "banana"})
    await target.call("create network (missing ip)", "POST", f"{N}/net", {})
    await target.call("create network (malformed JSON)", "POST", f"{N}/net", raw=MALFORMED_JSON)
    net_id = network["id"] if isinstance(network, dict) else "none"
    other_id = other["id"] if isinstance(other, dict) else "none"
    await target.call("list networks", "GET", f"{N}/net")
    await target.call("get network", "GET", f"{N}/net/{net_id}")
    await target.call("get network (v2)", "GET", f"/net-api/v2/vpn/net/{net_id}")
    await target.call("unknown network, owning some", "GET", f"{N}/net/{UNKNOWN_NETWORK}")
    await target.call("addresses", "GET", f"{N}/net/{net_id}/addresses")
    await target.call("add address", "POST", f"{N}/net/{net_id}/addresses", {"ip": "192.168.0.10"})
    await target.call("add address (outside)", "POST", f"{N}/net/{net_id}/addresses", {"ip": "10.9.9.9"})
    await target.call("addresses after adding", "GET", f"{N}/net/{net_id}/addresses")
    await target.call("nodes (none)", "GET", f"{N}/net/{net_id}/nodes")
    node = {"id": "0x" + "1" * 40, "ip": "192.168.0.2"}
    await target.call("add node", "POST", f"{N}/net/{net_id}/nodes", node)
    await target.call(
        "add node (taken ip)", "POST", f"{N}/net/{net_id}/nodes", {"id": "0x" + "2" * 40, "ip": "192.168.0.2"}
    )
    await target.call(
        "add node (outside)", "POST", f"{N}/net/{net_id}/nodes", {"id": "0x" + "2" * 40, "ip": "10.9.9.9"}
    )
    await target.call("add node (missing id)", "POST", f"{N}/net/{net_id}/nodes", {"ip": "192.168.0.9"})
    await target.call("nodes", "GET", f"{N}/net/{net_id}/nodes")
    await target.call("remove node", "DELETE", f"{N}/net/{net_id}/nodes/{node['id']}")
    await target.call("remove node twice", "DELETE", f"{N}/net/{net_id}/nodes/{node['id']}")
    await target.call("tcp (port not a u16)", "GET", f"{N}/net/{net_id}/tcp/192.168.0.3/70000")
    await target.call("tcp (not an address)", "GET", f"{N}/net/{net_id}/tcp/banana/80")
    await target.call("tcp (loopback)", "GET", f"{N}/net/{net_id}/tcp/127.0.0.1/80")
    await target.call("tcp connections (not served)", "GET", f"{N}/net/{net_id}/tcp")
    await target.call("remove network", "DELETE", f"{N}/net/{net_id}")
    await target.call("remove network twice, owning some", "DELETE", f"{N}/net/{net_id}")
    await target.call("remove other network (v2)", "DELETE", f"/net-api/v2/vpn/net/{other_id}")
    await target.call("removed network, owning none", "GET", f"{N}/net/{net_id}")


def _new_enough(version: Any) -> bool:
    """Whether a ``/version/get`` body names a version golem-js 3.6 accepts (it coerces it to semver, >= 0.15.2)."""
    try:
        parts = str(version["current"]["version"]).split("-")[0].split(".")
        return tuple(int(part) for part in parts[:3]) >= (0, 15, 2)
    except (TypeError, KeyError, ValueError):
        return False


def differences(daemon: Mapping[str, Answer], local: Mapping[str, Answer]) -> dict[str, tuple[Answer, Answer]]:
    """The steps whose answers differ (both runs make the same steps)."""
    assert daemon.keys() == local.keys(), "both nodes must be sent the same sequence"
    return {step: (daemon[step], local[step]) for step in daemon if daemon[step] != local[step]}


@pytest.fixture
async def daemon_run(yagna_daemon: YagnaDaemon) -> Target:
    target = Target("daemon", yagna_daemon.url, yagna_daemon.app_key, yagna_daemon.provider_key, yagna_daemon.identity)
    async with aiohttp.ClientSession() as session:
        target.session = session
        try:
            await run_sequence(target)
        finally:
            await withdraw_everything(target)
    target.session = None
    return target


async def withdraw_everything(target: Target) -> None:
    """Unsubscribe what a failed sequence left on the shared daemon, so that later tests see no stale offers."""
    for kind, key in (("offers", "offer"), ("demands", "requestor")):
        listed = await target.call(None, "GET", f"{M}/{kind}", key=key)
        id_key = "offerId" if kind == "offers" else "demandId"
        for item in listed if isinstance(listed, list) else []:
            await target.call(None, "DELETE", f"{M}/{kind}/{item[id_key]}", key=key)


async def test_the_local_node_answers_as_the_real_daemon_does(daemon_run: Target, local_node: LocalNode) -> None:
    daemon_answers = daemon_run.answers
    # The local node has one app key: its offers are published by the requestor identity (they never match its
    # own demand); the Initial proposals come from its three local providers.
    target = Target("local", local_node.url, local_node.app_key, local_node.app_key, local_node.requestor_id)
    async with aiohttp.ClientSession() as session:
        target.session = session
        local_answers = await run_sequence(target)

    found = differences(daemon_answers, local_answers)
    report = "\n".join(
        f"  {step}: daemon {d.status} {d.shape!r}\n  {'':{len(step)}}  local  {loc.status} {loc.shape!r}"
        for step, (d, loc) in found.items()
    )
    assert found.keys() == KNOWN_DIFFERENCES.keys(), f"the answers that differ:\n{report}"
    for step, (daemon, local) in found.items():
        assert (daemon.status, local.status) == KNOWN_DIFFERENCES[step][:2], step
    # The meanings: the same values on both (each is True on the daemon; see the module docstring).
    assert daemon_run.facts == target.facts
    assert all(daemon_run.facts.values()), daemon_run.facts
