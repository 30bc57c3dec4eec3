"""Plan -> the iptables rules of each service, and the layout they live in (pure; the
restore texts of whole syncs are assembled by :mod:`svcnet_iptables.sync`).

Layout (kube-proxy's proven one, with svcnet's own prefix). Every per-service
decision lives in the nat table; the filter table is STATIC (the same rules for
every plan), so a sync of one family is one nat restore: one atomic transaction.

nat table
  PREROUTING, OUTPUT  -> SVCNET-SERVICES        (one jump each, inserted first)
  POSTROUTING         -> SVCNET-POSTROUTING
  SVCNET-SERVICES     one rule per ClusterIP / external IP / LoadBalancer frontend
                      (``-d ip -p proto --dport``) -> SVCNET-SVC-h (internal) or
                      SVCNET-EXT-h (external) or SVCNET-FW-h (LB with source ranges);
                      then -> SVCNET-NODEPORTS; then per proxied ClusterIP
                      -> SVCNET-MARK-REJECT (undefined port), per unproxied ClusterIP
                      RETURN, per service CIDR -> SVCNET-MARK-DROP (unallocated).
                      The frontend rules and the proxied ClusterIPs' rules are each
                      an address tree once they hold more than 16 addresses:
                      ``-d prefix -j SVCNET-DS-x`` (frontends) / ``SVCNET-DM-x``
                      (ClusterIPs), 16-way, a few hops, the same rules at its leaves
                      (:mod:`svcnet_iptables.tree`: a packet meets ~60 rules, not
                      one per service; its fate is unchanged)
  SVCNET-NODEPORTS    one rule per NodePort frontend (``-d node-ip``) -> SVCNET-EXT-h
  SVCNET-FW-h         ``-s range -j SVCNET-EXT-h`` per range, then -> SVCNET-MARK-DROP
  SVCNET-SVC-h/EXT-h  the port's three routes by source kind: ``-s <cluster CIDR>``
                      (pod), ``-m addrtype --src-type LOCAL`` (node), anything else
                      (external); forward = optional SVCNET-MARK-MASQ, then
                      SVCNET-CLU-h (cluster set) or SVCNET-LOC-h (local set);
                      reject/drop = -> SVCNET-MARK-REJECT / SVCNET-MARK-DROP, then
                      RETURN (the packet leaves nat un-NATed, marked)
  SVCNET-CLU-h/LOC-h  session affinity (``-m recent --rcheck``) then the uniform
                      random cascade (``--probability 1/(n-i)``, last unconditional)
  SVCNET-SEP-e        ``-s <ep> -j SVCNET-MARK-MASQ`` (hairpin), then DNAT
                      (``-m recent --set`` with affinity)
  SVCNET-MARK-MASQ    sets MASQ_MARK; SVCNET-POSTROUTING masquerades marked packets
  SVCNET-MARK-REJECT  sets REJECT_MARK unless DROP_MARK is set
  SVCNET-MARK-DROP    sets DROP_MARK unless REJECT_MARK is set (the first decision
                      a packet meets wins; svcnet never sets both bits)

filter table (static)
  INPUT, FORWARD, OUTPUT -> SVCNET-FILTER (``--ctstate NEW``)
  SVCNET-FILTER       ``-m mark --mark DROP_MARK/DROP_MARK -j DROP``,
                      ``-m mark --mark REJECT_MARK/REJECT_MARK -j REJECT``

Marks (bits of the packet mark, kube-proxy's convention for the first two):
MASQ_MARK 0x4000, DROP_MARK 0x8000 (kube-proxy's old KUBE-MARK-DROP bit),
REJECT_MARK 0x2000.

Why this is exact across interrupted syncs: every NEW packet passes nat before
filter (nat PREROUTING before filter INPUT/FORWARD, nat OUTPUT before filter
OUTPUT), so the marks nat sets are read by filter on the same packet; filter is
identical for every plan, so whichever nat a family holds (the old plan's or the
new one's, never a mix: one restore is one transaction) decides alone. A
rejected or dropped packet's conntrack entry is never confirmed, so a retry is
NEW again and passes nat again. IPv4 and IPv6 are separate tools: a sync
interrupted between them leaves one family old and the other new (each exact).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from functools import lru_cache

import attrs

from svcnet.model import IPFamily, Protocol
from svcnet.plan import (
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

from .tree import BITS, CLUSTER_IPS, FRONTENDS, LEAF, dispatch_tree, rule_host, tree_names

PREFIX = "SVCNET-"
SERVICES = "SVCNET-SERVICES"
NODEPORTS = "SVCNET-NODEPORTS"
POSTROUTING = "SVCNET-POSTROUTING"
MARK_MASQ = "SVCNET-MARK-MASQ"
MARK_REJECT = "SVCNET-MARK-REJECT"
MARK_DROP = "SVCNET-MARK-DROP"
FILTER = "SVCNET-FILTER"
MASQ_MARK = 0x4000
DROP_MARK = 0x8000
REJECT_MARK = 0x2000
NAT = "nat"
FILTER_TABLE = "filter"
TABLES = (NAT, FILTER_TABLE)
FAMILIES = (IPFamily.IPv4, IPFamily.IPv6)

#: (table, built-in chain, rule spec after ``-A CHAIN``): svcnet's jumps.
JUMPS: tuple[tuple[str, str, str], ...] = (
    (NAT, "PREROUTING", f'-m comment --comment "svcnet service portals" -j {SERVICES}'),
    (NAT, "OUTPUT", f'-m comment --comment "svcnet service portals" -j {SERVICES}'),
    (NAT, "POSTROUTING", f'-m comment --comment "svcnet postrouting" -j {POSTROUTING}'),
    (
        FILTER_TABLE,
        "INPUT",
        f'-m conntrack --ctstate NEW -m comment --comment "svcnet service filter" -j {FILTER}',
    ),
    (
        FILTER_TABLE,
        "FORWARD",
        f'-m conntrack --ctstate NEW -m comment --comment "svcnet service filter" -j {FILTER}',
    ),
    (
        FILTER_TABLE,
        "OUTPUT",
        f'-m conntrack --ctstate NEW -m comment --comment "svcnet service filter" -j {FILTER}',
    ),
)

SHARED_CHAINS: dict[str, tuple[str, ...]] = {
    NAT: (SERVICES, NODEPORTS, POSTROUTING, MARK_MASQ, MARK_REJECT, MARK_DROP),
    FILTER_TABLE: (FILTER,),
}

Chains = dict[str, list[str]]  # chain -> rule specs (after "-A CHAIN ")


def static_filter(family: IPFamily) -> Chains:
    """The filter table's svcnet chains: the same for every plan (see the module doc)."""
    return {
        FILTER: [
            f'-m mark --mark {DROP_MARK:#x}/{DROP_MARK:#x} -m comment --comment "svcnet drop" '
            "-j DROP",
            f"-m mark --mark {REJECT_MARK:#x}/{REJECT_MARK:#x} "
            '-m comment --comment "svcnet reject" '
            f"-j REJECT --reject-with {reject_with(family)}",
        ]
    }


