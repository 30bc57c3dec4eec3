"""Property tests of svcnet.workloads: for random sequences of Deployment creates,
scales, template changes (rollout restarts), pod deletions and Deployment
deletions, settling after each converges (every Deployment has its replicas of
ready pods of its current template, old ReplicaSets are empty, nothing is left of
a deleted Deployment, a pod name is never given twice) and replaying the same
events gives an identical state."""

from __future__ import annotations

import re
from typing import Any

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svcnet import workloads
from svcnet.model import (
    POD_TEMPLATE_HASH_LABEL,
    RESTARTED_AT_ANNOTATION,
    ContainerPort,
    Deployment,
    DeploymentStrategy,
    Kind,
    Node,
    ObjectKey,
    PodTemplate,
    Selector,
    StrategyType,
)
from svcnet.state import Apply, ClusterState, Delete, Event
from svcnet.workloads import names

NAMES = ("web", "api", "db")
STRATEGIES = (
    DeploymentStrategy(),
    DeploymentStrategy(StrategyType.ROLLING_UPDATE, 1, 0),
    DeploymentStrategy(StrategyType.ROLLING_UPDATE, 0, "50%"),
    DeploymentStrategy(StrategyType.RECREATE),
)
NODES = tuple(Node(f"node-{i}", pod_cidrs=(f"10.244.{i}.0/24",)) for i in range(3))
POD_NAME = re.compile(rf"([a-z]+)-([{names.ALPHANUMS}]+)-[{names.ALPHANUMS}]{{5}}")

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("create"),
            st.sampled_from(NAMES),
            st.integers(0, 5),
            st.integers(0, len(STRATEGIES) - 1),
        ),
        st.tuples(st.just("scale"), st.sampled_from(NAMES), st.integers(0, 6)),
        st.tuples(st.just("restart"), st.sampled_from(NAMES), st.integers(0, 3)),
        st.tuples(st.just("delete-pod"), st.integers(0, 30)),
        st.tuples(st.just("delete"), st.sampled_from(NAMES)),
    ),
    max_size=12,
)


def _deployment(name: str, replicas: int, strategy: int) -> Deployment:
    labels = {"app": name}
    template = PodTemplate(labels=labels, ports=(ContainerPort(80, "http"),))
    return Deployment(
        "default",
        name,
        Selector.from_labels(labels),
        template,
        replicas=replicas,
        strategy=STRATEGIES[strategy],
    )


def _event(state: ClusterState, op: tuple[Any, ...]) -> Event | None:
    """The event ``op`` makes of ``state`` (None when it names nothing there)."""
    kind = op[0]
    if kind == "delete-pod":
        keys = sorted(state.pods)
        return Delete((state.pods[keys[op[1] % len(keys)]].key,)) if keys else None
    dep = state.deployments.get(("default", op[1]))
    if kind == "create":
        return Apply((_deployment(op[1], op[2], op[3]),))
    if dep is None:
        return None
    if kind == "scale":
        return Apply((attrs.evolve(dep, replicas=op[2]),))
    if kind == "restart":
        notes = {**dep.template.annotations, RESTARTED_AT_ANNOTATION: f"t{op[2]}"}
        return Apply((attrs.evolve(dep, template=attrs.evolve(dep.template, annotations=notes)),))
    return Delete((ObjectKey(Kind.DEPLOYMENT, "default", op[1]),))


def _run(script: list[tuple[Any, ...]]) -> tuple[ClusterState, list[ClusterState]]:
    state = ClusterState.empty().step(Apply(NODES))
    settled = []
    for op in script:
        event = _event(state, op)
        if event is not None:
            state = workloads.settle(state.step(event))
            settled.append(state)
    return state, settled


def _check_converged(state: ClusterState) -> None:
    assert workloads.reconcile(state) == ()
    assert workloads.schedule(state) == () and workloads.kubelet(state) == ()
    expected = 0
    for (ns, name), dep in state.deployments.items():
        current = workloads.template_hash(dep.template)
        owned = [
            rs
            for rs in state.replica_sets.values()
            if rs.owner is not None and rs.owner.name == name and rs.namespace == ns
        ]
        (new,) = [rs for rs in owned if rs.template_hash == current]
        assert new.replicas == dep.replicas and dep.revision == new.revision
        pods = workloads.active_pods(state, new)
        assert len(pods) == dep.replicas and all(p.ready and p.pod_ips for p in pods)
        for rs in owned:
            if rs is not new:
                assert rs.replicas == 0 and not state.owned_pods(ns, rs.name)
        assert len(owned) <= 1 + dep.revision_history_limit
        expected += dep.replicas
    assert len(state.pods) == expected
    for pod in state.pods.values():  # nothing of a deleted Deployment is left
        match = POD_NAME.fullmatch(pod.name)
        assert match is not None, pod.name
        assert ("default", match.group(1)) in state.deployments
        assert pod.owner is not None and ("default", pod.owner.name) in state.replica_sets
        assert pod.labels[POD_TEMPLATE_HASH_LABEL] == match.group(2)
    for rs in state.replica_sets.values():
        assert rs.owner is not None and ("default", rs.owner.name) in state.deployments


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
@given(ops)
def test_settle_converges_and_replays_identically(script: list[tuple[Any, ...]]) -> None:
    state, settled = _run(script)
    ever: dict[str, int] = {}  # pod name -> the first settled state it was in
    gone: set[str] = set()
    for i, each in enumerate(settled):
        _check_converged(each)
        now = {name for _, name in each.pods}
        assert not now & gone, f"a pod name came back: {sorted(now & gone)}"
        for name in now:
            ever.setdefault(name, i)
        gone |= set(ever) - now
    again, _ = _run(script)
    assert again == state
    assert sorted(again.pods) == sorted(state.pods)
    assert {k: p for k, p in again.pods.items()} == dict(state.pods.items())
