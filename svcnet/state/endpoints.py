"""Endpoints per service port, as docs/reference/semantics.md defines them (pure).

Services with a selector take their endpoints from the pods it matches in the
service's namespace; services without one from the EndpointSlices labelled
``kubernetes.io/service-name=<service>`` in that namespace. Under
``ClusterConfig.authority == "api"`` every service takes them from its slices
(never from a selector), with the slices' topology hints (:func:`hinted`). The result, per
service-port name (``""`` for an unnamed port), is a sorted tuple of
:class:`~svcnet.model.Endpoint` with no two for the same ``ip:port``.

:func:`compute` is used incrementally by :mod:`svcnet.state.cluster` (with candidate
pods from its indexes) and from scratch by :func:`compute_all` (the reference
the tests compare the incremental result with).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Mapping

import attrs
from pyrsistent import PMap, pmap

from svcnet.model import (
    ClusterConfig,
    Endpoint,
    EndpointSlice,
    IPFamily,
    Node,
    Pod,
    Service,
    ServicePort,
    ServiceType,
    ip_family,
    norm_ip,
)


def has_selector(svc: Service) -> bool:
    """An empty selector counts as none (Kubernetes stores ``{}`` as no selector)."""
    return svc.selector is not None and len(svc.selector) > 0


def selects(svc: Service, pod: Pod) -> bool:
    """The service's selector matches the pod (same namespace)."""
    if svc.namespace != pod.namespace or svc.selector is None or not svc.selector:
        return False
    labels = pod.labels
    return all(labels.get(k) == v for k, v in svc.selector.pairs())


def service_families(svc: Service, config: ClusterConfig) -> tuple[IPFamily, ...]:
    """The families a service has endpoints in: its ClusterIPs' families; for a
    headless service the cluster's families filtered by ``ipFamilies`` if given."""
    if svc.cluster_ips:
        return tuple(ip_family(ip) for ip in svc.cluster_ips)
    families = config.families
    if svc.ip_families:
        families = tuple(f for f in families if f in svc.ip_families)
    return families


def _target_port(sp: ServicePort, pod: Pod) -> int | None:
    tp = sp.target_port
    if tp is None:
        return sp.port
    if isinstance(tp, int):
        return tp
    for cp in pod.ports:
        if cp.name == tp and cp.protocol is sp.protocol:
            return cp.port
    return None


# Endpoint's own order (attrs compares the tuple of its fields), without the
# generated __lt__'s per-comparison tuple building
_order = operator.attrgetter(*(f.name for f in attrs.fields(Endpoint)))


def _better(a: Endpoint, b: Endpoint) -> bool:
    """Which of two endpoints with the same ip:port to keep (deterministic)."""
    ka = (not a.ready, not a.serving, a.terminating, a)
    kb = (not b.ready, not b.serving, b.terminating, b)
    return ka < kb


def _finish(found: Iterable[Endpoint]) -> tuple[Endpoint, ...]:
    best: dict[tuple[str, int], Endpoint] = {}
    for ep in found:
        k = (ep.ip, ep.port)
        cur = best.get(k)
        if cur is None or _better(ep, cur):
            best[k] = ep
    return tuple(sorted(best.values(), key=_order))


def pod_endpoints(
    svc: Service,
    pods: Iterable[Pod],
    nodes: Mapping[str, Node],
    config: ClusterConfig,
    selected: bool = False,
) -> dict[str, tuple[Endpoint, ...]]:
    """Endpoints per port name of a service with a selector, from ``pods``
    (any pods: those the selector does not match are ignored; ``selected``: the
    caller vouches that all of them match)."""
    families = service_families(svc, config)
    found: dict[str, list[Endpoint]] = {sp.name: [] for sp in svc.ports}
    publish = svc.publish_not_ready_addresses
    for pod in pods:
        if not selected and not selects(svc, pod):
            continue
        node = nodes.get(pod.node_name) if pod.node_name else None
        addresses: list[str] = []
        for fam in families:
            ip = pod.ip(fam)
            if ip is None and pod.host_network and node is not None:
                ip = node.address(fam)
            if ip is not None:
                addresses.append(ip)
        if not addresses:
            continue
        serving = pod.ready
        terminating = pod.terminating
        ready = (serving and not terminating) or publish
        zone = (node.zone or "") if node is not None else ""
        hostname = pod.hostname if pod.hostname and pod.subdomain == svc.name else ""
        for sp in svc.ports:
            port = _target_port(sp, pod)
            if port is None:
                continue
            for ip in addresses:
                found[sp.name].append(
                    Endpoint(
                        ip=ip,
                        port=port,
                        node_name=pod.node_name,
                        ready=ready,
                        serving=serving,
                        terminating=terminating,
                        hostname=hostname,
                        pod=pod.name,
                        zone=zone,
                    )
                )
    return {name: _finish(eps) for name, eps in found.items()}