def _mark_chain(action: Action) -> str:
    return MARK_REJECT if action is Action.REJECT else MARK_DROP


def _hash(text: str) -> str:
    # 64 bits as 16 upper-case hex digits (base64.b32encode is pure Python, and
    # naming 70,000 chains with it cost 0.4 s of a 10,000-service full sync)
    return hashlib.sha256(text.encode()).hexdigest()[:16].upper()


@lru_cache(maxsize=1 << 17)
def port_hash(ref: ServiceRef, name: str, family: IPFamily, protocol: Protocol) -> str:
    return _hash(f"{ref.namespace}/{ref.name}:{name}:{family.value}:{protocol.value}")


@lru_cache(maxsize=1 << 18)
def endpoint_chain(port_hash_: str, ep: PlanEndpoint) -> str:
    return "SVCNET-SEP-" + _hash(f"{port_hash_}/{ep}")


def _host(ip: str) -> str:
    return f"{ip}/128" if ":" in ip else f"{ip}/32"


def _proto(protocol: Protocol) -> str:
    return protocol.value.lower()


def reject_with(family: IPFamily) -> str:
    return "icmp6-port-unreachable" if family is IPFamily.IPv6 else "icmp-port-unreachable"


def _of_family(items: Iterable[str], family: IPFamily) -> tuple[str, ...]:
    if isinstance(items, tuple):
        return _of_family_cached(items, family)
    return _of_family_cached(tuple(items), family)


