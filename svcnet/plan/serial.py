"""Plans and Changes as JSON, so that a data plane can run out of process or be
written in another language (pure; the standard library's ``json`` only).

The form is stable: keys are sorted, lists keep the plan's own (sorted) order, and
equal values give equal text. Every document starts with a header::

    {"apiVersion": "svcnet/v1", "kind": "Plan" | "Changes", "contract": "1.1", ...}

``contract`` is :data:`CONTRACT_VERSION`, the version (``major.minor``) of the backend
contract the plan follows, which backends also declare (:mod:`svcnet.backend`): a
reader accepts the same major version with a minor version no newer than its own
(:func:`contract_mismatch`). docs/reference/plan-json.md documents every field.

``from_json(to_json(x)) == x`` for every plan and change set (the revision of a
plan, which plans do not compare, is carried too).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from svcnet.errors import ValidationError
from svcnet.model import IPFamily, Protocol
from svcnet.plan.types import (
    Action,
    Changes,
    EndpointSet,
    Frontend,
    FrontendKind,
    NodeSettings,
    Plan,
    PlanEndpoint,
    PortPlan,
    Route,
    ServicePlan,
    ServiceRef,
)

__all__ = [
    "API_VERSION",
    "CONTRACT_VERSION",
    "changes_from_json",
    "contract_mismatch",
    "from_data",
    "from_json",
    "plan_from_json",
    "to_data",
    "to_json",
]

CONTRACT_VERSION = "1.1"
"""The backend contract's version, ``major.minor``: a new major version breaks
backends (or plan readers) written for the old one; a new minor version only adds
what older backends may ignore."""

API_VERSION = "svcnet/v1"
"""The JSON documents' ``apiVersion``."""

Data = dict[str, Any]
T = TypeVar("T")

_OBJ = "plan JSON"
_VERSION = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")
_SOURCES = ("pod", "node", "external")


def contract_mismatch(theirs: object, ours: str = CONTRACT_VERSION) -> str | None:
    """Why contract version ``theirs`` cannot be used by a core (or reader) following
    ``ours``, or None when it can: the same major version and a minor version no
    newer than ours."""
    if not isinstance(theirs, str) or not _VERSION.fullmatch(theirs):
        return f"contract version {theirs!r} is not of the form 'major.minor'"
    major, minor = (int(x) for x in theirs.split("."))
    our_major, our_minor = (int(x) for x in ours.split("."))
    if major != our_major:
        return f"contract {theirs} has another major version than svcnet's contract {ours}"
    if minor > our_minor:
        return f"contract {theirs} is newer than svcnet's contract {ours}"
    return None


# -- to JSON -----------------------------------------------------------------------


def _route(r: Route) -> Data:
    return {
        "action": r.action.value,
        "endpoints": r.endpoints.value if r.endpoints is not None else None,
        "masquerade": r.masquerade,
    }


def _endpoints(eps: tuple[PlanEndpoint, ...]) -> list[Data]:
    return [{"ip": e.ip, "port": e.port} for e in eps]


def _port(p: PortPlan) -> Data:
    return {
        "name": p.name,
        "family": p.family.value,
        "protocol": p.protocol.value,
        "frontends": [{"kind": f.kind.value, "ip": f.ip, "port": f.port} for f in p.frontends],
        "clusterEndpoints": _endpoints(p.cluster_endpoints),
        "localEndpoints": _endpoints(p.local_endpoints),
        "routes": {
            "internal": {
                "pod": _route(p.internal_from_pod),
                "node": _route(p.internal_from_node),
                "external": _route(p.internal_from_external),
            },
            "external": {
                "pod": _route(p.external_from_pod),
                "node": _route(p.external_from_node),
                "external": _route(p.external_from_external),
            },
        },
        "sourceRanges": list(p.source_ranges),
        "affinityTimeout": p.affinity_timeout,
    }


def _ref(r: ServiceRef) -> Data:
    return {"namespace": r.namespace, "name": r.name}


def _service(s: ServicePlan) -> Data:
    return {
        **_ref(s.ref),
        "clusterIPs": list(s.cluster_ips),
        "proxied": s.proxied,
        "ports": [_port(p) for p in s.ports],
    }


def _settings(s: NodeSettings) -> Data:
    return {
        "node": s.node,
        "nodeIPs": list(s.node_ips),
        "clusterCIDRs": list(s.cluster_cidrs),
        "serviceCIDRs": list(s.service_cidrs),
    }


def _header(kind: str) -> Data:
    return {"apiVersion": API_VERSION, "kind": kind, "contract": CONTRACT_VERSION}


