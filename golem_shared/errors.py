"""The error base both halves share: the root of golem-api's one error tree and the branches the requestor
(:mod:`golem_api.errors`) and the local network (:mod:`golem_local`) both raise.

::

    GolemError
    ├── ConfigurationError          a bad argument or setting, found before anything was sent
    │   └── ConstraintSyntaxError   a constraint string that does not parse (carries the position)
    ├── GolemTimeoutError           a wait golem-api bounds on purpose ran out (also the builtin TimeoutError)
    ├── MarketError                 negotiation did not lead where it should
    ├── ImageError                  an image could not be built, found, fetched or read
    │   └── ImageNotFoundError      a registry knows no image by that tag or hash
    └── LocalNodeError              the embedded local network could not start or run
        └── SandboxUnavailableError the local runtime's sandbox (bubblewrap) is missing or does not work

The requestor's branches (HTTP answers, payments, activities) are in :mod:`golem_api.errors`, the local
network's own (Dockerfiles, image files) in :mod:`golem_local.images.errors`.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "ConstraintSyntaxError",
    "GolemError",
    "GolemTimeoutError",
    "ImageError",
    "ImageNotFoundError",
    "LocalNodeError",
    "MarketError",
    "SandboxUnavailableError",
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


class GolemTimeoutError(GolemError, TimeoutError):
    """A wait that golem-api bounds on purpose ran out: a market wait, a script's timeout, a transfer,
    ``Cluster.wait_running``, ``EventBus.wait_for``.

    It is also the builtin :class:`TimeoutError`, so ``except TimeoutError`` catches it too; on Python 3.10,
    where :class:`asyncio.TimeoutError` is a different class, ``except GolemTimeoutError`` is the one name
    that catches every timeout golem-api raises. ``timeout`` is the bound in seconds, where one applies.
    """

    def __init__(self, message: str, *, timeout: float | None = None) -> None:
        self.timeout = timeout
        super().__init__(message)


class MarketError(GolemError):
    """Negotiation on the market did not lead where it should."""


class ImageError(GolemError):
    """An image could not be built, found, fetched or read."""


class ImageNotFoundError(ImageError):
    """A registry knows no image by ``tag`` or ``hash``; the message says how to build or publish one."""

    def __init__(self, message: str, *, tag: str | None = None, hash: str | None = None) -> None:
        self.tag = tag
        self.hash = hash
        super().__init__(message)


class LocalNodeError(GolemError):
    """The embedded local Golem network could not start or failed while running."""


class SandboxUnavailableError(LocalNodeError):
    """The local ``vm`` runtime cannot sandbox commands: bubblewrap is missing or refuses to run here."""
