"""A hand-built plan for the IPVS tests (svcnet.plan types)."""

from __future__ import annotations

from svcnet.model import IPFamily, Protocol
from svcnet.plan import (
    Action,
    EndpointSet,
    Frontend,
    FrontendKind,
    NodeSettings,
    Plan,
    PlanEndpoint,
    PortPlan,
    Route,
    ServicePlan,
    ServiceRef,
)

NODE_IP = "192.168.56.11"
SETTINGS = NodeSettings("node-a", (NODE_IP,), ("10.244.0.0/16",), ("10.96.0.0/16",))
C = Route(Action.FORWARD, EndpointSet.CLUSTER, False)
CM = Route(Action.FORWARD, EndpointSet.CLUSTER, True)
LOCAL = Route(Action.FORWARD, EndpointSet.LOCAL, False)
LM = Route(Action.FORWARD, EndpointSet.LOCAL, True)
EPS = (PlanEndpoint("10.244.1.10", 8080), PlanEndpoint("10.244.2.10", 8080))


def plan(affinity: int | None = 600, eps: tuple[PlanEndpoint, ...] = EPS) -> Plan:
    port = PortPlan.build(
        "http",
        IPFamily.IPv4,
        Protocol.TCP,
        [
            Frontend(FrontendKind.CLUSTER_IP, "10.96.0.10", 80),
            Frontend(FrontendKind.NODE_PORT, NODE_IP, 30080),
            Frontend(FrontendKind.LOAD_BALANCER, "203.0.113.1", 80),
        ],
        list(eps),
        list(eps[:1]),
        C,
        CM,
        CM,
        # externalTrafficPolicy Local: pods short-circuit to the cluster set
        C,
        LM,
        LOCAL,
        source_ranges=("198.51.100.0/24",),
        affinity_timeout=affinity,
    )
    svc = ServicePlan(ServiceRef("default", "web"), ("10.96.0.10",), (port,))
    return Plan(SETTINGS, {svc.ref: svc})
