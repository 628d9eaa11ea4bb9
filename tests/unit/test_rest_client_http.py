"""RestClient over real HTTP on loopback: failures become the right GolemError, bodies go out as JSON."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import test_utils, web

from golem_api._rest import RestClient
from golem_api._rest.config import ApiConfig
from golem_api.errors import (
    AuthenticationError,
    GolemError,
    NodeUnreachableError,
    NotFoundError,
    ServerError,
)

KEY = "test-app-key-0123456789abcdef"


class Recorded:
    """What the fake node received last."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []


@pytest.fixture
async def node() -> AsyncIterator[tuple[str, Recorded]]:
    """A tiny fake daemon on loopback: checks the key, records requests, answers per path."""
    recorded = Recorded()

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        recorded.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "content_type": request.headers.get("Content-Type"),
                "body": body,
            }
        )
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return web.json_response({"message": "invalid app key"}, status=401)
        path = request.path
        if path == "/me":
            return web.json_response({"identity": "0xabc", "name": "requestor", "role": "manager"})
        if path == "/activity-api/v1/activity":
            return web.json_response("act-1")
        if path.endswith("/reject") or path.endswith("/confirm"):
            return web.Response(status=204)
        if path == "/activity-api/v1/activity/act-1":
            return web.json_response(None)
        if path.endswith("/events"):
            await asyncio.sleep(float(request.query["timeout"]))
            return web.json_response([])
        if path == "/market-api/v1/agreements/broken":
            return web.Response(text="<html>oops</html>", content_type="text/html")
        if path == "/market-api/v1/agreements/partial":
            return web.json_response({"agreementId": "partial"})
        if path == "/activity-api/v1/activity/slow/state":
            await asyncio.Event().wait()
        return web.json_response({"message": f"no such thing: {path}"}, status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = test_utils.TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), recorded
    finally:
        await server.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_closed_port_fails_fast_with_what_to_do() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    async with RestClient(ApiConfig.for_node(url, KEY)) as client:
        with pytest.raises(NodeUnreachableError) as info:
            await client.market.subscribe_demand({}, "()")
    assert time.monotonic() - started < 5
    assert info.value.url == f"{url}/market-api/v1/demands"
    message = str(info.value)
    assert url in message
    assert "is yagna running" in message.lower()
    assert "unset YAGNA_APPKEY" in message
    assert info.value.__cause__ is not None


async def test_a_wrong_key_is_an_authentication_error(node: tuple[str, Recorded]) -> None:
    url, _ = node
    async with RestClient(ApiConfig.for_node(url, "wrong-key")) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.identity()
    error = info.value
    assert (error.method, error.path, error.status, error.message) == ("GET", "/me", 401, "invalid app key")
    assert "YAGNA_APPKEY" in str(error)


async def test_identity_with_the_right_key(node: tuple[str, Recorded]) -> None:
    url, _ = node
    async with RestClient(ApiConfig.for_node(url, KEY)) as client:
        me = await client.identity()
    assert (me.identity, me.name, me.role) == ("0xabc", "requestor", "manager")


async def test_a_string_body_goes_out_as_a_json_string(node: tuple[str, Recorded]) -> None:
    url, recorded = node
    async with RestClient(ApiConfig.for_node(url, KEY)) as client:
        assert await client.activity.create_activity("agr-1") == "act-1"
        sent = recorded.requests[-1]
        assert sent["content_type"] == "application/json"
        assert json.loads(sent["body"]) == "agr-1"
        await client.activity.destroy_activity("act-1")


async def test_null_bodies_and_no_bodies(node: tuple[str, Recorded]) -> None:
    url, recorded = node
    async with RestClient(ApiConfig.for_node(url, KEY)) as client:
        await client.market.reject_proposal("sub", "prop")
        assert recorded.requests[-1]["body"] == b"null"
        assert recorded.requests[-1]["content_type"] == "application/json"
        await client.market.confirm_agreement("agr-1", app_session_id="s-1")
        assert recorded.requests[-1]["body"] == b""
        assert recorded.requests[-1]["query"] == {"appSessionId": "s-1"}


