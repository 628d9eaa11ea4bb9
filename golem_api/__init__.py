"""golem-api: run services on the Golem network, with an embedded local Golem network by default."""

from golem_api.activity.activity import (
    Activity,
)
from golem_api.activity.script import (
    Command,
    CommandResult,
    Download,
    Script,
)
from golem_api.activity.storage import (
    GsbStorage,
    TransferError,
)
from golem_api.activity.work_context import (
    WorkContext,
)
from golem_api.errors import (
    ActivityError,
    AgreementError,
    ApiError,
    AuthenticationError,
    BadRequestError,
    BatchTimeoutError,
    BudgetExceededError,
    CommandExecutionError,
    ConfigurationError,
    ConflictError,
    ConstraintSyntaxError,
    GolemError,
    GoneError,
    InsufficientFundsError,
    LocalNodeError,
    MarketError,
    NodeUnreachableError,
    NotFoundError,
    PaymentError,
    RequestTimeoutError,
    SandboxUnavailableError,
    ServerError,
)
from golem_api.events import (
    ActivityCreated,
    ActivityDestroyed,
    AgreementConfirmed,
    AgreementCreated,
    AgreementRejected,
    AgreementTerminated,
    AllocationCreated,
    AllocationReleased,
    CommandExecuted,
    CommandOutput,
    DebitNoteAccepted,
    DebitNoteRejected,
    DemandSubscribed,
    DocumentRefused,
    Event,
    EventBus,
    GolemStarted,
    GolemStopped,
    InvoiceAccepted,
    InvoiceReceived,
    NoOffersWarning,
    OfferReceived,
    OfferRejected,
    PaymentFailed,
    ProposalRejectedByProvider,
    ScriptFinished,
    ScriptSent,
    ServiceRespawned,
    ServiceStateChanged,
    Subscription,
    UnpaidAgreementsWarning,
)
from golem_api.golem import (
    Golem,
)
from golem_api.local.config import (
    LocalNetworkConfig,
    ProviderSpec,
)
from golem_api.local.node import (
    LocalNode,
)
from golem_api.market.agreement import (
    Agreement,
)
from golem_api.market.constraints import (
    Constraint,
    parse_constraints,
)
from golem_api.market.negotiation import (
    Demand,
)
from golem_api.market.pricing import (
    LinearPricing,
)
from golem_api.market.strategy import (
    LeastExpensiveLinearPayu,
    MarketStrategy,
    Offer,
    Verdict,
)
from golem_api.payload import (
    CustomPayload,
    Payload,
    VmPayload,
)
from golem_api.services.cluster import (
    Cluster,
)
from golem_api.services.service import (
    Service,
)
from golem_api.services.state import (
    ServiceState,
)
from golem_api.summary import (
    SummaryLogger,
)

__all__ = [
    "Activity",
    "ActivityCreated",
    "ActivityDestroyed",
    "ActivityError",
    "Agreement",
    "AgreementConfirmed",
    "AgreementCreated",
    "AgreementError",
    "AgreementRejected",
    "AgreementTerminated",
    "AllocationCreated",
    "AllocationReleased",
    "ApiError",
    "AuthenticationError",
    "BadRequestError",
    "BatchTimeoutError",
    "BudgetExceededError",
    "Cluster",
    "Command",
    "CommandExecuted",
    "CommandExecutionError",
    "CommandOutput",
    "CommandResult",
    "ConfigurationError",
    "ConflictError",
    "Constraint",
    "ConstraintSyntaxError",
    "CustomPayload",
    "DebitNoteAccepted",
    "DebitNoteRejected",
    "Demand",
    "DemandSubscribed",
    "DocumentRefused",
    "Download",
    "Event",
    "EventBus",
    "Golem",
    "GolemError",
    "GolemStarted",
    "GolemStopped",
    "GoneError",
    "GsbStorage",
    "InsufficientFundsError",
    "InvoiceAccepted",
    "InvoiceReceived",
    "LeastExpensiveLinearPayu",
    "LinearPricing",
    "LocalNetworkConfig",
    "LocalNode",
    "LocalNodeError",
    "MarketError",
    "MarketStrategy",
    "NoOffersWarning",
    "NodeUnreachableError",
    "NotFoundError",
    "Offer",
    "OfferReceived",
    "OfferRejected",
    "Payload",
    "PaymentError",
    "PaymentFailed",
    "ProposalRejectedByProvider",
    "ProviderSpec",
    "RequestTimeoutError",
    "SandboxUnavailableError",
    "Script",
    "ScriptFinished",
    "ScriptSent",
    "ServerError",
    "Service",
    "ServiceRespawned",
    "ServiceState",
    "ServiceStateChanged",
    "Subscription",
    "SummaryLogger",
    "TransferError",
    "UnpaidAgreementsWarning",
    "Verdict",
    "VmPayload",
    "WorkContext",
    "parse_constraints",
]
