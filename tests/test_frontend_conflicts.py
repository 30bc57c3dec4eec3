"""Conflicting frontends: two claims on one address, port and protocol.

The compiled plan holds each (address, port, protocol) once, owned by the claim
:mod:`svcnet.semantics` picks: the first service by namespace/name, then its first
port, then the first frontend kind (ClusterIP, ExternalIP, LoadBalancer, NodePort).
update()/advance() must keep that true as winners come and go.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Any

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from svcnet_memory import MemoryBackend

from svcnet.errors import SvcnetError
from svcnet.model import (
    SERVICE_PROXY_NAME_LABEL,
    ClusterConfig,
    ContainerPort,
    Labels,
    Node,
    Pod,
    Protocol,
    Service,
    ServicePort,
    ServiceType,
)
from svcnet.plan import FrontendKind, Plan, ServiceRef, advance, compile, update
from svcnet.plan.compiler import index_of
from svcnet.probe import Outcome, Probe, SourceKind, Verdict
from svcnet.semantics import evaluate, frontends_of
from svcnet.state import Apply, ClusterState, Delete, Event
from svcnet.testing.strategies import NODE_NAMES as NODES

# Seeded draws, clusters built through the state (the strategies share externalIPs and
# ingress addresses now and then) and direct ones (services claiming others' addresses).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backends" / "memory" / "tests"))
from clusters import RandomDraw, direct_clusters, events, state_cluster, state_clusters

FAST = settings(
    deadline=None,
    derandomize=True,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

POD, NODE, EXT = SourceKind.POD, SourceKind.NODE, SourceKind.EXTERNAL
A_IP, B_IP = "192.168.56.11", "192.168.56.12"
SHARED, OTHER = "198.51.100.50", "198.51.100.51"
CLIENT = "198.51.100.7"  # outside every source range used here
CALLER = "10.244.2.99"  # a pod address that is no endpoint
# app label -> the one ready pod behind it (port 8080), so endpoints name the winner
PODS = {"one": "10.244.1.11", "two": "10.244.1.12", "three": "10.244.1.13"}
NODE_OBJECTS = (
    Node("node-a", pod_cidrs=("10.244.1.0/24",), addresses=(A_IP,)),
    Node("node-b", pod_cidrs=("10.244.2.0/24",), addresses=(B_IP,)),
)


def svc(ref: str, app: str, **kw: Any) -> Service:
    namespace, name = ref.split("/")
    external = kw.get("type") in (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER)
    kw.setdefault(
        "ports", (ServicePort(80, target_port=8080, node_port=30080 if external else None),)
    )
    return Service(namespace, name, selector=Labels.of({"app": app}), **kw)


def cluster(*services: Service) -> ClusterState:
    namespaces = sorted({s.namespace for s in services})
    pods = [
        Pod(
            ns,
            f"{app}-pod",
            labels={"app": app},
            node_name="node-a",
            pod_ips=(ip,),
            ready=True,
            ports=(ContainerPort(8080),),
        )
        for ns in namespaces
        for app, ip in PODS.items()
    ]
    return ClusterState.empty(ClusterConfig()).step(Apply((*NODE_OBJECTS, *pods, *services)))


def to(app: str) -> set[str]:
    return {f"{PODS[app]}:8080"}


def frontends(plan: Plan, ref: str) -> set[tuple[str, str, int]]:
    """(kind, address, port) of every frontend of ``ref`` in ``plan``."""
    entry = plan.services[ServiceRef(*ref.split("/"))]
    return {(f.kind.value, f.ip, f.port) for p in entry.ports for f in p.frontends}


def outcome(
    state: ClusterState,
    kind: SourceKind,
    src: str,
    dst: str,
    port: int,
    node: str = "node-a",
    protocol: Protocol = Protocol.TCP,
) -> Outcome:
    """What the reference says; the memory backend, synced with the plan, must agree."""
    probe = Probe(kind, src, node, dst, port, protocol)
    backend = MemoryBackend(node)
    backend.sync(compile(state, node))
    expected = evaluate(state, probe)
    assert backend.evaluate(probe) == expected, str(probe)
    return expected


def forwarded_to(result: Outcome) -> set[str]:
    assert result.verdict is Verdict.FORWARD, result
    return {t.address for t in result.targets}


# -- the tie-break ------------------------------------------------------------------


def test_same_external_ip_goes_to_the_first_service_by_namespace_then_name() -> None:
    state = cluster(
        svc("shop/aaa", "one", cluster_ips=("10.96.0.10",), external_ips=(SHARED,)),
        svc("default/zzz", "two", cluster_ips=("10.96.0.11",), external_ips=(SHARED,)),
        svc("default/yyy", "three", cluster_ips=("10.96.0.12",), external_ips=(SHARED,)),
    )
    plan = compile(state, "node-a")
    assert ("ExternalIP", SHARED, 80) in frontends(plan, "default/yyy")
    assert ("ExternalIP", SHARED, 80) not in frontends(plan, "default/zzz")
    assert frontends(plan, "shop/aaa") == {("ClusterIP", "10.96.0.10", 80)}
    assert forwarded_to(outcome(state, EXT, CLIENT, SHARED, 80)) == to("three")


def test_another_port_or_protocol_is_no_conflict() -> None:
    state = cluster(
        svc("default/a", "one", cluster_ips=("10.96.0.10",), external_ips=(SHARED,)),
        svc(
            "default/b",
            "two",
            cluster_ips=("10.96.0.11",),
            external_ips=(SHARED,),
            ports=(
                ServicePort(81, target_port=8080),
                ServicePort(80, name="dns", protocol=Protocol.UDP, target_port=8080),
            ),
        ),
    )
    plan = compile(state, "node-a")
    assert ("ExternalIP", SHARED, 80) in frontends(plan, "default/a")
    assert {("ExternalIP", SHARED, 81), ("ExternalIP", SHARED, 80)} <= frontends(plan, "default/b")
    assert forwarded_to(outcome(state, EXT, CLIENT, SHARED, 80)) == to("one")
    assert forwarded_to(outcome(state, EXT, CLIENT, SHARED, 81)) == to("two")
    udp = outcome(state, EXT, CLIENT, SHARED, 80, protocol=Protocol.UDP)
    assert forwarded_to(udp) == to("two")


def test_external_ip_on_another_services_cluster_ip_first_service_wins() -> None:
    # default/a lists default/b's ClusterIP as an externalIP, same port: a comes first.
    b_ports = (
        ServicePort(80, name="http", target_port=8080),
        ServicePort(81, name="alt", target_port=8080),
    )
    state = cluster(
        svc("default/a", "one", cluster_ips=("10.96.0.10",), external_ips=("10.96.0.11",)),
        svc("default/b", "two", cluster_ips=("10.96.0.11",), ports=b_ports),
    )
    plan = compile(state, "node-a")
    assert frontends(plan, "default/b") == {("ClusterIP", "10.96.0.11", 81)}
    assert ("ExternalIP", "10.96.0.11", 80) in frontends(plan, "default/a")
    # a's frontend is external: a pod caller is forwarded masqueraded (etp Cluster)
    result = outcome(state, POD, CALLER, "10.96.0.11", 80)
    assert forwarded_to(result) == to("one")
    assert all(t.masquerade for t in result.targets)
    assert forwarded_to(outcome(state, POD, CALLER, "10.96.0.11", 81)) == to("two")
    assert outcome(state, POD, CALLER, "10.96.0.11", 82).verdict is Verdict.REJECT


def test_cluster_ip_of_the_first_service_beats_a_later_external_ip() -> None:
    state = cluster(
        svc("default/a", "one", cluster_ips=("10.96.0.10",)),
        svc("default/b", "two", cluster_ips=("10.96.0.11",), external_ips=("10.96.0.10",)),
    )
    plan = compile(state, "node-a")
    assert frontends(plan, "default/b") == {("ClusterIP", "10.96.0.11", 80)}
    assert forwarded_to(outcome(state, POD, CALLER, "10.96.0.10", 80)) == to("one")


def test_external_ip_on_another_services_ingress() -> None:
    state = cluster(
        svc(
            "default/a",
            "one",
            type=ServiceType.LOAD_BALANCER,
            cluster_ips=("10.96.0.10",),
            status_ingress=(SHARED,),
            load_balancer_source_ranges=("192.0.2.0/24",),
        ),
        svc("default/b", "two", cluster_ips=("10.96.0.11",), external_ips=(SHARED,)),
    )
    plan = compile(state, "node-a")
    assert ("LoadBalancer", SHARED, 80) in frontends(plan, "default/a")
    assert ("ExternalIP", SHARED, 80) not in frontends(plan, "default/b")
    # the LoadBalancer frontend won: its source ranges apply
    assert outcome(state, EXT, CLIENT, SHARED, 80).verdict is Verdict.DROP


def test_a_service_claiming_a_key_twice_keeps_the_first_kind() -> None:
    # externalIP == its own ingress: ExternalIP comes before LoadBalancer, so the
    # source ranges (LoadBalancer frontends only) do not apply to that address.
    state = cluster(
        svc(
            "default/a",
            "one",
            type=ServiceType.LOAD_BALANCER,
            cluster_ips=("10.96.0.10",),
            external_ips=(SHARED, "10.96.0.10"),
            status_ingress=(SHARED, OTHER),
            load_balancer_source_ranges=("192.0.2.0/24",),
        ),
    )
    (port,) = compile(state, "node-a").services[ServiceRef("default", "a")].ports
    kinds = {(f.kind, f.ip) for f in port.frontends if f.port == 80}
    assert (FrontendKind.EXTERNAL_IP, SHARED) in kinds
    assert (FrontendKind.LOAD_BALANCER, SHARED) not in kinds
    assert (FrontendKind.LOAD_BALANCER, OTHER) in kinds
    # ... and an externalIP equal to its own ClusterIP: the ClusterIP (internal) wins
    assert (FrontendKind.CLUSTER_IP, "10.96.0.10") in kinds
    assert (FrontendKind.EXTERNAL_IP, "10.96.0.10") not in kinds
    assert forwarded_to(outcome(state, EXT, CLIENT, SHARED, 80)) == to("one")
    assert outcome(state, EXT, CLIENT, OTHER, 80).verdict is Verdict.DROP
    internal = outcome(state, POD, CALLER, "10.96.0.10", 80)
    assert forwarded_to(internal) == to("one")
    assert not any(t.masquerade for t in internal.targets)


def test_first_port_of_a_service_wins() -> None:
    # port 0's NodePort and port 1's externalIP (the node's address) meet on A_IP:30080.
    ports = (
        ServicePort(80, name="web", target_port=8080, node_port=30080),
        ServicePort(30080, name="alt", target_port=9090, node_port=30081),
    )
    state = cluster(
        svc(
            "default/a",
            "one",
            type=ServiceType.NODE_PORT,
            cluster_ips=("10.96.0.10",),
            external_ips=(A_IP,),
            ports=ports,
        )
    )
    entry = compile(state, "node-a").services[ServiceRef("default", "a")]
    web, alt = entry.ports
    assert (FrontendKind.NODE_PORT, A_IP, 30080) in {(f.kind, f.ip, f.port) for f in web.frontends}
    assert (FrontendKind.EXTERNAL_IP, A_IP, 30080) not in {
        (f.kind, f.ip, f.port) for f in alt.frontends
    }
    assert forwarded_to(outcome(state, EXT, CLIENT, A_IP, 30080)) == to("one")
    # on node-b, A_IP is no NodePort address: no conflict there
    b_alt = compile(state, "node-b").services[ServiceRef("default", "a")].ports[1]
    assert (FrontendKind.EXTERNAL_IP, A_IP, 30080) in {
        (f.kind, f.ip, f.port) for f in b_alt.frontends
    }


def test_external_ip_on_the_node_address_and_another_services_node_port() -> None:
    first = svc(
        "default/a",
        "one",
        cluster_ips=("10.96.0.10",),
        external_ips=(A_IP,),
        ports=(ServicePort(30080, target_port=8080),),
    )
    nodeport = svc("default/b", "two", type=ServiceType.NODE_PORT, cluster_ips=("10.96.0.11",))
    state = cluster(first, nodeport)
    assert ("NodePort", A_IP, 30080) not in frontends(compile(state, "node-a"), "default/b")
    assert ("NodePort", B_IP, 30080) in frontends(compile(state, "node-b"), "default/b")
    assert forwarded_to(outcome(state, EXT, CLIENT, A_IP, 30080)) == to("one")
    assert forwarded_to(outcome(state, EXT, CLIENT, B_IP, 30080, node="node-b")) == to("two")
    # renamed to sort after default/b, the externalIP loses
    late = cluster(attrs.evolve(first, name="c"), nodeport)
    assert ("ExternalIP", A_IP, 30080) not in frontends(compile(late, "node-a"), "default/c")
    assert forwarded_to(outcome(late, EXT, CLIENT, A_IP, 30080)) == to("two")


def test_a_service_another_proxy_serves_claims_nothing() -> None:
    state = cluster(
        svc(
            "default/a",
            "one",
            cluster_ips=("10.96.0.10",),
            external_ips=(SHARED,),
            labels={SERVICE_PROXY_NAME_LABEL: "other"},
        ),
        svc("default/b", "two", cluster_ips=("10.96.0.11",), external_ips=(SHARED,)),
    )
    assert ("ExternalIP", SHARED, 80) in frontends(compile(state, "node-a"), "default/b")
    assert forwarded_to(outcome(state, EXT, CLIENT, SHARED, 80)) == to("two")


def test_ipv6_spellings_are_one_address() -> None:
    config = ClusterConfig(service_cidrs=("fd00:96::/112",), cluster_cidrs=("fd00:244::/56",))
    services = (
        Service(
            "default",
            "a",
            ports=(ServicePort(80),),
            cluster_ips=("fd00:96::10",),
            external_ips=("2001:db8:e::0:50",),
        ),
        Service(
            "default",
            "b",
            ports=(ServicePort(80),),
            cluster_ips=("fd00:96::11",),
            external_ips=("2001:DB8:E::50",),
        ),
    )
    state = ClusterState.empty(config).step(Apply(services))
    plan = compile(state, "node-a")
    keys = [
        ipaddress.ip_address(f.ip)
        for s in plan.services.values()
        for p in s.ports
        for f in p.frontends
        if f.kind is FrontendKind.EXTERNAL_IP
    ]
    assert keys == [ipaddress.ip_address("2001:db8:e::50")]
    assert frontends(plan, "default/b") == {("ClusterIP", "fd00:96::11", 80)}


# -- incremental updates ------------------------------------------------------------


def _step(plan: Plan, state: ClusterState, event: Event) -> tuple[Plan, ClusterState]:
    new_state = state.step(event)
    new_plan, changes = advance(plan, state, new_state)
    full = compile(new_state, plan.node)
    assert new_plan == full, f"after {event}"
    assert changes.apply_to(plan) == full
    assert update(plan, state, new_state) == full
    return new_plan, new_state


def test_the_loser_gets_the_frontend_back_when_the_winner_goes() -> None:
    winner = svc("default/a", "one", cluster_ips=("10.96.0.10",), external_ips=(SHARED,))
    loser = svc("default/b", "two", cluster_ips=("10.96.0.11",), external_ips=(SHARED,))
    state = cluster(winner, loser)
    plan = compile(state, "node-a")
    assert ("ExternalIP", SHARED, 80) not in frontends(plan, "default/b")
    # the winner drops the address: b takes it over
    plan, state = _step(plan, state, Apply((attrs.evolve(winner, external_ips=(OTHER,)),)))
    assert ("ExternalIP", SHARED, 80) in frontends(plan, "default/b")
    # and takes it back
    plan, state = _step(plan, state, Apply((winner,)))
    assert ("ExternalIP", SHARED, 80) not in frontends(plan, "default/b")
    # the winner is deleted
    new_state = state.step(Delete((winner.key,)))
    new_plan, changes = advance(plan, state, new_state)
    assert new_plan == compile(new_state, "node-a")
    assert [s.ref for s in changes.replaced] == [ServiceRef("default", "b")]
    assert changes.removed == (ServiceRef("default", "a"),)
    assert ("ExternalIP", SHARED, 80) in frontends(new_plan, "default/b")


def test_a_new_winner_takes_the_frontend_from_the_old_one() -> None:
    old = svc("default/b", "two", cluster_ips=("10.96.0.11",), external_ips=(SHARED,))
    state = cluster(old)
    plan = compile(state, "node-a")
    new = svc("default/a", "one", cluster_ips=("10.96.0.10",), external_ips=(SHARED,))
    plan, state = _step(plan, state, Apply((new,)))
    assert ("ExternalIP", SHARED, 80) not in frontends(plan, "default/b")
    assert ("ExternalIP", SHARED, 80) in frontends(plan, "default/a")


def test_a_plan_without_its_claims_index_is_updated_in_full() -> None:
    winner = svc("default/a", "one", cluster_ips=("10.96.0.10",), external_ips=(SHARED,))
    loser = svc("default/b", "two", cluster_ips=("10.96.0.11",), external_ips=(SHARED,))
    state = cluster(winner, loser)
    compiled = compile(state, "node-a")
    rebuilt = attrs.evolve(compiled.diff(None).apply_to(None), revision=compiled.revision)
    assert index_of(rebuilt) is None and index_of(compiled) is not None
    assert rebuilt == compiled
    new_state = state.step(Delete((winner.key,)))
    assert update(rebuilt, state, new_state) == compile(new_state, "node-a")


# -- properties: the plan's owners are the reference's -----------------------------


def _expected_owners(state: Any, node: str) -> dict[tuple[str, int, Protocol], Any]:
    """Each claimed (address, port, protocol) -> (service, port name, kind), by the
    tie-break the reference documents, from its own list of frontends."""
    best: dict[tuple[str, int, Protocol], tuple[tuple[str, str], int, str]] = {}
    for key in state.services:
        service = state.services[key]
        if service.type is ServiceType.EXTERNAL_NAME or service.headless or not service.proxied:
            continue
        for port, kind, ip, number, _ in frontends_of(service, state.nodes.get(node)):
            rank = (key, service.ports.index(port), kind)
            dst = (ip, number, port.protocol)
            if dst not in best or rank < best[dst]:
                best[dst] = rank
    return {
        dst: (ServiceRef(*key), state.services[key].ports[index].name, kind)
        for dst, (key, index, kind) in best.items()
    }


def _plan_owners(plan: Plan) -> dict[tuple[str, int, Protocol], Any]:
    out: dict[tuple[str, int, Protocol], Any] = {}
    for entry in plan.services.values():
        for port in entry.ports:
            for f in port.frontends:
                dst = (str(ipaddress.ip_address(f.ip)), f.port, port.protocol)
                assert dst not in out, f"{dst} twice in the plan: {out[dst]} and {entry.ref}"
                out[dst] = (entry.ref, port.name, f.kind.value)
    return out


@FAST
@given(st.one_of(state_clusters(), direct_clusters()), st.sampled_from(NODES))
def test_each_frontend_once_owned_by_the_reference_winner(state: Any, node: str) -> None:
    assert _plan_owners(compile(state, node)) == _expected_owners(state, node)


def _conflicting_service(draw: RandomDraw, index: int) -> Service:
    """A service from a tiny vocabulary where every kind of claim meets: shared
    externalIPs and ingress, the node addresses, the other services' ClusterIPs."""
    rnd = draw.rnd
    stype = rnd.choice([ServiceType.CLUSTER_IP, ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER])
    external = stype is not ServiceType.CLUSTER_IP
    ports = [
        ServicePort(80, name="a", target_port=8080, node_port=30000 + index if external else None)
    ]
    if rnd.random() < 0.5:
        ports.insert(
            rnd.randint(0, 1),
            ServicePort(
                rnd.choice([80, 30000, 30001]),
                name="b",
                target_port=8080,
                protocol=rnd.choice([Protocol.TCP, Protocol.UDP]),
                node_port=30010 + index if external else None,
            ),
        )
    pool = [SHARED, OTHER, A_IP, B_IP, "10.96.0.10", "10.96.0.11"]
    ingress = tuple(rnd.sample([SHARED, OTHER], rnd.randint(0, 2)))
    return Service(
        rnd.choice(["default", "shop"]),
        f"s{index}",
        labels={SERVICE_PROXY_NAME_LABEL: "x"} if rnd.random() < 0.1 else {},
        type=stype,
        selector=Labels.of({"app": rnd.choice(list(PODS))}),
        ports=tuple(ports),
        cluster_ips=(f"10.96.0.{10 + index}",),
        external_ips=tuple(rnd.sample(pool, rnd.randint(0, 3))),
        status_ingress=ingress if stype is ServiceType.LOAD_BALANCER else (),
    )