async def test_a_long_poll_outlasts_the_request_timeout(node: tuple[str, Recorded]) -> None:
    url, recorded = node
    async with RestClient(ApiConfig.for_node(url, KEY), request_timeout=0.1) as client:
        assert await client.market.collect_demand_events("sub-1", timeout=0.3, max_events=5) == []
    assert recorded.requests[-1]["query"] == {"timeout": "0.3", "maxEvents": "5"}


async def test_no_answer_in_time_is_unreachable(node: tuple[str, Recorded]) -> None:
    url, _ = node
    async with RestClient(ApiConfig.for_node(url, KEY), request_timeout=0.2) as client:
        with pytest.raises(NodeUnreachableError, match=r"no answer within 0\.2 s"):
            await client.activity.get_state("slow")


async def test_not_found_carries_the_full_path(node: tuple[str, Recorded]) -> None:
    url, _ = node
    async with RestClient(ApiConfig.for_node(url, KEY)) as client:
        with pytest.raises(NotFoundError) as info:
            await client.payment.get_invoice("inv-9")
    assert info.value.path == "/payment-api/v1/invoices/inv-9"
    assert info.value.message == "no such thing: /payment-api/v1/invoices/inv-9"


async def test_an_unexpected_answer_is_a_server_error_naming_the_call(node: tuple[str, Recorded]) -> None:
    url, _ = node
    async with RestClient(ApiConfig.for_node(url, KEY)) as client:
        with pytest.raises(ServerError) as info:
            await client.market.get_agreement("partial")
        error = info.value
        assert (error.method, error.path, error.status) == ("GET", "/market-api/v1/agreements/partial", 200)
        assert "unexpected response" in error.message
        assert "Agreement" in error.message
        assert "'demand'" in error.message
        with pytest.raises(ServerError, match="not JSON"):
            await client.market.get_agreement("broken")


async def test_debug_log_has_requests_but_never_the_key(
    node: tuple[str, Recorded], caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = node
    caplog.set_level(logging.DEBUG, logger="golem_api._rest")
    async with RestClient(ApiConfig.for_node(url, KEY)) as client:
        await client.identity()
    assert "GET /me" in caplog.text
    assert "-> 200" in caplog.text
    assert KEY not in caplog.text
    assert KEY not in repr(client)


async def test_a_closed_client_refuses_further_requests(node: tuple[str, Recorded]) -> None:
    url, _ = node
    client = RestClient(ApiConfig.for_node(url, KEY))
    await client.identity()
    await client.aclose()
    await client.aclose()
    with pytest.raises(GolemError, match="closed"):
        await client.identity()


def test_construction_outside_a_loop_creates_no_session() -> None:
    client = RestClient(ApiConfig.for_node("http://127.0.0.1:1", KEY))
    assert client._session is None


@pytest.mark.slow  # over a second of real processes and waits (the quick run keeps its minute)
async def test_more_long_polls_than_aiohttps_default_pool_are_all_in_flight_at_once() -> None:
    # Each starting instance holds a connection for its long-polls; with aiohttp's default pool of 100 the
    # 101st request queued until one of them ended, and its own timeout ran out while it waited (issue 17).
    count = 150
    arrived = 0
    everyone_in = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        nonlocal arrived
        arrived += 1
        if arrived == count:
            everyone_in.set()
        await everyone_in.wait()  # answers only once all of them are waiting on the node at the same time
        return web.json_response({"identity": "0xabc", "name": "requestor", "role": "manager"})

    app = web.Application()
    app.router.add_get("/me", handle)
    server = test_utils.TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url("")).rstrip("/")
        async with RestClient(ApiConfig.for_node(url, KEY)) as client:
            identities = await asyncio.wait_for(asyncio.gather(*(client.identity() for _ in range(count))), 60)
        assert {identity.identity for identity in identities} == {"0xabc"}
        assert arrived == count
        async with RestClient(ApiConfig.for_node(url, KEY), max_connections=10) as capped:
            assert capped._get_session().connector is not None
            assert capped._get_session().connector.limit == 10
    finally:
        await server.close()


def test_a_pool_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        RestClient(ApiConfig.for_node("http://127.0.0.1:1", KEY), max_connections=0)