@lru_cache(maxsize=4096)
def _of_family_cached(items: tuple[str, ...], family: IPFamily) -> tuple[str, ...]:
    out = []
    for item in items:
        net = ipaddress.ip_network(item, strict=False)
        if (net.version == 6) == (family is IPFamily.IPv6):
            out.append(str(net))
    return tuple(out)


def effective(route: Route, port: PortPlan) -> Route:
    """A forward to an empty endpoint set behaves as a reject (nothing to reach)."""
    if route.action is Action.FORWARD:
        assert route.endpoints is not None
        if not port.endpoints(route.endpoints):
            return Route(Action.REJECT)
    return route


@attrs.frozen
class PortChains:
    """The chains of one port, by table, and its dispatch rules in the shared chains."""

    nat: Chains
    filter: Chains  # always empty: the filter table is static
    services: list[str]  # rules for SVCNET-SERVICES
    nodeports: list[str]  # rules for SVCNET-NODEPORTS
    filter_dispatch: list[str]  # always empty


def _routes(port: PortPlan, external: bool) -> tuple[Route, Route, Route]:
    if external:
        rs = (port.external_from_pod, port.external_from_node, port.external_from_external)
    else:
        rs = (port.internal_from_pod, port.internal_from_node, port.internal_from_external)
    return (effective(rs[0], port), effective(rs[1], port), effective(rs[2], port))


def _source_classes(settings: NodeSettings, family: IPFamily) -> list[str]:
    """Match text per source kind: every cluster CIDR (pod), node, then external ('')."""
    return [f"-s {c}" for c in _of_family(settings.cluster_cidrs, family)] + [
        "-m addrtype --src-type LOCAL"
    ]


def _dispatch_nat(
    routes: tuple[Route, Route, Route], pod_matches: list[str], h: str, meta: str = ""
) -> list[str]:
    pod, node, ext = routes
    out: list[str] = []
    classes = [(m, pod) for m in pod_matches[:-1]] + [(pod_matches[-1], node)]
    for match, route in classes:
        if route == ext:
            continue  # the unconditional tail does the same
        if route.action is Action.FORWARD:
            if route.masquerade:
                out.append(f"{match} -j {MARK_MASQ}")
            out.append(f"{match} -j {_set_chain(route, h)}")
        else:
            out.append(f"{match} -j {_mark_chain(route.action)}")
            out.append(f"{match} -j RETURN")
    tail = f'-m comment --comment "{fit(meta)}" ' if meta else ""
    if ext.action is Action.FORWARD:
        if ext.masquerade:
            out.append(f"-j {MARK_MASQ}")
        out.append(f"{tail}-j {_set_chain(ext, h)}")
    else:
        out.append(f"{tail}-j {_mark_chain(ext.action)}")
    return out


def _set_chain(route: Route, h: str) -> str:
    return ("SVCNET-CLU-" if route.endpoints is EndpointSet.CLUSTER else "SVCNET-LOC-") + h


