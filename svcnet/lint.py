"""Lint: what a set of objects will do that people rarely intend, before it is applied.

Pure (no I/O): :func:`lint` takes parsed objects and a :class:`~svcnet.model.ClusterConfig`
(:func:`lint_state` an already built :class:`~svcnet.state.ClusterState`) and returns
:class:`Finding` values, sorted. The CLI's ``svcnet lint`` (:mod:`svcnet.cli.lint`)
reads the files; docs/reference/lint.md is the table of codes.

The objects are applied as ``svcnet apply`` applies them: one :class:`~svcnet.state.Apply`
on an empty state with the configuration, then the simulated controllers, scheduler and
kubelet (:func:`svcnet.workloads.settle`, as the store runs them), so Deployments have
their pods, pods their nodes and services their endpoints. When the batch is refused,
each object is applied on its own (nodes first) and every refused one is an error
naming the :class:`~svcnet.errors.ValidationError`'s object, field and value; the others
are linted.

Severity follows what a kubectl user expects: ``error`` when apply refuses the object
or it can never work as written; ``warning`` when it is legal but rarely intended.
Every check reuses the core's rule for what it reports: frontend conflicts are ranked
as :mod:`svcnet.plan.compiler` and :mod:`svcnet.semantics` rank them, endpoints are the
state's, named target ports resolve as :mod:`svcnet.state.endpoints` resolves them and
ExternalName targets are looked up in the cluster's DNS zone (:mod:`svcnet.dns.records`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import attrs

from svcnet.dns.records import NXDOMAIN, lookup
from svcnet.errors import ConflictError, ValidationError, shown_value
from svcnet.model import (
    ClusterConfig,
    KubeObject,
    Node,
    Pod,
    Service,
    ServiceType,
    TrafficPolicy,
)
from svcnet.semantics import CLUSTER_IP, EXTERNAL_IP, LOAD_BALANCER, frontends_of, local_endpoints
from svcnet.state import Apply, ClusterState
from svcnet.state.endpoints import _target_port, has_selector, selects
from svcnet.workloads import settle

__all__ = [
    "CODES",
    "Finding",
    "Severity",
    "lint",
    "lint_state",
    "refusal",
    "sort_findings",
]

Severity = Literal["error", "warning"]
ERROR: Severity = "error"
WARNING: Severity = "warning"

# code -> (severity, what it means); docs/reference/lint.md has the same table
CODES: dict[str, tuple[Severity, str]] = {
    "cluster-ip-range": (ERROR, "a ClusterIP outside the service CIDRs (apply refuses it)"),
    "node-port-range": (ERROR, "a NodePort outside the NodePort range (apply refuses it)"),
    "load-balancer-ip-range": (
        ERROR,
        "a spec.loadBalancerIP outside the LoadBalancer pool (the service never gets it)",
    ),
    "conflict": (ERROR, "an address or port another object in the files holds (apply refuses)"),
    "invalid": (ERROR, "any other object apply refuses"),
    "manifest": (ERROR, "a document that cannot be read as a manifest"),
    "frontend-conflict": (
        WARNING,
        "two services claim one address, port and protocol; the other one wins",
    ),
    "local-no-endpoint": (
        WARNING,
        "a Local traffic policy, and nodes with no local endpoint (dropped there)",
    ),
    "selector-no-pods": (WARNING, "a selector that matches no pod"),
    "target-port-undeclared": (WARNING, "a named targetPort that no selected pod declares"),
    "external-name-missing": (
        WARNING,
        "an ExternalName in the cluster domain that names nothing in the cluster",
    ),
}


@attrs.frozen
class Finding:
    """One thing lint found. ``object`` names it as errors do (``Service default/web``),
    ``field`` is the field path (``spec.ports[0].targetPort``; ``""`` for the whole
    object), ``code`` a key of :data:`CODES`."""

    severity: Severity
    code: str
    object: str
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.object}: {self.field}" if self.field else self.object
        return f"{self.severity}: {where}: {self.message} [{self.code}]"

    def to_json(self) -> dict[str, str]:
        """The finding as ``svcnet lint -o json`` writes it."""
        return attrs.asdict(self)


def _finding(code: str, obj: object, field: str, message: str) -> Finding:
    return Finding(CODES[code][0], code, str(obj), field, message)


def _in_any(ip: str, cidrs: Iterable[str]) -> bool:
    address = ipaddress.ip_address(ip)
    return any(address in ipaddress.ip_network(c, strict=False) for c in cidrs)


# -- objects apply refuses ---------------------------------------------------------------


def _refusal_code(error: ValidationError, config: ClusterConfig) -> str:
    """Which code a refusal is: the range checks by the offending value against ``config``."""
    value = error.value
    if isinstance(error, ConflictError):
        return "conflict"
    lo, hi = config.node_port_range
    if error.field.endswith(("nodePort", "NodePort")) and isinstance(value, int):
        return "invalid" if lo <= value <= hi else "node-port-range"
    if error.field.startswith("spec.clusterIP") and isinstance(value, str):
        try:
            inside = _in_any(value, config.service_cidrs)
        except ValueError:
            return "invalid"
        return "invalid" if inside else "cluster-ip-range"
    return "invalid"


def refusal(error: ValidationError, config: ClusterConfig = ClusterConfig()) -> Finding:  # noqa: B008
    """An error finding for an object apply (or the manifest parser) refused, with the
    error's object and field; the message shows the value as the API server does
    (``Invalid value: 40000: ...``)."""
    message = error.message
    if error.has_value:
        message = f"Invalid value: {shown_value(error.value)}: {message}"
    return _finding(_refusal_code(error, config), error.obj, error.field, message)


def _build(
    objects: Sequence[KubeObject], config: ClusterConfig
) -> tuple[ClusterState, list[Finding]]:
    """The state of ``objects`` applied at once; when that is refused, of each object
    applied on its own (nodes first), with a finding per refused object."""
    empty = ClusterState.empty(config)
    items: Any = tuple(objects)  # attrs types Apply's converter parameter loosely
    try:
        return empty.step(Apply(items)), []
    except ValidationError:
        pass
    state, found = empty, []
    for obj in sorted(objects, key=lambda o: not isinstance(o, Node)):
        try:
            state = state.step(Apply((obj,)))
        except ValidationError as e:
            found.append(refusal(e, config))
    return state, found


# -- the checks ---------------------------------------------------------------------------

_FRONTEND_FIELD = {
    CLUSTER_IP: "spec.clusterIP",
    EXTERNAL_IP: "spec.externalIPs",
    LOAD_BALANCER: "status.loadBalancer.ingress",
}


def _proxied(svc: Service) -> bool:
    """kube-proxy installs rules for it: proxied, neither ExternalName nor headless."""
    return svc.proxied and svc.type is not ServiceType.EXTERNAL_NAME and not svc.headless


def _frontend_conflicts(state: ClusterState) -> Iterator[Finding]:
    """Two services claiming one (address, port, protocol): the lowest rank (namespace,
    name, port index, frontend kind) wins, as the compiler and the reference decide;
    each losing claim of another service is reported once (on any node)."""
    nodes: list[Node | None] = list(state.nodes.values()) or [None]
    reported: set[tuple[Any, ...]] = set()
    for node in nodes:
        claims: dict[tuple[str, int, str], list[tuple[tuple[str, str, int, str], Service]]] = {}
        for svc in state.services.values():
            if not _proxied(svc):
                continue
            for port, kind, ip, number, _ in frontends_of(svc, node):
                key = (ip, number, port.protocol.value)
                rank = (svc.namespace, svc.name, svc.ports.index(port), kind)
                claims.setdefault(key, []).append((rank, svc))
        for (ip, number, protocol), ranked in claims.items():
            ranked.sort(key=lambda r: r[0])
            (win, winner), losers = ranked[0], ranked[1:]
            for rank, svc in losers:
                if svc is winner or (rank, ip, number) in reported:
                    continue
                reported.add((rank, ip, number))
                index, kind = rank[2], rank[3]
                field = _FRONTEND_FIELD.get(kind, f"spec.ports[{index}].nodePort")
                yield _finding(
                    "frontend-conflict",
                    svc.key,
                    field,
                    f"{kind} {ip}:{number}/{protocol} (port {index}) is also claimed by"
                    f" {winner.key} ({win[3]}, port {win[2]}), which wins (the first by"
                    " namespace/name): this one is not installed",
                )


def _local_policy(state: ClusterState, svc: Service) -> Iterator[Finding]:
    """Nodes where a Local policy has no local endpoint (ready, else serving and
    terminating: SEMANTICS "Which endpoints" 2) while the service has some elsewhere
    (with none at all traffic is rejected, not dropped): dropped there."""
    usable = [
        list(eps)
        for eps in state.service_endpoints(svc.namespace, svc.name).values()
        if any(e.ready or (e.serving and e.terminating) for e in eps)
    ]
    missing = sorted(n for n in state.nodes if any(not local_endpoints(e, n) for e in usable))
    if not missing:
        return
    names = ", ".join(missing)
    exposed = svc.external or bool(svc.external_ips)
    if svc.external_traffic_policy is TrafficPolicy.LOCAL and exposed:
        yield _finding(
            "local-no-endpoint",
            svc.key,
            "spec.externalTrafficPolicy",
            f"Local, and node(s) {names} have no local endpoint: external traffic"
            " (NodePort, LoadBalancer, externalIPs) arriving there is dropped",
        )
    if svc.internal_traffic_policy is TrafficPolicy.LOCAL:
        yield _finding(
            "local-no-endpoint",
            svc.key,
            "spec.internalTrafficPolicy",
            f"Local, and node(s) {names} have no local endpoint: traffic from"
            " pods and processes there to the ClusterIP is dropped",
        )


def _selected(state: ClusterState, svc: Service) -> Iterator[Finding]:
    """A selector that matches no pod; named targetPorts no selected pod declares."""
    if svc.type is ServiceType.EXTERNAL_NAME or svc.selector is None or not has_selector(svc):
        return
    pods: list[Pod] = [
        p for (ns, _), p in state.pods.items() if ns == svc.namespace and selects(svc, p)
    ]
    if not pods:
        selector = ",".join(f"{k}={v}" for k, v in svc.selector.pairs())
        yield _finding(
            "selector-no-pods",
            svc.key,
            "spec.selector",
            f"{selector} matches no pod in namespace {svc.namespace}: the service has no endpoints",
        )
        return
    for i, port in enumerate(svc.ports):
        target = port.target_port
        if isinstance(target, str) and all(_target_port(port, p) is None for p in pods):
            yield _finding(
                "target-port-undeclared",
                svc.key,
                f"spec.ports[{i}].targetPort",
                f"no selected pod ({len(pods)}) declares a {port.protocol.value} container"
                f" port named {target!r}: port {port.port} has no endpoints",
            )


def _load_balancer_ip(state: ClusterState, svc: Service) -> Iterator[Finding]:
    """A requested LoadBalancer address outside the pool: the service stays pending."""
    wanted = svc.load_balancer_ip
    if svc.type is not ServiceType.LOAD_BALANCER or not wanted or svc.status_ingress:
        return
    pool = state.config.load_balancer_pool
    if not _in_any(wanted, pool):
        yield _finding(
            "load-balancer-ip-range",
            svc.key,
            "spec.loadBalancerIP",
            f"Invalid value: {shown_value(wanted)}: not in the LoadBalancer pool"
            f" ({', '.join(pool) or 'none'}): the service never gets an address",
        )


def _external_name(state: ClusterState, svc: Service) -> Iterator[Finding]:
    """An ExternalName inside the cluster domain naming nothing: a service name
    (``[host.|_port._proto.]<svc>.<ns>.svc.<domain>``) of no service in the objects,
    or any other name the cluster's DNS answers NXDOMAIN for."""
    if svc.type is not ServiceType.EXTERNAL_NAME:
        return
    name = svc.external_name.rstrip(".").lower()
    domain = state.config.cluster_domain.strip(".").lower()
    if not (name == domain or name.endswith("." + domain)):
        return
    labels = name[: -len(domain)].rstrip(".").split(".") if name != domain else []
    if len(labels) >= 3 and labels[-1] == "svc":
        namespace, service = labels[-2], labels[-3]
        if (namespace, service) in state.services:
            return
        what = f"Service {namespace}/{service}, which is not among these objects"
    elif lookup(state, name, "A").rcode == NXDOMAIN:
        what = "nothing the cluster's DNS answers for (NXDOMAIN)"
    else:
        return
    yield _finding(
        "external-name-missing",
        svc.key,
        "spec.externalName",
        f"{svc.external_name} is in the cluster domain ({domain}) and names {what}",
    )


def lint_state(state: ClusterState) -> tuple[Finding, ...]:
    """The warnings (and the LoadBalancer pool errors) of a built state, sorted by
    severity (errors first), object, field and code."""
    found = list(_frontend_conflicts(state))
    for svc in state.services.values():
        found += _load_balancer_ip(state, svc)
        found += _external_name(state, svc)
        found += _selected(state, svc)
        if _proxied(svc):
            found += _local_policy(state, svc)
    return sort_findings(found)


def sort_findings(found: Iterable[Finding]) -> tuple[Finding, ...]:
    """``found`` once each, errors first, then by object, field and code."""
    return tuple(sorted(set(found), key=lambda f: (f.severity != ERROR, f.object, f.field, f.code)))


def lint(
    objects: Iterable[KubeObject],
    config: ClusterConfig = ClusterConfig(),  # noqa: B008
) -> tuple[Finding, ...]:
    """Every finding for ``objects`` (parsed, e.g. by :func:`svcnet.manifests.load`)
    applied together on an empty cluster with ``config``; see the module docstring."""
    state, refused = _build(list(objects), config)
    return sort_findings([*refused, *lint_state(settle(state))])
