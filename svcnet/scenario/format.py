"""The scenario file format (``svcnet/v1alpha1``, kind ``Scenario``): types and parsing.

Pure: :func:`parse_scenario` turns the text of a scenario file into a
:class:`Scenario`, checking every key strictly; a malformed file raises
:class:`~svcnet.errors.ScenarioError` naming the file and the place in it
(``f.yaml: step 2: expect[0].from: ...``). Manifests in ``apply``/``delete``
steps are kept as documents: they are parsed when the step runs, so that an
``apply`` with ``error:`` can expect a validation error. Reading files and
running scenarios is :mod:`svcnet.scenario.run`'s job.
"""

from __future__ import annotations

import contextlib
import enum
import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import yaml

from svcnet.errors import ScenarioError
from svcnet.manifests.parse import YamlLoader
from svcnet.model import ClusterConfig, IPFamily, Protocol, format_endpoint, norm_ip, parse_endpoint
from svcnet.probe import Verdict

API_VERSION = "svcnet/v1alpha1"
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_DNS_TYPES = ("A", "AAAA", "SRV", "CNAME", "PTR")
_RCODES = ("NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "FORMERR", "NOTIMP")


# -- the scenario, as loaded ---------------------------------------------------


class StepKind(enum.Enum):
    APPLY = "apply"
    DELETE = "delete"
    EXPECT = "expect"
    DNS = "dns"


@attrs.frozen
class Source:
    """A probe's ``from``: exactly one of pod ("NS/NAME"), node, external IP."""

    pod: str | None = None
    node: str | None = None
    external: str | None = None
    via: str | None = None

    def __str__(self) -> str:
        if self.pod is not None:
            text = f"pod {self.pod}"
        elif self.node is not None:
            text = f"node {self.node}"
        else:
            text = f"external {self.external}"
        return text + (f" via {self.via}" if self.via else "")


@attrs.frozen
class Expected:
    """A probe's ``result``; ``masquerade`` is a bool or per-endpoint pairs."""

    verdict: Verdict
    endpoints: frozenset[str] = frozenset()
    masquerade: bool | tuple[tuple[str, bool], ...] | None = None
    sticky: bool | None = None

    def masquerade_of(self, endpoint: str) -> bool | None:
        if isinstance(self.masquerade, tuple):
            return dict(self.masquerade).get(endpoint)
        return self.masquerade

    def __str__(self) -> str:
        if self.verdict is not Verdict.FORWARD:
            return str(self.verdict.value)
        if isinstance(self.masquerade, tuple):
            masq = "{" + ", ".join(f"{e}: {format_bool(m)}" for e, m in self.masquerade) + "}"
        else:
            masq = format_bool(bool(self.masquerade))
        text = "forward to {" + ", ".join(sorted(self.endpoints)) + "} masquerade " + masq
        if self.sticky is not None:
            text += f" sticky {format_bool(self.sticky)}"
        return text


@attrs.frozen
class ProbeSpec:
    name: str
    source: Source
    dst_ip: str
    dst_port: int
    protocol: Protocol
    expected: Expected

    def __str__(self) -> str:
        dst = format_endpoint(self.dst_ip, self.dst_port)
        return f"from {self.source} to {dst}/{self.protocol.value}"


@attrs.frozen
class DnsQuery:
    query: str
    qtype: str
    from_pod: str | None = None
    answer: frozenset[str] = frozenset()
    rcode: str = "NOERROR"

    def __str__(self) -> str:
        where = f" from pod {self.from_pod}" if self.from_pod else ""
        return f"{self.qtype} {self.query}{where}"

    def expected(self) -> str:
        return dns_text(self.rcode, self.answer)


@attrs.frozen
class Step:
    """One step; ``index`` counts from 1. ``documents``: the raw apply/delete docs."""

    index: int
    kind: StepKind
    documents: tuple[Mapping[str, Any], ...] = ()
    error: str | None = None
    probes: tuple[ProbeSpec, ...] = ()
    queries: tuple[DnsQuery, ...] = ()

    @property
    def expectations(self) -> int:
        return len(self.probes) + len(self.queries) + (1 if self.error is not None else 0)


@attrs.frozen
class Scenario:
    path: str
    name: str
    description: str
    config: ClusterConfig
    steps: tuple[Step, ...]


# -- loading ---------------------------------------------------------------------


def format_bool(value: bool) -> str:
    return "true" if value else "false"


def dns_text(rcode: str, answer: frozenset[str]) -> str:
    records = "[" + ", ".join(sorted(answer)) + "]"
    return records if rcode == "NOERROR" else f"{rcode} {records}"


class _Where:
    """Builds ScenarioErrors that name the file and the place in it."""

    def __init__(self, path: str, place: str = "") -> None:
        self.path = path
        self.place = place

    def at(self, place: str) -> _Where:
        if not self.place:
            return _Where(self.path, place.lstrip("."))
        sep = "" if place[:1] in ".[" else ": "
        return _Where(self.path, f"{self.place}{sep}{place}")

    def error(self, message: str) -> ScenarioError:
        where = f"{self.path}: {self.place}: " if self.place else f"{self.path}: "
        return ScenarioError(where + message)

    def mapping(
        self, value: object, allowed: Sequence[str], required: Sequence[str] = ()
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(f"expected a mapping, got {_kind(value)}")
        unknown = sorted(str(k) for k in value if k not in allowed)
        if unknown:
            raise self.error(f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(allowed)})")
        for key in required:
            if key not in value:
                raise self.error(f"missing required key {key!r}")
        return value

    def string(self, value: object, what: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(f"{what} must be a non-empty string, got {_kind(value)}")
        return value

    def strings(self, value: object, what: str) -> list[str]:
        if not isinstance(value, list):
            raise self.error(f"{what} must be a list, got {_kind(value)}")
        return [self.at(f".{what}[{i}]").string(v, "item") for i, v in enumerate(value)]

    def boolean(self, value: object, what: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(f"{what} must be true or false, got {_kind(value)}")
        return value

    def ip(self, value: object, what: str) -> str:
        text = self.string(value, what)
        try:
            return norm_ip(text)
        except ValueError:
            raise self.error(f"{what}: {text!r} is not an IP address") from None

    def cidrs(self, value: object, what: str) -> tuple[str, ...]:
        out = []
        for text in self.strings(value, what):
            try:
                out.append(str(ipaddress.ip_network(text, strict=False)))
            except ValueError:
                raise self.error(f"{what}: {text!r} is not a CIDR") from None
        return tuple(out)

    def pod_ref(self, value: object, what: str) -> str:
        text = self.string(value, what)
        ns, sep, name = text.partition("/")
        if not sep or not ns or not name or "/" in name:
            raise self.error(f"{what} must be NAMESPACE/NAME, got {text!r}")
        return text


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return f"{value!r}"
    return type(value).__name__


def norm_endpoint(text: str) -> str:
    """``ip:port`` / ``[v6]:port`` in canonical form; ValueError if malformed."""
    ip, port = parse_endpoint(text)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    return format_endpoint(ip, port)


def _read_yaml(text: str, path: str) -> object:
    try:
        docs = [d for d in yaml.load_all(text, Loader=YamlLoader) if d is not None]
    except yaml.YAMLError as e:
        raise ScenarioError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise ScenarioError(f"{path}: not valid YAML: nested too deeply") from None
    if len(docs) != 1:
        raise ScenarioError(f"{path}: expected one YAML document, found {len(docs)}")
    return docs[0]


def parse_scenario(text: str, path: str = "<scenario>") -> Scenario:
    """Validate scenario YAML ``text``; ``path`` names it in errors."""
    w = _Where(path)
    top = w.mapping(
        _read_yaml(text, path),
        ("apiVersion", "kind", "name", "description", "config", "steps"),
        ("apiVersion", "kind", "name", "steps"),
    )
    if top["apiVersion"] != API_VERSION:
        raise w.error(f"apiVersion must be {API_VERSION}, got {_kind(top['apiVersion'])}")
    if top["kind"] != "Scenario":
        raise w.error(f"kind must be Scenario, got {_kind(top['kind'])}")
    name = w.string(top["name"], "name")
    if not _NAME_RE.match(name):
        raise w.error(f"name must be kebab-case (a-z, 0-9, -), got {name!r}")
    description = top.get("description", "")
    if not isinstance(description, str):
        raise w.error("description must be a string")
    config = _config(w.at("config"), top.get("config", {}))
    raw_steps = top["steps"]
    if not isinstance(raw_steps, list) or not raw_steps:
        raise w.error("steps must be a non-empty list")
    steps = tuple(_step(w.at(f"step {i}"), i, raw) for i, raw in enumerate(raw_steps, 1))
    return Scenario(path, name, description, config, steps)


def parse_config(raw: object, name: str) -> ClusterConfig:
    """A scenario's ``config`` mapping on its own (``svcnet config -f FILE``); a
    :class:`~svcnet.errors.ScenarioError` naming ``name`` when it is malformed."""
    return _config(_Where(name, "config"), raw)


def _config(w: _Where, raw: object) -> ClusterConfig:
    keys = (
        "serviceCIDRs",
        "clusterCIDRs",
        "nodePortRange",
        "loadBalancerPool",
        "clusterDomain",
        "masqueradeAll",
    )
    c = w.mapping(raw if raw is not None else {}, keys)
    d = ClusterConfig()
    node_ports = d.node_port_range
    if "nodePortRange" in c:
        text = str(c["nodePortRange"])
        m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text)
        if not m or not 0 < int(m[1]) <= int(m[2]) < 65536:
            raise w.error(f"nodePortRange must be 'LOW-HIGH' within 1-65535, got {text!r}")
        node_ports = (int(m[1]), int(m[2]))
    service = w.cidrs(c["serviceCIDRs"], "serviceCIDRs") if "serviceCIDRs" in c else d.service_cidrs
    if not service or len({IPFamily.of_network(x) for x in service}) != len(service):
        raise w.error("serviceCIDRs must hold one CIDR per IP family")
    return ClusterConfig(
        service_cidrs=service,
        cluster_cidrs=w.cidrs(c["clusterCIDRs"], "clusterCIDRs")
        if "clusterCIDRs" in c
        else d.cluster_cidrs,
        node_port_range=node_ports,
        load_balancer_pool=w.cidrs(c["loadBalancerPool"], "loadBalancerPool")
        if "loadBalancerPool" in c
        else d.load_balancer_pool,
        cluster_domain=w.string(c["clusterDomain"], "clusterDomain").strip(".").lower()
        if "clusterDomain" in c
        else d.cluster_domain,
        masquerade_all=w.boolean(c["masqueradeAll"], "masqueradeAll")
        if "masqueradeAll" in c
        else d.masquerade_all,
    )


def _step(w: _Where, index: int, raw: object) -> Step:
    step = w.mapping(raw, ("apply", "delete", "expect", "dns", "error"))
    kinds = [k for k in StepKind if k.value in step]
    if len(kinds) != 1:
        raise w.error("a step needs exactly one of apply, delete, expect, dns")
    kind = kinds[0]
    error = step.get("error")
    if error is not None and kind is not StepKind.APPLY:
        raise w.error("error: is only allowed on an apply step")
    if "error" in step:
        error = w.string(error, "error")
    items = step[kind.value]
    if not isinstance(items, list) or not items:
        raise w.at(kind.value).error("must be a non-empty list")
    if kind in (StepKind.APPLY, StepKind.DELETE):
        for i, doc in enumerate(items):
            if not isinstance(doc, dict):
                raise w.at(f"{kind.value}[{i}]").error(f"expected a manifest, got {_kind(doc)}")
        return Step(index, kind, documents=tuple(items), error=error)
    if kind is StepKind.EXPECT:
        probes = tuple(_probe(w.at(f"expect[{i}]"), p) for i, p in enumerate(items))
        return Step(index, kind, probes=probes)
    queries = tuple(_dns(w.at(f"dns[{i}]"), q) for i, q in enumerate(items))
    return Step(index, kind, queries=queries)


def _protocol(w: _Where, value: object) -> Protocol:
    try:
        return Protocol(value)
    except ValueError:
        raise w.error(f"protocol must be TCP, UDP or SCTP, got {_kind(value)}") from None


def _probe(w: _Where, raw: object) -> ProbeSpec:
    p = w.mapping(raw, ("name", "from", "to", "result"), ("from", "to", "result"))
    fw = w.at(".from")
    src = fw.mapping(p["from"], ("pod", "node", "external", "via"))
    given = [k for k in ("pod", "node", "external") if k in src]
    if len(given) != 1:
        raise fw.error("needs exactly one of pod, node, external")
    via = fw.string(src["via"], "via") if "via" in src else None
    if given == ["pod"]:
        source = Source(pod=fw.pod_ref(src["pod"], "pod"), via=via)
    elif given == ["node"]:
        if via is not None:
            raise fw.error("via is not allowed with node (the node handles its own packet)")
        source = Source(node=fw.string(src["node"], "node"))
    else:
        if via is None:
            raise fw.error("external needs via: the node the packet arrives at")
        source = Source(external=fw.ip(src["external"], "external"), via=via)
    tw = w.at(".to")
    to = tw.mapping(p["to"], ("ip", "port", "protocol"), ("ip", "port"))
    port = to["port"]
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise tw.error(f"port must be a number in 1-65535, got {_kind(port)}")
    protocol = _protocol(tw, to.get("protocol", "TCP"))
    name = p.get("name", "")
    if not isinstance(name, str):
        raise w.error("name must be a string")
    return ProbeSpec(
        name, source, tw.ip(to["ip"], "ip"), port, protocol, _expected(w.at(".result"), p["result"])
    )


def _expected(w: _Where, raw: object) -> Expected:
    r = w.mapping(raw, ("verdict", "endpoints", "masquerade", "sticky"), ("verdict",))
    try:
        verdict = Verdict(r["verdict"])
    except ValueError:
        raise w.error(
            f"verdict must be forward, reject, drop or pass, got {_kind(r['verdict'])}"
        ) from None
    if verdict is not Verdict.FORWARD:
        extra = [k for k in ("endpoints", "masquerade", "sticky") if k in r]
        if extra:
            raise w.error(f"{', '.join(extra)} only go with verdict forward")
        return Expected(verdict)
    for key in ("endpoints", "masquerade"):
        if key not in r:
            raise w.error(f"verdict forward needs {key}")
    endpoints = set()
    for text in w.strings(r["endpoints"], "endpoints"):
        try:
            endpoints.add(norm_endpoint(text))
        except ValueError:
            raise w.error(f"endpoints: {text!r} is not IP:PORT or [IPv6]:PORT") from None
    if not endpoints:
        raise w.error("endpoints must not be empty for verdict forward")
    masq_raw = r["masquerade"]
    masquerade: bool | tuple[tuple[str, bool], ...]
    if isinstance(masq_raw, bool):
        masquerade = masq_raw
    elif isinstance(masq_raw, dict):
        pairs: dict[str, bool] = {}
        for key, value in masq_raw.items():
            try:
                ep = norm_endpoint(str(key))
            except ValueError:
                raise w.error(f"masquerade: {key!r} is not IP:PORT or [IPv6]:PORT") from None
            pairs[ep] = w.boolean(value, f"masquerade[{key}]")
        if set(pairs) != endpoints:
            raise w.error("masquerade: a map must give exactly the listed endpoints")
        masquerade = tuple(sorted(pairs.items()))
    else:
        raise w.error(f"masquerade must be true, false or a map by endpoint, got {_kind(masq_raw)}")
    sticky = w.boolean(r["sticky"], "sticky") if "sticky" in r else None
    return Expected(verdict, frozenset(endpoints), masquerade, sticky)


def _dns(w: _Where, raw: object) -> DnsQuery:
    q = w.mapping(raw, ("from", "query", "type", "answer", "rcode"), ("query", "type"))
    from_pod = None
    if "from" in q:
        src = w.at(".from").mapping(q["from"], ("pod",), ("pod",))
        from_pod = w.pod_ref(src["pod"], "from.pod")
    qtype = q["type"]
    if qtype not in _DNS_TYPES:
        raise w.error(f"type must be one of {', '.join(_DNS_TYPES)}, got {_kind(qtype)}")
    rcode = q.get("rcode", "NOERROR")
    if rcode not in _RCODES:
        raise w.error(f"rcode must be one of {', '.join(_RCODES)}, got {_kind(rcode)}")
    if "answer" not in q and rcode == "NOERROR":
        raise w.error("answer is required (use [] for a name without such records)")
    answer = frozenset(norm_record(qtype, a) for a in w.strings(q.get("answer", []), "answer"))
    return DnsQuery(w.string(q["query"], "query"), qtype, from_pod, answer, rcode)


def norm_record(qtype: str, text: str) -> str:
    text = " ".join(text.split())
    if qtype in ("A", "AAAA"):
        with contextlib.suppress(ValueError):
            return norm_ip(text)
    return text.lower()


def count_expectations(text: str) -> int:
    """How many expectations a file that does not load seems to hold (best effort)."""
    try:
        top = yaml.load(text, Loader=YamlLoader)
    except (yaml.YAMLError, RecursionError):
        return 0
    steps = top.get("steps") if isinstance(top, dict) else None
    if not isinstance(steps, list):
        return 0
    n = 0
    for s in steps:
        if isinstance(s, dict):
            for key in ("expect", "dns"):
                if isinstance(s.get(key), list):
                    n += len(s[key])
            n += "error" in s and "apply" in s
    return n
