"""The Deployment and ReplicaSet controllers and the garbage collector, pure.

:func:`reconcile` looks at a state and returns the events that move it one step
towards what its Deployments and ReplicaSets ask for, as Kubernetes' controllers
(pkg/controller/deployment, pkg/controller/replicaset) do in one sync each:

* A Deployment owns ReplicaSets named ``<deployment>-<pod-template-hash>``; the one
  whose template is the Deployment's (ignoring the hash label) is the new one, made
  when missing with revision ``max(old) + 1``. RollingUpdate does one action a sync:
  scale the new one up within ``replicas + maxSurge`` pods in all (maxSurge rounded
  up from a percent), else scale old ones down keeping ``replicas - maxUnavailable``
  available (rounded down; both 0 means maxUnavailable 1), unhealthy pods first,
  oldest ReplicaSet first. Recreate scales every old ReplicaSet to 0, waits until
  their pods are gone, then scales the new one up. Old ReplicaSets with no replicas
  and no pods beyond ``revisionHistoryLimit`` are deleted, oldest first.
* A ReplicaSet creates its missing pods (``<replicaset>-<5 characters>``, see
  :mod:`svcnet.workloads.names`) and deletes its surplus in
  :mod:`svcnet.workloads.ranking` order. It acts on the replicas the Deployment
  controller asked for in the same call.
* The garbage collector deletes ReplicaSets whose Deployment is gone and pods whose
  ReplicaSet is gone.

A pod is available as soon as it is ready (``minReadySeconds`` is not modelled); the
state revision is the clock (a pod's ``created``).
"""

from __future__ import annotations

import math

import attrs

from svcnet.model import (
    POD_TEMPLATE_HASH_LABEL,
    Deployment,
    Kind,
    Labels,
    ObjectKey,
    OwnerReference,
    Pod,
    PodPhase,
    PodTemplate,
    ReplicaSet,
    StrategyType,
)
from svcnet.state import Apply, ClusterState, Delete, Event, NsName
from svcnet.workloads.names import pod_name, template_hash, template_pod
from svcnet.workloads.ranking import rank_for_deletion

__all__ = [
    "DeploymentStatus",
    "active_pods",
    "deployment_status",
    "fenceposts",
    "reconcile",
    "resolve",
]


def resolve(value: int | str, total: int, round_up: bool) -> int:
    """A count or percent of ``total`` (Kubernetes' GetScaledValueFromIntOrPercent)."""
    if isinstance(value, int):
        return value
    scaled = int(value[:-1]) * total / 100
    return math.ceil(scaled) if round_up else math.floor(scaled)


def fenceposts(dep: Deployment) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as counts for ``dep.replicas``."""
    surge = resolve(dep.strategy.max_surge, dep.replicas, True)
    unavailable = resolve(dep.strategy.max_unavailable, dep.replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def active_pods(state: ClusterState, rs: ReplicaSet) -> tuple[Pod, ...]:
    """The ReplicaSet's pods that count: not terminating, not finished."""
    return tuple(
        p
        for p in state.owned_pods(rs.namespace, rs.name)
        if not p.terminating and p.phase not in (PodPhase.SUCCEEDED, PodPhase.FAILED)
    )


def _available(state: ClusterState, rs: ReplicaSet) -> int:
    return sum(1 for p in active_pods(state, rs) if p.ready)


def _without_hash(template: PodTemplate) -> PodTemplate:
    labels = {k: v for k, v in template.labels.items() if k != POD_TEMPLATE_HASH_LABEL}
    return attrs.evolve(template, labels=Labels.of(labels))


def _owned_by(obj: ReplicaSet | Pod, kind: Kind, name: str) -> bool:
    return obj.owner is not None and obj.owner.kind == kind.value and obj.owner.name == name


