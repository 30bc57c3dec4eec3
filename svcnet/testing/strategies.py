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

from collections.abc import Sequence

import attrs
from hypothesis import strategies as st

from svcnet.backend import Capabilities
from svcnet.model import (
    SERVICE_NAME_LABEL,
    SERVICE_PROXY_NAME_LABEL,
    ZONE_LABEL,
    ClusterConfig,
    ContainerPort,
    EndpointSlice,
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
from svcnet.state import Apply, ClusterState, Delete, Event
from svcnet.testing.probes import draw_probe, frontends, other_places, probe_space
from svcnet.testing.vocabulary import (
    CLIENTS,
    CLUSTER_CIDR,
    LABELS,
    LB_POOL,
    NAMESPACES,
    NODE_NAMES,
    NODE_PORT_RANGE,
    POD_NAMES,
    PORT_NAMES,
    SERVICE_CIDR,
    SERVICE_NAMES,
    SOURCE_RANGES,
    V4,
    V6,
    ZONES,
    Digits,
    Draw,
    chance,
    external_ips_of,
    flip,
    integer,
    node_ip,
    pick,
    pinned_ip,
    pod_cidr,
    status_ips_of,
    subset,
)

__all__ = [
    # the strategies
    "ALL_CAPABILITIES",
    # the building blocks, for harnesses that draw their own objects
    "CLIENTS",
    "NODE_NAMES",
    "NODE_PORT_RANGE",
    "Digits",
    "Draw",
    "chance",
    "cluster_objects",
    "configs",
    "draw_cluster_objects",
    "draw_config",
    "draw_event",
    "draw_probe",
    "draw_service",
    "endpoint_slices",
    "events",
    "frontends",
    "integer",
    "node_ip",
    "nodes",
    "other_places",
    "pick",
    "pinned_ip",
    "pod_cidr",
    "pods",
    "probe_space",
    "probes",
    "services",
]

ALL_CAPABILITIES = Capabilities()

# -- configuration -----------------------------------------------------------------


def draw_config(draw: Draw, capabilities: Capabilities = ALL_CAPABILITIES) -> ClusterConfig:
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


def draw_node(draw: Draw, config: ClusterConfig, name: str | None = None) -> Node:
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
    protocols = [
        p for p in (Protocol.TCP, Protocol.UDP, Protocol.SCTP) if p in capabilities.protocols
    ]
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
            SlicePort(pick(draw, [8080, 9090]), p.name, p.protocol) for p in service.ports
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
        type=new.type
        if not old.headless and new.type is not ServiceType.EXTERNAL_NAME
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
        selectorless = [
            s
            for s in state.services.values()
            if s.selector is None and s.type is not ServiceType.EXTERNAL_NAME
        ]
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


# -- the public strategies ----------------------------------------------------------

configs = st.composite(draw_config)
nodes = st.composite(draw_node)
pods = st.composite(draw_pod)
services = st.composite(draw_service)
endpoint_slices = st.composite(draw_endpoint_slice)
cluster_objects = st.composite(draw_cluster_objects)
events = st.composite(draw_event)
probes = st.composite(draw_probe)
