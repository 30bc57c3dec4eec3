"""Failure reports a person can act on: what differs, why, the cluster, a replay file."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import yaml

from svcnet import manifests, semantics
from svcnet.backend import Backend
from svcnet.model import IPFamily, norm_ip
from svcnet.plan import Plan
from svcnet.probe import Outcome, Probe, SourceKind, Verdict
from svcnet.scenario.format import API_VERSION
from svcnet.state import ClusterState

__all__ = [
    "backend_error_report",
    "cluster_yaml",
    "differences",
    "failure_report",
    "observed_plan_report",
    "replay_scenario",
]


def differences(expected: Outcome, observed: Outcome, *, exact_probabilities: bool) -> list[str]:
    """What differs between the reference's outcome and the backend's, one per line."""
    if expected.verdict is not observed.verdict:
        return [f"verdict: expected {expected.verdict.value}, observed {observed.verdict.value}"]
    out: list[str] = []
    want = {t.address: t for t in expected.targets}
    got = {t.address: t for t in observed.targets}
    if set(want) - set(got):
        out.append("endpoints missing: " + ", ".join(sorted(set(want) - set(got))))
    if set(got) - set(want):
        out.append("endpoints unexpected: " + ", ".join(sorted(set(got) - set(want))))
    for address in sorted(set(want) & set(got)):
        w, g = want[address], got[address]
        if w.masquerade != g.masquerade:
            out.append(
                f"masquerade towards {address}: expected {str(w.masquerade).lower()}, "
                f"observed {str(g.masquerade).lower()}"
            )
        if exact_probabilities and w.probability != g.probability:
            out.append(
                f"probability of {address}: expected {w.probability}, observed {g.probability}"
            )
    if expected.affinity_timeout != observed.affinity_timeout:

        def show(t: int | None) -> str:
            return "none" if t is None else f"ClientIP {t}s"

        out.append(
            f"session affinity: expected {show(expected.affinity_timeout)}, "
            f"observed {show(observed.affinity_timeout)}"
        )
    return out or ["(outcomes differ in a way not itemised above)"]


def _dump(docs: Sequence[Mapping[str, Any]]) -> str:
    return yaml.safe_dump_all(
        list(docs), sort_keys=False, explicit_start=True, default_flow_style=False
    )


def cluster_yaml(state: ClusterState) -> str:
    """Every object of ``state`` as Kubernetes YAML, allocations included."""
    objects: list[Any] = [
        *(state.nodes[k] for k in sorted(state.nodes)),
        *(state.services[k] for k in sorted(state.services)),
        *(state.pods[k] for k in sorted(state.pods)),
        *(state.slices[k] for k in sorted(state.slices)),
    ]
    if not objects:
        return "# (the cluster is empty)\n"
    return _dump([manifests.to_manifest(o) for o in objects])


def _config_doc(state: ClusterState) -> dict[str, Any]:
    c = state.config
    return {
        "serviceCIDRs": list(c.service_cidrs),
        "clusterCIDRs": list(c.cluster_cidrs),
        "nodePortRange": f"{c.node_port_range[0]}-{c.node_port_range[1]}",
        "loadBalancerPool": list(c.load_balancer_pool),
        "clusterDomain": c.cluster_domain,
        "masqueradeAll": c.masquerade_all,
    }


def _source(state: ClusterState, probe: Probe) -> dict[str, str] | None:
    """The probe's ``from:`` in scenario form, or None if the format cannot say it."""
    if probe.source_kind is SourceKind.EXTERNAL:
        return {"external": probe.source_ip, "via": probe.node}
    family = IPFamily.of(probe.source_ip)
    src = norm_ip(probe.source_ip)
    if probe.source_kind is SourceKind.NODE:
        node = state.nodes.get(probe.node)
        own = node.address(family) if node is not None else None
        if own is not None and norm_ip(own) == src:
            return {"node": probe.node}
        return None
    for key in sorted(state.pods):
        pod = state.pods[key]
        ip = pod.ip(family)
        if not pod.host_network and ip is not None and norm_ip(ip) == src:
            out = {"pod": f"{pod.namespace}/{pod.name}"}
            if probe.node != pod.node_name:
                out["via"] = probe.node
            return out
    return None


def _result(outcome: Outcome) -> dict[str, Any]:
    if outcome.verdict is not Verdict.FORWARD:
        return {"verdict": outcome.verdict.value}
    masq = outcome.masquerade()
    masquerade: bool | dict[str, bool]
    if len(set(masq.values())) == 1:
        masquerade = next(iter(masq.values()))
    else:
        masquerade = dict(sorted(masq.items()))
    return {
        "verdict": "forward",
        "endpoints": sorted(outcome.endpoints),
        "masquerade": masquerade,
        "sticky": outcome.sticky,
    }


