"""Pure, persistent allocators: ClusterIPs, NodePorts (and health-check ports),
LoadBalancer pool addresses and pod IPs.

* :mod:`~svcnet.state.allocation.pool`: :class:`Pool`, a range of values with a
  persistent used-tree and owners (every operation O(log range)), and the pool
  of each kind;
* :mod:`~svcnet.state.allocation.services`: :class:`ServiceAllocations`, what
  services hold (ClusterIPs, NodePorts, LoadBalancer addresses and the queue of
  services waiting for one);
* :mod:`~svcnet.state.allocation.pods`: :class:`PodAllocations`, the pod IPs of
  each node's podCIDRs and the pods waiting for one.

The two allocations share nothing (each numbers its own waiting queue), so the
cluster state keeps them side by side.
"""

from __future__ import annotations

from svcnet.state.allocation.pods import PodAllocations
from svcnet.state.allocation.pool import (
    Pool,
    cluster_ip_pool,
    lb_pool,
    node_port_pool,
    pod_ip_pool,
)
from svcnet.state.allocation.services import ServiceAllocations

__all__ = [
    "PodAllocations",
    "Pool",
    "ServiceAllocations",
    "cluster_ip_pool",
    "lb_pool",
    "node_port_pool",
    "pod_ip_pool",
]
