"""compile(state, node) -> Plan: the full compile, and the frontend claims.

Re-exported by :mod:`svcnet.plan` (``svcnet.plan.compile``, ``svcnet.compile``); the
incremental form, ``update``/``advance``, is :mod:`svcnet.plan.incremental`. The
types' docstring (:mod:`svcnet.plan.types`) says how a data plane reads what is
built here. The rules (docs/reference/semantics.md) are folded into each :class:`PortPlan` ahead
of time: the endpoint sets of this node, and one :class:`Route` per (internal or
external frontend, source kind), so a data plane never needs the cluster state.

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

Every claim, winning or not, is kept in a :class:`FrontendIndex`, which the
compiler keeps beside the plan, not in it (a plan is a plain value of the
contract): :func:`remember` files it under the plan's identity, held weakly (it
goes when the plan does), and :func:`index_of` finds it again. The incremental
update uses it to recompile, with the services that changed, every service
holding a claim on a key whose claimants changed (a deleted or changed winner
hands its frontends back); a plan with no index (built otherwise, or a copy) is
updated by a full compile. The table is the one piece of module state here: a
memo, invisible in results (a plan with or without an index updates to the same
plan), each entry written once and dropped with its plan.
"""

from __future__ import annotations

import ipaddress
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Generic, TypeVar

import attrs
from pyrsistent import PMap, pmap

