"""The audit itself (pure): every probe answered by a node's rules, compared with
the reference, each disagreement with the rules that decided it.

:func:`audit` takes an :class:`Answerer` (a layout's reader over rules already
read: :mod:`svcnet.audit.readers`), the cluster state and the probes to ask
(every frontend x source kind handled at the node: the CLI builds them as the
conformance harness does), and returns a :class:`Report`:

- ``agree``: how many probes the rules answer as the reference does;
- ``findings``: one :class:`Finding` per probe that disagrees: the probe, what the
  rules do, what the reference says, the rules the interpreter walked (its trace),
  and, when the difference is one of :data:`svcnet.audit.design.BY_DESIGN` for the
  layout's mode, that entry (``by_design``; not a failure).

A probe the rules cannot be evaluated for (an option the reader does not know, a
jump to a missing chain) is a finding too, with the reason as what the rules do.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import attrs

from svcnet import semantics
from svcnet.errors import SvcnetError
from svcnet.model import norm_ip
from svcnet.probe import Outcome, Probe, Target
from svcnet.state import ClusterState

from .design import ByDesign, by_design

__all__ = ["Answerer", "Finding", "Report", "audit", "same"]


class Answerer(Protocol):
    """A layout's reader over rules read from one node."""

    @property
    def layout(self) -> str: ...

    def answer(self, probe: Probe) -> Outcome:
        """What the rules do to ``probe``."""
        ...

    def trace(self, probe: Probe) -> tuple[str, ...]:
        """The rules that decided ``probe``'s fate (asked only of disagreements)."""
        ...


def _normal(outcome: Outcome) -> Outcome:
    """``outcome`` with its endpoint addresses in their canonical text."""
    return attrs.evolve(
        outcome,
        targets=frozenset(
            Target(norm_ip(t.ip), t.port, t.masquerade, t.probability) for t in outcome.targets
        ),
    )


def same(a: Outcome, b: Outcome) -> bool:
    """Equal outcomes: verdict, endpoints with their masquerade and probability,
    affinity (addresses compared in their canonical text)."""
    return _normal(a) == _normal(b)


@attrs.frozen
class Finding:
    """One probe the rules do not answer as the reference does."""

    probe: Probe
    rules: str  # what the rules do (an Outcome's text, or why they cannot be read)
    reference: str
    trace: tuple[str, ...]
    by_design: ByDesign | None = None

    @property
    def failure(self) -> bool:
        return self.by_design is None

    def to_json(self) -> dict[str, Any]:
        p = self.probe
        return {
            "probe": {
                "source_kind": p.source_kind.value,
                "source_ip": p.source_ip,
                "node": p.node,
                "dst_ip": p.dst_ip,
                "dst_port": p.dst_port,
                "protocol": p.protocol.value,
            },
            "rules": self.rules,
            "reference": self.reference,
            "trace": list(self.trace),
            "by_design": None
            if self.by_design is None
            else {
                "key": self.by_design.key,
                "mode": self.by_design.mode,
                "why": self.by_design.why,
            },
        }

    def text(self) -> str:
        head = "differs by design" if self.by_design else "DISAGREES"
        if self.by_design is not None:
            head += f" ({self.by_design.mode}: {self.by_design.key})"
        lines = [
            f"{head}: {self.probe}",
            f"  rules:     {self.rules}",
            f"  reference: {self.reference}",
        ]
        if self.by_design is not None:
            lines.append(f"  why:       {self.by_design.why}")
        if self.trace:
            lines.append("  decided by:")
            lines += [f"    {t}" for t in self.trace]
        else:
            lines.append("  decided by: no rule matched")
        return "\n".join(lines)


@attrs.frozen
class Report:
    """The audit of one node's rules in one layout."""

    node: str
    layout: str
    agree: int
    findings: tuple[Finding, ...]

    @property
    def failures(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.failure)

    @property
    def ok(self) -> bool:
        """No disagreement but documented ones."""
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "layout": self.layout,
            "probes": self.agree + len(self.findings),
            "agree": self.agree,
            "differ_by_design": len(self.findings) - len(self.failures),
            "disagree": len(self.failures),
            "findings": [f.to_json() for f in self.findings],
        }

    def text(self) -> str:
        parts = [f.text() for f in self.findings]
        by_design = len(self.findings) - len(self.failures)
        parts.append(
            f"node {self.node} ({self.layout}): {self.agree + len(self.findings)} probes, "
            f"{self.agree} agree, {by_design} differ by design, "
            f"{len(self.failures)} disagree"
        )
        return "\n\n".join(parts)


def audit(state: ClusterState, node: str, answerer: Answerer, probes: Iterable[Probe]) -> Report:
    """Ask ``answerer`` every probe of ``probes`` handled at ``node`` and compare
    each answer with :func:`svcnet.semantics.evaluate`."""
    agree = 0
    findings: list[Finding] = []
    for probe in probes:
        if probe.node != node:
            continue
        want = semantics.evaluate(state, probe)
        try:
            got = answerer.answer(probe)
            if same(got, want):
                agree += 1
                continue
            trace = answerer.trace(probe)
        except SvcnetError as e:
            # an error may carry the rules walked before the outcome fell apart
            trace = tuple(getattr(e, "trace", ()))
            findings.append(Finding(probe, f"cannot be evaluated: {e}", str(want), trace))
            continue
        entry = by_design(answerer.layout, state, probe, want, got)
        findings.append(Finding(probe, str(got), str(want), trace, entry))
    return Report(node, answerer.layout, agree, tuple(findings))
