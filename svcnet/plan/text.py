"""A plan as text, for humans (``str(plan)``): one block per service, stable order."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from svcnet.plan.types import Plan, PortPlan

__all__ = ["render_plan", "render_port"]


def _list(items: tuple[object, ...]) -> str:
    return ", ".join(str(i) for i in items) if items else "-"


def render_port(port: PortPlan) -> list[str]:
    """The lines of one port plan, indented for a service block."""
    head = f"  port {port.name or '-'} {port.protocol.value} {port.family.value}"
    if port.affinity_timeout is not None:
        head += f" affinity={port.affinity_timeout}s"
    lines = [head, f"    frontends: {_list(port.frontends)}"]
    if port.source_ranges:
        lines.append(f"    source ranges (LoadBalancer): {_list(port.source_ranges)}")
    lines.append(f"    cluster endpoints: {_list(port.cluster_endpoints)}")
    lines.append(f"    local endpoints: {_list(port.local_endpoints)}")
    lines.append(
        f"    internal: pod={port.internal_from_pod} node={port.internal_from_node}"
        f" external={port.internal_from_external}"
    )
    lines.append(
        f"    external: pod={port.external_from_pod} node={port.external_from_node}"
        f" external={port.external_from_external}"
    )
    return lines


def render_plan(plan: Plan) -> str:
    s = plan.settings
    lines = [
        f"plan for node {s.node} (revision {plan.revision})",
        f"  node IPs: {_list(s.node_ips)}",
        f"  cluster CIDRs: {_list(s.cluster_cidrs)}",
        f"  service CIDRs: {_list(s.service_cidrs)}",
    ]
    for ref in sorted(plan.services):
        svc = plan.services[ref]
        proxied = "" if svc.proxied else " (served by another proxy: pass)"
        lines.append(f"service {ref} {_list(svc.cluster_ips)}{proxied}")
        for port in svc.ports:
            lines.extend(render_port(port))
    return "\n".join(lines)
