"""Deliberately broken backends: each is the memory backend with one thing wrong.

tests/test_testing.py checks that svcnet.testing.run_conformance catches every
one of them with a report a person can act on.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import attrs
from svcnet_memory import MemoryBackend
from svcnet_memory.tables import norm

from svcnet.plan import DROP, REJECT, Changes, Plan, PlanEndpoint, PortPlan, ServicePlan
from svcnet.probe import Outcome, Probe, Target, Verdict

__all__ = [
    "ALL_MUTANTS",
    "IgnoresSourceRanges",
    "KeepsDeletedEndpoints",
    "NoHairpinMasquerade",
    "RejectsInsteadOfDropping",
    "UnevenChoice",
]


def _map_ports(changes: Changes, fix: Callable[[PortPlan], PortPlan]) -> Changes:
    def svc(s: ServicePlan) -> ServicePlan:
        return attrs.evolve(s, ports=tuple(fix(p) for p in s.ports))

    return attrs.evolve(
        changes,
        added=tuple(svc(s) for s in changes.added),
        replaced=tuple(svc(s) for s in changes.replaced),
    )


class NoHairpinMasquerade(MemoryBackend):
    """Forgets to masquerade a packet whose chosen endpoint is its own sender."""

    name = "mutant-no-hairpin"

    def evaluate(self, probe: Probe) -> Outcome:
        outcome = super().evaluate(probe)
        if outcome.verdict is not Verdict.FORWARD:
            return outcome
        claims = self._tables.frontends[(norm(probe.dst_ip), probe.dst_port, probe.protocol)]
        frontend, port = claims[min(claims)]
        masquerade = port.route(frontend.kind, probe.source_kind).masquerade
        targets = {attrs.evolve(t, masquerade=masquerade) for t in outcome.targets}
        return Outcome(outcome.verdict, targets, outcome.affinity_timeout)


class RejectsInsteadOfDropping(MemoryBackend):
    """Rejects where a Local traffic policy has no local endpoint (must drop)."""

    name = "mutant-rejects-local"

    def _install(self, changes: Changes, target: Plan, *, full: bool) -> None:
        routes = (
            "internal_from_pod",
            "internal_from_node",
            "internal_from_external",
            "external_from_pod",
            "external_from_node",
            "external_from_external",
        )

        def fix(port: PortPlan) -> PortPlan:
            return attrs.evolve(port, **{r: REJECT for r in routes if getattr(port, r) == DROP})

        super()._install(_map_ports(changes, fix), target, full=full)


class IgnoresSourceRanges(MemoryBackend):
    """Lets every source reach a LoadBalancer IP, whatever loadBalancerSourceRanges say."""

    name = "mutant-no-source-ranges"

    def _install(self, changes: Changes, target: Plan, *, full: bool) -> None:
        def fix(port: PortPlan) -> PortPlan:
            return attrs.evolve(port, source_ranges=())

        super()._install(_map_ports(changes, fix), target, full=full)


class KeepsDeletedEndpoints(MemoryBackend):
    """On an incremental apply, adds new endpoints but never removes old ones."""

    name = "mutant-keeps-endpoints"

    def _install(self, changes: Changes, target: Plan, *, full: bool) -> None:
        if full or self.installed is None:
            super()._install(changes, target, full=full)
            return
        installed = self._tables.services

        def keep(svc: ServicePlan) -> ServicePlan:
            old = installed.get(svc.ref)
            if old is None:
                return svc
            before = {(p.name, p.family, p.protocol): p for p in old.ports}

            def union(port: PortPlan) -> PortPlan:
                prev = before.get((port.name, port.family, port.protocol))
                if prev is None:
                    return port
                cluster: tuple[PlanEndpoint, ...] = tuple(
                    sorted({*port.cluster_endpoints, *prev.cluster_endpoints})
                )
                local: tuple[PlanEndpoint, ...] = tuple(
                    sorted({*port.local_endpoints, *prev.local_endpoints})
                )
                return attrs.evolve(port, cluster_endpoints=cluster, local_endpoints=local)

            return attrs.evolve(svc, ports=tuple(union(p) for p in svc.ports))

        changes = attrs.evolve(changes, replaced=tuple(keep(s) for s in changes.replaced))
        super()._install(changes, target, full=full)


class UnevenChoice(MemoryBackend):
    """Picks the first endpoint twice as often as each of the others."""

    name = "mutant-uneven"

    def evaluate(self, probe: Probe) -> Outcome:
        outcome = super().evaluate(probe)
        targets = sorted(outcome.targets)
        if len(targets) < 2:
            return outcome
        n = len(targets) + 1
        uneven = [
            attrs.evolve(t, probability=Fraction(2 if i == 0 else 1, n))
            for i, t in enumerate(targets)
        ]
        return Outcome(outcome.verdict, frozenset[Target](uneven), outcome.affinity_timeout)


ALL_MUTANTS = (
    NoHairpinMasquerade,
    RejectsInsteadOfDropping,
    IgnoresSourceRanges,
    KeepsDeletedEndpoints,
    UnevenChoice,
)
