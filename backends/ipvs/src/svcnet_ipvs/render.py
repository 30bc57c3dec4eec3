"""Plan -> what the IPVS data plane holds (pure): virtual servers, real servers, the
dummy interface's addresses and the companion nftables table.

- One **firewall-mark virtual server** per service port and endpoint set
  (cluster / local) that some route of the port forwards to: IPVS persistence is per
  virtual server, so every frontend of the port (ClusterIP, NodePort, external and
  LoadBalancer IPs) shares the client's affinity. Scheduler ``rr``, NAT forwarding
  (``fwd_method`` masq), persistence = the port's affinity timeout.
- Its real servers: the endpoint set, weight 1. (The backend keeps real servers that
  leave the set with weight 0 until the next full sync: graceful termination; the
  interpreter treats weight 0 as unused.)
- The companion table ``svcnet-ipvs`` (``ip`` and ``ip6``) decides everything IPVS
  cannot: source ranges, reject, drop, the ``Local`` policies' drop (never a fall-back
  to cluster endpoints), masquerade and hairpin. It has the nftables backend's
  dispatch (a frontend verdict map, route chains classifying the source), but a
  forward sets the packet's mark to the virtual server's firewall mark (a map from
  the frontend) and the connection's mark to :data:`CT_SVC` (plus :data:`CT_MASQ`
  to masquerade) instead of DNATing; IPVS (LOCAL_IN / LOCAL_OUT) then picks the
  real server, and ``nat-postrouting`` masquerades by the connection's mark.
- The dummy interface :data:`DUMMY` holds every frontend address (IPVS sees only
  packets addressed to the node).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

import attrs
from svcnet_nftables import render as nft_render
from svcnet_nftables.render import (
    _collapse,
    _covered,
    _fk,
    commented,
    fe_comment,
    settings_elements,
)

from svcnet.model import IPFamily, Protocol
from svcnet.plan import Action, EndpointSet, FrontendKind, Plan, PortPlan, ServicePlan, ServiceRef
from svcnet.probe import SourceKind

TABLE = "svcnet-ipvs"
FAMILIES: dict[IPFamily, str] = {IPFamily.IPv4: "ip", IPFamily.IPv6: "ip6"}
DUMMY = "svcnet-ipvs0"
# svcnet's firewall marks: virtual servers with a mark outside this range are not ours
MARK_MIN = 0x0100_0000
MARK_MAX = 0x01FF_FFFF
CT_SVC = 0x1000_0000  # connection mark: forwarded through a svcnet virtual server
CT_MASQ = 0x2000_0000  # ... and to be masqueraded
FE_MAP = "fe"
SCHEDULER = "rr"

_KINDS = (SourceKind.POD, SourceKind.NODE, SourceKind.EXTERNAL)

# (service, port name, family, protocol, endpoint set): one virtual server
PortKey = tuple[ServiceRef, str, IPFamily, Protocol, EndpointSet]
Elements = defaultdict[tuple[str, str], dict[str, str | None]]


@attrs.frozen(order=True)
class RealServer:
    ip: str
    port: int
    weight: int = 1


@attrs.frozen
class VirtualServer:
    """A firewall-mark virtual server and its real servers (sorted)."""

    family: IPFamily
    fwmark: int
    protocol: Protocol
    timeout: int | None  # persistence (session affinity); None = not persistent
    dests: tuple[RealServer, ...] = ()
    scheduler: str = SCHEDULER


class Marks:
    """Firewall marks of the virtual servers, kept stable across syncs (a port keeps
    its mark, and its virtual server its persistence state, while it exists)."""

    def __init__(self) -> None:
        self._by_key: dict[PortKey, int] = {}
        self._free: list[int] = []
        self._next = MARK_MIN

    def get(self, key: PortKey) -> int:
        mark = self._by_key.get(key)
        if mark is None:
            if self._free:
                mark = self._free.pop()
            else:
                if self._next > MARK_MAX:
                    raise ValueError("svcnet's firewall mark range is exhausted")
                mark = self._next
                self._next += 1
            self._by_key[key] = mark
        return mark

    def keep_only(self, keys: Iterable[PortKey]) -> None:
        """Free the marks of every key not in ``keys``."""
        wanted = set(keys)
        for key in [k for k in self._by_key if k not in wanted]:
            self._free.append(self._by_key.pop(key))


@attrs.frozen
class Desired:
    """What a plan asks of the kernel."""

    servers: Mapping[tuple[IPFamily, int], VirtualServer]
    addresses: frozenset[str]  # on the dummy interface
    nft: str  # one transaction replacing the companion tables


def port_key(svc: ServicePlan, port: PortPlan, which: EndpointSet) -> PortKey:
    return (svc.ref, port.name, port.family, port.protocol, which)


def used_sets(port: PortPlan) -> list[EndpointSet]:
    """The endpoint sets some route of ``port``'s frontends forwards to (non-empty)."""
    kinds = {fe.kind.external for fe in port.frontends}
    out: list[EndpointSet] = []
    for external in sorted(kinds):
        for kind in _KINDS:
            route = port.route(
                FrontendKind.NODE_PORT if external else FrontendKind.CLUSTER_IP, kind
            )
            which = route.endpoints
            if (
                route.action is Action.FORWARD
                and which is not None
                and port.endpoints(which)
                and which not in out
            ):
                out.append(which)
    return out


