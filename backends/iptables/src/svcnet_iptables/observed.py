"""svcnet's rules as read back -> the :class:`~svcnet.plan.Plan` they carry (pure).

:func:`observed_plan` turns a :class:`~svcnet_iptables.readback.Ruleset` (what
``iptables-save`` or libiptc returned, parsed) into the plan of the node, equal
(``==``) to the plan installed when nothing drifted. The layout is
:mod:`svcnet_iptables.render`'s.

Everything a packet meets is read from the rules themselves:

- a frontend from its dispatch rule (``-d ip -p proto --dport n``) in
  SVCNET-SERVICES (ClusterIP -> SVCNET-SVC-h, external IP or LoadBalancer ->
  SVCNET-EXT-h, LoadBalancer with source ranges -> SVCNET-FW-h) or SVCNET-NODEPORTS
  (NodePort); SVCNET-SERVICES is read with its address trees' jumps inlined
  (:func:`flat_services`); a port is the set of frontends jumping to one hash ``h``;
- its routes from SVCNET-SVC-h / SVCNET-EXT-h (``-s <cluster CIDR>``: pod,
  ``--src-type LOCAL``: node, the unconditional tail: external; a class without
  its own rules does what the tail does);
- its endpoint sets from the SVCNET-CLU-h / SVCNET-LOC-h cascades and the DNAT
  targets of the SVCNET-SEP chains they jump to, the affinity timeout from their
  ``--rcheck --seconds``, its source ranges from SVCNET-FW-h;
- a ClusterIP from its ``-d ip -j SVCNET-MARK-REJECT`` rule (proxied) or ``-j
  RETURN`` (another proxy), the service CIDRs from the ``-j SVCNET-MARK-DROP``
  rules, the cluster CIDRs from the pod classes of the dispatch chains.

What decides nothing in these tables rides in ``-m comment`` texts the renderer
writes on rules that exist anyway: the service and port name of a frontend
(``ns/name:port Kind``; the kind also tells an external IP from a LoadBalancer
address without source ranges, which behave alike), the order of a service's
ClusterIPs (``...; ClusterIP i``), on the tail of a port's first dispatch chain
the port's index in its service, the six routes as planned (those of a side with
no frontend, a pod class in a family without cluster CIDRs, a forward to an empty
set, which renders as a reject) and, when no rule uses them, the affinity and the
source ranges; on each SVCNET-SEP chain's DNAT rule the endpoint sets it is in
(a set no route forwards to has no cascade); on SVCNET-MARK-MASQ the node's name,
addresses and CIDRs. A value the rules carry always wins over its comment.

A port left with no frontend at all (each lost to another service's claim, see
:mod:`svcnet.plan.compiler`) has no rule a packet meets: its SVCNET-LOST-h chain
(nothing jumps to it) holds one rule whose comment says the port's index, routes,
protocol and name, and its endpoints have their SEP chains as usual.

Damage shows as a difference: a port whose chains are not exactly what svcnet
writes (a class of a dispatch chain with a rule missing or changed, a cascade
whose probabilities or affinity checks do not add up, a firewall chain without
its final drop, no comment where one is expected) is left out of its service; an
SEP chain that is not a hairpin mark then a DNAT to the same address is not an
endpoint; a missing frontend or ClusterIP rule is a missing frontend or address.
Nothing here raises: what cannot be read is not in the plan.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

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

from .readback import Rule, Ruleset, Table
from .render import (
    FAMILIES,
    LOST,
    MARK_DROP,
    MARK_MASQ,
    MARK_REJECT,
    NAT,
    NODEPORTS,
    ROUTE_CODES,
    SERVICES,
    endpoint_chain,
)
from .tree import TREE_PREFIXES

CODE_ROUTES = {code: route for route, code in ROUTE_CODES.items()}
_CLUSTER_IP = re.compile(r"(\S+) (has no such port|another proxy); ClusterIP (\d+)")
_DISPATCH = ("SVCNET-SVC-", "SVCNET-EXT-", "SVCNET-FW-")
_SEP = "SVCNET-SEP-"
_PROTOCOLS = frozenset(p.value for p in Protocol)
_REJECT = Route(Action.REJECT)
_DROP = Route(Action.DROP)

Routes = tuple[Route, Route, Route]  # pod, node, external


def _fields(comment: str | None, first: str) -> dict[str, str]:
    """``k=v`` words of a comment whose first word starts with ``first``."""
    if not comment or not comment.startswith(first):
        return {}
    out = {}
    for word in comment.split(" "):
        key, eq, value = word.partition("=")
        if eq:
            out[key] = value
    return out


def _items(value: str | None) -> tuple[str, ...]:
    return tuple(v for v in (value or "").split(",") if v)


def _net_family(cidr: str) -> IPFamily:
    return IPFamily.IPv6 if ":" in cidr else IPFamily.IPv4


def _merge(written: tuple[str, ...], family: IPFamily, found: list[str] | None) -> tuple[str, ...]:
    """``written`` with its ``family`` items replaced by what the rules hold
    (``found``; None: the rules say nothing of them), keeping the order of the
    families."""
    if found is None:
        return written
    mine = [w for w in written if _net_family(w) is family]
    if [str(ipaddress.ip_network(w, strict=False)) for w in mine] == found:
        return written
    out: list[str] = []
    placed = False
    for item in written:
        if _net_family(item) is not family:
            out.append(item)
        elif not placed:
            out += found
            placed = True
    if not placed:
        out += found
    return tuple(out)


def _ref_and_name(label: str) -> tuple[ServiceRef, str] | None:
    ref_text, _, name = label.partition(":")
    namespace, slash, svc_name = ref_text.partition("/")
    if not slash or not namespace or not svc_name:
        return None
    return ServiceRef(namespace, svc_name), name


def _host(rule_addr: object) -> str:
    assert isinstance(rule_addr, ipaddress.IPv4Network | ipaddress.IPv6Network)
    return str(rule_addr.network_address)


@attrs.define
class _Port:
    """A port being read back: what its dispatch rules said."""

    ref: ServiceRef
    name: str
    protocol: Protocol
    frontends: list[Frontend] = attrs.Factory(list)


def _kind(chain: str, target: str, written: str) -> FrontendKind:
    """A frontend's kind: from where its rule is and where it jumps; the comment
    only tells an external IP from a LoadBalancer address (they behave alike)."""
    if chain == NODEPORTS:
        return FrontendKind.NODE_PORT
    if target.startswith("SVCNET-SVC-"):
        return FrontendKind.CLUSTER_IP
    if target.startswith("SVCNET-FW-"):
        return FrontendKind.LOAD_BALANCER
    if written == FrontendKind.LOAD_BALANCER.value:
        return FrontendKind.LOAD_BALANCER
    return FrontendKind.EXTERNAL_IP


def _route_of(targets: list[str], h: str, tail: bool) -> Route | None:
    """The route one source class's rules take (None: not rules svcnet writes)."""
    if targets in ([f"SVCNET-CLU-{h}"], [MARK_MASQ, f"SVCNET-CLU-{h}"]):
        return Route(Action.FORWARD, EndpointSet.CLUSTER, len(targets) == 2)
    if targets in ([f"SVCNET-LOC-{h}"], [MARK_MASQ, f"SVCNET-LOC-{h}"]):
        return Route(Action.FORWARD, EndpointSet.LOCAL, len(targets) == 2)
    for mark, route in ((MARK_REJECT, _REJECT), (MARK_DROP, _DROP)):
        if targets == ([mark] if tail else [mark, "RETURN"]):
            return route
    return None


