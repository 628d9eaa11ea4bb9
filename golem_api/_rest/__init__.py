"""The typed REST client of the Golem daemon's API (a yagna daemon or the embedded local node).

``RestClient(ApiConfig.from_env())`` gives ``.market``, ``.payment`` and ``.activity``; every call it can
make is listed in :data:`golem_api._rest.routes.ROUTES`, and every HTTP failure becomes a
:class:`~golem_api.errors.GolemError` (see :func:`error_for_status`).
"""

from golem_api._rest.activity import ActivityApi
from golem_api._rest.client import RestClient
from golem_api._rest.config import Api, ApiConfig
from golem_api._rest.http_errors import error_for_status
from golem_api._rest.market import MarketApi
from golem_api._rest.models import (
    ActivityState,
    ActivityUsage,
    Agreement,
    AgreementEvent,
    AgreementOperationEvent,
    Allocation,
    DebitNote,
    DemandDecoration,
    Identity,
    Invoice,
    MarketEvent,
    PaymentEvent,
    PropertyQueryEvent,
    Proposal,
    ProposalEvent,
    ProposalRejectedEvent,
    UnknownMarketEvent,
    parse_market_event,
)
from golem_api._rest.payment import PaymentApi
from golem_api._rest.routes import ROUTES, Route

__all__ = [
    "ROUTES",
    "ActivityApi",
    "ActivityState",
    "ActivityUsage",
    "Agreement",
    "AgreementEvent",
    "AgreementOperationEvent",
    "Allocation",
    "Api",
    "ApiConfig",
    "DebitNote",
    "DemandDecoration",
    "Identity",
    "Invoice",
    "MarketApi",
    "MarketEvent",
    "PaymentApi",
    "PaymentEvent",
    "PropertyQueryEvent",
    "Proposal",
    "ProposalEvent",
    "ProposalRejectedEvent",
    "RestClient",
    "Route",
    "UnknownMarketEvent",
    "error_for_status",
    "parse_market_event",
]
