"""Kubernetes v1 manifests (dicts or YAML) to :mod:`svcnet.model` objects, and back.

:func:`parse_object` reads one manifest, :func:`load` reads YAML text (one or many
``---`` documents, ``kind: List``) or dicts, :func:`parse_key` reads a delete document
and :func:`to_manifest` writes a value back. Validation follows the API server's
stateless rules (``ValidateService``, ``ValidateServiceClusterIPsRelatedFields``,
pod/node/EndpointSlice validation); what needs cluster configuration (CIDR
membership, the nodePort range, conflicts, immutability) is left to
:mod:`svcnet.state`. Every refusal is a :class:`~svcnet.errors.ValidationError` naming
the object (``Service default/web``) and the field path (``spec.ports[1].nodePort``);
a document that is not even a mapping, or YAML that does not parse, is a
:class:`~svcnet.errors.ManifestError`. No other exception escapes, whatever the input.

Decisions worth knowing:

* Values are normalised: IP addresses to their canonical text, CIDRs to network
  form (``10.0.0.1/8`` -> ``10.0.0.0/8``). ``null`` means "absent" everywhere, as
  in the API. YAML timestamps stay strings (no implicit ``datetime``).
* Names follow the API server's defaults: Services are DNS-1035 labels (start with a
  letter), namespaces DNS-1123 labels, Pods/Nodes/EndpointSlices DNS-1123
  subdomains. Service port names are DNS-1123 labels (up to 63 characters, as
  Kubernetes has it); container port names and named ``targetPort`` s are
  IANA_SVC_NAMEs (up to 15 characters).
* ``clusterIPs`` without ``clusterIP`` is refused, as the API server does on create.
* A ``nodePort`` on an ExternalName service is refused (the API server would keep
  it but nothing could use it).
* Pod ports are flattened from ``spec.containers[].ports[]`` in order. Round trips
  write them into containers named ``app``, ``app-1``, ... starting a new container
  only where a port name would repeat within one.
* Node ``InternalIP`` addresses: the first of each family is kept, later ones of the
  same family are ignored (kube-proxy does the same).
* Load-balancer addresses: parsing fills ``Service.status_ingress`` from
  ``status.loadBalancer.ingress[].ip`` (hostname-only entries are ignored) and leaves
  ``load_balancer_ips`` empty. :func:`to_manifest` writes ``status_ingress`` there, or
  ``load_balancer_ips`` when ``status_ingress`` is empty (an allocated service), so
  re-reading pins the same addresses. Hence ``parse_object(to_manifest(x)) == x`` for
  every parsed ``x``; for allocated values the pool addresses come back as
  ``status_ingress`` and ``pod_ips_allocated`` comes back False.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from svcnet.errors import ManifestError, ValidationError
from svcnet.manifests import fastload
from svcnet.manifests.fastload import YamlLoader
from svcnet.manifests.fields import (
    Doc,
    dns1035_label_error,
    dns1123_label_error,
    dns1123_subdomain_error,
    iana_svc_name_error,
    parse_family,
    type_name,
)
from svcnet.manifests.workloads import node_extras, parse_workload, pod_extras
from svcnet.manifests.write import API_VERSIONS, to_manifest
from svcnet.model import (
    DEFAULT_AFFINITY_TIMEOUT,
    SERVICE_NAME_LABEL,
    ContainerPort,
    EndpointSlice,
    IPFamily,
    IPFamilyPolicy,
    Kind,
    KubeObject,
    Labels,
    Node,
    ObjectKey,
    Pod,
    Protocol,
    Service,
    ServicePort,
    ServiceType,
    SessionAffinity,
    SliceEndpoint,
    SlicePort,
    TrafficDistribution,
    TrafficPolicy,
)

__all__ = ["YamlLoader", "load", "parse_key", "parse_object", "to_manifest"]


_KINDS = {k.value: k for k in Kind}
_LISTS = {"List"} | {k.value + "List" for k in Kind}
KUBELET_PORT = 10250
MAX_AFFINITY_TIMEOUT = 86400
_DISTRIBUTIONS = [t.value for t in TrafficDistribution]

# ---------------------------------------------------------------- documents


def _as_mapping(doc: Any, where: str = "document") -> Mapping[str, Any]:
    if type(doc) is not dict and not isinstance(doc, Mapping):
        got = type_name(doc)
        raise ManifestError(f"{where}: expected a mapping (a Kubernetes object), got {got}")
    return doc


def _header(doc: Mapping[str, Any], delete: bool = False) -> tuple[Kind, str, str, Doc]:
    """Kind, namespace, name and a Doc for messages (name and namespace checked)."""
    raw_kind = doc.get("kind")
    meta_raw = doc.get("metadata") if "metadata" in doc or not delete else doc
    meta = meta_raw if type(meta_raw) is dict or isinstance(meta_raw, Mapping) else {}
    raw_name, raw_ns = meta.get("name"), meta.get("namespace")
    shown = raw_name if isinstance(raw_name, str) and raw_name else "<unnamed>"
    ns_shown = raw_ns if isinstance(raw_ns, str) and raw_ns else "default"
    if not isinstance(raw_kind, str) or raw_kind not in _KINDS:
        what = "missing kind" if raw_kind is None else f"unsupported kind {raw_kind!r}"
        raise ValidationError(
            f"{raw_kind if isinstance(raw_kind, str) else 'object'} {shown}",
            "kind",
            f"{what}: svcnet reads Node, Pod, Service, EndpointSlice, Deployment, ReplicaSet",
        )
    kind = _KINDS[raw_kind]
    namespaced = kind is not Kind.NODE
    d = Doc(str(ObjectKey(kind, ns_shown if namespaced else "", shown)))
    prefix = "" if meta_raw is doc else "metadata."
    if meta_raw is not doc:
        d.mapping(meta_raw, "metadata")
    if not delete:
        api = d.text(doc.get("apiVersion"), "apiVersion")
        if api and api != API_VERSIONS[kind]:
            d.fail("apiVersion", f"{api!r}: a {kind.value} must be {API_VERSIONS[kind]!r}")
    name = d.text(raw_name, prefix + "name")
    if not name:
        d.fail(prefix + "name", "name is required")
    name_rule = dns1035_label_error if kind is Kind.SERVICE else dns1123_subdomain_error
    d.check(prefix + "name", name, name_rule(name))
    namespace = ""
    if namespaced:
        namespace = d.text(raw_ns, prefix + "namespace") or "default"
        d.check(prefix + "namespace", namespace, dns1123_label_error(namespace))
    return kind, namespace, name, d


def parse_key(doc: Mapping[str, Any]) -> ObjectKey:
    """The key of a delete document (``{kind, namespace, name}``) or of a full manifest."""
    kind, namespace, name, _ = _header(_as_mapping(doc), delete=True)
    return ObjectKey(kind, namespace, name)


def parse_object(doc: Mapping[str, Any]) -> KubeObject:
    """One manifest as a model object; raises ValidationError where Kubernetes would refuse."""
    m = _as_mapping(doc)
    kind, namespace, name, d = _header(m)
    meta = d.mapping(m.get("metadata"), "metadata")
    labels = d.labels(meta.get("labels"), "metadata.labels")
    if kind is Kind.NODE:
        return _node(d, m, name, labels)
    if kind is Kind.POD:
        return _pod(d, m, meta, namespace, name, labels)
    if kind is Kind.SERVICE:
        return _service(d, m, namespace, name, labels)
    if kind in (Kind.DEPLOYMENT, Kind.REPLICA_SET):
        deployment = kind is Kind.DEPLOYMENT
        return parse_workload(d, m, meta, namespace, name, labels, parse_object, deployment)
    return _slice(d, m, namespace, name, labels)


def _yaml_documents(text: str, filename: str) -> list[Any]:
    try:
        return fastload.documents(text)  # PyYAML's safe meaning: no Python objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
        raise ManifestError(f"{filename}{line}: {problem}") from exc
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        raise ManifestError(f"{filename}: {exc}") from exc


def load(
    source: str | Mapping[str, Any] | Sequence[Mapping[str, Any]], *, filename: str = "<input>"
) -> list[KubeObject]:
    """Every object in YAML text (``---`` documents, lists, ``kind: List``) or dict(s)."""
    return [obj for obj, _ in load_documents(source, filename=filename)]


def load_documents(
    source: str | Mapping[str, Any] | Sequence[Mapping[str, Any]], *, filename: str = "<input>"
) -> list[tuple[KubeObject, Mapping[str, Any]]]:
    """As :func:`load`, each object with the document it was read from, as written
    (what ``svcnet get -o yaml`` shows back: containers, images, unknown fields)."""
    if isinstance(source, str):
        documents = [d for d in _yaml_documents(source, filename) if d is not None]
    elif isinstance(source, Mapping):
        documents = [source]
    elif isinstance(source, Sequence) and not isinstance(source, bytes):
        documents = list(source)
    else:
        raise ManifestError(
            f"{filename}: expected YAML text, a mapping or a list of mappings, "
            f"got {type_name(source)}"
        )
    out: list[tuple[KubeObject, Mapping[str, Any]]] = []
    for i, doc in enumerate(documents):
        _collect(doc, out, f"{filename}: document {i + 1}", depth=0)
    return out


def _collect(
    doc: Any, out: list[tuple[KubeObject, Mapping[str, Any]]], where: str, depth: int
) -> None:
    if (
        depth < 3
        and type(doc) is not dict
        and isinstance(doc, Sequence)
        and not isinstance(doc, str | bytes)
    ):
        for i, item in enumerate(doc):
            _collect(item, out, f"{where}, item {i + 1}", depth + 1)
        return
    m = _as_mapping(doc, where)
    kind = m.get("kind")
    if isinstance(kind, str) and kind in _LISTS and depth < 3:
        items = m.get("items")
        if items is not None and (
            isinstance(items, str | bytes) or not isinstance(items, Sequence)
        ):
            raise ManifestError(f"{where}: items: expected a list, got {type_name(items)}")
        for i, item in enumerate(items or ()):
            _collect(item, out, f"{where}, items[{i}]", depth + 1)
        return
    out.append((parse_object(m), m))


# ---------------------------------------------------------------- Node and Pod


def _node(d: Doc, m: Mapping[str, Any], name: str, labels: Labels) -> Node:
    spec = d.mapping(m.get("spec"), "spec")
    cidr = d.text(spec.get("podCIDR"), "spec.podCIDR")
    cidrs = [
        d.text(v, f"spec.podCIDRs[{i}]")
        for i, v in enumerate(d.seq(spec.get("podCIDRs"), "spec.podCIDRs"))
    ]
    if cidr and cidrs and cidrs[0] != cidr:
        d.fail("spec.podCIDRs", "first value must match `podCIDR`")
    path = "spec.podCIDRs" if cidrs else "spec.podCIDR"
    raw = cidrs or ([cidr] if cidr else [])
    pod_cidrs = tuple(d.cidr(c, f"{path}[{i}]" if cidrs else path) for i, c in enumerate(raw))
    d.dual_stack(pod_cidrs, path, "CIDR")
    status = d.mapping(m.get("status"), "status")
    addresses: list[str] = []
    for p, a in d.items(status.get("addresses"), "status.addresses"):
        kind = d.text(a.get("type"), p + ".type")
        if kind == "InternalIP":
            ip = d.ip(a.get("address"), p + ".address")
            if all(parse_family(x) is not parse_family(ip) for x in addresses):
                addresses.append(ip)
        else:
            d.text(a.get("address"), p + ".address")
    return Node(
        name=name,
        labels=labels,
        pod_cidrs=pod_cidrs,
        addresses=tuple(addresses),
        **node_extras(d, spec, status),
    )


def _pod(
    d: Doc, m: Mapping[str, Any], meta: Mapping[str, Any], namespace: str, name: str, labels: Labels
) -> Pod:
    spec = d.mapping(m.get("spec"), "spec")
    node_name = d.text(spec.get("nodeName"), "spec.nodeName")
    if node_name:
        d.check("spec.nodeName", node_name, dns1123_subdomain_error(node_name))
    hostname = d.text(spec.get("hostname"), "spec.hostname")
    subdomain = d.text(spec.get("subdomain"), "spec.subdomain")
    for field, value in (("spec.hostname", hostname), ("spec.subdomain", subdomain)):
        if value:
            d.check(field, value, dns1123_label_error(value))
    ports: list[ContainerPort] = []
    for cpath, container in d.items(spec.get("containers"), "spec.containers"):
        d.text(container.get("name"), cpath + ".name")
        names: set[str] = set()
        for p, port in d.items(container.get("ports"), cpath + ".ports"):
            number = d.port(port.get("containerPort"), p + ".containerPort")
            if number is None:
                d.fail(p + ".containerPort", "containerPort is required")
            pname = d.text(port.get("name"), p + ".name")
            if pname:
                d.check(p + ".name", pname, iana_svc_name_error(pname))
                if pname in names:
                    d.fail(
                        p + ".name", f"duplicate port name {pname!r} in one container", value=pname
                    )
                names.add(pname)
            protocol = d.choice(Protocol, port.get("protocol"), p + ".protocol", Protocol.TCP)
            ports.append(ContainerPort(port=number, name=pname, protocol=protocol))
    status = d.mapping(m.get("status"), "status")
    pod_ip = d.text(status.get("podIP"), "status.podIP")
    listed = [
        d.text(e.get("ip"), p + ".ip") for p, e in d.items(status.get("podIPs"), "status.podIPs")
    ]
    if pod_ip and listed and listed[0] != pod_ip:
        d.fail("status.podIPs", "first value must match `podIP`")
    if listed:
        pod_ips = tuple(d.ip(a, f"status.podIPs[{i}].ip") for i, a in enumerate(listed))
    else:
        pod_ips = (d.ip(pod_ip, "status.podIP"),) if pod_ip else ()
    d.dual_stack(pod_ips, "status.podIPs", "IP")
    ready = False
    for p, cond in d.items(status.get("conditions"), "status.conditions"):
        ctype = d.text(cond.get("type"), p + ".type")
        cstatus = d.text(cond.get("status"), p + ".status")
        if ctype == "Ready":
            if cstatus not in ("True", "False", "Unknown"):
                d.fail(p + ".status", f"{cstatus!r}: must be 'True', 'False' or 'Unknown'")
            ready = cstatus == "True"
    deletion = meta.get("deletionTimestamp")
    if deletion is not None and not isinstance(deletion, str | datetime.date):
        d.fail("metadata.deletionTimestamp", f"expected a timestamp, got {type_name(deletion)}")
    return Pod(
        namespace=namespace,
        name=name,
        labels=labels,
        node_name=node_name,
        host_network=d.flag(spec.get("hostNetwork"), "spec.hostNetwork", False),
        hostname=hostname,
        subdomain=subdomain,
        ports=tuple(ports),
        pod_ips=pod_ips,
        ready=ready,
        terminating=deletion is not None,
        **pod_extras(d, meta, spec, status),
    )


# ---------------------------------------------------------------- Service


def _cluster_ips(
    d: Doc, spec: Mapping[str, Any], stype: ServiceType
) -> tuple[tuple[str, ...], bool]:
    """(cluster_ips, headless) from spec.clusterIP(s), as ValidateService checks them."""
    cip = d.text(spec.get("clusterIP"), "spec.clusterIP")
    cips = [
        d.text(v, f"spec.clusterIPs[{i}]")
        for i, v in enumerate(d.seq(spec.get("clusterIPs"), "spec.clusterIPs"))
    ]
    if stype is ServiceType.EXTERNAL_NAME:
        if cip:
            d.fail("spec.clusterIP", "must be empty for ExternalName services")
        if cips:
            d.fail("spec.clusterIPs", "may not be set for ExternalName services")
        return (), False
    if cips and not cip:
        d.fail("spec.clusterIPs", "must be empty when `clusterIP` is not specified")
    if cips and cips[0] != cip:
        d.fail("spec.clusterIPs", f"first value {cips[0]!r} must match `clusterIP` {cip!r}")
    path = "spec.clusterIPs" if cips else "spec.clusterIP"
    raw = cips or ([cip] if cip else [])
    if raw and raw[0] == "None":
        if len(raw) > 1:
            d.fail("spec.clusterIPs", "'None' must be the first and only value")
        if stype is not ServiceType.CLUSTER_IP:
            d.fail("spec.clusterIP", f"may not be set to 'None' for {stype.value} services")
        return (), True
    ips: list[str] = []
    for i, a in enumerate(raw):
        p = f"{path}[{i}]" if cips else path
        try:
            ips.append(d.ip(a, p))
        except ValidationError:
            d.fail(p, f"{a!r}: must be empty, 'None', or a valid IP address")
    d.dual_stack(ips, "spec.clusterIPs", "IP")
    return tuple(ips), False


def _families(
    d: Doc, spec: Mapping[str, Any], stype: ServiceType, cluster_ips: tuple[str, ...]
) -> tuple[tuple[IPFamily, ...], IPFamilyPolicy | None]:
    families: list[IPFamily] = []
    for i, v in enumerate(d.seq(spec.get("ipFamilies"), "spec.ipFamilies")):
        p = f"spec.ipFamilies[{i}]"
        if not d.text(v, p):
            d.fail(p, "unsupported value '': supported values: 'IPv4', 'IPv6'")
        family = d.choice(IPFamily, v, p, IPFamily.IPv4)
        if family in families:
            d.fail(p, f"duplicate value {family.value!r}", value=family.value)
        families.append(family)
    policy_raw = d.text(spec.get("ipFamilyPolicy"), "spec.ipFamilyPolicy")
    policy = (
        d.choice(IPFamilyPolicy, policy_raw, "spec.ipFamilyPolicy", IPFamilyPolicy.SINGLE_STACK)
        if policy_raw
        else None
    )
    if stype is ServiceType.EXTERNAL_NAME:
        if families:
            d.fail("spec.ipFamilies", "may not be set for ExternalName services")
        if policy is not None:
            d.fail("spec.ipFamilyPolicy", "may not be set for ExternalName services")
    if policy is IPFamilyPolicy.SINGLE_STACK and (len(families) > 1 or len(cluster_ips) > 1):
        d.fail(
            "spec.ipFamilyPolicy",
            "must be 'RequireDualStack' or 'PreferDualStack' "
            "when multiple IP families are specified",
            value=policy.value,
        )
    for i, (ip, family) in enumerate(zip(cluster_ips, families, strict=False)):
        if IPFamily.of(ip) is not family:
            d.fail(
                f"spec.clusterIPs[{i}]",
                f"{ip!r}: expected an {family.value} value as indicated by `ipFamilies[{i}]`",
            )
    return tuple(families), policy


def _service_ports(
    d: Doc, spec: Mapping[str, Any], stype: ServiceType, headless: bool
) -> tuple[ServicePort, ...]:
    items = d.items(spec.get("ports"), "spec.ports")
    if not items and not headless and stype is not ServiceType.EXTERNAL_NAME:
        d.fail("spec.ports", "at least one port is required")
    ports: list[ServicePort] = []
    names: set[str] = set()
    seen: set[tuple[int, Protocol]] = set()
    node_ports: set[tuple[int, Protocol]] = set()
    for p, pm in items:
        name = d.text(pm.get("name"), p + ".name")
        if not name and len(items) > 1:
            d.fail(p + ".name", "a name is required when a service has more than one port")
        if name:
            d.check(p + ".name", name, dns1123_label_error(name))
            if name in names:
                d.fail(p + ".name", f"duplicate port name {name!r}", value=name)
            names.add(name)
        number = d.port(pm.get("port"), p + ".port")
        if number is None:
            d.fail(p + ".port", "port is required")
        protocol = d.choice(Protocol, pm.get("protocol"), p + ".protocol", Protocol.TCP)
        if (number, protocol) in seen:
            d.fail(p, f"duplicate port {number}/{protocol.value}", value=number)
        seen.add((number, protocol))
        if stype is ServiceType.LOAD_BALANCER and number == KUBELET_PORT:
            d.fail(
                p + ".port",
                f"may not expose port {KUBELET_PORT} externally since it is used by kubelet",
            )
        target = _target_port(d, pm.get("targetPort"), p + ".targetPort")
        node_port = d.port(pm.get("nodePort"), p + ".nodePort", zero_unset=True)
        if node_port is not None:
            if stype in (ServiceType.CLUSTER_IP, ServiceType.EXTERNAL_NAME):
                d.fail(
                    p + ".nodePort",
                    f"may not be used when `type` is '{stype.value}'",
                    value=node_port,
                )
            if (node_port, protocol) in node_ports:
                d.fail(
                    p + ".nodePort",
                    f"duplicate nodePort {node_port}/{protocol.value}",
                    value=node_port,
                )
            node_ports.add((node_port, protocol))
        ports.append(
            ServicePort(
                port=number, name=name, protocol=protocol, target_port=target, node_port=node_port
            )
        )
    return tuple(ports)


def _target_port(d: Doc, value: Any, path: str) -> int | str | None:
    if isinstance(value, str):
        if not value:
            return None
        return d.check(path, value, iana_svc_name_error(value))
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return d.port(value, path, zero_unset=True)
    d.fail(path, f"expected a port number or name, got {type_name(value)}")


def _service(d: Doc, m: Mapping[str, Any], namespace: str, name: str, labels: Labels) -> Service:
    spec = d.mapping(m.get("spec"), "spec")
    stype = d.choice(ServiceType, spec.get("type"), "spec.type", ServiceType.CLUSTER_IP)
    selector = d.labels(spec.get("selector"), "spec.selector")
    cluster_ips, headless = _cluster_ips(d, spec, stype)
    families, policy = _families(d, spec, stype, cluster_ips)
    ports = _service_ports(d, spec, stype, headless)

    affinity = d.choice(
        SessionAffinity, spec.get("sessionAffinity"), "spec.sessionAffinity", SessionAffinity.NONE
    )
    timeout = DEFAULT_AFFINITY_TIMEOUT
    if spec.get("sessionAffinityConfig") is not None:
        path = "spec.sessionAffinityConfig"
        if affinity is SessionAffinity.NONE:
            d.fail(path, "must not be set when session affinity is None")
        config = d.mapping(spec.get("sessionAffinityConfig"), path)
        client = d.mapping(config.get("clientIP"), path + ".clientIP")
        given = d.integer(client.get("timeoutSeconds"), path + ".clientIP.timeoutSeconds")
        if given is not None:
            if not 0 < given <= MAX_AFFINITY_TIMEOUT:
                d.fail(
                    path + ".clientIP.timeoutSeconds",
                    f"{given}: must be greater than 0 and less than {MAX_AFFINITY_TIMEOUT}",
                )
            timeout = given

    external_ips = tuple(
        _external_ip(d, v, f"spec.externalIPs[{i}]")
        for i, v in enumerate(d.seq(spec.get("externalIPs"), "spec.externalIPs"))
    )
    accessible = stype in (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER) or bool(external_ips)
    if d.text(spec.get("externalTrafficPolicy"), "spec.externalTrafficPolicy") and not accessible:
        d.fail(
            "spec.externalTrafficPolicy",
            "may only be set for externally-accessible "
            "services (NodePort, LoadBalancer, or with externalIPs)",
        )
    etp = d.choice(
        TrafficPolicy,
        spec.get("externalTrafficPolicy"),
        "spec.externalTrafficPolicy",
        TrafficPolicy.CLUSTER,
    )
    itp = d.choice(
        TrafficPolicy,
        spec.get("internalTrafficPolicy"),
        "spec.internalTrafficPolicy",
        TrafficPolicy.CLUSTER,
    )
    health = d.port(spec.get("healthCheckNodePort"), "spec.healthCheckNodePort", zero_unset=True)
    if health is not None and not (
        stype is ServiceType.LOAD_BALANCER and etp is TrafficPolicy.LOCAL
    ):
        d.fail(
            "spec.healthCheckNodePort",
            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            value=health,
        )

    lb_ip = d.text(spec.get("loadBalancerIP"), "spec.loadBalancerIP")
    if lb_ip:
        lb_ip = d.ip(lb_ip, "spec.loadBalancerIP")
    ranges = tuple(
        d.cidr(v, f"spec.loadBalancerSourceRanges[{i}]")
        for i, v in enumerate(
            d.seq(spec.get("loadBalancerSourceRanges"), "spec.loadBalancerSourceRanges")
        )
    )
    if ranges and stype is not ServiceType.LOAD_BALANCER:
        d.fail("spec.loadBalancerSourceRanges", "may only be used when `type` is 'LoadBalancer'")
    allocate = spec.get("allocateLoadBalancerNodePorts")
    if allocate is not None and stype is not ServiceType.LOAD_BALANCER:
        d.fail(
            "spec.allocateLoadBalancerNodePorts", "may only be used when `type` is 'LoadBalancer'"
        )
    external_name = d.text(spec.get("externalName"), "spec.externalName")
    if stype is ServiceType.EXTERNAL_NAME:
        cname = external_name.removesuffix(".")
        if not cname:
            d.fail("spec.externalName", "externalName is required for ExternalName services")
        d.check("spec.externalName", external_name, dns1123_subdomain_error(cname))
    distribution = d.text(spec.get("trafficDistribution"), "spec.trafficDistribution")
    if distribution and distribution not in _DISTRIBUTIONS:
        d.fail(
            "spec.trafficDistribution",
            f"unsupported value {distribution!r}: supported values: "
            + ", ".join(repr(v) for v in _DISTRIBUTIONS),
        )

    status = d.mapping(m.get("status"), "status")
    lb_status = d.mapping(status.get("loadBalancer"), "status.loadBalancer")
    ingress: list[str] = []
    for p, entry in d.items(lb_status.get("ingress"), "status.loadBalancer.ingress"):
        d.text(entry.get("hostname"), p + ".hostname")
        d.text(entry.get("ipMode"), p + ".ipMode")
        if d.text(entry.get("ip"), p + ".ip"):
            ingress.append(d.ip(entry.get("ip"), p + ".ip"))

    return Service(
        namespace=namespace,
        name=name,
        labels=labels,
        type=stype,
        selector=selector or None,
        ports=ports,
        cluster_ips=cluster_ips,
        headless=headless,
        ip_families=families,
        ip_family_policy=policy,
        external_ips=external_ips,
        external_traffic_policy=etp,
        internal_traffic_policy=itp,
        health_check_node_port=health,
        session_affinity=affinity,
        affinity_timeout=timeout,
        load_balancer_ip=lb_ip,
        load_balancer_source_ranges=ranges,
        allocate_load_balancer_node_ports=d.flag(
            allocate, "spec.allocateLoadBalancerNodePorts", True
        ),
        external_name=external_name,
        publish_not_ready_addresses=d.flag(
            spec.get("publishNotReadyAddresses"), "spec.publishNotReadyAddresses", False
        ),
        traffic_distribution=distribution,
        status_ingress=tuple(ingress),
    )


def _external_ip(d: Doc, value: Any, path: str) -> str:
    ip = ipaddress.ip_address(d.ip(value, path))
    if ip.is_unspecified or ip.is_loopback or ip.is_link_local or ip.is_multicast:
        d.fail(path, f"{ip}: may not be unspecified, loopback, link-local or multicast")
    return str(ip)


# ---------------------------------------------------------------- EndpointSlice


def _hint_names(d: Doc, e: Mapping[str, Any], p: str, which: str) -> tuple[str, ...]:
    """An endpoint's ``hints.forZones[].name`` or ``hints.forNodes[].name``."""
    hints = d.mapping(e.get("hints"), p + ".hints")
    path = f"{p}.hints.{which}"
    return tuple(d.text(h.get("name"), f"{q}.name") for q, h in d.items(hints.get(which), path))


