"""Formatting for the kubectl-like commands (pure): ``get`` tables and manifests,
``describe`` text. Used by :mod:`svcnet.cli.objects`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from svcnet import manifests
from svcnet.cli.kubectl_views import (
    MANAGED_BY_LABEL,
    SLICE_CONTROLLER,
    endpoints_object,
    label_lines,
    node_roles,
    slice_ref,
    slices_of_state,
    workload_map,
    workload_rows,
)
from svcnet.errors import NotFoundError
from svcnet.model import SERVICE_NAME_LABEL, Kind, KubeObject, ObjectKey, Pod, Service, ServiceType
from svcnet.state import ClusterState
from svcnet.state.selectors import Selector

__all__ = [
    "NONE",
    "UNKNOWN_AGE",
    "age_key",
    "describe_service",
    "endpoints_manifest",
    "format_table",
    "get_object",
    "key_of",
    "labels_of",
    "object_rows",
    "select_objects",
    "watch_line",
    "with_version",
]

NONE = "<none>"
UNKNOWN_AGE = "<unknown>"
WORKLOAD_KINDS = ("Deployment", "ReplicaSet")


def get_object(state: ClusterState, key: ObjectKey) -> KubeObject | None:
    """The object ``key`` names, or None."""
    k = (key.namespace, key.name)
    if key.kind is Kind.NODE:
        return state.nodes.get(key.name)
    if key.kind is Kind.POD:
        return state.pods.get(k)
    if key.kind is Kind.SERVICE:
        return state.services.get(k)
    if key.kind is Kind.ENDPOINT_SLICE:
        return state.slices.get(k)
    found: KubeObject | None = workload_map(state, key.kind.value).get(k)
    return found


def format_table(rows: list[list[str]]) -> str:
    """``rows`` (the header first) as kubectl-like aligned columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _ports(svc: Service) -> str:
    out = []
    for p in svc.ports:
        node = f":{p.node_port}" if p.node_port else ""
        out.append(f"{p.port}{node}/{p.protocol.value}")
    return ",".join(out) or NONE


def _cluster_ip(svc: Service) -> str:
    if svc.type is ServiceType.EXTERNAL_NAME:
        return NONE
    if svc.headless:
        return "None"
    return ",".join(svc.cluster_ips) or NONE


def _external_ip(svc: Service) -> str:
    if svc.type is ServiceType.EXTERNAL_NAME:
        return svc.external_name
    ips = list(svc.load_balancer_ips) + list(svc.external_ips)
    if ips:
        return ",".join(ips)
    return "<pending>" if svc.type is ServiceType.LOAD_BALANCER else NONE


def _labels(labels: Any) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items()) if labels else NONE


def _endpoint_list(state: ClusterState, svc: Service, wide: bool) -> str:
    seen: list[str] = []
    for eps in state.service_endpoints(svc.namespace, svc.name).values():
        for e in eps:
            if e.ready and e.address not in seen:
                seen.append(e.address)
    if not seen:
        return NONE
    if wide or len(seen) <= 3:
        return ",".join(seen)
    return ",".join(seen[:3]) + f" + {len(seen) - 3} more..."


def _no_age(_: ObjectKey) -> str:
    return UNKNOWN_AGE


def labels_of(obj: Any) -> Mapping[str, str]:
    """The labels of a model object or of a manifest (a derived EndpointSlice)."""
    if isinstance(obj, dict):
        return dict((obj.get("metadata") or {}).get("labels") or {})
    labels: Mapping[str, str] = obj.labels
    return labels


def key_of(obj: Any) -> ObjectKey:
    """The key of a model object or of an EndpointSlice manifest."""
    if isinstance(obj, dict):
        return slice_ref(obj)
    key: ObjectKey = obj.key
    return key


def age_key(obj: Any) -> ObjectKey:
    """Whose creation an object's AGE counts from: its own, or for an EndpointSlice
    the controller made, its service's."""
    if isinstance(obj, dict):
        labels = labels_of(obj)
        if labels.get(MANAGED_BY_LABEL) == SLICE_CONTROLLER:
            ns = obj["metadata"].get("namespace", "")
            return ObjectKey(Kind.SERVICE, ns, labels.get(SERVICE_NAME_LABEL, ""))
        return slice_ref(obj)
    return obj.key  # type: ignore[no-any-return]


