"""``apps/v1`` Deployments and ReplicaSets, and the pod fields the simulated
controllers, scheduler and kubelet use (:mod:`svcnet.workloads`), read and written.

:mod:`svcnet.manifests.parse` and :mod:`svcnet.manifests.write` call in here; a pod
template is read and written by their Pod functions (passed in, so no module
imports the other both ways), its refusals moved under ``spec.template``.

Decisions worth knowing:

* Logical times (the state revision an object was created at, a pod became ready
  at) round-trip as the annotations ``svcnet.io/created-revision`` and
  ``svcnet.io/ready-revision``; they are not part of ``annotations`` in the model.
  The revision of a Deployment or ReplicaSet is its
  ``deployment.kubernetes.io/revision`` annotation, likewise kept apart.
* Of a pod's ``ownerReferences`` the controller reference is kept (the first one
  with ``controller: true``, else the first); of its containers' readiness probes
  the first (tcpSocket or httpGet; exec and grpc probes are refused: svcnet cannot
  run them). ``restarts`` is the highest ``restartCount`` of
  ``status.containerStatuses``. Pod conditions other than Ready are kept as given
  (type, status, reason, message).
* A pod whose status has a Ready condition, True or False, was reported (by hand or
  by a kubelet): ``Pod.status_reported``, which the simulated kubelet of
  :mod:`svcnet.workloads` leaves alone, so a pod applied with Ready False stays not
  ready. A pod with no phase, not ready and not reported is written without a Ready
  condition, so it reads back the same.
* ``minReadySeconds``, ``paused``, ``progressDeadlineSeconds`` are not modelled
  (a pod is available as soon as it is ready).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from svcnet.errors import ValidationError
from svcnet.manifests.fields import Doc, iana_svc_name_error, label_key_error, type_name
from svcnet.model import (
    REVISION_ANNOTATION,
    Deployment,
    DeploymentStrategy,
    Labels,
    OwnerReference,
    Pod,
    PodCondition,
    PodPhase,
    PodTemplate,
    ProbeHandler,
    ReadinessProbe,
    ReplicaSet,
    Selector,
    StrategyType,
)
from svcnet.state.selectors import parse_selector
from svcnet.state.workloads import check_int_or_percent, check_workload

__all__ = [
    "CREATED_ANNOTATION",
    "READY_ANNOTATION",
    "node_extras",
    "node_extras_manifest",
    "parse_workload",
    "pod_extras",
    "pod_extras_manifest",
    "selector_manifest",
    "workload_manifest",
]

CREATED_ANNOTATION = "svcnet.io/created-revision"
READY_ANNOTATION = "svcnet.io/ready-revision"
_CONDITION_STATUSES = ("True", "False", "Unknown")

PodParser = Callable[[Mapping[str, Any]], Any]
PodWriter = Callable[[Pod], dict[str, Any]]


# ---------------------------------------------------------------- shared pieces


def read_annotations(d: Doc, value: Any, path: str) -> dict[str, str]:
    """``metadata.annotations``: qualified-name keys, string values."""
    out: dict[str, str] = {}
    for k, v in d.mapping(value, path).items():
        d.check(path, k, label_key_error(k))
        out[k] = d.text(v, f"{path}[{k}]")
    return out


def _revision(d: Doc, notes: dict[str, str], key: str, path: str) -> int:
    text = notes.pop(key, "")
    if not text:
        return 0
    if not text.isdigit():
        d.fail(f"{path}[{key}]", f"{text!r}: must be a non-negative integer")
    return int(text)


def owner_reference(d: Doc, value: Any, path: str) -> OwnerReference | None:
    refs = d.items(value, path)
    chosen: tuple[str, Mapping[str, Any]] | None = None
    for p, ref in refs:
        if d.flag(ref.get("controller"), p + ".controller", False):
            chosen = (p, ref)
            break
    if chosen is None and refs:
        chosen = refs[0]
    if chosen is None:
        return None
    p, ref = chosen
    kind, name = d.text(ref.get("kind"), p + ".kind"), d.text(ref.get("name"), p + ".name")
    if not kind:
        d.fail(p + ".kind", "kind is required")
    if not name:
        d.fail(p + ".name", "name is required")
    return OwnerReference(
        kind=kind,
        name=name,
        api_version=d.text(ref.get("apiVersion"), p + ".apiVersion") or "apps/v1",
        uid=d.text(ref.get("uid"), p + ".uid"),
    )


def owner_manifest(owner: OwnerReference) -> list[dict[str, Any]]:
    ref: dict[str, Any] = {
        "apiVersion": owner.api_version,
        "kind": owner.kind,
        "name": owner.name,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    if owner.uid:
        ref["uid"] = owner.uid
    return [ref]


def _probe(d: Doc, value: Any, path: str) -> ReadinessProbe:
    m = d.mapping(value, path)
    handlers = [h for h in ("tcpSocket", "httpGet", "exec", "grpc") if m.get(h) is not None]
    if len(handlers) != 1:
        d.fail(path, "must specify exactly one handler (tcpSocket or httpGet)")
    if handlers[0] in ("exec", "grpc"):
        d.fail(f"{path}.{handlers[0]}", "svcnet runs tcpSocket and httpGet probes only")
    handler = ProbeHandler(handlers[0])
    where = f"{path}.{handler.value}"
    action = d.mapping(m.get(handler.value), where)
    raw_port = action.get("port")
    port: int | str
    if isinstance(raw_port, str) and raw_port:
        port = d.check(where + ".port", raw_port, iana_svc_name_error(raw_port))
    else:
        given = d.port(raw_port, where + ".port")
        if given is None:
            d.fail(where + ".port", "port is required")
        port = given
    path_text = d.text(action.get("path"), where + ".path")
    scheme = d.text(action.get("scheme"), where + ".scheme") or "HTTP"
    if scheme not in ("HTTP", "HTTPS"):
        d.fail(
            where + ".scheme", f"unsupported value {scheme!r}: supported values: 'HTTP', 'HTTPS'"
        )

    def number(key: str, default: int, least: int) -> int:
        n = d.integer(m.get(key), f"{path}.{key}")
        if n is None:
            return default
        if n < least:
            d.fail(f"{path}.{key}", f"{n}: must be greater than or equal to {least}")
        return n

    return ReadinessProbe(
        handler=handler,
        port=port,
        path=path_text if handler is ProbeHandler.HTTP_GET else "",
        scheme=scheme,
        initial_delay_seconds=number("initialDelaySeconds", 0, 0),
        period_seconds=number("periodSeconds", 10, 1),
        timeout_seconds=number("timeoutSeconds", 1, 1),
        success_threshold=number("successThreshold", 1, 1),
        failure_threshold=number("failureThreshold", 3, 1),
    )


def probe_manifest(probe: ReadinessProbe) -> dict[str, Any]:
    action: dict[str, Any] = {"port": probe.port}
    if probe.handler is ProbeHandler.HTTP_GET:
        action["path"] = probe.path or "/"
        action["scheme"] = probe.scheme
    return {
        probe.handler.value: action,
        "initialDelaySeconds": probe.initial_delay_seconds,
        "periodSeconds": probe.period_seconds,
        "timeoutSeconds": probe.timeout_seconds,
        "successThreshold": probe.success_threshold,
        "failureThreshold": probe.failure_threshold,
    }


# ---------------------------------------------------------------- Pod and Node


def pod_extras(
    d: Doc, meta: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]
) -> dict[str, Any]:
    """The Pod fields of :mod:`svcnet.workloads` (keyword arguments of ``Pod``)."""
    notes = read_annotations(d, meta.get("annotations"), "metadata.annotations")
    created = _revision(d, notes, CREATED_ANNOTATION, "metadata.annotations")
    ready_since = _revision(d, notes, READY_ANNOTATION, "metadata.annotations")
    probe = None
    for cpath, container in d.items(spec.get("containers"), "spec.containers"):
        if container.get("readinessProbe") is not None and probe is None:
            probe = _probe(d, container.get("readinessProbe"), cpath + ".readinessProbe")
    phase_text = d.text(status.get("phase"), "status.phase")
    phase = d.choice(PodPhase, phase_text, "status.phase", PodPhase.PENDING) if phase_text else None
    conditions: list[PodCondition] = []
    reported = False
    for p, cond in d.items(status.get("conditions"), "status.conditions"):
        ctype = d.text(cond.get("type"), p + ".type")
        if ctype == "Ready":
            reported = True
            continue
        cstatus = d.text(cond.get("status"), p + ".status")
        if cstatus not in _CONDITION_STATUSES:
            d.fail(p + ".status", f"{cstatus!r}: must be 'True', 'False' or 'Unknown'")
        conditions.append(
            PodCondition(
                type=ctype,
                status=cstatus,
                reason=d.text(cond.get("reason"), p + ".reason"),
                message=d.text(cond.get("message"), p + ".message"),
            )
        )
    restarts = 0
    for p, cs in d.items(status.get("containerStatuses"), "status.containerStatuses"):
        n = d.integer(cs.get("restartCount"), p + ".restartCount") or 0
        if n < 0:
            d.fail(p + ".restartCount", f"{n}: must be greater than or equal to 0")
        restarts = max(restarts, n)
    return {
        "annotations": Labels.of(notes),
        "owner": owner_reference(d, meta.get("ownerReferences"), "metadata.ownerReferences"),
        "node_selector": d.labels(spec.get("nodeSelector"), "spec.nodeSelector"),
        "readiness_probe": probe,
        "phase": phase,
        "conditions": tuple(conditions),
        "restarts": restarts,
        "created": created,
        "ready_since": ready_since,
        "status_reported": reported,
    }


def pod_extras_manifest(
    pod: Pod, meta: dict[str, Any], spec: dict[str, Any], status: dict[str, Any]
) -> None:
    """Write :func:`pod_extras`' fields into a pod manifest's parts."""
    notes = pod.annotations.as_dict()
    if pod.created:
        notes[CREATED_ANNOTATION] = str(pod.created)
    if pod.ready_since:
        notes[READY_ANNOTATION] = str(pod.ready_since)
    if notes:
        meta["annotations"] = notes
    if pod.owner is not None:
        meta["ownerReferences"] = owner_manifest(pod.owner)
    if pod.node_selector:
        spec["nodeSelector"] = pod.node_selector.as_dict()
    if pod.readiness_probe is not None:
        spec["containers"][0]["readinessProbe"] = probe_manifest(pod.readiness_probe)
    if pod.phase is not None:
        status["phase"] = pod.phase.value
    elif not (pod.ready or pod.status_reported):  # no Ready condition: none was reported
        status["conditions"] = [c for c in status["conditions"] if c.get("type") != "Ready"]
    status["conditions"].extend(
        {
            "type": c.type,
            "status": c.status,
            **({"reason": c.reason} if c.reason else {}),
            **({"message": c.message} if c.message else {}),
        }
        for c in pod.conditions
    )
    if pod.restarts:
        name = spec["containers"][0]["name"]
        status["containerStatuses"] = [{"name": name, "restartCount": pod.restarts}]


def node_extras(d: Doc, spec: Mapping[str, Any], status: Mapping[str, Any]) -> dict[str, Any]:
    """A Node's ``spec.unschedulable`` and Ready condition (True when absent)."""
    ready = True
    for p, cond in d.items(status.get("conditions"), "status.conditions"):
        if d.text(cond.get("type"), p + ".type") == "Ready":
            cstatus = d.text(cond.get("status"), p + ".status")
            if cstatus not in _CONDITION_STATUSES:
                d.fail(p + ".status", f"{cstatus!r}: must be 'True', 'False' or 'Unknown'")
            ready = cstatus == "True"
    return {
        "unschedulable": d.flag(spec.get("unschedulable"), "spec.unschedulable", False),
        "ready": ready,
    }


