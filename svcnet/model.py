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
from collections.abc import Iterable, Iterator, Mapping

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


class Kind(enum.Enum):
    NODE = "Node"
    POD = "Pod"
    SERVICE = "Service"
    ENDPOINT_SLICE = "EndpointSlice"


SERVICE_PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
ZONE_LABEL = "topology.kubernetes.io/zone"
DEFAULT_AFFINITY_TIMEOUT = 10800


def _labels_converter(value: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> Labels:
    if isinstance(value, Labels):
        return value
    if value is None:
        return Labels(())
    items = value.items() if isinstance(value, Mapping) else value
    return Labels(tuple(sorted((str(k), str(v)) for k, v in items)))


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

    def as_dict(self) -> dict[str, str]:
        """A new dict of the labels (in key order)."""
        return dict(self._lookup())

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self.items_)

    def __len__(self) -> int:
        return len(self.items_)

    def __repr__(self) -> str:
        return "Labels(" + repr(dict(self.items_)) + ")"


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
    name: str
    labels: Labels = attrs.field(default=Labels(), converter=_labels_converter)
    pod_cidrs: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()  # InternalIP, at most one per family, primary first

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

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(Kind.POD, self.namespace, self.name)

    def ip(self, family: IPFamily) -> str | None:
        for a in self.pod_ips:
            if IPFamily.of(a) is family:
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

    @property
    def key(self) -> ObjectKey:
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


@attrs.frozen
class SliceEndpoint:
    addresses: tuple[str, ...]
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node_name: str = ""
    zone: str = ""
    hostname: str = ""


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


KubeObject = Node | Pod | Service | EndpointSlice


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
