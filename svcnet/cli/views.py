"""Formatting for the kubectl-like commands (pure): ``get`` tables and manifests,
``describe`` text, Deployments and ReplicaSets included. Used by
:mod:`svcnet.cli.objects` and :mod:`svcnet.cli.rollout`; kubectl's smaller habits
(selectors, ages, derived EndpointSlices, describe pod/node) are in
:mod:`svcnet.cli.kubectl_views`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from svcnet import manifests
from svcnet.cli.kubectl_views import (
    MANAGED_BY_LABEL,
    NONE,
    SLICE_CONTROLLER,
    aligned,
    endpoints_object,
    label_lines,
    node_roles,
    ports_text,
    slice_ref,
    slices_of_state,
    timestamp,
)
from svcnet.errors import NotFoundError
from svcnet.model import SERVICE_NAME_LABEL, Kind, KubeObject, ObjectKey, Pod, Service, ServiceType
from svcnet.state import ClusterState
from svcnet.state.selectors import Operator, Selector

__all__ = [
    "NONE",
    "UNKNOWN_AGE",
    "age_key",
    "deployment_counts",
    "describe_deployment",
    "describe_service",
    "endpoints_manifest",
    "format_table",
    "get_object",
    "key_of",
    "labels_of",
    "new_replica_set",
    "object_rows",
    "pods_of",
    "replica_sets_of",
    "rollout_status",
    "select_objects",
    "selector_text",
    "watch_line",
    "with_version",
    "workload_map",
    "workload_rows",
]

UNKNOWN_AGE = "<unknown>"
WORKLOAD_KINDS = ("Deployment", "ReplicaSet")
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"


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


def _never(_: ObjectKey) -> float | None:
    return None


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
    # (a kind's map even when empty: an empty one is not the workloads')
    source: Any = {
        Kind.SERVICE: state.services,
        Kind.POD: state.pods,
        Kind.NODE: state.nodes,
    }.get(kind)
    if source is None:
        source = workload_map(state, kind.value)
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


# -- Deployments and ReplicaSets (svcnet.workloads) ----------------------------------------
# Written against the objects' attributes only (name, namespace, replicas, selector,
# owner, revision), so that this module reads any state: one without workloads has none.


def workload_map(state: ClusterState, kind: str) -> Mapping[Any, Any]:
    """The state's Deployments (``kind`` "Deployment") or ReplicaSets by (namespace,
    name); empty for a state that holds none."""
    names = ("deployments",) if kind == "Deployment" else ("replica_sets", "replicasets")
    for attr in names:
        found = getattr(state, attr, None)
        if found is not None:
            return found  # type: ignore[no-any-return]
    return {}


def _owned_by(obj: Any, kind: str, name: str) -> bool:
    owner = getattr(obj, "owner", None)
    return owner is not None and owner.kind == kind and owner.name == name


def replica_sets_of(state: ClusterState, dep: Any) -> list[Any]:
    """The ReplicaSets a Deployment controls, oldest revision first."""
    return sorted(
        (
            rs
            for rs in workload_map(state, "ReplicaSet").values()
            if rs.namespace == dep.namespace and _owned_by(rs, "Deployment", dep.name)
        ),
        key=lambda rs: (getattr(rs, "revision", 0), rs.name),
    )


def pods_of(state: ClusterState, rs: Any) -> list[Pod]:
    """The pods a ReplicaSet controls (terminating ones included), by name (from the
    state's owner index when it has one)."""
    owned = getattr(state, "owned_pods", None)
    if owned is not None:
        return sorted(owned(rs.namespace, rs.name), key=lambda p: p.name)
    return sorted(
        (
            p
            for p in state.pods.values()
            if p.namespace == rs.namespace and _owned_by(p, "ReplicaSet", rs.name)
        ),
        key=lambda p: p.name,
    )


def selector_text(selector: Selector) -> str:
    """A selector as kubectl prints one (``app=web,tier in (a,b),!canary``)."""
    parts = []
    for r in selector.requirements:
        pair = r.equality
        if pair is not None:
            parts.append(f"{pair[0]}={pair[1]}")
        elif r.operator is Operator.EXISTS:
            parts.append(r.key)
        elif r.operator is Operator.DOES_NOT_EXIST:
            parts.append("!" + r.key)
        else:
            op = "in" if r.operator is Operator.IN else "notin"
            parts.append(f"{r.key} {op} ({','.join(sorted(r.values))})")
    return ",".join(parts) or NONE


def _containers(obj: Any) -> list[dict[str, Any]]:
    doc = manifests.to_manifest(obj)
    template = (doc.get("spec") or {}).get("template") or {}
    return list((template.get("spec") or {}).get("containers") or [])


def _images(obj: Any) -> tuple[str, str]:
    cs = _containers(obj)
    names = ",".join(str(c.get("name", "")) for c in cs) or NONE
    images = ",".join(str(c.get("image") or NONE) for c in cs) or NONE
    return names, images


def _active(state: ClusterState, rs: Any) -> list[Pod]:
    """A ReplicaSet's pods that count: not terminating, not finished."""
    done = ("Succeeded", "Failed")
    return [
        p
        for p in pods_of(state, rs)
        if not p.terminating and getattr(getattr(p, "phase", None), "value", None) not in done
    ]


def _unhashed(template: Any) -> Any:
    labels = {k: v for k, v in template.labels.items() if k != POD_TEMPLATE_HASH_LABEL}
    return attrs.evolve(template, labels=labels)


def new_replica_set(state: ClusterState, dep: Any) -> Any:
    """The ReplicaSet of ``dep``'s current template (its template without the
    ``pod-template-hash`` label is the Deployment's), or None before the controller
    made it."""
    for rs in reversed(replica_sets_of(state, dep)):
        if _unhashed(rs.template) == _unhashed(dep.template):
            return rs
    return None


def deployment_counts(state: ClusterState, dep: Any) -> dict[str, int]:
    """kubectl's numbers of a Deployment, as its status gives them: ``total`` (active
    pods of all its ReplicaSets), ``updated`` (of the new one), ``ready`` and
    ``available`` (ready: svcnet has no minReadySeconds)."""
    new = new_replica_set(state, dep)
    total = ready = updated = 0
    for rs in replica_sets_of(state, dep):
        pods = _active(state, rs)
        total += len(pods)
        ready += sum(1 for p in pods if p.ready)
        if rs is new:
            updated = len(pods)
    return {"total": total, "updated": updated, "ready": ready, "available": ready}


def rollout_status(state: ClusterState, dep: Any) -> tuple[bool, str]:
    """(done, the line ``rollout status`` prints), as kubectl words them."""
    n = deployment_counts(state, dep)
    name = dep.name
    if n["updated"] < dep.replicas:
        return False, (
            f'Waiting for deployment "{name}" rollout to finish: {n["updated"]} out of '
            f"{dep.replicas} new replicas have been updated..."
        )
    if n["total"] > n["updated"]:
        return False, (
            f'Waiting for deployment "{name}" rollout to finish: '
            f"{n['total'] - n['updated']} old replicas are pending termination..."
        )
    if n["available"] < n["updated"]:
        return False, (
            f'Waiting for deployment "{name}" rollout to finish: {n["available"]} of '
            f"{n['updated']} updated replicas are available..."
        )
    return True, f'deployment "{name}" successfully rolled out'


def workload_rows(
    state: ClusterState,
    kind: str,
    items: list[Any],
    wide: bool,
    age: Callable[[ObjectKey], str],
) -> list[list[str]]:
    """The ``get deployments`` / ``get replicasets`` table, header first."""
    extra = ["CONTAINERS", "IMAGES", "SELECTOR"] if wide else []
    rows: list[list[str]] = []
    if kind == "Deployment":
        header = ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", *extra]
        for d in items:
            n = deployment_counts(state, d)
            rows.append(
                [d.name, f"{n['ready']}/{d.replicas}", str(n["updated"]), str(n["available"]),
                 age(d.key)]
            )  # fmt: skip
    else:
        header = ["NAME", "DESIRED", "CURRENT", "READY", "AGE", *extra]
        for rs in items:
            pods = _active(state, rs)
            ready = sum(1 for p in pods if p.ready)
            rows.append([rs.name, str(rs.replicas), str(len(pods)), str(ready), age(rs.key)])
    if wide:
        for row, obj in zip(rows, items, strict=True):
            row += [*_images(obj), selector_text(obj.selector)]
    return [header, *rows]


def _strategy_lines(dep: Any) -> list[tuple[str, str]]:
    strategy = dep.strategy
    lines = [("StrategyType", strategy.type.value), ("MinReadySeconds", "0")]
    if strategy.type.value == "RollingUpdate":
        lines.append(
            (
                "RollingUpdateStrategy",
                f"{strategy.max_unavailable} max unavailable, {strategy.max_surge} max surge",
            )
        )
    return lines


def describe_deployment(
    state: ClusterState,
    dep: Any,
    age: Callable[[ObjectKey], str],
    created: Callable[[ObjectKey], float | None] = _never,
) -> list[str]:
    """kubectl-describe-like lines for a Deployment: replicas, strategy, the pod
    template (containers, images, ports) and its old and new ReplicaSets."""
    n = deployment_counts(state, dep)
    annotations = dict(dep.annotations)
    if getattr(dep, "revision", 0):
        annotations["deployment.kubernetes.io/revision"] = str(dep.revision)
    replicas = (
        f"{dep.replicas} desired | {n['updated']} updated | {n['total']} total | "
        f"{n['available']} available | {max(0, dep.replicas - n['available'])} unavailable"
    )
    lines: list[tuple[str, str]] = [
        ("Name", dep.name),
        ("Namespace", dep.namespace),
        ("CreationTimestamp", timestamp(created(dep.key))),
        ("Labels", label_lines(dep.labels)),
        ("Annotations", "\n".join(f"{k}: {v}" for k, v in sorted(annotations.items())) or NONE),
        ("Selector", selector_text(dep.selector)),
        ("Replicas", replicas),
        *_strategy_lines(dep),
    ]
    out = aligned(lines)
    out.append("Pod Template:")
    template_notes = "\n".join(f"{k}: {v}" for k, v in sorted(dep.template.annotations.items()))
    out += aligned(
        [("Labels", label_lines(dep.template.labels))]
        + ([("Annotations", template_notes)] if template_notes else []),
        "  ",
    )
    out.append("  Containers:")
    for c in _containers(dep):
        out.append(f"   {c.get('name', '')}:")
        ports = c.get("ports") or []
        out += aligned(
            [
                ("Image", str(c.get("image") or NONE)),
                ("Port" if len(ports) <= 1 else "Ports", ports_text(ports)),
            ],
            "    ",
        )
    new = new_replica_set(state, dep)
    old = [rs for rs in replica_sets_of(state, dep) if rs is not new]

    def shown(rs: Any) -> str:
        return f"{rs.name} ({len(_active(state, rs))}/{rs.replicas} replicas created)"

    out += aligned(
        [
            ("OldReplicaSets", ", ".join(shown(rs) for rs in old) or NONE),
            ("NewReplicaSet", shown(new) if new is not None else NONE),
            ("Events", NONE),
        ]
    )
    return out
