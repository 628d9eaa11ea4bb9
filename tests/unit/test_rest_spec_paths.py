"""Every request the client can send exists in the official specs, with the query names it uses.

``ROUTES`` is the client's whole wire surface: ``RestClient._request`` refuses any other route, and the
second half of this file calls every public method of the API classes to check that together they use
exactly the routes in the table (the event stream of a batch and the GSB WebSocket go through their own
openers, recorded the same way). ``GET /me`` is the one call outside the published specs (the daemon serves it
without a prefix; the contract notes list it), so it is checked by name only.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime, timezone
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from golem_api._rest import routes
from golem_api._rest.activity import ActivityApi
from golem_api._rest.client import RestClient
from golem_api._rest.config import API_PREFIXES, Api, ApiConfig
from golem_api._rest.gsb import GsbApi
from golem_api._rest.market import MarketApi
from golem_api._rest.net import NetApi
from golem_api._rest.payment import PaymentApi
from golem_api._rest.routes import ROUTES, Route
from tests.unit.fake_node import FakeNode

# The official specs, copied unchanged into the repository (see tests/specs/yagna/SOURCE.md).
SPECS = Path(__file__).resolve().parents[1] / "specs" / "yagna"
SPEC_FILES = {
    Api.MARKET: "market-api.yaml",
    Api.PAYMENT: "payment-api.yaml",
    Api.ACTIVITY: "activity-api.yaml",
    Api.GSB: "gsb-api.yaml",
    Api.NET: "net-api.yaml",
}
OUTSIDE_THE_SPECS = {Route(Api.ROOT, "GET", "/me")}


@cache
def load(name: str) -> dict[str, Any]:
    path = SPECS / name
    assert path.is_file(), f"the official specs are expected in {SPECS} (copied from ya-client, see SOURCE.md there)"
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def resolve(entry: Mapping[str, Any], current: str) -> dict[str, Any]:
    """Follow ``$ref`` (``file.yaml#/a/b`` or ``#/a/b``); keys beside the ``$ref`` win, as the specs use."""
    if "$ref" not in entry:
        return dict(entry)
    file, _, pointer = entry["$ref"].partition("#")
    file = file or current
    node: Any = load(file)
    for part in pointer.strip("/").split("/"):
        node = node[part]
    resolved = resolve(node, file)
    resolved.update({key: value for key, value in entry.items() if key != "$ref"})
    return resolved


def spec_operation(route: Route) -> tuple[dict[str, Any], set[str]]:
    """The spec's operation for ``route`` and the names of its query parameters."""
    file = SPEC_FILES[route.api]
    spec = load(file)
    path_item = spec["paths"].get(route.template)
    assert path_item is not None, f"{route}: no path {route.template!r} in {file}"
    operation = path_item.get(route.method.lower())
    assert operation is not None, f"{route}: {file} has {route.template} but no {route.method} on it"
    parameters = [*path_item.get("parameters", []), *operation.get("parameters", [])]
    query = {p["name"] for p in (resolve(entry, file) for entry in parameters) if p.get("in") == "query"}
    return operation, query


def test_the_table_has_no_duplicates() -> None:
    assert len(set(ROUTES)) == len(ROUTES)


@pytest.mark.parametrize("api", list(SPEC_FILES), ids=str)
def test_the_prefixes_are_the_specs_server_urls(api: Api) -> None:
    servers = [server["url"] for server in load(SPEC_FILES[api])["servers"]]
    assert servers == [API_PREFIXES[api]]


@pytest.mark.parametrize("route", [r for r in ROUTES if r not in OUTSIDE_THE_SPECS], ids=str)
def test_each_route_exists_in_the_specs(route: Route) -> None:
    _, spec_query = spec_operation(route)
    unknown = set(route.query) - spec_query
    assert not unknown, f"{route}: query parameters {sorted(unknown)} are not in the spec ({sorted(spec_query)})"


def test_only_me_is_outside_the_specs() -> None:
    outside = {route for route in ROUTES if route.api not in SPEC_FILES}
    assert outside == OUTSIDE_THE_SPECS


# ---- The API classes use exactly the routes of the table ----


class Stop(Exception):
    """Stops a call once the fake transport has seen its request."""


class Recorder(FakeNode):
    """A Requester that checks the route against the table, records it and stops the call: no parsing."""

    @property
    def routes(self) -> list[Route]:
        return [sent.route for sent in self.sent]

    def check(self, route: Route, params: Mapping[str, str | None] | None) -> None:
        assert route in ROUTES
        assert set(params or ()) <= set(route.query), f"{route} sent query {sorted(params or ())}"
        raise Stop

    @contextlib.asynccontextmanager
    async def stream(
        self, route: Route, *path_args: str, params: Mapping[str, str | None] | None = None, accept: str
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        await self(route, *path_args, params=params, parse=lambda data: data)
        raise AssertionError("unreachable")  # pragma: no cover
        yield  # pragma: no cover

    async def websocket(self, route: Route, *path_args: str, protocols: tuple[str, ...]) -> Any:
        assert protocols == (("gsb+flexbuffers",) if route.api is Api.GSB else ())
        return await self(route, *path_args, parse=lambda data: data)


WHEN = datetime(2024, 5, 1, 10, tzinfo=timezone.utc)

Call = Callable[[Any], Awaitable[Any]]
CALLS: dict[type, dict[str, Call]] = {
    MarketApi: {
        "subscribe_demand": lambda api: api.subscribe_demand({"a": 1}, "()"),
        "unsubscribe_demand": lambda api: api.unsubscribe_demand("s"),
        "collect_demand_events": lambda api: api.collect_demand_events("s"),
        "counter_proposal": lambda api: api.counter_proposal("s", "p", {}, "()"),
        "reject_proposal": lambda api: api.reject_proposal("s", "p"),
        "get_proposal": lambda api: api.get_proposal("s", "p"),
        "create_agreement": lambda api: api.create_agreement("p", WHEN),
        "confirm_agreement": lambda api: api.confirm_agreement("a", "session"),
        "wait_for_approval": lambda api: api.wait_for_approval("a"),
        "cancel_agreement": lambda api: api.cancel_agreement("a"),
        "get_agreement": lambda api: api.get_agreement("a"),
        "terminate_agreement": lambda api: api.terminate_agreement("a", {"message": "done"}),
        "collect_agreement_events": lambda api: api.collect_agreement_events(after=WHEN, app_session_id="x"),
        "subscribe_offer": lambda api: api.subscribe_offer({}, "()"),
        "unsubscribe_offer": lambda api: api.unsubscribe_offer("s"),
        "collect_offer_events": lambda api: api.collect_offer_events("s"),
        "counter_demand_proposal": lambda api: api.counter_demand_proposal("s", "p", {}, "()"),
        "reject_demand_proposal": lambda api: api.reject_demand_proposal("s", "p", "no"),
        "approve_agreement": lambda api: api.approve_agreement("a", app_session_id="x"),
        "reject_agreement": lambda api: api.reject_agreement("a"),
    },
    PaymentApi: {
        "create_allocation": lambda api: api.create_allocation(payment_platform="p", total_amount=Decimal(1)),
        "get_allocation": lambda api: api.get_allocation("al"),
        "list_allocations": lambda api: api.list_allocations(),
        "release_allocation": lambda api: api.release_allocation("al"),
        "demand_decorations": lambda api: api.demand_decorations(["al"]),
        "collect_debit_note_events": lambda api: api.collect_debit_note_events(after=WHEN),
        "collect_invoice_events": lambda api: api.collect_invoice_events(after=WHEN),
        "get_debit_note": lambda api: api.get_debit_note("d"),
        "list_debit_notes": lambda api: api.list_debit_notes(),
        "accept_debit_note": lambda api: api.accept_debit_note("d", amount=Decimal(1), allocation_id="al"),
        "get_invoice": lambda api: api.get_invoice("i"),
        "list_invoices": lambda api: api.list_invoices(),
        "accept_invoice": lambda api: api.accept_invoice("i", amount=Decimal(1), allocation_id="al"),
    },
    ActivityApi: {
        "create_activity": lambda api: api.create_activity("a"),
        "destroy_activity": lambda api: api.destroy_activity("act"),
        "get_state": lambda api: api.get_state("act"),
        "get_usage": lambda api: api.get_usage("act"),
        "exec": lambda api: api.exec("act", '[{"deploy": {}}]'),
        "get_exec_batch_results": lambda api: api.get_exec_batch_results("act", "b", command_index=0, timeout=1),
        "get_running_command": lambda api: api.get_running_command("act"),
    },
    GsbApi: {
        "bind_services": lambda api: api.bind_services("/public/gftp/x", ["GetMetadata", "GetChunk"]),
        "unbind_services": lambda api: api.unbind_services("sid"),
        "connect": lambda api: api.connect("sid"),
    },
    NetApi: {
        "create_network": lambda api: api.create_network("192.168.0.0", "255.255.255.0", "192.168.0.1"),
        "list_networks": lambda api: api.list_networks(),
        "get_network": lambda api: api.get_network("n"),
        "remove_network": lambda api: api.remove_network("n"),
        "list_addresses": lambda api: api.list_addresses("n"),
        "add_address": lambda api: api.add_address("n", "192.168.0.1"),
        "list_nodes": lambda api: api.list_nodes("n"),
        "add_node": lambda api: api.add_node("n", "0xabc", "192.168.0.2"),
        "remove_node": lambda api: api.remove_node("n", "0xabc"),
        "connect_tcp": lambda api: api.connect_tcp("n", "192.168.0.2", 80),
    },
}


async def open_event_stream(api: ActivityApi) -> None:
    async with api.stream_exec_batch_results("act", "b"):
        pass  # pragma: no cover


def build(cls: type, recorder: Recorder) -> Any:
    if cls is ActivityApi:
        return ActivityApi(recorder, recorder.stream)
    if cls is GsbApi:
        return GsbApi(recorder, recorder.websocket)
    if cls is NetApi:
        return NetApi(recorder, recorder.websocket)
    return cls(recorder)


def public_methods(cls: type) -> set[str]:
    return {name for name, member in vars(cls).items() if inspect.iscoroutinefunction(member) and name[0] != "_"}


@pytest.mark.parametrize("cls", list(CALLS), ids=lambda cls: cls.__name__)
def test_every_public_method_is_exercised_here(cls: type) -> None:
    assert public_methods(cls) == set(CALLS[cls]), "add the new method to CALLS"


async def test_the_api_classes_use_exactly_the_routes_of_the_table() -> None:
    recorder = Recorder()
    for cls, calls in CALLS.items():
        api = build(cls, recorder)
        for call in calls.values():
            with pytest.raises(Stop):
                await call(api)
    with pytest.raises(Stop):
        await open_event_stream(build(ActivityApi, recorder))
    client = RestClient(ApiConfig.for_node("http://127.0.0.1:1", "key"))
    client._request = recorder  # type: ignore[method-assign]
    with pytest.raises(Stop):
        await client.identity()
    assert sorted(set(recorder.routes), key=str) == sorted(ROUTES, key=str)


async def test_the_client_refuses_a_route_outside_the_table() -> None:
    client = RestClient(ApiConfig.for_node("http://127.0.0.1:1", "key"))
    scan = Route(Api.MARKET, "POST", "/scan")
    with pytest.raises(ValueError, match=r"not in golem_api\._rest\.routes\.ROUTES"):
        await client._request(scan, parse=lambda data: data)
    with pytest.raises(ValueError, match="no query parameters"):
        await client._request(routes.GET_AGREEMENT, "a", params={"timeout": "1"}, parse=lambda data: data)
    await client.aclose()
