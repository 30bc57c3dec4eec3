"""The agreement harness: a backend must answer every probe as svcnet.semantics does.

:func:`make_agreement_machine` builds a Hypothesis ``RuleBasedStateMachine``
that drives one random cluster through random events: each event goes to the
:class:`~svcnet.state.ClusterState` (through its Kubernetes manifests, as a
user would send it; a refused event leaves the state as it was and the run
goes on) and, for every node, to one backend instance made by
``backend_factory(node)`` when the node appears (``compile`` the first time,
``plan.update`` after, then ``backend.update``). After every step it draws
probes aimed at the cluster's frontends and their surroundings and asserts
``backend.evaluate(probe)`` equals ``semantics.evaluate(state, probe)``:
verdict, endpoint set, masquerade per endpoint, session affinity and — when
the backend declares ``exact_probabilities`` — the probabilities. Backends
are cleaned up when their node goes and at the end of every example.

:func:`run_conformance` runs that machine (derandomised by default, so every
run replays the same examples) and the scenario files, and raises one
AssertionError whose message is a report: the shrunk cluster as Kubernetes
YAML, the probe, both outcomes, the reference's explanation, the backend's
trace and a scenario file that replays the failure.

:func:`check_error_kinds` (also part of :func:`run_conformance`) makes each
backend commit the obvious mistakes — apply before sync, remove or replace a
service that is not installed, add one that is, a plan for another node — and
checks the :class:`~svcnet.errors.BackendErrorKind` of each refusal and that it
changed nothing: the same mistake is the same error on every backend.

A factory is a :class:`~svcnet.backend.BackendFactory`; a
:class:`~svcnet.backend.ManagedBackendFactory` also names its backend, declares
its capabilities (a backend class does both) and has ``release(backend)``,
called after a backend has been cleaned up and closed (to delete its network
namespace, for instance).
"""

from __future__ import annotations

import functools
import os
import time
import types
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    rule,
    run_state_machine_as_test,
)

from svcnet import manifests, semantics
from svcnet import plan as plan_mod
from svcnet.backend import Backend, BackendFactory, Capabilities, ManagedBackendFactory
from svcnet.errors import BackendError, BackendErrorKind, SvcnetError
from svcnet.model import (
    ClusterConfig,
    ContainerPort,
    IPFamily,
    KubeObject,
    Labels,
    Node,
    ObjectKey,
    Pod,
    Protocol,
    Service,
    ServicePort,
)
from svcnet.plan import Changes, Plan, ServicePlan, ServiceRef
from svcnet.probe import Outcome, Probe, SourceKind
from svcnet.scenario import (
    ScenarioResult,
    Status,
    format_report,
    packaged_scenarios,
    run_files,
    same_outcome,
)
from svcnet.state import Apply, ClusterState, Delete, Event
from svcnet.testing import strategies
from svcnet.testing.report import backend_error_report, failure_report, observed_plan_report

__all__ = [
    "BACKEND_KINDS",
    "ObservedPlanUnsupported",
    "capabilities_of",
    "check_error_kinds",
    "default_scenario_paths",
    "make_agreement_machine",
    "observed_plan_of",
    "run_conformance",
    "run_scenarios",
]

# Scenario expectations that involve the backend (DNS answers and refused applies
# never reach it: the core's own tests hold them).
BACKEND_KINDS = frozenset({"probe", "apply", "delete", "cleanup", "file"})

Step = tuple[str, list[dict[str, Any]]]  # ("apply" | "delete", documents)


def _backend_class(factory: BackendFactory) -> type[Backend] | None:
    """The Backend subclass a factory is (or a functools.partial of one wraps)."""
    target: object = factory
    while isinstance(target, functools.partial):
        target = target.func
    return target if isinstance(target, type) and issubclass(target, Backend) else None


def capabilities_of(backend_factory: BackendFactory) -> Capabilities:
    """The capabilities a factory declares (a Backend class, a partial of one, or
    a :class:`~svcnet.backend.ManagedBackendFactory`); all of them otherwise."""
    cls = _backend_class(backend_factory)
    if cls is not None:
        return cls.capabilities
    if isinstance(backend_factory, ManagedBackendFactory):
        return backend_factory.capabilities
    return Capabilities()


def _name_of(backend_factory: BackendFactory) -> str:
    cls = _backend_class(backend_factory)
    if cls is not None and cls.name:
        return cls.name
    if isinstance(backend_factory, ManagedBackendFactory) and backend_factory.name:
        return backend_factory.name
    if isinstance(backend_factory, types.FunctionType):
        return backend_factory.__name__
    return "backend"


