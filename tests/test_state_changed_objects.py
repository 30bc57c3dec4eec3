"""ClusterState.objects_changed_since: the keys of the objects that differ between a
state and one of its ancestors, which lets the store save one change at the cost of
that change (svcnet.store.Session.save), checked against a full comparison."""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from svcnet.errors import SvcnetError
from svcnet.model import ClusterConfig, ObjectKey
from svcnet.state import Apply, ClusterState, Configure
from svcnet.state.cluster import LOG_SIZE
from svcnet.testing.strategies import draw_cluster_objects, draw_config, draw_event


def _all(state: ClusterState) -> dict[ObjectKey, Any]:
    out: dict[ObjectKey, Any] = {}
    for mapping in (state.nodes, state.pods, state.services, state.slices):
        out.update({obj.key: obj for obj in mapping.values()})
    return out


def _differ(a: ClusterState, b: ClusterState) -> set[ObjectKey]:
    x, y = _all(a), _all(b)
    return {k for k in x.keys() | y.keys() if x.get(k) != y.get(k)}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_keys_cover_every_difference_from_an_ancestor(data: st.DataObject) -> None:
    draw = data.draw
    config = draw_config(draw)
    try:
        start = ClusterState.empty(config).step(Apply(draw_cluster_objects(draw, config)))
    except SvcnetError:
        assume(False)  # a batch the state refuses
    states = [start]
    for _ in range(draw(st.integers(1, 8))):
        with contextlib.suppress(SvcnetError):  # refused: the state stays
            states.append(states[-1].step(draw_event(draw, states[-1])))
    last = states[-1]
    for older in states:
        keys = last.objects_changed_since(older)
        assert keys is not None
        assert _differ(older, last) <= keys  # never misses one (it may name a no-op)


def test_it_cannot_tell_for_a_state_of_another_lineage_or_a_new_configuration() -> None:
    config = ClusterConfig()
    a = ClusterState.empty(config).step(Apply(()))
    b = ClusterState.empty(config).step(Apply(()))  # same revision, another history
    assert b.revision == a.revision
    assert a.step(Apply(())).objects_changed_since(b) is None
    assert a.objects_changed_since(a) == frozenset()
    assert (
        ClusterState.empty(config).step(Apply(())).objects_changed_since(ClusterState.empty(config))
        is None
    )  # an empty state has no history to check the lineage with
    sibling = a.step(Apply(()))  # a branch from a
    assert a.step(Apply(())).step(Apply(())).objects_changed_since(sibling) is None
    wider = ClusterConfig(service_cidrs=("10.96.0.0/12",))
    assert a.step(Configure(wider)).objects_changed_since(a) is None
    assert a.objects_changed_since(a.step(Apply(()))) is None  # a descendant, not an ancestor


def test_it_cannot_tell_beyond_the_log() -> None:
    a = ClusterState.empty().step(Apply(()))
    b = a
    for _ in range(LOG_SIZE):
        b = b.step(Apply(()))
    assert b.objects_changed_since(a) is None
