"""Plan / Changes -> nft text commands (pure).

The layout (one table per family, ``ip svcnet`` and ``ip6 svcnet``; see the
README for a rendered example). The number of rules and chains does not grow
with the number of services: every service lives in a few named sets and maps.

- ``fe``: one verdict map keyed by ``daddr . l4proto . dport`` (every
  frontend). The value is the frontend's route when it is the same for every
  source kind (``drop``, ``goto do-reject``, ``goto fwd-...``), otherwise
  ``goto rt_<pod>_<node>_<external>``.
- ``rt_<pod>_<node>_<external>``: one chain per combination of routes, shared by
  every frontend with that combination; it classifies the source (pod:
  ``saddr @cluster-cidrs``, node: ``fib saddr type local``, else external) and
  goes to the route's chain. Codes: ``d`` drop, ``r`` reject, ``c<N>[m]`` /
  ``l<N>[m]`` cluster / local endpoint set of N endpoints (masquerade).
- ``fwd-<set>-<N>[-masq]``: one chain per endpoint set kind (cluster/local),
  endpoint count N and masquerade flag, shared by every service; one rule per
  protocol: ``meta l4proto <proto> [mark |= 0x4000] dnat to daddr . l4proto .
  dport . numgen random mod N map @eps-<set>-<proto>``.
- ``eps-<set>-<proto>`` (set cluster/local, proto tcp/udp/sctp): ``daddr .
  l4proto . dport . bucket -> addr . <proto> dport``. The data type names the
  protocol (``th dport`` data cannot be used in 1.0.6), which makes nft add an
  implicit ``meta l4proto <proto>`` to the rule: hence one map per protocol,
  each behind an explicit protocol match.
- ``fw-frontends`` / ``fw-allow``: LoadBalancer source ranges, checked first.
- ``cluster-ips`` (reject), ``foreign-ips`` (pass), ``service-cidrs`` (drop).
- ``node-ips``: the node's addresses, used by no rule (the kernel knows its own
  addresses: ``fib saddr type local``); kept for :mod:`.observed`.
- ``hairpin``: a dynamic set of ``saddr . saddr`` pairs, filled by the packets
  themselves: postrouting adds the DNATed packet's ``saddr . saddr`` and then
  masquerades it if ``saddr . daddr`` is in the set, i.e. iff ``saddr == daddr``
  (every element is a pair of equal addresses). nftables cannot compare two packet
  fields directly; this costs no element per endpoint.
- Session affinity (the one per-service construct): per port and endpoint set
  a chain ``aff.<port>.<set>[.masq]`` that looks the client up in one dynamic
  timeout set per endpoint (``aff.<port>/<endpoint>_<timeout>``) and otherwise
  picks an endpoint with an anonymous numgen vmap; per endpoint a chain that
  refreshes the client's entry and DNATs. Its route chains are
  ``aff.<port>.rt_<codes>`` (codes without N).

Annotations for :mod:`.observed` (the read-back as a plan), which take no part in
what a packet meets: element comments carry what the rules do not say — on a
``fe`` element the service, the port's index and name, the frontend kind, the
port's six route codes and its affinity timeout (:func:`fe_comment`); on
``cluster-ips``/``foreign-ips`` elements the service and the address's index; on
``node-ips``, ``cluster-cidrs``, ``service-cidrs`` and ``fw-allow`` elements the
plan's own entries that a (collapsed) element stands for. The endpoint maps hold
both endpoint sets of every frontend, also a set no route of the frontend uses
(and those of affinity ports, whose packets take the affinity chains). A comment
longer than nft's limit (:data:`COMMENT_MAX`) is left out.

Everything is produced as nft text directly (string joins; one ``add
element`` command per set with all its elements): libnftables 1.0.6's JSON
input cannot express the central DNAT rule (see the README).
"""

from __future__ import annotations

import ipaddress
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping

from svcnet.model import IPFamily
from svcnet.plan import (
    Action,
    Changes,
    EndpointSet,
    FrontendKind,
    NodeSettings,
    Plan,
    PlanEndpoint,
    PortPlan,
    Route,
    ServicePlan,
)
from svcnet.probe import SourceKind

TABLE = "svcnet"
FAMILIES: dict[IPFamily, str] = {IPFamily.IPv4: "ip", IPFamily.IPv6: "ip6"}
MASQ_MARK = 0x4000
FE_MAP = "fe"
PROTOCOLS = ("tcp", "udp", "sctp")