#: One letter per route, for the comments that carry what the rules do not (the
#: routes of a side with no frontend, a forward to an empty set, which renders as a
#: reject): upper case masquerades.
ROUTE_CODES: dict[Route, str] = {
    Route(Action.FORWARD, EndpointSet.CLUSTER, True): "C",
    Route(Action.FORWARD, EndpointSet.CLUSTER, False): "c",
    Route(Action.FORWARD, EndpointSet.LOCAL, True): "L",
    Route(Action.FORWARD, EndpointSet.LOCAL, False): "l",
    Route(Action.REJECT): "r",
    Route(Action.DROP): "d",
}


def _code(route: Route) -> str:
    """:data:`ROUTE_CODES`' letter, from the fields (Route's attrs hash is slow)."""
    if route.action is Action.FORWARD:
        letter = "C" if route.endpoints is EndpointSet.CLUSTER else "L"
        return letter if route.masquerade else letter.lower()
    return "r" if route.action is Action.REJECT else "d"


def port_meta(port: PortPlan, index: int, firewall: bool) -> str:
    """The comment on the last rule of a port's first dispatch chain: the port's
    index in its service, its six routes as written in the plan, its affinity and,
    when no firewall chain carries them, its source ranges. None of it decides
    anything a packet meets (see :mod:`svcnet_iptables.observed`)."""
    routes = "".join(_code(r) for r in port.routes)
    out = f"port={index} routes={routes}"
    if port.affinity_timeout is not None:
        out += f" affinity={port.affinity_timeout}"
    if port.source_ranges and not firewall:
        out += f" ranges={','.join(port.source_ranges)}"
    return out


#: The chain of a port left with no frontend (each lost to another service's claim,
#: see :mod:`svcnet.plan.compiler`): nothing jumps to it; its one rule's comment
#: holds the port's index, planned routes, protocol and name, and its endpoints
#: have their SEP chains, so that the plan read back still lists the port.
LOST = "SVCNET-LOST-"

#: The longest comment iptables accepts (xt_comment holds 256 bytes with the NUL).
MAX_COMMENT = 255


def fit(comment: str) -> str:
    """``comment`` cut to what iptables accepts (a longer one would fail the whole
    restore). A cut comment is read back short: the observed plan then differs
    from the installed one in what the comment carried, never in behaviour."""
    return comment if len(comment) <= MAX_COMMENT else comment[:MAX_COMMENT]


def settings_comment(settings: NodeSettings) -> str:
    """The node's settings, on the rule of SVCNET-MARK-MASQ (the node name and
    addresses decide nothing in these tables; the CIDRs do where rules use them)."""
    return (
        f"svcnet node={settings.node} ips={','.join(settings.node_ips)} "
        f"cluster={','.join(settings.cluster_cidrs)} "
        f"services={','.join(settings.service_cidrs)}"
    )


def _probability(i: int, n: int) -> str:
    return f"{1.0 / (n - i):.10f}"


def _cascade(eps: tuple[PlanEndpoint, ...], h: str, affinity: int | None) -> list[str]:
    out: list[str] = []
    names = [endpoint_chain(h, ep) for ep in eps]
    if affinity is not None:
        out += [
            f"-m recent --name {name} --rcheck --seconds {affinity} --reap -j {name}"
            for name in names
        ]
    n = len(names)
    for i, name in enumerate(names):
        if i < n - 1:
            out.append(f"-m statistic --mode random --probability {_probability(i, n)} -j {name}")
        else:
            out.append(f"-j {name}")
    return out


def _frontend_match(fe: Frontend, proto: str, comment: str) -> str:
    return (
        f'-d {_host(fe.ip)} -p {proto} -m comment --comment "{fit(comment)}" '
        f"-m {proto} --dport {fe.port}"
    )


@attrs.frozen
class PortShape:
    """Which chains a port gets, decided once for :func:`render_port` and
    :func:`port_chain_names` alike (so a full sync can declare every chain before
    rendering any rule)."""

    h: str
    internal: tuple[Route, Route, Route]
    external: tuple[Route, Route, Route]
    has_internal: bool
    has_external: bool
    used: tuple[EndpointSet, ...]  # endpoint sets some route forwards to, in order
    ranges: tuple[str, ...] | None  # this family's loadBalancerSourceRanges, if any
    firewall: bool  # SVCNET-FW-h (source ranges on an LB frontend)