def _slice_row(doc: dict[str, Any], wide: bool) -> list[str]:
    ports = ",".join(str(p.get("port", "<unset>")) for p in doc.get("ports") or []) or "<unset>"
    addrs = [a for e in doc.get("endpoints") or [] for a in e.get("addresses") or []]
    shown = ",".join(addrs if wide or len(addrs) <= 3 else addrs[:3]) or "<unset>"
    if not wide and len(addrs) > 3:
        shown += f" + {len(addrs) - 3} more..."
    return [doc["metadata"]["name"], str(doc.get("addressType", "")), ports, shown]


def _pod_status(p: Pod) -> str:
    """kubectl's STATUS: Terminating, else the phase the kubelet reported, else
    Running for a pod with a node and an address, Pending otherwise."""
    if p.terminating:
        return "Terminating"
    phase = getattr(p, "phase", None)  # set by the simulated kubelet (svcnet.workloads)
    if phase is not None:
        return str(phase.value)
    return "Running" if p.pod_ips and p.node_name else "Pending"


def object_rows(
    state: ClusterState,
    what: str,
    items: list[Any],
    wide: bool,
    age: Callable[[ObjectKey], str] = _no_age,
    show_labels: bool = False,
) -> list[list[str]]:
    """The ``get`` table of ``items`` (of kind ``what``, or ``endpoints``), header
    first, with kubectl's columns (AGE from ``age``; LABELS with ``show_labels``)."""
    header: list[str]
    rows: list[list[str]]
    if what in WORKLOAD_KINDS:
        rows = workload_rows(state, what, items, wide, age)
        header, rows = rows[0], rows[1:]
    elif what == "endpoints":
        header = ["NAME", "ENDPOINTS", "AGE"]
        rows = [[s.name, _endpoint_list(state, s, wide), age(s.key)] for s in items]
    elif what == Kind.SERVICE.value:
        header = ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
        rows = [
            [s.name, s.type.value, _cluster_ip(s), _external_ip(s), _ports(s), age(s.key)]
            + ([_labels(s.selector)] if wide else [])
            for s in items
        ]
        header += ["SELECTOR"] if wide else []
    elif what == Kind.POD.value:
        header = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
        header += ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"] if wide else []
        rows = []
        for p in items:
            restarts = str(getattr(p, "restarts", 0))
            row = [p.name, "1/1" if p.ready else "0/1", _pod_status(p), restarts, age(p.key)]
            if wide:
                ip = ",".join(p.pod_ips) or NONE
                row += [ip, p.node_name or NONE, NONE, NONE]
            rows.append(row)
    elif what == Kind.NODE.value:
        header = ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
        header += ["INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION"] if wide else []
        header += ["CONTAINER-RUNTIME"] if wide else []
        rows = []
        for n in items:
            row = [n.name, "Ready", node_roles(n), age(n.key), NONE]
            if wide:
                row += [",".join(n.addresses) or NONE, NONE] + ["<unknown>"] * 3
            rows.append(row)
    else:
        header = ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
        rows = []
        for es in items:
            doc = es if isinstance(es, dict) else manifests.to_manifest(es)
            rows.append([*_slice_row(doc, wide), age(age_key(es))])
    if show_labels:
        header = [*header, "LABELS"]
        rows = [[*r, _labels(labels_of(o))] for r, o in zip(rows, items, strict=True)]
    return [header, *rows]


def select_objects(
    state: ClusterState,
    kind: Kind,
    name: str | None,
    namespace: str,
    all_ns: bool,
    selector: Selector | None = None,
) -> list[Any]:
    """The objects ``get`` shows: one by name (NotFoundError if missing) or all
    (those ``selector`` matches), sorted. EndpointSlices are manifests: the applied
    ones and those the EndpointSlice controller keeps for services with selectors."""
    if kind is Kind.ENDPOINT_SLICE:
        docs = slices_of_state(state, None if all_ns and name is None else namespace)
        if name is not None:
            docs = [d for d in docs if d["metadata"]["name"] == name]
            if not docs:
                raise NotFoundError(str(ObjectKey(kind, namespace, name)))
        return [d for d in docs if selector is None or selector.matches(labels_of(d))]
    source: Any = {
        Kind.SERVICE: state.services,
        Kind.POD: state.pods,
        Kind.NODE: state.nodes,
    }.get(kind) or workload_map(state, kind.value)
    if name is not None:
        key = ObjectKey(kind, "" if kind is Kind.NODE else namespace, name)
        obj = get_object(state, key)
        if obj is None:
            raise NotFoundError(str(key))
        return [obj]
    items = [source[k] for k in sorted(source)]
    if kind is not Kind.NODE and not all_ns:
        items = [o for o in items if o.namespace == namespace]
    if selector is not None:
        items = [o for o in items if selector.matches(o.labels)]
    return items


