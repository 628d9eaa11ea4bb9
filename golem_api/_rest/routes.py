"""Every call the client can make, in one table: :data:`ROUTES`.

The API classes name a :class:`Route` from this module for each request and :class:`Requester`
(``RestClient._request``) refuses any route that is not in :data:`ROUTES`, so this table is exactly the
client's wire surface; a unit test checks each entry against the official specs.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import quote

from attrs import frozen

from golem_api._rest.config import Api
from golem_api.errors import ConfigurationError

if TYPE_CHECKING:
    import aiohttp

__all__ = ["ABSENT", "POLL_MARGIN", "ROUTES", "Requester", "Route", "StreamOpener", "WebSocketOpener"]

T = TypeVar("T")

POLL_MARGIN = 10.0
"""Seconds added to a long-poll's own timeout for the HTTP request, so the node answers first."""

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_unreserved = re.compile(r"[A-Za-z0-9_.~-]+").fullmatch  # what percent-encoding leaves as it is


@functools.cache
def _split(template: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The literal text around a template's placeholders and their names (split once per template: a path is
    built for every request)."""
    pieces = _PLACEHOLDER.split(template)
    return tuple(pieces[0::2]), tuple(pieces[1::2])


class _Absent(enum.Enum):
    ABSENT = enum.auto()


ABSENT = _Absent.ABSENT
"""Marks a request without a body (``None`` sends the JSON ``null``)."""


@frozen(cache_hash=True)
class Route:
    """One endpoint: ``method`` on ``template`` below the base URL of ``api``, with its query names."""

    api: Api
    method: str
    template: str
    query: tuple[str, ...] = ()

    @property
    def placeholders(self) -> tuple[str, ...]:
        """The names in braces in the template, in order."""
        return _split(self.template)[1]

    def expand(self, *args: str) -> str:
        """The template with each placeholder replaced by the matching argument, percent-encoded."""
        literals, names = _split(self.template)
        if len(args) != len(names):
            raise TypeError(f"{self} takes {len(names)} path arguments, got {len(args)}")
        parts = [literals[0]]
        for name, value, literal in zip(names, args, literals[1:], strict=True):
            if not isinstance(value, str) or not value:
                raise ConfigurationError(f"{name} for {self} must be a non-empty string, got {value!r}")
            parts.append(value if _unreserved(value) else quote(value, safe=""))
            parts.append(literal)
        return "".join(parts)

    def __str__(self) -> str:
        return f"{self.method} {self.template}"


class Requester(Protocol):
    """Sends one request on a route and returns ``parse`` applied to the JSON answer."""

    async def __call__(
        self,
        route: Route,
        *path_args: str,
        params: Mapping[str, str | None] | None = None,
        json: Any = ABSENT,
        timeout: float | None = None,
        parse: Callable[[Any], T],
        decode: Callable[[str], Any] = ...,
    ) -> T:
        """Send ``route`` filled with ``path_args``; ``None`` query values are left out; ``decode`` (by default
        ``json.loads``) turns the answer's text into JSON values."""


