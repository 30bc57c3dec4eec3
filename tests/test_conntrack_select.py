"""Which conntrack flows the UDP cleanup deletes (pure: ``udp_targets``, ``stale``,
``udp_changed`` of :mod:`svcnet.agent.conntrack` on hand-built plans; no kernel)."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from svcnet.agent.conntrack import (
    Flow,
    Target,
    changed_targets,
    stale,
    udp_changed,
    udp_targets,
)
from svcnet.model import IPFamily, Protocol
from svcnet.plan import Plan
from svcnet.plan.types import Action as A
from svcnet.plan.types import (
    EndpointSet,
    Frontend,
    FrontendKind,
    NodeSettings,
    PlanEndpoint,
    PortPlan,
    Route,
    ServicePlan,
    ServiceRef,
)

V4, V6 = IPFamily.IPv4, IPFamily.IPv6
UDP, TCP = Protocol.UDP, Protocol.TCP
SETTINGS = NodeSettings("node-a", ("10.0.0.1", "fd00::1"), ("10.244.0.0/16",), ("10.96.0.0/16",))
CLUSTER = Route(A.FORWARD, EndpointSet.CLUSTER)
LOCAL = Route(A.FORWARD, EndpointSet.LOCAL)
CLIENT = "10.244.1.20"
CIP = FrontendKind.CLUSTER_IP


def port(
    protocol: Protocol,
    frontends: list[Frontend],
    cluster: list[tuple[str, int]],
    local: Sequence[tuple[str, int]] = (),
    family: IPFamily = V4,
) -> PortPlan:
    return PortPlan.build(
        "p",
        family,
        protocol,
        frontends,
        (PlanEndpoint(ip, p) for ip, p in cluster),
        (PlanEndpoint(ip, p) for ip, p in local),
        CLUSTER,
        CLUSTER,
        CLUSTER,
        CLUSTER,
        CLUSTER,
        LOCAL,
    )


def plan(*services: tuple[str, list[PortPlan]]) -> Plan:
    svcs = {}
    for name, ports in services:
        ref = ServiceRef("default", name)
        ips = tuple(sorted({f.ip for p in ports for f in p.frontends if f.kind is CIP}))
        svcs[ref] = ServicePlan(ref, ips, tuple(ports))
    return Plan(SETTINGS, svcs)


def cip(ip: str, p: int) -> Frontend:
    return Frontend(FrontendKind.CLUSTER_IP, ip, p)


def flow(
    dst: tuple[str, int], reply: tuple[str, int], protocol: Protocol = UDP, sport: int = 40000
) -> Flow:
    family = IPFamily.of(dst[0])
    src = CLIENT if family is V4 else "fd00:244::20"
    return Flow(family, protocol, src, sport, dst[0], dst[1], reply[0], reply[1])


DNS = cip("10.96.0.10", 53)
A_EP, B_EP = ("10.244.1.11", 5353), ("10.244.2.12", 5353)


def test_targets_cover_every_udp_frontend_kind_and_both_endpoint_sets() -> None:
    frontends = [
        DNS,
        Frontend(FrontendKind.NODE_PORT, "10.0.0.1", 30053),
        Frontend(FrontendKind.EXTERNAL_IP, "192.0.2.7", 53),
        Frontend(FrontendKind.LOAD_BALANCER, "198.51.100.9", 53),
    ]
    p = plan(
        ("dns", [port(UDP, frontends, [A_EP, B_EP], [A_EP])]),
        ("web", [port(TCP, [cip("10.96.0.20", 80)], [("10.244.1.11", 8080)])]),
        ("v6", [port(UDP, [cip("fd00:96::000a", 53)], [("fd00:244::11", 53)], family=V6)]),
    )
    serving = frozenset({A_EP, B_EP})
    assert udp_targets(p) == {
        Target(V4, "10.96.0.10", 53): serving,
        Target(V4, None, 30053): serving,  # a NodePort: by port, on any address
        Target(V4, "192.0.2.7", 53): serving,
        Target(V4, "198.51.100.9", 53): serving,
        Target(V6, "fd00:96::a", 53): frozenset({("fd00:244::11", 53)}),  # canonical form
    }


def test_removed_endpoint_flows_go_the_kept_endpoint_flows_stay() -> None:
    old = plan(("dns", [port(UDP, [DNS], [A_EP, B_EP])]))
    new = plan(("dns", [port(UDP, [DNS], [B_EP])]))
    to_a, to_b = flow(("10.96.0.10", 53), A_EP, sport=1), flow(("10.96.0.10", 53), B_EP, sport=2)
    assert stale(old, new, [to_a, to_b]) == [to_a]
    assert udp_changed(old, new)


def test_from_no_endpoint_to_some_clears_the_never_dnated_flows() -> None:
    old = plan(("dns", [port(UDP, [DNS], [])]))
    new = plan(("dns", [port(UDP, [DNS], [A_EP])]))
    rejected = flow(("10.96.0.10", 53), ("10.96.0.10", 53))  # reply source: the frontend
    assert stale(old, new, [rejected]) == [rejected]


def test_a_deleted_service_or_port_or_protocol_change_takes_its_flows() -> None:
    old = plan(
        ("dns", [port(UDP, [DNS], [A_EP])]),
        ("syslog", [port(UDP, [cip("10.96.0.30", 514)], [("10.244.1.13", 514)])]),
        ("flip", [port(UDP, [cip("10.96.0.40", 7)], [("10.244.1.14", 7)])]),
    )
    new = plan(
        ("dns", [port(UDP, [DNS], [A_EP])]),
        ("flip", [port(TCP, [cip("10.96.0.40", 7)], [("10.244.1.14", 7)])]),
    )
    gone = flow(("10.96.0.30", 514), ("10.244.1.13", 514))
    flipped = flow(("10.96.0.40", 7), ("10.244.1.14", 7))
    fine = flow(("10.96.0.10", 53), A_EP)
    assert stale(old, new, [gone, flipped, fine]) == [gone, flipped]


def test_node_port_flows_match_by_port_on_any_address() -> None:
    np = Frontend(FrontendKind.NODE_PORT, "10.0.0.1", 30053)
    old = plan(("dns", [port(UDP, [DNS, np], [A_EP, B_EP])]))
    new = plan(("dns", [port(UDP, [DNS, np], [B_EP])]))
    via_primary = flow(("10.0.0.1", 30053), A_EP, sport=1)
    via_other = flow(("172.16.0.1", 30053), A_EP, sport=2)  # another address of the node
    ok = flow(("172.16.0.1", 30053), B_EP, sport=3)
    other_port = flow(("172.16.0.1", 30054), A_EP, sport=4)
    assert stale(old, new, [via_primary, via_other, ok, other_port]) == [via_primary, via_other]


def test_tcp_and_non_service_flows_are_never_touched() -> None:
    old = plan(("dns", [port(UDP, [DNS], [A_EP]), port(TCP, [DNS], [A_EP])]))
    new = plan(("dns", [port(UDP, [DNS], [B_EP]), port(TCP, [DNS], [B_EP])]))
    tcp = flow(("10.96.0.10", 53), A_EP, protocol=TCP)
    elsewhere = flow(("8.8.8.8", 53), ("8.8.8.8", 53))
    pod_direct = flow(A_EP, A_EP)  # to the pod itself, no service
    assert stale(old, new, [tcp, elsewhere, pod_direct]) == []
    assert stale(None, new, [tcp, elsewhere, pod_direct]) == []


def test_ipv6_flows_are_matched_in_canonical_form() -> None:
    fe = cip("fd00:96:0::a", 53)
    old = plan(("dns6", [port(UDP, [fe], [("fd00:244::11", 53), ("fd00:244::12", 53)], family=V6)]))
    new = plan(("dns6", [port(UDP, [fe], [("fd00:244::12", 53)], family=V6)]))
    dead = flow(("fd00:96::a", 53), ("fd00:244::11", 53), sport=1)
    alive = flow(("fd00:96::a", 53), ("fd00:244::12", 53), sport=2)
    v4_same_port = flow(("10.96.0.10", 53), ("10.244.1.11", 53), sport=3)
    assert stale(old, new, [dead, alive, v4_same_port]) == [dead]


def test_first_sync_cleans_against_the_new_plan_only() -> None:
    new = plan(("dns", [port(UDP, [DNS], [B_EP])]))
    old_pod = flow(("10.96.0.10", 53), A_EP, sport=1)
    current = flow(("10.96.0.10", 53), B_EP, sport=2)
    assert stale(None, new, [old_pod, current]) == [old_pod]
    assert udp_changed(None, new)


def test_udp_changed_ignores_tcp_only_and_untouched_changes() -> None:
    base = [("dns", [port(UDP, [DNS], [A_EP])])]
    old = plan(*base, ("web", [port(TCP, [cip("10.96.0.20", 80)], [("10.244.1.11", 8080)])]))
    new = plan(*base, ("web", [port(TCP, [cip("10.96.0.20", 80)], [("10.244.2.12", 8080)])]))
    assert not udp_changed(old, new)
    assert not udp_changed(new, new)
    # the same UDP targets spread differently (a frontend moving between services) is no change
    assert udp_changed(old, plan(("dns", [port(UDP, [DNS], [A_EP, B_EP])])))


@pytest.mark.parametrize("seed", range(20))
def test_random_plans_stale_is_exactly_the_rule(seed: int) -> None:
    """Random endpoint churn on random UDP/TCP services: every flow is deleted exactly
    when the rule says so, checked against an independent spelling of the rule."""
    rng = random.Random(seed)
    pods = [(f"10.244.{n}.{h}", 53) for n in (1, 2) for h in range(10, 16)]

    def random_plan() -> Plan:
        services = []
        for i in range(6):
            if rng.random() < 0.25:
                continue  # deleted in this plan
            proto = UDP if i % 3 else TCP
            eps = rng.sample(pods, rng.randint(0, 3))
            services.append((f"s{i}", [port(proto, [cip(f"10.96.0.{i + 1}", 53)], eps)]))
        return plan(*services)

    old, new = random_plan(), random_plan()
    flows: list[Flow] = []
    for i in range(6):
        for proto in (UDP, TCP):
            dst = (f"10.96.0.{i + 1}", 53)
            for reply in [dst, *rng.sample(pods, 3)]:
                flows.append(flow(dst, reply, protocol=proto, sport=len(flows) + 1))

    def udp_eps(p: Plan, dst: tuple[str, int]) -> set[tuple[str, int]] | None:
        for svc in p.services.values():
            for pp in svc.ports:
                if pp.protocol is UDP and any((f.ip, f.port) == dst for f in pp.frontends):
                    return {(e.ip, e.port) for e in pp.cluster_endpoints + pp.local_endpoints}
        return None

    expected = []
    for f in flows:
        if f.protocol is not UDP:
            continue
        now = udp_eps(new, (f.dst_ip, f.dst_port))
        if (now is not None and f.reply_source not in now) or (
            now is None and udp_eps(old, (f.dst_ip, f.dst_port)) is not None
        ):
            expected.append(f)
    assert stale(old, new, flows) == expected
    assert all(f.protocol is UDP for f in stale(old, new, flows))


def test_changed_targets_are_the_frontends_whose_endpoints_changed() -> None:
    np = Frontend(FrontendKind.NODE_PORT, "10.0.0.1", 30053)
    keep = ("keep", [port(UDP, [cip("10.96.0.5", 53)], [A_EP])])
    old = plan(
        keep,
        ("dns", [port(UDP, [DNS, np], [A_EP])]),
        ("gone", [port(UDP, [cip("10.96.0.6", 9)], [])]),
    )
    new = plan(
        keep,
        ("dns", [port(UDP, [DNS, np], [B_EP])]),
        ("web", [port(TCP, [cip("10.96.0.7", 80)], [A_EP])]),
    )
    assert changed_targets(old, new) == {
        Target(V4, "10.96.0.10", 53),
        Target(V4, None, 30053),
        Target(V4, "10.96.0.6", 9),
    }
    assert sorted(changed_targets(old, new))[0] == Target(V4, None, 30053)  # NodePorts sort first
    assert changed_targets(new, new) == set()
