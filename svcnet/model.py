"""Frozen value types for the objects svcnet works on.

These are already-validated values: :mod:`svcnet.manifests` builds them from
Kubernetes manifests and refuses what Kubernetes would refuse. Collections are
tuples or frozensets, label maps are :class:`Labels` (a sorted tuple of pairs that
reads like a mapping), so every object is hashable and compares by value.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from collections.abc import ItemsView, Iterable, Iterator, Mapping
from typing import Any, TypeVar, overload

import attrs

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Protocol(enum.Enum):
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


class IPFamily(enum.Enum):
    IPv4 = "IPv4"
    IPv6 = "IPv6"

    @staticmethod
    def of(address: str) -> IPFamily:
        return IPFamily.IPv4 if ipaddress.ip_address(address).version == 4 else IPFamily.IPv6

    @staticmethod
    def of_network(cidr: str) -> IPFamily:
        version = ipaddress.ip_network(cidr, strict=False).version
        return IPFamily.IPv4 if version == 4 else IPFamily.IPv6


class ServiceType(enum.Enum):
    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"
    EXTERNAL_NAME = "ExternalName"


class TrafficPolicy(enum.Enum):
    CLUSTER = "Cluster"
    LOCAL = "Local"


class IPFamilyPolicy(enum.Enum):
    SINGLE_STACK = "SingleStack"
    PREFER_DUAL_STACK = "PreferDualStack"
    REQUIRE_DUAL_STACK = "RequireDualStack"


class SessionAffinity(enum.Enum):
    NONE = "None"
    CLIENT_IP = "ClientIP"


class TrafficDistribution(enum.StrEnum):
    """``spec.trafficDistribution`` (Kubernetes 1.35). ``PreferClose`` is the older
    name of ``PreferSameZone`` (same behaviour; kept as written so a manifest
    round-trips). A ``str`` enum: members compare equal to, and print as, their
    Kubernetes spelling."""

    PREFER_CLOSE = "PreferClose"
    PREFER_SAME_ZONE = "PreferSameZone"
    PREFER_SAME_NODE = "PreferSameNode"

    @property
    def prefers_node(self) -> bool:
        """A node's cluster endpoints are its own ready endpoints when it has any (then,
        as every value does, the endpoints in its zone)."""
        return self is TrafficDistribution.PREFER_SAME_NODE


def _traffic_distribution(value: TrafficDistribution | str | None) -> TrafficDistribution | None:
    """``None`` or ``""``: unset; otherwise the member spelled ``value`` (ValueError
    for anything else: :mod:`svcnet.manifests` refuses it first, naming the values)."""
    if value is None or value == "":
        return None
    return TrafficDistribution(value)


class Authority(enum.StrEnum):
    """Who decides a cluster's endpoints and addresses (:attr:`ClusterConfig.authority`).

    ``svcnet`` (the default): svcnet is the control plane. Services with a selector
    take their endpoints from the pods it matches, selector-less ones from their
    EndpointSlices; svcnet allocates ClusterIPs, NodePorts, LoadBalancer addresses
    and pod IPs and checks them against the configured ranges.

    ``api``: a Kubernetes API server is the control plane and svcnet only proxies
    (the agent's kubernetes source). Every service's endpoints come from its
    EndpointSlices (the EndpointSlice controller's output), with their conditions,
    node, zone and topology hints, never from a selector; ClusterIPs, NodePorts,
    LoadBalancer ingress addresses and pod IPs are taken as given, with no
    allocation and no range checks."""

    SVCNET = "svcnet"
    API = "api"


class Kind(enum.Enum):
    NODE = "Node"
    POD = "Pod"
    SERVICE = "Service"
    ENDPOINT_SLICE = "EndpointSlice"
    DEPLOYMENT = "Deployment"
    REPLICA_SET = "ReplicaSet"


SERVICE_PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
ZONE_LABEL = "topology.kubernetes.io/zone"
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
DEFAULT_AFFINITY_TIMEOUT = 10800


def _labels_converter(value: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> Labels:
    if isinstance(value, Labels):
        return value
    if value is None:
        return Labels(())
    items = value.items() if isinstance(value, Mapping) else value
    return Labels(tuple(sorted((str(k), str(v)) for k, v in items)))


_T = TypeVar("_T")


@attrs.frozen
class Labels(Mapping[str, str]):
    """An immutable, hashable label map: equal and hashed by ``items_`` (sorted
    pairs); lookups go through a dict built on the first one (O(1) each, not part
    of equality or hashing)."""

    items_: tuple[tuple[str, str], ...] = ()
    _index: dict[str, str] | None = attrs.field(
        default=None, init=False, eq=False, hash=False, repr=False
    )

    @classmethod
    def of(cls, value: Mapping[str, str] | Iterable[tuple[str, str]] | None = None) -> Labels:
        return _labels_converter(value)

    def _lookup(self) -> dict[str, str]:
        index = self._index
        if index is None:
            index = {}
            for k, v in self.items_:
                index.setdefault(k, v)  # the first of repeated keys, as a scan finds it
            object.__setattr__(self, "_index", index)
        return index

    def __getitem__(self, key: str) -> str:
        return self._lookup()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._lookup()

    @overload
    def get(self, key: str) -> str | None: ...
    @overload
    def get(self, key: str, default: str) -> str: ...
    @overload
    def get(self, key: str, default: _T) -> str | _T: ...
    def get(self, key: str, default: Any = None) -> Any:
        return self._lookup().get(key, default)

    def pairs(self) -> ItemsView[str, str]:
        """The (key, value) pairs, each key once (a view of the lookup dict: faster
        than ``items()``, which goes through ``__getitem__`` per key)."""
        return self._lookup().items()

    def as_dict(self) -> dict[str, str]:
        """A new dict of the labels (in key order)."""
        return dict(self._lookup())

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self.items_)

    def __len__(self) -> int:
        return len(self.items_)

    def __repr__(self) -> str:
        return "Labels(" + repr(dict(self.items_)) + ")"


class Operator(enum.Enum):
    """A ``matchExpressions`` operator."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


def _frozen_values(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


@attrs.frozen
class Requirement:
    """One condition on one label key."""

    key: str
    operator: Operator
    values: frozenset[str] = attrs.field(default=frozenset(), converter=_frozen_values)

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op is Operator.EXISTS:
            return self.key in labels
        if op is Operator.DOES_NOT_EXIST:
            return self.key not in labels
        value = labels.get(self.key)
        if op is Operator.IN:
            return value is not None and value in self.values
        return value is None or value not in self.values  # NotIn

    @property
    def equality(self) -> tuple[str, str] | None:
        """``(key, value)`` when this requirement demands exactly that label."""
        if self.operator is Operator.IN and len(self.values) == 1:
            return self.key, next(iter(self.values))
        return None


def _requirements(value: Iterable[Requirement]) -> tuple[Requirement, ...]:
    """Sorted, repeated requirements once (a conjunction: order and repeats do not
    change what matches)."""
    return tuple(sorted(set(value), key=lambda r: (r.key, r.operator.value, sorted(r.values))))


@attrs.frozen
class Selector:
    """A conjunction of requirements (``matchLabels`` + ``matchExpressions``); the
    empty selector matches everything."""

    requirements: tuple[Requirement, ...] = attrs.field(default=(), converter=_requirements)

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> Selector:
        """The equality-based selector of a Service: every pair must match."""
        return cls(tuple(Requirement(k, Operator.IN, frozenset([v])) for k, v in labels.items()))

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements

    def equality_pairs(self) -> tuple[tuple[str, str], ...]:
        """The ``(key, value)`` pairs a matching object must carry (for indexing)."""
        return tuple(p for r in self.requirements if (p := r.equality) is not None)

    def with_label(self, key: str, value: str) -> Selector:
        """This selector and ``key=value``."""
        return Selector((*self.requirements, Requirement(key, Operator.IN, frozenset([value]))))


@attrs.frozen(order=True)
class ObjectKey:
    """Identifies an object: kind, namespace ("" for nodes) and name."""

    kind: Kind = attrs.field(order=lambda k: k.value)
    namespace: str
    name: str

    def __str__(self) -> str:
        if self.namespace:
            return f"{self.kind.value} {self.namespace}/{self.name}"
        return f"{self.kind.value} {self.name}"


@attrs.frozen
class ClusterConfig:
    """The cluster-wide settings of the scenario format's ``config``
    (docs/reference/scenario-format.md)."""

    service_cidrs: tuple[str, ...] = ("10.96.0.0/16",)
    cluster_cidrs: tuple[str, ...] = ("10.244.0.0/16",)
    node_port_range: tuple[int, int] = (30000, 32767)
    load_balancer_pool: tuple[str, ...] = ("203.0.113.0/28",)
    cluster_domain: str = "cluster.local"
    masquerade_all: bool = False
    authority: Authority = attrs.field(default=Authority.SVCNET, converter=Authority)

    @property
    def api_authority(self) -> bool:
        """The API server's objects are authoritative (:attr:`Authority.API`)."""
        return self.authority is Authority.API

    def service_cidr(self, family: IPFamily) -> str | None:
        for cidr in self.service_cidrs:
            if IPFamily.of_network(cidr) is family:
                return cidr
        return None

    @property
    def families(self) -> tuple[IPFamily, ...]:
        """The service families, the primary one first."""
        return tuple(IPFamily.of_network(c) for c in self.service_cidrs)


@attrs.frozen
class Node:
    """A node. ``unschedulable`` is ``spec.unschedulable``; ``ready`` its Ready
    condition (True when the manifest has none): the simulated scheduler
    (:mod:`svcnet.workloads`) places pods only on ready, schedulable nodes."""

    name: str
    labels: Labels = attrs.field(default=Labels(), converter=_labels_converter)
    pod_cidrs: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()  # InternalIP, at most one per family, primary first
    unschedulable: bool = False
    ready: bool = True

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(Kind.NODE, "", self.name)

    @property
    def zone(self) -> str | None:
        return self.labels.get(ZONE_LABEL)

    def address(self, family: IPFamily) -> str | None:
        for a in self.addresses:
            if IPFamily.of(a) is family:
                return a
        return None


@attrs.frozen
class ContainerPort:
    port: int
    name: str = ""
    protocol: Protocol = Protocol.TCP


class ProbeHandler(enum.Enum):
    TCP_SOCKET = "tcpSocket"
    HTTP_GET = "httpGet"


@attrs.frozen
class ReadinessProbe:
    """A container's ``readinessProbe`` (tcpSocket or httpGet). ``port`` is a number
    or a container port name; ``path``/``scheme`` are for httpGet only."""

    handler: ProbeHandler
    port: int | str
    path: str = ""
    scheme: str = "HTTP"
    initial_delay_seconds: int = 0
    period_seconds: int = 10
    timeout_seconds: int = 1
    success_threshold: int = 1
    failure_threshold: int = 3


class PodPhase(enum.Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    UNKNOWN = "Unknown"


@attrs.frozen
class PodCondition:
    """A pod condition other than Ready (which is :attr:`Pod.ready`), e.g.
    ``PodScheduled=False`` with the scheduler's reason and message."""

    type: str
    status: str  # "True", "False" or "Unknown"
    reason: str = ""
    message: str = ""


@attrs.frozen
class OwnerReference:
    """The controller reference of an object (``metadata.ownerReferences``, the
    one with ``controller: true``): a Pod's ReplicaSet, a ReplicaSet's Deployment."""

    kind: str
    name: str
    api_version: str = "apps/v1"
    uid: str = ""


@attrs.frozen
class Pod:
    namespace: str
    name: str
    labels: Labels = attrs.field(default=Labels(), converter=_labels_converter)
    node_name: str = ""
    host_network: bool = False
    hostname: str = ""
    subdomain: str = ""
    ports: tuple[ContainerPort, ...] = ()
    pod_ips: tuple[str, ...] = ()  # as given, or allocated from the node's podCIDR
    ready: bool = False
    terminating: bool = False
    pod_ips_allocated: bool = False  # True when svcnet chose pod_ips (kept on replace)
    # What the simulated controllers, scheduler and kubelet use (svcnet.workloads):
    annotations: Labels = attrs.field(default=Labels(), converter=_labels_converter)
    owner: OwnerReference | None = None  # the controlling ReplicaSet, if any
    node_selector: Labels = attrs.field(default=Labels(), converter=_labels_converter)
    readiness_probe: ReadinessProbe | None = None  # the first container's
    phase: PodPhase | None = None  # None: no kubelet has reported (status.phase absent)
    conditions: tuple[PodCondition, ...] = ()  # besides Ready
    restarts: int = 0  # the highest container restartCount
    created: int = 0  # logical creation time: the state revision it was created at
    ready_since: int = 0  # logical time it last became ready (0: unknown)
    # True when the manifest's status had a Ready condition (True or False): someone
    # reported on the pod and the simulated kubelet leaves it as it is. Not part of
    # equality: it tells where the readiness came from, not what the pod is.
    status_reported: bool = attrs.field(default=False, eq=False)

    @functools.cached_property
    def key(self) -> ObjectKey:  # cached: the state asks for it several times per step
        return ObjectKey(Kind.POD, self.namespace, self.name)

    def condition(self, type_: str) -> PodCondition | None:
        """The condition of that type (not Ready), if any."""
        for c in self.conditions:
            if c.type == type_:
                return c
        return None

    def ip(self, family: IPFamily) -> str | None:
        for a in self.pod_ips:
            if ip_family(a) is family:
                return a
        return None


@attrs.frozen
class ServicePort:
    port: int
    name: str = ""
    protocol: Protocol = Protocol.TCP
    target_port: int | str | None = None  # None: same as port
    node_port: int | None = None


@attrs.frozen
class Service:
    """A Service as stored: the spec, with what svcnet allocated filled in.

    ``cluster_ips`` is empty for ExternalName and for headless services
    (``headless`` tells which). ``load_balancer_ips`` is the ingress the
    service has now (from ``status`` or from the pool); ``status_ingress`` is
    what the manifest's status gave, if anything.
    """

    namespace: str
    name: str
    labels: Labels = attrs.field(default=Labels(), converter=_labels_converter)
    type: ServiceType = ServiceType.CLUSTER_IP
    selector: Labels | None = None  # None: no selector (EndpointSlices give endpoints)
    ports: tuple[ServicePort, ...] = ()
    cluster_ips: tuple[str, ...] = ()
    headless: bool = False
    ip_families: tuple[IPFamily, ...] = ()
    ip_family_policy: IPFamilyPolicy | None = None
    external_ips: tuple[str, ...] = ()
    external_traffic_policy: TrafficPolicy = TrafficPolicy.CLUSTER
    internal_traffic_policy: TrafficPolicy = TrafficPolicy.CLUSTER
    health_check_node_port: int | None = None
    session_affinity: SessionAffinity = SessionAffinity.NONE
    affinity_timeout: int = DEFAULT_AFFINITY_TIMEOUT
    load_balancer_ip: str = ""
    load_balancer_source_ranges: tuple[str, ...] = ()
    allocate_load_balancer_node_ports: bool = True
    external_name: str = ""
    publish_not_ready_addresses: bool = False
    traffic_distribution: TrafficDistribution | None = attrs.field(
        default=None, converter=_traffic_distribution
    )
    status_ingress: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()

    @functools.cached_property
    def key(self) -> ObjectKey:  # cached: the state asks for it several times per step
        return ObjectKey(Kind.SERVICE, self.namespace, self.name)

    @property
    def proxied(self) -> bool:
        """False when another proxy serves this service (service-proxy-name label)."""
        return SERVICE_PROXY_NAME_LABEL not in self.labels

    @property
    def external(self) -> bool:
        """Reachable from outside: NodePort or LoadBalancer (externalIPs aside)."""
        return self.type in (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER)

    def cluster_ip(self, family: IPFamily) -> str | None:
        for a in self.cluster_ips:
            if IPFamily.of(a) is family:
                return a
        return None


def _names(value: Iterable[str]) -> tuple[str, ...]:
    """Sorted, each once (hints are sets)."""
    return tuple(sorted(set(value)))


@attrs.frozen
class SliceEndpoint:
    """One endpoint of an EndpointSlice. ``for_zones``/``for_nodes`` are its
    topology hints (``hints.forZones[].name``, ``hints.forNodes[].name``): used
    only under :attr:`Authority.API` (empty: no hint)."""

    addresses: tuple[str, ...]
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node_name: str = ""
    zone: str = ""
    hostname: str = ""
    for_zones: tuple[str, ...] = attrs.field(default=(), converter=_names)
    for_nodes: tuple[str, ...] = attrs.field(default=(), converter=_names)


@attrs.frozen
class SlicePort:
    port: int
    name: str = ""
    protocol: Protocol = Protocol.TCP


@attrs.frozen
class EndpointSlice:
    namespace: str
    name: str
    service_name: str
    address_type: IPFamily
    endpoints: tuple[SliceEndpoint, ...] = ()
    ports: tuple[SlicePort, ...] = ()
    labels: Labels = attrs.field(default=Labels(), converter=_labels_converter)

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(Kind.ENDPOINT_SLICE, self.namespace, self.name)


@attrs.frozen
class PodTemplate:
    """A workload's ``spec.template``: the pod fields svcnet models."""

    labels: Labels = attrs.field(default=Labels(), converter=_labels_converter)
    annotations: Labels = attrs.field(default=Labels(), converter=_labels_converter)
    ports: tuple[ContainerPort, ...] = ()
    node_name: str = ""
    node_selector: Labels = attrs.field(default=Labels(), converter=_labels_converter)
    host_network: bool = False
    hostname: str = ""
    subdomain: str = ""
    readiness_probe: ReadinessProbe | None = None


class StrategyType(enum.Enum):
    ROLLING_UPDATE = "RollingUpdate"
    RECREATE = "Recreate"


@attrs.frozen
class DeploymentStrategy:
    """``spec.strategy``: ``max_surge``/``max_unavailable`` are a count or a percent
    text (``"25%"``), for RollingUpdate only."""

    type: StrategyType = StrategyType.ROLLING_UPDATE
    max_surge: int | str = "25%"
    max_unavailable: int | str = "25%"


@attrs.frozen
class Deployment:
    """An ``apps/v1`` Deployment. ``revision`` is its
    ``deployment.kubernetes.io/revision`` annotation (0: none yet), kept apart
    from ``annotations``."""

    namespace: str
    name: str
    selector: Selector
    template: PodTemplate
    labels: Labels = attrs.field(default=Labels(), converter=_labels_converter)
    annotations: Labels = attrs.field(default=Labels(), converter=_labels_converter)
    replicas: int = 1
    strategy: DeploymentStrategy = attrs.field(factory=DeploymentStrategy)
    revision: int = 0
    revision_history_limit: int = 10

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(Kind.DEPLOYMENT, self.namespace, self.name)


@attrs.frozen
class ReplicaSet:
    """An ``apps/v1`` ReplicaSet, made by a Deployment (``owner``) or applied.
    ``revision`` is its ``deployment.kubernetes.io/revision`` annotation, ``created``
    the state revision it was created at (logical time)."""

    namespace: str
    name: str
    selector: Selector
    template: PodTemplate
    labels: Labels = attrs.field(default=Labels(), converter=_labels_converter)
    annotations: Labels = attrs.field(default=Labels(), converter=_labels_converter)
    replicas: int = 1
    owner: OwnerReference | None = None
    revision: int = 0
    created: int = 0

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(Kind.REPLICA_SET, self.namespace, self.name)

    @property
    def template_hash(self) -> str:
        """The ``pod-template-hash`` label ("" when it has none)."""
        return self.labels.get(POD_TEMPLATE_HASH_LABEL, "")


KubeObject = Node | Pod | Service | EndpointSlice | Deployment | ReplicaSet


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    """A tuple as given (a list read back from JSON becomes one)."""
    return value if isinstance(value, tuple) else tuple(value)


@attrs.frozen(order=True)
class Endpoint:
    """One backend address of one service port, with its conditions.

    ``ready``/``serving``/``terminating`` follow EndpointSlice semantics (with
    ``publishNotReadyAddresses`` already folded into ``ready``).
    """

    ip: str
    port: int
    node_name: str = ""
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    hostname: str = ""
    pod: str = ""  # pod name, "" for EndpointSlice endpoints
    zone: str = ""  # the slice's zone, or the zone label of the pod's node
    # the slice's topology hints (zones, nodes), under Authority.API only
    for_zones: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    for_nodes: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)

    @property
    def family(self) -> IPFamily:
        return IPFamily.of(self.ip)

    @property
    def address(self) -> str:
        return format_endpoint(self.ip, self.port)


def ip_family(ip: str) -> IPFamily:
    """The family of a valid address (or network) text, without parsing it: IPv6
    texts, and only they, contain a colon. :meth:`IPFamily.of` parses (and so
    validates); this is for values the state already holds, on hot paths."""
    return IPFamily.IPv6 if ":" in ip else IPFamily.IPv4


@functools.lru_cache(maxsize=4096)  # the oracle and the compiler call it very often
def norm_ip(ip: str) -> str:
    """The one canonical text of an address (IPv6 has several spellings); raises
    ValueError if ``ip`` is not an address."""
    return str(ipaddress.ip_address(ip))


def format_endpoint(ip: str, port: int) -> str:
    """``ip:port``, IPv6 as ``[addr]:port``."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def parse_endpoint(text: str) -> tuple[str, int]:
    """The inverse of :func:`format_endpoint`."""
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    else:
        host, _, port = text.rpartition(":")
    return str(ipaddress.ip_address(host)), int(port)


@attrs.frozen(order=True)
class PortKey:
    """One port of one service: the unit endpoints are computed for."""

    namespace: str
    service: str
    port_name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.service}:{self.port_name or '-'}"