# (nft family, set name) -> {element key text: value text (None for plain sets)}
Elements = defaultdict[tuple[str, str], dict[str, str | None]]
# refcounted shared objects: (nft family, "chain", chain name)
Refs = Counter[tuple[str, str, str]]
# affinity objects of one service: (nft family, "chain" | "set", name) -> commands
AffObjects = dict[tuple[str, str, str], list[str]]

_KINDS = (SourceKind.POD, SourceKind.NODE, SourceKind.EXTERNAL)

COMMENT_MAX = 128  # nft's limit on a comment (NFTNL_UDATA_COMMENT_MAXLEN)
KIND_CODES: dict[FrontendKind, str] = {
    FrontendKind.CLUSTER_IP: "C",
    FrontendKind.EXTERNAL_IP: "E",
    FrontendKind.LOAD_BALANCER: "L",
    FrontendKind.NODE_PORT: "N",
}


def commented(key: str, comment: str) -> str:
    """An element's text with ``comment`` (left out when longer than nft allows)."""
    return f'{key} comment "{comment}"' if len(comment) <= COMMENT_MAX else key


def bare(key: str) -> str:
    """An element's text without its comment (what ``delete element`` names)."""
    return key.split(' comment "', 1)[0]


def plan_route_code(route: Route) -> str:
    """``d``, ``r``, ``c``, ``cm``, ``l`` or ``lm``: a route as written in a comment
    (a forward to an empty set keeps its set, unlike the rules' codes)."""
    if route.action is Action.DROP:
        return "d"
    if route.action is Action.REJECT or route.endpoints is None:
        return "r"
    return f"{route.endpoints.value[0]}{'m' if route.masquerade else ''}"


def route_codes(port: PortPlan) -> str:
    """The six routes' :func:`plan_route_code`, in :attr:`PortPlan.routes` order."""
    return "".join(plan_route_code(r) for r in port.routes)


def fe_comment(
    svc: ServicePlan, index: int, port: PortPlan, kind: FrontendKind, codes: str | None = None
) -> str:
    """``<ns>/<name> <port index> <port name or -> <kind> <route codes> <affinity or ->``
    (``codes``: :func:`route_codes` of the port, when known)."""
    codes = route_codes(port) if codes is None else codes
    timeout = "-" if port.affinity_timeout is None else str(port.affinity_timeout)
    return f"{svc.ref} {index} {port.name or '-'} {KIND_CODES[kind]} {codes} {timeout}"


def _covered(entries: Iterable[tuple[str, str]], cidr: str) -> str:
    """The comment of collapsed element ``cidr``: the entries (``label``, cidr) inside it."""
    net = ipaddress.ip_network(cidr)
    inside = []
    for label, c in entries:
        n = ipaddress.ip_network(c, strict=False)
        if n.version == net.version and n.subnet_of(net):  # type: ignore[arg-type]
            inside.append(f"{label}{c}")
    return " ".join(inside)


def _elements() -> Elements:
    return defaultdict(dict)


def _fk(fam: str) -> str:
    return f"{fam} daddr . meta l4proto . th dport"


def _reject(fam: str) -> str:
    return f"reject with {'icmp' if fam == 'ip' else 'icmpv6'} port-unreachable"


_MARK_MASQ = f"meta mark set meta mark | {MASQ_MARK}"


# -- names -------------------------------------------------------------------
def eps_map(which: str, proto: str) -> str:
    """The endpoint map of endpoint set ``which`` (cluster/local) for ``proto``."""
    return f"eps-{which}-{proto}"


def fwd_chain(which: EndpointSet, n: int, masq: bool) -> str:
    return f"fwd-{which.value}-{n}{'-masq' if masq else ''}"


def port_id(svc: ServicePlan, port: PortPlan) -> str:
    return (
        f"aff.{svc.ref.namespace}/{svc.ref.name}/{port.name or '-'}/{port.protocol.value.lower()}"
    )


def aff_route_chain(pid: str, which: EndpointSet, masq: bool) -> str:
    return f"{pid}.{which.value}{'.masq' if masq else ''}"


def aff_ep_name(pid: str, ep: PlanEndpoint, timeout: int) -> str:
    return f"{pid}/{ep.ip.replace(':', '_')}_{ep.port}_{timeout}"


_EPS_MAPS = {(x.value, p): eps_map(x.value, p) for x in EndpointSet for p in PROTOCOLS}