def _release(factory: BackendFactory, backend: Backend) -> None:
    if isinstance(factory, ManagedBackendFactory):
        factory.release(backend)


def _dispose(factory: BackendFactory, backend: Backend) -> None:
    """Clean ``backend`` up, close it and hand it back to ``factory``, each step even
    when the one before failed."""
    try:
        backend.cleanup()
    finally:
        try:
            backend.close()
        finally:
            _release(factory, backend)


class ObservedPlanUnsupported(UserWarning):
    """A backend does not implement ``observed_plan()``: its read-back is not checked."""


def observed_plan_of(backend: Backend, name: str) -> Plan | None:
    """``backend.observed_plan()``; None, with a :class:`ObservedPlanUnsupported`
    warning naming the backend and the reason, when it raises ``UNSUPPORTED``."""
    try:
        return backend.observed_plan()
    except BackendError as e:
        if e.kind is not BackendErrorKind.UNSUPPORTED:
            raise
        warnings.warn(
            f"backend {name!r} (contract {backend.contract or '?'}): observed_plan() is not "
            f"checked against the installed plan: {e}",
            ObservedPlanUnsupported,
            stacklevel=2,
        )
        return None


def _documents(event: Event) -> Step:
    if isinstance(event, Apply):
        return "apply", [manifests.to_manifest(o) for o in event.objects]
    assert isinstance(event, Delete)
    docs: list[dict[str, Any]] = []
    for key in event.keys:
        doc = {"kind": key.kind.value, "name": key.name}
        if key.namespace:
            doc["namespace"] = key.namespace
        docs.append(doc)
    return "delete", docs


def _as_user_sends_it(step: Step) -> Event:
    """The event parsed back from its manifests (raises what manifests refuses)."""
    verb, docs = step
    if verb == "apply":
        objects: list[KubeObject] = manifests.load(docs, filename="generated event")
        return Apply(tuple(objects))
    keys: list[ObjectKey] = [manifests.parse_key(d) for d in docs]
    return Delete(tuple(keys))


# One big integer per object or batch of probes, decoded by strategies.Digits. From
# bytes, not st.integers: Hypothesis favours small and "nasty" integers, which would
# decode to the first choice almost everywhere; shrinking a byte to zero still
# simplifies the choices it holds.
def _seed(nbytes: int) -> st.SearchStrategy[int]:
    return st.binary(min_size=nbytes, max_size=nbytes).map(lambda b: int.from_bytes(b, "little"))


_CLUSTER_SEED = _seed(80)
_EVENT_SEED = _seed(20)
_PROBE_SEED = _seed(32)


