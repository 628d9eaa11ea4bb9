"""What an HTTP failure means to a user: status codes to :class:`ApiError`, no answer to NodeUnreachableError.

Pure functions; ``RestClient._request`` is the only caller, so every failure is translated in one place.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from golem_api.errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    GoneError,
    NodeUnreachableError,
    NotFoundError,
    RequestTimeoutError,
    ServerError,
)

__all__ = ["error_for_status", "node_message", "unreachable_error"]

_MAX_MESSAGE = 500

_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    408: RequestTimeoutError,
    409: ConflictError,
    410: GoneError,
}

_AUTH_HINT = "Check YAGNA_APPKEY (or app_key=): it must be an app key this node knows (`yagna app-key list`)"


def node_message(body_text: str) -> str:
    """The node's explanation: ``message`` of a ``{"message": …}`` body, else the body trimmed."""
    text = body_text.strip()
    try:
        data = json.loads(text) if text else None
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        text = data["message"].strip()
    elif isinstance(data, str):
        text = data.strip()
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def error_for_status(method: str, path: str, status: int, body_text: str) -> ApiError:
    """The :class:`ApiError` subclass for an error ``status`` (≥ 400), carrying the node's message."""
    if status >= 500:
        cls: type[ApiError] = ServerError
    else:
        cls = _BY_STATUS.get(status, ApiError)
    hint = _AUTH_HINT if cls is AuthenticationError else ""
    return cls(method=method, path=path, status=status, message=node_message(body_text), hint=hint)


def unreachable_error(method: str, url: str, reason: str, *, down_for: float = 0.0) -> NodeUnreachableError:
    """No HTTP answer to ``method url``: say which node, why, and what to try (``down_for``: see the error)."""
    parts = urlsplit(url)
    node = f"{parts.scheme}://{parts.netloc}"
    return NodeUnreachableError(
        f"cannot reach the Golem node at {node} ({method} {parts.path}: {reason}). "
        "Is yagna running (`yagna service run`) and is YAGNA_API_URL right? "
        "Or unset YAGNA_APPKEY to use the embedded local network.",
        url=url,
        down_for=down_for,
    )
