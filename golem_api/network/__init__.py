"""VPNs between the requestor and its service instances, and TCP into them.

- :class:`~golem_api.network.network.Network`, :class:`~golem_api.network.network.Node`: made by
  ``Golem.create_network`` and ``run_service(network=…)``, as in yapapi;
- :class:`~golem_api.network.connection.TcpConnection`: one TCP stream into the VPN (``node.connect(port)``);
- :class:`~golem_api.network.proxy.TcpProxy`, :class:`~golem_api.network.proxy.HttpProxy`: a local port or a
  local HTTP server forwarded to instances (yapapi's ``SocketProxy`` and ``LocalHttpProxy``).
"""

from golem_api.network.connection import TcpConnection
from golem_api.network.network import Network, NetworkState, Node
from golem_api.network.proxy import HttpProxy, TcpProxy

__all__ = ["HttpProxy", "Network", "NetworkState", "Node", "TcpConnection", "TcpProxy"]
