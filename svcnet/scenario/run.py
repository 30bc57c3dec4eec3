"""Scenario files: load, run against a backend, report.

The format and its strict parsing are :mod:`svcnet.scenario.format` (re-exported
here). Running drives one backend per node through a factory
``make_backend(node)``: a node's backend is created when the node first appears,
installs the node's plan after every accepted ``apply``/``delete``, and is cleaned
up when the node goes and at the end (always, also on failure). Each probe is
answered by the handling node's backend and compared with the expectation and
with the reference semantics (:func:`svcnet.semantics.evaluate`).

Counting follows FORMAT.md: every probe, DNS query and ``apply`` with ``error:``
is one expectation. A step that fails unexpectedly (an ``apply``/``delete`` that
is refused, a backend that cannot install) is reported as a failure itself, and
every expectation after it fails as not run; a file that does not load is one
failure plus one per expectation it seems to hold.

I/O here is limited to reading scenario files and, for kernel backends, the
namespaces of :func:`kernel_namespaces` (made and deleted by :mod:`svcnet.kernel.netns`).
"""

from __future__ import annotations

import contextlib
import enum
import importlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import attrs

from svcnet import manifests, semantics
from svcnet import plan as plan_mod
from svcnet.backend import Backend, BackendFactory
from svcnet.errors import ScenarioError, SvcnetError
from svcnet.model import IPFamily
from svcnet.plan import Plan
from svcnet.probe import Outcome, Probe, SourceKind, Verdict
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
from svcnet.state import Apply, ClusterState, Delete, Event

__all__ = [
    "API_VERSION",
    "DISAGREES",
    "DNS_NOT_IMPLEMENTED",
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
    "TrafficHook",
    "compare",
    "format_report",
    "kernel_namespaces",
    "load_scenario",
    "parse_scenario",
    "results_to_json",
    "run_files",
    "run_scenario",
    "same_outcome",
    "totals",
]

DNS_NOT_IMPLEMENTED = "DNS is not implemented yet (issue: Service DNS)"
DISAGREES = "backend disagrees with reference semantics"


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read and validate a scenario file."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ScenarioError(f"{name}: cannot read: {e.strerror or e}") from None
    return parse_scenario(text, name)


# -- results -----------------------------------------------------------------------


