"""The reference oracle: docs/reference/semantics.md as an executable function.

:func:`evaluate` answers "what happens to this packet" from the cluster state
alone — services, endpoints, nodes and configuration — and never looks at a
plan: it is what the compiler and every backend are compared with. Each step
below cites the part of docs/reference/semantics.md it implements.

Where the semantics are silent, kube-proxy's per-family view decides:

* a service exists in an IP family when it has a ClusterIP of that family; its
  NodePorts, externalIPs, LoadBalancer IPs and source ranges count only in the
  families it exists in (kube-proxy runs one proxier per family);
* "no endpoints at all", topology and the terminating fallback are judged
  among the endpoints of the frontend's family;
* when two services claim the same address, port and protocol, the first
  service by namespace/name wins, then the first port in the service's order,
  then the first frontend kind by name (ClusterIP, ExternalIP, LoadBalancer,
  NodePort).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterator
from typing import TYPE_CHECKING

import attrs

from svcnet.model import (
    Endpoint,
    IPFamily,
    Node,
    Service,
    ServicePort,
    ServiceType,
    SessionAffinity,
    TrafficDistribution,
    TrafficPolicy,
    ip_family,
    norm_ip,
)
from svcnet.probe import Outcome, Probe, SourceKind, Verdict
from svcnet.state.endpoints import hinted

if TYPE_CHECKING:
    from svcnet.state import ClusterState

__all__ = ["Match", "evaluate", "explain", "frontends_of"]

# Every trafficDistribution narrows to the zone (PreferSameNode after the node).
SAME_ZONE = frozenset(TrafficDistribution)

# Frontend kinds, ordered as the tie-break between colliding frontends.
CLUSTER_IP = "ClusterIP"
EXTERNAL_IP = "ExternalIP"
LOAD_BALANCER = "LoadBalancer"
NODE_PORT = "NodePort"


# Address parsing is memoised (norm_ip, _network): the oracle is called millions of
# times in tests.
@functools.lru_cache(maxsize=1024)
def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr, strict=False)


def _in_any(ip: str, cidrs: tuple[str, ...]) -> bool:
    address = ipaddress.ip_address(ip)
    return any(address in _network(c) for c in cidrs)


def _version(family: IPFamily) -> int:
    return 4 if family is IPFamily.IPv4 else 6


def _handled(service: Service) -> bool:
    """kube-proxy ignores ExternalName and headless services (SEMANTICS: pass)."""
    return service.type is not ServiceType.EXTERNAL_NAME and not service.headless


def _families(service: Service) -> list[IPFamily]:
    return [ip_family(ip) for ip in service.cluster_ips]


@attrs.frozen
class Match:
    """A frontend the probe's destination hit."""

    service: Service
    port: ServicePort
    kind: str  # CLUSTER_IP, EXTERNAL_IP, LOAD_BALANCER or NODE_PORT
    ip: str
    family: IPFamily

    @property
    def external(self) -> bool:
        return self.kind != CLUSTER_IP


def frontends_of(
    service: Service, node: Node | None
) -> Iterator[tuple[ServicePort, str, str, int, IPFamily]]:
    """Every frontend ``(port, kind, ip, port number, family)`` of a proxied service
    on ``node`` (SEMANTICS "Words": Frontend)."""
    for family in _families(service):
        for port in service.ports:
            for ip in service.cluster_ips:
                if ip_family(ip) is family:
                    yield port, CLUSTER_IP, norm_ip(ip), port.port, family
            for ip in service.external_ips:
                if ip_family(ip) is family:
                    yield port, EXTERNAL_IP, norm_ip(ip), port.port, family
            if service.type is ServiceType.LOAD_BALANCER:
                for ip in service.load_balancer_ips:
                    if ip_family(ip) is family:
                        yield port, LOAD_BALANCER, norm_ip(ip), port.port, family
            # NodePort: only on the node's primary InternalIP of the family.
            node_ip = node.address(family) if node is not None else None
            if service.external and port.node_port and node_ip is not None:
                yield port, NODE_PORT, norm_ip(node_ip), port.node_port, family


def _match(state: ClusterState, probe: Probe) -> Match | None:
    node = state.nodes.get(probe.node)
    dst = norm_ip(probe.dst_ip)
    best: tuple[tuple[str, str], int, str, Match] | None = None
    for key in state.services:
        service = state.services[key]
        if not _handled(service) or not service.proxied:
            continue
        for port, kind, ip, number, family in frontends_of(service, node):
            if ip != dst or number != probe.dst_port or port.protocol is not probe.protocol:
                continue
            rank = (key, service.ports.index(port), kind)
            if best is None or rank < best[:3]:
                best = (key, rank[1], kind, Match(service, port, kind, ip, family))
    return best[3] if best is not None else None


# -- which endpoints a frontend uses -------------------------------------------


def _port_endpoints(state: ClusterState, m: Match) -> list[Endpoint]:
    by_port = state.service_endpoints(m.service.namespace, m.service.name)
    return [e for e in by_port.get(m.port.name, ()) if ip_family(e.ip) is m.family]


def _fallback(endpoints: list[Endpoint]) -> list[Endpoint]:
    """Ready endpoints; if none, the serving and terminating ones."""
    ready = [e for e in endpoints if e.ready]
    return ready or [e for e in endpoints if e.serving and e.terminating]