@FAST
@given(st.integers(0, 2**32 - 1))
def test_incremental_update_equals_full_compile_under_conflicts(seed: int) -> None:
    draw = RandomDraw(seed)
    state = cluster(*(_conflicting_service(draw, i) for i in range(draw.rnd.randint(0, 4))))
    node = draw.rnd.choice(["node-a", "node-b"])
    plan = compile(state, node)
    for _ in range(10):
        index = draw.rnd.randint(0, 5)
        new = _conflicting_service(draw, index)
        existing = [s for s in state.services.values() if s.name != f"s{index}"]
        event: Event
        if existing and draw.rnd.random() < 0.3:
            event = Delete((draw.rnd.choice(existing).key,))
        else:
            event = Apply((new,))
        try:
            plan, state = _step(plan, state, event)
        except SvcnetError:
            continue
        assert _plan_owners(plan) == _expected_owners(state, node)


@FAST
@given(st.integers(0, 2**32 - 1))
def test_incremental_update_equals_full_compile_on_random_clusters(seed: int) -> None:
    """The memory backend's random clusters share externalIPs and ingress addresses."""
    draw = RandomDraw(seed)
    state = state_cluster(draw)
    node = NODES[draw.rnd.randint(0, 2)]
    plan = compile(state, node)
    for _ in range(8):
        try:
            plan, state = _step(plan, state, events(draw, state))
        except SvcnetError:
            continue
        assert _plan_owners(plan) == _expected_owners(state, node)