class Status(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


@attrs.frozen
class ExpectationResult:
    """One counted outcome. ``step`` is 1-based (None: the file itself), ``item``
    1-based within the step (0: the step itself); ``kind`` is probe, dns, error
    (an apply with ``error:``), apply/delete (one that failed unexpectedly), file
    (it does not load) or cleanup."""

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


# -- running -------------------------------------------------------------------------


class _ProbeError(Exception):
    """A probe cannot be built (unknown pod/node, no address of the family)."""


DnsResolver = Callable[..., Any]


class TrafficHook(Protocol):
    """Real packets next to the interpreter (``svcnet scenario run --traffic``;
    implemented by :class:`svcnet.lab.traffic.TrafficChecker`). ``check``
    returns an object with ``status`` (:class:`Status`), ``observed`` and ``reason``;
    each check is one more counted result, of kind ``traffic``."""

    def begin(self, scenario: Scenario) -> None: ...
    def sync(self, state: ClusterState) -> None: ...
    def check(self, spec: ProbeSpec, probe: Probe, state: ClusterState) -> Any: ...
    def end(self) -> None: ...


def _dns_resolver() -> DnsResolver | None:
    try:
        module = importlib.import_module("svcnet.dns")
    except ImportError:
        return None
    resolve = getattr(module, "resolve", None)
    return resolve if callable(resolve) else None


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
        family = IPFamily.of(spec.dst_ip)
        src = spec.source
        if src.external is not None:
            assert src.via is not None
            return self.at(
                src.via,
                Probe(
                    SourceKind.EXTERNAL,
                    src.external,
                    src.via,
                    spec.dst_ip,
                    spec.dst_port,
                    spec.protocol,
                ),
            )
        if src.node is not None:
            ip = self.node_ip(src.node, family)
            return Probe(SourceKind.NODE, ip, src.node, spec.dst_ip, spec.dst_port, spec.protocol)
        assert src.pod is not None
        ns, _, name = src.pod.partition("/")
        pod = self.state.pods.get((ns, name))
        if pod is None:
            raise _ProbeError(f"pod {src.pod} does not exist")
        if not pod.node_name:
            raise _ProbeError(f"pod {src.pod} is not on a node")
        handler = src.via or pod.node_name
        if pod.host_network:
            ip = self.node_ip(pod.node_name, family)
            kind = SourceKind.NODE if handler == pod.node_name else SourceKind.EXTERNAL
        else:
            found = pod.ip(family)
            if found is None:
                raise _ProbeError(f"pod {src.pod} has no {family.value} address")
            ip, kind = found, SourceKind.POD
        return self.at(handler, Probe(kind, ip, handler, spec.dst_ip, spec.dst_port, spec.protocol))

    def at(self, node: str, probe: Probe) -> Probe:
        if node not in self.state.nodes:
            raise _ProbeError(f"node {node} does not exist")
        return probe

    def node_ip(self, name: str, family: IPFamily) -> str:
        node = self.state.nodes.get(name)
        if node is None:
            raise _ProbeError(f"node {name} does not exist")
        ip = node.address(family)
        if ip is None:
            raise _ProbeError(f"node {name} has no {family.value} InternalIP")
        return ip

    def probe(self, step: Step, i: int, spec: ProbeSpec) -> None:
        name = spec.name or str(spec)
        fields = {"probe": str(spec), "expected": str(spec.expected)}
        try:
            probe = self.make_probe(spec)
            fields["probe"] = f"{spec} [{probe}]"
            backend = self.backends.get(probe.node)
            if backend is None:
                raise _ProbeError(f"node {probe.node} has no backend")
            observed = backend.evaluate(probe)
        except (_ProbeError, SvcnetError) as e:
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
        resolve = _dns_resolver()
        if resolve is None:
            self.result(
                step, i, "dns", str(q), Status.SKIPPED, **fields, reason=DNS_NOT_IMPLEMENTED
            )
            return
        try:
            pod = None
            if q.from_pod is not None:
                ns, _, name = q.from_pod.partition("/")
                pod = self.state.pods.get((ns, name))
                if pod is None:
                    raise _ProbeError(f"pod {q.from_pod} does not exist")
            rcode, records = _dns_answer(
                q.qtype, resolve(self.state, q.query, q.qtype, from_pod=pod)
            )
        except Exception as e:
            why = str(e) if isinstance(e, _ProbeError | SvcnetError) else f"{type(e).__name__}: {e}"
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
        check_dns = getattr(self.traffic, "check_dns", None)  # the lab's real DNS server
        if callable(check_dns):
            try:
                got = check_dns(q, self.state)
                status, observed, reason = got.status, got.observed, got.reason
            except Exception as e:
                status, observed, reason = Status.FAILED, "", f"lab crashed: {e}"
            fields["observed"] = observed
            self.result(step, i, "traffic", str(q), status, **fields, reason=reason)


def _dns_answer(qtype: str, answer: object) -> tuple[str, frozenset[str]]:
    """(rcode, records) from what ``svcnet.dns.resolve`` returns: a pair, or an
    object with ``rcode`` and ``answer``/``answers``/``records``."""
    if isinstance(answer, tuple) and len(answer) == 2:
        rcode, records = answer
    else:
        rcode = getattr(answer, "rcode", "NOERROR")
        records = next(
            (getattr(answer, a) for a in ("answer", "answers", "records") if hasattr(answer, a)), ()
        )
    if isinstance(rcode, enum.Enum):
        rcode = rcode.name if isinstance(rcode.value, int) else rcode.value
    return str(rcode).upper(), frozenset(norm_record(qtype, str(r)) for r in records)


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
    except OSError:
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


# -- reporting ---------------------------------------------------------------------


def totals(results: Sequence[ScenarioResult]) -> tuple[int, int, int]:
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


# -- kernel backends: one fresh network namespace per node -------------------------------


SCENARIO_NETNS_PREFIX = "svcnet-sc-"


@contextlib.contextmanager
def kernel_namespaces(backend: type[Backend]) -> Iterator[BackendFactory]:
    """A factory making ``backend(node, netns=...)`` in a new ``svcnet-sc-<pid>-<n>``
    namespace per node; every namespace made is deleted on exit, also on failure
    (namespaces left by runs that died are reaped first)."""
    from svcnet.kernel import netns

    reap_orphan_namespaces()
    with netns.Namespaces(SCENARIO_NETNS_PREFIX) as spaces:

        def make(node: str) -> Backend:
            return backend(node, netns=spaces.new())

        yield make


def reap_orphan_namespaces() -> list[str]:
    """Delete ``svcnet-sc-<pid>-<n>`` namespaces whose creating process is gone (a run
    killed with SIGKILL cannot clean up after itself). Returns the names deleted."""
    from svcnet.kernel import netns

    return netns.reap_orphans(SCENARIO_NETNS_PREFIX)
