"""kubectl's habits as pure functions, for :mod:`svcnet.cli.objects` and
:mod:`svcnet.cli.views`: label selectors as ``-l`` spells them, ages as kubectl
prints them, ``-o name`` references, resource names in messages, the
EndpointSlices and Endpoints the API server would return for a service, and
``describe`` text for pods and nodes.

Nothing here reads the store or the clock: callers pass what they read (creation
times, the current time).
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from svcnet import manifests
from svcnet.errors import ValidationError
from svcnet.model import (
    SERVICE_NAME_LABEL,
    Endpoint,
    EndpointSlice,
    IPFamily,
    Kind,
    Node,
    ObjectKey,
    Pod,
    Service,
    ServiceType,
    ip_family,
)
from svcnet.state import ClusterState
from svcnet.state.selectors import Operator, Requirement, Selector

__all__ = [
    "MANAGED_BY_LABEL",
    "SLICE_CONTROLLER",
    "aligned",
    "derived_slices",
    "describe_node",
    "describe_pod",
    "endpoints_object",
    "human_duration",
    "label_lines",
    "node_roles",
    "parse_label_selector",
    "plural",
    "ports_text",
    "resource_name",
    "slice_manifest",
    "slices_of_state",
    "timestamp",
]

NONE = "<none>"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
SLICE_CONTROLLER = "endpointslice-controller.k8s.io"
HEADLESS_LABEL = "service.kubernetes.io/headless"
ROLE_PREFIX = "node-role.kubernetes.io/"
ROLE_LABEL = "kubernetes.io/role"
# the characters Kubernetes' generateName suffixes are made of (no vowels, no 0/1/3)
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

# -o name prefixes and the plural (with group) kubectl names in messages
_NAMES = {
    "Service": ("service", "services"),
    "Pod": ("pod", "pods"),
    "Node": ("node", "nodes"),
    "EndpointSlice": ("endpointslice.discovery.k8s.io", "endpointslices.discovery.k8s.io"),
    "Endpoints": ("endpoints", "endpoints"),
    "Deployment": ("deployment.apps", "deployments.apps"),
    "ReplicaSet": ("replicaset.apps", "replicasets.apps"),
}


def resource_name(kind: str) -> str:
    """The ``-o name`` / ``deleted`` prefix of a kind (``service``,
    ``endpointslice.discovery.k8s.io``, ``deployment.apps``)."""
    return _NAMES.get(kind, (kind.lower(), kind.lower() + "s"))[0]


def plural(kind: str) -> str:
    """The plural kubectl names a kind by in errors (``services``, ``deployments.apps``)."""
    return _NAMES.get(kind, (kind.lower(), kind.lower() + "s"))[1]


# -- ages ------------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """An age as kubectl prints it (``45s``, ``3m20s``, ``15m``, ``5h``, ``5h3m``, ``2d``,
    ``3d4h``, ``1y20d``); the steps of Kubernetes' ``duration.HumanDuration``."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if hours < 24 * 365 * 2:
        return f"{days}d"
    years = days // 365
    if hours < 24 * 365 * 8:
        return f"{years}y{days % 365}d" if days % 365 else f"{years}y"
    return f"{years}y"


# -- label selectors -------------------------------------------------------------------

_SET_TERM = re.compile(r"^\s*(\S+)\s+(in|notin)\s*\((.*)\)\s*$")
_EQ_TERM = re.compile(r"^\s*([^=!\s]+)\s*(==|!=|=)\s*(\S*)\s*$")
_KEY = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$")