# -- the fixed skeleton -------------------------------------------------------
def skeleton(fam: str) -> list[str]:
    """Commands creating the table with its fixed sets, maps and chains."""
    at = "ipv4_addr" if fam == "ip" else "ipv6_addr"
    fkey = f"{at} . inet_proto . inet_service"
    w = f"{fam} {TABLE}"
    fk = _fk(fam)
    return [
        f"add table {w}",
        f"add set {w} cluster-cidrs {{ type {at}; flags interval; }}",
        f"add set {w} service-cidrs {{ type {at}; flags interval; }}",
        f"add set {w} cluster-ips {{ type {at}; }}",
        f"add set {w} foreign-ips {{ type {at}; }}",
        f"add set {w} node-ips {{ type {at}; }}",
        f"add set {w} fw-frontends {{ type {fkey}; }}",
        f"add set {w} fw-allow {{ type {fkey} . {at}; flags interval; }}",
        f"add set {w} hairpin {{ type {at} . {at}; flags dynamic,timeout; timeout 1s; }}",
        f"add map {w} {FE_MAP} {{ type {fkey} : verdict; }}",
        # data "th dport" breaks libnftables 1.0.6 when the map is listed back, and
        # data "<proto> dport" makes nft add an implicit "meta l4proto <proto>" to the
        # rule using the map: hence one map per protocol, used behind an explicit match
        *(
            f"add map {w} {eps_map(x.value, proto)} {{ typeof {fk} . numgen random mod 1"
            f" : {fam} daddr . {proto} dport; }}"
            for x in EndpointSet
            for proto in PROTOCOLS
        ),
        f"add chain {w} do-reject",
        f"add chain {w} services",
        *(
            f"add chain {w} nat-{hook} {{ type nat hook {hook} priority {prio}; policy accept; }}"
            for hook, prio in (("prerouting", -100), ("output", -100), ("postrouting", 100))
        ),
        f"add rule {w} do-reject {_reject(fam)}",
        f"add rule {w} services {fk} @fw-frontends {fk} . {fam} saddr != @fw-allow drop",
        f"add rule {w} services {fk} vmap @{FE_MAP}",
        f"add rule {w} services {fam} daddr @cluster-ips {_reject(fam)}",
        f"add rule {w} services {fam} daddr @foreign-ips return",
        f"add rule {w} services {fam} daddr @service-cidrs drop",
        f"add rule {w} nat-prerouting jump services",
        f"add rule {w} nat-output jump services",
        f"add rule {w} nat-postrouting meta mark & {MASQ_MARK} == {MASQ_MARK} masquerade",
        f"add rule {w} nat-postrouting ct status dnat update @hairpin"
        f" {{ {fam} saddr . {fam} saddr }}",
        f"add rule {w} nat-postrouting ct status dnat {fam} saddr . {fam} daddr @hairpin"
        " masquerade",
    ]


def shared_chain_cmds(fam: str, name: str) -> list[str]:
    """Create the shared chain ``name`` (``fwd-*`` or a route chain) with its rules."""
    w = f"{fam} {TABLE}"
    out = [f"add chain {w} {name}"]
    if name.startswith("fwd-"):
        _, which, n, *masq = name.split("-")
        mark = f"{_MARK_MASQ} " if masq else ""
        out += [
            f"add rule {w} {name} meta l4proto {proto} {mark}dnat {fam} to {_fk(fam)}"
            f" . numgen random mod {n} map @{eps_map(which, proto)}"
            for proto in PROTOCOLS
        ]
        return out
    pid, _, codes = name.rpartition("rt_")
    pod, node, ext = (_code_verdict(pid[:-1] if pid else "", c) for c in codes.split("_"))
    out.append(f"add rule {w} {name} {fam} saddr @cluster-cidrs {pod}")
    if node != ext:
        out.append(f"add rule {w} {name} fib saddr type local {node}")
    out.append(f"add rule {w} {name} {ext}")
    return out


# -- routes ----------------------------------------------------------------------
def _route_code(port: PortPlan, route: Route, affinity: bool) -> str:
    """``d``, ``r`` or ``c|l[<N>][m]`` (N omitted for affinity ports)."""
    if route.action is Action.DROP:
        return "d"
    if route.action is Action.REJECT or route.endpoints is None:
        return "r"
    n = len(port.endpoints(route.endpoints))
    if n == 0:
        return "r"
    return f"{route.endpoints.value[0]}{'' if affinity else n}{'m' if route.masquerade else ''}"


