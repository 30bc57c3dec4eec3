"""The reference semantics, row by row of docs/reference/semantics.md."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from svcnet.errors import NotFoundError, ProbeError
from svcnet.model import (
    SERVICE_PROXY_NAME_LABEL,
    ZONE_LABEL,
    ClusterConfig,
    ContainerPort,
    Labels,
    Node,
    Pod,
    Protocol,
    Service,
    ServicePort,
    ServiceType,
    SessionAffinity,
    TrafficPolicy,
)
from svcnet.probe import Outcome, Probe, ProbeSource, SourceKind, Verdict, make_probe
from svcnet.semantics import evaluate, explain
from svcnet.state import Apply, ClusterState

POD, NODE, EXT = SourceKind.POD, SourceKind.NODE, SourceKind.EXTERNAL
A_IP, B_IP = "192.168.56.11", "192.168.56.12"
CIP, LB_IP, EXT_IP = "10.96.0.10", "203.0.113.5", "198.51.100.50"
CLIENT = "198.51.100.7"
POD_A, POD_B = "10.244.1.2", "10.244.2.2"  # the web pods on node-a / node-b
CALLER = "10.244.2.99"  # a pod that is not an endpoint


def node(name: str, ip: str, zone: str = "", extra: tuple[str, ...] = ()) -> Node:
    labels = {ZONE_LABEL: zone} if zone else {}
    return Node(name, labels=labels, pod_cidrs=(), addresses=(ip, *extra))


def pod(name: str, node_name: str, ip: str, **kw: Any) -> Pod:
    kw.setdefault("ready", True)
    kw.setdefault("ports", (ContainerPort(8080, "http"),))
    return Pod("default", name, labels={"app": "web"}, node_name=node_name, pod_ips=(ip,), **kw)


def web(**kw: Any) -> Service:
    external = kw.get("type") in (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER)
    kw.setdefault(
        "ports", (ServicePort(80, target_port=8080, node_port=30080 if external else None),)
    )
    kw.setdefault("cluster_ips", (CIP,))
    return Service("default", "web", selector=Labels.of({"app": "web"}), **kw)


def cluster(
    *objects: Any, config: ClusterConfig | None = None, zones: tuple[str, str] = ("", "")
) -> ClusterState:
    nodes = (node("node-a", A_IP, zones[0], ("192.168.99.11",)), node("node-b", B_IP, zones[1]))
    state = ClusterState.empty(config or ClusterConfig())
    return state.step(Apply((*nodes, *objects)))


def two_pods(**kw: Any) -> tuple[Pod, Pod]:
    return pod("web-a", "node-a", POD_A, **kw), pod("web-b", "node-b", POD_B, **kw)


def probe(
    kind: SourceKind,
    dst: str,
    port: int = 80,
    *,
    src: str | None = None,
    at: str = "node-a",
    protocol: Protocol = Protocol.TCP,
) -> Probe:
    default = {POD: CALLER, NODE: A_IP if at == "node-a" else B_IP, EXT: CLIENT}[kind]
    return Probe(kind, src or default, at, dst, port, protocol)


def fwd(
    *ips: str, masq: bool | dict[str, bool] = False, port: int = 8080, sticky: int | None = None
) -> Outcome:
    m = masq if isinstance(masq, dict) else dict.fromkeys(ips, masq)
    return Outcome.forward([(ip, port, m[ip]) for ip in ips], sticky)


def check(state: ClusterState, p: Probe, expected: Outcome) -> None:
    got = evaluate(state, p)
    assert got == expected, f"{p}: {got} != {expected}\n" + "\n".join(explain(state, p))


DROP, REJECT, PASS = Outcome(Verdict.DROP), Outcome(Verdict.REJECT), Outcome(Verdict.PASS)
LB = dict(type=ServiceType.LOAD_BALANCER, status_ingress=(LB_IP,))
NP = dict(type=ServiceType.NODE_PORT)


# -- Verdicts table ----------------------------------------------------------------


def test_clusterip_with_usable_endpoints_forwards() -> None:
    check(cluster(*two_pods(), web()), probe(POD, CIP), fwd(POD_A, POD_B))


def test_clusterip_without_endpoints_rejects_even_with_unready_pods() -> None:
    check(cluster(*two_pods(ready=False), web()), probe(POD, CIP), REJECT)
    check(cluster(web()), probe(NODE, CIP), REJECT)


def test_clusterip_itp_local_without_local_endpoint_drops() -> None:
    state = cluster(pod("web-b", "node-b", POD_B), web(internal_traffic_policy=TrafficPolicy.LOCAL))
    check(state, probe(POD, CIP), DROP)
    check(state, probe(POD, CIP, at="node-b"), fwd(POD_B))


@pytest.mark.parametrize(
    ("port", "protocol"), [(81, Protocol.TCP), (80, Protocol.UDP), (80, Protocol.SCTP)]
)
def test_clusterip_undefined_port_or_protocol_rejects(port: int, protocol: Protocol) -> None:
    check(cluster(*two_pods(), web()), probe(POD, CIP, port, protocol=protocol), REJECT)


@pytest.mark.parametrize(
    ("dst", "port"), [(EXT_IP, 81), (LB_IP, 81), (A_IP, 30081), (EXT_IP, 30080)]
)
def test_external_frontends_undefined_port_passes(dst: str, port: int) -> None:
    state = cluster(*two_pods(), web(external_ips=(EXT_IP,), **LB))
    check(state, probe(EXT, dst, port), PASS)
    check(state, probe(EXT, dst, 80 if port == 81 else 30080, protocol=Protocol.UDP), PASS)


def test_unallocated_service_address_drops() -> None:
    check(cluster(*two_pods(), web()), probe(POD, "10.96.7.7"), DROP)
    check(cluster(), probe(EXT, "10.96.0.10", 443), DROP)


@pytest.mark.parametrize(("dst", "port"), [(EXT_IP, 80), (LB_IP, 80), (A_IP, 30080)])
def test_external_frontend_with_endpoints_forwards(dst: str, port: int) -> None:
    state = cluster(*two_pods(), web(external_ips=(EXT_IP,), **LB))
    check(state, probe(EXT, dst, port), fwd(POD_A, POD_B, masq=True))


@pytest.mark.parametrize(("dst", "port"), [(EXT_IP, 80), (LB_IP, 80), (A_IP, 30080)])
def test_external_frontend_without_endpoints_rejects(dst: str, port: int) -> None:
    state = cluster(*two_pods(ready=False), web(external_ips=(EXT_IP,), **LB))
    check(state, probe(EXT, dst, port), REJECT)


@pytest.mark.parametrize(("dst", "port"), [(EXT_IP, 80), (LB_IP, 80), (B_IP, 30080)])
def test_etp_local_external_source_without_local_endpoint_drops(dst: str, port: int) -> None:
    state = cluster(
        pod("web-a", "node-a", POD_A),
        web(external_ips=(EXT_IP,), external_traffic_policy=TrafficPolicy.LOCAL, **LB),
    )
    check(state, probe(EXT, dst, port, at="node-b"), DROP)
    check(state, probe(EXT, A_IP if port == 30080 else dst, port), fwd(POD_A))


def test_lb_source_ranges_drop_outsiders_pods_included() -> None:
    svc = web(load_balancer_source_ranges=("198.51.100.0/24",), **LB)
    state = cluster(*two_pods(), svc)
    check(state, probe(EXT, LB_IP, src="192.0.2.1"), DROP)
    check(state, probe(POD, LB_IP), DROP)
    check(state, probe(EXT, LB_IP), fwd(POD_A, POD_B, masq=True))


def test_source_range_check_comes_before_endpoints() -> None:
    svc = web(load_balancer_source_ranges=("198.51.100.0/24",), **LB)
    check(cluster(svc), probe(EXT, LB_IP, src="192.0.2.1"), DROP)
    check(cluster(svc), probe(EXT, LB_IP), REJECT)
    local = web(
        load_balancer_source_ranges=("198.51.100.0/24",),
        external_traffic_policy=TrafficPolicy.LOCAL,
        **LB,
    )
    check(cluster(pod("web-b", "node-b", POD_B), local), probe(EXT, LB_IP, src="192.0.2.1"), DROP)


def test_source_ranges_holding_the_node_address_allow_the_lb_ips() -> None:
    svc = web(load_balancer_source_ranges=("192.168.56.0/24",), **LB)
    state = cluster(*two_pods(), svc)
    check(state, probe(EXT, LB_IP, src=LB_IP), fwd(POD_A, POD_B, masq=True))
    check(state, probe(NODE, LB_IP), fwd(POD_A, POD_B, masq=True))
    other = web(load_balancer_source_ranges=("198.51.100.0/24",), **LB)
    check(cluster(*two_pods(), other), probe(EXT, LB_IP, src=LB_IP), DROP)


def test_nodeport_of_lb_service_ignores_source_ranges() -> None:
    svc = web(load_balancer_source_ranges=("198.51.100.0/24",), **LB)
    check(
        cluster(*two_pods(), svc),
        probe(EXT, A_IP, 30080, src="192.0.2.1"),
        fwd(POD_A, POD_B, masq=True),
    )


@pytest.mark.parametrize("dst", ["192.168.99.11", "127.0.0.1", B_IP])
def test_nodeport_only_on_the_primary_internal_ip(dst: str) -> None:
    check(cluster(*two_pods(), web(**NP)), probe(NODE, dst, 30080), PASS)


def test_not_a_frontend_externalname_and_headless_pass() -> None:
    external_name = Service(
        "default",
        "ext",
        type=ServiceType.EXTERNAL_NAME,
        external_name="example.com",
        ports=(ServicePort(80),),
        external_ips=("198.51.100.60",),
    )
    headless = Service(
        "default", "hl", selector=Labels.of({"app": "web"}), headless=True, ports=(ServicePort(80),)
    )
    state = cluster(*two_pods(), web(), external_name, headless)
    check(state, probe(POD, "8.8.8.8"), PASS)
    check(state, probe(POD, "198.51.100.60"), PASS)
    check(state, probe(POD, POD_A, 8080), PASS)
    check(state, probe(POD, A_IP, 22), PASS)


def test_service_proxy_name_passes_every_address_clusterip_included() -> None:
    svc = web(labels={SERVICE_PROXY_NAME_LABEL: "other"}, external_ips=(EXT_IP,), **LB)
    state = cluster(*two_pods(), svc)
    for dst, port in [(CIP, 80), (CIP, 81), (EXT_IP, 80), (LB_IP, 80), (A_IP, 30080)]:
        check(state, probe(EXT, dst, port), PASS)


# -- Which endpoints a frontend uses --------------------------------------------------


def test_cluster_endpoints_fall_back_to_serving_terminating() -> None:
    pods = (
        pod("web-a", "node-a", POD_A, terminating=True),
        pod("web-b", "node-b", POD_B, ready=False),
    )
    check(cluster(*pods, web()), probe(POD, CIP), fwd(POD_A))
    ready = (pod("web-a", "node-a", POD_A, terminating=True), pod("web-b", "node-b", POD_B))
    check(cluster(*ready, web()), probe(POD, CIP), fwd(POD_B))
    gone = (pod("web-a", "node-a", POD_A, terminating=True, ready=False),)
    check(cluster(*gone, web()), probe(POD, CIP), REJECT)


def test_local_endpoints_fall_back_to_local_serving_terminating() -> None:
    svc = web(internal_traffic_policy=TrafficPolicy.LOCAL)
    pods = (pod("web-a", "node-a", POD_A, terminating=True), pod("web-b", "node-b", POD_B))
    check(cluster(*pods, svc), probe(POD, CIP), fwd(POD_A))


def test_etp_local_short_circuit_for_pods_and_the_node() -> None:
    svc = web(external_traffic_policy=TrafficPolicy.LOCAL, **NP)
    state = cluster(pod("web-b", "node-b", POD_B), pod("web-c", "node-b", "10.244.2.3"), svc)
    both = ("10.244.2.2", "10.244.2.3")
    check(state, probe(POD, A_IP, 30080), fwd(*both))
    check(state, probe(NODE, A_IP, 30080), fwd(*both, masq=True))
    check(state, probe(EXT, A_IP, 30080), DROP)
    check(state, probe(EXT, B_IP, 30080, at="node-b"), fwd(*both))


def test_named_target_port_resolves_per_pod() -> None:
    pods = (
        pod("web-a", "node-a", POD_A, ports=(ContainerPort(8080, "http"),)),
        pod("web-b", "node-b", POD_B, ports=(ContainerPort(9090, "http"),)),
        pod("web-c", "node-b", "10.244.2.3", ports=(ContainerPort(8080, "other"),)),
    )
    state = cluster(*pods, web(ports=(ServicePort(80, target_port="http"),)))
    assert evaluate(state, probe(POD, CIP)) == Outcome.forward(
        [(POD_A, 8080, False), (POD_B, 9090, False)]
    )


def test_unset_target_port_means_port() -> None:
    state = cluster(pod("web-a", "node-a", POD_A), web(ports=(ServicePort(80),)))
    check(state, probe(POD, CIP), fwd(POD_A, port=80))


def test_choice_is_uniform() -> None:
    pods = [pod(f"web-{i}", "node-b", f"10.244.2.{i + 10}") for i in range(3)]
    outcome = evaluate(cluster(*pods, web()), probe(POD, CIP))
    assert outcome.uniform and len(outcome.targets) == 3


@pytest.mark.parametrize("value", ["PreferClose", "PreferSameZone"])
def test_prefer_close_keeps_the_node_zone(value: str) -> None:
    # PreferSameZone is PreferClose's new name (Kubernetes 1.35): same behaviour
    svc = web(traffic_distribution=value)
    check(cluster(*two_pods(), svc, zones=("z1", "z2")), probe(POD, CIP), fwd(POD_A))
    # not every ready endpoint has a zone: all of them
    check(cluster(*two_pods(), svc, zones=("z1", "")), probe(POD, CIP), fwd(POD_A, POD_B))
    # none in the node's zone: all of them
    only_b = pod("web-b", "node-b", POD_B)
    check(
        cluster(only_b, pod("x", "node-b", "10.244.2.3"), svc, zones=("z1", "z2")),
        probe(POD, CIP),
        fwd(POD_B, "10.244.2.3"),
    )
    # without PreferClose zones do not matter
    check(cluster(*two_pods(), web(), zones=("z1", "z2")), probe(POD, CIP), fwd(POD_A, POD_B))


def test_prefer_same_node_keeps_the_node_then_the_zone() -> None:
    svc = web(traffic_distribution="PreferSameNode")
    node_c = node("node-c", "192.168.56.13", "z1")
    pod_c, pod_b2 = "10.244.3.2", "10.244.2.3"
    pods = (
        pod("web-b", "node-b", POD_B),
        pod("web-b2", "node-b", pod_b2),
        pod("web-c", "node-c", pod_c),
    )
    state = cluster(node_c, *pods, svc, zones=("z1", "z2"))
    # node-b has ready endpoints of its own: those
    check(state, probe(POD, CIP, at="node-b"), fwd(POD_B, pod_b2))
    # node-a has none: those in its zone z1 (node-c's)
    check(state, probe(POD, CIP), fwd(pod_c))
    # an unready endpoint on node-a does not count as the node's own
    unready = pod("web-a", "node-a", POD_A, ready=False)
    check(cluster(node_c, unready, *pods, svc, zones=("z1", "z2")), probe(POD, CIP), fwd(pod_c))
    # and once ready it is the only one node-a uses
    ready = pod("web-a", "node-a", POD_A)
    check(cluster(node_c, ready, *pods, svc, zones=("z1", "z2")), probe(POD, CIP), fwd(POD_A))
    # no zones at all: the node's own, else every ready endpoint
    check(cluster(node_c, *pods, svc), probe(POD, CIP, at="node-b"), fwd(POD_B, pod_b2))
    check(cluster(*pods, svc), probe(POD, CIP), fwd(POD_B, pod_b2, pod_c))


def test_prefer_same_node_ignored_by_local_sets() -> None:
    svc = web(traffic_distribution="PreferSameNode", internal_traffic_policy=TrafficPolicy.LOCAL)
    state = cluster(pod("web-b", "node-b", POD_B), svc)
    check(state, probe(POD, CIP), DROP)  # node-a: no local endpoint, whatever the cluster set


def test_local_sets_ignore_zones() -> None:
    svc = web(traffic_distribution="PreferClose", internal_traffic_policy=TrafficPolicy.LOCAL)
    state = cluster(pod("web-b", "node-b", POD_B), svc, zones=("z1", "z2"))
    check(state, probe(POD, CIP, at="node-b"), fwd(POD_B))


def test_publish_not_ready_addresses_makes_endpoints_ready() -> None:
    svc = web(publish_not_ready_addresses=True)
    check(cluster(*two_pods(ready=False), svc), probe(POD, CIP), fwd(POD_A, POD_B))


# -- Masquerade --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "masq_all", "masq"),
    [
        (POD, False, False),
        (NODE, False, True),
        (EXT, False, True),
        (POD, True, True),
    ],
)
def test_clusterip_masquerade(kind: SourceKind, masq_all: bool, masq: bool) -> None:
    state = cluster(*two_pods(), web(), config=ClusterConfig(masquerade_all=masq_all))
    check(state, probe(kind, CIP), fwd(POD_A, POD_B, masq=masq))


@pytest.mark.parametrize("kind", [POD, NODE, EXT])
def test_external_cluster_policy_always_masquerades(kind: SourceKind) -> None:
    check(cluster(*two_pods(), web(**NP)), probe(kind, A_IP, 30080), fwd(POD_A, POD_B, masq=True))


@pytest.mark.parametrize(("kind", "masq"), [(POD, False), (NODE, True), (EXT, False)])
def test_external_local_policy_masquerade(kind: SourceKind, masq: bool) -> None:
    svc = web(external_traffic_policy=TrafficPolicy.LOCAL, **NP)
    state = cluster(pod("web-a", "node-a", POD_A), svc)
    check(state, probe(kind, A_IP, 30080), fwd(POD_A, masq=masq))


def test_hairpin_always_masquerades() -> None:
    state = cluster(*two_pods(), web())
    check(state, probe(POD, CIP, src=POD_A), fwd(POD_A, POD_B, masq={POD_A: True, POD_B: False}))
    local = web(external_traffic_policy=TrafficPolicy.LOCAL, **NP)
    check(
        cluster(*two_pods(), local),
        probe(POD, A_IP, 30080, src=POD_B),
        fwd(POD_A, POD_B, masq={POD_A: False, POD_B: True}),
    )


# -- Session affinity and families -----------------------------------------------------


def test_client_ip_affinity_sets_the_timeout() -> None:
    sticky = web(session_affinity=SessionAffinity.CLIENT_IP, affinity_timeout=60, **NP)
    state = cluster(*two_pods(), sticky)
    check(state, probe(POD, CIP), fwd(POD_A, POD_B, sticky=60))
    check(state, probe(EXT, A_IP, 30080), fwd(POD_A, POD_B, masq=True, sticky=60))
    default = web(session_affinity=SessionAffinity.CLIENT_IP)
    assert evaluate(cluster(*two_pods(), default), probe(POD, CIP)).affinity_timeout == 10800
    assert evaluate(cluster(*two_pods(), sticky), probe(POD, CIP, 81)).affinity_timeout is None


def test_dual_stack_families_are_separate() -> None:
    config = ClusterConfig(
        service_cidrs=("10.96.0.0/16", "fd00:96::/112"),
        cluster_cidrs=("10.244.0.0/16", "fd00:244::/56"),
    )
    pods = [
        attrs.evolve(
            p, pod_ips=(*p.pod_ips, p.pod_ips[0].replace("10.244.", "fd00:244::").replace(".", ":"))
        )
        for p in two_pods()
    ]
    svc = web(cluster_ips=(CIP, "fd00:96::10"), ip_families=(), **NP)
    state = cluster(*pods, svc, config=config)
    v6 = evaluate(state, Probe(POD, "fd00:244::9", "node-a", "fd00:96::10", 80))
    assert v6.verdict is Verdict.FORWARD and all(":" in t.ip for t in v6.targets)
    check(state, probe(POD, CIP), fwd(POD_A, POD_B))
    check(state, Probe(EXT, "2001:db8::1", "node-a", "fd00:96::99", 80), DROP)


def test_explain_names_the_frontend() -> None:
    lines = explain(cluster(*two_pods(), web()), probe(POD, CIP))
    assert any("ClusterIP frontend of Service default/web" in line for line in lines)
    assert lines[-1].startswith("=> forward")


# -- naming a probe's source (svcnet.probe.make_probe) ------------------------------


def _sources_cluster() -> ClusterState:
    host = Pod("default", "agent", node_name="node-a", host_network=True, pod_ips=(A_IP,))
    return cluster(*two_pods(), host, web(**NP))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (ProbeSource(pod=("default", "web-a")), (POD, POD_A, "node-a")),
        (ProbeSource(pod=("default", "web-a"), via="node-b"), (POD, POD_A, "node-b")),
        (ProbeSource(pod=("default", "agent")), (NODE, A_IP, "node-a")),
        # a hostNetwork pod's packet handled by another node arrived over the network
        (ProbeSource(pod=("default", "agent"), via="node-b"), (EXT, A_IP, "node-b")),
        (ProbeSource(node="node-a"), (NODE, A_IP, "node-a")),
        (ProbeSource(node="node-a", via="node-b"), (EXT, A_IP, "node-b")),
        (ProbeSource(address=CLIENT, via="node-a"), (EXT, CLIENT, "node-a")),
        (ProbeSource(address=CALLER, via="node-a"), (POD, CALLER, "node-a")),
        (ProbeSource(address=A_IP, via="node-a"), (NODE, A_IP, "node-a")),
        (ProbeSource(address=A_IP, via="node-b"), (EXT, A_IP, "node-b")),
        (ProbeSource(address=CALLER, via="node-a", external=True), (EXT, CALLER, "node-a")),
    ],
)
def test_make_probe_source_kinds(source: ProbeSource, expected: tuple[Any, ...]) -> None:
    p = make_probe(_sources_cluster(), source, B_IP, 30080)
    assert (p.source_kind, p.source_ip, p.node) == expected
    assert (p.dst_ip, p.dst_port, p.protocol) == (B_IP, 30080, Protocol.TCP)


def test_host_network_pod_through_another_node_is_treated_as_external() -> None:
    """The oracle's answer differs with the kind: the NodePort of a Local service
    short-circuits for the node itself, not for a packet from another node."""
    svc = web(external_traffic_policy=TrafficPolicy.LOCAL, **NP)
    state = cluster(
        pod("web-a", "node-a", POD_A),
        svc,
        Pod("default", "agent", node_name="node-a", host_network=True),
    )
    via_b = make_probe(state, ProbeSource(pod=("default", "agent"), via="node-b"), B_IP, 30080)
    assert via_b.source_kind is EXT
    check(state, via_b, DROP)  # no local endpoint on node-b, and not short-circuited
    own = make_probe(state, ProbeSource(pod=("default", "agent")), A_IP, 30080)
    check(state, own, fwd(POD_A, masq=True))


@pytest.mark.parametrize(
    ("source", "dst", "error", "message"),
    [
        (ProbeSource(pod=("default", "ghost")), CIP, NotFoundError, "Pod default/ghost not found"),
        (ProbeSource(node="node-z"), CIP, NotFoundError, "Node node-z not found"),
        (
            ProbeSource(pod=("default", "web-a"), via="node-z"),
            CIP,
            NotFoundError,
            "Node node-z not found",
        ),
        (
            ProbeSource(pod=("default", "web-a")),
            "fd00:96::10",
            ProbeError,
            "pod default/web-a has no IPv6 address",
        ),
        (
            ProbeSource(node="node-a"),
            "fd00:96::10",
            ProbeError,
            "node node-a has no IPv6 InternalIP",
        ),
        (ProbeSource(address=CLIENT), CIP, ProbeError, "needs the node it arrives at"),
    ],
)
def test_make_probe_refuses_what_cannot_send(
    source: ProbeSource, dst: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        make_probe(_sources_cluster(), source, dst, 80)


def test_probe_source_is_one_thing() -> None:
    with pytest.raises(ProbeError):
        ProbeSource(pod=("default", "web-a"), node="node-a")
    with pytest.raises(ProbeError):
        ProbeSource()
