"""compile(state, node) -> Plan, and its incremental form update().

Re-exported by :mod:`svcnet.plan.types` (``svcnet.plan.types.compile``/``update``); the plan
module's docstring says how a data plane reads what is built here. The rules
(SEMANTICS.md) are folded into each :class:`PortPlan` ahead of time: the
endpoint sets of this node, and one :class:`Route` per (internal or external
frontend, source kind), so a data plane never needs the cluster state.

Conflicting frontends are settled here, so that no data plane has to: a
*claim* is one frontend of one service port, keyed by what a packet matches on
(the normalised address, the port number, the port's protocol) and ranked by
(namespace, name, the port's index in the service's spec, the frontend kind:
ClusterIP < ExternalIP < LoadBalancer < NodePort) — the tie-break
:mod:`svcnet.semantics` applies to the same claims. Only handled services claim
(proxied, neither ExternalName nor headless), each in the families of its
ClusterIPs, NodePorts on this node's primary address of the family. For each key
the lowest rank owns it and only the owner's frontend is in the plan; a losing
frontend is left out of its port's ``frontends`` (a port can be left with none).
Kinds meet freely: an externalIP equal to another service's ClusterIP, LoadBalancer
ingress or this node's address (with the NodePort's number) is a conflict like
two equal externalIPs, and so is a service claiming one key twice (an externalIP
equal to its own ClusterIP or ingress: the lower kind wins).

Every claim, winning or not, is kept in a :class:`FrontendIndex` carried by the
plan (``Plan.claims``, not compared); :func:`update_plan` uses it to recompile,
with the services that changed, every service holding a claim on a key whose
claimants changed (a deleted or changed winner hands its frontends back).
"""

from __future__ import annotations

import functools
import gc
import ipaddress
import operator
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
from pyrsistent import PMap, pmap

