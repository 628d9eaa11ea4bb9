"""Malformed input gets a 400 that names what is wrong, on every route: never a 500, a hang or a traceback.

Real HTTP to a real local node over loopback. The inputs are the ones that used to break it: JSON nested
thousands of levels deep, absurd amounts, moments outside the calendar, endless waits, a NUL byte in a path;
and the app key, which is compared in constant time and taken from the query only on the GSB API.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import aiohttp
import pytest

from golem_local.limits import MAX_JSON_DEPTH
from golem_local.node import LocalNode
from tests.integration.agreements import approved_agreement, call

pytestmark = pytest.mark.integration

_NESTED = "[" * 5000 + "]" * 5000


def _routes(node: LocalNode) -> list[tuple[str, str]]:
    """(method, path with a made-up id in each ``{param}``) of every route the node serves."""
    found = []
    for route in node.build_app().router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("formatter") or info.get("path")
        if path and route.method not in ("HEAD", "*"):
            found.append((route.method, re.sub(r"\{[^}]+\}", "0123456789abcdef", path)))
    return sorted(set(found))


async def test_deeply_nested_json_is_refused_on_every_route_that_takes_a_body(
    local_node: LocalNode, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    posts = [(m, p) for m, p in _routes(local_node) if m in ("POST", "PUT")]
    assert len(posts) >= 13
    answers: dict[str, tuple[int, Any]] = {}
    for method, path in posts:
        async with http.request(method, path, data=_NESTED, headers={"Content-Type": "application/json"}) as response:
            text = await response.text()  # the net API answers body errors in text/plain, as the daemon does
            answers[f"{method} {path}"] = (response.status, json.loads(text) if text.startswith("{") else text)
    # 501 on rejecting a document is the daemon's own answer (it has not implemented it), not a failure.
    broken = {route: answer for route, answer in answers.items() if answer[0] >= 500 and answer[0] != 501}
    assert broken == {}
    # Routes that read the body before looking anything up say what is wrong with it.
    refused = {route: body for route, (status, body) in answers.items() if status == 400 and "deep" in str(body)}
    assert "POST /market-api/v1/agreements" in refused
    assert "POST /payment-api/v1/allocations" in refused
    assert f"more than {MAX_JSON_DEPTH} levels deep" in refused["POST /market-api/v1/agreements"]["message"]
    assert len(refused) >= 5
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == [], "no traceback in the node's log"


@pytest.mark.parametrize(
    ("amount", "words"),
    [
        ("1e999999999", "out of range"),
        ("-1e40", "out of range"),
        ("1e-999999999", "decimal places"),
        ("0.0000000000000000001", "decimal places"),
        ("NaN", "finite"),
        ("Infinity", "finite"),
    ],
)
async def test_absurd_amounts_are_refused(http: aiohttp.ClientSession, amount: str, words: str) -> None:
    status, body = await call(http, "POST", "/payment-api/v1/allocations", {"totalAmount": amount})
    assert status == 400
    assert words in body["message"]
    assert "totalAmount" in body["message"]


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01", "2024-02-30T00:00:00Z"])
async def test_moments_outside_the_calendar_are_refused(http: aiohttp.ClientSession, moment: str) -> None:
    status, body = await call(http, "POST", "/market-api/v1/agreements", {"proposalId": "x", "validTo": moment})
    assert status == 400
    assert "validTo" in body["message"]
    status, body = await call(http, "GET", "/payment-api/v1/debitNoteEvents", afterTimestamp=moment, timeout=0)
    assert status == 400
    assert "afterTimestamp" in body["message"]


@pytest.mark.parametrize("timeout", ["1e309", "inf", "nan", "-1", str(2**64), "1e30"])
async def test_waits_the_node_cannot_keep_are_refused_on_every_long_poll(
    local_node: LocalNode, http: aiohttp.ClientSession, timeout: str
) -> None:
    agreement_id = await approved_agreement(http, local_node)
    _, demand_id = await call(
        http, "POST", "/market-api/v1/demands", {"properties": {}, "constraints": "(golem.node.id.name=nobody)"}
    )
    _, activity_id = await call(http, "POST", "/activity-api/v1/activity", agreement_id)
    _, batch_id = await call(
        http, "POST", f"/activity-api/v1/activity/{activity_id}/exec", {"text": '[{"deploy": {}}]'}
    )
    polls = [
        ("GET", f"/market-api/v1/demands/{demand_id}/events"),
        ("GET", "/market-api/v1/agreementEvents"),
        ("POST", f"/market-api/v1/agreements/{agreement_id}/wait"),
        ("GET", "/payment-api/v1/debitNoteEvents"),
        ("GET", "/payment-api/v1/invoiceEvents"),
        ("GET", f"/activity-api/v1/activity/{activity_id}/exec/{batch_id}"),
    ]
    for method, path in polls:
        status, body = await call(http, method, path, timeout=timeout)
        assert status == 400, (method, path, status, body)
        assert "timeout" in body["message"]


async def test_a_nul_byte_in_a_command_is_refused_when_the_script_is_sent(
    local_node: LocalNode, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    agreement_id = await approved_agreement(http, local_node)
    _, activity_id = await call(http, "POST", "/activity-api/v1/activity", agreement_id)
    script = '[{"transfer": {"from": "container:/golem/out/a\\u0000b", "to": "gftp://x/y"}}]'
    status, body = await call(http, "POST", f"/activity-api/v1/activity/{activity_id}/exec", {"text": script})
    assert status == 400
    assert "NUL" in body["message"]
    assert "command #0" in body["message"]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_the_app_key_comes_from_the_query_only_on_the_gsb_api(local_node: LocalNode) -> None:
    async with aiohttp.ClientSession(base_url=local_node.url) as plain:
        async with plain.get("/payment-api/v1/allocations", params={"authToken": local_node.app_key}) as response:
            assert response.status == 401
            assert "GSB API" in (await response.json())["message"]
        async with plain.get("/gsb-api/v1/services/nosuch", params={"authToken": local_node.app_key}) as response:
            assert response.status != 401, "the GSB API takes the key from the query"
        wrong = "x" * len(local_node.app_key)
        async with plain.get("/me", headers={"Authorization": f"Bearer {wrong}"}) as response:
            assert response.status == 401
            assert "not valid" in (await response.json())["message"]
