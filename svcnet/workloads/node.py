"""A simulated scheduler and kubelet, pure: events, never a change to what
``ClusterState.step(Apply)`` means (an applied pod with no Ready condition stays
not ready until one of these runs).

* :func:`schedule` binds each pod without ``spec.nodeName`` to a ready,
  schedulable node whose labels hold the pod's ``nodeSelector``, the one with the
  fewest pods (then by name), setting the ``PodScheduled=True`` condition. When no
  node fits, the pod stays Pending with ``PodScheduled=False``, reason
  ``Unschedulable`` and a message as the scheduler words it
  (``0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.``).
* :func:`kubelet` reports each not-ready pod on an existing node that has no phase
  (or is Pending) and has its IPs (or uses the host's network): phase Running,
  Ready, ready since the current revision. A pod applied with a status holding a
  Ready condition, True or False (``status_reported``), is left as it is: only a
  pod without status is the kubelet's. Pod IPs come from the state's allocation
  when the pod is bound (``pod_ips_allocated``); a pod whose node has no free
  address waits.
* :func:`mark_ready` is the event a lab writes when a pod's server answers and its
  readiness probe passes (or stops passing).
"""

from __future__ import annotations

import attrs

from svcnet.errors import NotFoundError
from svcnet.model import Kind, Node, ObjectKey, Pod, PodCondition, PodPhase
from svcnet.state import Apply, ClusterState, Event, NsName

__all__ = ["UNSCHEDULABLE", "kubelet", "mark_ready", "schedule", "unschedulable_message"]

UNSCHEDULABLE = "Unschedulable"
_SCHEDULED = "PodScheduled"


def _with_condition(pod: Pod, condition: PodCondition) -> Pod:
    others = tuple(c for c in pod.conditions if c.type != condition.type)
    return attrs.evolve(pod, conditions=(condition, *others))


def unschedulable_message(pod: Pod, nodes: list[Node]) -> str:
    """Why no node fits ``pod``, as the scheduler says it."""
    if not nodes:
        return "0/0 nodes are available: no nodes available to schedule pods."
    reasons: dict[str, int] = {}
    for node in nodes:
        if not node.ready:
            why = "node(s) were not ready"
        elif node.unschedulable:
            why = "node(s) were unschedulable"
        else:
            why = "node(s) didn't match Pod's node affinity/selector"
        reasons[why] = reasons.get(why, 0) + 1
    parts = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
    return f"0/{len(nodes)} nodes are available: {parts}."


def _fits(pod: Pod, node: Node) -> bool:
    if not node.ready or node.unschedulable:
        return False
    return all(node.labels.get(k) == v for k, v in pod.node_selector.items())


def schedule(state: ClusterState) -> tuple[Event, ...]:
    """Bind the pods without a node (see the module docstring); one Apply or none."""
    pending = [p for p in state.unscheduled_pods if not p.terminating]
    if not pending:
        return ()
    nodes = [state.nodes[n] for n in sorted(state.nodes)]
    load = {n.name: state.pod_count(n.name) for n in nodes}
    out: list[Pod] = []
    for pod in sorted(pending, key=lambda p: (p.created, p.namespace, p.name)):
        fitting = [n for n in nodes if _fits(pod, n)]
        if fitting:
            best = min(fitting, key=lambda n: (load[n.name], n.name))
            load[best.name] += 1
            bound = attrs.evolve(pod, node_name=best.name)
            out.append(_with_condition(bound, PodCondition(_SCHEDULED, "True")))
            continue
        condition = PodCondition(
            _SCHEDULED, "False", UNSCHEDULABLE, unschedulable_message(pod, nodes)
        )
        if pod.condition(_SCHEDULED) != condition or pod.phase is not PodPhase.PENDING:
            out.append(attrs.evolve(_with_condition(pod, condition), phase=PodPhase.PENDING))
    return (Apply(tuple(out)),) if out else ()


def kubelet(state: ClusterState) -> tuple[Event, ...]:
    """Report the bound pods no kubelet has reported on as Running and Ready; one
    Apply or none."""
    out = [
        attrs.evolve(pod, phase=PodPhase.RUNNING, ready=True, ready_since=state.revision)
        for pod in state.unreported_pods
        if not pod.terminating
        and not (pod.ready or pod.status_reported)
        and pod.node_name in state.nodes
        and (pod.pod_ips or pod.host_network)
    ]
    return (Apply(tuple(out)),) if out else ()


def mark_ready(state: ClusterState, pod_key: ObjectKey | NsName, ready: bool) -> Event:
    """The event that reports pod ``pod_key`` Running and ``ready`` (its ready time
    the current revision when it becomes ready). Raises NotFoundError."""
    key = pod_key if isinstance(pod_key, ObjectKey) else ObjectKey(Kind.POD, *pod_key)
    pod = state.pods.get((key.namespace, key.name))
    if pod is None or key.kind is not Kind.POD:
        raise NotFoundError(str(key))
    since = state.revision if ready and not pod.ready else pod.ready_since
    return Apply((attrs.evolve(pod, phase=PodPhase.RUNNING, ready=ready, ready_since=since),))