def _code_verdict(pid: str, code: str) -> str:
    if code == "d":
        return "drop"
    if code == "r":
        return "goto do-reject"
    which = EndpointSet.CLUSTER if code[0] == "c" else EndpointSet.LOCAL
    masq = code.endswith("m")
    if pid:
        return f"goto {aff_route_chain(pid, which, masq)}"
    return f"goto {fwd_chain(which, int(code[1:].rstrip('m')), masq)}"


def _collapse(cidrs: Iterable[str]) -> list[str]:
    v4: list[ipaddress.IPv4Network] = []
    v6: list[ipaddress.IPv6Network] = []
    for c in cidrs:
        net = ipaddress.ip_network(c, strict=False)
        if isinstance(net, ipaddress.IPv4Network):
            v4.append(net)
        else:
            v6.append(net)
    return [str(n) for n in ipaddress.collapse_addresses(v4)] + [
        str(n) for n in ipaddress.collapse_addresses(v6)
    ]


# (fe verdict per external flag, shared chains used, endpoint sets used per external flag,
# the route codes of the fe comments)
_Shape = tuple[dict[bool, str], tuple[str, ...], dict[bool, frozenset[EndpointSet]], str]
_SHAPES: dict[tuple[object, ...], _Shape] = {}


def _shape(port: PortPlan, pid: str, externals: frozenset[bool]) -> _Shape:
    """What a port's routes make of its frontends; memoised: it depends only on the
    routes, the endpoint counts and the frontend kinds (affinity: also the port)."""
    memo = (
        *port.routes,
        len(port.cluster_endpoints),
        len(port.local_endpoints),
        externals,
        pid,
    )
    hit = _SHAPES.get(memo)
    if hit is not None:
        return hit
    affinity = bool(pid)
    chains: list[str] = []
    verdicts: dict[bool, str] = {}
    used: dict[bool, frozenset[EndpointSet]] = {}
    for external in externals:
        codes = []
        sets: set[EndpointSet] = set()
        for kind in _KINDS:
            route = port.route(
                FrontendKind.NODE_PORT if external else FrontendKind.CLUSTER_IP, kind
            )
            code = _route_code(port, route, affinity)
            codes.append(code)
            if code[0] in "cl" and route.endpoints is not None:
                sets.add(route.endpoints)
                if not affinity:
                    chains.append(_code_verdict("", code)[5:])
        used[external] = frozenset(sets)
        if codes[0] == codes[1] == codes[2]:
            verdicts[external] = _code_verdict(pid, codes[0])
        else:
            rt = f"{pid}.rt_{'_'.join(codes)}" if pid else f"rt_{'_'.join(codes)}"
            chains.append(rt)
            verdicts[external] = f"goto {rt}"
    shape = (verdicts, tuple(chains), used, route_codes(port))
    if not affinity:  # affinity shapes are per port: not worth keeping
        if len(_SHAPES) > 4096:
            _SHAPES.clear()
        _SHAPES[memo] = shape
    return shape


def add_service(svc: ServicePlan, out: Elements, refs: Refs) -> None:
    """Add every set/map element of ``svc`` to ``out`` and its shared objects to ``refs``."""
    for n, ip in enumerate(svc.cluster_ips):
        where = ("ip6" if ":" in ip else "ip", "cluster-ips" if svc.proxied else "foreign-ips")
        out[where][commented(ip, f"{svc.ref} {n}")] = None
    if not svc.proxied:
        return
    for index, port in enumerate(svc.ports):
        fam = "ip" if port.family is IPFamily.IPv4 else "ip6"
        proto = port.protocol.value.lower()
        pid = port_id(svc, port) if port.affinity_timeout is not None else ""
        verdicts, chains, _used, codes = _shape(
            port, pid, frozenset(fe.kind.external for fe in port.frontends)
        )
        for chain in chains:
            refs[(fam, "chain", chain)] += 1
        fe_map = out[(fam, FE_MAP)]
        keys: list[str] = []
        for fe in port.frontends:
            key = f"{fe.ip} . {proto} . {fe.port}"
            keys.append(key)
            fe_map[commented(key, fe_comment(svc, index, port, fe.kind, codes))] = verdicts[
                fe.kind.external
            ]
            if fe.kind is FrontendKind.LOAD_BALANCER and port.source_ranges:
                out[(fam, "fw-frontends")][key] = None
                allow = out[(fam, "fw-allow")]
                ranges = [("", r) for r in port.source_ranges]
                for cidr in _collapse(port.source_ranges):
                    allow[commented(f"{key} . {cidr}", _covered(ranges, cidr))] = None
        # both endpoint sets for every frontend: the rules use those their routes
        # name (affinity ports: none, their chains name the endpoints); the others
        # are there for observed.py
        for which, eps in (("cluster", port.cluster_endpoints), ("local", port.local_endpoints)):
            if not eps:
                continue
            emap = out[(fam, _EPS_MAPS[which, proto])]
            for i, ep in enumerate(eps):
                value = f"{ep.ip} . {ep.port}"
                for key in keys:
                    emap[f"{key} . {i}"] = value


