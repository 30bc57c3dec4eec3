"""Rendered rules, applied to a fake --noflush kernel, read back and interpreted,
agree with svcnet.semantics on random clusters and event sequences (no root)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import FakeKernel, agree_with_semantics, clusters, events, initial_state, step
from svcnet_iptables.render import Renderer
from svcnet_iptables.sync import full_sync, partial_sync

from svcnet.plan import compile


def _check(kernel: FakeKernel, state, node: str = "node-a") -> int:
    return agree_with_semantics(kernel.read(), state, node)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batches=clusters(), data=st.data())
def test_incremental_agreement(batches, data):
    state = initial_state(batches)
    kernel = FakeKernel()
    renderer = Renderer()
    plan = compile(state, "node-a")
    kernel.apply(full_sync(renderer, plan, {}))
    assert _check(kernel, state) > 0
    for event in data.draw(events(nsvc=3)):
        new_state = step(state, event)
        new_plan = compile(new_state, "node-a")
        changes = new_plan.diff(plan)
        kernel.apply(partial_sync(renderer, plan, changes, new_plan))
        state, plan = new_state, new_plan
        _check(kernel, state)
    # a full resync over the incremental result lands on the same rules
    before = kernel.read()
    existing = {
        k: __import__("svcnet_iptables.sync").sync.Existing(t.own_chains, t.jumps)
        for k, t in before.tables.items()
    }
    kernel.apply(full_sync(Renderer(), plan, existing))
    assert str(kernel.read()) == str(before)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batches=clusters())
def test_declared_names_are_the_rendered_chains(batches):
    """A full sync declares every chain from service_chain_names() before any rule is
    rendered: those names must be exactly the chains render_service() fills."""
    from svcnet_iptables.render import FAMILIES, TABLES, render_service
    from svcnet_iptables.sync import service_chain_names

    state = initial_state(batches)
    for node in ("node-a", "node-b"):
        plan = compile(state, node)
        for svc in plan.services.values():
            for family in FAMILIES:
                rendered = render_service(svc, plan.settings, family)
                for table in TABLES:
                    names = service_chain_names(svc, family, table)
                    assert len(set(names)) == len(names), (svc.ref, table)
                    assert sorted(names) == sorted(rendered.chains[table]), (svc.ref, table)
