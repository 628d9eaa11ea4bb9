"""The one retry policy: what is transient, how long it retries, and when it stops at once."""

from __future__ import annotations

import pytest

from golem_api._retry import DEFAULT_POLICY, RetryPolicy, is_transient, retry
from golem_api.errors import (
    BadRequestError,
    ConfigurationError,
    GolemError,
    NodeUnreachableError,
    RequestTimeoutError,
    ServerError,
)

_FAST = RetryPolicy(first_delay=0.001, max_delay=0.002, deadline=2.0)


def _server(status: int) -> ServerError:
    return ServerError(method="POST", path="/x", status=status, message="boom")


def test_what_is_transient() -> None:
    assert is_transient(NodeUnreachableError("no answer", url="http://x"))
    assert is_transient(_server(500))
    assert is_transient(_server(503))
    assert not is_transient(_server(501)), "501: the node never does that"
    assert not is_transient(_server(200)), "a malformed 2xx answer is an answer"
    assert not is_transient(BadRequestError(method="POST", path="/x", status=400, message="no"))
    assert not is_transient(RequestTimeoutError(method="GET", path="/x", status=408, message="timeout"))
    assert not is_transient(GolemError("other"))


def test_the_default_policy_backs_off_and_is_bounded() -> None:
    delays = DEFAULT_POLICY.delays()
    assert [next(delays) for _ in range(6)] == [0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert DEFAULT_POLICY.deadline == 10.0
    with pytest.raises(ConfigurationError, match=r"RetryPolicy\.deadline"):
        RetryPolicy(deadline=0)


async def test_transient_failures_are_retried_until_the_call_succeeds() -> None:
    failures = [NodeUnreachableError("down", url="http://x"), _server(502)]

    async def call() -> str:
        if failures:
            raise failures.pop(0)
        return "done"

    assert await retry(call, what="a call", policy=_FAST) == "done"
    assert failures == []


async def test_a_non_transient_failure_is_raised_at_once() -> None:
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        raise BadRequestError(method="POST", path="/x", status=400, message="no")

    with pytest.raises(BadRequestError):
        await retry(call, what="a call", policy=_FAST)
    assert calls == 1


async def test_retries_end_at_the_deadline_with_the_last_failure() -> None:
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        raise _server(503)

    with pytest.raises(ServerError):
        await retry(call, what="a call", policy=RetryPolicy(first_delay=0.01, max_delay=0.01, deadline=0.05))
    assert 2 <= calls <= 7


async def test_a_node_down_for_longer_than_the_deadline_gets_no_retries() -> None:
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        raise NodeUnreachableError("down", url="http://x", down_for=_FAST.deadline + 1)

    with pytest.raises(NodeUnreachableError):
        await retry(call, what="a call", policy=_FAST)
    assert calls == 1