def port_shape(svc: ServicePlan, port: PortPlan) -> PortShape:
    family = port.family
    internal = _routes(port, external=False)
    external = _routes(port, external=True)
    has_internal = any(not fe.kind.external for fe in port.frontends)
    has_external = any(fe.kind.external for fe in port.frontends)
    ranges = _of_family(port.source_ranges, family) if port.source_ranges else None
    used: set[EndpointSet] = set()
    if has_internal:
        used |= {r.endpoints for r in internal if r.endpoints and r.action is Action.FORWARD}
    if has_external:
        used |= {r.endpoints for r in external if r.endpoints and r.action is Action.FORWARD}
    return PortShape(
        h=port_hash(svc.ref, port.name, family, port.protocol),
        internal=internal,
        external=external,
        has_internal=has_internal,
        has_external=has_external,
        used=tuple(sorted(used, key=lambda e: e.value)),
        ranges=ranges,
        firewall=ranges is not None
        and any(fe.kind is FrontendKind.LOAD_BALANCER for fe in port.frontends),
    )


def _set_chain_of(which: EndpointSet, h: str) -> str:
    return ("SVCNET-CLU-" if which is EndpointSet.CLUSTER else "SVCNET-LOC-") + h


def port_chain_names(port: PortPlan, shape: PortShape) -> dict[str, list[str]]:
    """The chains :func:`render_port` creates for ``port``, per table."""
    h = shape.h
    nat: list[str] = []
    if shape.has_internal:
        nat.append("SVCNET-SVC-" + h)
    if shape.has_external:
        nat.append("SVCNET-EXT-" + h)
    for which in shape.used:
        nat.append(_set_chain_of(which, h))
    if not (shape.has_internal or shape.has_external):
        nat.append(LOST + h)
    nat += [endpoint_chain(h, ep) for ep, _sets in _members(port)]
    if shape.firewall:
        nat.append("SVCNET-FW-" + h)
    # an endpoint in both the cluster and the local set has one chain
    return {NAT: list(dict.fromkeys(nat)), FILTER_TABLE: []}


def _members(port: PortPlan) -> list[tuple[PlanEndpoint, str]]:
    """Every endpoint of the port, in either set, with the sets it is in ("cluster",
    "local" or "cluster,local"): each gets its SVCNET-SEP chain, whose DNAT rule's
    comment names them, so that a set no route forwards to is still read back."""
    cluster, local = port.cluster_endpoints, port.local_endpoints
    if local is cluster:  # the compiler shares the tuple when the sets are equal
        return [(ep, "cluster,local") for ep in cluster]
    if not local:
        return [(ep, "cluster") for ep in cluster]
    # plain tuple keys: PlanEndpoint's attrs hash is a Python call per endpoint
    here = {(ep.ip, ep.port) for ep in local}
    out = [(ep, "cluster,local" if (ep.ip, ep.port) in here else "cluster") for ep in cluster]
    if sum(sets == "cluster,local" for _ep, sets in out) != len(here):  # local-only ones
        there = {(ep.ip, ep.port) for ep in cluster}
        out += [(ep, "local") for ep in local if (ep.ip, ep.port) not in there]
    return out


