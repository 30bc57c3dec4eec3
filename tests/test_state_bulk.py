"""A large Apply runs on mutable working copies (svcnet.state._bulk): it must give
exactly the state (objects, allocations, indexes, endpoints) or the refusal that the
persistent path gives, and the states it builds must step on exactly like the others."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svcnet.errors import SvcnetError
from svcnet.model import ClusterConfig, Labels, Node, Pod, Service, ServicePort
from svcnet.state import Apply, ClusterState, Event
from svcnet.state import cluster as cluster_mod
from svcnet.state._bulk import SMALL, freeze_index, index_add, index_remove
from svcnet.testing.strategies import draw_cluster_objects, draw_config, draw_event

SETTINGS = settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


def run(state: ClusterState, event: Event, bulk: bool) -> ClusterState | str:
    old = (cluster_mod.BULK_MIN, cluster_mod.BULK_SHARE)
    cluster_mod.BULK_MIN, cluster_mod.BULK_SHARE = (1, 10**9) if bulk else (10**9, 1)
    try:
        return state.step(event)
    except SvcnetError as e:
        return f"{type(e).__name__}: {e}"
    finally:
        cluster_mod.BULK_MIN, cluster_mod.BULK_SHARE = old


def same(a: ClusterState | str, b: ClusterState | str) -> None:
    if isinstance(a, str) or isinstance(b, str):
        assert a == b
        return
    assert a == b  # every eq field: objects, endpoints, allocators, indexes
    assert a._index == b._index
    assert a._svc_alloc == b._svc_alloc and a._pod_alloc == b._pod_alloc
    assert a.changed_since(a.revision - 1) == b.changed_since(b.revision - 1)
    assert a.last_recomputed == b.last_recomputed
    assert hash(a._index) == hash(b._index)


@SETTINGS
@given(st.data())
def test_one_batch_bulk_equals_persistent(data: st.DataObject) -> None:
    config = data.draw(st.composite(draw_config)())
    objects = data.draw(st.composite(lambda d: draw_cluster_objects(d, config))())
    start = ClusterState.empty(config)
    same(run(start, Apply(objects), bulk=True), run(start, Apply(objects), bulk=False))


@SETTINGS
@given(st.data())
def test_states_built_in_bulk_step_on_alike(data: st.DataObject) -> None:
    """Random events after a bulk-built and a persistently built state: equal after
    each (pools whose trees are built lazily included); each event also in bulk."""
    config = data.draw(st.composite(draw_config)())
    objects = data.draw(st.composite(lambda d: draw_cluster_objects(d, config))())
    a = run(ClusterState.empty(config), Apply(objects), bulk=True)
    b = run(ClusterState.empty(config), Apply(objects), bulk=False)
    same(a, b)
    if isinstance(a, str) or isinstance(b, str):
        return
    for _ in range(data.draw(st.integers(1, 12))):
        event = data.draw(st.composite(draw_event)(b))
        na, nb = run(a, event, bulk=False), run(b, event, bulk=False)
        same(na, nb)
        same(run(b, event, bulk=True), nb)
        if not isinstance(na, str) and not isinstance(nb, str):
            a, b = na, nb


def test_pod_cidr_exhausted_in_bulk_waits_like_persistent() -> None:
    """More pods than a /29 podCIDR holds, and pods released and re-taken inside one
    batch: the same pods wait, the same IPs are handed out."""
    config = ClusterConfig(service_cidrs=("10.96.0.0/24",), cluster_cidrs=("10.0.0.0/8",))
    node = Node("n1", pod_cidrs=("10.1.0.0/29",), addresses=("192.168.0.1",))
    pods = [Pod("default", f"p{i}", labels={"app": "a"}, node_name="n1") for i in range(9)]
    svc = Service("default", "s", selector=Labels.of({"app": "a"}), ports=(ServicePort(80),))
    batch = Apply((node, *pods, svc, *pods[:2]))  # the first two replaced in the same batch
    a = run(ClusterState.empty(config), batch, bulk=True)
    b = run(ClusterState.empty(config), batch, bulk=False)
    same(a, b)
    assert not isinstance(a, str)
    assert sum(1 for p in a.pods.values() if p.pod_ips) == 5  # .2-.6 of the /29
    freed = a.step(Apply((Node("n1", pod_cidrs=("10.1.0.0/28",), addresses=("192.168.0.1",)),)))
    assert sum(1 for p in freed.pods.values() if p.pod_ips) == 9


def test_cluster_ips_exhausted_in_bulk_refused_like_persistent() -> None:
    config = ClusterConfig(service_cidrs=("10.96.0.0/28",))
    services = [Service("default", f"s{i}", ports=(ServicePort(80),)) for i in range(20)]
    pinned = Service("default", "pinned", cluster_ips=("10.96.0.14",), ports=(ServicePort(80),))
    for batch in (Apply(services), Apply((pinned, *services[:12])), Apply(services[:13])):
        a = run(ClusterState.empty(config), batch, bulk=True)
        b = run(ClusterState.empty(config), batch, bulk=False)
        same(a, b)


@SETTINGS
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 80)), max_size=200))
def test_index_sets_are_canonical(ops: list[tuple[bool, int, int]]) -> None:
    """An index map updated persistently, or in a thawed copy then frozen, holds a
    frozenset up to SMALL members and a PSet above, never an empty set."""
    from pyrsistent import PSet, pmap

    from svcnet.state._bulk import MMap

    persistent = pmap()
    mutable = MMap()
    model: dict[int, set[int]] = {}
    for add, key, value in ops:
        op = index_add if add else index_remove
        persistent = op(persistent, key, value)
        mutable = op(mutable, key, value)
        if add:
            model.setdefault(key, set()).add(value)
        elif value in model.get(key, set()):
            model[key].discard(value)
            if not model[key]:
                del model[key]
    frozen = freeze_index(mutable)
    for m in (persistent, frozen):
        assert {k: set(v) for k, v in m.items()} == model
        for v in m.values():
            assert type(v) is (frozenset if len(v) <= SMALL else type(v))
            assert len(v) <= SMALL or isinstance(v, PSet)
    assert persistent == frozen and hash(persistent) == hash(frozen)