from svcnet import _gc
from svcnet.model import (
    Endpoint,
    IPFamily,
    Node,
    Service,
    ServiceType,
    SessionAffinity,
    TrafficPolicy,
    ip_family,
    norm_ip,
)
from svcnet.plan.types import (
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
from svcnet.state.endpoints import hinted

if TYPE_CHECKING:
    from svcnet.state import ClusterState

__all__ = [
    "FrontendIndex",
    "compile",
    "compile_service",
    "index_of",
    "remember",
    "settings_for",
    "without_lost",
]

_ROUTES = {
    (which, masq): Route(Action.FORWARD, which, masq)
    for which in EndpointSet
    for masq in (False, True)
}


def _node_ip(node: Node | None, family: IPFamily) -> str | None:
    if node is None:
        return None
    for a in node.addresses:
        if ip_family(a) is family:
            return a
    return None


def settings_for(state: ClusterState, node_name: str) -> NodeSettings:
    node = state.nodes.get(node_name)
    return NodeSettings(
        node=node_name,
        node_ips=tuple(norm_ip(a) for a in node.addresses) if node is not None else (),
        cluster_cidrs=state.config.cluster_cidrs,
        service_cidrs=state.config.service_cidrs,
    )


def _ready_or_terminating(endpoints: list[Endpoint]) -> list[Endpoint]:
    ready = [e for e in endpoints if e.ready]
    return ready or [e for e in endpoints if e.serving and e.terminating]


def _cluster_set(
    svc: Service, endpoints: list[Endpoint], node_name: str, zone: str | None, hints: bool
) -> list[Endpoint]:
    """SEMANTICS "Which endpoints" 1 and 7: with a ``trafficDistribution``, this node's
    ready endpoints (``PreferSameNode``), else those in its zone (every value, when
    every ready endpoint has a zone), else the cluster set. ``hints`` (the API's
    authority): the slices' topology hints decide instead (``endpoints.hinted``)."""
    if hints:
        return hinted(endpoints, node_name, zone) or _ready_or_terminating(endpoints)
    distribution = svc.traffic_distribution
    if distribution is not None:
        ready = [e for e in endpoints if e.ready]
        if distribution.prefers_node:
            own = [e for e in ready if e.node_name == node_name]
            if own:
                return own
        if zone and ready and all(e.zone for e in ready):
            close = [e for e in ready if e.zone == zone]
            if close:
                return close
    return _ready_or_terminating(endpoints)


def _frontend_key(f: Frontend) -> tuple[str, str, int]:
    return (f.kind.value, f.ip, f.port)  # Frontend's attrs order, without attrs' cost


def _plan_endpoints(endpoints: list[Endpoint]) -> tuple[PlanEndpoint, ...]:
    # Addresses are used as the state holds them (manifests normalise them).
    # Sorted and unique, as PortPlan wants them (what PortPlan.build would make).
    pairs = sorted({(e.ip, e.port) for e in endpoints})
    return tuple([PlanEndpoint(ip, port) for ip, port in pairs])


def _ranges(svc: Service, family: IPFamily, node_ip: str | None) -> tuple[str, ...]:
    ranges = [r for r in svc.load_balancer_source_ranges if ip_family(r) is family]
    if not ranges:
        return ()
    networks = [ipaddress.ip_network(r, strict=False) for r in ranges]
    out = {str(n) for n in networks}
    if node_ip is not None and any(ipaddress.ip_address(node_ip) in n for n in networks):
        bits = 32 if family is IPFamily.IPv4 else 128
        out.update(
            f"{norm_ip(ip)}/{bits}" for ip in svc.load_balancer_ips if ip_family(ip) is family
        )
    return tuple(sorted(out))


# -- frontend claims ---------------------------------------------------------------

NsName = tuple[str, str]
ClaimKey = tuple[str, int, str]  # normalised address, port number, protocol value
Rank = tuple[str, str, int, str]  # namespace, name, port index, frontend kind value
Claim = tuple[ClaimKey, Rank]
Lost = frozenset[tuple[int, str, str, int]]  # port index, kind value, address, number

NO_CLAIMS: tuple[Claim, ...] = ()
_NOTHING_LOST: Lost = frozenset()
_CIP = FrontendKind.CLUSTER_IP.value
_EIP = FrontendKind.EXTERNAL_IP.value
_LBIP = FrontendKind.LOAD_BALANCER.value
_NPORT = FrontendKind.NODE_PORT.value

K = TypeVar("K")
V = TypeVar("V")


def _claim_ip(ip: str) -> str:
    """One spelling per address (only IPv6 has several: a valid IPv4 text is canonical)."""
    return norm_ip(ip) if ":" in ip else ip


def insert_rank(ranks: tuple[Rank, ...], rank: Rank) -> tuple[Rank, ...]:
    """``ranks`` (sorted) with ``rank`` too."""
    return ranks if rank in ranks else tuple(sorted((*ranks, rank)))


def lost_claims(claims: Iterable[Claim], owners: Layer[ClaimKey, tuple[Rank, ...]]) -> Lost:
    """The claims among ``claims`` that another (lower) rank owns."""
    return frozenset(
        (rank[2], rank[3], ck[0], ck[1])
        for ck, rank in claims
        if owners.get(ck, (rank,))[0] != rank
    )


def without_lost(entry: ServicePlan, svc: Service, lost: Lost) -> ServicePlan:
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
            f for f in port.frontends if (index, f.kind.value, _claim_ip(f.ip), f.port) not in lost
        )
        if len(kept) != len(port.frontends):
            port = attrs.evolve(port, frontends=kept)
        ports.append(port)
    return ServicePlan(entry.ref, entry.cluster_ips, tuple(ports), entry.proxied)


class Layer(Generic[K, V]):
    """A read-only map: ``top`` (a persistent map of the changes since) over ``base``
    (a dict :func:`compile` built and nobody changes afterwards). Sharing the
    base spares compile the cost of a persistent map of every claim, and an
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

    def update(self, edits: Mapping[K, V]) -> Layer[K, V]:
        return Layer(self.base, self.top.update(edits)) if edits else self


@attrs.frozen(eq=False)
class FrontendIndex:
    """Every frontend claim of a plan's node, winning or not (the compiler's own,
    kept beside the plan: :func:`remember`, :func:`index_of`)."""

    by_key: Layer[ClaimKey, tuple[Rank, ...]]  # key -> claimants' ranks, sorted; () none
    by_ref: Layer[NsName, tuple[Claim, ...]]  # service -> its claims; () none


# Plan identity -> (a weak reference to the plan, its index). The entry goes when the
# plan does; a plan is frozen, so the index stays true of it.
_INDEXES: dict[int, tuple[weakref.ref[Plan], FrontendIndex]] = {}


def remember(plan: Plan, index: FrontendIndex) -> Plan:
    """File ``index`` as ``plan``'s (for :func:`index_of`); returns ``plan``."""
    key = id(plan)

    def forget(ref: weakref.ref[Plan]) -> None:
        entry = _INDEXES.get(key)
        if entry is not None and entry[0] is ref:
            del _INDEXES[key]

    _INDEXES[key] = (weakref.ref(plan, forget), index)
    return plan


