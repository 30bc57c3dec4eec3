"""The memory backend's "kernel": plain dicts it owns, filled from a plan.

A kernel backend would render the plan into rules; here the "rules" are lookup
tables keyed the way a data plane matches packets. Nothing here keeps a
reference to the Plan object itself: what is installed is only what these
tables hold, so ``evaluate`` really interprets the tables.
"""

from __future__ import annotations

import ipaddress

import attrs

from svcnet.errors import BackendError, BackendErrorKind
from svcnet.model import IPNetwork, Protocol, format_endpoint
from svcnet.plan import (
    Changes,
    Frontend,
    NodeSettings,
    Plan,
    PortPlan,
    ServicePlan,
    ServiceRef,
)

# (destination address, port, protocol): what a packet's destination matches on.
FrontendKey = tuple[str, int, Protocol]


def norm(ip: str) -> str:
    """One spelling per address (IPv6 has many)."""
    return str(ipaddress.ip_address(ip))


@attrs.define
class Tables:
    node: str = ""
    node_ips: tuple[str, ...] = ()
    cluster_cidrs: list[IPNetwork] = attrs.Factory(list)
    service_cidrs: list[IPNetwork] = attrs.Factory(list)
    # Every installed service, by reference: needed to remove it again.
    services: dict[ServiceRef, ServicePlan] = attrs.Factory(dict)
    # frontend -> the services claiming it -> (frontend, port plan); when several
    # services claim one frontend the first reference wins (see svcnet.plan.compiler).
    frontends: dict[FrontendKey, dict[ServiceRef, tuple[Frontend, PortPlan]]] = attrs.Factory(dict)
    # ClusterIPs of proxied services (a port they do not define: reject) ...
    cluster_ips: dict[str, set[ServiceRef]] = attrs.Factory(dict)
    # ... and of services another proxy serves (pass).
    passthrough: dict[str, set[ServiceRef]] = attrs.Factory(dict)

    # -- changing the tables -------------------------------------------------
    def set_settings(self, settings: NodeSettings) -> None:
        self.node = settings.node
        self.node_ips = tuple(norm(ip) for ip in settings.node_ips)
        self.cluster_cidrs = [ipaddress.ip_network(c, strict=False) for c in settings.cluster_cidrs]
        self.service_cidrs = [ipaddress.ip_network(c, strict=False) for c in settings.service_cidrs]

    def check(self, changes: Changes) -> None:
        """Refuse, before touching anything, what a kernel would refuse."""
        removed = set(changes.removed)
        for ref in changes.removed:
            if ref not in self.services:
                raise BackendError(
                    BackendErrorKind.NOT_FOUND, f"memory: remove {ref}: not installed"
                )
        for svc in changes.replaced:
            if svc.ref not in self.services or svc.ref in removed:
                raise BackendError(
                    BackendErrorKind.NOT_FOUND, f"memory: replace {svc.ref}: not installed"
                )
        for svc in changes.added:
            if svc.ref in self.services and svc.ref not in removed:
                raise BackendError(
                    BackendErrorKind.EXISTS, f"memory: add {svc.ref}: already installed"
                )

    def add(self, svc: ServicePlan) -> None:
        self.services[svc.ref] = svc
        table = self.cluster_ips if svc.proxied else self.passthrough
        for ip in svc.cluster_ips:
            table.setdefault(norm(ip), set()).add(svc.ref)
        for port in svc.ports:  # plan order: the first port/frontend of a service wins
            for fe in port.frontends:
                claims = self.frontends.setdefault((norm(fe.ip), fe.port, port.protocol), {})
                claims.setdefault(svc.ref, (fe, port))

    def remove(self, ref: ServiceRef) -> None:
        svc = self.services.pop(ref)
        for table in (self.cluster_ips, self.passthrough):
            for ip in svc.cluster_ips:
                holders = table.get(norm(ip))
                if holders is not None:
                    holders.discard(ref)
                    if not holders:
                        del table[norm(ip)]
        for port in svc.ports:
            for fe in port.frontends:
                key = (norm(fe.ip), fe.port, port.protocol)
                claims = self.frontends.get(key)
                if claims is not None:
                    claims.pop(ref, None)
                    if not claims:
                        del self.frontends[key]

    # -- reading them back ---------------------------------------------------
    def dump(self) -> list[str]:
        lines = [
            f"node {self.node} ips {', '.join(self.node_ips) or '-'}",
            f"cluster-cidrs {', '.join(map(str, self.cluster_cidrs)) or '-'}",
            f"service-cidrs {', '.join(map(str, self.service_cidrs)) or '-'}",
        ]
        for (ip, number, proto), claims in sorted(
            self.frontends.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2].value)
        ):
            ref = min(claims)
            fe, port = claims[ref]
            lines.append(
                f"frontend {format_endpoint(ip, number)}/{proto.value} -> {ref}"
                f" port {port.name or '-'} ({fe.kind.value})"
            )
        lines += [
            f"cluster-ip {ip} -> {min(r)} (reject other ports)"
            for ip, r in sorted(self.cluster_ips.items())
        ]
        lines += [f"passthrough {ip} -> {min(r)}" for ip, r in sorted(self.passthrough.items())]
        return lines

    def as_plan(self, node: str) -> Plan:
        """What these tables hold, as a plan (:meth:`svcnet.backend.Backend.observed_plan`).

        Built from the entries the interpreter reads: the settings, the frontend
        claims (each carries the port plan it was installed for: its routes,
        endpoints, source ranges and affinity), the ClusterIP and pass-through
        tables. The service registry (``services``, kept to remove a service again,
        as a kernel keeps named objects) gives only what those entries do not carry:
        the order of a service's ClusterIPs and ports, and ports or services without
        any frontend. A frontend or ClusterIP missing from the tables is missing from
        the plan; a port found under another port plan than registered shows as the
        port it is installed as."""
        if not self.node:  # nothing installed
            return Plan(NodeSettings(node, (), (), ()))
        settings = NodeSettings(
            self.node,
            self.node_ips,
            tuple(str(c) for c in self.cluster_cidrs),
            tuple(str(c) for c in self.service_cidrs),
        )
        # ref -> registered port -> the (frontend, installed port) claims found
        found: dict[ServiceRef, dict[int, list[tuple[Frontend, PortPlan]]]] = {}
        for (_ip, _number, proto), claims in self.frontends.items():
            for ref, (fe, port) in claims.items():
                registered = self.services.get(ref)
                if registered is None:
                    continue
                for i, known in enumerate(registered.ports):
                    if known.protocol is proto and fe in known.frontends:
                        found.setdefault(ref, {}).setdefault(i, []).append((fe, port))
                        break
        services: dict[ServiceRef, ServicePlan] = {}
        for ref, registered in self.services.items():
            table = self.cluster_ips if registered.proxied else self.passthrough
            ips = tuple(ip for ip in registered.cluster_ips if ref in table.get(norm(ip), ()))
            ports: list[PortPlan] = []
            claims_of = found.get(ref, {})
            for i, known in enumerate(registered.ports):
                held = claims_of.get(i)
                if not held:
                    if not known.frontends:  # a port without frontends has no entry
                        ports.append(known)
                    else:  # every frontend gone: the port is served by no entry
                        ports.append(attrs.evolve(known, frontends=()))
                    continue
                installed = held[0][1]
                ports.append(attrs.evolve(installed, frontends=tuple(sorted({f for f, _ in held}))))
            services[ref] = ServicePlan(ref, ips, tuple(ports), registered.proxied)
        return Plan(settings, services)
