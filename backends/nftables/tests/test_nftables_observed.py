"""observed_plan(): the kernel's tables read back as a plan (contract 1.1), in a fresh
svcnet-nt-* namespace per test (see conftest). Random clusters from
svcnet.testing.strategies; the Hypothesis profile (conftest at the repository root)
derandomises them in CI."""

from __future__ import annotations

import contextlib
import difflib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plans import NODE, sample_plan
from svcnet_nftables import NftablesBackend

from conftest import nft_in
from svcnet.errors import SvcnetError
from svcnet.model import KubeObject
from svcnet.plan import NodeSettings, Plan, ServiceRef, advance, compile
from svcnet.state import Apply, ClusterState
from svcnet.testing import strategies as s

pytestmark = pytest.mark.kernel

EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


def _build(draw: st.DrawFn) -> ClusterState:
    """A random cluster; objects the state refuses (colliding pinned addresses) left out."""
    config = s.draw_config(draw)
    objects: list[KubeObject] = list(s.draw_cluster_objects(draw, config))
    state = ClusterState.empty(config)
    try:
        return state.step(Apply(tuple(objects)))
    except SvcnetError:
        pass
    for obj in objects:
        with contextlib.suppress(SvcnetError):
            state = state.step(Apply((obj,)))
    return state


clusters = st.composite(_build)


def _same(observed: Plan, expected: Plan, when: str) -> None:
    if observed != expected:
        diff = difflib.unified_diff(
            str(expected).splitlines(), str(observed).splitlines(), "plan", "kernel", lineterm=""
        )
        pytest.fail(f"{when}: the kernel holds another plan\n" + "\n".join(diff))


@EXAMPLES
@given(clusters(), st.data())
def test_observed_plan_is_the_installed_plan(
    netns: str, state: ClusterState, data: st.DataObject
) -> None:
    node = min(state.nodes) if state.nodes else NODE
    be = NftablesBackend(node, netns=netns)
    try:
        assert be.observed_plan() == Plan(NodeSettings(node, (), (), ()))
        plan = compile(state, node)
        be.sync(plan)
        _same(be.observed_plan(), plan, "after sync")
        for step in range(3):
            try:
                nxt = state.step(s.draw_event(data.draw, state))
            except SvcnetError:
                continue
            plan, changes = advance(plan, state, nxt)
            be.apply(changes)
            state = nxt
            assert be.fallbacks == 0, be.last_fallback
            _same(be.observed_plan(), compile(state, node), f"after apply #{step + 1}")
    finally:
        be.cleanup()
        be.close()


def test_a_deleted_endpoint_element_shows_in_its_service(netns: str) -> None:
    plan = sample_plan()
    be = NftablesBackend(NODE, netns=netns)
    try:
        be.sync(plan)
        _same(be.observed_plan(), plan, "after sync")
        # hand damage: the third endpoint of web's port 80, behind its ClusterIP
        nft_in(
            netns,
            "delete",
            "element",
            "ip",
            "svcnet",
            "eps-cluster-tcp",
            "{ 10.96.0.10 . tcp . 80 . 2 }",
        )
        observed = be.observed_plan()
        assert observed != plan
        changes = observed.diff(plan)
        web = ServiceRef("default", "web")
        assert [svc.ref for svc in changes.replaced] == [web]
        assert not changes.added and not changes.removed
        port = changes.replaced[0].ports[0]
        assert "10.244.2.11:8080" not in {str(e) for e in port.cluster_endpoints}
        assert "10.244.2.11:8080" in {str(e) for e in plan.services[web].ports[0].cluster_endpoints}
    finally:
        be.cleanup()
        be.close()


@EXAMPLES
@given(clusters(), st.data())
def test_a_deleted_frontend_element_shows_in_its_service(
    netns: str, state: ClusterState, data: st.DataObject
) -> None:
    node = min(state.nodes) if state.nodes else NODE
    plan = compile(state, node)
    frontends = [
        (svc.ref, port, fe)
        for svc in plan.services.values()
        for port in svc.ports
        for fe in port.frontends
    ]
    if not frontends:
        return  # nothing to damage in this cluster (the next examples have some)
    ref, port, fe = data.draw(st.sampled_from(sorted(frontends, key=str)), label="frontend")
    be = NftablesBackend(node, netns=netns)
    try:
        be.sync(plan)
        fam = "ip6" if ":" in fe.ip else "ip"
        key = f"{fe.ip} . {port.protocol.value.lower()} . {fe.port}"
        nft_in(netns, "delete", "element", fam, "svcnet", "fe", f"{{ {key} }}")
        observed = be.observed_plan()
        changes = observed.diff(plan)
        assert [svc.ref for svc in changes.replaced] == [ref], str(changes)
        assert fe not in {f for p in changes.replaced[0].ports for f in p.frontends}
    finally:
        be.cleanup()
        be.close()
