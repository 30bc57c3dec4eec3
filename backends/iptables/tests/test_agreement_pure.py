"""Rendered rules, applied to a fake --noflush kernel, read back and interpreted,
agree with svcnet.semantics on random clusters and event sequences (no root)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import FakeKernel, clusters, events, initial_state, probes, step
from svcnet_iptables.interpret import Interpreter
from svcnet_iptables.render import Renderer, full_sync, partial_sync

from svcnet import semantics
from svcnet.plan import compile
from svcnet.scenario import same_outcome


def _check(kernel: FakeKernel, state, node: str = "node-a") -> int:
    interp = Interpreter(kernel.read())
    n = 0
    for probe in probes(state, node):
        want = semantics.evaluate(state, probe)
        got = interp.evaluate(probe)
        assert same_outcome(got, want), f"{probe}: iptables {got} != semantics {want}"
        n += 1
    return n


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
        k: __import__("svcnet_iptables.render").render.Existing(t.own_chains, t.jumps)
        for k, t in before.tables.items()
    }
    kernel.apply(full_sync(Renderer(), plan, existing))
    assert str(kernel.read()) == str(before)
