"""Hand-built plans for the tests (svcnet.plan types)."""

from __future__ import annotations

from svcnet.model import IPFamily, Protocol
from svcnet.plan import (
    DROP,
    REJECT,
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

NODE = "node-a"
NODE_IP = "192.168.56.11"
SETTINGS = NodeSettings(
    NODE,
    (NODE_IP, "fd00:56::11"),
    ("10.244.0.0/16", "fd00:244::/32"),
    ("10.96.0.0/16", "fd00:96::/108"),
)
C = Route(Action.FORWARD, EndpointSet.CLUSTER, False)
CM = Route(Action.FORWARD, EndpointSet.CLUSTER, True)
LOCAL = Route(Action.FORWARD, EndpointSet.LOCAL, False)
LM = Route(Action.FORWARD, EndpointSet.LOCAL, True)
__all__ = ["CM", "DROP", "LM", "LOCAL", "NODE", "NODE_IP", "REJECT", "SETTINGS", "C", "sample_plan"]


def ep(text: str) -> PlanEndpoint:
    ip, _, port = text.rpartition(":")
    return PlanEndpoint(ip.strip("[]"), int(port))


def sample_plan() -> Plan:
    web = ServicePlan(
        ServiceRef("default", "web"),
        ("10.96.0.10", "fd00:96::10"),
        (
            PortPlan.build(
                "http",
                IPFamily.IPv4,
                Protocol.TCP,
                [
                    Frontend(FrontendKind.CLUSTER_IP, "10.96.0.10", 80),
                    Frontend(FrontendKind.NODE_PORT, NODE_IP, 30080),
                    Frontend(FrontendKind.LOAD_BALANCER, "203.0.113.1", 80),
                ],
                [ep("10.244.1.10:8080"), ep("10.244.2.10:8080"), ep("10.244.2.11:8080")],
                [ep("10.244.1.10:8080")],
                C,
                CM,
                CM,
                C,
                LM,
                LOCAL,
                source_ranges=("198.51.100.0/24",),
            ),
            PortPlan.build(
                "dns",
                IPFamily.IPv4,
                Protocol.UDP,
                [Frontend(FrontendKind.CLUSTER_IP, "10.96.0.10", 53)],
                [ep("10.244.2.10:5353")],
                [],
                C,
                CM,
                CM,
                CM,
                CM,
                CM,
            ),
            PortPlan.build(
                "http",
                IPFamily.IPv6,
                Protocol.TCP,
                [Frontend(FrontendKind.CLUSTER_IP, "fd00:96::10", 80)],
                [ep("[fd00:244:1::10]:8080"), ep("[fd00:244:2::10]:8080")],
                [],
                C,
                CM,
                CM,
                CM,
                CM,
                CM,
            ),
        ),
    )
    sticky = ServicePlan(
        ServiceRef("default", "sticky"),
        ("10.96.0.20",),
        (
            PortPlan.build(
                "",
                IPFamily.IPv4,
                Protocol.SCTP,
                [Frontend(FrontendKind.CLUSTER_IP, "10.96.0.20", 9000)],
                [ep("10.244.1.20:9000"), ep("10.244.2.20:9000")],
                [],
                C,
                CM,
                CM,
                CM,
                CM,
                CM,
                affinity_timeout=600,
            ),
        ),
    )
    empty = ServicePlan(
        ServiceRef("default", "empty"),
        ("10.96.0.30",),
        (
            PortPlan.build(
                "",
                IPFamily.IPv4,
                Protocol.TCP,
                [Frontend(FrontendKind.CLUSTER_IP, "10.96.0.30", 80)],
                [],
                [],
                REJECT,
                REJECT,
                REJECT,
                REJECT,
                REJECT,
                REJECT,
            ),
        ),
    )
    foreign = ServicePlan(ServiceRef("default", "other"), ("10.96.0.40",), (), proxied=False)
    return Plan(SETTINGS, {s.ref: s for s in (web, sticky, empty, foreign)})
