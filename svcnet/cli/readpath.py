"""``get`` and ``describe`` without replaying the store (I/O).

Every other command loads the whole state (:meth:`svcnet.store.Store.load`: every
object decoded, then replayed through ``ClusterState.step``): seconds at 10,000
services. What ``get`` and ``describe`` show is the objects as stored plus, for
services, the endpoints the state computed; the store keeps both (table
``objects``, and ``endpoints`` written by every save), so these commands read only
the rows they show (:class:`svcnet.store.Reader`) into a :class:`StoredState`: the
part of a :class:`~svcnet.state.ClusterState` the views read (the same view code
prints it, so the output is the same). Deployments, ReplicaSets, EndpointSlices,
``describe deployment``, ``get -w`` and a store whose endpoints table is not
current still list the whole state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import attrs

from svcnet.model import ClusterConfig, Endpoint, Kind, KubeObject, ObjectKey
from svcnet.state import ClusterState
from svcnet.store import Listing, Reader

__all__ = ["StoredState", "describe_listing", "get_listing"]

NO_ENDPOINTS: Mapping[str, tuple[Endpoint, ...]] = {}


@attrs.define
class StoredState:
    """The objects one command shows, and what the views read of them, as a
    ``ClusterState`` holds them: maps by key, and the endpoints per service."""

    config: ClusterConfig
    nodes: dict[str, Any] = attrs.Factory(dict)
    pods: dict[tuple[str, str], Any] = attrs.Factory(dict)
    services: dict[tuple[str, str], Any] = attrs.Factory(dict)
    slices: dict[tuple[str, str], Any] = attrs.Factory(dict)
    deployments: dict[tuple[str, str], Any] = attrs.Factory(dict)
    replica_sets: dict[tuple[str, str], Any] = attrs.Factory(dict)
    endpoints: dict[tuple[str, str], Mapping[str, tuple[Endpoint, ...]]] = attrs.Factory(dict)

    def service_endpoints(self, namespace: str, name: str) -> Mapping[str, tuple[Endpoint, ...]]:
        return self.endpoints.get((namespace, name), NO_ENDPOINTS)

    def add(
        self, objects: Iterable[tuple[KubeObject, int]], versions: dict[ObjectKey, int]
    ) -> None:
        """Hold ``objects`` (each with its version)."""
        maps: dict[Kind, dict[Any, Any]] = {
            Kind.POD: self.pods,
            Kind.SERVICE: self.services,
            Kind.ENDPOINT_SLICE: self.slices,
            Kind.DEPLOYMENT: self.deployments,
            Kind.REPLICA_SET: self.replica_sets,
        }
        for obj, version in objects:
            key = obj.key
            versions[key] = version
            if key.kind is Kind.NODE:
                self.nodes[key.name] = obj
            else:
                maps[key.kind][(key.namespace, key.name)] = obj


def _listing(reader: Reader, state: StoredState, versions: dict[ObjectKey, int]) -> Listing:
    # the views are written against ClusterState and read only what StoredState has
    return Listing(cast(ClusterState, state), reader.version, versions)


# kinds get reads from rows (the others list the whole state)
GET_KINDS = (Kind.SERVICE, Kind.POD, Kind.NODE)


def get_listing(
    reader: Reader,
    kind: Kind | None,
    names: Sequence[str],
    namespace: str,
    all_ns: bool,
    documents: bool,
) -> Listing | None:
    """What ``get`` of ``kind`` (None: endpoints, which are services') shows: the
    NAMEs, or every object of the namespace (all namespaces with ``all_ns``); None
    for a kind read from the whole state. ``documents``: -o yaml|json (a pod's
    document may come from its ReplicaSet's template)."""
    if kind is not None and kind not in GET_KINDS:
        return None
    shown = Kind.SERVICE if kind is None else kind
    state = StoredState(reader.config())
    versions: dict[ObjectKey, int] = {}
    ns = None if all_ns and not names else namespace
    if names:
        for name in dict.fromkeys(names):
            state.add(reader.objects(shown, ns, name), versions)
    else:
        state.add(reader.objects(shown, ns), versions)
    if kind is None:  # endpoints: those of the services shown
        if names or len(state.services) <= 1:
            for sns, sname in state.services:
                state.endpoints.update(reader.endpoints(sns, sname))
        else:
            state.endpoints.update(reader.endpoints(ns))
    if kind is Kind.POD and documents:
        state.add(reader.objects(Kind.REPLICA_SET, None), versions)
    return _listing(reader, state, versions)


def describe_listing(reader: Reader, kind: Kind, key: ObjectKey) -> Listing | None:
    """What ``describe`` of ``key`` reads: a service and its endpoints, a pod and its
    node, a node and its pods; None for a deployment (the whole state)."""
    if kind not in GET_KINDS:
        return None
    state = StoredState(reader.config())
    versions: dict[ObjectKey, int] = {}
    state.add(reader.objects(kind, key.namespace, key.name), versions)
    if kind is Kind.SERVICE:
        state.endpoints.update(reader.endpoints(key.namespace, key.name))
    elif kind is Kind.POD:
        for pod in list(state.pods.values()):
            if pod.node_name:
                state.add(reader.objects(Kind.NODE, None, pod.node_name), versions)
    elif state.nodes:
        state.add(reader.pods_on(key.name), versions)
    return _listing(reader, state, versions)