def _side(
    rules: tuple[Rule, ...], h: str, cidrs: list[str], planned: Routes
) -> tuple[Routes, list[str]] | None:
    """(pod, node, external) routes of one dispatch chain, and the pod CIDRs it
    classifies by (None: the chain is not one svcnet writes). A class with no rules
    of its own takes the tail's route; the pod class of a family without cluster
    CIDRs is not in the rules (the planned route stands). A chain that classifies
    pods classifies by every one of the family's ``cidrs``, or is not svcnet's."""
    pods: dict[str, list[str]] = {}
    node: list[str] = []
    ext: list[str] = []
    for rule in rules:
        if rule.src is not None and not rule.src.negated:
            pods.setdefault(str(rule.src.net), []).append(rule.target)
        elif rule.src_local:
            node.append(rule.target)
        else:
            ext.append(rule.target)
    tail = _route_of(ext, h, True)
    node_route = _route_of(node, h, False) if node else tail
    pod_routes = {_route_of(targets, h, False) for targets in pods.values()}
    if tail is None or node_route is None or None in pod_routes or len(pod_routes) > 1:
        return None
    if pods and sorted(pods) != sorted(cidrs):
        return None
    if pod_routes:
        pod_route = pod_routes.pop()
    elif cidrs:
        pod_route = tail
    else:
        pod_route = planned[0]
    assert pod_route is not None
    return (pod_route, node_route, tail), list(pods)


