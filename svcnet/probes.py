"""Where a packet may go and come from in a given cluster state (pure; no Hypothesis).

The probe space the conformance harness aims at and ``svcnet audit`` asks every
probe of: destinations are frontends, addresses next to one, and other places;
sources are every kind a packet can come from (a pod, a node, an external
client, a hairpin endpoint), resolved by :func:`svcnet.probe.resolve_source`.
:mod:`svcnet.testing.probes` draws from it with Hypothesis (and re-exports these
names).
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Sequence

import attrs

from svcnet.errors import ProbeError
from svcnet.model import IPFamily, Protocol, ip_family, norm_ip
from svcnet.probe import Probe, ProbeSource, SourceKind, resolve_source
from svcnet.state import ClusterState

__all__ = [
    "CLIENTS",
    "NODE_PORT_RANGE",
    "Destination",
    "ProbeSpace",
    "Source",
    "frontends",
    "near_frontends",
    "node_probes",
    "other_places",
    "probe_space",
]

V4, V6 = IPFamily.IPv4, IPFamily.IPv6
# The NodePort range of generated clusters (the first port is also probed on loopback).
NODE_PORT_RANGE = (30000, 30063)
# Clients: the first is inside the generated clusters' first source range
# (svcnet.testing.vocabulary.SOURCE_RANGES), the second outside all.
CLIENTS = {V4: ("198.51.100.7", "192.0.2.9"), V6: ("2001:db8:c::7", "2001:db8:d::9")}

# -- probes ------------------------------------------------------------------------
#
# Drawing is the expensive part of a Hypothesis run, so a probe costs three draws:
# a kind of destination, one destination of that kind and one source for it, each
# an index into a list computed once per state (simplest first, so it shrinks well).

Destination = tuple[str, int, Protocol]
Source = tuple[SourceKind, str, str]  # (kind, source address, handling node)


def _sorted(items: set[Destination]) -> list[Destination]:
    return sorted(items, key=lambda d: (d[0], d[1], d[2].value))


def frontends(state: ClusterState) -> list[Destination]:
    """Every would-be frontend: ClusterIP:port, externalIP:port, LB IP:port and
    every node address:nodePort, for every service (handled or not)."""
    out: set[Destination] = set()
    for svc in state.services.values():
        for p in svc.ports:
            for ip in (*svc.cluster_ips, *svc.external_ips, *svc.load_balancer_ips):
                out.add((norm_ip(ip), p.port, p.protocol))
            if p.node_port:
                for node in state.nodes.values():
                    out.update((norm_ip(ip), p.node_port, p.protocol) for ip in node.addresses)
    return _sorted(out)


def near_frontends(state: ClusterState, fronts: Sequence[Destination]) -> list[Destination]:
    """Next to a frontend: port + 1, another protocol, the same port on a node
    address of the other family."""
    out: set[Destination] = set()
    other_family = {
        f: [norm_ip(a) for n in state.nodes.values() for a in n.addresses if ip_family(a) is not f]
        for f in (V4, V6)
    }
    for ip, port, protocol in fronts:
        out.add((ip, port + 1, protocol))
        out.update((ip, port, p) for p in Protocol if p is not protocol)
        out.update((a, port, protocol) for a in other_family[ip_family(ip)])
    return _sorted(out - set(fronts))


def other_places(state: ClusterState) -> list[Destination]:
    """Addresses that are no frontend: unallocated service-CIDR addresses, pod
    IPs, node addresses on a plain port, loopback, the internet."""
    used = {norm_ip(ip) for s in state.services.values() for ip in s.cluster_ips}
    out: list[Destination] = []
    for cidr in state.config.service_cidrs:
        net = ipaddress.ip_network(cidr)
        for offset in (10, 11, 250):
            ip = str(net[offset])
            if ip not in used:
                out.append((ip, 80, Protocol.TCP))
                break
    for pod in state.pods.values():
        out += [(norm_ip(ip), 8080, Protocol.TCP) for ip in pod.pod_ips]
    for node in state.nodes.values():
        out += [(norm_ip(ip), 22, Protocol.TCP) for ip in node.addresses]
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
    family = ip_family(ip)
    node_ips = {norm_ip(a) for n in state.nodes.values() for a in n.addresses}
    out: list[Source] = []
    for key in sorted(state.services):
        svc = state.services[key]
        if not any(p.protocol is protocol and port in (p.port, p.node_port) for p in svc.ports):
            continue
        own = {norm_ip(a) for a in (*svc.cluster_ips, *svc.external_ips, *svc.load_balancer_ips)}
        if ip not in own and ip not in node_ips:
            continue
        names = sorted(
            {e.pod for eps in state.service_endpoints(*key).values() for e in eps if e.pod}
        )
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
    lb_ips = sorted(
        {
            norm_ip(a)
            for s in state.services.values()
            for a in s.load_balancer_ips
            if ip_family(a) is family
        }
    )
    for name in names:
        clients = [*CLIENTS[family], *lb_ips]
        clients += [
            a
            for n in names
            if n != name
            for a in state.nodes[n].addresses
            if ip_family(a) is family
        ]
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
        kinds = tuple(
            tuple(k) for k in (fronts, near_frontends(state, fronts), other_places(state)) if k
        )
        return cls(state, kinds)

    def sources(self, dst: Destination) -> tuple[Source, ...]:
        found = self.cache.get(dst)
        if found is None:
            family = ip_family(dst[0])
            hairpin = _hairpin_sources(self.state, dst)
            common = self.by_family.get(family)
            if common is None:
                common = self.by_family[family] = _sources(self.state, family)
            every = hairpin + common
            owner = self.owners().get(dst[0])
            if owner is not None:
                # A node's own address: the packet is handled where it arrives, on
                # the owner (a pod elsewhere reaches it "via" the owner).
                every = [
                    (k, ip, owner) for k, ip, n in every if k is not SourceKind.NODE or n == owner
                ]
            found = self.cache[dst] = tuple(dict.fromkeys(every))
        return found

    def owners(self) -> dict[str, str]:
        """Node address -> node name."""
        return {norm_ip(a): n.name for n in self.state.nodes.values() for a in n.addresses}


_SPACES: dict[int, ProbeSpace] = {}


def probe_space(state: ClusterState) -> ProbeSpace:
    """:class:`ProbeSpace` of ``state`` (the last few are kept)."""
    space = _SPACES.get(id(state))
    if space is None or space.state is not state:
        if len(_SPACES) > 8:
            _SPACES.clear()
        space = _SPACES[id(state)] = ProbeSpace.of(state)
    return space


def node_probes(state: ClusterState, node: str) -> list[Probe]:
    """Every probe of the probe space handled at ``node``: every frontend, the
    places next to one and elsewhere, from every source (``svcnet audit``)."""
    space = ProbeSpace.of(state)
    out: list[Probe] = []
    for dsts in space.kinds:
        for dst in dsts:
            for kind, ip, handler in space.sources(dst):
                if handler == node:
                    out.append(Probe(kind, ip, handler, *dst))
    return list(dict.fromkeys(out))