def virtual_servers(plan: Plan, marks: Marks) -> dict[tuple[IPFamily, int], VirtualServer]:
    """The virtual servers of ``plan`` (allocating marks in ``marks``)."""
    out: dict[tuple[IPFamily, int], VirtualServer] = {}
    for svc in plan.services.values():
        if not svc.proxied:
            continue
        for port in svc.ports:
            for which in used_sets(port):
                mark = marks.get(port_key(svc, port, which))
                dests = tuple(sorted({RealServer(e.ip, e.port) for e in port.endpoints(which)}))
                out[(port.family, mark)] = VirtualServer(
                    port.family, mark, port.protocol, port.affinity_timeout, dests
                )
    return out


def dummy_addresses(plan: Plan) -> frozenset[str]:
    """Every proxied frontend address, the node's own (NodePort) included: IPVS sees
    only packets addressed to the node, and a second copy of an address another
    interface holds is harmless (the kernel keeps its local route while either has it)."""
    out: set[str] = set()
    for svc in plan.services.values():
        if not svc.proxied:
            continue
        for port in svc.ports:
            out.update(fe.ip for fe in port.frontends)
    return frozenset(out)


# -- the companion table ---------------------------------------------------------------
def _route_code(port: PortPlan, external: bool, kind: SourceKind) -> str:
    """``d``, ``r``, ``c``, ``cm``, ``l`` or ``lm`` (a forward to an empty set: ``r``)."""
    route = port.route(FrontendKind.NODE_PORT if external else FrontendKind.CLUSTER_IP, kind)
    if route.action is Action.DROP:
        return "d"
    if route.action is Action.REJECT or route.endpoints is None:
        return "r"
    if not port.endpoints(route.endpoints):
        return "r"
    return f"{route.endpoints.value[0]}{'m' if route.masquerade else ''}"


def _verdict(code: str) -> str:
    if code == "d":
        return "drop"
    if code == "r":
        return "goto do-reject"
    which = "cluster" if code[0] == "c" else "local"
    return f"goto fwd-{which}{'-masq' if code.endswith('m') else ''}"


def skeleton(fam: str) -> list[str]:
    """The table with its sets, maps and fixed chains: the nftables backend's skeleton
    (sets, ``services``, ``do-reject``, the nat base chains) in table :data:`TABLE`,
    without its endpoint maps and postrouting rules; plus the mark maps, the
    ``fwd-*`` chains and postrouting by the connection's mark."""
    theirs = f"{fam} {nft_render.TABLE}"
    w = f"{fam} {TABLE}"
    at = "ipv4_addr" if fam == "ip" else "ipv6_addr"
    fkey = f"{at} . inet_proto . inet_service"
    out = [
        f"{cmd[: cmd.index(theirs)]}{w}{cmd[cmd.index(theirs) + len(theirs) :]}"
        for cmd in nft_render.skeleton(fam)
        if " eps-" not in cmd and not cmd.startswith(f"add rule {theirs} nat-postrouting")
    ]
    out += [f"add map {w} marks-{x.value} {{ type {fkey} : mark; }}" for x in EndpointSet]
    out += [
        f"add rule {w} nat-postrouting ct mark & {CT_MASQ:#x} == {CT_MASQ:#x} masquerade",
        f"add rule {w} nat-postrouting ct mark & {CT_SVC:#x} == {CT_SVC:#x}"
        f" update @hairpin {{ {fam} saddr . {fam} saddr }}",
        f"add rule {w} nat-postrouting ct mark & {CT_SVC:#x} == {CT_SVC:#x}"
        f" {fam} saddr . {fam} daddr @hairpin masquerade",
    ]
    fk = _fk(fam)
    for x in EndpointSet:
        for masq in (False, True):
            name = f"fwd-{x.value}{'-masq' if masq else ''}"
            ct = CT_SVC | (CT_MASQ if masq else 0)
            out += [
                f"add chain {w} {name}",
                f"add rule {w} {name} meta mark set {fk} map @marks-{x.value} ct mark set {ct:#x}",
            ]
    return out


