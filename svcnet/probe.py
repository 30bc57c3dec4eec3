"""Probes (a packet at a node) and Outcomes (what the data plane does to it).

Every answer to "what happens to this packet" — the reference semantics, each
backend's interpreter of its kernel read-back, real traffic in the lab — is an
:class:`Outcome`, so they can be compared with ``==``.

:func:`make_probe` is the one resolver from a source as people name it (a pod,
a node, an address; the node handling the packet) to a :class:`Probe`: the CLI's
``trace``, the scenario runner and the test harness all use it, so they agree on
the source kind (docs/reference/semantics.md, "Source kinds"). Pure: it reads a state, nothing
else.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Protocol as _Protocol

import attrs

from svcnet.errors import NotFoundError, ProbeError
from svcnet.model import ClusterConfig, IPFamily, Node, Pod, Protocol, format_endpoint


class SourceKind(enum.Enum):
    POD = "pod"  # source address inside clusterCIDRs
    NODE = "node"  # a host-network process on the handling node
    EXTERNAL = "external"  # anything else, other nodes (and their host-network pods) included


class Verdict(enum.Enum):
    FORWARD = "forward"
    REJECT = "reject"
    DROP = "drop"
    PASS = "pass"


@attrs.frozen
class Probe:
    """A new connection's first packet, as it reaches ``node``.

    ``source_kind`` is what the handling node's kernel can tell about the source
    (is it a pod address, is it one of my own addresses); ``source_ip`` is the
    address the packet carries.
    """

    source_kind: SourceKind
    source_ip: str
    node: str
    dst_ip: str
    dst_port: int
    protocol: Protocol = Protocol.TCP

    def __str__(self) -> str:
        return (
            f"{self.source_kind.value} {self.source_ip} -> "
            f"{format_endpoint(self.dst_ip, self.dst_port)}/{self.protocol.value} on {self.node}"
        )


@attrs.frozen(order=True)
class Target:
    """One possible destination of a forwarded packet."""

    ip: str
    port: int
    masquerade: bool
    probability: Fraction = attrs.field(order=False)

    @property
    def address(self) -> str:
        return format_endpoint(self.ip, self.port)


def _targets(value: Iterable[Target]) -> frozenset[Target]:
    return frozenset(value)


@attrs.frozen
class Outcome:
    """The fate of a probe.

    For ``FORWARD``, ``targets`` lists every endpoint a new client can reach, with
    whether the source is masqueraded towards it and the probability of choosing
    it; ``affinity_timeout`` is set when ClientIP session affinity holds.
    """

    verdict: Verdict
    targets: frozenset[Target] = attrs.field(default=frozenset(), converter=_targets)
    affinity_timeout: int | None = None

    @property
    def endpoints(self) -> frozenset[str]:
        return frozenset(t.address for t in self.targets)

    @property
    def sticky(self) -> bool:
        return self.affinity_timeout is not None

    @property
    def uniform(self) -> bool:
        """Every target is equally likely and the probabilities add up to 1."""
        if not self.targets:
            return True
        n = len(self.targets)
        return all(t.probability == Fraction(1, n) for t in self.targets)

    def masquerade(self) -> dict[str, bool]:
        return {t.address: t.masquerade for t in self.targets}

    @classmethod
    def forward(
        cls,
        endpoints: Iterable[tuple[str, int, bool]],
        affinity_timeout: int | None = None,
    ) -> Outcome:
        """A forward to each ``(ip, port, masquerade)``, uniformly."""
        items = list(dict.fromkeys(endpoints))
        p = Fraction(1, len(items)) if items else Fraction(0)
        return cls(
            Verdict.FORWARD,
            frozenset(Target(ip, port, masq, p) for ip, port, masq in items),
            affinity_timeout,
        )

    def __str__(self) -> str:
        if self.verdict is not Verdict.FORWARD:
            return str(self.verdict.value)
        parts = []
        for t in sorted(self.targets):
            masq = " masq" if t.masquerade else ""
            parts.append(f"{t.address}{masq} p={t.probability}")
        sticky = f" sticky({self.affinity_timeout}s)" if self.sticky else ""
        return "forward to {" + ", ".join(parts) + "}" + sticky


@attrs.frozen
class Affinity:
    """A learned ClientIP affinity: which endpoint a client went to, and when.

    A pure table for simulating session affinity with an explicit clock; both
    the reference semantics and the backends' interpreters use it.
    """

    entries: tuple[tuple[tuple[str, str], str, float], ...] = ()  # ((client, key), endpoint, last)

    def lookup(self, client: str, key: str, now: float, timeout: int) -> str | None:
        for (c, k), endpoint, last in self.entries:
            if c == client and k == key and now - last < timeout:
                return endpoint
        return None

    def connect(
        self, client: str, key: str, outcome: Outcome, now: float, choose: str
    ) -> tuple[str, Affinity]:
        """The endpoint a connection at ``now`` reaches, and the updated table.

        ``choose`` is the endpoint a fresh random pick would give; a learned
        entry that is still valid and still usable wins over it.
        """
        if outcome.affinity_timeout is None:
            return choose, self
        learned = self.lookup(client, key, now, outcome.affinity_timeout)
        endpoint = learned if learned is not None and learned in outcome.endpoints else choose
        rest = tuple(e for e in self.entries if e[0] != (client, key))
        return endpoint, Affinity((*rest, ((client, key), endpoint, now)))


# -- naming a probe's source ---------------------------------------------------------


class StateView(_Protocol):
    """What :func:`make_probe` reads of a cluster (a
    :class:`~svcnet.state.ClusterState` is one)."""

    @property
    def config(self) -> ClusterConfig: ...
    @property
    def nodes(self) -> Mapping[str, Node]: ...
    @property
    def pods(self) -> Mapping[tuple[str, str], Pod]: ...


@attrs.frozen
class ProbeSource:
    """Where a probe comes from, as a person names it: exactly one of ``pod``
    (namespace, name), ``node`` or ``address``; ``via`` is the node whose kernel
    handles the packet (default: the pod's or the node's own; required for an
    address). An ``address`` is classified by what the handling node can tell
    (a pod address, one of its own, anything else) unless ``external`` says it
    arrives from outside whatever it is."""

    pod: tuple[str, str] | None = None
    node: str | None = None
    address: str | None = None
    via: str | None = None
    external: bool = False

    def __attrs_post_init__(self) -> None:
        given = [x for x in (self.pod, self.node, self.address) if x is not None]
        if len(given) != 1:
            raise ProbeError("a probe source is exactly one of a pod, a node, an address")


def _node(state: StateView, name: str) -> Node:
    node = state.nodes.get(name)
    if node is None:
        raise NotFoundError(f"Node {name}")
    return node


def _node_address(node: Node, family: IPFamily) -> str:
    ip = node.address(family)
    if ip is None:
        raise ProbeError(f"node {node.name} has no {family.value} InternalIP")
    return ip


def classify(state: StateView, address: str, node: str) -> SourceKind:
    """The kind of a packet from ``address`` arriving at ``node``: a pod address
    (inside clusterCIDRs), one of the node's own addresses, or external."""
    ip = ipaddress.ip_address(address)
    if any(ip in ipaddress.ip_network(c, strict=False) for c in state.config.cluster_cidrs):
        return SourceKind.POD
    own = {ipaddress.ip_address(a) for a in _node(state, node).addresses}
    return SourceKind.NODE if ip in own else SourceKind.EXTERNAL