def _terms(text: str) -> list[str]:
    """``text`` split at the commas outside parentheses."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        depth += (ch == "(") - (ch == ")")
        cur += ch
    out.append(cur)
    return out


def parse_label_selector(text: str) -> Selector:
    """A kubectl ``-l`` selector: comma-separated ``k=v``, ``k==v``, ``k!=v``,
    ``k in (a,b)``, ``k notin (a,b)``, ``k`` (exists), ``!k`` (does not exist).
    ValidationError naming the term otherwise."""
    reqs: list[Requirement] = []
    if not text.strip():
        return Selector()

    def bad(term: str, why: str) -> ValidationError:
        return ValidationError("label selector", "-l", f"{term.strip()!r}: {why}")

    def key_of(term: str, key: str) -> str:
        if not _KEY.match(key):
            raise bad(term, f"invalid label key {key!r}")
        return key

    for term in _terms(text):
        if not term.strip():
            raise bad(text, "empty requirement")
        if m := _SET_TERM.match(term):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            if not values:
                raise bad(term, "a set needs at least one value")
            op = Operator.IN if m.group(2) == "in" else Operator.NOT_IN
            reqs.append(Requirement(key_of(term, m.group(1)), op, values))
        elif term.strip().startswith("!"):
            reqs.append(
                Requirement(key_of(term, term.strip()[1:].strip()), Operator.DOES_NOT_EXIST)
            )
        elif m := _EQ_TERM.match(term):
            op = Operator.NOT_IN if m.group(2) == "!=" else Operator.IN
            reqs.append(Requirement(key_of(term, m.group(1)), op, frozenset([m.group(3)])))
        elif " " not in term.strip() and "(" not in term:
            reqs.append(Requirement(key_of(term, term.strip()), Operator.EXISTS))
        else:
            raise bad(term, "expected k=v, k!=v, k in (...), k notin (...), k or !k")
    return Selector(tuple(reqs))


def label_lines(labels: Mapping[str, str] | None) -> str:
    """Labels one ``k=v`` a line (describe), or ``<none>``."""
    return "\n".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or NONE


# -- EndpointSlices and Endpoints as the API server returns them -----------------------


def _suffix(seed: str) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    return "".join(_NAME_ALPHABET[b % len(_NAME_ALPHABET)] for b in digest[:5])


def _port_of(svc: Service, name: str) -> Any:
    return next((p for p in svc.ports if p.name == name), None)


def _grouped(
    svc: Service, eps: Mapping[str, tuple[Endpoint, ...]]
) -> dict[tuple[Any, ...], dict[str, tuple[Endpoint, dict[str, int]]]]:
    """Each address of a service's endpoints with its port numbers, grouped by
    (family, the ports' (name, port, protocol)) as the controllers group them."""
    by_ip: dict[str, tuple[Endpoint, dict[str, int]]] = {}
    for port_name, found in eps.items():
        for e in found:
            _first, ports = by_ip.setdefault(e.ip, (e, {}))
            ports[port_name] = e.port
    groups: dict[tuple[Any, ...], dict[str, tuple[Endpoint, dict[str, int]]]] = {}
    for ip, (e, ports) in sorted(by_ip.items()):
        spec = []
        for name, number in sorted(ports.items()):
            sp = _port_of(svc, name)
            spec.append((name, number, sp.protocol.value if sp is not None else "TCP"))
        groups.setdefault((ip_family(ip).value, tuple(spec)), {})[ip] = (e, ports)
    return groups


def _target(e: Endpoint, namespace: str) -> dict[str, Any]:
    return {"kind": "Pod", "name": e.pod, "namespace": namespace}


def _port_docs(spec: Iterable[tuple[str, int, str]]) -> list[dict[str, Any]]:
    return [
        {**({"name": n} if n else {}), "port": port, "protocol": proto} for n, port, proto in spec
    ]


def derived_slices(state: ClusterState, svc: Service) -> list[dict[str, Any]]:
    """The EndpointSlices Kubernetes' EndpointSlice controller keeps for a service
    with a selector (none for one without: its slices are the applied ones), as
    ``discovery.k8s.io/v1`` manifests: one per address family and port set, named
    ``<service>-<5 characters>`` (deterministic from the service, family and ports),
    labelled ``kubernetes.io/service-name`` and ``endpointslice.kubernetes.io/managed-by``."""
    if not svc.selector or svc.type is ServiceType.EXTERNAL_NAME:
        return []
    eps = state.service_endpoints(svc.namespace, svc.name)
    groups = _grouped(svc, eps)
    families = [f.value for f in svc.ip_families] or [IPFamily.IPv4.value]
    if not groups:  # the controller keeps one empty slice per family
        groups = {(f, ()): {} for f in families}
    labels = {
        **svc.labels.as_dict(),
        SERVICE_NAME_LABEL: svc.name,
        MANAGED_BY_LABEL: SLICE_CONTROLLER,
    }
    if svc.headless:
        labels[HEADLESS_LABEL] = ""
    base = (svc.name + "-")[:58]
    out = []
    for (family, spec), members in sorted(groups.items()):
        endpoints = []
        for _, (e, _ports) in sorted(members.items()):
            doc: dict[str, Any] = {
                "addresses": [e.ip],
                "conditions": {
                    "ready": e.ready, "serving": e.serving, "terminating": e.terminating
                },
            }  # fmt: skip
            if e.hostname:
                doc["hostname"] = e.hostname
            if e.node_name:
                doc["nodeName"] = e.node_name
            if e.pod:
                doc["targetRef"] = _target(e, svc.namespace)
            if e.zone:
                doc["zone"] = e.zone
            endpoints.append(doc)
        # the port set, not the position, names a slice: another set keeps the names
        name = base + _suffix(f"{svc.namespace}/{svc.name}/{family}/{spec}")
        out.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": name,
                    "generateName": base,
                    "namespace": svc.namespace,
                    "labels": dict(sorted(labels.items())),
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Service",
                            "name": svc.name,
                            "blockOwnerDeletion": True,
                            "controller": True,
                        }
                    ],
                },
                "addressType": family,
                "endpoints": endpoints or None,
                "ports": _port_docs(spec) or None,
            }
        )
    return out