def route_chain(fam: str, codes: tuple[str, str, str]) -> list[str]:
    """``rt_<pod>_<node>_<external>``: classify the source, go to its route."""
    w = f"{fam} {TABLE}"
    name = "rt_" + "_".join(codes)
    pod, node, ext = (_verdict(c) for c in codes)
    out = [f"add chain {w} {name}", f"add rule {w} {name} {fam} saddr @cluster-cidrs {pod}"]
    if node != ext:
        out.append(f"add rule {w} {name} fib saddr type local {node}")
    out.append(f"add rule {w} {name} {ext}")
    return out


def add_service(
    svc: ServicePlan, marks: Marks, out: Elements, chains: set[tuple[str, tuple[str, str, str]]]
) -> None:
    """``svc``'s elements (into ``out``) and the route chains it uses (into ``chains``)."""
    for n, ip in enumerate(svc.cluster_ips):
        where = ("ip6" if ":" in ip else "ip", "cluster-ips" if svc.proxied else "foreign-ips")
        out[where][commented(ip, f"{svc.ref} {n}")] = None
    if not svc.proxied:
        return
    for index, port in enumerate(svc.ports):
        fam = FAMILIES[port.family]
        proto = port.protocol.value.lower()
        verdicts: dict[bool, str] = {}
        for external in {fe.kind.external for fe in port.frontends}:
            codes = (
                _route_code(port, external, SourceKind.POD),
                _route_code(port, external, SourceKind.NODE),
                _route_code(port, external, SourceKind.EXTERNAL),
            )
            if codes[0] == codes[1] == codes[2]:
                verdicts[external] = _verdict(codes[0])
            else:
                chains.add((fam, codes))
                verdicts[external] = "goto rt_" + "_".join(codes)
        used = {which: marks.get(port_key(svc, port, which)) for which in used_sets(port)}
        for fe in port.frontends:
            key = f"{fe.ip} . {proto} . {fe.port}"
            out[(fam, FE_MAP)][commented(key, fe_comment(svc, index, port, fe.kind))] = verdicts[
                fe.kind.external
            ]
            for which, mark in used.items():
                out[(fam, f"marks-{which.value}")][key] = f"{mark:#x}"
            if fe.kind is FrontendKind.LOAD_BALANCER and port.source_ranges:
                out[(fam, "fw-frontends")][key] = None
                ranges = [("", r) for r in port.source_ranges]
                for cidr in _collapse(port.source_ranges):
                    out[(fam, "fw-allow")][commented(f"{key} . {cidr}", _covered(ranges, cidr))] = (
                        None
                    )


def companion(plan: Plan, marks: Marks) -> str:
    """One nft transaction replacing both companion tables with ``plan``'s."""
    cmds: list[str] = []
    for fam in FAMILIES.values():
        cmds += [f"add table {fam} {TABLE}", f"delete table {fam} {TABLE}", *skeleton(fam)]
    elements: Elements = defaultdict(dict)
    settings_elements(plan.settings, elements)
    chains: set[tuple[str, tuple[str, str, str]]] = set()
    for svc in plan.services.values():
        add_service(svc, marks, elements, chains)
    for fam, codes in sorted(chains):
        cmds += route_chain(fam, codes)
    for (fam, name), items in elements.items():
        if items:
            body = ", ".join(k if v is None else f"{k} : {v}" for k, v in items.items())
            cmds.append(f"add element {fam} {TABLE} {name} {{ {body} }}")
    return "\n".join(cmds) + "\n"


def cleanup_nft() -> str:
    """Delete both companion tables (whether they exist or not)."""
    return "".join(
        f"add table {fam} {TABLE}\ndelete table {fam} {TABLE}\n" for fam in FAMILIES.values()
    )


def desired(plan: Plan, marks: Marks) -> Desired:
    """Everything ``plan`` asks for; frees the marks of ports no longer in it."""
    servers = virtual_servers(plan, marks)
    keys = [
        port_key(svc, port, which)
        for svc in plan.services.values()
        if svc.proxied
        for port in svc.ports
        for which in used_sets(port)
    ]
    marks.keep_only(keys)
    return Desired(servers, dummy_addresses(plan), companion(plan, marks))