def resolve_source(
    state: StateView, source: ProbeSource, family: IPFamily
) -> tuple[SourceKind, str, str]:
    """``(kind, source address, handling node)`` of ``source`` for a destination of
    ``family``. A pod sends from its own address (kind pod); a node, or a
    host-network pod, from the node's InternalIP: kind node on that node itself,
    external when another node handles the packet (it arrived over the network).
    Raises :class:`~svcnet.errors.NotFoundError` for an unknown pod or node and
    :class:`~svcnet.errors.ProbeError` when the source cannot send such a packet."""
    if source.pod is not None:
        ns, name = source.pod
        pod = state.pods.get((ns, name))
        if pod is None:
            raise NotFoundError(f"Pod {ns}/{name}")
        if not pod.node_name:
            raise ProbeError(f"pod {ns}/{name} is on no node")
        handler = source.via or pod.node_name
        if pod.host_network:
            ip = _node_address(_node(state, pod.node_name), family)
            kind = SourceKind.NODE if handler == pod.node_name else SourceKind.EXTERNAL
        else:
            found = pod.ip(family)
            if found is None:
                raise ProbeError(f"pod {ns}/{name} has no {family.value} address")
            ip, kind = found, SourceKind.POD
    elif source.node is not None:
        handler = source.via or source.node
        ip = _node_address(_node(state, source.node), family)
        kind = SourceKind.NODE if handler == source.node else SourceKind.EXTERNAL
    else:
        assert source.address is not None
        if source.via is None:
            raise ProbeError(f"a probe from {source.address} needs the node it arrives at")
        handler, ip = source.via, source.address
        kind = SourceKind.EXTERNAL if source.external else classify(state, ip, handler)
    _node(state, handler)
    return kind, ip, handler


def make_probe(
    state: StateView,
    source: ProbeSource,
    dst_ip: str,
    dst_port: int,
    protocol: Protocol = Protocol.TCP,
) -> Probe:
    """The :class:`Probe` of a connection from ``source`` to ``dst_ip:dst_port``
    (see :func:`resolve_source`)."""
    kind, ip, node = resolve_source(state, source, IPFamily.of(dst_ip))
    return Probe(kind, ip, node, dst_ip, dst_port, protocol)