class ShrinkBudget:
    """Bounds the time Hypothesis spends shrinking a failure, with its public API
    only: once ``seconds`` have passed since the first failure, a run goes on
    only while its rule calls follow those of a run that failed; any other run
    stops programming backends and passes at once. The shrinker then finds nothing
    smaller and ends quickly, and its final replay (a run that failed) still
    fails the same way. ``None``: shrink as Hypothesis likes (up to its own
    limit, five minutes)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.since: float | None = None
        self.failed: list[tuple[object, ...]] = []  # the rule calls of each failing run

    def failure(self, calls: Sequence[object]) -> None:
        if self.since is None:
            self.since = time.monotonic()
        self.failed.append(tuple(calls))

    def allows(self, calls: Sequence[object]) -> bool:
        """Whether a run whose rule calls so far are ``calls`` may go on."""
        if self.seconds is None or self.since is None:
            return True
        if time.monotonic() - self.since < self.seconds:
            return True
        n = len(calls)
        return any(f[:n] == tuple(calls) for f in self.failed)


def make_agreement_machine(
    backend_factory: BackendFactory,
    *,
    config_strategy: st.SearchStrategy[Any] | None = None,
    probes_per_step: int = 6,
    capabilities: Capabilities | None = None,
    backend_name: str | None = None,
    shrink_seconds: float | None = None,
    check_observed: bool = True,
) -> type[RuleBasedStateMachine]:
    """A state machine class checking ``backend_factory``'s backends against the
    reference semantics (use its ``TestCase`` attribute as a unittest/pytest test,
    or :func:`run_conformance`).

    ``config_strategy`` draws the :class:`~svcnet.model.ClusterConfig` (default:
    :func:`strategies.configs` over the declared families); ``capabilities``
    defaults to what the factory declares; ``backend_name`` names it in reports;
    ``shrink_seconds`` bounds shrinking (:class:`ShrinkBudget`, counted from the
    class's first failure); ``check_observed`` false leaves out the check of
    ``observed_plan()`` against the installed plan (probes only).
    """
    caps = capabilities if capabilities is not None else capabilities_of(backend_factory)
    configs = config_strategy if config_strategy is not None else strategies.configs(caps)
    name = backend_name or _name_of(backend_factory)
    budget = ShrinkBudget(shrink_seconds)

    class AgreementMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.state = ClusterState.empty()
            self.backends: dict[str, Backend] = {}
            self.plans: dict[str, Plan] = {}
            self.steps: list[Step] = []
            self.refused = 0
            self.calls: list[object] = []  # every rule's arguments, for the ShrinkBudget
            self.idle = False  # past the shrink budget: this run does nothing more

        def _run(self, args: object, body: Callable[[], None]) -> None:
            self.calls.append(args)
            if self.idle or not budget.allows(self.calls):
                self.idle = True
                return
            try:
                body()
            except AssertionError:
                budget.failure(self.calls)
                raise

        @initialize(config=configs, cluster=_CLUSTER_SEED, probes=_PROBE_SEED)
        def build_cluster(self, config: Any, cluster: int, probes: int) -> None:
            def body() -> None:
                self.state = ClusterState.empty(config)
                digits = strategies.Digits(cluster)
                objects = strategies.draw_cluster_objects(digits, config, caps)
                self._change(Apply(tuple(objects)), probes)

            self._run((config, cluster, probes), body)

        @rule(event=_EVENT_SEED, probes=_PROBE_SEED)
        def change(self, event: int, probes: int) -> None:
            def body() -> None:
                digits = strategies.Digits(event)
                self._change(strategies.draw_event(digits, self.state, caps), probes)

            self._run((event, probes), body)

        # -- driving ---------------------------------------------------------------
        def _change(self, event: Event, probes: int) -> None:
            step = _documents(event)
            try:
                new = self.state.step(_as_user_sends_it(step))
            except SvcnetError:
                self.refused += 1  # refused: the state stays as it was
            else:
                old, self.state = self.state, new
                self.steps.append(step)
                self._sync(old, new)
            self._check(probes)

        def _sync(self, old: ClusterState, new: ClusterState) -> None:
            for node in sorted(self.backends):
                if node not in new.nodes:
                    self.plans.pop(node, None)
                    self._drop(node)
            for node in sorted(new.nodes):
                try:
                    backend = self.backends.get(node)
                    if backend is None:
                        backend = self.backends[node] = backend_factory(node)
                        plan = plan_mod.compile(new, node)
                    else:
                        plan = plan_mod.update(self.plans[node], old, new)
                    backend.update(plan)
                    observed = observed_plan_of(backend, name) if check_observed else None
                except Exception as e:
                    raise AssertionError(
                        backend_error_report(
                            backend_name=name, state=new, steps=self.steps, node=node, error=e
                        )
                    ) from e
                self.plans[node] = plan
                installed = backend.installed
                if observed is not None and installed is not None and observed != installed:
                    raise AssertionError(
                        observed_plan_report(
                            backend_name=name,
                            state=new,
                            steps=self.steps,
                            node=node,
                            installed=installed,
                            observed=observed,
                        )
                    )

        def _check(self, probes: int) -> None:
            if not self.state.nodes:
                return
            digits = strategies.Digits(probes)
            for _ in range(probes_per_step):
                probe = strategies.draw_probe(digits, self.state)
                if (
                    probe.protocol not in caps.protocols
                    or IPFamily.of(probe.dst_ip) not in caps.families
                ):
                    continue
                backend = self.backends[probe.node]
                expected = semantics.evaluate(self.state, probe)
                observed: Outcome | None = None
                problem = ""
                try:
                    observed = backend.evaluate(probe)
                except Exception as e:
                    problem = f"evaluate() raised {type(e).__name__}: {e}"
                exact = caps.exact_probabilities
                if observed is not None and same_outcome(
                    observed, expected, exact_probabilities=exact
                ):
                    continue
                raise AssertionError(
                    failure_report(
                        backend_name=name,
                        state=self.state,
                        steps=self.steps,
                        probe=probe,
                        expected=expected,
                        observed=observed,
                        backend=backend,
                        problem=problem,
                        exact_probabilities=exact,
                    )
                )

        # -- teardown --------------------------------------------------------------
        def _drop(self, node: str) -> None:
            _dispose(backend_factory, self.backends.pop(node))

        def teardown(self) -> None:
            errors = []
            for node in sorted(self.backends):
                try:
                    self._drop(node)
                except Exception as e:
                    errors.append(f"cleanup of node {node}: {type(e).__name__}: {e}")
            if errors:
                budget.failure(self.calls)
                raise AssertionError(f"backend {name!r} failed to clean up: " + "; ".join(errors))

    AgreementMachine.__name__ = AgreementMachine.__qualname__ = f"AgreementMachine[{name}]"
    return AgreementMachine


# -- scenarios ---------------------------------------------------------------------------


def default_scenario_paths() -> list[Path]:
    """The scenario files shipped with svcnet
    (:func:`svcnet.scenario.packaged_scenarios`: ``svcnet/scenarios/**/*.yaml``);
    raises if there is none rather than let a suite run nothing."""
    return packaged_scenarios()


class _Tracking:
    """Wraps a factory, remembering the backends it made so they can be released."""

    def __init__(self, factory: BackendFactory) -> None:
        self.factory = factory
        self.made: list[Backend] = []

    def __call__(self, node: str) -> Backend:
        backend = self.factory(node)
        self.made.append(backend)
        return backend

    def release_all(self) -> None:
        made, self.made = self.made, []
        for backend in made:
            _release(self.factory, backend)


def run_scenarios(
    backend_factory: BackendFactory, paths: Sequence[str | os.PathLike[str]]
) -> tuple[list[ScenarioResult], str | None]:
    """Run each file with fresh backends; (results, report of the backend's failures
    or None). DNS queries and refused applies are left out of the verdict."""
    tracking = _Tracking(backend_factory)
    results: list[ScenarioResult] = []
    for path in paths:
        try:
            results += run_files([path], tracking)
        finally:
            tracking.release_all()
    relevant = [
        ScenarioResult(r.file, r.name, tuple(e for e in r.results if e.kind in BACKEND_KINDS))
        for r in results
    ]
    failed = any(e.status is Status.FAILED for r in relevant for e in r.results)
    return results, format_report(relevant) if failed else None


# -- the whole suite ---------------------------------------------------------------------


def run_conformance(
    backend_factory: BackendFactory,
    *,
    max_examples: int = 200,
    scenario_paths: Sequence[str | os.PathLike[str]] | None = None,
    derandomize: bool = True,
    capabilities: Capabilities | None = None,
    probes_per_step: int = 6,
    stateful_step_count: int = 8,
    config_strategy: st.SearchStrategy[Any] | None = None,
    backend_name: str | None = None,
    shrink_seconds: float | None = 60,
    check_observed: bool = True,
) -> None:
    """Check a backend against svcnet's reference semantics; raise AssertionError
    with a readable report if it disagrees anywhere.

    Runs the scenario files (``scenario_paths``; default
    :func:`default_scenario_paths`; ``[]`` for none) and then
    ``max_examples`` random clusters of up to ``stateful_step_count`` events each
    through :func:`make_agreement_machine`. ``derandomize`` (the default) makes
    every run check the same examples. Shrinking a failure stops after about
    ``shrink_seconds`` (the report then shows the smallest cluster found so far;
    see :class:`ShrinkBudget`). The error kinds of obvious mistakes are checked
    first (:func:`check_error_kinds`). ``check_observed``: also check, after every
    install, that ``observed_plan()`` equals the installed plan (see the module doc).
    """
    name = backend_name or _name_of(backend_factory)
    reports: list[str] = []
    caps = capabilities if capabilities is not None else capabilities_of(backend_factory)
    mistakes = check_error_kinds(backend_factory, capabilities=caps)
    if mistakes:
        reports.append(
            f"error kinds: backend {name!r} answers mistakes differently\n  "
            + "\n  ".join(mistakes)
        )
    paths = default_scenario_paths() if scenario_paths is None else list(scenario_paths)
    if paths:
        _, scenario_report = run_scenarios(backend_factory, paths)
        if scenario_report is not None:
            reports.append(f"scenario files: backend {name!r} fails some\n{scenario_report}")
    machine = make_agreement_machine(
        backend_factory,
        config_strategy=config_strategy,
        probes_per_step=probes_per_step,
        capabilities=capabilities,
        backend_name=name,
        shrink_seconds=shrink_seconds,
        check_observed=check_observed,
    )
    options: dict[str, Any] = {}
    if derandomize:
        options["database"] = None
    run_settings = settings(
        max_examples=max_examples,
        derandomize=derandomize,
        deadline=None,
        stateful_step_count=stateful_step_count,
        suppress_health_check=list(HealthCheck),
        print_blob=not derandomize,
        **options,
    )
    try:
        run_state_machine_as_test(machine, settings=run_settings)  # type: ignore[no-untyped-call,unused-ignore]
    except AssertionError as e:
        reports.append(f"random clusters (shrunk): {e}")
    if reports:
        raise AssertionError(
            f"svcnet conformance: backend {name!r} FAILED\n\n" + "\n\n".join(reports)
        )


# -- error kinds -------------------------------------------------------------------------

_MISTAKE_NODE = "node-a"


def _mistake_plan(node: str) -> Plan:
    """One node, one ClusterIP service with one ready endpoint (IPv4, TCP)."""
    objects: list[KubeObject] = [
        Node(node, pod_cidrs=("10.244.1.0/24",), addresses=("192.168.56.11",)),
        Pod("default", "web-1", labels=Labels.of({"app": "web"}), node_name=node,
            ports=(ContainerPort(8080),), pod_ips=("10.244.1.10",), ready=True),
        Service("default", "web", selector=Labels.of({"app": "web"}),
                ports=(ServicePort(80, target_port=8080),), cluster_ips=("10.96.0.10",)),
    ]  # fmt: skip
    state = ClusterState.empty(ClusterConfig()).step(Apply(tuple(objects)))
    return plan_mod.compile(state, node)


def check_error_kinds(
    backend_factory: BackendFactory, *, capabilities: Capabilities | None = None
) -> list[str]:
    """What is wrong with how the backend refuses obvious mistakes ([] = nothing).

    Every backend must raise :class:`~svcnet.errors.BackendError` of the same kind
    for the same mistake, and change nothing: ``apply()`` before ``sync()`` is
    ``STATE``, a plan for another node ``STATE``, removing or replacing a service
    that is not installed ``NOT_FOUND``, adding one that is ``EXISTS``. Skipped
    (``[]``) for a backend without IPv4 or TCP."""
    caps = capabilities if capabilities is not None else capabilities_of(backend_factory)
    if IPFamily.IPv4 not in caps.families or Protocol.TCP not in caps.protocols:
        return []
    plan = _mistake_plan(_MISTAKE_NODE)
    (web,) = plan.services.values()
    ghost = ServicePlan(ServiceRef("default", "ghost"), web.cluster_ips, web.ports)
    probe = Probe(SourceKind.POD, "10.244.1.99", _MISTAKE_NODE, "10.96.0.10", 80)
    problems: list[str] = []

    def expect(
        what: str, kind: BackendErrorKind, backend: Backend, act: Callable[[], None]
    ) -> None:
        installed = backend.installed
        before = backend.evaluate(probe) if installed is not None else None
        try:
            act()
        except BackendError as e:
            if e.kind is not kind:
                problems.append(f"{what}: expected {kind.name}, raised {e.kind.name} ({e})")
        except Exception as e:
            problems.append(
                f"{what}: expected BackendError {kind.name}, raised {type(e).__name__}: {e}"
            )
        else:
            problems.append(f"{what}: expected BackendError {kind.name}, nothing raised")
        if backend.installed is not installed:
            problems.append(f"{what}: the refused call changed the installed plan")
        elif before is not None and backend.evaluate(probe) != before:
            problems.append(f"{what}: the refused call changed what is installed")

    settings_ = plan.settings
    mistakes: list[tuple[str, BackendErrorKind, Callable[[Backend], None]]] = [
        ("apply() before sync()", BackendErrorKind.STATE,
         lambda b: b.apply(Changes(settings_, added=(web,)))),
    ]  # fmt: skip
    installed: list[tuple[str, BackendErrorKind, Callable[[Backend], None]]] = [
        ("remove a service that is not installed", BackendErrorKind.NOT_FOUND,
         lambda b: b.apply(Changes(settings_, removed=(ghost.ref,)))),
        ("replace a service that is not installed", BackendErrorKind.NOT_FOUND,
         lambda b: b.apply(Changes(settings_, replaced=(ghost,)))),
        ("add a service that is installed", BackendErrorKind.EXISTS,
         lambda b: b.apply(Changes(settings_, added=(web,)))),
        ("sync() a plan for another node", BackendErrorKind.STATE,
         lambda b: b.sync(_mistake_plan("node-z"))),
    ]  # fmt: skip
    backend = backend_factory(_MISTAKE_NODE)
    try:
        for what, kind, act in mistakes:
            expect(what, kind, backend, functools.partial(act, backend))
        backend.sync(plan)
        for what, kind, act in installed:
            expect(what, kind, backend, functools.partial(act, backend))
    finally:
        _dispose(backend_factory, backend)
    return problems