def index_of(plan: Plan) -> FrontendIndex | None:
    """The index :func:`remember` filed for this very plan (None: not built by the
    compiler, e.g. by :meth:`Changes.apply_to` or a copy)."""
    entry = _INDEXES.get(id(plan))
    if entry is None or entry[0]() is not plan:
        return None
    return entry[1]


def compile_service(
    state: ClusterState,
    svc: Service,
    node_name: str,
    node: Node | None,
    endpoints: Mapping[str, tuple[Endpoint, ...]] | None = None,
    claims: list[Claim] | None = None,
) -> ServicePlan | None:
    """The plan entry of one service on one node (None: nothing to do for it),
    with all of its frontends, conflicts or not: :func:`compile` and the
    incremental update settle those. ``claims``: a list that gets the service's claims appended (the
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
    hints = state.config.api_authority
    affinity = svc.affinity_timeout if svc.session_affinity is SessionAffinity.CLIENT_IP else None
    itp_local = svc.internal_traffic_policy is TrafficPolicy.LOCAL
    etp_local = svc.external_traffic_policy is TrafficPolicy.LOCAL
    is_lb = svc.type is ServiceType.LOAD_BALANCER
    ports: list[PortPlan] = []
    namespace, name = svc.namespace, svc.name
    for cip in cluster_ips:
        family = ip_family(cip)
        node_ip = _node_ip(node, family)
        ext_ips = [ip for ip in svc.external_ips if ip_family(ip) is family]
        lb_ips = [ip for ip in svc.load_balancer_ips if ip_family(ip) is family] if is_lb else []
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
            all_eps = [e for e in endpoints.get(port.name, ()) if ip_family(e.ip) is family]
            cluster = _cluster_set(svc, all_eps, node_name, zone, hints)
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
                PortPlan(  # tuples sorted and unique already: no PortPlan.build
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


def compile(state: ClusterState, node: str) -> Plan:
    """The plan of ``node`` for ``state`` (pure; ``Plan.revision = state.revision``)."""
    return _compile(state, node, state.nodes.get(node))


def _compile(state: ClusterState, node_name: str, node: Node | None) -> Plan:
    services: dict[ServiceRef, ServicePlan] = {}
    by_ref: dict[NsName, tuple[Claim, ...]] = {}
    by_key: dict[ClaimKey, tuple[Rank, ...]] = {}
    contested: list[ClaimKey] = []
    # Building ~10 objects per service: the cyclic GC would rescan the whole
    # (large, acyclic) state many times over; nothing built here is cyclic.
    with _gc.paused():
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
                        by_key[ck] = insert_rank(held, rank)
                        contested.append(ck)
        owners: Layer[ClaimKey, tuple[Rank, ...]] = Layer(by_key, pmap())
        for namespace, name in {rank[:2] for ck in contested for rank in by_key[ck][1:]}:
            ref = ServiceRef(namespace, name)
            svc = state.services[namespace, name]
            lost = lost_claims(by_ref[namespace, name], owners)
            services[ref] = without_lost(services[ref], svc, lost)
        plan = Plan(settings_for(state, node_name), pmap(services), state.revision)
        return remember(plan, FrontendIndex(owners, Layer(by_ref, pmap())))
