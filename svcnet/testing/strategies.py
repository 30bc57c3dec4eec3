"""Hypothesis strategies for clusters, events and probes that hit the interesting places.

Everything is drawn from small vocabularies so that objects meet: three node
names, a handful of pod and service names, two label keys with two values each,
two named container ports, a small service CIDR and NodePort range (pinned
addresses and ports collide now and then, and the state refuses the event —
the harness carries on with the old state; externalIPs and LoadBalancer ingress
addresses are shared now and then, which the state accepts: conflicting
frontends, settled by the tie-break). Objects are model values; the
agreement machine feeds them through their Kubernetes manifests
(:func:`svcnet.manifests.to_manifest`), as a user would.

Strategies that depend on what exists take the current
:class:`~svcnet.state.ClusterState`; strategies that depend on what a backend
can do take its :class:`~svcnet.backend.Capabilities` (the harness aims only at
what is declared: no SCTP service for a backend without SCTP, and so on).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs
from hypothesis import strategies as st

from svcnet.backend import Capabilities
from svcnet.errors import ProbeError
from svcnet.model import (
    SERVICE_NAME_LABEL,
    SERVICE_PROXY_NAME_LABEL,
    ZONE_LABEL,
    ClusterConfig,
    ContainerPort,
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
    TrafficDistribution,
    TrafficPolicy,
)
from svcnet.probe import Probe, ProbeSource, SourceKind, resolve_source
from svcnet.state import Apply, ClusterState, Delete, Event

__all__ = [
    "ALL_CAPABILITIES",
    "NODE_NAMES",
    "cluster_objects",
    "configs",
    "endpoint_slices",
    "events",
    "nodes",
    "pods",
    "probes",
    "services",
]

V4, V6 = IPFamily.IPv4, IPFamily.IPv6
ALL_CAPABILITIES = Capabilities()

# -- the vocabulary ----------------------------------------------------------------

NODE_NAMES = ("node-a", "node-b", "node-c")
NAMESPACES = ("default", "default", "default", "default", "shop")
POD_NAMES = ("p0", "p1", "p2", "p3", "p4", "p5")
SERVICE_NAMES = ("web", "api", "db", "dns")
ZONES = ("", "zone-1", "zone-2")
LABELS = (("app", ("web", "api")), ("tier", ("front", "back")))
PORT_NAMES = ("http", "metrics")

SERVICE_CIDR = {V4: "10.96.0.0/24", V6: "fd00:96::/120"}
CLUSTER_CIDR = {V4: "10.244.0.0/16", V6: "fd00:244::/56"}
LB_POOL = {V4: "203.0.113.0/29", V6: "2001:db8:1b::/125"}
NODE_PORT_RANGE = (30000, 30063)


def _service_index(namespace: str, name: str) -> int:
    known = sorted({(ns, n) for ns in NAMESPACES for n in SERVICE_NAMES})
    if (namespace, name) in known:
        return known.index((namespace, name))
    return len(known) + sum(f"{namespace}/{name}".encode()) % (40 - len(known))


# One address per family that any service may list among its externalIPs and its
# LoadBalancer status ingress, so that frontends conflict now and then.
SHARED_IPS = {V4: "198.51.100.98", V6: "2001:db8:e::1"}


def status_ips_of(namespace: str, name: str, family: IPFamily) -> tuple[str, str]:
    """Two ``status.loadBalancer.ingress`` addresses, outside the pool (a status
    address is not reserved in the pool): one of this service alone, then the
    :data:`SHARED_IPS` address (a conflict, see :func:`external_ips_of`)."""
    index = _service_index(namespace, name)
    if family is V4:
        return (f"192.0.2.{100 + 2 * index}", SHARED_IPS[V4])
    return (f"2001:db8:1c::{100 + 2 * index:x}", SHARED_IPS[V6])


def external_ips_of(namespace: str, name: str, family: IPFamily) -> tuple[str, str]:
    """Two externalIPs: one that belongs to this service alone, then the
    :data:`SHARED_IPS` address, which other services may list too.

    Kubernetes lets services claim one address, port and protocol together (the
    same externalIP, or an externalIP equal to another service's — or the
    service's own — LoadBalancer ingress); the first service by namespace/name
    wins, then its first port, then the first frontend kind, and the compiled plan
    holds only the winner's frontend (docs/reference/semantics.md, "Conflicting
    frontends"). The shared address is drawn second, so shrinking drops it first.
    """
    index = _service_index(namespace, name)
    if family is V4:
        return (f"198.51.100.{100 + 2 * index}", SHARED_IPS[V4])
    return (f"2001:db8:e::{100 + 2 * index:x}", SHARED_IPS[V6])


# Clients: the first is inside SOURCE_RANGES[family][0], the second outside all.
CLIENTS = {V4: ("198.51.100.7", "192.0.2.9"), V6: ("2001:db8:c::7", "2001:db8:d::9")}
SOURCE_RANGES = {
    V4: ("198.51.100.0/28", "192.168.56.0/24", "10.244.0.0/17"),
    V6: ("2001:db8:c::/64", "fd00:56::/64"),
}


def node_ip(family: IPFamily, index: int) -> str:
    return f"192.168.56.{11 + index}" if family is V4 else f"fd00:56::{11 + index:x}"


def pod_cidr(family: IPFamily, index: int) -> str:
    return f"10.244.{index + 1}.0/24" if family is V4 else f"fd00:244:0:{index + 1}::/64"


def pinned_ip(cidr: str, offset: int) -> str:
    """The ``offset``-th address of ``cidr``."""
    return str(ipaddress.ip_network(cidr)[offset])


# -- drawing cheaply ----------------------------------------------------------------
#
# Every strategy here is a plain ``draw_*(draw, ...)`` function over a few cached
# integer strategies (building strategy objects per draw dominates a run's time);
# the public strategies at the end of the module wrap them with st.composite.

Draw = Callable[[st.SearchStrategy[Any]], Any]
T = TypeVar("T")


@functools.cache
def _between(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.integers(lo, hi)


class Digits:
    """A ``draw`` that decodes every choice from one big integer (mixed radix).

    Hypothesis spends far more time per draw than the harness spends per probe,
    so the agreement machine draws one integer per event (and one per batch of
    probes) and decodes it with the same ``draw_*`` functions; 0 decodes to the
    first choice everywhere, so shrinking the integer simplifies the object.
    """

    def __init__(self, value: int) -> None:
        self.value = value

    def __call__(self, strategy: st.SearchStrategy[Any]) -> Any:
        raise TypeError("Digits only decodes integer()/pick()/chance()/flip()/subset()")

    def take(self, n: int) -> int:
        self.value, digit = divmod(self.value, n)
        return digit


def integer(draw: Draw, lo: int, hi: int) -> int:
    """An integer in [lo, hi], shrinking towards ``lo``."""
    if hi <= lo:
        return lo
    if isinstance(draw, Digits):
        return lo + draw.take(hi - lo + 1)
    return int(draw(_between(lo, hi)))


def pick(draw: Draw, items: Sequence[T]) -> T:
    """One of ``items``, shrinking towards the first."""
    return items[integer(draw, 0, len(items) - 1)]


def chance(draw: Draw, n: int) -> bool:
    """True with probability 1/n (shrinks to False)."""
    return integer(draw, 0, n - 1) == n - 1


def flip(draw: Draw) -> bool:
    return integer(draw, 0, 1) == 1


def subset(draw: Draw, items: Sequence[T], lo: int, hi: int) -> tuple[T, ...]:
    """Between ``lo`` and ``hi`` distinct items, in the order drawn."""
    rest = list(items)
    out: list[T] = []
    for _ in range(integer(draw, lo, min(hi, len(rest)))):
        out.append(rest.pop(integer(draw, 0, len(rest) - 1)))
    return tuple(out)


# -- configuration -----------------------------------------------------------------


def draw_config(
    draw: Draw, capabilities: Capabilities = ALL_CAPABILITIES) -> ClusterConfig:
    """IPv4, IPv6 or dual-stack (either family primary), among the declared families."""
    choices = [
        fams
        for fams in ((V4,), (V4, V6), (V6, V4), (V6,))
        if all(f in capabilities.families for f in fams)
    ]
    families = pick(draw, choices)
    return ClusterConfig(
        service_cidrs=tuple(SERVICE_CIDR[f] for f in families),
        cluster_cidrs=tuple(CLUSTER_CIDR[f] for f in families),
        node_port_range=NODE_PORT_RANGE,
        load_balancer_pool=tuple(LB_POOL[f] for f in families),
        masquerade_all=chance(draw, 4),
    )


# -- objects -----------------------------------------------------------------------


def draw_node(
    draw: Draw, config: ClusterConfig, name: str | None = None) -> Node:
    """A node with a zone (or none), an InternalIP per family (sometimes only the
    primary one) and a podCIDR per family."""
    name = name or pick(draw, NODE_NAMES)
    i = NODE_NAMES.index(name) if name in NODE_NAMES else 0
    families = config.families
    if len(families) > 1 and chance(draw, 4):
        families = families[:1]
    zone = pick(draw, ZONES)
    return Node(
        name=name,
        labels={ZONE_LABEL: zone} if zone else {},
        pod_cidrs=tuple(pod_cidr(f, i) for f in config.families),
        addresses=tuple(node_ip(f, i) for f in families),
    )


_CONTAINER_PORTS = (
    (ContainerPort(8080, "http"),),
    (ContainerPort(8080, "http"), ContainerPort(9090, "metrics")),
    (ContainerPort(9090, "http"), ContainerPort(8080, "metrics")),
    (ContainerPort(5353, "http", Protocol.UDP), ContainerPort(8080, "http")),
    (ContainerPort(8080, "http", Protocol.SCTP),),
    (),
)


def draw_pod_labels(draw: Draw) -> dict[str, str]:
    """``app`` always, ``tier`` mostly: selectors over the same words hit often."""
    (app, apps), (tier, tiers) = LABELS
    out = {app: pick(draw, apps)}
    if not chance(draw, 4):
        out[tier] = pick(draw, tiers)
    return out


def draw_pod(
    draw: Draw,
    config: ClusterConfig,
    node_names: Sequence[str] = NODE_NAMES,
    name: str | None = None,
) -> Pod:
    """A pod on one of ``node_names`` (rarely on none), labelled from the vocabulary,
    ready or not, terminating or not, with named container ports, sometimes
    hostNetwork; its IPs given (inside the node's podCIDR) or left to allocation."""
    node_name = pick(draw, node_names) if node_names and not chance(draw, 8) else ""
    host_network = bool(node_name) and chance(draw, 8)
    pod_ips: tuple[str, ...] = ()
    if node_name and not host_network and chance(draw, 3):
        i = NODE_NAMES.index(node_name) if node_name in NODE_NAMES else 0
        offset = 100 + integer(draw, 0, 3)
        pod_ips = tuple(pinned_ip(pod_cidr(f, i), offset) for f in config.families)
    return Pod(
        namespace=pick(draw, NAMESPACES),
        name=name or pick(draw, POD_NAMES),
        labels=draw_pod_labels(draw),
        node_name=node_name,
        host_network=host_network,
        ports=pick(draw, _CONTAINER_PORTS),
        pod_ips=pod_ips,
        ready=not chance(draw, 4),
        terminating=chance(draw, 5),
    )


def draw_selector(draw: Draw) -> Labels | None:
    """A selector over the pod vocabulary, or None (endpoints from EndpointSlices)."""
    if chance(draw, 5):
        return None
    (app, apps), (tier, tiers) = LABELS
    if chance(draw, 6):
        return Labels.of({tier: pick(draw, tiers)})
    out = {app: pick(draw, apps)}
    if chance(draw, 3):
        out[tier] = pick(draw, tiers)
    return Labels.of(out)


def draw_service_ports(
    draw: Draw, stype: ServiceType, capabilities: Capabilities, headless: bool
) -> tuple[ServicePort, ...]:
    protocols = [p for p in (Protocol.TCP, Protocol.UDP, Protocol.SCTP)
                 if p in capabilities.protocols]
    lo = 0 if headless or stype is ServiceType.EXTERNAL_NAME else 1
    count = integer(draw, lo, 2)
    numbers = subset(draw, (80, 443, 53), count, count)
    external = stype in (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER)
    out = []
    for i, number in enumerate(numbers):
        name = PORT_NAMES[i] if count > 1 else pick(draw, ("", *PORT_NAMES))
        node_port = None
        if external and chance(draw, 3):
            node_port = NODE_PORT_RANGE[0] + integer(draw, 0, 7)
        out.append(
            ServicePort(
                port=number,
                name=name,
                protocol=pick(draw, protocols),
                target_port=pick(draw, [None, 8080, 9090, "http", "metrics"]),
                node_port=node_port,
            )
        )
    return tuple(out)


def draw_service(
    draw: Draw,
    config: ClusterConfig,
    capabilities: Capabilities = ALL_CAPABILITIES,
    name: str | None = None,
    namespace: str | None = None,
) -> Service:
    """A Service of any type with any option: headless, pinned or allocated
    ClusterIP(s) and NodePorts, externalIPs, both traffic policies, ClientIP
    affinity, LoadBalancer status/loadBalancerIP/source ranges, the
    service-proxy-name label, publishNotReadyAddresses, every trafficDistribution
    (PreferClose, PreferSameZone, PreferSameNode), named and
    numbered targetPorts, every declared protocol, dual-stack when the config is."""
    stype = pick(draw, list(ServiceType))
    namespace = namespace or pick(draw, NAMESPACES)
    name = name or pick(draw, SERVICE_NAMES)
    families = config.families
    policy: IPFamilyPolicy | None = None
    if stype is not ServiceType.EXTERNAL_NAME:
        if len(families) > 1:
            policy = pick(draw, list(IPFamilyPolicy))
            if policy is IPFamilyPolicy.SINGLE_STACK:
                families = (pick(draw, families),)
            elif flip(draw):
                families = families[::-1]
        elif flip(draw):
            policy = IPFamilyPolicy.SINGLE_STACK
    else:
        families = ()
    headless = stype is ServiceType.CLUSTER_IP and chance(draw, 6)
    cluster_ips: tuple[str, ...] = ()
    if stype is not ServiceType.EXTERNAL_NAME and not headless and chance(draw, 3):
        offset = 10 + integer(draw, 0, 5)
        cluster_ips = tuple(pinned_ip(SERVICE_CIDR[f], offset) for f in families)
    ports = draw_service_ports(draw, stype, capabilities, headless)
    external = stype in (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER)
    lb = stype is ServiceType.LOAD_BALANCER
    external_ips: tuple[str, ...] = ()
    if stype is not ServiceType.EXTERNAL_NAME and chance(draw, 3):
        pool = [ip for f in families for ip in external_ips_of(namespace, name, f)]
        external_ips = subset(draw, pool, 1, 2)
    labels = {"app": pick(draw, LABELS[0][1])}
    if chance(draw, 8):
        labels[SERVICE_PROXY_NAME_LABEL] = "other-proxy"
    affinity = SessionAffinity.NONE
    timeout = 10800
    if capabilities.session_affinity and chance(draw, 3):
        affinity = SessionAffinity.CLIENT_IP
        timeout = pick(draw, [10800, 60, 1])
    ranges: tuple[str, ...] = ()
    status: tuple[str, ...] = ()
    lb_ip = ""
    if lb:
        if capabilities.source_ranges and flip(draw):
            pool = [r for f in families for r in SOURCE_RANGES[f]]
            ranges = subset(draw, pool, 1, 2)
        how = integer(draw, 0, 3)
        if how == 0:
            pool = [ip for f in families for ip in status_ips_of(namespace, name, f)]
            status = subset(draw, pool, 1, 2)
        elif how == 1:
            lb_ip = pinned_ip(LB_POOL[families[0]], integer(draw, 1, 3))
    return Service(
        namespace=namespace,
        name=name,
        labels=labels,
        type=stype,
        selector=None if stype is ServiceType.EXTERNAL_NAME else draw_selector(draw),
        ports=ports,
        cluster_ips=cluster_ips,
        headless=headless,
        ip_families=families if (policy is not None or flip(draw)) else (),
        ip_family_policy=policy,
        external_ips=external_ips,
        external_traffic_policy=pick(draw, list(TrafficPolicy))
        if external or external_ips
        else TrafficPolicy.CLUSTER,
        internal_traffic_policy=pick(draw, list(TrafficPolicy))
        if stype is not ServiceType.EXTERNAL_NAME
        else TrafficPolicy.CLUSTER,
        session_affinity=affinity,
        affinity_timeout=timeout,
        load_balancer_ip=lb_ip,
        load_balancer_source_ranges=ranges,
        allocate_load_balancer_node_ports=not (lb and chance(draw, 4)),
        external_name="backend.example.com" if stype is ServiceType.EXTERNAL_NAME else "",
        publish_not_ready_addresses=chance(draw, 6),
        traffic_distribution=pick(draw, list(TrafficDistribution)) if chance(draw, 3) else None,
        status_ingress=status,
        load_balancer_ips=status,
    )


def draw_endpoint_slice(
    draw: Draw,
    config: ClusterConfig,
    service: Service | None = None,
    namespace: str | None = None,
    service_name: str | None = None,
) -> EndpointSlice:
    """An EndpointSlice for a selector-less service (``service`` when it exists:
    its port names and protocols are used)."""
    namespace = service.namespace if service is not None else namespace or "default"
    service_name = service.name if service is not None else service_name or "web"
    family = pick(draw, config.families)
    if service is not None and service.ports:
        ports = tuple(
            SlicePort(pick(draw, [8080, 9090]), p.name, p.protocol)
            for p in service.ports
        )
    else:
        ports = (SlicePort(8080, pick(draw, ("", "http")), Protocol.TCP),)
    endpoints = []
    for k in range(integer(draw, 0, 3)):
        n = integer(draw, 0, len(NODE_NAMES) - 1)
        serving = not chance(draw, 4)
        terminating = chance(draw, 4)
        endpoints.append(
            SliceEndpoint(
                addresses=(pinned_ip(pod_cidr(family, n), 200 + k),),
                ready=serving and not terminating,
                serving=serving,
                terminating=terminating,
                node_name="" if chance(draw, 5) else NODE_NAMES[n],
                zone=pick(draw, ZONES),
            )
        )
    return EndpointSlice(
        namespace=namespace,
        name=f"{service_name}-{family.value.lower()}-{integer(draw, 0, 1)}",
        service_name=service_name,
        address_type=family,
        endpoints=tuple(endpoints),
        ports=ports,
        labels={SERVICE_NAME_LABEL: service_name},
    )


def draw_cluster_objects(
    draw: Draw, config: ClusterConfig, capabilities: Capabilities = ALL_CAPABILITIES
) -> list[KubeObject]:
    """A whole small cluster in one batch: 1-3 nodes, pods, services and slices."""
    names = NODE_NAMES[: integer(draw, 1, len(NODE_NAMES))]
    out: list[KubeObject] = [draw_node(draw, config, n) for n in names]
    out += [draw_pod(draw, config, names, POD_NAMES[i]) for i in range(integer(draw, 1, 6))]
    for i in range(integer(draw, 1, 3)):
        svc = draw_service(draw, config, capabilities, name=SERVICE_NAMES[i])
        out.append(svc)
        if svc.selector is None and svc.type is not ServiceType.EXTERNAL_NAME:
            out += [draw_endpoint_slice(draw, config, svc) for _ in range(integer(draw, 0, 2))]
    return out


# -- events ------------------------------------------------------------------------


def _replaced_service(draw: Draw, old: Service, new: Service) -> Service:
    """``new`` as a replacement of ``old``: usually keeps what Kubernetes keeps
    immutable (clusterIPs, families), sometimes not (the state refuses it)."""
    if chance(draw, 8):
        return attrs.evolve(new, name=old.name, namespace=old.namespace)
    return attrs.evolve(
        new,
        name=old.name,
        namespace=old.namespace,
        cluster_ips=old.cluster_ips,
        headless=old.headless,
        ip_families=old.ip_families,
        ip_family_policy=old.ip_family_policy,
        type=new.type if not old.headless and new.type is not ServiceType.EXTERNAL_NAME
        else old.type,
    )


def draw_event(
    draw: Draw, state: ClusterState, capabilities: Capabilities = ALL_CAPABILITIES
) -> Event:
    """One change to ``state``: apply a new object, replace an existing one (a pod
    turning (not) ready or terminating, a service changing its spec, a node its
    zone or addresses, a slice losing or gaining endpoints), or delete one.
    Most are accepted; some are refused (collisions, immutable fields, deleting
    what is gone) and must leave the state unchanged."""
    config = state.config
    choice = integer(draw, 0, 11)
    node_names = sorted(state.nodes) or list(NODE_NAMES[:1])
    if choice == 0:
        return Apply((draw_node(draw, config),))
    if choice in (1, 2):
        return Apply((draw_pod(draw, config, node_names),))
    if choice == 3 and state.pods:
        pod = state.pods[pick(draw, sorted(state.pods))]
        flip = pick(draw, ["ready", "terminating", "labels", "node"])
        if flip == "ready":
            pod = attrs.evolve(pod, ready=not pod.ready)
        elif flip == "terminating":
            pod = attrs.evolve(pod, terminating=not pod.terminating)
        elif flip == "labels":
            pod = attrs.evolve(pod, labels=draw_pod_labels(draw))
        else:
            pod = attrs.evolve(pod, node_name=pick(draw, node_names))
        if pod.pod_ips_allocated:
            pod = attrs.evolve(pod, pod_ips=(), pod_ips_allocated=False)
        return Apply((pod,))
    if choice in (4, 5):
        svc = draw_service(draw, config, capabilities)
        old = state.services.get((svc.namespace, svc.name))
        if old is not None:
            svc = _replaced_service(draw, old, svc)
        return Apply((svc,))
    if choice == 6:
        selectorless = [s for s in state.services.values() if s.selector is None
                        and s.type is not ServiceType.EXTERNAL_NAME]
        target = pick(draw, selectorless) if selectorless else None
        return Apply((draw_endpoint_slice(draw, config, target),))
    if choice == 7 and state.slices:
        es = state.slices[pick(draw, sorted(state.slices))]
        return Apply((attrs.evolve(es, endpoints=es.endpoints[1:]),))
    if choice in (8, 9):
        keys = [
            *(p.key for p in state.pods.values()),
            *(s.key for s in state.services.values()),
            *(e.key for e in state.slices.values()),
            *(n.key for n in state.nodes.values()),
        ]
        if keys:
            return Delete((pick(draw, keys),))
        return Delete((Pod("default", "p0").key,))  # refused: nothing to delete
    if choice == 10:
        return Apply(tuple(draw_cluster_objects(draw, config, capabilities)))
    return Delete((Pod(pick(draw, NAMESPACES), "gone").key,))  # refused


# -- probes ------------------------------------------------------------------------
#
# Drawing is the expensive part of a Hypothesis run, so a probe costs three draws:
# a kind of destination, one destination of that kind and one source for it, each
# an index into a list computed once per state (simplest first, so it shrinks well).

Destination = tuple[str, int, Protocol]
Source = tuple[SourceKind, str, str]  # (kind, source address, handling node)


@functools.lru_cache(maxsize=4096)
def _norm(ip: str) -> str:
    return str(ipaddress.ip_address(ip))


def _family(ip: str) -> IPFamily:
    return V4 if ":" not in ip else V6


def _sorted(items: set[Destination]) -> list[Destination]:
    return sorted(items, key=lambda d: (d[0], d[1], d[2].value))


def frontends(state: ClusterState) -> list[Destination]:
    """Every would-be frontend: ClusterIP:port, externalIP:port, LB IP:port and
    every node address:nodePort, for every service (handled or not)."""
    out: set[Destination] = set()
    for svc in state.services.values():
        for p in svc.ports:
            for ip in (*svc.cluster_ips, *svc.external_ips, *svc.load_balancer_ips):
                out.add((_norm(ip), p.port, p.protocol))
            if p.node_port:
                for node in state.nodes.values():
                    out.update((_norm(ip), p.node_port, p.protocol) for ip in node.addresses)
    return _sorted(out)


def near_frontends(state: ClusterState, fronts: Sequence[Destination]) -> list[Destination]:
    """Next to a frontend: port + 1, another protocol, the same port on a node
    address of the other family."""
    out: set[Destination] = set()
    other_family = {f: [_norm(a) for n in state.nodes.values() for a in n.addresses
                        if _family(a) is not f] for f in (V4, V6)}
    for ip, port, protocol in fronts:
        out.add((ip, port + 1, protocol))
        out.update((ip, port, p) for p in Protocol if p is not protocol)
        out.update((a, port, protocol) for a in other_family[_family(ip)])
    return _sorted(out - set(fronts))


def other_places(state: ClusterState) -> list[Destination]:
    """Addresses that are no frontend: unallocated service-CIDR addresses, pod
    IPs, node addresses on a plain port, loopback, the internet."""
    used = {_norm(ip) for s in state.services.values() for ip in s.cluster_ips}
    out: list[Destination] = []
    for cidr in state.config.service_cidrs:
        net = ipaddress.ip_network(cidr)
        for offset in (10, 11, 250):
            ip = str(net[offset])
            if ip not in used:
                out.append((ip, 80, Protocol.TCP))
                break
    for pod in state.pods.values():
        out += [(_norm(ip), 8080, Protocol.TCP) for ip in pod.pod_ips]
    for node in state.nodes.values():
        out += [(_norm(ip), 22, Protocol.TCP) for ip in node.addresses]
    out += [
        ("127.0.0.1", NODE_PORT_RANGE[0], Protocol.TCP),
        ("::1", NODE_PORT_RANGE[0], Protocol.TCP),
        ("8.8.8.8", 80, Protocol.TCP),
        ("2001:4860::8888", 53, Protocol.UDP),
    ]
    return out


def _hairpin_sources(state: ClusterState, dst: Destination) -> list[Source]:
    """A pod of the service ``dst`` belongs to, sending to it from its own node."""
    ip, port, protocol = dst
    family = _family(ip)
    node_ips = {_norm(a) for n in state.nodes.values() for a in n.addresses}
    out: list[Source] = []
    for key in sorted(state.services):
        svc = state.services[key]
        if not any(p.protocol is protocol and port in (p.port, p.node_port) for p in svc.ports):
            continue
        own = {_norm(a) for a in (*svc.cluster_ips, *svc.external_ips, *svc.load_balancer_ips)}
        if ip not in own and ip not in node_ips:
            continue
        names = sorted({e.pod for eps in state.service_endpoints(*key).values()
                        for e in eps if e.pod})
        for name in names:
            pod = state.pods.get((svc.namespace, name))
            if pod is None or pod.node_name not in state.nodes:
                continue
            with contextlib.suppress(ProbeError):  # no address of the family
                out.append(resolve_source(state, ProbeSource(pod=(pod.namespace, name)), family))
    return out


def _sources(state: ClusterState, family: IPFamily) -> list[Source]:
    """Every source the scenario format can name, for a destination of ``family``:
    pods on their node and arriving at the next node, each node itself, and
    external clients (inside and outside source ranges, the other nodes, the
    LoadBalancer IPs) via each node."""
    names = sorted(state.nodes)
    out: list[Source] = []
    for key in sorted(state.pods):
        pod = state.pods[key]
        if pod.host_network or pod.ip(family) is None or pod.node_name not in state.nodes:
            continue
        out.append(resolve_source(state, ProbeSource(pod=key), family))
        nxt = names[(names.index(pod.node_name) + 1) % len(names)]
        if nxt != pod.node_name:
            out.append(resolve_source(state, ProbeSource(pod=key, via=nxt), family))
    for name in names:
        ip = state.nodes[name].address(family)
        if ip is not None:
            out.append((SourceKind.NODE, ip, name))
    lb_ips = sorted({_norm(a) for s in state.services.values() for a in s.load_balancer_ips
                     if _family(a) is family})
    for name in names:
        clients = [*CLIENTS[family], *lb_ips]
        clients += [a for n in names if n != name for a in state.nodes[n].addresses
                    if _family(a) is family]
        out += [(SourceKind.EXTERNAL, c, name) for c in clients]
    return out


@attrs.frozen
class ProbeSpace:
    """The places :func:`probes` aims at, computed once per state."""

    state: ClusterState = attrs.field(eq=False)
    kinds: tuple[tuple[Destination, ...], ...]
    cache: dict[Destination, tuple[Source, ...]] = attrs.field(factory=dict, eq=False)
    by_family: dict[IPFamily, list[Source]] = attrs.field(factory=dict, eq=False)

    @classmethod
    def of(cls, state: ClusterState) -> ProbeSpace:
        fronts = frontends(state)
        kinds = tuple(tuple(k) for k in (fronts, near_frontends(state, fronts),
                                         other_places(state)) if k)
        return cls(state, kinds)

    def sources(self, dst: Destination) -> tuple[Source, ...]:
        found = self.cache.get(dst)
        if found is None:
            family = _family(dst[0])
            hairpin = _hairpin_sources(self.state, dst)
            common = self.by_family.get(family)
            if common is None:
                common = self.by_family[family] = _sources(self.state, family)
            every = hairpin + common
            owner = self.owners().get(dst[0])
            if owner is not None:
                # A node's own address: the packet is handled where it arrives, on
                # the owner (a pod elsewhere reaches it "via" the owner).
                every = [(k, ip, owner) for k, ip, n in every
                         if k is not SourceKind.NODE or n == owner]
            found = self.cache[dst] = tuple(dict.fromkeys(every))
        return found

    def owners(self) -> dict[str, str]:
        """Node address -> node name."""
        return {_norm(a): n.name for n in self.state.nodes.values() for a in n.addresses}


_SPACES: dict[int, ProbeSpace] = {}


def probe_space(state: ClusterState) -> ProbeSpace:
    """:class:`ProbeSpace` of ``state`` (the last few are kept)."""
    space = _SPACES.get(id(state))
    if space is None or space.state is not state:
        if len(_SPACES) > 8:
            _SPACES.clear()
        space = _SPACES[id(state)] = ProbeSpace.of(state)
    return space


# Weights of the three kinds of destination: frontends, next to one, elsewhere.
_KIND = (0, 0, 0, 0, 0, 0, 0, 0, 1, 2)


def draw_probe(
    draw: Draw, state: ClusterState) -> Probe:
    """A probe at one of the cluster's interesting places — a frontend (80%),
    next to one (port + 1, the other protocols, the other family), or no frontend
    (an unallocated service address, a pod, a node, loopback, the internet) —
    from a source a scenario can name: a pod of the service itself (hairpin),
    a pod on its own node or arriving at the next node, a node itself, or an
    external client via a node (inside and outside LoadBalancer source ranges,
    another node, a LoadBalancer IP). ``state`` must have a node."""
    assert state.nodes, "probes need a node to handle them"
    space = probe_space(state)
    kind = min(pick(draw, _KIND), len(space.kinds) - 1)
    dsts = space.kinds[kind]
    dst = dsts[integer(draw, 0, len(dsts) - 1)]
    sources = space.sources(dst)
    source_kind, source_ip, node = sources[integer(draw, 0, len(sources) - 1)]
    return Probe(source_kind, source_ip, node, *dst)


# -- the public strategies ----------------------------------------------------------

configs = st.composite(draw_config)
nodes = st.composite(draw_node)
pods = st.composite(draw_pod)
services = st.composite(draw_service)
endpoint_slices = st.composite(draw_endpoint_slice)
cluster_objects = st.composite(draw_cluster_objects)
events = st.composite(draw_event)
probes = st.composite(draw_probe)