def render_port(
    svc: ServicePlan,
    port: PortPlan,
    settings: NodeSettings,
    shape: PortShape | None = None,
    index: int = 0,
) -> PortChains:
    """The chains and dispatch rules of one port; ``index``: its place in
    ``svc.ports`` (written in a comment, for :mod:`svcnet_iptables.observed`)."""
    family = port.family
    proto = _proto(port.protocol)
    shape = shape or port_shape(svc, port)
    h = shape.h
    label = f"{svc.ref}:{port.name}" if port.name else str(svc.ref)
    nat: Chains = {}
    services: list[str] = []
    nodeports: list[str] = []
    pod_matches = _source_classes(settings, family)
    internal, external, ranges = shape.internal, shape.external, shape.ranges
    meta = port_meta(port, index, shape.firewall)
    if shape.has_internal:
        nat["SVCNET-SVC-" + h] = _dispatch_nat(internal, pod_matches, h, meta)
    if shape.has_external:
        nat["SVCNET-EXT-" + h] = _dispatch_nat(
            external, pod_matches, h, "" if shape.has_internal else meta
        )
    if not (shape.has_internal or shape.has_external):
        # every frontend lost to another service's claim: nothing reaches the port;
        # one unreachable rule keeps what the plan says of it (see LOST)
        lost = f"{meta} proto={port.protocol.value} of={label}"
        nat[LOST + h] = [f'-m comment --comment "{fit(lost)}" -j RETURN']
    for which in shape.used:
        nat[_set_chain_of(which, h)] = _cascade(port.endpoints(which), h, port.affinity_timeout)
    for ep, sets in _members(port):
        name = endpoint_chain(h, ep)
        sticky = (
            f" -m recent --set --name {name} --rsource" if port.affinity_timeout is not None else ""
        )
        nat[name] = [
            f"-s {_host(ep.ip)} -j {MARK_MASQ}",
            f'-p {proto} -m comment --comment "{fit(f"{label} in {sets}")}"{sticky} '
            f"-j DNAT --to-destination {ep}",
        ]
    if shape.firewall:
        assert ranges is not None
        nat["SVCNET-FW-" + h] = [f"-s {r} -j SVCNET-EXT-{h}" for r in ranges] + [f"-j {MARK_DROP}"]
    for fe in port.frontends:
        match = _frontend_match(fe, proto, f"{label} {fe.kind.value}")
        if fe.kind is FrontendKind.CLUSTER_IP:
            services.append(f"{match} -j SVCNET-SVC-{h}")
        elif fe.kind is FrontendKind.NODE_PORT:
            nodeports.append(f"{match} -j SVCNET-EXT-{h}")
        elif fe.kind is FrontendKind.LOAD_BALANCER and ranges is not None:
            services.append(f"{match} -j SVCNET-FW-{h}")
        else:
            services.append(f"{match} -j SVCNET-EXT-{h}")
    return PortChains(nat, {}, services, nodeports, [])


@attrs.frozen
class ServiceChains:
    """Everything one service contributes to one family's tables."""

    chains: dict[str, Chains]  # table -> own chains
    services: list[str]
    nodeports: list[str]
    filter_dispatch: list[str]
    cluster_ips: list[str]  # filter rules after the dispatch: reject / pass
    blocks: dict[str, str] = attrs.field(factory=dict)  # table -> its "-A" lines, joined


def render_service(
    svc: ServicePlan,
    settings: NodeSettings,
    family: IPFamily,
    shapes: Sequence[PortShape] | None = None,
) -> ServiceChains:
    """``svc``'s rules in ``family``; ``shapes``: its ports' :func:`port_shape`, if known."""
    ports = svc.ports_of(family) if svc.proxied else ()
    if not ports and not any((":" in ip) == (family is IPFamily.IPv6) for ip in svc.cluster_ips):
        return _EMPTY
    chains: dict[str, Chains] = {NAT: {}, FILTER_TABLE: {}}
    services: list[str] = []
    nodeports: list[str] = []
    fdispatch: list[str] = []
    indices = [i for i, p in enumerate(svc.ports) if p.family is family] if ports else []
    for i, port in enumerate(ports):
        pc = render_port(svc, port, settings, shapes[i] if shapes is not None else None, indices[i])
        chains[NAT].update(pc.nat)
        chains[FILTER_TABLE].update(pc.filter)
        services += pc.services
        nodeports += pc.nodeports
        fdispatch += pc.filter_dispatch
    cips: list[str] = []
    for i, ip in enumerate(svc.cluster_ips):
        if (":" in ip) != (family is IPFamily.IPv6):
            continue
        # the address's index in cluster_ips (the families' order) rides in the comment
        if svc.proxied:
            cips.append(
                f"-d {_host(ip)} -m comment "
                f'--comment "{fit(f"{svc.ref} has no such port; ClusterIP {i}")}" '
                f"-j {MARK_REJECT}"
            )
        else:
            cips.append(
                f"-d {_host(ip)} -m comment "
                f'--comment "{fit(f"{svc.ref} another proxy; ClusterIP {i}")}" '
                "-j RETURN"
            )
    blocks = {
        table: "".join(f"-A {chain} {rule}\n" for chain, rules in own.items() for rule in rules)
        for table, own in chains.items()
    }
    return ServiceChains(chains, services, nodeports, fdispatch, cips, blocks)


