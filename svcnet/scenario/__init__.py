"""Scenario files: the format (:mod:`~svcnet.scenario.format`), running one
against a backend (:mod:`~svcnet.scenario.run`), the results and the report
(:mod:`~svcnet.scenario.report`).
"""

from __future__ import annotations

from svcnet.scenario.format import (
    API_VERSION,
    DnsQuery,
    Expected,
    ProbeSpec,
    Scenario,
    Source,
    Step,
    StepKind,
    count_expectations,
    dns_text,
    format_bool,
    norm_endpoint,
    norm_record,
    parse_scenario,
)
from svcnet.scenario.report import (
    ExpectationResult,
    ScenarioResult,
    Status,
    format_report,
    results_to_json,
    totals,
)
from svcnet.scenario.run import (
    DISAGREES,
    TrafficCheckResult,
    TrafficHook,
    compare,
    load_scenario,
    packaged_scenarios,
    probe_source,
    run_files,
    run_scenario,
    same_outcome,
)

__all__ = [
    "API_VERSION",
    "DISAGREES",
    "DnsQuery",
    "ExpectationResult",
    "Expected",
    "ProbeSpec",
    "Scenario",
    "ScenarioResult",
    "Source",
    "Status",
    "Step",
    "StepKind",
    "TrafficCheckResult",
    "TrafficHook",
    "compare",
    "count_expectations",
    "dns_text",
    "format_bool",
    "format_report",
    "load_scenario",
    "norm_endpoint",
    "norm_record",
    "packaged_scenarios",
    "parse_scenario",
    "probe_source",
    "results_to_json",
    "run_files",
    "run_scenario",
    "same_outcome",
    "totals",
]