@attrs.frozen
class _Sep:
    chain: str
    endpoint: PlanEndpoint
    sets: frozenset[str]
    sticky: bool  # its DNAT rule records the source (-m recent --set)


def _sep(chain: str, rules: tuple[Rule, ...]) -> _Sep | None:
    """An SVCNET-SEP chain as svcnet writes it (hairpin mark, then DNAT), or None."""
    if len(rules) != 2:
        return None
    hairpin, dnat = rules
    if dnat.target != "DNAT" or dnat.to_destination is None or dnat.protocol is None:
        return None
    src = hairpin.src
    if hairpin.target != MARK_MASQ or src is None or src.negated:
        return None
    if src.net.prefixlen != src.net.max_prefixlen:
        return None
    text = dnat.to_destination
    ip, _, port = text[1:].partition("]:") if text.startswith("[") else text.rpartition(":")
    if not port.isdigit():
        return None
    # the hairpin matches the endpoint's address (a text comparison first: turning
    # 100,000 addresses into text costs seconds)
    if f"-s {ip}/{src.net.max_prefixlen} " not in hairpin.text:
        try:
            if ipaddress.ip_address(ip) != src.net.network_address:
                return None
        except ValueError:
            return None
        ip = str(src.net.network_address)
    sets = frozenset(_items((dnat.comment or "").rpartition(" in ")[2]))
    sticky = dnat.recent is not None and dnat.recent[0] == "set"
    return _Sep(chain, PlanEndpoint(ip, int(port)), sets, sticky)


@attrs.frozen
class _Family:
    """One family's nat table, its SEP chains read once for every port."""

    nat: Mapping[str, tuple[Rule, ...]]
    seps: dict[str, _Sep]
    by_label: dict[str, list[_Sep]]  # by the port label of their comment

    @classmethod
    def of(cls, table: Table) -> _Family:
        seps: dict[str, _Sep] = {}
        by_label: dict[str, list[_Sep]] = {}
        for chain, rules in table.chains.items():
            sep = _sep(chain, rules) if chain.startswith(_SEP) else None
            if sep is not None:
                seps[chain] = sep
                label = (rules[1].comment or "").rpartition(" in ")[0]
                by_label.setdefault(label, []).append(sep)
        return cls(table.chains, seps, by_label)

    def members(self, h: str, label: str, which: EndpointSet) -> _Set | None:
        """A set's endpoints: from its cascade when the chain exists, else from the
        SEP chains whose comment puts them in it (None: a cascade svcnet did not
        write)."""
        chain = ("SVCNET-CLU-" if which is EndpointSet.CLUSTER else "SVCNET-LOC-") + h
        rules = self.nat.get(chain)
        if rules is None:
            eps = [
                s.endpoint
                for s in self.by_label.get(label, ())
                if which.value in s.sets and s.chain == endpoint_chain(h, s.endpoint)
            ]
            return _Set(eps, False, None)
        checks: dict[str, int | None] = {}
        picks: list[Rule] = []
        for rule in rules:
            if rule.recent is not None and rule.recent[0] == "rcheck":
                if rule.recent[1] != rule.target:
                    return None
                checks[rule.target] = rule.recent[2]
            else:
                picks.append(rule)
        out: list[PlanEndpoint] = []
        n = len(picks)
        for i, rule in enumerate(picks):
            sep = self.seps.get(rule.target)
            if sep is None or sep.chain != endpoint_chain(h, sep.endpoint):
                return None
            if (rule.probability is None) != (i == n - 1):
                return None
            if rule.probability is not None and abs(float(rule.probability) - 1 / (n - i)) > 1e-6:
                return None
            out.append(sep.endpoint)
        # session affinity: every endpoint checked with one timeout and recorded
        timeouts = set(checks.values())
        if checks and (set(checks) != {r.target for r in picks} or len(timeouts) != 1):
            return None
        sticky = {self.seps[r.target].sticky for r in picks}
        if sticky and sticky != {bool(checks)}:
            return None
        return _Set(out, True, timeouts.pop() if checks else None)


@attrs.frozen
class _Set:
    endpoints: list[PlanEndpoint]
    cascade: bool  # read from a cascade (else from the SEP chains' comments)
    affinity: int | None


