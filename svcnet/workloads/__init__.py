"""Workloads in the pure core: Deployment and ReplicaSet controllers, a simulated
scheduler and kubelet, and :func:`settle`, which runs them until nothing changes.

Nothing here does I/O or reads a clock: the state revision is the logical time and
every generated name comes from the state, so applying the same events to the same
state gives the same result. The store (after each change) and the lab call
:func:`settle`; ``ClusterState.step`` itself runs no controller.
"""

from __future__ import annotations

from collections.abc import Iterator

from svcnet.state import ClusterState, Event
from svcnet.workloads.controllers import (
    DeploymentStatus,
    active_pods,
    deployment_status,
    fenceposts,
    reconcile,
    resolve,
)
from svcnet.workloads.names import pod_name, template_hash
from svcnet.workloads.node import UNSCHEDULABLE, kubelet, mark_ready, schedule
from svcnet.workloads.ranking import deletion_cost, rank_for_deletion

__all__ = [
    "UNSCHEDULABLE",
    "DeploymentStatus",
    "active_pods",
    "deletion_cost",
    "deployment_status",
    "fenceposts",
    "kubelet",
    "mark_ready",
    "pod_name",
    "rank_for_deletion",
    "reconcile",
    "resolve",
    "rounds",
    "schedule",
    "settle",
    "template_hash",
]

MAX_ROUNDS = 100


def _apply(state: ClusterState, events: tuple[Event, ...]) -> ClusterState:
    for event in events:
        state = state.step(event)
    return state


def rounds(
    state: ClusterState, *, kubelet: bool = True, max_rounds: int = MAX_ROUNDS
) -> Iterator[ClusterState]:
    """The state after each round that changed something: :func:`reconcile`, then
    :func:`schedule`, then (with ``kubelet``) the kubelet. Stops when a round
    changes nothing, or after ``max_rounds`` rounds."""
    run_kubelet = kubelet
    for _ in range(max_rounds):
        before = state
        state = _apply(state, reconcile(state))
        state = _apply(state, schedule(state))
        if run_kubelet:
            state = _apply(state, _kubelet(state))
        if state is before:
            return
        yield state


_kubelet = kubelet


def settle(
    state: ClusterState, *, kubelet: bool = True, max_rounds: int = MAX_ROUNDS
) -> ClusterState:
    """``state`` with the controllers, scheduler and (with ``kubelet``; a lab passes
    False and reports readiness itself with :func:`mark_ready`) kubelet run until
    nothing changes (at most ``max_rounds`` rounds). Returns ``state`` itself when
    there was nothing to do."""
    last = state
    for last in rounds(state, kubelet=kubelet, max_rounds=max_rounds):  # noqa: B007
        pass
    return last