def cluster_endpoints(
    service: Service,
    endpoints: list[Endpoint],
    node_name: str,
    node: Node | None,
    hints: bool = False,
) -> list[Endpoint]:
    """SEMANTICS "Which endpoints" 1 and 7 (trafficDistribution) on node ``node_name``
    (``node``: its object, None when the state has none). ``hints``: under the API's
    authority, the slices' topology hints decide instead of trafficDistribution
    (:func:`svcnet.state.endpoints.hinted`)."""
    if hints:
        chosen = hinted(endpoints, node_name, node.zone if node is not None else None)
        return chosen if chosen is not None else _fallback(endpoints)
    ready = [e for e in endpoints if e.ready]
    distribution = service.traffic_distribution
    if distribution is TrafficDistribution.PREFER_SAME_NODE:
        on_node = [e for e in ready if e.node_name == node_name]
        if on_node:
            return on_node
    zone = node.zone if node is not None else None
    if (
        distribution in SAME_ZONE
        and zone
        and all(e.zone for e in ready)
        and any(e.zone == zone for e in ready)
    ):
        return [e for e in ready if e.zone == zone]
    return _fallback(endpoints)


def local_endpoints(endpoints: list[Endpoint], node_name: str) -> list[Endpoint]:
    """SEMANTICS "Which endpoints" 2: zones are ignored."""
    return _fallback([e for e in endpoints if e.node_name == node_name])


# -- the verdict ---------------------------------------------------------------


def _source_allowed(state: ClusterState, probe: Probe, m: Match) -> tuple[bool, str]:
    """The LoadBalancer source-range check (it comes first)."""
    ranges = tuple(
        r
        for r in m.service.load_balancer_source_ranges
        if _network(r).version == _version(m.family)
    )
    if m.kind != LOAD_BALANCER or not ranges:
        return True, ""
    if _in_any(probe.source_ip, ranges):
        return True, f"source {probe.source_ip} is inside loadBalancerSourceRanges"
    node = state.nodes.get(probe.node)
    node_ip = node.address(m.family) if node is not None else None
    if node_ip is not None and _in_any(node_ip, ranges):
        lb_ips = {norm_ip(ip) for ip in m.service.load_balancer_ips}
        if norm_ip(probe.source_ip) in lb_ips:
            return True, "a range holds this node's address, so the LoadBalancer IPs may send"
    return False, f"source {probe.source_ip} is outside loadBalancerSourceRanges: drop"


def _decide(state: ClusterState, probe: Probe, m: Match, why: list[str]) -> Outcome:
    svc = m.service
    allowed, reason = _source_allowed(state, probe, m)
    if reason:
        why.append(reason)
    if not allowed:
        return Outcome(Verdict.DROP)
    node = state.nodes.get(probe.node)
    endpoints = _port_endpoints(state, m)
    cluster = cluster_endpoints(svc, endpoints, probe.node, node, state.config.api_authority)
    if not cluster:
        why.append("the service has no endpoints at all: reject")
        return Outcome(Verdict.REJECT)
    kind = probe.source_kind
    masquerade_all = state.config.masquerade_all
    if not m.external:
        if svc.internal_traffic_policy is TrafficPolicy.LOCAL:
            chosen, which = local_endpoints(endpoints, probe.node), "local"
        else:
            chosen, which = cluster, "cluster"
        masquerade = masquerade_all or kind is not SourceKind.POD
    elif svc.external_traffic_policy is TrafficPolicy.LOCAL:
        if kind is SourceKind.EXTERNAL:
            chosen, which, masquerade = local_endpoints(endpoints, probe.node), "local", False
        else:
            why.append(f"externalTrafficPolicy Local short-circuit for a {kind.value} source")
            chosen, which, masquerade = cluster, "cluster", kind is SourceKind.NODE
    else:
        chosen, which, masquerade = cluster, "cluster", True
    if not chosen:
        why.append(f"traffic policy Local and no endpoint on {probe.node}: drop")
        return Outcome(Verdict.DROP)
    timeout = svc.affinity_timeout if svc.session_affinity is SessionAffinity.CLIENT_IP else None
    why.append(
        f"forward to the {which} endpoints"
        + (" masqueraded" if masquerade else "")
        + (f", ClientIP affinity {timeout}s" if timeout is not None else "")
    )
    source = norm_ip(probe.source_ip)
    return Outcome.forward(
        ((e.ip, e.port, masquerade or norm_ip(e.ip) == source) for e in chosen), timeout
    )


def _evaluate(state: ClusterState, probe: Probe, why: list[str]) -> Outcome:
    m = _match(state, probe)
    if m is not None:
        why.append(
            f"{m.kind} frontend of Service {m.service.namespace}/{m.service.name}"
            f" port {m.port.name or m.port.port}/{m.port.protocol.value} ({m.family.value})"
        )
        return _decide(state, probe, m, why)
    dst = norm_ip(probe.dst_ip)
    for key in state.services:
        service = state.services[key]
        if not _handled(service) or dst not in {norm_ip(ip) for ip in service.cluster_ips}:
            continue
        name = f"Service {service.namespace}/{service.name}"
        if service.proxied:
            why.append(f"ClusterIP of {name}, which defines no such port/protocol: reject")
            return Outcome(Verdict.REJECT)
        why.append(f"ClusterIP of {name}, served by another proxy: pass")
        return Outcome(Verdict.PASS)
    if _in_any(dst, state.config.service_cidrs):
        why.append(f"{dst} is in the service CIDRs but no service holds it: drop")
        return Outcome(Verdict.DROP)
    why.append("not a service frontend: pass")
    return Outcome(Verdict.PASS)


def evaluate(state: ClusterState, probe: Probe) -> Outcome:
    """What the semantics say happens to ``probe`` in ``state``."""
    return _evaluate(state, probe, [])


def explain(state: ClusterState, probe: Probe) -> list[str]:
    """Why :func:`evaluate` answers what it does, one reason per line."""
    why: list[str] = []
    outcome = _evaluate(state, probe, why)
    why.append(f"=> {outcome}")
    return why
