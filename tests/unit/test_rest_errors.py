"""HTTP status codes become the matching ApiError, with the node's message and what to do."""

from __future__ import annotations

import pytest

from golem_api._rest.http_errors import error_for_status, unreachable_error
from golem_api.errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    GoneError,
    NotFoundError,
    RequestTimeoutError,
    ServerError,
)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, NotFoundError),
        (408, RequestTimeoutError),
        (409, ConflictError),
        (410, GoneError),
        (500, ServerError),
        (501, ServerError),
        (504, ServerError),
        (418, ApiError),
        (302, ApiError),
    ],
)
def test_each_status_maps_to_its_error(status: int, cls: type[ApiError]) -> None:
    error = error_for_status("POST", "/market-api/v1/agreements", status, '{"message": "nope"}')
    assert type(error) is cls
    assert (error.method, error.path, error.status, error.message) == (
        "POST",
        "/market-api/v1/agreements",
        status,
        "nope",
    )
    assert str(error).startswith(f"POST /market-api/v1/agreements answered {status}: nope")


def test_auth_errors_say_to_check_the_app_key() -> None:
    error = error_for_status("GET", "/me", 401, '{"message": "invalid app key"}')
    assert "YAGNA_APPKEY" in error.hint
    assert "YAGNA_APPKEY" in str(error)
    assert "invalid app key" in str(error)


def test_a_text_body_is_the_message_trimmed() -> None:
    error = error_for_status("GET", "/x", 502, "  <html>Bad Gateway</html>\n")
    assert error.message == "<html>Bad Gateway</html>"
    long = error_for_status("GET", "/x", 500, "x" * 2000)
    assert len(long.message) <= 500
    assert long.message.endswith("...")


def test_a_json_body_without_message_is_kept_as_text() -> None:
    assert error_for_status("GET", "/x", 400, '{"error": "bad"}').message == '{"error": "bad"}'
    assert error_for_status("GET", "/x", 410, '"Rejected"').message == "Rejected"
    empty = error_for_status("GET", "/x", 404, "")
    assert empty.message == ""
    assert "(no message)" in str(empty)


def test_unreachable_names_the_node_and_what_to_do() -> None:
    error = unreachable_error("GET", "http://127.0.0.1:7465/market-api/v1/demands/s/events", "Connection refused")
    assert error.url == "http://127.0.0.1:7465/market-api/v1/demands/s/events"
    message = str(error)
    assert "http://127.0.0.1:7465" in message
    assert "Connection refused" in message
    assert "yagna" in message
    assert "unset YAGNA_APPKEY" in message