def to_data(value: Plan | Changes) -> Data:
    """``value`` as JSON-ready data (dicts, lists, strings, numbers, booleans, None)."""
    if isinstance(value, Plan):
        refs = sorted(value.services, key=lambda r: (r.namespace, r.name))
        return {
            **_header("Plan"),
            "revision": value.revision,
            "settings": _settings(value.settings),
            "services": [_service(value.services[r]) for r in refs],
        }
    return {
        **_header("Changes"),
        "settings": _settings(value.settings),
        "settingsChanged": value.settings_changed,
        "added": [_service(s) for s in value.added],
        "replaced": [_service(s) for s in value.replaced],
        "removed": [_ref(r) for r in value.removed],
    }


def to_json(value: Plan | Changes, *, indent: int | None = None) -> str:
    """``value`` as JSON text: keys sorted; compact unless ``indent`` is given."""
    separators = (",", ":") if indent is None else (",", ": ")
    return json.dumps(to_data(value), sort_keys=True, indent=indent, separators=separators)


# -- from JSON ---------------------------------------------------------------------


class _Reader:
    """Typed access to decoded JSON; every refusal names the field's path."""

    def fail(self, path: str, message: str) -> ValidationError:
        return ValidationError(_OBJ, path, message)

    def obj(self, value: object, path: str, keys: tuple[str, ...]) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"must be an object, not {type(value).__name__}")
        missing = [k for k in keys if k not in value]
        if missing:
            raise self.fail(path, "missing " + ", ".join(repr(k) for k in missing))
        return value

    def str_(self, value: object, path: str) -> str:
        if not isinstance(value, str):
            raise self.fail(path, f"must be a string, not {type(value).__name__}")
        return value

    def int_(self, value: object, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"must be an integer, not {type(value).__name__}")
        return value

    def bool_(self, value: object, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"must be true or false, not {type(value).__name__}")
        return value

    def list_(self, value: object, path: str, item: Callable[[object, str], T]) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise self.fail(path, f"must be a list, not {type(value).__name__}")
        return tuple(item(v, f"{path}[{i}]") for i, v in enumerate(value))

    def strs(self, value: object, path: str) -> tuple[str, ...]:
        return self.list_(value, path, self.str_)

    def enum(self, cls: Callable[[str], T], value: object, path: str, choices: list[str]) -> T:
        text = self.str_(value, path)
        if text not in choices:
            raise self.fail(path, f"{text!r} is not one of " + ", ".join(map(repr, choices)))
        return cls(text)


_R = _Reader()


def _read_route(value: object, path: str) -> Route:
    d = _R.obj(value, path, ("action", "endpoints", "masquerade"))
    action = _R.enum(Action, d["action"], path + ".action", [a.value for a in Action])
    endpoints = None
    if d["endpoints"] is not None:
        choices = [e.value for e in EndpointSet]
        endpoints = _R.enum(EndpointSet, d["endpoints"], path + ".endpoints", choices)
    return Route(action, endpoints, _R.bool_(d["masquerade"], path + ".masquerade"))


def _read_endpoint(value: object, path: str) -> PlanEndpoint:
    d = _R.obj(value, path, ("ip", "port"))
    return PlanEndpoint(_R.str_(d["ip"], path + ".ip"), _R.int_(d["port"], path + ".port"))


def _read_frontend(value: object, path: str) -> Frontend:
    d = _R.obj(value, path, ("kind", "ip", "port"))
    kinds = [k.value for k in FrontendKind]
    return Frontend(
        _R.enum(FrontendKind, d["kind"], path + ".kind", kinds),
        _R.str_(d["ip"], path + ".ip"),
        _R.int_(d["port"], path + ".port"),
    )


_PORT_KEYS = (
    "name",
    "family",
    "protocol",
    "frontends",
    "clusterEndpoints",
    "localEndpoints",
    "routes",
    "sourceRanges",
    "affinityTimeout",
)


