"""HTTP plumbing shared by every API of the local node: error bodies, the app-key check, JSON bodies.

The daemon answers errors as ``{"message": "…"}``; handlers raise :class:`HttpError` and the middleware
turns it into that body, so that no handler builds an error response by hand. Bodies and waits are checked
against the limits of :mod:`golem_local.limits` (400 naming the limit).

The app key is compared in constant time. It is taken from ``Authorization: Bearer <key>``, and from the
query (``?authToken=<key>``) only where the specs allow it, the GSB API and the VPN's TCP WebSocket (a browser
cannot set headers on a WebSocket): a key in a URL ends up in logs. (The daemon 0.17 also takes it on the other APIs.)
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from golem_local.limits import load_json, timeout_problem

__all__ = [
    "HttpError",
    "auth_middleware",
    "error_middleware",
    "json_bytes_response",
    "json_response",
    "query_seconds",
    "read_json",
    "unauthorized",
]

_log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_LARGE_BODY = 512 * 1024

APP_KEY = web.AppKey("golem_api.app_key", str)
QUERY_TOKEN_PATHS = re.compile(r"^/gsb-api/v1/|^/net-api/(v1|v2/vpn)/net/[^/]+/tcp/")
"""The only paths where the app key may come as ``?authToken=``: those the specs give ``app_key_param``, the GSB
API and the net API's TCP WebSocket (browsers cannot set headers on a WebSocket)."""


class HttpError(Exception):
    """Raised by a handler to answer ``status`` with ``{"message": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_response(body: Any, status: int = 200) -> web.Response:
    """A JSON answer; ``None`` is written as ``null``, as the daemon does.

    Strict JSON only: a number that is not finite (``NaN``, ``Infinity``) raises ``ValueError`` instead of
    reaching a client as something that is not JSON (the error middleware answers 500 and logs it).
    """
    return json_bytes_response(json.dumps(body, separators=(",", ":"), allow_nan=False).encode(), status)


def json_bytes_response(data: bytes, status: int = 200) -> web.Response:
    """A JSON answer already encoded (``data``)."""
    if len(data) > _LARGE_BODY:  # a command's results: streamed from a buffer, as aiohttp asks for large bodies
        return web.Response(status=status, body=io.BytesIO(data), content_type="application/json")
    return web.Response(status=status, body=data, content_type="application/json")


def _error_response(status: int, message: str) -> web.Response:
    return json_response({"message": message}, status=status)


async def read_json(request: web.Request) -> Any:
    """The request's JSON body; 400 with the parser's words when it is not JSON."""
    raw = await request.read()
    if not raw.strip():
        raise HttpError(400, "the request body is empty; a JSON body is required")
    try:
        return load_json(raw, "the request body")
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None


def query_seconds(request: web.Request, name: str, default: float | None) -> float | None:
    """A wait in seconds from the query (``default`` when absent); 400 when it is not one the node can wait."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise HttpError(400, f"query parameter {name}={raw!r} is not a number of seconds") from None
    problem = timeout_problem(value)
    if problem is not None:
        raise HttpError(400, f"query parameter {name}={raw!r} {problem}")
    return value


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn :class:`HttpError` and aiohttp's own HTTP errors into the daemon's ``{"message"}`` bodies."""
    try:
        return await handler(request)
    except HttpError as exc:
        return _error_response(exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error_response(exc.status, exc.reason)
    except Exception:
        _log.exception("local node: %s %s failed", request.method, request.path)
        return _error_response(500, f"internal error of the local node while serving {request.path}")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Require the node's app key as ``Authorization: Bearer <key>`` (or ``?authToken=`` where the specs allow it)."""
    refusal = unauthorized(request)
    if refusal is not None:
        return refusal
    return await handler(request)


def unauthorized(request: web.Request) -> web.Response | None:
    """The 401 answer for a request without the node's app key (see :func:`auth_middleware`); ``None`` when it
    has it. A plain function, so that a middleware can check without a coroutine of its own per request."""
    expected = request.app[APP_KEY]
    header = request.headers.get("Authorization", "")
    given: str | None = header[7:].strip() if header.lower().startswith("bearer ") else None
    if given is None and QUERY_TOKEN_PATHS.match(request.path):
        given = request.query.get("authToken")
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        if given:
            what = "the app key is not valid"
        elif "authToken" in request.query:
            what = (
                "?authToken= is taken only on the GSB API and the VPN's TCP WebSocket; "
                "send the app key as 'Authorization: Bearer <key>'"
            )
        else:
            what = "no app key was given"
        return _error_response(401, f"Unauthorized: {what}")
    return None