def _sorted(eps: list[PlanEndpoint]) -> tuple[PlanEndpoint, ...]:
    return tuple(sorted(set(eps), key=lambda e: (e.ip, e.port)))


def _effective(route: Route, planned: Route, eps: Mapping[EndpointSet, _Set]) -> Route:
    """A planned forward to an empty set renders as a reject: the rules' reject is
    that forward when the set read back is empty."""
    if (
        route == _REJECT
        and planned.action is Action.FORWARD
        and planned.endpoints is not None
        and not eps[planned.endpoints].endpoints
    ):
        return planned
    return route


def _port(
    fam: _Family, family: IPFamily, h: str, port: _Port, cidrs: list[str]
) -> tuple[int, PortPlan, list[str]] | None:
    """(index in its service, the port's plan, the pod CIDRs its rules classify
    by; ``cidrs``: the family's cluster CIDRs as written); None when its chains
    are not what svcnet writes (a deleted or changed rule): such a port is not
    read back."""
    nat = fam.nat
    label = f"{port.ref}:{port.name}" if port.name else str(port.ref)
    svc_rules = nat.get("SVCNET-SVC-" + h)
    ext_rules = nat.get("SVCNET-EXT-" + h)
    first = svc_rules if svc_rules is not None else ext_rules
    if first is None:
        first = nat.get(LOST + h)
        if first is None or len(first) != 1 or first[0].target != "RETURN":
            return None
    meta = _fields(first[-1].comment if first else None, "port=")
    codes = meta.get("routes", "")
    if len(codes) != 6 or not set(codes) <= set(CODE_ROUTES) or not meta.get("port", "").isdigit():
        return None
    planned = tuple(CODE_ROUTES[c] for c in codes)
    cluster = fam.members(h, label, EndpointSet.CLUSTER)
    local = fam.members(h, label, EndpointSet.LOCAL)
    if cluster is None or local is None:
        return None
    eps = {EndpointSet.CLUSTER: cluster, EndpointSet.LOCAL: local}
    classified: list[str] = []
    sides: list[Routes] = []
    for rules, part in ((svc_rules, 0), (ext_rules, 3)):
        plan_side = (planned[part], planned[part + 1], planned[part + 2])
        if rules is None:
            sides.append(plan_side)
            continue
        read = _side(rules, h, cidrs, plan_side)
        if read is None:
            return None
        routes, found = read
        classified += found
        sides.append(
            (
                _effective(routes[0], plan_side[0], eps),
                _effective(routes[1], plan_side[1], eps),
                _effective(routes[2], plan_side[2], eps),
            )
        )
    cascades = [s for s in (cluster, local) if s.cascade and s.endpoints]
    if cascades:
        if len({s.affinity for s in cascades}) != 1:
            return None
        affinity = cascades[0].affinity
    else:
        affinity = int(meta["affinity"]) if meta.get("affinity", "").isdigit() else None
    fw = nat.get("SVCNET-FW-" + h)
    if fw is not None:
        if not fw or fw[-1].target != MARK_DROP or fw[-1].src is not None:
            return None
        ranges = [str(r.src.net) for r in fw[:-1] if r.src is not None and not r.src.negated]
        if len(ranges) != len(fw) - 1 or any(r.target != "SVCNET-EXT-" + h for r in fw[:-1]):
            return None
    else:
        ranges = list(_items(meta.get("ranges")))
    # sorted and unique as PortPlan.build makes them (by plain keys: attrs' ordering
    # builds tuples per comparison)
    plan = PortPlan(
        port.name,
        family,
        port.protocol,
        tuple(sorted(set(port.frontends), key=lambda f: (f.kind.value, f.ip, f.port))),
        _sorted(cluster.endpoints),
        _sorted(local.endpoints),
        *sides[0],
        *sides[1],
        source_ranges=tuple(sorted(set(ranges))),
        affinity_timeout=affinity,
    )
    return int(meta["port"]), plan, classified


def flat_services(nat: Mapping[str, tuple[Rule, ...]]) -> list[Rule]:
    """SVCNET-SERVICES with every jump to a dispatch tree chain replaced by that
    chain's rules (recursively): the flat list the trees stand for. A tree chain
    that is missing (or a loop) contributes nothing."""
    out: list[Rule] = []

    def walk(chain: str, seen: frozenset[str]) -> None:
        for rule in nat.get(chain, ()):
            if rule.target.startswith(TREE_PREFIXES):
                if rule.target not in seen:
                    walk(rule.target, seen | {rule.target})
            else:
                out.append(rule)

    walk(SERVICES, frozenset())
    return out


