"""The one door from the requestor into the embedded local network (:mod:`golem_local`), opened lazily.

``import golem_api`` loads nothing of the local network (nor ``aiohttp.web``): :class:`~golem_api.Golem` starts
a local node only when no app key is configured, and the command line adds the local network's commands
when it builds its parser. Both come through here, and nothing else in :mod:`golem_api` imports
:mod:`golem_local` (``tests/contract.py`` checks it in ``./scripts/test``). The names
``golem_api.LocalNetworkConfig``, ``ProviderSpec`` and ``LocalNode`` are served by :func:`public_name`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

    from golem_local.config import LocalNetworkConfig as LocalNetworkConfig
    from golem_local.config import ProviderSpec as ProviderSpec
    from golem_local.node import LocalNode as LocalNode

__all__ = ["PUBLIC_NAMES", "add_cli_commands", "default_config", "new_node", "public_name", "vpn_unavailable"]

PUBLIC_NAMES = frozenset({"LocalNetworkConfig", "LocalNode", "ProviderSpec"})
"""The local network's names that ``golem_api`` offers at its top level, imported on first use."""


def public_name(name: str) -> object:
    """The local network's public class called ``name`` (one of :data:`PUBLIC_NAMES`)."""
    import golem_local

    if name not in PUBLIC_NAMES:
        raise AttributeError(name)
    value: object = getattr(golem_local, name)
    return value


def default_config(*, payment_platform: str, subnet: str) -> LocalNetworkConfig:
    """The local network ``Golem`` starts when it has no configuration of its own: the default providers, on
    the requestor's subnet and payment platform."""
    from golem_local.config import LocalNetworkConfig

    return LocalNetworkConfig.with_providers(
        len(LocalNetworkConfig().providers), payment_platform=payment_platform, subnet=subnet
    )


def new_node(config: LocalNetworkConfig) -> LocalNode:
    """A local node for ``config``, not yet started (enter it with ``async with``)."""
    from golem_local.node import LocalNode

    return LocalNode(config)


def vpn_unavailable(node: LocalNode) -> str | None:
    """Why ``node``'s providers cannot join VPNs on this machine, or ``None`` when they can."""
    return node.vpn.unavailable


def add_cli_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the local network's ``golem-api`` commands (``node``, ``image``) to the parser's subcommands."""
    from golem_local.cli import add_commands

    add_commands(commands)