def slice_manifest(es: EndpointSlice) -> dict[str, Any]:
    """An applied EndpointSlice as ``get -o yaml`` prints it."""
    return manifests.to_manifest(es)


def slices_of_state(state: ClusterState, namespace: str | None) -> list[dict[str, Any]]:
    """Every EndpointSlice of ``namespace`` (None: all) as manifests: the applied
    ones and those derived for services with selectors, sorted by namespace, name."""
    docs = [
        manifests.to_manifest(es)
        for k, es in state.slices.items()
        if namespace is None or k[0] == namespace
    ]
    for k, svc in state.services.items():
        if namespace is None or k[0] == namespace:
            docs.extend(derived_slices(state, svc))
    return sorted(docs, key=lambda d: (d["metadata"].get("namespace", ""), d["metadata"]["name"]))


def endpoints_object(state: ClusterState, svc: Service) -> dict[str, Any]:
    """A service's v1 Endpoints as the API server returns them: ``subsets`` of
    ``addresses`` (ready), ``notReadyAddresses`` (not ready, not terminating) and
    ``ports``, one subset per port set."""
    subsets: list[dict[str, Any]] = []
    for (_family, spec), members in sorted(
        _grouped(svc, state.service_endpoints(svc.namespace, svc.name)).items(),
        key=lambda kv: kv[0][1],
    ):
        ready: list[dict[str, Any]] = []
        not_ready: list[dict[str, Any]] = []
        for _, (e, _ports) in sorted(members.items()):
            if not e.ready and e.terminating:
                continue
            doc: dict[str, Any] = {"ip": e.ip}
            if e.hostname:
                doc["hostname"] = e.hostname
            if e.node_name:
                doc["nodeName"] = e.node_name
            if e.pod:
                doc["targetRef"] = _target(e, svc.namespace)
            (ready if e.ready else not_ready).append(doc)
        if not (ready or not_ready):
            continue
        subset: dict[str, Any] = {}
        if ready:
            subset["addresses"] = ready
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        subset["ports"] = _port_docs(spec)
        # one subset per port set: merge subsets whose ports are the same (families)
        same = next((s for s in subsets if s["ports"] == subset["ports"]), None)
        if same is None:
            subsets.append(subset)
        else:
            for field in ("addresses", "notReadyAddresses"):
                if field in subset:
                    same[field] = same.get(field, []) + subset[field]
    meta: dict[str, Any] = {"name": svc.name, "namespace": svc.namespace}
    if svc.labels:
        meta["labels"] = svc.labels.as_dict()
    doc = {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta}
    if subsets:
        doc["subsets"] = subsets
    return doc


# -- describe ----------------------------------------------------------------------------


def _never(_: ObjectKey) -> float | None:
    return None


def timestamp(at: float | None) -> str:
    """A creation time as kubectl describe prints one (RFC 1123 with a numeric
    zone, here UTC: ``Sat, 05 Dec 2026 20:37:00 +0000``), or ``<unknown>``."""
    if at is None:
        return "<unknown>"
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


def aligned(lines: list[tuple[str, str]], indent: str = "") -> list[str]:
    width = max(len(k) for k, _ in lines) + 2
    pad = "\n" + indent + " " * width
    return [f"{indent}{k + ':':<{width}}{v.replace(chr(10), pad)}" for k, v in lines]


def node_roles(node: Node) -> str:
    """kubectl's ROLES: ``node-role.kubernetes.io/<role>`` and ``kubernetes.io/role``."""
    roles = sorted(
        {k[len(ROLE_PREFIX) :] for k in node.labels if k.startswith(ROLE_PREFIX)}
        | ({node.labels[ROLE_LABEL]} if ROLE_LABEL in node.labels else set())
    )
    return ",".join(r for r in roles if r) or NONE


def ports_text(ports: list[dict[str, Any]]) -> str:
    out = []
    for p in ports:
        text = f"{p.get('containerPort')}/{p.get('protocol', 'TCP')}"
        out.append(f"{text} ({p['name']})" if p.get("name") else text)
    return ", ".join(out) or NONE