def _dispatch(
    nat: Mapping[str, tuple[Rule, ...]], flat: list[Rule], family: IPFamily
) -> dict[str, _Port]:
    """The ports of one family by hash, from the frontend rules (``flat``: those of
    :func:`flat_services`)."""
    ports: dict[str, _Port] = {}
    for chain in (SERVICES, NODEPORTS):
        for rule in flat if chain == SERVICES else nat.get(chain, ()):
            if rule.dport is None or rule.dst is None or not rule.target.startswith(_DISPATCH):
                continue
            label, _, written = (rule.comment or "").rpartition(" ")
            named = _ref_and_name(label)
            if named is None or rule.protocol is None:
                continue
            try:
                protocol = Protocol(rule.protocol.upper())
            except ValueError:
                continue
            h = rule.target.rsplit("-", 1)[1]
            port = ports.setdefault(h, _Port(named[0], named[1], protocol))
            kind = _kind(chain, rule.target, written)
            port.frontends.append(Frontend(kind, _host(rule.dst.net), rule.dport))
    for chain, rules in nat.items():
        if chain.startswith(LOST) and rules:
            meta = _fields(rules[-1].comment, "port=")
            named = _ref_and_name(meta.get("of", ""))
            if named is None or meta.get("proto") not in _PROTOCOLS:
                continue
            ports.setdefault(chain[len(LOST) :], _Port(*named, Protocol(meta["proto"])))
    return ports


def observed_plan(ruleset: Ruleset, node: str) -> Plan:
    """The plan ``ruleset`` (svcnet's rules, both families) carries for ``node``.

    ``node`` names the node when the rules do not (nothing installed)."""
    nats = {family: ruleset.table(family, NAT) for family in FAMILIES}
    written: dict[str, str] = {}
    for family in FAMILIES:
        for rule in nats[family].chains.get(MARK_MASQ, ()):
            written = written or _fields(rule.comment, "svcnet node=")
    node_ips = _items(written.get("ips"))
    cluster_cidrs = _items(written.get("cluster"))
    service_cidrs = _items(written.get("services"))
    cluster_ips: dict[ServiceRef, list[tuple[int, str]]] = {}
    proxied: dict[ServiceRef, bool] = {}
    ports: dict[ServiceRef, list[tuple[int, PortPlan]]] = {}
    for family in FAMILIES:
        nat = nats[family].chains
        flat = flat_services(nat)
        if SERVICES in nat:
            drops = [
                str(r.dst.net)
                for r in flat
                if r.target == MARK_DROP and r.dst is not None and r.protocol is None
            ]
            service_cidrs = _merge(service_cidrs, family, drops)
        for rule in flat:
            m = _CLUSTER_IP.fullmatch(rule.comment or "")
            if m is None or rule.dst is None or rule.target not in (MARK_REJECT, "RETURN"):
                continue
            named = _ref_and_name(m[1])
            if named is None:
                continue
            cluster_ips.setdefault(named[0], []).append((int(m[3]), _host(rule.dst.net)))
            proxied[named[0]] = rule.target == MARK_REJECT
        cidrs = [
            str(ipaddress.ip_network(c, strict=False))
            for c in cluster_cidrs
            if _net_family(c) is family
        ]
        fam = _Family.of(nats[family])
        found: list[str] = []
        for h, port in _dispatch(nat, flat, family).items():
            read = _port(fam, family, h, port, cidrs)
            if read is None:
                continue  # not svcnet's rules any more: not read back
            index, plan, classified = read
            ports.setdefault(port.ref, []).append((index, plan))
            found += [c for c in dict.fromkeys(classified) if c not in found]
        cluster_cidrs = _merge(cluster_cidrs, family, found or None)
    services = {}
    for ref in cluster_ips.keys() | ports.keys():
        services[ref] = ServicePlan(
            ref,
            tuple(ip for _i, ip in sorted(cluster_ips.get(ref, []))),
            tuple(p for _i, p in sorted(ports.get(ref, []), key=lambda ip: ip[0])),
            proxied.get(ref, True),
        )
    settings = NodeSettings(written.get("node", node), node_ips, cluster_cidrs, service_cidrs)
    return Plan(settings, services)