class _Work:
    """What one reconcile decided: ReplicaSets and Deployments to write, pods to
    create, objects to delete; ``rs`` is the ReplicaSets as they will be."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.rs: dict[NsName, ReplicaSet] = dict(state.replica_sets.items())
        self.writes: dict[ObjectKey, Deployment | ReplicaSet | Pod] = {}
        self.deletes: set[ObjectKey] = set()
        self.names: set[tuple[str, str]] = set()

    def put_rs(self, rs: ReplicaSet) -> None:
        key = (rs.namespace, rs.name)
        if self.state.replica_sets.get(key) != rs:
            self.writes[rs.key] = rs
        self.rs[key] = rs

    def scale(self, rs: ReplicaSet, replicas: int) -> None:
        self.put_rs(attrs.evolve(rs, replicas=replicas))

    def events(self) -> tuple[Event, ...]:
        out: list[Event] = []
        if self.writes:
            order = sorted(self.writes)
            out.append(Apply(tuple(self.writes[k] for k in order)))
        if self.deletes:
            out.append(Delete(tuple(sorted(self.deletes))))
        return tuple(out)


def reconcile(state: ClusterState) -> tuple[Event, ...]:
    """The events of one sync of every Deployment, ReplicaSet and the garbage
    collector (empty when nothing is to be done)."""
    if not (state.deployments or state.replica_sets or state.pod_owners):
        return ()
    work = _Work(state)
    _collect_garbage(work)
    for key in sorted(state.deployments):
        _sync_deployment(work, state.deployments[key])
    for key in sorted(work.rs):
        if ObjectKey(Kind.REPLICA_SET, *key) not in work.deletes:
            _sync_replica_set(work, work.rs[key])
    return work.events()


# ---------------------------------------------------------------- garbage collection


def _collect_garbage(work: _Work) -> None:
    state = work.state
    for (ns, name), rs in state.replica_sets.items():
        owner = rs.owner
        if (
            owner is not None
            and owner.kind == Kind.DEPLOYMENT.value
            and (ns, owner.name) not in state.deployments
        ):
            work.deletes.add(rs.key)
            del work.rs[(ns, name)]
            work.deletes.update(p.key for p in state.owned_pods(ns, name))
    for ns, name in state.pod_owners:
        if (ns, name) not in state.replica_sets:
            work.deletes.update(p.key for p in state.owned_pods(ns, name))


# ---------------------------------------------------------------- Deployment


def _new_replica_set(
    work: _Work, dep: Deployment, owned: list[ReplicaSet], revision: int
) -> ReplicaSet:
    """A new ReplicaSet for ``dep``'s template (0 replicas), named by its hash; the
    collision count goes up while the name is held by another template."""
    collisions = 0
    while True:
        hash_ = template_hash(dep.template, collisions)
        name = f"{dep.name}-{hash_}"
        if (dep.namespace, name) not in work.rs:
            break
        collisions += 1
    template = attrs.evolve(
        dep.template, labels=Labels.of({**dep.template.labels, POD_TEMPLATE_HASH_LABEL: hash_})
    )
    return ReplicaSet(
        namespace=dep.namespace,
        name=name,
        selector=dep.selector.with_label(POD_TEMPLATE_HASH_LABEL, hash_),
        template=template,
        labels=template.labels,
        replicas=0,
        owner=OwnerReference(Kind.DEPLOYMENT.value, dep.name),
        revision=revision,
        created=work.state.revision,
    )


def _sync_deployment(work: _Work, dep: Deployment) -> None:
    owned = sorted(
        (
            rs
            for (ns, _), rs in work.rs.items()
            if ns == dep.namespace and _owned_by(rs, Kind.DEPLOYMENT, dep.name)
        ),
        key=lambda r: (r.created, r.name),
    )
    new = next((rs for rs in owned if _without_hash(rs.template) == dep.template), None)
    old = [rs for rs in owned if rs is not new]
    max_old = max((rs.revision for rs in old), default=0)
    recreate = dep.strategy.type is StrategyType.RECREATE
    if recreate and _recreate_down(work, old):
        return  # old pods first
    if new is None:
        new = _new_replica_set(work, dep, owned, max_old + 1)
        work.put_rs(new)
    elif new.revision <= max_old:
        new = attrs.evolve(new, revision=max_old + 1)
        work.put_rs(new)
    if dep.revision != new.revision:
        work.writes[dep.key] = attrs.evolve(dep, revision=new.revision)
    if recreate:
        if new.replicas != dep.replicas:
            work.scale(new, dep.replicas)
    elif not _scale_new(work, dep, new, old):
        _scale_old(work, dep, new, old)
    _cleanup_history(work, dep, old)


def _recreate_down(work: _Work, old: list[ReplicaSet]) -> bool:
    """Recreate: scale old ReplicaSets to 0; True while any old pod is left."""
    waiting = False
    for rs in old:
        if rs.replicas:
            work.scale(rs, 0)
            waiting = True
        elif active_pods(work.state, rs):
            waiting = True
    return waiting


def _scale_new(work: _Work, dep: Deployment, new: ReplicaSet, old: list[ReplicaSet]) -> bool:
    """RollingUpdate, the new ReplicaSet's side (reconcileNewReplicaSet)."""
    if new.replicas == dep.replicas:
        return False
    if new.replicas > dep.replicas:
        work.scale(new, dep.replicas)
        return True
    surge, _ = fenceposts(dep)
    current = new.replicas + sum(rs.replicas for rs in old)
    most = dep.replicas + surge
    if current >= most:
        return False
    wanted = new.replicas + min(most - current, dep.replicas - new.replicas)
    if wanted == new.replicas:
        return False
    work.scale(new, wanted)
    return True


