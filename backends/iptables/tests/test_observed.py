"""observed.py: rendered rules, read back as iptables-save or libiptc would give them,
decode to the plan they were rendered from (pure; clusters drawn by
svcnet.testing.strategies)."""

from __future__ import annotations

import contextlib
import shlex

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import FakeKernel
from svcnet_iptables import IptablesBackend
from svcnet_iptables.observed import observed_plan
from svcnet_iptables.readback import Ruleset, build
from svcnet_iptables.render import FAMILIES, NAT, Renderer
from svcnet_iptables.sync import full_sync, partial_sync

from svcnet.errors import SvcnetError
from svcnet.plan import Plan, compile
from svcnet.state import Apply, ClusterState
from svcnet.testing import strategies

SETTINGS = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def carried(plan: Plan) -> Plan:
    """``plan`` without the ports left with no frontend (each lost to another
    service's claim): they render to nothing, so no read-back can hold them."""
    services = {
        ref: attrs.evolve(svc, ports=tuple(p for p in svc.ports if p.frontends))
        for ref, svc in plan.services.items()
    }
    return Plan(plan.settings, services)


def _state(data: st.DataObject) -> ClusterState:
    config = data.draw(strategies.configs(IptablesBackend.capabilities))
    state = ClusterState.empty(config)
    with contextlib.suppress(SvcnetError):
        objects = data.draw(strategies.cluster_objects(config, IptablesBackend.capabilities))
        state = state.step(Apply(tuple(objects)))
    return state


def _nodes(state: ClusterState) -> list[str]:
    return sorted(state.nodes) or ["node-a"]


def _as_libiptc(kernel: FakeKernel) -> Ruleset:
    """The fake kernel's rules the way the libiptc driver reads them: (chain, argv)
    pairs through readback.build, never through iptables-save text."""
    tables = {}
    for family in FAMILIES:
        for (f, name), chains in kernel.tables.items():
            if f is not family:
                continue
            pairs = [(c, shlex.split(r)) for c, rules in chains.items() for r in rules]
            tables[(family, name)] = build(family, name, pairs, chains)
    return Ruleset(tables)


@SETTINGS
@given(data=st.data())
def test_full_sync_reads_back_as_the_plan(data: st.DataObject) -> None:
    state = _state(data)
    for node in _nodes(state):
        plan = compile(state, node)
        kernel = FakeKernel()
        kernel.apply(full_sync(Renderer(), plan, {}))
        want = carried(plan)
        assert observed_plan(kernel.read(), node) == want, str(plan)
        assert observed_plan(_as_libiptc(kernel), node) == want


@SETTINGS
@given(data=st.data())
def test_incremental_syncs_read_back_as_each_plan(data: st.DataObject) -> None:
    state = _state(data)
    node = _nodes(state)[0]
    renderer = Renderer()
    plan = compile(state, node)
    kernel = FakeKernel()
    kernel.apply(full_sync(renderer, plan, {}))
    for _ in range(data.draw(st.integers(1, 5))):
        try:
            state = state.step(data.draw(strategies.events(state, IptablesBackend.capabilities)))
        except SvcnetError:
            continue  # refused: the state (and the plan) stay
        new = compile(state, node)
        kernel.apply(partial_sync(renderer, plan, new.diff(plan), new))
        plan = new
        assert observed_plan(kernel.read(), node) == carried(plan), str(plan)


def test_nothing_installed_reads_back_as_an_empty_plan_of_the_node() -> None:
    observed = observed_plan(FakeKernel().read(), "node-x")
    assert observed.node == "node-x"
    assert not observed.services


@SETTINGS
@given(data=st.data())
def test_a_deleted_rule_shows_in_the_observed_plan(data: st.DataObject) -> None:
    """Deleting any one rule of a service's own chains changes what is read back
    for that service."""
    state = _state(data)
    node = _nodes(state)[0]
    plan = compile(state, node)
    kernel = FakeKernel()
    renderer = Renderer()
    kernel.apply(full_sync(renderer, plan, {}))
    owned = [
        (family, chain, rule, svc.ref)
        for svc in plan.services.values()
        for family in FAMILIES
        for chain, rules in renderer.service(svc, plan.settings, family).chains[NAT].items()
        for rule in rules
    ]
    if not owned:
        return  # nothing rendered for any service on this node
    family, chain, rule, ref = data.draw(st.sampled_from(owned))
    kernel.tables[(family, NAT)][chain].remove(rule)
    observed = observed_plan(kernel.read(), node)
    want = carried(plan)
    assert observed != want
    assert observed.services.get(ref) != want.services[ref], f"deleting {chain} {rule}"
    others = {r: s for r, s in want.services.items() if r != ref}
    assert {r: s for r, s in observed.services.items() if r != ref} == others