def _slice(
    d: Doc, m: Mapping[str, Any], namespace: str, name: str, labels: Labels
) -> EndpointSlice:
    service = labels.get(SERVICE_NAME_LABEL, "")
    if not service:
        d.fail(
            "metadata.labels", f"the label {SERVICE_NAME_LABEL!r} naming the service is required"
        )
    address_type = d.text(m.get("addressType"), "addressType")
    if not address_type:
        d.fail("addressType", "addressType is required (IPv4 or IPv6)")
    if address_type == "FQDN":
        d.fail(
            "addressType",
            "FQDN EndpointSlices are not supported (kube-proxy ignores them); use IPv4 or IPv6",
        )
    family = d.choice(IPFamily, address_type, "addressType", IPFamily.IPv4)
    endpoints: list[SliceEndpoint] = []
    items = d.items(m.get("endpoints"), "endpoints")
    if len(items) > 1000:
        d.fail("endpoints", "must have at most 1000 items")
    for p, e in items:
        addresses = [
            d.ip(v, f"{p}.addresses[{i}]")
            for i, v in enumerate(d.seq(e.get("addresses"), p + ".addresses"))
        ]
        if not 1 <= len(addresses) <= 100:
            d.fail(p + ".addresses", "must have between 1 and 100 addresses")
        for i, a in enumerate(addresses):
            if IPFamily.of(a) is not family:
                d.fail(
                    f"{p}.addresses[{i}]",
                    f"{a!r}: must be an {family.value} address (addressType is {family.value})",
                )
        cond = d.mapping(e.get("conditions"), p + ".conditions")
        node_name = d.text(e.get("nodeName"), p + ".nodeName")
        if node_name:
            d.check(p + ".nodeName", node_name, dns1123_subdomain_error(node_name))
        zone = d.text(e.get("zone"), p + ".zone")
        hostname = d.text(e.get("hostname"), p + ".hostname")
        if hostname:
            d.check(p + ".hostname", hostname, dns1123_label_error(hostname))
        endpoints.append(
            SliceEndpoint(
                addresses=tuple(addresses),
                ready=d.flag(cond.get("ready"), p + ".conditions.ready", True),
                serving=d.flag(cond.get("serving"), p + ".conditions.serving", True),
                terminating=d.flag(cond.get("terminating"), p + ".conditions.terminating", False),
                node_name=node_name,
                zone=zone,
                hostname=hostname,
                for_zones=_hint_names(d, e, p, "forZones"),
                for_nodes=_hint_names(d, e, p, "forNodes"),
            )
        )
    ports: list[SlicePort] = []
    names: set[str] = set()
    port_items = d.items(m.get("ports"), "ports")
    if len(port_items) > 100:
        d.fail("ports", "must have at most 100 items")
    for p, pm in port_items:
        pname = d.text(pm.get("name"), p + ".name")
        if pname:
            d.check(p + ".name", pname, dns1123_label_error(pname))
        if pname in names:
            d.fail(p + ".name", f"duplicate port name {pname!r}", value=pname)
        names.add(pname)
        number = d.port(pm.get("port"), p + ".port")
        if number is None:
            d.fail(p + ".port", "port is required (svcnet does not support all-ports slices)")
        ports.append(
            SlicePort(
                port=number,
                name=pname,
                protocol=d.choice(Protocol, pm.get("protocol"), p + ".protocol", Protocol.TCP),
            )
        )
    return EndpointSlice(
        namespace=namespace,
        name=name,
        service_name=service,
        address_type=family,
        endpoints=tuple(endpoints),
        ports=tuple(ports),
        labels=labels,
    )