def describe_pod(
    state: ClusterState,
    pod: Pod,
    age: Callable[[ObjectKey], str],
    created: Callable[[ObjectKey], float | None] = _never,
) -> list[str]:
    """kubectl-describe-like lines for ``pod``: identity, node, status, IPs, each
    container (image, ports, ready) and the conditions."""
    doc = manifests.to_manifest(pod)
    spec, status = doc.get("spec") or {}, doc.get("status") or {}
    node = state.nodes.get(pod.node_name) if pod.node_name else None
    node_text = NONE
    if pod.node_name:
        addr = node.addresses[0] if node is not None and node.addresses else ""
        node_text = f"{pod.node_name}/{addr}" if addr else pod.node_name
    phase = "Running" if pod.pod_ips and pod.node_name else "Pending"
    annotations = (doc.get("metadata") or {}).get("annotations") or {}
    lines: list[tuple[str, str]] = [
        ("Name", pod.name),
        ("Namespace", pod.namespace),
        ("Node", node_text),
        ("Start Time", timestamp(created(pod.key))),
        ("Labels", label_lines(pod.labels)),
        ("Annotations", "\n".join(f"{k}: {v}" for k, v in sorted(annotations.items())) or NONE),
        ("Status", "Terminating" if pod.terminating else phase),
        ("IP", pod.pod_ips[0] if pod.pod_ips else ""),
    ]
    if pod.hostname:
        lines.insert(2, ("Hostname", pod.hostname))
    owner = getattr(pod, "owner", None)  # the controlling ReplicaSet (svcnet.workloads)
    if owner is not None:
        lines.append(("Controlled By", f"{owner.kind}/{owner.name}"))
    out = aligned(lines)
    out.append("IPs:")
    out += [f"  IP:  {ip}" for ip in pod.pod_ips] or ["  <none>"]
    out.append("Containers:")
    for c in spec.get("containers") or []:
        out.append(f"  {c.get('name', '')}:")
        ports = c.get("ports") or []
        clines: list[tuple[str, str]] = [
            ("Image", str(c.get("image") or NONE)),
            ("Port" if len(ports) <= 1 else "Ports", ports_text(ports)),
            ("Host Port" if len(ports) <= 1 else "Host Ports", ", ".join(
                f"{p.get('hostPort', 0)}/{p.get('protocol', 'TCP')}" for p in ports
            ) or NONE),
            ("State", "Running" if phase == "Running" else "Waiting"),
            ("Ready", "True" if pod.ready else "False"),
            ("Restart Count", "0"),
        ]  # fmt: skip
        out += aligned(clines, "    ")
    conditions = [
        (c.get("type", ""), str(c.get("status", ""))) for c in status.get("conditions") or []
    ]
    seen = {t for t, _ in conditions}
    if "ContainersReady" not in seen:
        conditions.append(("ContainersReady", "True" if pod.ready else "False"))
    if "PodScheduled" not in seen:
        conditions.append(("PodScheduled", "True" if pod.node_name else "False"))
    out.append("Conditions:")
    width = max(len("Type"), *(len(t) for t, _ in conditions)) + 2
    out.append(f"  {'Type':<{width}}Status")
    out += [f"  {t:<{width}}{s}" for t, s in conditions]
    out.append("Events:           <none>")
    return out


def describe_node(
    state: ClusterState,
    node: Node,
    age: Callable[[ObjectKey], str],
    created: Callable[[ObjectKey], float | None] = _never,
) -> list[str]:
    """kubectl-describe-like lines for ``node``: roles, labels, addresses, pod
    CIDRs and the pods on it."""
    lines: list[tuple[str, str]] = [
        ("Name", node.name),
        ("Roles", node_roles(node)),
        ("Labels", label_lines(node.labels)),
        ("Annotations", NONE),
        ("CreationTimestamp", timestamp(created(node.key))),
    ]
    out = aligned(lines)
    out.append("Addresses:")
    out += [f"  InternalIP:  {a}" for a in node.addresses] or ["  <none>"]
    out += aligned(
        [
            ("PodCIDR", node.pod_cidrs[0] if node.pod_cidrs else NONE),
            ("PodCIDRs", ",".join(node.pod_cidrs) or NONE),
        ]
    )
    pods = sorted(p.key for p in state.pods.values() if p.node_name == node.name)
    out.append(f"Non-terminated Pods:  ({len(pods)} in total)")
    if pods:
        rows = [("Namespace", "Name", "Age"), ("---------", "----", "---")]
        rows += [(k.namespace, k.name, age(k)) for k in pods]
        w0, w1 = (max(len(r[i]) for r in rows) + 2 for i in range(2))
        out += [f"  {a:<{w0}}{b:<{w1}}{c}".rstrip() for a, b, c in rows]
    out.append("Events:               <none>")
    return out


def slice_ref(doc: Mapping[str, Any]) -> ObjectKey:
    """The key of an EndpointSlice manifest (applied or derived)."""
    meta = doc["metadata"]
    return ObjectKey(Kind.ENDPOINT_SLICE, meta.get("namespace", ""), meta["name"])