def node_extras_manifest(
    unschedulable: bool, ready: bool, spec: dict[str, Any], doc: dict[str, Any]
) -> None:
    if unschedulable:
        spec["unschedulable"] = True
    if not ready:
        doc.setdefault("status", {})["conditions"] = [{"type": "Ready", "status": "False"}]


# ---------------------------------------------------------------- Deployment, ReplicaSet


def _template(d: Doc, value: Any, namespace: str, parse_pod: PodParser, obj: str) -> PodTemplate:
    path = "spec.template"
    m = d.mapping(value, path)
    meta = d.mapping(m.get("metadata"), path + ".metadata")
    doc = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "template",
            "namespace": namespace,
            "labels": meta.get("labels"),
            "annotations": meta.get("annotations"),
        },
        "spec": m.get("spec"),
    }
    try:
        pod = parse_pod(doc)
    except ValidationError as e:
        raise ValidationError(obj, f"{path}.{e.field}" if e.field else path, e.message) from None
    return PodTemplate(
        labels=pod.labels,
        annotations=pod.annotations,
        ports=pod.ports,
        node_name=pod.node_name,
        node_selector=pod.node_selector,
        host_network=pod.host_network,
        hostname=pod.hostname,
        subdomain=pod.subdomain,
        readiness_probe=pod.readiness_probe,
    )