def replay_scenario(
    state: ClusterState,
    steps: Sequence[tuple[str, list[dict[str, Any]]]],
    probe: Probe,
    expected: Outcome,
) -> str:
    """A scenario file (docs/reference/scenario-format.md) that replays the
    accepted events in order and expects what the reference says of ``probe``."""
    out_steps: list[dict[str, Any]] = [{verb: docs} for verb, docs in steps]
    source = _source(state, probe)
    expectation: dict[str, Any] = {
        "name": "the backend agrees with the reference semantics",
        "from": source,
        "to": {"ip": probe.dst_ip, "port": probe.dst_port, "protocol": probe.protocol.value},
        "result": _result(expected),
    }
    out_steps.append({"expect": [expectation]})
    doc = {
        "apiVersion": API_VERSION,
        "kind": "Scenario",
        "name": "conformance-failure",
        "description": "Found by svcnet.testing.run_conformance (shrunk).",
        "config": _config_doc(state),
        "steps": out_steps,
    }
    text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
    if source is None:
        text = (
            f"# NOTE: the probe's source ({probe.source_kind.value} {probe.source_ip}) is no\n"
            "# pod or node of the cluster, which a scenario cannot express; `from` is empty.\n"
            + text
        )
    return text


def _indent(lines: Sequence[str]) -> str:
    return "\n".join("  " + line for line in lines) if lines else "  (nothing)"


def failure_report(
    *,
    backend_name: str,
    state: ClusterState,
    steps: Sequence[tuple[str, list[dict[str, Any]]]],
    probe: Probe,
    expected: Outcome,
    observed: Outcome | None,
    backend: Backend | None,
    problem: str = "",
    exact_probabilities: bool = True,
) -> str:
    """The whole report for one disagreeing probe (``observed`` None: the backend
    raised instead, ``problem`` says what)."""
    exact = exact_probabilities
    lines = [
        f"backend {backend_name!r} disagrees with svcnet.semantics (the reference) "
        f"on node {probe.node}",
        "",
        f"probe:     {probe}",
        f"expected:  {expected}",
        f"observed:  {observed if observed is not None else problem}",
    ]
    if observed is not None:
        lines += [
            "differs:   " + d for d in differences(expected, observed, exact_probabilities=exact)
        ]
    lines += [
        "",
        "why the reference says so (svcnet.semantics.explain):",
        _indent(semantics.explain(state, probe)),
    ]
    trace: Sequence[str] = ()
    if backend is not None:
        try:
            trace = backend.trace(probe)
        except Exception as e:  # the report must not hide the failure
            trace = (f"(trace failed: {type(e).__name__}: {e})",)
    lines += ["", f"what the backend did ({backend_name} trace):", _indent(list(trace))]
    lines += [
        "",
        "the cluster when it failed (Kubernetes YAML, allocated addresses included):",
        cluster_yaml(state).rstrip(),
        "",
        "to replay: save the scenario below as repro.yaml and run",
        f"  svcnet scenario run repro.yaml --backend {backend_name}",
        "---",
        replay_scenario(state, steps, probe, expected).rstrip(),
    ]
    return "\n".join(lines)


def backend_error_report(
    *,
    backend_name: str,
    state: ClusterState,
    steps: Sequence[tuple[str, list[dict[str, Any]]]],
    node: str,
    error: BaseException,
) -> str:
    """The report when a backend fails to install a node's plan."""
    return "\n".join(
        [
            f"backend {backend_name!r} failed to install the plan of node {node}: "
            f"{type(error).__name__}: {error}",
            "",
            "the cluster it was installing (Kubernetes YAML, allocated addresses included):",
            cluster_yaml(state).rstrip(),
            "",
            "the accepted events so far, as scenario steps:",
            yaml.safe_dump([{verb: docs} for verb, docs in steps], sort_keys=False).rstrip(),
        ]
    )


def observed_plan_report(
    *,
    backend_name: str,
    state: ClusterState,
    steps: Sequence[tuple[str, list[dict[str, Any]]]],
    node: str,
    installed: Plan,
    observed: Plan,
) -> str:
    """The report when a backend's read-back (``observed_plan()``) is not the plan it
    installed: a unified diff of the two plans' text, then the cluster."""
    shown = attrs.evolve(observed, revision=installed.revision)  # revisions do not compare
    diff = difflib.unified_diff(
        str(installed).splitlines(), str(shown).splitlines(), "installed", "observed", lineterm=""
    )
    return "\n".join(
        [
            f"backend {backend_name!r}: observed_plan() on node {node} is not the plan it "
            "installed (nothing else touched its data plane):",
            *diff,
            "",
            "the cluster (Kubernetes YAML, allocated addresses included):",
            cluster_yaml(state).rstrip(),
            "",
            "the accepted events so far, as scenario steps:",
            yaml.safe_dump([{verb: docs} for verb, docs in steps], sort_keys=False).rstrip(),
        ]
    )