def affinity_objects(svc: ServicePlan) -> AffObjects:
    """Per-port affinity chains and sets: (fam, "chain"|"set", name) -> commands."""
    out: AffObjects = {}
    if not svc.proxied:
        return out
    for port in svc.ports:
        timeout = port.affinity_timeout
        if timeout is None:
            continue
        fam = FAMILIES[port.family]
        w = f"{fam} {TABLE}"
        pid = port_id(svc, port)
        proto = port.protocol.value.lower()
        eps_seen: dict[PlanEndpoint, str] = {}
        kinds = {fe.kind.external for fe in port.frontends}
        for external in sorted(kinds):
            for kind in _KINDS:
                route = port.route(
                    FrontendKind.NODE_PORT if external else FrontendKind.CLUSTER_IP, kind
                )
                if route.action is not Action.FORWARD or route.endpoints is None:
                    continue
                eps = port.endpoints(route.endpoints)
                chain = aff_route_chain(pid, route.endpoints, route.masquerade)
                if not eps or (fam, "chain", chain) in out:
                    continue
                rules = [f"add rule {w} {chain} {_MARK_MASQ}"] if route.masquerade else []
                for ep in eps:
                    name = aff_ep_name(pid, ep, timeout)
                    eps_seen[ep] = name
                    rules.append(f"add rule {w} {chain} {fam} saddr @{name} goto {name}")
                pick = ", ".join(
                    f"{i} : goto {aff_ep_name(pid, ep, timeout)}" for i, ep in enumerate(eps)
                )
                rules.append(f"add rule {w} {chain} numgen random mod {len(eps)} vmap {{ {pick} }}")
                out[(fam, "chain", chain)] = rules
        for ep, name in eps_seen.items():
            at = "ipv4_addr" if fam == "ip" else "ipv6_addr"
            out[(fam, "set", name)] = [
                f"add set {w} {name} {{ type {at}; flags dynamic,timeout; timeout {timeout}s; }}"
            ]
            addr = f"[{ep.ip}]" if ":" in ep.ip else ep.ip
            out[(fam, "chain", name)] = [
                f"add rule {w} {name} update @{name} {{ {fam} saddr }} "
                f"meta l4proto {proto} dnat {fam} to {addr}:{ep.port}"
            ]
    return out


def settings_elements(settings: NodeSettings, out: Elements) -> None:
    """The settings' elements; each comment says which of the plan's entries (by
    index) the element stands for."""
    for n, ip in enumerate(settings.node_ips):
        out[("ip6" if ":" in ip else "ip", "node-ips")][commented(ip, str(n))] = None
    for setname, cidrs in (
        ("cluster-cidrs", settings.cluster_cidrs),
        ("service-cidrs", settings.service_cidrs),
    ):
        entries = [(f"{n}:", c) for n, c in enumerate(cidrs)]
        for cidr in _collapse(cidrs):
            fam = "ip6" if ":" in cidr else "ip"
            out[(fam, setname)][commented(cidr, _covered(entries, cidr))] = None


def element_cmd(op: str, fam: str, name: str, items: Mapping[str, str | None]) -> str:
    if op == "delete":
        body = ", ".join(bare(k) for k in items)
    else:
        body = ", ".join(k if v is None else f"{k} : {v}" for k, v in items.items())
    return f"{op} element {fam} {TABLE} {name} {{ {body} }}"


def _order(name: str) -> int:
    """Creation order of shared chains: fwd chains before the route chains using them."""
    return 0 if name.startswith("fwd-") else 1