def _strategy(d: Doc, value: Any) -> DeploymentStrategy:
    m = d.mapping(value, "spec.strategy")
    stype = d.choice(StrategyType, m.get("type"), "spec.strategy.type", StrategyType.ROLLING_UPDATE)
    rolling = m.get("rollingUpdate")
    if stype is StrategyType.RECREATE:
        if rolling is not None:
            d.fail(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            )
        return DeploymentStrategy(StrategyType.RECREATE)
    r = d.mapping(rolling, "spec.strategy.rollingUpdate")
    values: list[int | str] = []
    for key in ("maxSurge", "maxUnavailable"):
        raw = r.get(key)
        path = f"spec.strategy.rollingUpdate.{key}"
        if raw is None:
            values.append("25%")
            continue
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            d.fail(path, f"expected an integer or a percent string, got {type_name(raw)}")
        check_int_or_percent(d.obj, path, raw)
        values.append(raw)
    return DeploymentStrategy(stype, values[0], values[1])


def parse_workload(
    d: Doc,
    m: Mapping[str, Any],
    meta: Mapping[str, Any],
    namespace: str,
    name: str,
    labels: Labels,
    parse_pod: PodParser,
    deployment: bool,
) -> Deployment | ReplicaSet:
    """A Deployment (``deployment``) or ReplicaSet manifest; ``parse_pod`` reads the
    template as a Pod."""
    notes = read_annotations(d, meta.get("annotations"), "metadata.annotations")
    revision = _revision(d, notes, REVISION_ANNOTATION, "metadata.annotations")
    created = _revision(d, notes, CREATED_ANNOTATION, "metadata.annotations")
    spec = d.mapping(m.get("spec"), "spec")
    if spec.get("selector") is None:
        d.fail("spec.selector", "selector is required")
    selector: Selector = parse_selector(spec.get("selector"), d.obj, "spec.selector")
    template = _template(d, spec.get("template"), namespace, parse_pod, d.obj)
    replicas = d.integer(spec.get("replicas"), "spec.replicas")
    if replicas is not None and replicas < 0:
        d.fail("spec.replicas", f"{replicas}: must be greater than or equal to 0")
    common: dict[str, Any] = {
        "namespace": namespace,
        "name": name,
        "selector": selector,
        "template": template,
        "labels": labels,
        "annotations": Labels.of(notes),
        "replicas": 1 if replicas is None else replicas,
        "revision": revision,
    }
    obj: Deployment | ReplicaSet
    if deployment:
        limit = d.integer(spec.get("revisionHistoryLimit"), "spec.revisionHistoryLimit")
        obj = Deployment(
            **common,
            strategy=_strategy(d, spec.get("strategy")),
            revision_history_limit=10 if limit is None else limit,
        )
    else:
        owner = owner_reference(d, meta.get("ownerReferences"), "metadata.ownerReferences")
        obj = ReplicaSet(**common, owner=owner, created=created)
    check_workload(obj)
    return obj


