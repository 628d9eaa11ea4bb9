"""Property-based fuzzing of every API of the local node that an official spec describes, derived from the specs.

schemathesis generates requests from ``tests/specs/yagna/*-api.yaml`` (path ids, query parameters, bodies,
valid and not) for every operation the node serves, sends them over HTTP to a real ``LocalNode`` and each answer
must be no 5xx (but the daemon's own 501 on rejecting a document, a listed deviation) and conform to the spec
(``tests/spec_validator.py``, with its listed deviations of the daemon).

Bounds: ``MAX_EXAMPLES`` per operation, no shrinking, and long-poll ``timeout`` parameters forced to 0 so that
no request waits; the whole run takes a few seconds (``BUDGET`` is a hard stop).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import Case
from schemathesis.core.result import Ok
from schemathesis.schemas import APIOperation

from golem_local.node import LocalNode
from tests.spec_validator import DEVIATIONS, SPECS, spec_validator

FUZZED = (
    "market-api.yaml",
    "activity-api.yaml",
    "payment-api.yaml",
    "gsb-api.yaml",
    "identity-api.yaml",
    "net-api.yaml",
)
MAX_EXAMPLES = 25  # per operation
BUDGET = 40.0  # seconds for the whole fuzz run
REQUEST_TIMEOUT = 10.0  # seconds for one request
_POLL_TIMEOUTS = {"timeout"}


class ThreadedNode:
    """A ``LocalNode`` served from its own event loop in a thread, for synchronous clients such as schemathesis."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="local-node", daemon=True)
        self.node = LocalNode()

    def __enter__(self) -> LocalNode:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.node.start(), self.loop).result(timeout=30)
        return self.node

    def __exit__(self, *exc_info: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.node.aclose(), self.loop).result(timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()


@pytest.fixture(scope="module")
def threaded_node() -> Iterator[LocalNode]:
    with ThreadedNode() as node:
        yield node


def _served(node: LocalNode) -> set[tuple[str, str]]:
    """(method, path with every ``{param}`` as ``{}``) for each route of the node's application."""
    routes = set()
    for route in node.build_app().router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("formatter") or info.get("path")
        if path:
            routes.add((route.method, re.sub(r"\{[^}]+\}", "{}", path)))
    return routes


class Fuzzer:
    """Sends generated requests to ``node`` and collects what breaks: server errors and answers off the specs."""

    def __init__(self, node: LocalNode) -> None:
        self.node = node
        self.validator = spec_validator()
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {node.app_key}"
        self.problems: list[str] = []
        self.counts = {"operations": 0, "requests": 0, "2xx": 0, "4xx": 0, "5xx": 0}
        self.started = time.monotonic()

    def fuzz(self, operation: APIOperation[Any, Any, Any, Any], prefix: str) -> None:
        """Up to ``MAX_EXAMPLES`` generated requests of ``operation`` (a spec path under ``prefix``)."""
        self.counts["operations"] += 1
        polls = bool({parameter.name for parameter in operation.query} & _POLL_TIMEOUTS)

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def send(case: Case[Any]) -> None:
            if time.monotonic() - self.started < BUDGET:
                self.send(case, prefix, polls=polls)

        send()

    def send(self, case: Case[Any], prefix: str, *, polls: bool) -> None:
        if polls:  # long-polls (and waits) answer at once: without ``timeout`` the node would wait its default
            case.query = {**(case.query or {}), "timeout": 0}
        response = case.call(base_url=self.node.url + prefix, session=self.session, timeout=REQUEST_TIMEOUT)
        status = response.status_code
        self.counts["requests"] += 1
        self.counts["2xx" if status < 300 else "4xx" if status < 500 else "5xx"] += 1
        where = f"{case.method} {case.formatted_path} query={case.query} body={case.body!r:.200}"
        deliberate = (case.method.upper(), prefix + case.operation.path, status) in DEVIATIONS  # e.g. 501 on reject
        if status >= 500 and not deliberate:
            self.problems.append(f"{where} → {status} (a server error): {response.content[:300]!r}")
        content_type = ";".join(
            value for name, values in response.headers.items() if name.lower() == "content-type" for value in values
        )
        path = prefix + case.formatted_path
        for problem in self.validator.check(case.method, path, status, content_type, response.content):
            self.problems.append(f"{problem} (request: {where})")


def test_fuzzed_requests_get_no_server_error_and_answers_that_follow_the_specs(threaded_node: LocalNode) -> None:
    served = _served(threaded_node)
    fuzzer = Fuzzer(threaded_node)
    for file in FUZZED:
        schema = schemathesis.openapi.from_path(SPECS / file)
        prefix = schema.raw_schema.get("servers", [{"url": ""}])[0]["url"]
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), f"{file}: schemathesis cannot read an operation: {result!r}"
            operation = result.ok()
            if (operation.method.upper(), re.sub(r"\{[^}]+\}", "{}", prefix + operation.path)) in served:
                fuzzer.fuzz(operation, prefix)

    elapsed = time.monotonic() - fuzzer.started
    counts = fuzzer.counts
    print(f"schema fuzz: {counts} in {elapsed:.1f} s")  # shown with -s; the figures the docs quote
    assert counts["operations"] >= 40, f"only {counts['operations']} served operations were found in the specs"
    assert counts["requests"] >= counts["operations"] * 3
    problems = fuzzer.problems
    assert not problems, f"{len(problems)} fuzzed answer(s) broke the specs:\n" + "\n".join(problems[:30])
    assert elapsed < BUDGET + 2 * REQUEST_TIMEOUT