# what a service contributes to a family it has no port and no ClusterIP in (shared:
# never modified)
_EMPTY = ServiceChains({NAT: {}, FILTER_TABLE: {}}, [], [], [], [], {NAT: "", FILTER_TABLE: ""})


def ref_key(ref: ServiceRef) -> tuple[str, str]:
    # attrs' generated ordering builds tuples per comparison: 10x slower at 10k services
    return (ref.namespace, ref.name)


class Renderer:
    """Renders plans, caching each service's rules by value (one event -> O(1) renders).

    ``leaf`` and ``bits`` shape the dispatch trees (:func:`svcnet_iptables.tree.
    dispatch_tree`; tests make deep trees of small clusters with small values)."""

    def __init__(self, *, leaf: int = LEAF, bits: int = BITS) -> None:
        self.leaf = leaf
        self.bits = bits
        self._cache: dict[
            tuple[ServiceRef, IPFamily], tuple[ServicePlan, NodeSettings, ServiceChains]
        ] = {}
        # the shared chains of the last plans rendered (a partial sync compares the
        # installed plan's with the target's and rewrites only those that differ)
        self._shared: dict[IPFamily, list[tuple[Plan, dict[str, Chains]]]] = {}

    def service(
        self,
        svc: ServicePlan,
        settings: NodeSettings,
        family: IPFamily,
        shapes: Sequence[PortShape] | None = None,
    ) -> ServiceChains:
        key = (svc.ref, family)
        hit = self._cache.get(key)
        if hit is not None and (hit[0] is svc or hit[0] == svc) and hit[1] == settings:
            return hit[2]
        out = render_service(svc, settings, family, shapes)
        self._cache[key] = (svc, settings, out)
        return out

    def cached(
        self, svc: ServicePlan, settings: NodeSettings, family: IPFamily
    ) -> ServiceChains | None:
        """``svc``'s rendering if it is in the cache (nothing is rendered)."""
        hit = self._cache.get((svc.ref, family))
        if hit is not None and (hit[0] is svc or hit[0] == svc) and hit[1] == settings:
            return hit[2]
        return None

    def forget(self, refs: Iterable[ServiceRef]) -> None:
        for ref in refs:
            for family in FAMILIES:
                self._cache.pop((ref, family), None)

    def shared(self, plan: Plan, family: IPFamily) -> dict[str, Chains]:
        """The shared chains of one family, built from the whole plan (a fresh dict
        per table; the rule lists are shared and must not be changed)."""
        memo = self._shared.setdefault(family, [])
        for seen, chains in memo:
            if seen is plan:
                return {t: dict(c) for t, c in chains.items()}
        chains = self._build_shared(plan, family)
        memo.append((plan, chains))
        del memo[:-2]
        return {t: dict(c) for t, c in chains.items()}

    def carry_shared(self, previous: Plan, target: Plan, family: IPFamily) -> bool:
        """Reuse ``previous``'s shared chains for ``target`` when the services that
        differ contribute the same dispatch rules (an endpoint change): no pass over
        every service. False when they are not known (nothing done)."""
        memo = self._shared.setdefault(family, [])
        for seen, chains in memo:
            if seen is previous:
                memo.append((target, chains))
                del memo[:-2]
                return True
        return False

    def dispatch_of(
        self, svc: ServicePlan, settings: NodeSettings, family: IPFamily
    ) -> tuple[object, ...]:
        """What ``svc`` puts in the shared chains."""
        sc = self.service(svc, settings, family)
        return (sc.services, sc.nodeports, sc.filter_dispatch, sc.cluster_ips, svc.proxied)

    def tree_names(self, plan: Plan, family: IPFamily) -> list[str]:
        """The dispatch tree chains of ``plan`` in ``family`` (those :meth:`shared`
        makes), from the addresses alone: nothing is rendered."""
        fronts: list[str] = []
        cips: list[str] = []
        v6 = family is IPFamily.IPv6
        for svc in plan.services.values():
            if not svc.proxied:
                continue
            cips += [ip for ip in svc.cluster_ips if (":" in ip) == v6]
            for port in svc.ports_of(family):
                fronts += [fe.ip for fe in port.frontends if fe.kind is not FrontendKind.NODE_PORT]
        kw = {"leaf": self.leaf, "bits": self.bits}
        return tree_names(fronts, family, FRONTENDS, **kw) + tree_names(
            cips, family, CLUSTER_IPS, **kw
        )

    def _build_shared(self, plan: Plan, family: IPFamily) -> dict[str, Chains]:
        settings = plan.settings
        services: list[str] = []
        nodeports: list[str] = []
        unproxied: list[str] = []
        proxied: list[str] = []
        for _ref, svc in sorted(plan.services.items(), key=lambda kv: ref_key(kv[0])):
            sc = self.service(svc, settings, family)
            services += sc.services
            nodeports += sc.nodeports
            (proxied if svc.proxied else unproxied).extend(sc.cluster_ips)
        # both address lists become trees (see svcnet_iptables.tree); unproxied
        # ClusterIPs RETURN from SVCNET-SERVICES and stay in it
        kw = {"leaf": self.leaf, "bits": self.bits}
        fronts, front_chains = dispatch_tree(
            [(rule_host(r), r) for r in services], family, FRONTENDS, **kw
        )
        misses, miss_chains = dispatch_tree(
            [(rule_host(r), r) for r in proxied], family, CLUSTER_IPS, **kw
        )
        drops = [
            f'-d {c} -m comment --comment "unallocated service address" -j {MARK_DROP}'
            for c in _of_family(settings.service_cidrs, family)
        ]
        return {
            NAT: {
                SERVICES: [*fronts, f"-j {NODEPORTS}", *misses, *unproxied, *drops],
                **front_chains,
                **miss_chains,
                NODEPORTS: nodeports,
                MARK_MASQ: [
                    f'-m comment --comment "{fit(settings_comment(settings))}" '
                    f"-j MARK --or-mark {MASQ_MARK:#x}"
                ],
                POSTROUTING: [
                    f"-m mark ! --mark {MASQ_MARK:#x}/{MASQ_MARK:#x} -j RETURN",
                    f"-j MARK --xor-mark {MASQ_MARK:#x}",
                    '-m comment --comment "svcnet service traffic requiring SNAT" '
                    "-j MASQUERADE --random-fully",
                ],
                MARK_REJECT: [
                    f"-m mark --mark {DROP_MARK:#x}/{DROP_MARK:#x} -j RETURN",
                    f"-j MARK --or-mark {REJECT_MARK:#x}",
                ],
                MARK_DROP: [
                    f"-m mark --mark {REJECT_MARK:#x}/{REJECT_MARK:#x} -j RETURN",
                    f"-j MARK --or-mark {DROP_MARK:#x}",
                ],
            },
            FILTER_TABLE: static_filter(family),
        }