class StreamOpener(Protocol):
    """Opens a streaming answer on a route (server-sent events): the body as an async iterator of byte chunks.

    The context manager raises the same errors as :class:`Requester` when the node refuses, and closes the
    connection on exit.
    """

    def __call__(
        self,
        route: Route,
        *path_args: str,
        params: Mapping[str, str | None] | None = None,
        accept: str,
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Open ``route`` filled with ``path_args``, asking for the media type ``accept``."""


class WebSocketOpener(Protocol):
    """Opens a WebSocket on a route (with the app key) and returns it; the caller closes it."""

    async def __call__(
        self, route: Route, *path_args: str, protocols: tuple[str, ...]
    ) -> aiohttp.ClientWebSocketResponse[bool]:
        """Connect to ``route`` filled with ``path_args``, offering the subprotocols ``protocols``."""


_table: list[Route] = []


def _route(api: Api, method: str, template: str, *query: str) -> Route:
    route = Route(api, method, template, query)
    _table.append(route)
    return route


_MARKET, _PAYMENT, _ACTIVITY, _GSB = Api.MARKET, Api.PAYMENT, Api.ACTIVITY, Api.GSB
_POLL = ("timeout", "maxEvents")
_SINCE = ("timeout", "afterTimestamp", "maxEvents")

# Identity (no prefix; not part of the published specs).
IDENTITY = _route(Api.ROOT, "GET", "/me")

# Market, requestor side.
SUBSCRIBE_DEMAND = _route(_MARKET, "POST", "/demands")
UNSUBSCRIBE_DEMAND = _route(_MARKET, "DELETE", "/demands/{subscriptionId}")
COLLECT_DEMAND_EVENTS = _route(_MARKET, "GET", "/demands/{subscriptionId}/events", *_POLL)
COUNTER_PROPOSAL = _route(_MARKET, "POST", "/demands/{subscriptionId}/proposals/{proposalId}")
GET_PROPOSAL = _route(_MARKET, "GET", "/demands/{subscriptionId}/proposals/{proposalId}")
REJECT_PROPOSAL = _route(_MARKET, "POST", "/demands/{subscriptionId}/proposals/{proposalId}/reject")
CREATE_AGREEMENT = _route(_MARKET, "POST", "/agreements")
CONFIRM_AGREEMENT = _route(_MARKET, "POST", "/agreements/{agreementId}/confirm", "appSessionId")
WAIT_FOR_APPROVAL = _route(_MARKET, "POST", "/agreements/{agreementId}/wait", "timeout")
CANCEL_AGREEMENT = _route(_MARKET, "POST", "/agreements/{agreementId}/cancel")

# Market, both sides.
GET_AGREEMENT = _route(_MARKET, "GET", "/agreements/{agreementId}")
TERMINATE_AGREEMENT = _route(_MARKET, "POST", "/agreements/{agreementId}/terminate")
COLLECT_AGREEMENT_EVENTS = _route(_MARKET, "GET", "/agreementEvents", *_SINCE, "appSessionId")

# Market, provider side.
SUBSCRIBE_OFFER = _route(_MARKET, "POST", "/offers")
UNSUBSCRIBE_OFFER = _route(_MARKET, "DELETE", "/offers/{subscriptionId}")
COLLECT_OFFER_EVENTS = _route(_MARKET, "GET", "/offers/{subscriptionId}/events", *_POLL)
COUNTER_DEMAND_PROPOSAL = _route(_MARKET, "POST", "/offers/{subscriptionId}/proposals/{proposalId}")
REJECT_DEMAND_PROPOSAL = _route(_MARKET, "POST", "/offers/{subscriptionId}/proposals/{proposalId}/reject")
APPROVE_AGREEMENT = _route(_MARKET, "POST", "/agreements/{agreementId}/approve", "appSessionId", "timeout")
REJECT_AGREEMENT = _route(_MARKET, "POST", "/agreements/{agreementId}/reject")

# Payment, requestor side.
CREATE_ALLOCATION = _route(_PAYMENT, "POST", "/allocations")
LIST_ALLOCATIONS = _route(_PAYMENT, "GET", "/allocations")
GET_ALLOCATION = _route(_PAYMENT, "GET", "/allocations/{allocationId}")
RELEASE_ALLOCATION = _route(_PAYMENT, "DELETE", "/allocations/{allocationId}")
DEMAND_DECORATIONS = _route(_PAYMENT, "GET", "/demandDecorations", "allocationIds")
COLLECT_DEBIT_NOTE_EVENTS = _route(_PAYMENT, "GET", "/debitNoteEvents", *_SINCE)
COLLECT_INVOICE_EVENTS = _route(_PAYMENT, "GET", "/invoiceEvents", *_SINCE)
LIST_DEBIT_NOTES = _route(_PAYMENT, "GET", "/debitNotes")
GET_DEBIT_NOTE = _route(_PAYMENT, "GET", "/debitNotes/{debitNoteId}")
ACCEPT_DEBIT_NOTE = _route(_PAYMENT, "POST", "/debitNotes/{debitNoteId}/accept")
LIST_INVOICES = _route(_PAYMENT, "GET", "/invoices")
GET_INVOICE = _route(_PAYMENT, "GET", "/invoices/{invoiceId}")
ACCEPT_INVOICE = _route(_PAYMENT, "POST", "/invoices/{invoiceId}/accept")

# Activity, requestor side.
CREATE_ACTIVITY = _route(_ACTIVITY, "POST", "/activity")
DESTROY_ACTIVITY = _route(_ACTIVITY, "DELETE", "/activity/{activityId}")
GET_ACTIVITY_STATE = _route(_ACTIVITY, "GET", "/activity/{activityId}/state")
GET_ACTIVITY_USAGE = _route(_ACTIVITY, "GET", "/activity/{activityId}/usage")
EXEC = _route(_ACTIVITY, "POST", "/activity/{activityId}/exec")
# JSON (long-poll with commandIndex and timeout), or server-sent events with ``Accept: text/event-stream``.
GET_EXEC_BATCH_RESULTS = _route(_ACTIVITY, "GET", "/activity/{activityId}/exec/{batchId}", "commandIndex", "timeout")
GET_RUNNING_COMMAND = _route(_ACTIVITY, "GET", "/activity/{activityId}/command")

# Net (VPNs between the requestor and its providers' activities), requestor side; the last one is a WebSocket
# carrying one TCP stream to {ip}:{port} inside the VPN.
_NET = Api.NET
LIST_NETWORKS = _route(_NET, "GET", "/net")
CREATE_NETWORK = _route(_NET, "POST", "/net")
GET_NETWORK = _route(_NET, "GET", "/net/{networkId}")
REMOVE_NETWORK = _route(_NET, "DELETE", "/net/{networkId}")
LIST_ADDRESSES = _route(_NET, "GET", "/net/{networkId}/addresses")
ADD_ADDRESS = _route(_NET, "POST", "/net/{networkId}/addresses")
LIST_NODES = _route(_NET, "GET", "/net/{networkId}/nodes")
ADD_NODE = _route(_NET, "POST", "/net/{networkId}/nodes")
REMOVE_NODE = _route(_NET, "DELETE", "/net/{networkId}/nodes/{nodeId}")
CONNECT_TCP = _route(_NET, "GET", "/net/{networkId}/tcp/{ip}/{port}")

# GSB services (file transfer without a gftp binary): bind, unbind, and the WebSocket of their messages.
BIND_SERVICES = _route(_GSB, "POST", "/services")
UNBIND_SERVICES = _route(_GSB, "DELETE", "/services/{servicesId}")
SERVICE_MESSAGES = _route(_GSB, "GET", "/services/{servicesId}")

ROUTES: tuple[Route, ...] = tuple(_table)
"""Every route the client may send; ``RestClient._request`` refuses any other."""