def slices_of(
    svc: Service, slices: Iterable[EndpointSlice], config: ClusterConfig
) -> Iterator[EndpointSlice]:
    """The slices among ``slices`` that feed ``svc``: its namespace, its
    ``kubernetes.io/service-name``, and an address type among its families."""
    families = service_families(svc, config)
    for sl in slices:
        if (
            sl.namespace == svc.namespace
            and sl.service_name == svc.name
            and sl.address_type in families
        ):
            yield sl


def slice_endpoints(
    svc: Service, slices: Iterable[EndpointSlice], config: ClusterConfig
) -> dict[str, tuple[Endpoint, ...]]:
    """Endpoints per port name of a selector-less service (any service, under
    the API's authority) from its slices (``slices`` may hold others: only this
    service's are used). The hints are carried under the API's authority only."""
    hints = config.api_authority
    found: dict[str, list[Endpoint]] = {sp.name: [] for sp in svc.ports}
    for sl in slices_of(svc, slices, config):
        for sp in svc.ports:
            port = next(
                (p.port for p in sl.ports if p.name == sp.name and p.protocol is sp.protocol), None
            )
            if port is None:
                continue
            for se in sl.endpoints:
                if not se.addresses:
                    continue
                ip = norm_ip(se.addresses[0])
                if ip_family(ip) is not sl.address_type:
                    continue
                found[sp.name].append(
                    Endpoint(
                        ip=ip,
                        port=port,
                        node_name=se.node_name,
                        ready=se.ready,
                        serving=se.serving,
                        terminating=se.terminating,
                        hostname=se.hostname,
                        zone=se.zone,
                        for_zones=se.for_zones if hints else (),
                        for_nodes=se.for_nodes if hints else (),
                    )
                )
    return {name: _finish(eps) for name, eps in found.items()}


def compute(
    svc: Service,
    pods: Iterable[Pod],
    nodes: Mapping[str, Node],
    slices: Iterable[EndpointSlice],
    config: ClusterConfig,
    selected: bool = False,
) -> PMap[str, tuple[Endpoint, ...]] | None:
    """The endpoints entry of one service (None for ExternalName); ``selected`` as
    for :func:`pod_endpoints`."""
    if svc.type is ServiceType.EXTERNAL_NAME:
        return None
    if has_selector(svc) and not config.api_authority:
        return pmap(pod_endpoints(svc, pods, nodes, config, selected))
    return pmap(slice_endpoints(svc, slices, config))


def hinted(
    endpoints: Iterable[Endpoint], node_name: str, zone: str | None
) -> list[Endpoint] | None:
    """The cluster endpoints the slices' topology hints give on node ``node_name``
    in ``zone`` (under the API's authority, where the EndpointSlice controller
    decides topology), or None when the hints do not apply there, as kube-proxy
    decides: when every ready endpoint has node hints and one names this node,
    the ready endpoints hinted for it; else when every ready endpoint has zone
    hints and one names this zone, the ready endpoints hinted for the zone."""
    ready = [e for e in endpoints if e.ready]
    if not ready:
        return None
    if all(e.for_nodes for e in ready):
        own = [e for e in ready if node_name in e.for_nodes]
        if own:
            return own
    if zone and all(e.for_zones for e in ready):
        close = [e for e in ready if zone in e.for_zones]
        if close:
            return close
    return None


def compute_all(
    config: ClusterConfig,
    nodes: Mapping[str, Node],
    pods: Iterable[Pod],
    services: Iterable[Service],
    slices: Iterable[EndpointSlice],
) -> dict[tuple[str, str], PMap[str, tuple[Endpoint, ...]]]:
    """Every service's endpoints from scratch (the reference for the state)."""
    pod_list, slice_list = list(pods), list(slices)
    out: dict[tuple[str, str], PMap[str, tuple[Endpoint, ...]]] = {}
    for svc in services:
        entry = compute(svc, pod_list, nodes, slice_list, config)
        if entry is not None:
            out[(svc.namespace, svc.name)] = entry
    return out
