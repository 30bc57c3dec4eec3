"""Running scenario files against a backend.

The format and its strict parsing are :mod:`svcnet.scenario.format` (re-exported
here). Running drives one backend per node through a factory
``make_backend(node)``: a node's backend is created when the node first appears,
installs the node's plan after every accepted ``apply``/``delete``, and is cleaned
up when the node goes and at the end (always, also on failure). Each probe is
answered by the handling node's backend and compared with the expectation and
with the reference semantics (:func:`svcnet.semantics.evaluate`).

Counting follows docs/reference/scenario-format.md: every probe, DNS query and
``apply`` with ``error:`` is one expectation. A step that fails unexpectedly (an
``apply``/``delete`` that is refused, a backend that cannot install) is reported
as a failure itself, and every expectation after it fails as not run; a file that
does not load is one failure plus one per expectation it seems to hold. Results
and the report are :mod:`svcnet.scenario.report`; probes are built by
:func:`svcnet.probe.make_probe`, DNS queries answered by
:func:`svcnet.dns.records.resolve`. Real packets
(``--traffic``) come from a :class:`TrafficHook` the caller passes in (the CLI
passes :class:`svcnet.lab.traffic.TrafficChecker`); nothing here imports the lab.

I/O here is limited to reading scenario files; kernel backends get their
namespaces from the factory the caller passes (:func:`svcnet.kernel.kernel_backends`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from svcnet import manifests, semantics
from svcnet import plan as plan_mod
from svcnet.backend import Backend, BackendFactory
from svcnet.dns.records import resolve as resolve_dns
from svcnet.errors import ProbeError, ScenarioError, SvcnetError
from svcnet.plan import Plan
from svcnet.probe import Outcome, Probe, ProbeSource, Verdict, make_probe
from svcnet.scenario.format import (
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
from svcnet.scenario.report import ExpectationResult, ScenarioResult, Status
from svcnet.state import Apply, ClusterState, Delete, Event

__all__ = [
    "DISAGREES",
    "TrafficCheckResult",
    "TrafficHook",
    "compare",
    "load_scenario",
    "packaged_scenarios",
    "probe_source",
    "run_files",
    "run_scenario",
    "same_outcome",
]

DISAGREES = "backend disagrees with reference semantics"


def packaged_scenarios() -> list[Path]:
    """Every scenario file shipped inside the package (``svcnet/scenarios/**/*.yaml``:
    the project's own suite and, under ``examples/``, the public examples); raises
    :class:`~svcnet.errors.ScenarioError` if there is none (a broken install), so a
    conformance run never passes by running nothing."""
    root = Path(__file__).resolve().parent.parent / "scenarios"
    found = sorted(root.rglob("*.yaml"))
    if not found:
        raise ScenarioError(f"no scenario file under {root}: is svcnet installed whole?")
    return found


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read and validate a scenario file."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ScenarioError(f"{name}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ScenarioError(f"{name}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    return parse_scenario(text, name)


# -- running -------------------------------------------------------------------------


class TrafficCheckResult(Protocol):
    """What a traffic hook observed for one probe or DNS query."""

    @property
    def status(self) -> Status: ...
    @property
    def observed(self) -> str: ...
    @property
    def reason(self) -> str: ...


class TrafficHook(Protocol):
    """Real packets next to the interpreter (``svcnet scenario run --traffic``;
    implemented by :class:`svcnet.lab.traffic.TrafficChecker`, which the caller
    passes in). ``begin``/``end`` frame each scenario, ``sync`` follows every
    accepted change; each ``check`` (a probe) and ``check_dns`` (a query) is one
    more counted result, of kind ``traffic``."""

    def begin(self, scenario: Scenario) -> None: ...
    def sync(self, state: ClusterState) -> None: ...
    def check(self, spec: ProbeSpec, probe: Probe, state: ClusterState) -> TrafficCheckResult: ...
    def check_dns(self, q: DnsQuery, state: ClusterState) -> TrafficCheckResult: ...
    def end(self) -> None: ...


def probe_source(source: Source) -> ProbeSource:
    """A scenario's ``from`` as :func:`svcnet.probe.make_probe` takes it (an
    ``external`` address is external whatever it is: the file says so)."""
    if source.pod is not None:
        ns, _, name = source.pod.partition("/")
        return ProbeSource(pod=(ns, name), via=source.via)
    if source.node is not None:
        return ProbeSource(node=source.node, via=source.via)
    return ProbeSource(address=source.external, via=source.via, external=True)


def _snapshot(s: ClusterState) -> tuple[object, ...]:
    return (s.revision, s.config, dict(s.nodes), dict(s.pods), dict(s.services), dict(s.slices))


class _Runner:
    def __init__(
        self, scenario: Scenario, make_backend: BackendFactory, traffic: TrafficHook | None = None
    ) -> None:
        self.scenario = scenario
        self.traffic = traffic
        self.make_backend = make_backend
        self.state = ClusterState.empty(scenario.config)
        self.backends: dict[str, Backend] = {}
        self.plans: dict[str, Plan] = {}
        self.results: list[ExpectationResult] = []
        self.broken: str | None = None  # why the remaining expectations fail

    def result(
        self, step: Step, item: int, kind: str, name: str, status: Status, **fields: str
    ) -> None:
        self.results.append(
            ExpectationResult(self.scenario.path, step.index, item, kind, name, status, **fields)
        )

    def run(self, step: Step) -> None:
        if self.broken is not None:
            self.fail_remaining(step, f"not run: {self.broken}")
        elif step.kind in (StepKind.APPLY, StepKind.DELETE):
            self.change(step)
        elif step.kind is StepKind.EXPECT:
            for i, spec in enumerate(step.probes, 1):
                self.probe(step, i, spec)
        else:
            for i, query in enumerate(step.queries, 1):
                self.dns(step, i, query)

    def fail_remaining(self, step: Step, reason: str) -> None:
        if step.error is not None:
            self.error_result(step, Status.FAILED, reason=reason)
        for i, spec in enumerate(step.probes, 1):
            fields = {"probe": str(spec), "expected": str(spec.expected), "reason": reason}
            self.result(step, i, "probe", spec.name or str(spec), Status.FAILED, **fields)
        for i, q in enumerate(step.queries, 1):
            fields = {"probe": str(q), "expected": q.expected(), "reason": reason}
            self.result(step, i, "dns", str(q), Status.FAILED, **fields)

    def error_result(self, step: Step, status: Status, **fields: str) -> None:
        """The result of an ``apply`` with ``error:``."""
        assert step.error is not None
        expected = f"error containing {step.error!r}"
        name = f"apply fails with {step.error!r}"
        self.result(step, 0, "error", name, status, expected=expected, **fields)

    # -- apply / delete ----------------------------------------------------------
    def change(self, step: Step) -> None:
        kind = step.kind.value
        old = self.state
        before = _snapshot(old)
        where = f"{self.scenario.path} step {step.index}"
        try:
            # Any: attrs types the events' converter=tuple parameters as Iterable[_T_co].
            items: Any
            event: Event
            if step.kind is StepKind.APPLY:
                items = manifests.load(list(step.documents), filename=where)
                event = Apply(items)
            else:
                items = [manifests.parse_key(d) for d in step.documents]
                event = Delete(items)
            new = old.step(event)
        except SvcnetError as e:
            if step.error is None:
                self.break_at(step, kind, f"{kind} failed: {e}")
            elif step.error.lower() not in str(e).lower():
                reason = "the error message differs"
                self.error_result(step, Status.FAILED, observed=f"error: {e}", reason=reason)
            elif _snapshot(self.state) != before:
                reason = "the refused apply changed the state"
                self.error_result(step, Status.FAILED, observed=f"error: {e}", reason=reason)
            else:
                self.error_result(step, Status.PASSED, observed=f"error: {e}")
            return
        except Exception as e:  # a bug elsewhere must not end the whole run
            self.break_at(step, kind, f"{kind} crashed: {type(e).__name__}: {e}")
            return
        if step.error is not None:
            # Keep the old state: later steps assume the refused apply changed nothing.
            reason = "the apply was accepted (the scenario continues without it)"
            self.error_result(step, Status.FAILED, observed="accepted", reason=reason)
            return
        self.state = new
        try:
            self.sync(old, new)
        except Exception as e:
            why = str(e) if isinstance(e, SvcnetError) else f"{type(e).__name__}: {e}"
            self.break_at(step, kind, f"backend failed after the {kind}: {why}")
            return
        if self.traffic is not None:
            try:
                self.traffic.sync(new)
            except Exception as e:
                why = str(e) if isinstance(e, SvcnetError) else f"{type(e).__name__}: {e}"
                self.break_at(step, kind, f"the lab failed after the {kind}: {why}")

    def break_at(self, step: Step, kind: str, reason: str) -> None:
        self.result(step, 0, kind, f"{kind} (step {step.index})", Status.FAILED, reason=reason)
        self.broken = f"step {step.index} failed"

    def sync(self, old: ClusterState, new: ClusterState) -> None:
        for node in sorted(self.backends):
            if node not in new.nodes:
                self.plans.pop(node, None)
                self.drop_backend(node)
        for node in sorted(new.nodes):
            backend = self.backends.get(node)
            if backend is None:
                backend = self.backends[node] = self.make_backend(node)
                plan = plan_mod.compile(new, node)
            else:
                plan = plan_mod.update(self.plans[node], old, new)
            backend.update(plan)
            self.plans[node] = plan

    def drop_backend(self, node: str) -> None:
        backend = self.backends.pop(node)
        try:
            backend.cleanup()
        finally:
            backend.close()

    def close(self) -> None:
        for node in sorted(self.backends):
            try:
                self.drop_backend(node)
            except Exception as e:
                self.results.append(
                    ExpectationResult(
                        self.scenario.path,
                        None,
                        0,
                        "cleanup",
                        f"cleanup of node {node}",
                        Status.FAILED,
                        reason=f"{type(e).__name__}: {e}",
                    )
                )

    # -- probes --------------------------------------------------------------------
    def make_probe(self, spec: ProbeSpec) -> Probe:
        source = probe_source(spec.source)
        return make_probe(self.state, source, spec.dst_ip, spec.dst_port, spec.protocol)

    def probe(self, step: Step, i: int, spec: ProbeSpec) -> None:
        name = spec.name or str(spec)
        fields = {"probe": str(spec), "expected": str(spec.expected)}
        try:
            probe = self.make_probe(spec)
            fields["probe"] = f"{spec} [{probe}]"
            backend = self.backends.get(probe.node)
            if backend is None:
                raise ProbeError(f"node {probe.node} has no backend")
            observed = backend.evaluate(probe)
        except SvcnetError as e:
            self.result(step, i, "probe", name, Status.FAILED, **fields, reason=str(e))
            return
        except Exception as e:
            self.result(
                step,
                i,
                "probe",
                name,
                Status.FAILED,
                **fields,
                reason=f"backend crashed: {type(e).__name__}: {e}",
            )
            return
        fields["observed"] = str(observed)
        exact = type(backend).capabilities.exact_probabilities
        problems = compare(spec.expected, observed, exact_probabilities=exact)
        try:  # also when the expectation failed: it tells a wrong backend from a wrong file
            reference = semantics.evaluate(self.state, probe)
        except Exception as e:
            problems.append(f"reference semantics crashed: {type(e).__name__}: {e}")
        else:
            if not same_outcome(observed, reference, exact_probabilities=exact):
                problems.append(f"{DISAGREES}: reference says {reference}")
        status = Status.FAILED if problems else Status.PASSED
        self.result(step, i, "probe", name, status, **fields, reason="; ".join(problems))
        if self.traffic is not None:
            self.traffic_probe(step, i, spec, probe, name)

    def traffic_probe(self, step: Step, i: int, spec: ProbeSpec, probe: Probe, name: str) -> None:
        assert self.traffic is not None
        fields = {"probe": f"{spec} [real packets]", "expected": str(spec.expected)}
        try:
            got = self.traffic.check(spec, probe, self.state)
            status, observed, reason = got.status, got.observed, got.reason
        except Exception as e:
            status, observed, reason = Status.FAILED, "", f"lab crashed: {type(e).__name__}: {e}"
        self.result(step, i, "traffic", name, status, **fields, observed=observed, reason=reason)

    # -- dns -----------------------------------------------------------------------
    def dns(self, step: Step, i: int, q: DnsQuery) -> None:
        fields = {"probe": str(q), "expected": q.expected()}
        try:
            pod = None
            if q.from_pod is not None:
                ns, _, name = q.from_pod.partition("/")
                pod = self.state.pods.get((ns, name))
                if pod is None:
                    raise ProbeError(f"pod {q.from_pod} does not exist")
            answer = resolve_dns(self.state, q.query, q.qtype, from_pod=pod)
            rcode = answer.rcode.upper()
            records = frozenset(norm_record(q.qtype, r) for r in answer.records)
        except Exception as e:
            why = str(e) if isinstance(e, SvcnetError) else f"{type(e).__name__}: {e}"
            self.result(step, i, "dns", str(q), Status.FAILED, **fields, reason=why)
            return
        fields["observed"] = dns_text(rcode, records)
        problems = []
        if rcode != q.rcode:
            problems.append(f"rcode: expected {q.rcode}, observed {rcode}")
        if records != q.answer:
            problems.append(_set_diff("answer", q.answer, records))
        status = Status.FAILED if problems else Status.PASSED
        self.result(step, i, "dns", str(q), status, **fields, reason="; ".join(problems))
        if self.traffic is not None:  # the lab's real DNS server
            try:
                got = self.traffic.check_dns(q, self.state)
                status, observed, reason = got.status, got.observed, got.reason
            except Exception as e:
                status, observed, reason = Status.FAILED, "", f"lab crashed: {e}"
            fields["observed"] = observed
            self.result(step, i, "traffic", str(q), status, **fields, reason=reason)


def _set_diff(what: str, expected: frozenset[str], observed: frozenset[str]) -> str:
    parts = []
    if expected - observed:
        parts.append("missing " + ", ".join(sorted(expected - observed)))
    if observed - expected:
        parts.append("unexpected " + ", ".join(sorted(observed - expected)))
    return f"{what}: " + "; ".join(parts)


def compare(
    expected: Expected, observed: Outcome, *, exact_probabilities: bool = True
) -> list[str]:
    """What differs between an expectation and an observed outcome ([] = it holds)."""
    if observed.verdict is not expected.verdict:
        return [f"verdict: expected {expected.verdict.value}, observed {observed.verdict.value}"]
    if expected.verdict is not Verdict.FORWARD:
        return []
    problems = []
    targets = {norm_endpoint(t.address): t for t in observed.targets}
    if set(targets) != expected.endpoints:
        problems.append(_set_diff("endpoints", expected.endpoints, frozenset(targets)))
    for ep in sorted(expected.endpoints & set(targets)):
        want = expected.masquerade_of(ep)
        if want is not None and targets[ep].masquerade != want:
            problems.append(
                f"masquerade towards {ep}: expected {format_bool(want)}, "
                f"observed {format_bool(targets[ep].masquerade)}"
            )
    if exact_probabilities and not observed.uniform:
        problems.append(
            "endpoints are not equally likely: "
            + ", ".join(f"{a} p={t.probability}" for a, t in sorted(targets.items()))
        )
    if expected.sticky is not None and observed.sticky != expected.sticky:
        wanted, got = format_bool(expected.sticky), format_bool(observed.sticky)
        problems.append(f"sticky: expected {wanted}, observed {got}")
    return problems


def same_outcome(a: Outcome, b: Outcome, *, exact_probabilities: bool = True) -> bool:
    """Equal outcomes (endpoint addresses normalised; probabilities only if exact)."""

    def key(o: Outcome) -> tuple[object, ...]:
        targets = frozenset(
            (norm_endpoint(t.address), t.masquerade, t.probability if exact_probabilities else None)
            for t in o.targets
        )
        return (o.verdict, targets, o.affinity_timeout)

    return key(a) == key(b)


def run_scenario(
    scenario: Scenario, make_backend: BackendFactory, traffic: TrafficHook | None = None
) -> ScenarioResult:
    """Run ``scenario`` with one backend per node from ``make_backend`` (and, with
    ``traffic``, every probe also as real packets)."""
    runner = _Runner(scenario, make_backend, traffic)
    try:
        if traffic is not None:
            traffic.begin(scenario)
        for step in scenario.steps:
            runner.run(step)
    finally:
        try:
            runner.close()
        finally:
            if traffic is not None:
                traffic.end()
    return ScenarioResult(scenario.path, scenario.name, tuple(runner.results))


def _load_failure(path: str, error: ScenarioError) -> ScenarioResult:
    try:
        with open(path, encoding="utf-8") as f:
            n = count_expectations(f.read())
    except (OSError, UnicodeDecodeError):
        n = 0
    results = [
        ExpectationResult(
            path, None, 0, "file", "the scenario file loads", Status.FAILED, reason=str(error)
        )
    ]
    results += [
        ExpectationResult(
            path,
            None,
            i,
            "file",
            f"expectation {i}",
            Status.FAILED,
            reason="not run: the file does not load",
        )
        for i in range(1, n + 1)
    ]
    return ScenarioResult(path, "", tuple(results))


def run_files(
    paths: Sequence[str | os.PathLike[str]],
    make_backend: BackendFactory,
    traffic: TrafficHook | None = None,
) -> list[ScenarioResult]:
    """Load and run every file; one that does not load fails its expectations."""
    out = []
    for p in paths:
        path = os.fspath(p)
        try:
            scenario = load_scenario(path)
        except ScenarioError as e:
            out.append(_load_failure(path, e))
            continue
        out.append(run_scenario(scenario, make_backend, traffic))
    return out
