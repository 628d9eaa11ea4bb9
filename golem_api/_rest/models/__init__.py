"""Typed values of the daemon's API: frozen attrs models, snake_case here, camelCase on the wire.

Each model has ``from_json(data)``, which raises :class:`ValueError` naming the model and the field when
the data does not fit; unknown extra fields are ignored.
"""

from golem_api._rest.models.activity import (
    RUNTIME_EVENT_KINDS,
    ActivityState,
    ActivityUsage,
    ExeScriptCommandResult,
    ExeScriptCommandState,
    RuntimeEvent,
)
from golem_api._rest.models.identity import Identity
from golem_api._rest.models.market import (
    Agreement,
    AgreementEvent,
    AgreementOperationEvent,
    MarketEvent,
    PropertyQueryEvent,
    Proposal,
    ProposalEvent,
    ProposalRejectedEvent,
    UnknownMarketEvent,
    parse_market_event,
)
from golem_api._rest.models.net import NetworkAddress, NetworkInfo, NetworkNode
from golem_api._rest.models.payment import Allocation, DebitNote, DemandDecoration, Invoice, PaymentEvent

__all__ = [
    "RUNTIME_EVENT_KINDS",
    "ActivityState",
    "ActivityUsage",
    "Agreement",
    "AgreementEvent",
    "AgreementOperationEvent",
    "Allocation",
    "DebitNote",
    "DemandDecoration",
    "ExeScriptCommandResult",
    "ExeScriptCommandState",
    "Identity",
    "Invoice",
    "MarketEvent",
    "NetworkAddress",
    "NetworkInfo",
    "NetworkNode",
    "PaymentEvent",
    "PropertyQueryEvent",
    "Proposal",
    "ProposalEvent",
    "ProposalRejectedEvent",
    "RuntimeEvent",
    "UnknownMarketEvent",
    "parse_market_event",
]
