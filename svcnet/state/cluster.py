"""The cluster state and every transition of it.

Theory of operation
-------------------
A :class:`ClusterState` is an immutable value. ``state.step(event)`` returns a
new state or raises (ValidationError, ConflictError, NotFoundError); the caller
keeps the old one either way. All data is held in pyrsistent maps and sets, so
a step copies only the O(log n) paths it changes and shares the rest.

A step runs in a private, short-lived :class:`_Txn` that rebinds persistent
values (never mutating one that the old state holds), in three phases:

1. apply each object (nodes of an Apply first, so pods in the same batch can
   get IPs from them), allocating through :mod:`svcnet.state.allocation`
   (ClusterIPs, NodePorts, LoadBalancer addresses, pod IPs; replacing an object
   keeps what was allocated to it) and updating the indexes;
2. collect the services whose endpoints may have changed: a pod event reaches
   only services selecting the pod (services are indexed per namespace by one
   ``(key, value)`` pair of their selector), a node event the services of the
   pods on that node, a slice event its service, a service event itself;
3. recompute the endpoints of just those services (:mod:`svcnet.state.endpoints`;
   candidate pods come from the ``(namespace, key, value)`` pod index), and
   record what changed in a bounded ring (``changed_since``).

Only when every phase succeeded is a new state built, revision + 1.

Public API (relied on by svcnet.plan, svcnet.semantics, svcnet.scenario and
the CLI): :class:`ClusterState` (fields ``config``, ``nodes``, ``pods``,
``services``, ``slices``, ``endpoints``, ``deployments``, ``replica_sets``,
``revision``; ``empty()``, ``step()``, ``service_endpoints()``, ``changed_since()``;
for :mod:`svcnet.workloads` ``owned_pods()``, ``pod_count()``, ``unscheduled_pods``,
``unreported_pods``), :class:`Touched`, the events
:class:`Apply`, :class:`Delete`, :class:`Configure`, ``Event`` and :func:`step`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import attrs
from pyrsistent import PMap, PSet, PVector, pmap, pset, pvector

from svcnet import _gc
from svcnet.errors import NotFoundError, ValidationError
from svcnet.model import (
    ClusterConfig,
    Deployment,
    Endpoint,
    EndpointSlice,
    Kind,
    KubeObject,
    Node,
    ObjectKey,
    Pod,
    PodPhase,
    ReplicaSet,
    Service,
    ServiceType,
)
from svcnet.state import _bulk
from svcnet.state import authority as _authority
from svcnet.state import endpoints as _ep
from svcnet.state import room as _room
from svcnet.state.allocation import PodAllocations, ServiceAllocations
from svcnet.state.workloads import check_workload

LOG_SIZE = 4096  # revisions changed_since can answer for

NsName = tuple[str, str]
EndpointMap = PMap[str, tuple[Endpoint, ...]]


@attrs.frozen
class Touched:
    """What a span of revisions touched, by key only (not a delta: the values are
    in the states): the services whose spec, allocations or endpoints changed, the
    nodes added, removed or changed, and whether the configuration changed.
    Answered by :meth:`ClusterState.changed_since`; the plan's incremental update
    recompiles from it. (The plan's own delta, what a backend applies, is
    :class:`svcnet.plan.Changes`.)"""

    services: frozenset[NsName] = frozenset()  # spec, allocation or endpoints changed
    nodes: frozenset[str] = frozenset()  # added, removed or changed
    config: bool = False


def _objects(value: Iterable[KubeObject]) -> tuple[KubeObject, ...]:
    return tuple(value)


def _keys(value: Iterable[ObjectKey]) -> tuple[ObjectKey, ...]:
    return tuple(value)


@attrs.frozen
class Apply:
    """Create or replace ``objects``, all or nothing."""

    objects: tuple[KubeObject, ...] = attrs.field(converter=_objects)


@attrs.frozen
class Delete:
    """Delete the objects named by ``keys``, all or nothing."""

    keys: tuple[ObjectKey, ...] = attrs.field(converter=_keys)


@attrs.frozen
class Configure:
    config: ClusterConfig


Event = Apply | Delete | Configure


@attrs.frozen
class _LogEntry:
    revision: int
    touched: Touched
    # the keys of the objects the step added, replaced or deleted (None: it cannot
    # tell, a configuration change), and the lineage: the entry of the state it was
    # stepped from (its token) and its own, compared by identity
    objects: frozenset[ObjectKey] | None = None
    parent: object = attrs.field(default=None, eq=False)
    token: object = attrs.field(factory=object, eq=False)


@attrs.frozen
class _Index:
    svc_by_pair: PMap[tuple[str, str, str], PSet[str]] = attrs.field(factory=pmap)
    pods_by_label: PMap[tuple[str, str, str], PSet[str]] = attrs.field(factory=pmap)
    pods_by_node: PMap[str, PSet[NsName]] = attrs.field(factory=pmap)
    slices_by_svc: PMap[NsName, PSet[str]] = attrs.field(factory=pmap)
    # for svcnet.workloads: pods by their controlling ReplicaSet, pods on no node,
    # scheduled pods no kubelet has reported on (phase None)
    pods_by_owner: PMap[NsName, PSet[str]] = attrs.field(factory=pmap)
    unscheduled: PSet[NsName] = attrs.field(factory=pset)
    unreported: PSet[NsName] = attrs.field(factory=pset)


def _alloc_for(config: ClusterConfig) -> ServiceAllocations:
    try:
        return ServiceAllocations.for_config(
            config.service_cidrs, config.node_port_range, config.load_balancer_pool
        )
    except ValueError as e:
        raise ValidationError("ClusterConfig", "", str(e)) from None


def _default_alloc(state: ClusterState) -> ServiceAllocations:
    return _alloc_for(state.config)


def _empty_log() -> PVector[Any]:
    return pvector([None] * LOG_SIZE)


@attrs.frozen
class ClusterState:
    config: ClusterConfig = attrs.field(factory=ClusterConfig)
    nodes: PMap[str, Node] = attrs.field(factory=pmap)
    pods: PMap[NsName, Pod] = attrs.field(factory=pmap)
    services: PMap[NsName, Service] = attrs.field(factory=pmap)
    slices: PMap[NsName, EndpointSlice] = attrs.field(factory=pmap)
    endpoints: PMap[NsName, EndpointMap] = attrs.field(factory=pmap)
    deployments: PMap[NsName, Deployment] = attrs.field(factory=pmap)
    replica_sets: PMap[NsName, ReplicaSet] = attrs.field(factory=pmap)
    revision: int = 0
    # Private: allocators, indexes, the change log; built by empty()/step() only.
    _svc_alloc: ServiceAllocations = attrs.field(
        default=attrs.Factory(_default_alloc, takes_self=True), repr=False
    )
    _pod_alloc: PodAllocations = attrs.field(factory=PodAllocations, repr=False)
    _index: _Index = attrs.field(factory=_Index, repr=False)
    _log: PVector[Any] = attrs.field(factory=_empty_log, repr=False, eq=False)
    _recomputed: frozenset[NsName] = attrs.field(default=frozenset(), repr=False, eq=False)

    @classmethod
    def empty(cls, config: ClusterConfig = ClusterConfig()) -> ClusterState:  # noqa: B008
        _check_config(config)
        return cls(config=config)

    def step(self, event: Event) -> ClusterState:
        if isinstance(event, Apply):
            # Nodes first (pods of the batch get IPs from them), then pods that
            # carry their IPs (so they win over pods of the batch allocated from the
            # same podCIDR), then the rest in the order given.
            bulk = _is_bulk(self, len(event.objects))
            # A large batch allocates millions of short-lived containers: the
            # collector's full passes over the growing heap would cost more than
            # the step itself, so it waits until the step is done.
            with _gc.paused(bulk):
                objects = sorted(event.objects, key=_apply_order)
                _refuse_exhausting(self, objects)
                txn = _Txn(self, bulk)
                for obj in objects:
                    txn.apply(obj)
                return txn.finish()
        txn = _Txn(self)
        if isinstance(event, Delete):
            for key in event.keys:
                txn.delete(key)
        elif isinstance(event, Configure):
            txn.configure(event.config)
        else:
            raise TypeError(f"not an event: {event!r}")
        return txn.finish()

    def service_endpoints(self, namespace: str, name: str) -> Mapping[str, tuple[Endpoint, ...]]:
        return self.endpoints.get((namespace, name), pmap())

    def changed_since(self, revision: int) -> Touched | None:
        if revision > self.revision or revision < 0 or revision < self.revision - LOG_SIZE:
            return None
        services: set[NsName] = set()
        nodes: set[str] = set()
        config = False
        for rev in range(revision + 1, self.revision + 1):
            entry = self._log[rev % LOG_SIZE]
            if entry is None or entry.revision != rev:
                return None
            services |= entry.touched.services
            nodes |= entry.touched.nodes
            config = config or entry.touched.config
        return Touched(frozenset(services), frozenset(nodes), config)

    def objects_changed_since(self, older: ClusterState) -> frozenset[ObjectKey] | None:
        """The keys of the objects (nodes, pods, services, slices) that differ
        between ``older`` and this state, when this state was stepped from
        ``older`` (cost: the steps in between). None when it cannot tell: this
        state does not descend from ``older``, more than the log's steps lie
        between, or a configuration change (which may touch every object) did."""
        if older is self:
            return frozenset()
        if not 0 < self.revision - older.revision < LOG_SIZE:
            return None
        base = older._log[older.revision % LOG_SIZE]
        if base is None or base.revision != older.revision:
            return None
        keys: set[ObjectKey] = set()
        expect: object = None
        for rev in range(self.revision, older.revision, -1):
            entry = self._log[rev % LOG_SIZE]
            if entry is None or entry.revision != rev or entry.objects is None:
                return None
            if expect is not None and entry.token is not expect:
                return None
            keys |= entry.objects
            expect = entry.parent
        return frozenset(keys) if expect is base.token else None

    def owned_pods(self, namespace: str, replica_set: str) -> tuple[Pod, ...]:
        """The pods whose controller is ReplicaSet ``namespace/replica_set``, by name."""
        names = self._index.pods_by_owner.get((namespace, replica_set), ())
        return tuple(self.pods[(namespace, n)] for n in sorted(names))

    @property
    def pod_owners(self) -> tuple[NsName, ...]:
        """The ReplicaSets (namespace, name) that control at least one pod, existing
        or not (a pod outlives its deleted owner until collected)."""
        return tuple(sorted(self._index.pods_by_owner))

    def pod_count(self, node: str) -> int:
        """How many pods are on ``node``."""
        return len(self._index.pods_by_node.get(node, ()))

    @property
    def unscheduled_pods(self) -> tuple[Pod, ...]:
        """The pods without a node (``spec.nodeName`` empty), by key."""
        return tuple(self.pods[k] for k in sorted(self._index.unscheduled))

    @property
    def unreported_pods(self) -> tuple[Pod, ...]:
        """The pods on a node, not ready, not terminating, that no kubelet reported
        running (no phase, or Pending), by key."""
        return tuple(self.pods[k] for k in sorted(self._index.unreported))

    @property
    def last_recomputed(self) -> frozenset[NsName]:
        """Services whose endpoints the last step recomputed (diagnostics)."""
        return self._recomputed


def step(state: ClusterState, event: Event) -> ClusterState:
    return state.step(event)


def _refuse_exhausting(state: ClusterState, objects: Sequence[KubeObject]) -> None:
    """Refuse at once a batch that cannot fit its service CIDR
    (:func:`svcnet.state.room.refuse_exhausting` over its services)."""
    _room.refuse_exhausting(state, [_room.claim_of(o) for o in objects if isinstance(o, Service)])


def _apply_order(obj: KubeObject) -> int:
    if isinstance(obj, Node):
        return 0
    return 1 if isinstance(obj, Pod) and obj.pod_ips else 2


def _workload_map(kind: Kind) -> str:
    return "deployments" if kind is Kind.DEPLOYMENT else "replica_sets"


def _check_config(config: ClusterConfig) -> None:
    _alloc_for(config)
    lo, hi = config.node_port_range
    if not 0 < lo <= hi <= 65535:
        raise ValidationError(
            "ClusterConfig", "nodePortRange", f"invalid range {lo}-{hi}", value=(lo, hi)
        )


def _svc_key(key: NsName) -> ObjectKey:
    return ObjectKey(Kind.SERVICE, key[0], key[1])


_add = _bulk.index_add
_remove = _bulk.index_remove

# An Apply of at least this many objects, and at least 1/BULK_SHARE of the state's
# size, runs on mutable working copies (see svcnet.state._bulk): thawing and freezing
# cost O(state), a persistent update per object ~0.3 ms.
BULK_MIN = 256
BULK_SHARE = 8


def _is_bulk(state: ClusterState, count: int) -> bool:
    size = len(state.pods) + len(state.services) + len(state.slices) + len(state.nodes)
    return count >= BULK_MIN and count * BULK_SHARE >= size


class _Txn:
    """The working copy of one step. Holds only persistent values; discarded on error."""

    def __init__(self, st: ClusterState, bulk: bool = False) -> None:
        self.old = st
        self.bulk = bulk
        self.config = st.config
        self.api = st.config.api_authority  # objects as given: no allocation
        self.nodes = st.nodes
        self.pods = st.pods
        self.services = st.services
        self.slices = st.slices
        self.endpoints = st.endpoints
        self.deployments = st.deployments
        self.replica_sets = st.replica_sets
        self.svc_alloc: ServiceAllocations = st._svc_alloc
        self.pod_alloc: PodAllocations = st._pod_alloc
        ix = st._index
        self.svc_by_pair = ix.svc_by_pair
        self.pods_by_label = ix.pods_by_label
        self.pods_by_node = ix.pods_by_node
        self.slices_by_svc = ix.slices_by_svc
        self.pods_by_owner = ix.pods_by_owner
        self.unscheduled = ix.unscheduled
        self.unreported = ix.unreported
        self.dirty: set[NsName] = set()
        self.changed_services: set[NsName] = set()
        self.changed_nodes: set[str] = set()
        self.config_changed = False
        self.objects: set[ObjectKey] = set()  # added, replaced or deleted
        if bulk:
            self._thaw()

    def _thaw(self) -> None:
        thaw = _bulk.thaw_map
        self.nodes, self.pods = thaw(self.nodes), thaw(self.pods)
        self.services = thaw(self.services)
        self.slices, self.endpoints = thaw(self.slices), thaw(self.endpoints)
        self.deployments, self.replica_sets = thaw(self.deployments), thaw(self.replica_sets)
        self.svc_by_pair, self.pods_by_label = thaw(self.svc_by_pair), thaw(self.pods_by_label)
        self.pods_by_node, self.slices_by_svc = thaw(self.pods_by_node), thaw(self.slices_by_svc)
        self.pods_by_owner = thaw(self.pods_by_owner)
        self.unscheduled = cast("PSet[NsName]", _bulk.MSet(self.unscheduled))
        self.unreported = cast("PSet[NsName]", _bulk.MSet(self.unreported))
        sa = self.svc_alloc
        self.svc_alloc = attrs.evolve(
            sa,
            cluster_ips=cast(
                "PMap[Any, Any]",
                _bulk.MMap((f, _bulk.thaw_pool(p)) for f, p in sa.cluster_ips.items()),
            ),
            node_ports=_bulk.thaw_pool(sa.node_ports),
            lb_pools=tuple((f, _bulk.thaw_pool(p)) for f, p in sa.lb_pools),
        )
        pa = self.pod_alloc
        pools = _bulk.MMap((n, _bulk.thaw_pools(ps)) for n, ps in pa.pod_pools.items())
        self.pod_alloc = attrs.evolve(pa, pod_pools=cast("PMap[str, tuple[Any, ...]]", pools))

    def _freeze(self) -> None:
        freeze, index = _bulk.freeze_map, _bulk.freeze_index
        self.nodes, self.pods, self.services = (
            freeze(self.nodes),
            freeze(self.pods),
            freeze(self.services),
        )
        self.slices, self.endpoints = freeze(self.slices), freeze(self.endpoints)
        self.deployments, self.replica_sets = freeze(self.deployments), freeze(self.replica_sets)
        self.svc_by_pair, self.pods_by_label = index(self.svc_by_pair), index(self.pods_by_label)
        self.pods_by_node, self.slices_by_svc = index(self.pods_by_node), index(self.slices_by_svc)
        self.pods_by_owner = index(self.pods_by_owner)
        self.unscheduled = _bulk.freeze_set(self.unscheduled)
        self.unreported = _bulk.freeze_set(self.unreported)
        sa = self.svc_alloc
        self.svc_alloc = attrs.evolve(
            sa,
            cluster_ips=pmap({f: _bulk.freeze_pool(p) for f, p in sa.cluster_ips.items()}),
            node_ports=_bulk.freeze_pool(sa.node_ports),
            lb_pools=tuple((f, _bulk.freeze_pool(p)) for f, p in sa.lb_pools),
        )
        pa = self.pod_alloc
        self.pod_alloc = attrs.evolve(
            pa, pod_pools=_bulk.freeze_map(pa.pod_pools, _bulk.freeze_pools)
        )

    # ------------------------------------------------------------------ dispatch
    def apply(self, obj: KubeObject) -> None:
        if isinstance(obj, Node):
            self.apply_node(obj)
        elif isinstance(obj, Pod):
            self.apply_pod(obj)
        elif isinstance(obj, Service):
            self.apply_service(obj)
        elif isinstance(obj, EndpointSlice):
            self.apply_slice(obj)
        elif isinstance(obj, Deployment | ReplicaSet):
            self.apply_workload(obj)
        else:
            raise TypeError(f"cannot apply {obj!r}")

    def delete(self, key: ObjectKey) -> None:
        k = (key.namespace, key.name)
        if key.kind is Kind.NODE:
            if key.name not in self.nodes:
                raise NotFoundError(str(key))
            self.delete_node(key.name)
        elif key.kind is Kind.POD:
            if k not in self.pods:
                raise NotFoundError(str(key))
            self.delete_pod(k)
        elif key.kind is Kind.SERVICE:
            if k not in self.services:
                raise NotFoundError(str(key))
            self.delete_service(k)
        elif key.kind in (Kind.DEPLOYMENT, Kind.REPLICA_SET):
            self.delete_workload(key)
        else:
            if k not in self.slices:
                raise NotFoundError(str(key))
            self.delete_slice(k)

    # ------------------------------------------------------------------ pods
    def _selector_pair(self, svc: Service) -> tuple[str, str] | None:
        if self.api or not _ep.has_selector(svc):  # the API's slices, never selectors
            return None
        assert svc.selector is not None
        return svc.selector.items_[0]

    def _touch_pod(self, pod: Pod) -> None:
        """Mark the services selecting ``pod`` dirty."""
        ns, dirty = pod.namespace, self.dirty
        for k, v in pod.labels.pairs():
            for name in self.svc_by_pair.get((ns, k, v), ()):
                key = (ns, name)
                if key not in dirty and _ep.selects(self.services[key], pod):
                    dirty.add(key)

    def _index_pod(self, pod: Pod, add: bool) -> None:
        op = _add if add else _remove
        key = (pod.namespace, pod.name)
        for k, v in pod.labels.pairs():
            self.pods_by_label = op(self.pods_by_label, (pod.namespace, k, v), pod.name)
        if pod.node_name:
            self.pods_by_node = op(self.pods_by_node, pod.node_name, key)
        if pod.owner is not None and pod.owner.kind == Kind.REPLICA_SET.value:
            self.pods_by_owner = op(self.pods_by_owner, (pod.namespace, pod.owner.name), pod.name)
        if not pod.node_name:
            self.unscheduled = self.unscheduled.add(key) if add else self.unscheduled.discard(key)
        elif (pod.phase is None or pod.phase is PodPhase.PENDING) and not (
            pod.ready or pod.terminating or pod.status_reported
        ):
            self.unreported = self.unreported.add(key) if add else self.unreported.discard(key)

    def _set_pod(self, old: Pod | None, pod: Pod) -> None:
        if old is not None:
            self._index_pod(old, False)
            self._touch_pod(old)
        self._index_pod(pod, True)
        self._touch_pod(pod)
        self.pods = self.pods.set((pod.namespace, pod.name), pod)
        self.objects.add(pod.key)

    def _serve_pods(self, node: str) -> None:
        if not node or not self.pod_alloc.pods_waiting(node):
            return
        self.pod_alloc, served = self.pod_alloc.serve_pod_waiting(
            node, lambda k: self.pods[(k.namespace, k.name)]
        )
        for pod in served:
            self._set_pod(self.pods[(pod.namespace, pod.name)], pod)

    def apply_pod(self, new: Pod) -> None:
        old = self.pods.get((new.namespace, new.name))
        if self.api:
            self._set_pod(old, new)
            return
        self.pod_alloc, pod = self.pod_alloc.assign_pod(old, new)
        self._set_pod(old, pod)
        if (
            old is not None
            and old.pod_ips_allocated
            and not (pod.pod_ips_allocated and pod.node_name == old.node_name)
        ):
            self._serve_pods(old.node_name)

    def delete_pod(self, key: NsName) -> None:
        old = self.pods[key]
        if not self.api:
            self.pod_alloc = self.pod_alloc.release_pod(old)
        self._index_pod(old, False)
        self._touch_pod(old)
        self.pods = self.pods.remove(key)
        self.objects.add(old.key)
        if old.pod_ips_allocated and not self.api:
            self._serve_pods(old.node_name)

    # ------------------------------------------------------------------ nodes
    def _pods_on(self, node: str) -> list[Pod]:
        return [self.pods[k] for k in self.pods_by_node.get(node, ())]

    def apply_node(self, node: Node) -> None:
        old = self.nodes.get(node.name)
        on_node = self._pods_on(node.name)
        changed: Iterable[Pod] = ()
        if not self.api:
            self.pod_alloc, changed = self.pod_alloc.set_node(old, node, on_node)
        if self.bulk and not self.api:  # the node's new pools, thawed like the others
            pools = self.pod_alloc.pod_pools  # a thawed map: set() changes it in place
            pools.set(node.name, _bulk.thaw_pools(pools[node.name]))
        self.nodes = self.nodes.set(node.name, node)
        self.objects.add(node.key)
        for pod in changed:
            self._set_pod(self.pods[(pod.namespace, pod.name)], pod)
        if old != node:
            self.changed_nodes.add(node.name)
            for pod in on_node:
                self._touch_pod(pod)

    def delete_node(self, name: str) -> None:
        on_node = self._pods_on(name)
        changed: Iterable[Pod] = ()
        if not self.api:
            self.pod_alloc, changed = self.pod_alloc.remove_node(name, on_node)
        self.nodes = self.nodes.remove(name)
        self.objects.add(ObjectKey(Kind.NODE, "", name))
        self.changed_nodes.add(name)
        for pod in changed:
            self._set_pod(self.pods[(pod.namespace, pod.name)], pod)
        for pod in on_node:
            self._touch_pod(pod)

    # ------------------------------------------------------------------ services
    def _index_service(self, svc: Service, add: bool) -> None:
        pair = self._selector_pair(svc)
        if pair is not None:
            op = _add if add else _remove
            self.svc_by_pair = op(self.svc_by_pair, (svc.namespace, *pair), svc.name)

    def _serve_lb(self) -> None:
        if not self.svc_alloc.lb_waiting:
            return
        self.svc_alloc, served = self.svc_alloc.serve_lb_waiting(
            lambda k: self.services[(k.namespace, k.name)]
        )
        for svc in served:
            key = (svc.namespace, svc.name)
            self.services = self.services.set(key, svc)
            self.objects.add(svc.key)
            self.changed_services.add(key)

    def apply_service(self, new: Service) -> None:
        key = (new.namespace, new.name)
        old = self.services.get(key)
        if self.api:
            svc = _authority.as_given(new)
        else:
            self.svc_alloc, svc = self.svc_alloc.allocate_service(old, new)
        if old is not None:
            self._index_service(old, False)
        self._index_service(svc, True)
        self.services = self.services.set(key, svc)
        self.objects.add(svc.key)
        self.dirty.add(key)
        if svc != old:
            self.changed_services.add(key)
        if (
            old is not None
            and not self.api
            and not old.status_ingress
            and set(old.load_balancer_ips) - set(svc.load_balancer_ips)
        ):
            self._serve_lb()

    def delete_service(self, key: NsName) -> None:
        old = self.services[key]
        if not self.api:
            self.svc_alloc = self.svc_alloc.release_service(old)
        self._index_service(old, False)
        self.services = self.services.remove(key)
        self.objects.add(old.key)
        self.changed_services.add(key)
        self.dirty.add(key)
        if old.load_balancer_ips and not old.status_ingress and not self.api:
            self._serve_lb()

    # ------------------------------------------------------------------ slices
    def apply_slice(self, new: EndpointSlice) -> None:
        key = (new.namespace, new.name)
        old = self.slices.get(key)
        if old is not None:
            self.slices_by_svc = _remove(
                self.slices_by_svc, (old.namespace, old.service_name), old.name
            )
            self.dirty.add((old.namespace, old.service_name))
        self.slices_by_svc = _add(self.slices_by_svc, (new.namespace, new.service_name), new.name)
        self.slices = self.slices.set(key, new)
        self.objects.add(new.key)
        self.dirty.add((new.namespace, new.service_name))

    def delete_slice(self, key: NsName) -> None:
        old = self.slices[key]
        self.slices_by_svc = _remove(
            self.slices_by_svc, (old.namespace, old.service_name), old.name
        )
        self.slices = self.slices.remove(key)
        self.objects.add(old.key)
        self.dirty.add((old.namespace, old.service_name))

    # ------------------------------------------------------------------ workloads
    def apply_workload(self, obj: Deployment | ReplicaSet) -> None:
        """Store a Deployment or ReplicaSet (no controller runs here: see
        :mod:`svcnet.workloads`). Its selector cannot change, as in apps/v1."""
        check_workload(obj)
        name = _workload_map(obj.key.kind)
        current: PMap[NsName, Any] = getattr(self, name)
        key = (obj.namespace, obj.name)
        old = current.get(key)
        if old is not None and old.selector != obj.selector:
            raise ValidationError(str(obj.key), "spec.selector", "field is immutable")
        setattr(self, name, current.set(key, obj))
        self.objects.add(obj.key)

    def delete_workload(self, key: ObjectKey) -> None:
        name = _workload_map(key.kind)
        current: PMap[NsName, Any] = getattr(self, name)
        k = (key.namespace, key.name)
        if k not in current:
            raise NotFoundError(str(key))
        setattr(self, name, current.remove(k))
        self.objects.add(key)

    # ------------------------------------------------------------------ config
    def configure(self, config: ClusterConfig) -> None:
        _check_config(config)
        empty = not (self.services or self.pods or self.slices or self.nodes)
        _authority.check_switch(self.config, config, empty)
        self.api = config.api_authority
        try:
            if self.api:  # nothing is allocated: the allocators stay empty
                self.svc_alloc = _alloc_for(config)
            else:
                self.svc_alloc = self.svc_alloc.reconfigure(
                    config.service_cidrs,
                    config.node_port_range,
                    config.load_balancer_pool,
                    self.services.values(),
                )
        except ValueError as e:
            if isinstance(e, ValidationError):
                raise
            raise ValidationError("ClusterConfig", "", str(e)) from None
        if config != self.config:
            self.config_changed = True
        self.config = config
        self.dirty.update(self.services.keys())
        if not self.api:
            self._serve_lb()

    # ------------------------------------------------------------------ finish
    def _candidate_pods(self, svc: Service) -> Iterable[Pod]:
        assert svc.selector is not None
        ns = svc.namespace
        best: Any = None
        for k, v in svc.selector.pairs():
            names = self.pods_by_label.get((ns, k, v), ())
            if best is None or len(names) < len(best):
                best = names
        return [self.pods[(ns, n)] for n in best or ()]

    def _compute(self, svc: Service) -> EndpointMap | None:
        if svc.type is ServiceType.EXTERNAL_NAME:
            return None
        if _ep.has_selector(svc) and not self.api:
            assert svc.selector is not None
            pods = self._candidate_pods(svc)
            slices: list[EndpointSlice] = []
            # the candidates of a one-pair selector are the pods with that pair
            selected = len(svc.selector) == 1
        else:
            pods, selected = (), False
            names = self.slices_by_svc.get((svc.namespace, svc.name), ())
            slices = [self.slices[(svc.namespace, n)] for n in names]
        return _ep.compute(svc, pods, self.nodes, slices, self.config, selected)

    def _entry(self, revision: int, touched: Touched) -> _LogEntry:
        old = self.old
        parent = old._log[old.revision % LOG_SIZE]
        return _LogEntry(
            revision,
            touched,
            None if self.config_changed else frozenset(self.objects),
            None if parent is None or parent.revision != old.revision else parent.token,
        )

    def finish(self) -> ClusterState:
        old = self.old
        for key in self.dirty:
            svc = self.services.get(key)
            entry = None if svc is None else self._compute(svc)
            before = self.endpoints.get(key)
            if entry is None:
                if before is not None:
                    self.endpoints = self.endpoints.remove(key)
                    self.changed_services.add(key)
            elif entry != before:
                self.endpoints = self.endpoints.set(key, entry)
                self.changed_services.add(key)
        if self.bulk:
            self._freeze()
        revision = old.revision + 1
        touched = Touched(
            frozenset(self.changed_services), frozenset(self.changed_nodes), self.config_changed
        )
        return ClusterState(
            config=self.config,
            nodes=self.nodes,
            pods=self.pods,
            services=self.services,
            slices=self.slices,
            endpoints=self.endpoints,
            deployments=self.deployments,
            replica_sets=self.replica_sets,
            revision=revision,
            svc_alloc=self.svc_alloc,
            pod_alloc=self.pod_alloc,
            index=_Index(
                self.svc_by_pair,
                self.pods_by_label,
                self.pods_by_node,
                self.slices_by_svc,
                self.pods_by_owner,
                self.unscheduled,
                self.unreported,
            ),
            log=old._log.set(revision % LOG_SIZE, self._entry(revision, touched)),
            recomputed=frozenset(self.dirty),
        )
