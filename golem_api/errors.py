"""Every error golem-api raises on purpose derives from :class:`GolemError`.

The tree (the root and the branches both halves raise live in :mod:`golem_shared.errors`; all are importable
from here)::

    GolemError
    ├── ConfigurationError          a bad argument or setting, found before anything was sent
    │   └── ConstraintSyntaxError   a constraint string that does not parse (carries the position)
    ├── GolemTimeoutError           a bounded wait ran out (also the builtin TimeoutError, on every Python)
    │   ├── BatchTimeoutError       a script did not finish within its timeout (also an ActivityError)
    │   ├── MarketTimeoutError      no agreement within the time asked for (also a MarketError)
    │   ├── JobTimeoutError         the tasks did not finish within the job's timeout (also a TaskError)
    │   ├── TransferTimeoutError    a transfer did not finish in time (also a TransferError)
    │   └── RequestTimeoutError     408: a long-poll ran out of time (also an ApiError)
    ├── NodeUnreachableError        no HTTP answer at all: refused, DNS, time-out (carries the URL)
    ├── ApiError                    the node answered with an error status (method, path, status, message)
    │   ├── BadRequestError         400
    │   ├── AuthenticationError     401 / 403: missing or wrong app key
    │   ├── NotFoundError           404
    │   ├── RequestTimeoutError     408
    │   ├── ConflictError           409
    │   ├── GoneError               410: the object has expired, ended or was released
    │   └── ServerError             5xx
    ├── MarketError                 negotiation did not lead where it should
    │   ├── AgreementError          an agreement was refused, expired or broke
    │   └── MarketTimeoutError      no agreement within the time asked for (also a GolemTimeoutError)
    ├── PaymentError                allocations, debit notes, invoices
    │   ├── InsufficientFundsError  the budget is larger than the account holds
    │   └── BudgetExceededError     paying a document would go over the budget
    ├── ActivityError               running commands on a provider
    │   ├── CommandExecutionError   a command of a script failed (command, index, message, stdout, stderr)
    │   ├── TransferError           data from a provider could not be received
    │   │   └── TransferTimeoutError  … within its time (also a GolemTimeoutError)
    │   └── BatchTimeoutError
    ├── TaskError                   the Task API (execute_tasks): a task used wrongly, or a job that failed
    │   ├── TaskFailedError         a task failed on every attempt it had (carries the task and the reasons)
    │   └── JobTimeoutError         the tasks did not all finish within the job's timeout (also a GolemTimeoutError)
    ├── NetworkError                a VPN operation failed (the network was removed, an address is wrong…)
    │   ├── NetworkAddressError     an address outside the network, taken, or not an address (also a
    │   │                           ConfigurationError)
    │   └── VpnConnectionError      a TCP connection into the VPN was refused or could not be made
    │       └── VpnConnectionTimeoutError  … nothing answered in time (also a GolemTimeoutError)
    ├── ImageError                  an image could not be built, found, fetched or read
    │   └── ImageNotFoundError      a registry knows no image by that tag or hash
    └── LocalNodeError              the embedded local network could not start or run
        └── SandboxUnavailableError the local runtime's sandbox (bubblewrap) is missing or does not work

Messages say what happened, show the offending value and, where there is one, what to do about it.
Context travels as attributes (``status``, ``path``, ``position``, …) so that code can act on it.
"""

from __future__ import annotations

from golem_shared.errors import (
    ConfigurationError,
    ConstraintSyntaxError,
    GolemError,
    GolemTimeoutError,
    ImageError,
    ImageNotFoundError,
    LocalNodeError,
    MarketError,
    SandboxUnavailableError,
)

__all__ = [
    "ActivityError",
    "AgreementError",
    "ApiError",
    "AuthenticationError",
    "BadRequestError",
    "BatchTimeoutError",
    "BudgetExceededError",
    "CommandExecutionError",
    "ConfigurationError",
    "ConflictError",
    "ConstraintSyntaxError",
    "GolemError",
    "GolemTimeoutError",
    "GoneError",
    "ImageError",
    "ImageNotFoundError",
    "InsufficientFundsError",
    "JobTimeoutError",
    "LocalNodeError",
    "MarketError",
    "MarketTimeoutError",
    "NetworkAddressError",
    "NetworkError",
    "NodeUnreachableError",
    "NotFoundError",
    "PaymentError",
    "RequestTimeoutError",
    "SandboxUnavailableError",
    "ServerError",
    "TaskError",
    "TaskFailedError",
    "TransferError",
    "TransferTimeoutError",
    "VpnConnectionError",
    "VpnConnectionTimeoutError",
]


class NodeUnreachableError(GolemError):
    """The node at ``url`` gave no HTTP answer (connection refused, unknown host, time-out).

    ``down_for`` is how many seconds the node has given no answer to any request of this client (0 for the
    first failure after an answer), so that retries stop early once it has been gone for long.
    """

    def __init__(self, message: str, *, url: str, down_for: float = 0.0) -> None:
        self.url = url
        self.down_for = down_for
        super().__init__(message)