def selector_manifest(selector: Selector) -> dict[str, Any]:
    """``{matchLabels, matchExpressions}`` of a selector."""
    match_labels: dict[str, str] = {}
    expressions: list[dict[str, Any]] = []
    for r in selector.requirements:
        pair = r.equality
        if pair is not None and pair[0] not in match_labels:
            match_labels[pair[0]] = pair[1]
            continue
        expr: dict[str, Any] = {"key": r.key, "operator": r.operator.value}
        if r.values:
            expr["values"] = sorted(r.values)
        expressions.append(expr)
    out: dict[str, Any] = {}
    if match_labels:
        out["matchLabels"] = match_labels
    if expressions:
        out["matchExpressions"] = expressions
    return out


def template_manifest(template: PodTemplate, write_pod: PodWriter) -> dict[str, Any]:
    pod = Pod(
        namespace="",
        name="template",
        labels=template.labels,
        annotations=template.annotations,
        ports=template.ports,
        node_name=template.node_name,
        node_selector=template.node_selector,
        host_network=template.host_network,
        hostname=template.hostname,
        subdomain=template.subdomain,
        readiness_probe=template.readiness_probe,
    )
    written = write_pod(pod)
    meta: dict[str, Any] = {}
    for key in ("labels", "annotations"):
        if key in written["metadata"]:
            meta[key] = written["metadata"][key]
    return {"metadata": meta, "spec": written["spec"]}


def workload_manifest(obj: Deployment | ReplicaSet, write_pod: PodWriter) -> dict[str, Any]:
    """A Deployment or ReplicaSet as an ``apps/v1`` manifest."""
    meta: dict[str, Any] = {"name": obj.name, "namespace": obj.namespace}
    if obj.labels:
        meta["labels"] = obj.labels.as_dict()
    notes = obj.annotations.as_dict()
    if obj.revision:
        notes[REVISION_ANNOTATION] = str(obj.revision)
    spec: dict[str, Any] = {
        "replicas": obj.replicas,
        "selector": selector_manifest(obj.selector),
        "template": template_manifest(obj.template, write_pod),
    }
    if isinstance(obj, Deployment):
        strategy: dict[str, Any] = {"type": obj.strategy.type.value}
        if obj.strategy.type is StrategyType.ROLLING_UPDATE:
            strategy["rollingUpdate"] = {
                "maxSurge": obj.strategy.max_surge,
                "maxUnavailable": obj.strategy.max_unavailable,
            }
        spec["strategy"] = strategy
        spec["revisionHistoryLimit"] = obj.revision_history_limit
    else:
        if obj.created:
            notes[CREATED_ANNOTATION] = str(obj.created)
        if obj.owner is not None:
            meta["ownerReferences"] = owner_manifest(obj.owner)
    if notes:
        meta["annotations"] = notes
    return {"apiVersion": "apps/v1", "kind": obj.key.kind.value, "metadata": meta, "spec": spec}
