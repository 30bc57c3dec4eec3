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

A factory may carry ``capabilities`` (a backend class does) and ``release(backend)``,
called after a backend has been cleaned up and closed (to delete its network
namespace, for instance).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator, Sequence
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

import svcnet
from svcnet import manifests, semantics
from svcnet import plan as plan_mod
from svcnet.backend import Backend, BackendFactory, Capabilities
from svcnet.errors import SvcnetError
from svcnet.model import IPFamily, KubeObject, ObjectKey
from svcnet.plan import Plan
from svcnet.probe import Outcome
from svcnet.scenario import ScenarioResult, Status, format_report, run_files, same_outcome
from svcnet.state import Apply, ClusterState, Delete, Event
from svcnet.testing import strategies
from svcnet.testing.report import backend_error_report, failure_report

__all__ = [
    "BACKEND_KINDS",
    "capabilities_of",
    "default_scenario_paths",
    "make_agreement_machine",
    "run_conformance",
    "run_scenarios",
]

# Scenario expectations that involve the backend (DNS answers and refused applies
# never reach it: the core's own tests hold them).
BACKEND_KINDS = frozenset({"probe", "apply", "delete", "cleanup", "file"})

Step = tuple[str, list[dict[str, Any]]]  # ("apply" | "delete", documents)


def _target(factory: object) -> object:
    while isinstance(factory, functools.partial):
        factory = factory.func
    return factory


def capabilities_of(backend_factory: object) -> Capabilities:
    """The capabilities a factory declares (a Backend class, a partial of one, or
    any callable with a ``capabilities`` attribute); all of them otherwise."""
    for obj in (backend_factory, _target(backend_factory)):
        caps = getattr(obj, "capabilities", None)
        if isinstance(caps, Capabilities):
            return caps
    return Capabilities()


def _name_of(backend_factory: object) -> str:
    for obj in (backend_factory, _target(backend_factory)):
        name = getattr(obj, "name", None)
        if isinstance(name, str) and name:
            return name
    return getattr(_target(backend_factory), "__name__", "backend")


def _release(factory: object, backend: Backend) -> None:
    release = getattr(factory, "release", None)
    if callable(release):
        release(backend)


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
    return st.binary(min_size=nbytes, max_size=nbytes).map(
        lambda b: int.from_bytes(b, "little")
    )


_CLUSTER_SEED = _seed(80)
_EVENT_SEED = _seed(20)
_PROBE_SEED = _seed(32)


def make_agreement_machine(
    backend_factory: BackendFactory,
    *,
    config_strategy: st.SearchStrategy[Any] | None = None,
    probes_per_step: int = 6,
    capabilities: Capabilities | None = None,
    backend_name: str | None = None,
) -> type[RuleBasedStateMachine]:
    """A state machine class checking ``backend_factory``'s backends against the
    reference semantics (use its ``TestCase`` attribute as a unittest/pytest test,
    or :func:`run_conformance`).

    ``config_strategy`` draws the :class:`~svcnet.model.ClusterConfig` (default:
    :func:`strategies.configs` over the declared families); ``capabilities``
    defaults to what the factory declares; ``backend_name`` names it in reports.
    """
    caps = capabilities if capabilities is not None else capabilities_of(backend_factory)
    configs = config_strategy if config_strategy is not None else strategies.configs(caps)
    name = backend_name or _name_of(backend_factory)

    class AgreementMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.state = ClusterState.empty()
            self.backends: dict[str, Backend] = {}
            self.plans: dict[str, Plan] = {}
            self.steps: list[Step] = []
            self.refused = 0

        @initialize(config=configs, cluster=_CLUSTER_SEED, probes=_PROBE_SEED)
        def build_cluster(self, config: Any, cluster: int, probes: int) -> None:
            self.state = ClusterState.empty(config)
            digits = strategies.Digits(cluster)
            objects = strategies.draw_cluster_objects(digits, config, caps)
            self._change(Apply(tuple(objects)), probes)

        @rule(event=_EVENT_SEED, probes=_PROBE_SEED)
        def change(self, event: int, probes: int) -> None:
            digits = strategies.Digits(event)
            self._change(strategies.draw_event(digits, self.state, caps), probes)

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
                except Exception as e:
                    raise AssertionError(
                        backend_error_report(
                            backend_name=name, state=new, steps=self.steps, node=node, error=e
                        )
                    ) from e
                self.plans[node] = plan

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
            backend = self.backends.pop(node)
            try:
                backend.cleanup()
            finally:
                try:
                    backend.close()
                finally:
                    _release(backend_factory, backend)

        def teardown(self) -> None:
            errors = []
            for node in sorted(self.backends):
                try:
                    self._drop(node)
                except Exception as e:
                    errors.append(f"cleanup of node {node}: {type(e).__name__}: {e}")
            if errors:
                raise AssertionError(f"backend {name!r} failed to clean up: " + "; ".join(errors))

    AgreementMachine.__name__ = AgreementMachine.__qualname__ = f"AgreementMachine[{name}]"
    return AgreementMachine


# -- scenarios ---------------------------------------------------------------------------


def default_scenario_paths() -> list[Path]:
    """The scenario files shipped with svcnet: ``svcnet/scenarios/*.yaml`` when
    packaged, else ``tests/scenarios/*.yaml`` of the checkout svcnet runs from."""
    package = Path(svcnet.__file__).resolve().parent
    packaged = sorted((package / "scenarios").glob("*.yaml"))
    if packaged:
        return packaged
    return sorted((package.parent / "tests" / "scenarios").glob("*.yaml"))


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


@contextlib.contextmanager
def _shrinking_limited_to(seconds: int) -> Iterator[None]:
    """Bound Hypothesis' shrinking time (its engine's module constant; 300 s by
    default, far too long for a suite whose every example programs backends)."""
    from hypothesis.internal.conjecture import engine

    before = getattr(engine, "MAX_SHRINKING_SECONDS", None)
    if before is None:  # a Hypothesis without the knob: shrink as it likes
        yield
        return
    engine.MAX_SHRINKING_SECONDS = seconds
    try:
        yield
    finally:
        engine.MAX_SHRINKING_SECONDS = before


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
    shrink_seconds: int = 60,
) -> None:
    """Check a backend against svcnet's reference semantics; raise AssertionError
    with a readable report if it disagrees anywhere.

    Runs the scenario files (``scenario_paths``; default
    :func:`default_scenario_paths`; ``[]`` for none) and then
    ``max_examples`` random clusters of up to ``stateful_step_count`` events each
    through :func:`make_agreement_machine`. ``derandomize`` (the default) makes
    every run check the same examples. Shrinking a failure stops after about
    ``shrink_seconds`` (the report then shows the smallest cluster found so far).
    """
    name = backend_name or _name_of(backend_factory)
    reports: list[str] = []
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
        with _shrinking_limited_to(shrink_seconds):
            run_state_machine_as_test(machine, settings=run_settings)  # type: ignore[no-untyped-call,unused-ignore]
    except AssertionError as e:
        reports.append(f"random clusters (shrunk): {e}")
    if reports:
        raise AssertionError(
            f"svcnet conformance: backend {name!r} FAILED\n\n" + "\n\n".join(reports)
        )

