"""The embedded local Golem network: a yagna-compatible node on loopback with providers that negotiate and bill.

``LocalNode`` is the entry point; ``LocalNetworkConfig`` and ``ProviderSpec`` shape the network. The parts
(``LocalMarket``, ``LocalProvider``, the ledger and the activity hub) are importable from their modules.
"""

from golem_local.config import LocalNetworkConfig, ProviderSpec
from golem_local.market import LocalMarket
from golem_local.node import LocalNode
from golem_local.provider import Billing, LocalProvider

__all__ = [
    "Billing",
    "LocalMarket",
    "LocalNetworkConfig",
    "LocalNode",
    "LocalProvider",
    "ProviderSpec",
]
