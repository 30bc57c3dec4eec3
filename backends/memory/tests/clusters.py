"""Hypothesis strategies: small random clusters and probes aimed at their frontends.

Two ways to build a cluster:

* :func:`direct_clusters` — services with their allocations and endpoints given
  directly (no svcnet.state): a :class:`DirectState` with the read-only API that
  compile and semantics use. Reaches every endpoint-condition combination cheaply.
* :func:`state_clusters` — nodes, pods, services and EndpointSlices applied through
  :class:`svcnet.state.ClusterState`, the way users build clusters.

Both are used by the agreement tests (backends/memory/tests) and tests/test_plan.py.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import attrs
from hypothesis import strategies as st

from svcnet.errors import SvcnetError
from svcnet.model import (
    SERVICE_NAME_LABEL,
    SERVICE_PROXY_NAME_LABEL,
    ZONE_LABEL,
    ClusterConfig,
    ContainerPort,
    Endpoint,
    EndpointSlice,
    IPFamily,
    IPFamilyPolicy,
    KubeObject,
    Labels,
    Node,
    Pod,
    Protocol,
    Service,
    ServicePort,
    ServiceType,
    SessionAffinity,
    SliceEndpoint,
    SlicePort,
    TrafficPolicy,
)
from svcnet.probe import Probe, SourceKind
from svcnet.state import Apply, ClusterState, Configure, Delete, Event

V4, V6 = IPFamily.IPv4, IPFamily.IPv6
BOOLS = st.booleans()
SEEDS = st.integers(0, 2**32 - 1)
T = TypeVar("T")


# The generators below take ``draw``: Hypothesis' (shrinkable) or a seeded
# random.Random's (:class:`RandomDraw`, ten times faster for long agreement runs).
# They only ever draw ``ints(lo, hi)`` or ``BOOLS``.
Draw = Callable[[st.SearchStrategy[Any]], Any]
_BOUNDS: dict[int, tuple[int, int]] = {}


# Strategies are built once: building one per draw costs more than the test itself.
@functools.cache
def ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    strategy = st.integers(lo, hi)
    _BOUNDS[id(strategy)] = (lo, hi)
    return strategy


class RandomDraw:
    """A ``draw`` backed by random.Random: replays from its seed, does not shrink."""

    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)

    def __call__(self, strategy: st.SearchStrategy[Any]) -> Any:
        if strategy is BOOLS:
            return self.rnd.random() < 0.5
        lo, hi = _BOUNDS[id(strategy)]
        return self.rnd.randint(lo, hi)


def pick(draw: Draw, items: Sequence[T]) -> T:
    seq = list(items)
    return seq[draw(ints(0, len(seq) - 1))]


def subset(draw: Draw, items: Sequence[T], most: int) -> tuple[T, ...]:
    seq = list(items)
    chosen = [x for x in seq if draw(ints(0, 2)) == 0]
    return tuple(chosen[:most])


NODES = ("node-a", "node-b", "node-c")
NODE_IPS = {
    V4: ("192.168.56.11", "192.168.56.12", "192.168.56.13"),
    V6: ("fd00:56::11", "fd00:56::12", "fd00:56::13"),
}
SERVICE_CIDR = {V4: "10.96.0.0/16", V6: "fd00:96::/112"}
CLUSTER_CIDR = {V4: "10.244.0.0/16", V6: "fd00:244::/56"}
POOL = {V4: "203.0.113.0/28", V6: "2001:db8:1b::/124"}
EXTERNAL_IPS = {V4: ("198.51.100.1", "198.51.100.2"), V6: ("2001:db8:e::1",)}
LB_IPS = {V4: ("203.0.113.1", "203.0.113.2", "203.0.113.3"), V6: ("2001:db8:1b::1",)}
CLIENT_IPS = {V4: ("198.51.100.7", "192.0.2.9"), V6: ("2001:db8:c::7",)}
RANGES = {
    V4: ("198.51.100.0/28", "192.168.56.0/24", "10.244.0.0/17", "192.0.2.0/24"),
    V6: ("2001:db8:c::/64", "fd00:56::/64"),
}


def pod_ip(family: IPFamily, node: int, index: int) -> str:
    return (
        f"10.244.{node + 1}.{index + 2}" if family is V4 else f"fd00:244:0:{node + 1}::{index + 2}"
    )


def cluster_ip(family: IPFamily, index: int) -> str:
    return f"10.96.0.{index + 10}" if family is V4 else f"fd00:96::{index + 10:x}"


@attrs.frozen
class Changed:
    services: frozenset[tuple[str, str]] = frozenset()
    nodes: frozenset[str] = frozenset()
    config: bool = False


@attrs.frozen
class DirectState:
    """The read-only part of ClusterState that compile and semantics use."""

    config: ClusterConfig
    nodes: Mapping[str, Node]
    services: Mapping[tuple[str, str], Service]
    endpoints: Mapping[tuple[str, str], Mapping[str, tuple[Endpoint, ...]]]
    revision: int = 0

    def service_endpoints(self, namespace: str, name: str) -> Mapping[str, tuple[Endpoint, ...]]:
        return self.endpoints.get((namespace, name), {})

    def changed_since(self, revision: int) -> Changed | None:
        return None


# -- shared pieces ----------------------------------------------------------------


def configs(draw: Draw) -> ClusterConfig:
    families = pick(draw, ([(V4,), (V4, V6), (V6, V4)]))
    return ClusterConfig(
        service_cidrs=tuple(SERVICE_CIDR[f] for f in families),
        cluster_cidrs=tuple(CLUSTER_CIDR[f] for f in families),
        load_balancer_pool=tuple(POOL[f] for f in families),
        masquerade_all=draw(BOOLS),
    )


def nodes(draw: Draw, config: ClusterConfig) -> dict[str, Node]:
    count = draw(ints(1, 3))
    out = {}
    for i in range(count):
        zone = pick(draw, (["", "z1", "z2"]))
        families = config.families if draw(BOOLS) else config.families[:1]
        out[NODES[i]] = Node(
            NODES[i],
            labels={ZONE_LABEL: zone} if zone else {},
            pod_cidrs=tuple(
                f"10.244.{i + 1}.0/24" if f is V4 else f"fd00:244:0:{i + 1}::/64"
                for f in config.families
            ),
            addresses=tuple(NODE_IPS[f][i] for f in families),
        )
    return out


def services(draw: Draw, config: ClusterConfig, index: int, pinned_lb: bool) -> Service:
    """One service; ``pinned_lb``: give LoadBalancer IPs as status ingress."""
    stype = pick(draw, (list(ServiceType)))
    families = pick(draw, ([config.families, config.families[:1], config.families[-1:]]))
    headless = stype is ServiceType.CLUSTER_IP and draw(ints(0, 9)) == 0
    nports = draw(ints(0 if stype is ServiceType.CLUSTER_IP else 1, 2))
    ports = []
    for p in range(nports):
        external = stype in (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER)
        ports.append(
            ServicePort(
                port=80 + p,
                name=f"p{p}" if nports > 1 else pick(draw, (["", "web"])),
                protocol=pick(draw, ([Protocol.TCP, Protocol.TCP, Protocol.UDP])),
                target_port=pick(draw, ([None, 8080, "http"])),
                node_port=30000 + index * 10 + p if external and draw(ints(0, 5)) else None,
            )
        )
    lb = stype is ServiceType.LOAD_BALANCER
    ext_pool = [ip for f in families for ip in EXTERNAL_IPS[f]]
    range_pool = [r for f in families for r in RANGES[f]]
    lb_pool = [ip for f in families for ip in LB_IPS[f]]
    labels = {"app": f"s{index}"}
    if draw(ints(0, 7)) == 0:
        labels[SERVICE_PROXY_NAME_LABEL] = "other"
    status = subset(draw, lb_pool, 2) if lb and pinned_lb else ()
    return Service(
        namespace=pick(draw, (["default", "shop"])),
        name=f"svc{index}",
        labels=labels,
        type=stype,
        selector=Labels.of({"app": pick(draw, (["a", "b"]))}),
        ports=tuple(ports),
        cluster_ips=()
        if headless or stype is ServiceType.EXTERNAL_NAME
        else tuple(cluster_ip(f, index) for f in families),
        headless=headless,
        ip_families=families,
        external_ips=subset(draw, ext_pool, 2),
        external_traffic_policy=pick(draw, (list(TrafficPolicy)))
        if stype in (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER)
        else TrafficPolicy.CLUSTER,
        internal_traffic_policy=pick(draw, (list(TrafficPolicy))),
        session_affinity=pick(draw, (list(SessionAffinity))),
        affinity_timeout=pick(draw, ([10800, 60])),
        load_balancer_source_ranges=subset(draw, range_pool, 2) if lb else (),
        allocate_load_balancer_node_ports=True,
        external_name="example.com" if stype is ServiceType.EXTERNAL_NAME else "",
        publish_not_ready_addresses=draw(ints(0, 5)) == 0,
        traffic_distribution=pick(draw, (["", "PreferClose"])),
        status_ingress=status,
        load_balancer_ips=status,
    )


# -- direct clusters -------------------------------------------------------------


@st.composite
def direct_clusters(draw: st.DrawFn) -> DirectState:
    return direct_cluster(draw)


def direct_cluster(draw: Draw) -> DirectState:
    config = configs(draw)
    node_map = nodes(draw, config)
    svc_map = {}
    endpoints: dict[tuple[str, str], dict[str, tuple[Endpoint, ...]]] = {}
    for i in range(draw(ints(1, 4))):
        svc = services(draw, config, i, pinned_lb=True)
        svc_map[(svc.namespace, svc.name)] = svc
        if svc.type is ServiceType.EXTERNAL_NAME:
            continue
        per_port = {}
        for port in svc.ports:
            eps = []
            for _ in range(draw(ints(0, 4))):
                n = draw(ints(0, 2))
                family = pick(draw, (config.families))
                serving = draw(ints(0, 3)) > 0
                terminating = draw(ints(0, 3)) == 0
                ready = (serving and not terminating) or svc.publish_not_ready_addresses
                node_name = NODES[n] if draw(ints(0, 6)) else ""
                node = node_map.get(NODES[n])
                eps.append(
                    Endpoint(
                        ip=pod_ip(family, n, draw(ints(0, 2))),
                        port=pick(draw, ([8080, 9090])),
                        node_name=node_name,
                        ready=ready,
                        serving=serving,
                        terminating=terminating,
                        zone=(node.zone or "") if node is not None and node_name else "",
                    )
                )
            per_port[port.name] = tuple(sorted(set(eps)))
        endpoints[(svc.namespace, svc.name)] = per_port
    return DirectState(config, node_map, svc_map, endpoints)


# -- clusters built through svcnet.state ----------------------------------------------


def pods(draw: Draw, config: ClusterConfig, node_map: Mapping[str, Node], i: int) -> Pod:
    n = draw(ints(0, 2))
    node_name = NODES[n] if NODES[n] in node_map else ""
    ports = pick(
        draw,
        (
            [
                (ContainerPort(8080, "http"),),
                (ContainerPort(9090, "http"), ContainerPort(8080, "web")),
                (ContainerPort(8080, "http", Protocol.UDP),),
                (),
            ]
        ),
    )
    given_ips = node_name == "" or draw(BOOLS)
    return Pod(
        namespace=pick(draw, (["default", "shop"])),
        name=f"pod{i}",
        labels={"app": pick(draw, (["a", "b"]))},
        node_name=node_name,
        ports=ports,
        pod_ips=tuple(pod_ip(f, n, i) for f in config.families) if given_ips else (),
        ready=draw(ints(0, 3)) > 0,
        terminating=draw(ints(0, 3)) == 0,
    )


def slices(draw: Draw, svc: Service, config: ClusterConfig) -> list[EndpointSlice]:
    out = []
    for j, family in enumerate(config.families):
        eps = []
        for k in range(draw(ints(0, 3))):
            n = draw(ints(0, 2))
            serving = draw(ints(0, 3)) > 0
            terminating = draw(ints(0, 3)) == 0
            eps.append(
                SliceEndpoint(
                    addresses=(pod_ip(family, n, 10 + k),),
                    ready=serving and not terminating,
                    serving=serving,
                    terminating=terminating,
                    node_name=NODES[n] if draw(ints(0, 4)) else "",
                    zone=pick(draw, (["", "z1", "z2"])),
                )
            )
        out.append(
            EndpointSlice(
                namespace=svc.namespace,
                name=f"{svc.name}-{j}",
                service_name=svc.name,
                address_type=family,
                endpoints=tuple(eps),
                ports=tuple(SlicePort(8080, p.name, p.protocol) for p in svc.ports),
                labels={SERVICE_NAME_LABEL: svc.name},
            )
        )
    return out


def service_for_state(draw: Draw, config: ClusterConfig, index: int) -> Service:
    svc = services(draw, config, index, pinned_lb=draw(BOOLS))
    dual = len(svc.ip_families) > 1
    if not draw(ints(0, 4)):
        svc = attrs.evolve(svc, selector=None)
    return attrs.evolve(
        svc,
        ip_family_policy=IPFamilyPolicy.REQUIRE_DUAL_STACK if dual else IPFamilyPolicy.SINGLE_STACK,
        load_balancer_ips=(),
        ip_families=() if svc.type is ServiceType.EXTERNAL_NAME else svc.ip_families,
    )


def cluster_objects(draw: Draw) -> tuple[ClusterConfig, list[KubeObject]]:
    config = configs(draw)
    node_map = nodes(draw, config)
    objects: list[KubeObject] = list(node_map.values())
    objects += [pods(draw, config, node_map, i) for i in range(draw(ints(0, 6)))]
    for i in range(draw(ints(1, 4))):
        svc = service_for_state(draw, config, i)
        objects.append(svc)
        if svc.selector is None and svc.type is not ServiceType.EXTERNAL_NAME:
            objects += slices(draw, svc, config)
    return config, objects


def build(config: ClusterConfig, objects: list[KubeObject]) -> ClusterState:
    return ClusterState.empty(config).step(Apply(tuple(objects)))


def state_cluster(draw: Draw) -> ClusterState:
    config, objects = cluster_objects(draw)
    try:
        return build(config, objects)
    except SvcnetError as e:  # pragma: no cover - the generator aims at valid clusters
        raise AssertionError(f"generated cluster refused: {e}\n{objects}") from e


@st.composite
def state_clusters(draw: st.DrawFn) -> ClusterState:
    """Shrinkable clusters built through svcnet.state."""
    return state_cluster(draw)


# Fast clusters for long runs: Hypothesis draws only the seed.
seeded_state_clusters = SEEDS.map(lambda seed: state_cluster(RandomDraw(seed)))


def events(draw: Draw, state: ClusterState) -> Event:
    """One random change to ``state`` (valid or not: callers skip refused ones)."""
    choice = draw(ints(0, 7))
    config = state.config
    if choice == 0 and state.pods:
        key = pick(draw, (sorted(state.pods)))
        pod = state.pods[key]
        return Apply((attrs.evolve(pod, ready=not pod.ready, terminating=draw(BOOLS)),))
    if choice == 1 and state.pods:
        key = pick(draw, (sorted(state.pods)))
        return Delete((state.pods[key].key,))
    if choice == 2:
        return Apply((pods(draw, config, state.nodes, draw(ints(0, 8))),))
    if choice == 3 and state.nodes:
        name = pick(draw, (sorted(state.nodes)))
        node = state.nodes[name]
        if draw(ints(0, 3)) == 0:
            return Delete((node.key,))
        zone = pick(draw, (["", "z1", "z2"]))
        addresses = node.addresses[:1] if draw(BOOLS) else node.addresses
        return Apply(
            (attrs.evolve(node, labels={ZONE_LABEL: zone} if zone else {}, addresses=addresses),)
        )
    if choice == 4 and state.services:
        key = pick(draw, (sorted(state.services)))
        return Delete((state.services[key].key,))
    if choice == 5:
        return Configure(attrs.evolve(config, masquerade_all=not config.masquerade_all))
    if choice == 6 and state.slices:
        key = pick(draw, (sorted(state.slices)))
        es = state.slices[key]
        return Apply((attrs.evolve(es, endpoints=es.endpoints[1:]),))
    index = draw(ints(0, 5))
    svc = service_for_state(draw, config, index)
    old = state.services.get((svc.namespace, svc.name))
    if old is not None:
        svc = attrs.evolve(
            svc,
            cluster_ips=old.cluster_ips,
            headless=old.headless,
            ip_families=old.ip_families,
            ip_family_policy=old.ip_family_policy,
        )
    return Apply((svc,))


# -- probes ------------------------------------------------------------------------


def _addresses(state: Any) -> tuple[list[str], list[int]]:
    """Interesting destinations and ports of a cluster."""
    ips = {"127.0.0.1", "8.8.8.8", "10.96.0.200", "fd00:96::200", "::1"}
    ports = {80, 81, 79, 30000, 53}
    for node in state.nodes.values():
        ips.update(node.addresses)
    for svc in state.services.values():
        ips.update(svc.cluster_ips)
        ips.update(svc.external_ips)
        ips.update(svc.load_balancer_ips)
        for p in svc.ports:
            ports.update({p.port, p.port + 1})
            if p.node_port:
                ports.update({p.node_port, p.node_port + 1})
    return sorted(ips), sorted(ports)


def _frontends(state: Any) -> list[tuple[str, int, Protocol]]:
    """(ip, port, protocol) of every would-be frontend, on any node."""
    out = []
    for svc in state.services.values():
        for p in svc.ports:
            for ip in (*svc.cluster_ips, *svc.external_ips, *svc.load_balancer_ips):
                out.append((ip, p.port, p.protocol))
            if p.node_port:
                out += [
                    (ip, p.node_port, p.protocol)
                    for n in state.nodes.values()
                    for ip in n.addresses
                ]
    return sorted(set(out), key=str)


def _endpoint_ips(state: Any) -> list[str]:
    by_service: list[Any]
    if isinstance(state, DirectState):
        by_service = list(state.endpoints.values())
    else:
        by_service = [state.service_endpoints(*k) for k in state.services]
    return sorted({e.ip for ports in by_service for eps in ports.values() for e in eps})


_MEMO: dict[int, tuple[Any, Any]] = {}


def _aims(state: Any) -> tuple[list[str], list[int], list[tuple[str, int, Protocol]], list[str]]:
    """What probes aim at in ``state`` (memoised: many probes per cluster)."""
    hit = _MEMO.get(id(state))
    if hit is not None and hit[0] is state:
        return hit[1]  # type: ignore[no-any-return]
    value = (*_addresses(state), _frontends(state), _endpoint_ips(state))
    if len(_MEMO) > 64:
        _MEMO.clear()
    _MEMO[id(state)] = (state, value)
    return value


def random_probe(rnd: random.Random, state: Any) -> Probe:
    """A probe aimed at ``state``'s frontends (and near misses), from ``rnd``."""
    ips, ports, frontends, endpoint_ips = _aims(state)
    protocol = rnd.choice([Protocol.TCP, Protocol.TCP, Protocol.UDP, Protocol.SCTP])
    if frontends and rnd.randint(0, 3):
        dst, port, protocol = rnd.choice(frontends)
        if rnd.randint(0, 5) == 0:
            port += rnd.choice([-1, 1])
        if rnd.randint(0, 5) == 0:
            protocol = rnd.choice(list(Protocol))
    else:
        dst, port = rnd.choice(ips), rnd.choice(ports)
    family = IPFamily.of(dst)
    node_names = sorted(state.nodes) or ["node-a"]
    node_name = rnd.choice(node_names)
    node = state.nodes.get(node_name)
    kind = rnd.choice(list(SourceKind))
    if kind is SourceKind.POD:
        hairpin = [ip for ip in endpoint_ips if IPFamily.of(ip) is family]
        if hairpin and rnd.random() < 0.5:
            source = rnd.choice(hairpin)
        else:
            source = pod_ip(family, rnd.randint(0, 2), rnd.randint(0, 2))
    elif kind is SourceKind.NODE:
        own = node.address(family) if node is not None else None
        source = own or NODE_IPS[family][0]
    else:
        candidates = list(CLIENT_IPS[family])
        candidates += [ip for i, ip in enumerate(NODE_IPS[family]) if NODES[i] != node_name]
        candidates += [
            ip
            for svc in state.services.values()
            for ip in svc.load_balancer_ips
            if IPFamily.of(ip) is family
        ]
        source = rnd.choice(candidates)
    return Probe(kind, source, node_name, dst, port, protocol)


@st.composite
def probes(draw: st.DrawFn, state: Any) -> Probe:
    """One probe (see :func:`random_probe`; the seed is drawn, so it replays)."""
    return random_probe(random.Random(draw(SEEDS)), state)
