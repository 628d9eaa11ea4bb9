"""golem-api: run services on the Golem network, with an embedded local Golem network by default.

What a program writes is here: ``Golem``, ``Service`` and its handlers' ``Script``, ``Cluster``, the Task API
(``Task``, ``Job``: ``golem.execute_tasks``), payloads
(and :mod:`golem_api.vm`), strategies and every error. Events are in :mod:`golem_api.events`, the live console
in :mod:`golem_api.console`. ``LocalNetworkConfig``, ``ProviderSpec`` and ``LocalNode`` come from the embedded
local network (:mod:`golem_local`), which is imported only when one of them is first used.
"""

from typing import TYPE_CHECKING

from golem_api import events, vm
from golem_api._summary import (
    SummaryLogger,
)
from golem_api._version import (
    __version__,
)
from golem_api.activity.activity import (
    Activity,
)
from golem_api.activity.capture import (
    CaptureContext,
)
from golem_api.activity.handlers import (
    PendingResults,
    ScriptResults,
)
from golem_api.activity.script import (
    Command,
    CommandResult,
    Download,
    Script,
)
from golem_api.activity.storage import (
    GsbStorage,
)
from golem_api.activity.usage import (
    ActivityUsage,
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
    GolemTimeoutError,
    GoneError,
    ImageError,
    ImageNotFoundError,
    InsufficientFundsError,
    JobTimeoutError,
    LocalNodeError,
    MarketError,
    MarketTimeoutError,
    NetworkAddressError,
    NetworkError,
    NodeUnreachableError,
    NotFoundError,
    PaymentError,
    RequestTimeoutError,
    SandboxUnavailableError,
    ServerError,
    TaskError,
    TaskFailedError,
    TransferError,
    TransferTimeoutError,
    VpnConnectionError,
    VpnConnectionTimeoutError,
)
from golem_api.golem import (
    Golem,
)
from golem_api.market.agreement import (
    Agreement,
)
from golem_api.market.negotiation import (
    Demand,
)
from golem_api.market.scoring import (
    SCORE_NEUTRAL,
    SCORE_REJECTED,
    SCORE_TRUSTED,
    ScoringStrategy,
)
from golem_api.market.strategy import (
    LeastExpensiveLinearPayu,
    MarketStrategy,
    Offer,
    Verdict,
)
from golem_api.network import (
    HttpProxy,
    Network,
    Node,
    TcpConnection,
    TcpProxy,
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
    Handler,
    Service,
)
from golem_api.services.state import (
    ServiceState,
)
from golem_api.tasks import (
    Job,
    Task,
    TaskStatus,
    TaskSummary,
)
from golem_shared.constraints import (
    Constraint,
    parse_constraints,
)
from golem_shared.pricing import (
    LinearPricing,
)

if TYPE_CHECKING:
    from golem_api._local import LocalNetworkConfig, LocalNode, ProviderSpec


def __getattr__(name: str) -> object:
    from golem_api import _local

    if name in _local.PUBLIC_NAMES:
        return _local.public_name(name)
    raise AttributeError(f"module 'golem_api' has no attribute {name!r}")


__all__ = [
    "SCORE_NEUTRAL",
    "SCORE_REJECTED",
    "SCORE_TRUSTED",
    "Activity",
    "ActivityError",
    "ActivityUsage",
    "Agreement",
    "AgreementError",
    "ApiError",
    "AuthenticationError",
    "BadRequestError",
    "BatchTimeoutError",
    "BudgetExceededError",
    "CaptureContext",
    "Cluster",
    "Command",
    "CommandExecutionError",
    "CommandResult",
    "ConfigurationError",
    "ConflictError",
    "Constraint",
    "ConstraintSyntaxError",
    "CustomPayload",
    "Demand",
    "Download",
    "Golem",
    "GolemError",
    "GolemTimeoutError",
    "GoneError",
    "GsbStorage",
    "Handler",
    "HttpProxy",
    "ImageError",
    "ImageNotFoundError",
    "InsufficientFundsError",
    "Job",
    "JobTimeoutError",
    "LeastExpensiveLinearPayu",
    "LinearPricing",
    "LocalNetworkConfig",
    "LocalNode",
    "LocalNodeError",
    "MarketError",
    "MarketStrategy",
    "MarketTimeoutError",
    "Network",
    "NetworkAddressError",
    "NetworkError",
    "Node",
    "NodeUnreachableError",
    "NotFoundError",
    "Offer",
    "Payload",
    "PaymentError",
    "PendingResults",
    "ProviderSpec",
    "RequestTimeoutError",
    "SandboxUnavailableError",
    "ScoringStrategy",
    "Script",
    "ScriptResults",
    "ServerError",
    "Service",
    "ServiceState",
    "SummaryLogger",
    "Task",
    "TaskError",
    "TaskFailedError",
    "TaskStatus",
    "TaskSummary",
    "TcpConnection",
    "TcpProxy",
    "TransferError",
    "TransferTimeoutError",
    "Verdict",
    "VmPayload",
    "VpnConnectionError",
    "VpnConnectionTimeoutError",
    "WorkContext",
    "__version__",
    "events",
    "parse_constraints",
    "vm",
]
