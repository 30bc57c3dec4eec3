"""svcnet's public test harness: one conformance suite for every backend, ours and yours.

* :mod:`svcnet.testing.strategies` — Hypothesis strategies for clusters, events and probes;
* :func:`make_agreement_machine` — a ``RuleBasedStateMachine`` checking a backend
  against :func:`svcnet.semantics.evaluate` after every event;
* :func:`check_error_kinds` — the same error kind for the same mistake on every backend;
* :func:`run_conformance` — those checks, that machine and the scenario files,
  derandomised, raising an AssertionError with a readable report;
* the pytest plugin (:mod:`svcnet.testing.plugin`, entry point ``svcnet``):
  ``pytest --svcnet-backend NAME`` and the fixtures ``svcnet_netns`` and
  ``svcnet_backend_factory``.

Needs the ``testing`` extra (Hypothesis, pytest): ``pip install svcnet[testing]``.
"""

from svcnet.testing.agreement import (
    capabilities_of,
    check_error_kinds,
    default_scenario_paths,
    make_agreement_machine,
    run_conformance,
    run_scenarios,
)
from svcnet.testing.report import cluster_yaml, differences, failure_report, replay_scenario

__all__ = [
    "capabilities_of",
    "check_error_kinds",
    "cluster_yaml",
    "default_scenario_paths",
    "differences",
    "failure_report",
    "make_agreement_machine",
    "replay_scenario",
    "run_conformance",
    "run_scenarios",
]