def endpoints_manifest(state: ClusterState, svc: Service) -> dict[str, Any]:
    """A service's v1 Endpoints, as ``get endpoints -o yaml`` prints them (the API
    server's shape: subsets of addresses, notReadyAddresses and ports)."""
    return endpoints_object(state, svc)


def with_version(doc: dict[str, Any], version: int | None) -> dict[str, Any]:
    """``doc`` with ``metadata.resourceVersion`` (a string, as Kubernetes shows it)
    after its other metadata; unchanged when ``version`` is None."""
    if version is None:
        return doc
    metadata = dict(doc.get("metadata") or {})
    metadata["resourceVersion"] = str(version)
    return {**doc, "metadata": metadata}


def watch_line(rows: list[list[str]], event: str | None) -> str:
    """The line ``get -w`` prints for one change: the row ``rows[1]`` aligned with
    its header ``rows[0]`` (kubectl prints rows, not the header, once watching),
    prefixed with the event type when ``event`` is given."""
    if event is not None:
        rows = [["EVENT", *rows[0]], [event, *rows[1]]]
    return format_table(rows[:2]).splitlines()[1]


def describe_service(state: ClusterState, svc: Service) -> list[str]:
    """kubectl-describe-like lines for ``svc``."""
    lines: list[tuple[str, str]] = [
        ("Name", svc.name),
        ("Namespace", svc.namespace),
        ("Labels", label_lines(svc.labels)),
        ("Annotations", NONE),
        ("Selector", _labels(svc.selector)),
        ("Type", svc.type.value),
    ]
    if svc.type is ServiceType.EXTERNAL_NAME:
        lines.append(("External Name", svc.external_name))
    else:
        if svc.ip_family_policy is not None:
            lines.append(("IP Family Policy", svc.ip_family_policy.value))
        lines.append(("IP Families", ",".join(f.value for f in svc.ip_families) or NONE))
        lines.append(("IPs", _cluster_ip(svc)))
    if svc.external_ips:
        lines.append(("External IPs", ",".join(svc.external_ips)))
    if svc.type is ServiceType.LOAD_BALANCER:
        if svc.load_balancer_ip:
            lines.append(("LoadBalancer IP", svc.load_balancer_ip))
        source = "status" if svc.status_ingress else "pool"
        ingress = ",".join(svc.load_balancer_ips)
        lines.append(("LoadBalancer Ingress", f"{ingress} ({source})" if ingress else "<pending>"))
        if svc.load_balancer_source_ranges:
            lines.append(("LB Source Ranges", ",".join(svc.load_balancer_source_ranges)))
    eps = state.service_endpoints(svc.namespace, svc.name)
    for p in svc.ports:
        label = p.name or "<unset>"
        lines.append(("Port", f"{label}  {p.port}/{p.protocol.value}"))
        target = p.target_port if p.target_port is not None else p.port
        lines.append(("TargetPort", f"{target}/{p.protocol.value}"))
        if p.node_port:
            lines.append(("NodePort", f"{label}  {p.node_port}/{p.protocol.value}"))
        if svc.type is not ServiceType.EXTERNAL_NAME:
            shown = []
            for e in eps.get(p.name, ()):
                cond = [
                    c
                    for c, on in (
                        ("ready", e.ready),
                        ("serving", e.serving),
                        ("terminating", e.terminating),
                    )
                    if on
                ]
                where = f" on {e.node_name}" if e.node_name else ""
                pod = f" pod {e.pod}" if e.pod else ""
                shown.append(f"{e.address} ({','.join(cond) or 'not ready'}){pod}{where}")
            lines.append(("Endpoints", "\n".join(shown) or NONE))
    lines.append(("Session Affinity", svc.session_affinity.value))
    if svc.session_affinity.value != "None":
        lines.append(("Affinity Timeout", f"{svc.affinity_timeout}s"))
    if svc.external or svc.external_ips:
        lines.append(("External Traffic Policy", svc.external_traffic_policy.value))
    lines.append(("Internal Traffic Policy", svc.internal_traffic_policy.value))
    if svc.health_check_node_port:
        lines.append(("HealthCheck NodePort", str(svc.health_check_node_port)))
    if svc.traffic_distribution:
        lines.append(("Traffic Distribution", svc.traffic_distribution))
    if not svc.proxied:
        lines.append(("Proxied", "no (service-proxy-name label: another proxy serves it)"))
    width = max(len(k) for k, _ in lines) + 2
    pad = "\n" + " " * width
    return [f"{k + ':':<{width}}{v.replace(chr(10), pad)}" for k, v in lines]