class ApiError(GolemError):
    """The node answered ``method path`` with an error ``status``; ``message`` is what the node said."""

    def __init__(self, *, method: str, path: str, status: int, message: str, hint: str = "") -> None:
        self.method = method
        self.path = path
        self.status = status
        self.message = message
        self.hint = hint
        text = f"{method} {path} answered {status}: {message or '(no message)'}"
        if hint:
            text += f". {hint}"
        super().__init__(text)


class BadRequestError(ApiError):
    """400: the node refused the request as malformed or not allowed now."""


class AuthenticationError(ApiError):
    """401/403: the app key is missing or wrong."""


class NotFoundError(ApiError):
    """404: the node does not know the object."""


class RequestTimeoutError(ApiError, GolemTimeoutError):
    """408: the node waited as long as it was asked to and nothing happened."""


class ConflictError(ApiError):
    """409: the object is in a state that does not allow the operation."""


class GoneError(ApiError):
    """410: the object expired, ended or was released."""


class ServerError(ApiError):
    """5xx: the node failed."""


class AgreementError(MarketError):
    """An agreement was rejected, expired, or could not be confirmed."""

    def __init__(self, message: str, *, agreement_id: str | None = None) -> None:
        self.agreement_id = agreement_id
        super().__init__(message)


class MarketTimeoutError(MarketError, GolemTimeoutError):
    """No provider approved an agreement within the time asked for; the message says what the market saw."""


class PaymentError(GolemError):
    """Allocations, debit notes and invoices."""


class InsufficientFundsError(PaymentError):
    """The budget asked for is more than the payment account holds."""

    def __init__(self, message: str, *, requested: object = None, platform: str | None = None) -> None:
        self.requested = requested
        self.platform = platform
        super().__init__(message)


class BudgetExceededError(PaymentError):
    """Accepting a document would spend more than the budget."""


class ActivityError(GolemError):
    """Something went wrong while running commands on a provider."""


class CommandExecutionError(ActivityError):
    """A command of a script failed on the provider.

    Raised inside a service handler at the ``yield`` of the script, and by awaiting the failed command's
    result (or the result of a command that did not run because an earlier one failed).
    """

    def __init__(
        self,
        command: str,
        message: str,
        *,
        index: int,
        stdout: str | None = None,
        stderr: str | None = None,
        activity_id: str | None = None,
    ) -> None:
        self.command = command
        self.index = index
        self.message = message
        self.stdout = stdout
        self.stderr = stderr
        self.activity_id = activity_id
        text = f"command #{index} {command} failed: {message}"
        if stderr:
            text += f"\nstderr: {stderr.rstrip()[-2000:]}"
        super().__init__(text)


class TransferError(ActivityError):
    """Data sent by a provider could not be received: too large, incomplete, a wrong hash, or the connection
    to the node ended before the provider said it was done."""


class TransferTimeoutError(TransferError, GolemTimeoutError):
    """A transfer did not finish within its time (``timeout``, in seconds)."""


class BatchTimeoutError(ActivityError, GolemTimeoutError):
    """A script did not finish within its timeout; its unfinished commands were not waited for."""

    def __init__(self, message: str, *, batch_id: str | None = None, timeout: float | None = None) -> None:
        self.batch_id = batch_id
        super().__init__(message, timeout=timeout)


# --- the Task API (golem_api.tasks) ---------------------------------------------------------------


class TaskError(GolemError):
    """The Task API: a task used wrongly (accepted twice, say), or a job of tasks that could not go on."""


class TaskFailedError(TaskError):
    """A task failed on each of its ``attempts`` (a worker that raised, a result rejected with ``retry=True``);
    ``reasons`` holds why, one line per attempt, and ``task`` is the :class:`~golem_api.tasks.task.Task`."""

    def __init__(self, message: str, *, task: object, reasons: tuple[str, ...] = ()) -> None:
        self.task = task
        self.reasons = reasons
        super().__init__(message)


class JobTimeoutError(TaskError, GolemTimeoutError):
    """The tasks of ``execute_tasks`` did not all finish within its ``timeout`` (seconds); ``job_id`` names the job."""

    def __init__(self, message: str, *, job_id: str, timeout: float) -> None:
        self.job_id = job_id
        super().__init__(message, timeout=timeout)


class NetworkError(GolemError):
    """A VPN operation failed: the network was removed, the node refused a change, an instance is not in one."""

    def __init__(self, message: str, *, network_id: str | None = None) -> None:
        self.network_id = network_id
        super().__init__(message)


class NetworkAddressError(NetworkError, ConfigurationError):
    """An address given for a VPN is not an address, is outside the network's range, or is already taken."""


class VpnConnectionError(NetworkError):
    """A TCP connection to ``ip:port`` inside a VPN could not be made: ``reason`` says why (refused: nothing
    listens there)."""

    def __init__(self, message: str, *, network_id: str | None = None, ip: str = "", port: int = 0) -> None:
        self.ip = ip
        self.port = port
        super().__init__(message, network_id=network_id)


class VpnConnectionTimeoutError(VpnConnectionError, GolemTimeoutError):
    """Nothing answered at ``ip:port`` inside the VPN within the node's connect time (5 s on yagna)."""
