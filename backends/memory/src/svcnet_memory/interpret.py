"""Probe -> Outcome from the tables alone, following the svcnet.plan docstring."""

from __future__ import annotations

import ipaddress

from svcnet.plan import Action, FrontendKind
from svcnet.probe import Outcome, Probe, Verdict
from svcnet_memory.tables import Tables, norm


def interpret(tables: Tables, probe: Probe) -> tuple[Outcome, list[str]]:
    """The fate of ``probe`` and the table entries that decided it."""
    dst = norm(probe.dst_ip)
    source = ipaddress.ip_address(probe.source_ip)
    claims = tables.frontends.get((dst, probe.dst_port, probe.protocol))
    if claims:  # 1. a frontend of some port: that port handles the packet
        ref = min(claims)
        frontend, port = claims[ref]
        trace = [f"frontend {frontend} of {ref} port {port.name or '-'}"]
        # a. LoadBalancer source ranges, before anything else
        if frontend.kind is FrontendKind.LOAD_BALANCER and port.source_ranges:
            networks = [ipaddress.ip_network(r, strict=False) for r in port.source_ranges]
            if not any(source in n for n in networks):
                return Outcome(Verdict.DROP), [*trace, "source outside the source ranges: drop"]
        # b. + c. the route for (frontend kind, source kind); the probe carries the
        # source kind, as the node's kernel would tell it.
        route = port.route(frontend.kind, probe.source_kind)
        trace.append(f"route {probe.source_kind.value} -> {route}")
        if route.action is Action.REJECT:
            return Outcome(Verdict.REJECT), trace
        if route.action is Action.DROP:
            return Outcome(Verdict.DROP), trace
        assert route.endpoints is not None
        endpoints = port.endpoints(route.endpoints)
        src = norm(probe.source_ip)
        # d. hairpin: a packet sent back to its own sender is always masqueraded
        targets = [(e.ip, e.port, route.masquerade or norm(e.ip) == src) for e in endpoints]
        # e. ClientIP affinity (per port)
        return Outcome.forward(targets, port.affinity_timeout), trace
    if dst in tables.cluster_ips:  # 2. a ClusterIP, a port the service lacks
        return Outcome(Verdict.REJECT), [f"cluster-ip {dst} of {min(tables.cluster_ips[dst])}"]
    if dst in tables.passthrough:  # 3. another proxy's service
        return Outcome(Verdict.PASS), [f"passthrough {dst} of {min(tables.passthrough[dst])}"]
    address = ipaddress.ip_address(dst)
    for cidr in tables.service_cidrs:  # 4. unallocated service address
        if address in cidr:
            return Outcome(Verdict.DROP), [f"service-cidr {cidr}: unallocated address"]
    return Outcome(Verdict.PASS), ["no entry: pass"]  # 5.