from svcnet.model import (
    Endpoint,
    IPFamily,
    Node,
    Service,
    ServiceType,
    SessionAffinity,
    TrafficPolicy,
)
from svcnet.plan.types import (
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

__all__ = ["FrontendIndex", "advance", "compile_plan", "compile_service", "update_plan"]

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
_port_values = operator.attrgetter(*_PORT_FIELDS)


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


# -- frontend claims ---------------------------------------------------------------

NsName = tuple[str, str]
ClaimKey = tuple[str, int, str]  # normalised address, port number, protocol value
Rank = tuple[str, str, int, str]  # namespace, name, port index, frontend kind value
Claim = tuple[ClaimKey, Rank]
Lost = frozenset[tuple[int, str, str, int]]  # port index, kind value, address, number

_NO_CLAIMS: tuple[Claim, ...] = ()
_NOTHING_LOST: Lost = frozenset()
_CIP = FrontendKind.CLUSTER_IP.value
_EIP = FrontendKind.EXTERNAL_IP.value
_LBIP = FrontendKind.LOAD_BALANCER.value
_NPORT = FrontendKind.NODE_PORT.value

K = TypeVar("K")
V = TypeVar("V")


@functools.lru_cache(maxsize=4096)
def _norm6(ip: str) -> str:
    return str(ipaddress.ip_address(ip))


def _claim_ip(ip: str) -> str:
    """One spelling per address (only IPv6 has several: a valid IPv4 text is canonical)."""
    return _norm6(ip) if ":" in ip else ip


def _insert(ranks: tuple[Rank, ...], rank: Rank) -> tuple[Rank, ...]:
    return ranks if rank in ranks else tuple(sorted((*ranks, rank)))


def _lost(claims: Iterable[Claim], owners: _Layer[ClaimKey, tuple[Rank, ...]]) -> Lost:
    """The claims among ``claims`` that another (lower) rank owns."""
    return frozenset(
        (rank[2], rank[3], ck[0], ck[1])
        for ck, rank in claims
        if owners.get(ck, (rank,))[0] != rank
    )


def _without(entry: ServicePlan, svc: Service, lost: Lost) -> ServicePlan:
    """``entry`` (compile_service's, for ``svc``) without the frontends in ``lost``.
    compile_service builds one PortPlan per (ClusterIP, port): port ``i`` of the
    plan is port ``i % len(svc.ports)`` of the spec."""
    if not lost:
        return entry
    count = len(svc.ports)
    ports: list[PortPlan] = []
    for i, port in enumerate(entry.ports):
        index = i % count
        kept = tuple(
            f
            for f in port.frontends
            if (index, f.kind.value, _claim_ip(f.ip), f.port) not in lost
        )
        if len(kept) != len(port.frontends):
            values = dict(zip(_PORT_FIELDS, _port_values(port), strict=True))
            values["frontends"] = kept
            port = _port_plan(**values)
        ports.append(port)
    return ServicePlan(entry.ref, entry.cluster_ips, tuple(ports), entry.proxied)


class _Layer(Generic[K, V]):
    """A read-only map: ``top`` (a persistent map of the changes since) over ``base``
    (a dict :func:`compile_plan` built and nobody changes afterwards). Sharing the
    base spares compile_plan the cost of a persistent map of every claim, and an
    update still costs O(log n)."""

    __slots__ = ("_layered", "base", "top")

    def __init__(self, base: Mapping[K, V], top: PMap[K, V]) -> None:
        self.base = base
        self.top = top
        self._layered = bool(top)

    def get(self, key: K, default: V) -> V:
        if self._layered and key in self.top:
            return self.top[key]
        return self.base.get(key, default)

    def update(self, edits: Mapping[K, V]) -> _Layer[K, V]:
        return _Layer(self.base, self.top.update(edits)) if edits else self


@attrs.frozen(eq=False)
class FrontendIndex:
    """Every frontend claim of a plan's node, winning or not (private to this module;
    ``Plan.claims``). ``services``: the plan's service map it describes (a plan whose
    map is another one, e.g. one built by :meth:`Changes.apply_to`, has no usable
    index and is updated by a full compile)."""

    services: PMap[ServiceRef, ServicePlan]
    by_key: _Layer[ClaimKey, tuple[Rank, ...]]  # key -> claimants' ranks, sorted; () none
    by_ref: _Layer[NsName, tuple[Claim, ...]]  # service -> its claims; () none


def compile_service(
    state: ClusterState,
    svc: Service,
    node_name: str,
    node: Node | None,
    endpoints: Mapping[str, tuple[Endpoint, ...]] | None = None,
    claims: list[Claim] | None = None,
) -> ServicePlan | None:
    """The plan entry of one service on one node (None: nothing to do for it),
    with all of its frontends, conflicts or not: compile_plan and update_plan
    settle those. ``claims``: a list that gets the service's claims appended (the
    frontends of :func:`svcnet.semantics.frontends_of`, ranked; see the module's
    docstring)."""
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
    namespace, name = svc.namespace, svc.name
    for cip in cluster_ips:
        family = _family(cip)
        node_ip = _node_ip(node, family)
        ext_ips = [ip for ip in svc.external_ips if _family(ip) is family]
        lb_ips = [ip for ip in svc.load_balancer_ips if _family(ip) is family] if is_lb else []
        ranges = _ranges(svc, family, node_ip) if lb_ips else ()
        np_ip = node_ip if svc.external else None  # NodePorts: on this address
        if claims is not None:
            addresses = [(_CIP, _claim_ip(cip))]
            addresses += [(_EIP, _claim_ip(ip)) for ip in ext_ips]
            addresses += [(_LBIP, _claim_ip(ip)) for ip in lb_ips]
        for index, port in enumerate(svc.ports):
            number = port.port
            frontends = [Frontend(FrontendKind.CLUSTER_IP, cip, number)]
            frontends += [Frontend(FrontendKind.EXTERNAL_IP, ip, number) for ip in ext_ips]
            frontends += [Frontend(FrontendKind.LOAD_BALANCER, ip, number) for ip in lb_ips]
            if port.node_port and np_ip is not None:
                frontends.append(Frontend(FrontendKind.NODE_PORT, np_ip, port.node_port))
            if claims is not None:
                proto = port.protocol.value
                for kind, address in addresses:
                    claims.append(((address, number, proto), (namespace, name, index, kind)))
                if port.node_port and np_ip is not None:
                    rank = (namespace, name, index, _NPORT)
                    claims.append(((_claim_ip(np_ip), port.node_port, proto), rank))
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
    by_ref: dict[NsName, tuple[Claim, ...]] = {}
    by_key: dict[ClaimKey, tuple[Rank, ...]] = {}
    contested: list[ClaimKey] = []
    # Building ~10 objects per service: the cyclic GC would rescan the whole
    # (large, acyclic) state many times over; nothing built here is cyclic.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for svc in state.services.values():
            claims: list[Claim] = []
            entry = compile_service(state, svc, node_name, node, claims=claims)
            if entry is None:
                continue
            services[entry.ref] = entry
            if claims:
                by_ref[svc.namespace, svc.name] = tuple(claims)
                for ck, rank in claims:
                    held = by_key.get(ck)
                    if held is None:
                        by_key[ck] = (rank,)
                    elif rank not in held:
                        by_key[ck] = _insert(held, rank)
                        contested.append(ck)
        owners: _Layer[ClaimKey, tuple[Rank, ...]] = _Layer(by_key, pmap())
        for namespace, name in {rank[:2] for ck in contested for rank in by_key[ck][1:]}:
            ref = ServiceRef(namespace, name)
            svc = state.services[namespace, name]
            services[ref] = _without(services[ref], svc, _lost(by_ref[namespace, name], owners))
        service_map = pmap(services)
        index = FrontendIndex(service_map, owners, _Layer(by_ref, pmap()))
        return Plan(settings_for(state, node_name), service_map, state.revision, index)
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
    index = plan.claims
    if changed is None or changed.config or index is None or index.services is not plan.services:
        return None
    name = plan.node
    for n in changed.nodes:
        if _node_matters(old_state.nodes.get(n), new_state.nodes.get(n), n == name):
            return None
    node = new_state.nodes.get(name)
    # 1. recompile the changed services, noting the keys whose claimants changed
    entries: dict[NsName, ServicePlan | None] = {}
    by_ref: dict[NsName, tuple[Claim, ...]] = {}
    by_key: dict[ClaimKey, tuple[Rank, ...]] = {}
    for key in changed.services:
        svc = new_state.services.get(key)
        claims: list[Claim] = []
        if svc is not None:
            entries[key] = compile_service(new_state, svc, name, node, claims=claims)
        else:
            entries[key] = None
        old = index.by_ref.get(key, _NO_CLAIMS)
        new = tuple(claims)
        if old == new:
            continue
        by_ref[key] = new
        old_set, new_set = set(old), set(new)
        for ck, rank in old_set - new_set:
            held = by_key[ck] if ck in by_key else index.by_key.get(ck, ())
            by_key[ck] = tuple(r for r in held if r != rank)
        for ck, rank in new_set - old_set:
            held = by_key[ck] if ck in by_key else index.by_key.get(ck, ())
            by_key[ck] = _insert(held, rank)
    owners = index.by_key.update(by_key)
    claims_of = index.by_ref.update(by_ref)
    # 2. every claimant of those keys too (a frontend may have changed hands)
    for ranks in by_key.values():
        for namespace, svc_name, _, _ in ranks:
            if (namespace, svc_name) not in entries:
                svc = new_state.services[namespace, svc_name]
                entries[namespace, svc_name] = compile_service(new_state, svc, name, node)
    # 3. without the frontends they lost
    evolver = plan.services.evolver()
    refs: set[ServiceRef] = set()
    for key, entry in entries.items():
        ref = ServiceRef(*key)
        refs.add(ref)
        if entry is None:
            if ref in plan.services:
                evolver.remove(ref)
        else:
            lost = _lost(claims_of.get(key, _NO_CLAIMS), owners)
            evolver.set(ref, _without(entry, new_state.services[key], lost))
    service_map = evolver.persistent()
    new_index = FrontendIndex(service_map, owners, claims_of)
    new_plan = Plan(settings_for(new_state, name), service_map, new_state.revision, new_index)
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