def _read_port(value: object, path: str) -> PortPlan:
    d = _R.obj(value, path, _PORT_KEYS)
    routes = _R.obj(d["routes"], path + ".routes", ("internal", "external"))
    internal = _R.obj(routes["internal"], path + ".routes.internal", _SOURCES)
    external = _R.obj(routes["external"], path + ".routes.external", _SOURCES)
    ip = path + ".routes.internal."
    ep = path + ".routes.external."
    timeout = d["affinityTimeout"]
    return PortPlan(
        name=_R.str_(d["name"], path + ".name"),
        family=_R.enum(IPFamily, d["family"], path + ".family", [f.value for f in IPFamily]),
        protocol=_R.enum(Protocol, d["protocol"], path + ".protocol", [p.value for p in Protocol]),
        frontends=_R.list_(d["frontends"], path + ".frontends", _read_frontend),
        cluster_endpoints=_R.list_(
            d["clusterEndpoints"], path + ".clusterEndpoints", _read_endpoint
        ),
        local_endpoints=_R.list_(d["localEndpoints"], path + ".localEndpoints", _read_endpoint),
        internal_from_pod=_read_route(internal["pod"], ip + "pod"),
        internal_from_node=_read_route(internal["node"], ip + "node"),
        internal_from_external=_read_route(internal["external"], ip + "external"),
        external_from_pod=_read_route(external["pod"], ep + "pod"),
        external_from_node=_read_route(external["node"], ep + "node"),
        external_from_external=_read_route(external["external"], ep + "external"),
        source_ranges=_R.strs(d["sourceRanges"], path + ".sourceRanges"),
        affinity_timeout=None if timeout is None else _R.int_(timeout, path + ".affinityTimeout"),
    )


def _read_ref(value: object, path: str) -> ServiceRef:
    d = _R.obj(value, path, ("namespace", "name"))
    namespace = _R.str_(d["namespace"], path + ".namespace")
    return ServiceRef(namespace, _R.str_(d["name"], path + ".name"))


def _read_service(value: object, path: str) -> ServicePlan:
    d = _R.obj(value, path, ("namespace", "name", "clusterIPs", "proxied", "ports"))
    return ServicePlan(
        ref=_read_ref(d, path),
        cluster_ips=_R.strs(d["clusterIPs"], path + ".clusterIPs"),
        ports=_R.list_(d["ports"], path + ".ports", _read_port),
        proxied=_R.bool_(d["proxied"], path + ".proxied"),
    )


def _read_settings(value: object, path: str) -> NodeSettings:
    d = _R.obj(value, path, ("node", "nodeIPs", "clusterCIDRs", "serviceCIDRs"))
    return NodeSettings(
        node=_R.str_(d["node"], path + ".node"),
        node_ips=_R.strs(d["nodeIPs"], path + ".nodeIPs"),
        cluster_cidrs=_R.strs(d["clusterCIDRs"], path + ".clusterCIDRs"),
        service_cidrs=_R.strs(d["serviceCIDRs"], path + ".serviceCIDRs"),
    )


def from_data(data: object) -> Plan | Changes:
    """The plan or change set :func:`to_data` made (ValidationError, naming the field,
    for anything else; a ``contract`` this svcnet cannot read is refused)."""
    d = _R.obj(data, "", ("apiVersion", "kind", "contract"))
    if d["apiVersion"] != API_VERSION:
        raise _R.fail("apiVersion", f"{d['apiVersion']!r}: must be {API_VERSION!r}")
    mismatch = contract_mismatch(d["contract"])
    if mismatch is not None:
        raise _R.fail("contract", mismatch)
    kind = d["kind"]
    if kind == "Plan":
        d = _R.obj(d, "", ("revision", "settings", "services"))
        services = _R.list_(d["services"], "services", _read_service)
        refs = [s.ref for s in services]
        if len(set(refs)) != len(refs):
            raise _R.fail("services", "a service is listed twice")
        return Plan(
            _read_settings(d["settings"], "settings"),
            {s.ref: s for s in services},
            _R.int_(d["revision"], "revision"),
        )
    if kind == "Changes":
        d = _R.obj(d, "", ("settings", "settingsChanged", "added", "replaced", "removed"))
        return Changes(
            settings=_read_settings(d["settings"], "settings"),
            settings_changed=_R.bool_(d["settingsChanged"], "settingsChanged"),
            added=_R.list_(d["added"], "added", _read_service),
            replaced=_R.list_(d["replaced"], "replaced", _read_service),
            removed=_R.list_(d["removed"], "removed", _read_ref),
        )
    raise _R.fail("kind", f"{kind!r}: must be 'Plan' or 'Changes'")


def from_json(text: str | bytes) -> Plan | Changes:
    """The plan or change set :func:`to_json` wrote."""
    try:
        data = json.loads(text)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ValidationError(_OBJ, "", f"not JSON: {e}") from e
    return from_data(data)


def plan_from_json(text: str | bytes) -> Plan:
    """Like :func:`from_json`, refusing anything but a plan."""
    value = from_json(text)
    if not isinstance(value, Plan):
        raise ValidationError(_OBJ, "kind", "'Changes', expected 'Plan'")
    return value


def changes_from_json(text: str | bytes) -> Changes:
    """Like :func:`from_json`, refusing anything but a change set."""
    value = from_json(text)
    if not isinstance(value, Changes):
        raise ValidationError(_OBJ, "kind", "'Plan', expected 'Changes'")
    return value
