"""Writing :mod:`svcnet.model` objects back as Kubernetes v1 manifests.

The inverse of :func:`svcnet.manifests.parse.parse_object`: ``parse_object(to_manifest(x))
== x`` for every parsed ``x`` (see the decisions in :mod:`svcnet.manifests.parse`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from svcnet.manifests.workloads import (
    node_extras_manifest,
    pod_extras_manifest,
    workload_manifest,
)
from svcnet.model import (
    SERVICE_NAME_LABEL,
    ContainerPort,
    Deployment,
    EndpointSlice,
    Kind,
    KubeObject,
    Labels,
    Node,
    Pod,
    ReplicaSet,
    Service,
    ServiceType,
    SessionAffinity,
    TrafficPolicy,
)

API_VERSIONS = {
    Kind.NODE: "v1",
    Kind.POD: "v1",
    Kind.SERVICE: "v1",
    Kind.ENDPOINT_SLICE: "discovery.k8s.io/v1",
    Kind.DEPLOYMENT: "apps/v1",
    Kind.REPLICA_SET: "apps/v1",
}
TERMINATING_SINCE = "1970-01-01T00:00:00Z"


def _metadata(name: str, namespace: str, labels: Labels) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = labels.as_dict()
    return meta


def to_manifest(obj: KubeObject) -> dict[str, Any]:
    """``obj`` as a v1 manifest, allocated values included; see the module docstring."""
    if isinstance(obj, Node):
        return _node_manifest(obj)
    if isinstance(obj, Pod):
        return _pod_manifest(obj)
    if isinstance(obj, Service):
        return _service_manifest(obj)
    if isinstance(obj, Deployment | ReplicaSet):
        return workload_manifest(obj, _pod_manifest)
    return _slice_manifest(obj)


def _node_manifest(node: Node) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if node.pod_cidrs:
        spec = {"podCIDR": node.pod_cidrs[0], "podCIDRs": list(node.pod_cidrs)}
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": _metadata(node.name, "", node.labels),
        "spec": spec,
    }
    if node.addresses:
        doc["status"] = {
            "addresses": [{"type": "InternalIP", "address": a} for a in node.addresses]
        }
    node_extras_manifest(node.unschedulable, node.ready, spec, doc)
    return doc


def _pod_manifest(pod: Pod) -> dict[str, Any]:
    meta = _metadata(pod.name, pod.namespace, pod.labels)
    if pod.terminating:
        meta["deletionTimestamp"] = TERMINATING_SINCE
    groups: list[list[ContainerPort]] = [[]]
    for port in pod.ports:
        if port.name and any(port.name == q.name for q in groups[-1]):
            groups.append([])
        groups[-1].append(port)
    containers: list[dict[str, Any]] = []
    for i, group in enumerate(groups):
        container: dict[str, Any] = {"name": "app" if i == 0 else f"app-{i}"}
        if group:
            container["ports"] = [
                {
                    **({"name": q.name} if q.name else {}),
                    "containerPort": q.port,
                    "protocol": q.protocol.value,
                }
                for q in group
            ]
        containers.append(container)
    spec: dict[str, Any] = {"containers": containers}
    if pod.node_name:
        spec["nodeName"] = pod.node_name
    if pod.host_network:
        spec["hostNetwork"] = True
    if pod.hostname:
        spec["hostname"] = pod.hostname
    if pod.subdomain:
        spec["subdomain"] = pod.subdomain
    status: dict[str, Any] = {
        "conditions": [{"type": "Ready", "status": "True" if pod.ready else "False"}]
    }
    if pod.pod_ips:
        status["podIP"] = pod.pod_ips[0]
        status["podIPs"] = [{"ip": a} for a in pod.pod_ips]
    pod_extras_manifest(pod, meta, spec, status)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def _service_manifest(svc: Service) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": svc.type.value}
    if svc.selector:
        spec["selector"] = svc.selector.as_dict()
    if svc.headless:
        spec["clusterIP"], spec["clusterIPs"] = "None", ["None"]
    elif svc.cluster_ips:
        spec["clusterIP"], spec["clusterIPs"] = svc.cluster_ips[0], list(svc.cluster_ips)
    if svc.ip_families:
        spec["ipFamilies"] = [f.value for f in svc.ip_families]
    if svc.ip_family_policy is not None:
        spec["ipFamilyPolicy"] = svc.ip_family_policy.value
    ports: list[dict[str, Any]] = []
    for port in svc.ports:
        entry: dict[str, Any] = {"port": port.port, "protocol": port.protocol.value}
        if port.name:
            entry["name"] = port.name
        if port.target_port is not None:
            entry["targetPort"] = port.target_port
        if port.node_port is not None:
            entry["nodePort"] = port.node_port
        ports.append(entry)
    if ports:
        spec["ports"] = ports
    if svc.external_ips:
        spec["externalIPs"] = list(svc.external_ips)
    if svc.external or svc.external_ips:
        spec["externalTrafficPolicy"] = svc.external_traffic_policy.value
    itp = svc.internal_traffic_policy
    if svc.type is not ServiceType.EXTERNAL_NAME or itp is not TrafficPolicy.CLUSTER:
        spec["internalTrafficPolicy"] = svc.internal_traffic_policy.value
    if svc.health_check_node_port is not None:
        spec["healthCheckNodePort"] = svc.health_check_node_port
    spec["sessionAffinity"] = svc.session_affinity.value
    if svc.session_affinity is SessionAffinity.CLIENT_IP:
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": svc.affinity_timeout}}
    if svc.load_balancer_ip:
        spec["loadBalancerIP"] = svc.load_balancer_ip
    if svc.load_balancer_source_ranges:
        spec["loadBalancerSourceRanges"] = list(svc.load_balancer_source_ranges)
    if svc.type is ServiceType.LOAD_BALANCER:
        spec["allocateLoadBalancerNodePorts"] = svc.allocate_load_balancer_node_ports
    if svc.external_name:
        spec["externalName"] = svc.external_name
    if svc.publish_not_ready_addresses:
        spec["publishNotReadyAddresses"] = True
    if svc.traffic_distribution:
        spec["trafficDistribution"] = svc.traffic_distribution.value
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(svc.name, svc.namespace, svc.labels),
        "spec": spec,
    }
    ingress = svc.status_ingress or svc.load_balancer_ips
    if ingress:
        doc["status"] = {"loadBalancer": {"ingress": [{"ip": a} for a in ingress]}}
    return doc


def _slice_manifest(es: EndpointSlice) -> dict[str, Any]:
    labels = Labels.of({**es.labels.as_dict(), SERVICE_NAME_LABEL: es.service_name})
    endpoints: list[dict[str, Any]] = []
    for e in es.endpoints:
        entry: dict[str, Any] = {
            "addresses": list(e.addresses),
            "conditions": {"ready": e.ready, "serving": e.serving, "terminating": e.terminating},
        }
        for key, value in (("nodeName", e.node_name), ("zone", e.zone), ("hostname", e.hostname)):
            if value:
                entry[key] = value
        endpoints.append(entry)
    ports = [
        {**({"name": p.name} if p.name else {}), "port": p.port, "protocol": p.protocol.value}
        for p in es.ports
    ]
    return {
        "apiVersion": API_VERSIONS[Kind.ENDPOINT_SLICE],
        "kind": "EndpointSlice",
        "metadata": _metadata(es.name, es.namespace, labels),
        "addressType": es.address_type.value,
        "endpoints": endpoints,
        "ports": ports,
    }


# Lists that keep what was applied whole: svcnet models only part of a container
# (its ports; a workload template's too), so its own list would drop names, images,
# commands and every other field.
_APPLIED_LISTS = frozenset({"containers", "initContainers"})


def as_applied(canonical: Mapping[str, Any], applied: Mapping[str, Any] | None) -> dict[str, Any]:
    """The object as ``kubectl get -o yaml`` shows it: the document that was applied
    (``applied``; None: only ``canonical``), with what svcnet decided over it --
    ``canonical`` (:func:`to_manifest`) wins for every field it has (allocations,
    the scheduler's node, the controllers' labels and replicas), mappings merge key
    by key so unknown fields stay, lists of mappings of the same length merge item
    by item (a service's ports get their allocated nodePort), ``containers`` stay as
    applied, and ``status`` is svcnet's alone."""
    if applied is None:
        return dict(canonical)
    base = {k: v for k, v in applied.items() if k != "status"}
    out: dict[str, Any] = _merge(base, canonical)
    if "status" in canonical:
        out["status"] = canonical["status"]
    return out


def _merge(base: Any, over: Any, key: str = "") -> Any:
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base[k], v, k) if k in base else v
        return out
    if isinstance(base, list) and isinstance(over, list):
        if key in _APPLIED_LISTS:
            return list(base)
        if len(base) == len(over) and all(isinstance(b, Mapping) for b in base):
            return [_merge(b, o) for b, o in zip(base, over, strict=True)]
    return over
