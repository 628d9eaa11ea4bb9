"""VPNs of the local network: the net API (:mod:`.api`), its records (:mod:`.model`), the data plane of network
namespaces (:mod:`.plane`, :mod:`.netns`) and :class:`~.vpn.LocalVpn`, which ties them to the node and to the
providers' sandboxes. See ``docs/local-network.md`` ("VPN") and ``docs/architecture.md``."""

from golem_local.net.vpn import LocalVpn

__all__ = ["LocalVpn"]
