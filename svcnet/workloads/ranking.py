"""Which pods a ReplicaSet deletes first when it scales down: Kubernetes'
``ActivePodsWithRanks`` order (pkg/controller/controller_utils.go), with the state
revision as the clock:

1. unassigned before assigned;
2. Pending before Unknown before Running (no phase reported counts as Pending);
3. not ready before ready;
4. lower ``controller.kubernetes.io/pod-deletion-cost`` first;
5. more pods of the same Deployment on the pod's node first (doubled up);
6. ready more recently first (ready at an unknown time first);
7. more restarts first;
8. newer first (unknown creation time first);

then by name, so the order is total and a replay deletes the same pods. Kubernetes
compares ready and creation times on a logarithmic scale; with logical times the
plain comparison is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from svcnet.model import DELETION_COST_ANNOTATION, Pod, PodPhase

__all__ = ["deletion_cost", "rank_for_deletion"]

_NEVER = 1 << 62  # an unknown time: sorts as the most recent
_PHASE_RANK = {None: 0, PodPhase.PENDING: 0, PodPhase.UNKNOWN: 1, PodPhase.RUNNING: 2}


def deletion_cost(pod: Pod) -> int:
    """The pod-deletion-cost annotation (0 when absent or not an int32)."""
    text = pod.annotations.get(DELETION_COST_ANNOTATION, "")
    try:
        cost = int(text)
    except ValueError:
        return 0
    return cost if -(2**31) <= cost < 2**31 else 0


def _key(pod: Pod, doubled: int) -> tuple[int, int, int, int, int, int, int, int, str]:
    ready_since = (pod.ready_since or _NEVER) if pod.ready else 0
    return (
        1 if pod.node_name else 0,
        _PHASE_RANK.get(pod.phase, 2),
        1 if pod.ready else 0,
        deletion_cost(pod),
        -doubled,
        -ready_since,
        -pod.restarts,
        -(pod.created or _NEVER),
        pod.name,
    )


def rank_for_deletion(pods: Iterable[Pod], related: Sequence[Pod] = ()) -> list[Pod]:
    """``pods`` in deletion order (the first deleted first). ``related``: the pods of
    every ReplicaSet of the same Deployment (``pods`` when empty), counted per node
    for rule 5."""
    pods = list(pods)
    on_node: Mapping[str, int] = _count(related or pods)
    return sorted(pods, key=lambda p: _key(p, on_node.get(p.node_name, 0)))


def _count(pods: Iterable[Pod]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in pods:
        out[p.node_name] = out.get(p.node_name, 0) + 1
    return out
