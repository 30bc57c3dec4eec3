"""compile(state, node) -> Plan, and its incremental form update().

Re-exported by :mod:`svcnet.plan` (``svcnet.plan.compile``/``update``); the plan
module's docstring says how a data plane reads what is built here. The rules
(SEMANTICS.md) are folded into each :class:`PortPlan` ahead of time: the
endpoint sets of this node, and one :class:`Route` per (internal or external
frontend, source kind), so a data plane never needs the cluster state.

Frontends that collide (two services claiming one address, port and
protocol) are all listed; a data plane takes the first service by reference,
then the first port in plan order, then the first frontend in sorted order —
the tie-break :mod:`svcnet.semantics` uses.
"""

from __future__ import annotations

import gc
import ipaddress
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from svcnet.model import (
    Endpoint,
    IPFamily,
    Node,
    Service,
    ServiceType,
    SessionAffinity,
    TrafficPolicy,
)
from svcnet.plan import (
    DROP,
    REJECT,
    Action,
    Changes,
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

if TYPE_CHECKING:
    from svcnet.state import ClusterState

__all__ = ["advance", "compile_plan", "compile_service", "update_plan"]

_V4 = IPFamily.IPv4
_V6 = IPFamily.IPv6
_ROUTES = {
    (which, masq): Route(Action.FORWARD, which, masq)
    for which in EndpointSet
    for masq in (False, True)
}


def _family(ip: str) -> IPFamily:
    return _V6 if ":" in ip else _V4


def _norm(ip: str) -> str:
    return str(ipaddress.ip_address(ip))


def _node_ip(node: Node | None, family: IPFamily) -> str | None:
    if node is None:
        return None
    for a in node.addresses:
        if _family(a) is family:
            return a
    return None


def settings_for(state: ClusterState, node_name: str) -> NodeSettings:
    node = state.nodes.get(node_name)
    return NodeSettings(
        node=node_name,
        node_ips=tuple(_norm(a) for a in node.addresses) if node is not None else (),
        cluster_cidrs=state.config.cluster_cidrs,
        service_cidrs=state.config.service_cidrs,
    )


def _ready_or_terminating(endpoints: list[Endpoint]) -> list[Endpoint]:
    ready = [e for e in endpoints if e.ready]
    return ready or [e for e in endpoints if e.serving and e.terminating]


def _cluster_set(svc: Service, endpoints: list[Endpoint], zone: str | None) -> list[Endpoint]:
    if zone and svc.traffic_distribution == "PreferClose":
        ready = [e for e in endpoints if e.ready]
        if ready and all(e.zone for e in ready):
            close = [e for e in ready if e.zone == zone]
            if close:
                return close
    return _ready_or_terminating(endpoints)


def _frontend_key(f: Frontend) -> tuple[str, str, int]:
    return (f.kind.value, f.ip, f.port)  # Frontend's attrs order, without attrs' cost


def _plan_endpoints(endpoints: list[Endpoint]) -> tuple[PlanEndpoint, ...]:
    # Addresses are used as the state holds them (manifests normalise them).
    # Sorted and unique, as PortPlan's converter would make them (see _port_plan).
    pairs = sorted({(e.ip, e.port) for e in endpoints})
    return tuple([PlanEndpoint(ip, port) for ip, port in pairs])


_PORT_FIELDS = tuple(f.name for f in attrs.fields(PortPlan))


def _port_plan(**values: Any) -> PortPlan:
    """A PortPlan whose tuples are already sorted and unique, built without running
    the converters again (sorting attrs objects is most of compile's cost).
    A field added to PortPlan makes this raise KeyError rather than go missing."""
    port = object.__new__(PortPlan)
    for name in _PORT_FIELDS:
        object.__setattr__(port, name, values[name])
    return port


def _ranges(svc: Service, family: IPFamily, node_ip: str | None) -> tuple[str, ...]:
    ranges = [r for r in svc.load_balancer_source_ranges if _family(r) is family]
    if not ranges:
        return ()
    networks = [ipaddress.ip_network(r, strict=False) for r in ranges]
    out = {str(n) for n in networks}
    if node_ip is not None and any(ipaddress.ip_address(node_ip) in n for n in networks):
        bits = 32 if family is _V4 else 128
        out.update(f"{_norm(ip)}/{bits}" for ip in svc.load_balancer_ips if _family(ip) is family)
    return tuple(sorted(out))


def compile_service(
    state: ClusterState,
    svc: Service,
    node_name: str,
    node: Node | None,
    endpoints: Mapping[str, tuple[Endpoint, ...]] | None = None,
) -> ServicePlan | None:
    """The plan entry of one service on one node (None: nothing to do for it)."""
    if svc.type is ServiceType.EXTERNAL_NAME or svc.headless:
        return None
    ref = ServiceRef(svc.namespace, svc.name)
    cluster_ips = svc.cluster_ips
    if not svc.proxied:
        return ServicePlan(ref, cluster_ips, (), proxied=False)
    if endpoints is None:
        endpoints = state.service_endpoints(svc.namespace, svc.name)
    zone = node.zone if node is not None else None
    masquerade_all = state.config.masquerade_all
    affinity = svc.affinity_timeout if svc.session_affinity is SessionAffinity.CLIENT_IP else None
    itp_local = svc.internal_traffic_policy is TrafficPolicy.LOCAL
    etp_local = svc.external_traffic_policy is TrafficPolicy.LOCAL
    is_lb = svc.type is ServiceType.LOAD_BALANCER
    ports: list[PortPlan] = []
    for cip in cluster_ips:
        family = _family(cip)
        node_ip = _node_ip(node, family)
        ext_ips = [ip for ip in svc.external_ips if _family(ip) is family]
        lb_ips = [ip for ip in svc.load_balancer_ips if _family(ip) is family] if is_lb else []
        ranges = _ranges(svc, family, node_ip) if lb_ips else ()
        for port in svc.ports:
            number = port.port
            frontends = [Frontend(FrontendKind.CLUSTER_IP, cip, number)]
            frontends += [Frontend(FrontendKind.EXTERNAL_IP, ip, number) for ip in ext_ips]
            frontends += [Frontend(FrontendKind.LOAD_BALANCER, ip, number) for ip in lb_ips]
            if svc.external and port.node_port and node_ip is not None:
                frontends.append(Frontend(FrontendKind.NODE_PORT, node_ip, port.node_port))
            all_eps = [e for e in endpoints.get(port.name, ()) if _family(e.ip) is family]
            cluster = _cluster_set(svc, all_eps, zone)
            local = _ready_or_terminating([e for e in all_eps if e.node_name == node_name])
            cluster_plan = _plan_endpoints(cluster)
            local_plan = cluster_plan if local == cluster else _plan_endpoints(local)
            if not cluster:  # no endpoints at all: reject everything
                internal = (REJECT, REJECT, REJECT)
                external = (REJECT, REJECT, REJECT)
            else:
                if itp_local:
                    which = EndpointSet.LOCAL
                    usable = bool(local)
                else:
                    which, usable = EndpointSet.CLUSTER, True
                if usable:
                    internal = (
                        _ROUTES[which, masquerade_all],
                        _ROUTES[which, True],
                        _ROUTES[which, True],
                    )
                else:
                    internal = (DROP, DROP, DROP)
                if etp_local:
                    external = (
                        _ROUTES[EndpointSet.CLUSTER, False],
                        _ROUTES[EndpointSet.CLUSTER, True],
                        _ROUTES[EndpointSet.LOCAL, False] if local else DROP,
                    )
                else:
                    forward = _ROUTES[EndpointSet.CLUSTER, True]
                    external = (forward, forward, forward)
            ports.append(
                _port_plan(
                    name=port.name,
                    family=family,
                    protocol=port.protocol,
                    frontends=tuple(sorted(set(frontends), key=_frontend_key)),
                    cluster_endpoints=cluster_plan,
                    local_endpoints=local_plan,
                    internal_from_pod=internal[0],
                    internal_from_node=internal[1],
                    internal_from_external=internal[2],
                    external_from_pod=external[0],
                    external_from_node=external[1],
                    external_from_external=external[2],
                    source_ranges=ranges,
                    affinity_timeout=affinity,
                )
            )
    return ServicePlan(ref, cluster_ips, tuple(ports))


def compile_plan(state: ClusterState, node_name: str) -> Plan:
    """The whole plan of ``node_name``."""
    node = state.nodes.get(node_name)
    services: dict[ServiceRef, ServicePlan] = {}
    # Building ~10 objects per service: the cyclic GC would rescan the whole
    # (large, acyclic) state many times over; nothing built here is cyclic.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for svc in state.services.values():
            entry = compile_service(state, svc, node_name, node)
            if entry is not None:
                services[entry.ref] = entry
        return Plan(settings_for(state, node_name), services, revision=state.revision)
    finally:
        if gc_was_enabled:
            gc.enable()


def _node_matters(old: Node | None, new: Node | None, this_node: bool) -> bool:
    """Does this node change force a full recompile?"""
    if (old.zone if old else None) != (new.zone if new else None):
        return True  # endpoint zones (PreferClose) and this node's zone come from labels
    if this_node:  # NodePort frontends and source ranges use this node's addresses
        return (old.addresses if old else None) != (new.addresses if new else None)
    return False


def _incremental(
    plan: Plan, old_state: ClusterState, new_state: ClusterState
) -> tuple[Plan, frozenset[ServiceRef]] | None:
    changed = new_state.changed_since(plan.revision)
    if changed is None or changed.config:
        return None
    name = plan.node
    for n in changed.nodes:
        if _node_matters(old_state.nodes.get(n), new_state.nodes.get(n), n == name):
            return None
    node = new_state.nodes.get(name)
    evolver = plan.services.evolver()
    refs: set[ServiceRef] = set()
    for namespace, svc_name in changed.services:
        ref = ServiceRef(namespace, svc_name)
        refs.add(ref)
        svc = new_state.services.get((namespace, svc_name))
        entry = compile_service(new_state, svc, name, node) if svc is not None else None
        if entry is None:
            if ref in plan.services:
                evolver.remove(ref)
        else:
            evolver.set(ref, entry)
    new_plan = Plan(settings_for(new_state, name), evolver.persistent(), new_state.revision)
    return new_plan, frozenset(refs)


def update_plan(plan: Plan, old_state: ClusterState, new_state: ClusterState) -> Plan:
    """``plan`` (compiled from ``old_state``) brought up to ``new_state``, recompiling
    only the services that changed since ``plan.revision``."""
    result = _incremental(plan, old_state, new_state)
    if result is None:
        return compile_plan(new_state, plan.node)
    return result[0]


def advance(plan: Plan, old_state: ClusterState, new_state: ClusterState) -> tuple[Plan, Changes]:
    """:func:`update_plan` and the :class:`Changes` from ``plan`` to the result."""
    result = _incremental(plan, old_state, new_state)
    if result is None:
        new_plan = compile_plan(new_state, plan.node)
        return new_plan, new_plan.diff(plan)
    new_plan, refs = result
    return new_plan, new_plan.diff_keys(plan, refs)
