"""MemoryBackend.observed_plan(): the tables read back as a plan (contract 1.1)."""

from __future__ import annotations

import pytest
from clusters import events, seeded_state_clusters
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from svcnet_memory import MemoryBackend

from svcnet.backend import Backend
from svcnet.errors import BackendError, BackendErrorKind, SvcnetError
from svcnet.plan import Changes, NodeSettings, Plan, advance, compile
from svcnet.probe import Outcome, Probe
from svcnet.state import ClusterState
from svcnet.testing import run_conformance
from svcnet.testing.agreement import ObservedPlanUnsupported

OBSERVED = settings(
    derandomize=True,
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _nodes(state: ClusterState) -> list[str]:
    return sorted(state.nodes) or ["node-a"]


@OBSERVED
@given(seeded_state_clusters, st.data())
def test_observed_plan_is_the_installed_plan(state: ClusterState, data: st.DataObject) -> None:
    """After sync and after each apply, the tables read back equal the plan."""
    for node in _nodes(state):
        backend = MemoryBackend(node)
        assert backend.observed_plan() == Plan(NodeSettings(node, (), (), ()))
        plan = compile(state, node)
        backend.sync(plan)
        assert backend.observed_plan() == plan
        current = state
        for _ in range(3):
            event = events(data.draw, current)
            try:
                nxt = current.step(event)
            except SvcnetError:
                continue
            plan, changes = advance(plan, current, nxt)
            backend.apply(changes)
            current = nxt
            assert backend.observed_plan() == compile(nxt, node)


@OBSERVED
@given(seeded_state_clusters)
def test_a_removed_entry_shows_in_the_service_it_belonged_to(state: ClusterState) -> None:
    for node in _nodes(state):
        backend = MemoryBackend(node)
        plan = compile(state, node)
        backend.sync(plan)
        tables = backend._tables
        if not tables.frontends:
            continue
        key = sorted(tables.frontends, key=str)[0]
        refs = set(tables.frontends.pop(key))  # hand damage: one frontend entry gone
        observed = backend.observed_plan()
        assert observed != plan
        changed = {s.ref for s in observed.diff(plan).replaced}
        assert changed == refs, f"damage to {key} showed in {changed}"


def test_a_backend_for_contract_1_0_does_not_implement_it() -> None:
    class Old(Backend):  # what a third-party backend written for 1.0 looks like
        name = "old"
        contract = "1.0"

        def _install(self, changes: Changes, target: Plan, *, full: bool) -> None: ...
        def observe(self) -> object:
            return None

        def evaluate(self, probe: Probe) -> Outcome:
            raise NotImplementedError

        def cleanup(self) -> None: ...

    with pytest.raises(BackendError) as e:
        Old("node-a").observed_plan()
    assert e.value.kind is BackendErrorKind.UNSUPPORTED
    assert "old backend (contract 1.0)" in str(e.value)


class ForgetsAService(MemoryBackend):
    """Reads back one service fewer than it installed (the last, by reference)."""

    name = "mutant-forgets-a-service"

    def observed_plan(self) -> Plan:
        plan = super().observed_plan()
        if not plan.services:
            return plan
        return Plan(plan.settings, plan.services.remove(max(plan.services)))


class WrittenForContract10(MemoryBackend):
    """A backend written before observed_plan(): the base class's answer."""

    name = "contract-1.0"
    contract = "1.0"

    def observed_plan(self) -> Plan:
        return Backend.observed_plan(self)


def test_the_harness_checks_observed_plan_after_each_install() -> None:
    with pytest.raises(AssertionError) as err:
        run_conformance(ForgetsAService, scenario_paths=[], max_examples=50, shrink_seconds=10)
    report = str(err.value)
    assert "observed_plan() on node" in report and "is not the plan it installed" in report
    assert "--- installed" in report and "+++ observed" in report
    assert "\n-service " in report  # the service it forgot, in the plan's own text
    assert "Plan(" not in report and "NodeSettings(" not in report


def test_the_harness_skips_the_check_for_a_1_0_backend_and_says_why() -> None:
    with pytest.warns(ObservedPlanUnsupported, match="contract 1.0.*not checked"):
        run_conformance(WrittenForContract10, scenario_paths=[], max_examples=5)
