"""Where a kube-proxy mode differs from the reference by design (pure).

The reference (:mod:`svcnet.semantics`, docs/reference/semantics.md) is kube-proxy's
nftables mode. Other modes behave differently in a few documented places; a
disagreement that is one of those is reported as "differs by design (mode X)",
not as a failure. :data:`BY_DESIGN` is the one table of them
(docs/how-to/audit-a-node.md prints it); :func:`by_design` finds the entry a
disagreement is, if any.

Each entry names the mode, the verdict the reference gives, the verdict the
mode's rules give, and a condition on the probe's destination (and source) that
must hold: an entry never excuses a disagreement it does not describe (a
forward to the wrong endpoint, a missing masquerade, a drop where the reference
forwards are never by design).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import attrs

from svcnet.model import ServiceType, ip_family, norm_ip
from svcnet.probe import Outcome, Probe, SourceKind, Verdict
from svcnet.state import ClusterState

__all__ = ["BY_DESIGN", "ByDesign", "by_design"]

KUBE_PROXY_IPTABLES = "kube-proxy-iptables"
KUBE_PROXY_NFTABLES = "kube-proxy-nftables"

Condition = Callable[[ClusterState, Probe], bool]


def _cluster_ip_undefined_port(state: ClusterState, probe: Probe) -> bool:
    """The destination is a proxied service's ClusterIP, on a port/protocol the
    service does not define."""
    dst = norm_ip(probe.dst_ip)
    for svc in state.services.values():
        if svc.proxied and dst in {norm_ip(ip) for ip in svc.cluster_ips}:
            return not any(
                p.port == probe.dst_port and p.protocol is probe.protocol for p in svc.ports
            )
    return False


def _in_service_cidrs(state: ClusterState, ip: str) -> bool:
    dst = ipaddress.ip_address(ip)
    return any(dst in ipaddress.ip_network(c, strict=False) for c in state.config.service_cidrs)


def _unallocated_service_ip(state: ClusterState, probe: Probe) -> bool:
    """The destination is inside a service CIDR and no service holds it."""
    if not _in_service_cidrs(state, probe.dst_ip):
        return False
    held = {norm_ip(ip) for s in state.services.values() for ip in s.cluster_ips}
    return norm_ip(probe.dst_ip) not in held


def _node_port_off_primary(state: ClusterState, probe: Probe) -> bool:
    """The destination is a local address of the handling node other than its
    primary InternalIP of the family (127.0.0.0/8 included), on a NodePort."""
    node = state.nodes.get(probe.node)
    if node is None:
        return False
    dst = ipaddress.ip_address(probe.dst_ip)
    local = dst.is_loopback and dst.version == 4
    local = local or norm_ip(probe.dst_ip) in {norm_ip(a) for a in node.addresses}
    if not local or norm_ip(probe.dst_ip) == norm_ip(node.address(ip_family(probe.dst_ip)) or ""):
        return False
    return any(
        p.node_port == probe.dst_port and p.protocol is probe.protocol
        for s in state.services.values()
        if s.proxied
        for p in s.ports
    )


def _external_frontend_from_node(state: ClusterState, probe: Probe) -> bool:
    """The node's own packet to an external frontend (externalIP, LoadBalancer
    IP, NodePort on the node's address)."""
    if probe.source_kind is not SourceKind.NODE:
        return False
    dst = norm_ip(probe.dst_ip)
    node = state.nodes.get(probe.node)
    node_ips = {norm_ip(a) for a in node.addresses} if node is not None else set()
    for svc in state.services.values():
        if not svc.proxied:
            continue
        for p in svc.ports:
            if p.protocol is not probe.protocol:
                continue
            ext = {norm_ip(a) for a in (*svc.external_ips, *svc.load_balancer_ips)}
            if p.port == probe.dst_port and dst in ext:
                return True
            if p.node_port == probe.dst_port and dst in node_ips:
                return True
    return False


def _firewalled_load_balancer(state: ClusterState, probe: Probe) -> bool:
    """The destination is a LoadBalancer IP:port of a service with source ranges."""
    dst = norm_ip(probe.dst_ip)
    return any(
        svc.type is ServiceType.LOAD_BALANCER
        and svc.load_balancer_source_ranges
        and dst in {norm_ip(a) for a in svc.load_balancer_ips}
        and any(p.port == probe.dst_port and p.protocol is probe.protocol for p in svc.ports)
        for svc in state.services.values()
        if svc.proxied
    )


