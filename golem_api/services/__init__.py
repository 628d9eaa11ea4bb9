"""Services: long-lived programs on providers, each instance driven through its lifecycle by a cluster.

``from golem_api.services import Service, ServiceState`` works as ``from yapapi.services import …`` does.
"""

from golem_api.services.cluster import Cluster
from golem_api.services.service import Service
from golem_api.services.state import ServiceState

__all__ = ["Cluster", "Service", "ServiceState"]
