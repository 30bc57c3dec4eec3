"""Scenario results and how they are shown: one :class:`ExpectationResult` per
counted expectation, gathered per file in a :class:`ScenarioResult`; the text
report (:func:`format_report`) and the JSON document (:func:`results_to_json`)
``svcnet scenario run`` prints. Pure."""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence

import attrs

__all__ = [
    "ExpectationResult",
    "ScenarioResult",
    "Status",
    "format_report",
    "results_to_json",
    "totals",
]


class Status(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


@attrs.frozen
class ExpectationResult:
    """One counted outcome. ``step`` is 1-based (None: the file itself), ``item``
    1-based within the step (0: the step itself); ``kind`` is probe, dns, error
    (an apply with ``error:``), apply/delete (one that failed unexpectedly), file
    (it does not load), cleanup or traffic (real packets, ``--traffic``)."""

    file: str
    step: int | None
    item: int
    kind: str
    name: str
    status: Status
    probe: str = ""
    expected: str = ""
    observed: str = ""
    reason: str = ""

    @property
    def where(self) -> str:
        if self.step is None:
            return self.file
        what = f", {self.kind} {self.item}" if self.item else f", {self.kind}"
        return f"{self.file} step {self.step}{what}"

    def to_json(self) -> dict[str, object]:
        out = attrs.asdict(self)
        out["status"] = self.status.value
        return out


@attrs.frozen
class ScenarioResult:
    file: str
    name: str  # "" when the file does not load
    results: tuple[ExpectationResult, ...]

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status is status)

    @property
    def passed(self) -> int:
        return self.count(Status.PASSED)

    @property
    def failed(self) -> int:
        return self.count(Status.FAILED)

    @property
    def skipped(self) -> int:
        return self.count(Status.SKIPPED)

    @property
    def ok(self) -> bool:
        return self.failed == 0


def totals(results: Sequence[ScenarioResult]) -> tuple[int, int, int]:
    """(passed, failed, skipped) over every file."""
    return (
        sum(r.passed for r in results),
        sum(r.failed for r in results),
        sum(r.skipped for r in results),
    )


def format_report(results: Sequence[ScenarioResult]) -> str:
    """The text report; its last line is ``N passed, M failed[, K skipped]``."""
    lines: list[str] = []
    every = [e for r in results for e in r.results]
    for e in every:
        if e.status is Status.FAILED:
            lines.append(f"FAILED {e.where}: {e.name}")
            for label, value in (
                ("probe", e.probe),
                ("expected", e.expected),
                ("observed", e.observed),
                ("reason", e.reason),
            ):
                if value:
                    lines.append(f"  {label + ':':<9} {value}")
    for e in every:
        if e.status is Status.SKIPPED:
            lines.append(f"SKIPPED {e.where}: {e.name}: {e.reason}")
    passed, failed, skipped = totals(results)
    last = f"{passed} passed, {failed} failed"
    if skipped:
        last += f", {skipped} skipped"
    lines.append(last)
    return "\n".join(lines)


def results_to_json(results: Sequence[ScenarioResult]) -> str:
    """The JSON document of ``svcnet scenario run --json``: per file, per result, totals."""
    passed, failed, skipped = totals(results)
    doc = {
        "files": [
            {
                "file": r.file,
                "scenario": r.name,
                "passed": r.passed,
                "failed": r.failed,
                "skipped": r.skipped,
            }
            for r in results
        ],
        "results": [dict(e.to_json(), scenario=r.name) for r in results for e in r.results],
        "totals": {"passed": passed, "failed": failed, "skipped": skipped},
    }
    return json.dumps(doc, indent=2)