def _martian_localhost(state: ClusterState, probe: Probe) -> bool:
    """A packet to 127.0.0.0/8 from an address outside it."""
    dst, src = ipaddress.ip_address(probe.dst_ip), ipaddress.ip_address(probe.source_ip)
    return dst.version == 4 and dst.is_loopback and not src.is_loopback


def _other_proxys_cluster_ip(state: ClusterState, probe: Probe) -> bool:
    """The destination is a ClusterIP of a service another proxy serves
    (service-proxy-name label), inside the service CIDRs, held by no proxied one."""
    dst = norm_ip(probe.dst_ip)
    held = {svc.proxied for svc in state.services.values() if dst in map(norm_ip, svc.cluster_ips)}
    return held == {False} and _in_service_cidrs(state, probe.dst_ip)


@attrs.frozen
class ByDesign:
    """One documented difference: in ``mode``, where ``condition`` holds, the
    reference says ``reference`` and the mode's rules do one of ``rules``."""

    key: str
    mode: str
    reference: Verdict
    rules: tuple[Verdict, ...]
    condition: Condition = attrs.field(eq=False, repr=False)
    why: str

    def covers(self, state: ClusterState, probe: Probe, want: Outcome, got: Outcome) -> bool:
        return (
            want.verdict is self.reference
            and got.verdict in self.rules
            and self.condition(state, probe)
        )


BY_DESIGN: tuple[ByDesign, ...] = (
    ByDesign(
        "undefined-port",
        KUBE_PROXY_IPTABLES,
        Verdict.REJECT,
        (Verdict.PASS,),
        _cluster_ip_undefined_port,
        "iptables mode does not reject a port or protocol a ClusterIP does not define: "
        "no rule matches and the packet is routed on, un-NATed",
    ),
    ByDesign(
        "unallocated-service-ip",
        KUBE_PROXY_IPTABLES,
        Verdict.DROP,
        (Verdict.PASS,),
        _unallocated_service_ip,
        "iptables mode has no rule for an address of the service CIDRs no service holds "
        "(nftables mode drops it in cluster-ips-check)",
    ),
    ByDesign(
        "localhost-martian",
        KUBE_PROXY_IPTABLES,
        Verdict.PASS,
        (Verdict.DROP,),
        _martian_localhost,
        "iptables mode (localhostNodePorts sets route_localnet) drops new packets to "
        "127.0.0.0/8 from other sources that were not DNATed (KUBE-FIREWALL)",
    ),
    ByDesign(
        "nodeport-any-local-address",
        KUBE_PROXY_IPTABLES,
        Verdict.PASS,
        (Verdict.FORWARD, Verdict.REJECT, Verdict.DROP),
        _node_port_off_primary,
        "iptables mode serves NodePorts on every local address (-m addrtype --dst-type "
        "LOCAL), 127.0.0.1 included (localhostNodePorts): forwarded, or rejected or "
        "dropped without (local) endpoints; nftables mode only on the node's primary "
        "address",
    ),
    ByDesign(
        "no-endpoints-from-node",
        KUBE_PROXY_IPTABLES,
        Verdict.REJECT,
        (Verdict.PASS,),
        _external_frontend_from_node,
        "iptables mode rejects external frontends without endpoints in filter "
        "KUBE-EXTERNAL-SERVICES, hooked from INPUT and FORWARD only: the node's own "
        "packets are not rejected",
    ),
    ByDesign(
        "firewall-before-reject",
        KUBE_PROXY_IPTABLES,
        Verdict.REJECT,
        (Verdict.DROP,),
        _firewalled_load_balancer,
        "iptables mode writes no nat rule for a LoadBalancer IP of a service without "
        "endpoints, so KUBE-PROXY-FIREWALL drops every source, allowed ones too "
        "(the reference rejects those)",
    ),
    ByDesign(
        "other-proxys-cluster-ip",
        KUBE_PROXY_NFTABLES,
        Verdict.PASS,
        (Verdict.DROP,),
        _other_proxys_cluster_ip,
        "nftables mode never sees a service labelled service.kubernetes.io/"
        "service-proxy-name (its informers filter it out), so that service's ClusterIP "
        "is not in the cluster-ips set and cluster-ips-check drops it as an "
        "unallocated address of the service CIDRs (the reference leaves it to the "
        "other proxy)",
    ),
)


def by_design(
    mode: str, state: ClusterState, probe: Probe, want: Outcome, got: Outcome
) -> ByDesign | None:
    """The entry of :data:`BY_DESIGN` for ``mode`` that this disagreement is."""
    for entry in BY_DESIGN:
        if entry.mode == mode and entry.covers(state, probe, want, got):
            return entry
    return None
