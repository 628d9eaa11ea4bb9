"""Every error golem-api raises on purpose derives from :class:`GolemError`.

The tree::

    GolemError
    ├── ConfigurationError          a bad argument or setting, found before anything was sent
    │   └── ConstraintSyntaxError   a constraint string that does not parse (carries the position)
    ├── NodeUnreachableError        no HTTP answer at all: refused, DNS, time-out (carries the URL)
    ├── ApiError                    the node answered with an error status (method, path, status, message)
    │   ├── BadRequestError         400
    │   ├── AuthenticationError     401 / 403: missing or wrong app key
    │   ├── NotFoundError           404
    │   ├── RequestTimeoutError     408: a long-poll ran out of time
    │   ├── ConflictError           409
    │   ├── GoneError               410: the object has expired, ended or was released
    │   └── ServerError             5xx
    ├── MarketError                 negotiation did not lead where it should
    │   └── AgreementError          an agreement was refused, expired or broke
    ├── PaymentError                allocations, debit notes, invoices
    │   ├── InsufficientFundsError  the budget is larger than the account holds
    │   └── BudgetExceededError     paying a document would go over the budget
    ├── ActivityError               running commands on a provider
    │   ├── CommandExecutionError   a command of a script failed (command, index, message, stdout, stderr)
    │   └── BatchTimeoutError       a script did not finish within its timeout
    └── LocalNodeError              the embedded local network could not start or run
        └── SandboxUnavailableError the local runtime's sandbox (bubblewrap) is missing or does not work

Messages say what happened, show the offending value and, where there is one, what to do about it.
Context travels as attributes (``status``, ``path``, ``position``, …) so that code can act on it.
"""

from __future__ import annotations

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
    "GoneError",
    "InsufficientFundsError",
    "LocalNodeError",
    "MarketError",
    "NodeUnreachableError",
    "NotFoundError",
    "PaymentError",
    "RequestTimeoutError",
    "SandboxUnavailableError",
    "ServerError",
]


class GolemError(Exception):
    """Base of every error raised by golem-api."""


class ConfigurationError(GolemError, ValueError):
    """An argument or setting is wrong; nothing was sent to the node."""


class ConstraintSyntaxError(ConfigurationError):
    """A constraint string could not be parsed.

    ``position`` is the 0-based offset of the offending character in ``text``; ``str(error)``
    shows the text with a caret under that position.
    """

    def __init__(self, reason: str, *, text: str, position: int) -> None:
        self.reason = reason
        self.text = text
        self.position = position
        # Show only the line holding the offending character, with a caret under it.
        line_start = text.rfind("\n", 0, position) + 1
        line_end = text.find("\n", position)
        line = text[line_start : None if line_end < 0 else line_end]
        caret = " " * (position - line_start) + "^"
        super().__init__(f"{reason} at position {position}:\n  {line}\n  {caret}")


class NodeUnreachableError(GolemError):
    """The node at ``url`` gave no HTTP answer (connection refused, unknown host, time-out)."""

    def __init__(self, message: str, *, url: str) -> None:
        self.url = url
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


class RequestTimeoutError(ApiError):
    """408: the node waited as long as it was asked to and nothing happened."""


class ConflictError(ApiError):
    """409: the object is in a state that does not allow the operation."""


class GoneError(ApiError):
    """410: the object expired, ended or was released."""


class ServerError(ApiError):
    """5xx: the node failed."""


class MarketError(GolemError):
    """Negotiation on the market did not lead where it should."""


class AgreementError(MarketError):
    """An agreement was rejected, expired, or could not be confirmed."""

    def __init__(self, message: str, *, agreement_id: str | None = None) -> None:
        self.agreement_id = agreement_id
        super().__init__(message)


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


class BatchTimeoutError(ActivityError):
    """A script did not finish within its timeout; its unfinished commands were not waited for."""

    def __init__(self, message: str, *, batch_id: str | None = None, timeout: float | None = None) -> None:
        self.batch_id = batch_id
        self.timeout = timeout
        super().__init__(message)


class LocalNodeError(GolemError):
    """The embedded local Golem network could not start or failed while running."""


class SandboxUnavailableError(LocalNodeError):
    """The local ``vm`` runtime cannot sandbox commands: bubblewrap is missing or refuses to run here."""