def _scale_old(work: _Work, dep: Deployment, new: ReplicaSet, old: list[ReplicaSet]) -> None:
    """RollingUpdate, the old ReplicaSets' side (reconcileOldReplicaSets): unhealthy
    replicas first, then available ones down to ``replicas - maxUnavailable``."""
    state = work.state
    if not sum(rs.replicas for rs in old):
        return
    _, unavailable = fenceposts(dep)
    min_available = dep.replicas - unavailable
    total = new.replicas + sum(rs.replicas for rs in old)
    new_unavailable = new.replicas - _available(state, new)
    budget = total - min_available - new_unavailable
    if budget <= 0:
        return
    current = list(old)
    cleaned = 0
    for i, rs in enumerate(current):  # oldest first
        if cleaned >= budget:
            break
        healthy = _available(state, rs)
        if rs.replicas == 0 or rs.replicas <= healthy:
            continue
        down = min(budget - cleaned, rs.replicas - healthy)
        current[i] = attrs.evolve(rs, replicas=rs.replicas - down)
        cleaned += down
    available = _available(state, new) + sum(_available(state, rs) for rs in current)
    room = available - min_available
    scaled = 0
    for i, rs in enumerate(current):
        if scaled >= room:
            break
        if rs.replicas == 0:
            continue
        down = min(rs.replicas, room - scaled)
        current[i] = attrs.evolve(rs, replicas=rs.replicas - down)
        scaled += down
    for before, after in zip(old, current, strict=True):
        if after.replicas != before.replicas:
            work.put_rs(after)


def _cleanup_history(work: _Work, dep: Deployment, old: list[ReplicaSet]) -> None:
    """Delete the oldest idle old ReplicaSets beyond ``revisionHistoryLimit``."""
    idle = [
        rs
        for rs in old
        if work.rs[(rs.namespace, rs.name)].replicas == 0
        and not work.state.owned_pods(rs.namespace, rs.name)
    ]
    extra = len(idle) - dep.revision_history_limit
    for rs in sorted(idle, key=lambda r: (r.revision, r.created, r.name))[: max(extra, 0)]:
        work.deletes.add(rs.key)
        work.writes.pop(rs.key, None)
        del work.rs[(rs.namespace, rs.name)]


# ---------------------------------------------------------------- ReplicaSet


def _sync_replica_set(work: _Work, rs: ReplicaSet) -> None:
    state = work.state
    pods = active_pods(state, rs)
    diff = len(pods) - rs.replicas
    if diff < 0:
        prefix = rs.name + "-"
        for i in range(-diff):
            seed = f"{rs.namespace}/{rs.name}/{state.revision}/{i}"
            name = pod_name(prefix, seed, _Taken(state, rs.namespace, work.names))
            work.names.add((rs.namespace, name))
            pod = attrs.evolve(
                template_pod(rs.template, rs.namespace, name),
                owner=OwnerReference(Kind.REPLICA_SET.value, rs.name),
                created=state.revision,
            )
            work.writes[pod.key] = pod
    elif diff > 0:
        related: list[Pod] = []
        owner = rs.owner
        if owner is not None and owner.kind == Kind.DEPLOYMENT.value:
            for other in work.rs.values():
                if other.namespace == rs.namespace and _owned_by(
                    other, Kind.DEPLOYMENT, owner.name
                ):
                    related.extend(active_pods(state, other))
        for pod in rank_for_deletion(pods, related)[:diff]:
            work.deletes.add(pod.key)


class _Taken:
    """Pod names in use in a namespace: the state's and those made in this sync."""

    def __init__(self, state: ClusterState, namespace: str, made: set[tuple[str, str]]) -> None:
        self.state, self.namespace, self.made = state, namespace, made

    def __contains__(self, name: object) -> bool:
        key = (self.namespace, str(name))
        return key in self.state.pods or key in self.made


# ---------------------------------------------------------------- status


@attrs.frozen
class DeploymentStatus:
    """What ``kubectl get/describe deployment`` and ``rollout status`` show, computed
    from the state (svcnet stores no Deployment status): pods of every ReplicaSet
    (``replicas``), of the new one (``updated``), ready and available ones,
    ``unavailable = max(desired - available, 0)``, the new and old ReplicaSets, and
    whether the rollout is complete."""

    desired: int
    replicas: int
    updated: int
    ready: int
    available: int
    unavailable: int
    new_replica_set: str  # "" before the controller made it
    old_replica_sets: tuple[str, ...]
    complete: bool


def deployment_status(state: ClusterState, dep: Deployment) -> DeploymentStatus:
    """The status of ``dep`` in ``state`` (see :class:`DeploymentStatus`)."""
    owned = sorted(
        (
            rs
            for rs in state.replica_sets.values()
            if rs.namespace == dep.namespace and _owned_by(rs, Kind.DEPLOYMENT, dep.name)
        ),
        key=lambda r: (r.created, r.name),
    )
    new = next((rs for rs in owned if _without_hash(rs.template) == dep.template), None)
    pods = {rs.name: active_pods(state, rs) for rs in owned}
    every = [p for group in pods.values() for p in group]
    updated = pods[new.name] if new is not None else ()
    available = sum(1 for p in every if p.ready)
    complete = (
        new is not None
        and new.replicas == dep.replicas
        and len(updated) == dep.replicas
        and len(every) == dep.replicas
        and all(p.ready for p in updated)
    )
    return DeploymentStatus(
        desired=dep.replicas,
        replicas=len(every),
        updated=len(updated),
        ready=available,
        available=available,
        unavailable=max(dep.replicas - available, 0),
        new_replica_set=new.name if new is not None else "",
        old_replica_sets=tuple(rs.name for rs in owned if rs is not new),
        complete=complete,
    )