# -- whole transactions ---------------------------------------------------------------
def render_full(plan: Plan) -> tuple[str, Refs]:
    """One transaction replacing both tables with ``plan``; and the refcounts."""
    cmds: list[str] = []
    for fam in FAMILIES.values():
        cmds += [f"add table {fam} {TABLE}", f"delete table {fam} {TABLE}"]
        cmds += skeleton(fam)
    refs: Refs = Counter()
    elements = _elements()
    settings_elements(plan.settings, elements)
    aff_defs: list[str] = []
    aff_rules: list[str] = []
    for svc in plan.services.values():
        add_service(svc, elements, refs)
        if any(p.affinity_timeout is not None for p in svc.ports):
            for (fam, kind, name), body in affinity_objects(svc).items():
                if kind == "set":
                    aff_defs += body
                else:
                    aff_defs.append(f"add chain {fam} {TABLE} {name}")
                    aff_rules += body
    cmds += aff_defs + aff_rules
    for fam, _, name in sorted(
        (k for k in refs if k[1] == "chain"), key=lambda k: (_order(k[2]), k)
    ):
        cmds += shared_chain_cmds(fam, name)
    cmds += [element_cmd("add", f, n, items) for (f, n), items in elements.items() if items]
    return "\n".join(cmds) + "\n", refs


def render_changes(
    previous: Plan, changes: Changes, refs: Mapping[tuple[str, str, str], int]
) -> tuple[str, Refs]:
    """One transaction moving from ``previous`` by ``changes``; and the refcount delta."""
    old_elems = _elements()
    new_elems = _elements()
    old_refs: Refs = Counter()
    new_refs: Refs = Counter()
    old_aff: AffObjects = {}
    new_aff: AffObjects = {}
    olds = [previous.services[r] for r in changes.removed if r in previous.services]
    olds += [previous.services[s.ref] for s in changes.replaced if s.ref in previous.services]
    for svc in olds:
        add_service(svc, old_elems, old_refs)
        old_aff.update(affinity_objects(svc))
    for svc in (*changes.added, *changes.replaced):
        add_service(svc, new_elems, new_refs)
        new_aff.update(affinity_objects(svc))
    delta: Refs = Counter(new_refs)
    delta.subtract(old_refs)
    born: list[tuple[str, str, str]] = []
    died: list[tuple[str, str, str]] = []
    for key, d in delta.items():
        before = refs.get(key, 0)
        if before <= 0 < before + d:
            born.append(key)
        elif before + d <= 0 < before:
            died.append(key)
    w = TABLE
    head: list[str] = []
    if changes.settings_changed:
        for fam in FAMILIES.values():
            head += [
                f"flush set {fam} {w} {name}"
                for name in ("node-ips", "cluster-cidrs", "service-cidrs")
            ]
        settings_elements(changes.settings, new_elems)
    # affinity objects: create new, flush and refill kept chains, delete gone ones
    aff_rules: list[str] = []
    for key, body in new_aff.items():
        fam, kind, name = key
        if kind == "set":
            if key not in old_aff:
                head += body
            continue
        head.append(f"{'flush' if key in old_aff else 'add'} chain {fam} {w} {name}")
        aff_rules += body
    gone = [k for k in old_aff if k not in new_aff]
    head += [f"flush chain {f} {w} {n}" for f, k, n in gone if k == "chain"]
    shared = sorted((k for k in born if k[1] == "chain"), key=lambda k: (_order(k[2]), k))
    chains = [c for f, _, n in shared for c in shared_chain_cmds(f, n)]
    elems: list[str] = []
    for k in old_elems.keys() | new_elems.keys():
        o = old_elems.get(k, {})
        n = new_elems.get(k, {})
        gone_items = {x: v for x, v in o.items() if x not in n or n[x] != v}
        new_items = {x: v for x, v in n.items() if x not in o or o[x] != v}
        if gone_items:
            elems.insert(0, element_cmd("delete", k[0], k[1], gone_items))
        if new_items:
            elems.append(element_cmd("add", k[0], k[1], new_items))
    tail = [
        f"delete chain {f} {w} {n}"
        for f, k, n in sorted(died, key=lambda k: -_order(k[2]))
        if k == "chain"
    ]
    tail += [f"delete chain {f} {w} {n}" for f, k, n in gone if k == "chain"]
    tail += [f"delete set {f} {w} {n}" for f, k, n in gone if k == "set"]
    cmds = head + aff_rules + chains + elems + tail
    return ("\n".join(cmds) + "\n" if cmds else ""), delta


def full_refs(plan: Plan) -> Refs:
    refs: Refs = Counter()
    scratch = _elements()
    for svc in plan.services.values():
        add_service(svc, scratch, refs)
    return refs
