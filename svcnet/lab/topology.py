"""The lab's topology, computed from a cluster state (pure: no I/O).

Layout (IPv4; IPv6 addresses are left out of the lab)::

    svcnet-<lab>-underlay   bridge ``br0``; one veth port per node and one for ext
    svcnet-<lab>-n-<node>   ``eth0`` = the node's InternalIP/32 on the underlay,
                            link routes to every other node, routes to their
                            podCIDRs (and off-CIDR pods) via them, default via ext;
                            one veth ``p<hash>`` per pod carrying the node's address
                            (the pods' gateway), with a /32 route to the pod
    svcnet-<lab>-p-<ns>-<pod>  ``eth0`` = pod IP/32, default via the node's address
    svcnet-<lab>-ext        the client outside the cluster and the default gateway of
                            every node: it accepts packets for any address arriving on
                            its underlay link (AnyIP, policy table 100) so that
                            packets no rule touched can be caught ("pass")

Every pod runs a server on its container ports and on every port a service
targets it with. Interface names fit the kernel's 15 characters (hashes of the long names);
namespace names may be longer.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

import attrs

from svcnet.model import IPFamily, Protocol
from svcnet.state import ClusterState

EXT_UNDERLAY_IP = "100.64.255.254"  # ext's own address on the underlay (CGNAT space)
ANYIP_TABLE = 100
ROUTE_PROTO = 200  # routes the lab adds between nodes carry this protocol number
LAB_NAME = re.compile(r"^[a-z0-9]{1,20}$")  # no "-": lab names must not prefix each other


RESERVED = frozenset({"agents"})  # /run/svcnet/agents holds the agents' status files


def check_lab_name(name: str) -> str:
    if not LAB_NAME.match(name) or name in RESERVED:
        from svcnet.errors import ValidationError

        raise ValidationError(
            "lab", "name", f"{name!r}: use 1-20 of a-z and 0-9, not {sorted(RESERVED)}"
        )
    return name


def short(text: str, n: int = 10) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def prefix(lab: str) -> str:
    return f"svcnet-{lab}-"


def node_netns(lab: str, node: str) -> str:
    return f"svcnet-{lab}-n-{node}"


def pod_netns(lab: str, namespace: str, pod: str) -> str:
    return f"svcnet-{lab}-p-{namespace}-{pod}"


def ext_netns(lab: str) -> str:
    return f"svcnet-{lab}-ext"


def underlay_netns(lab: str) -> str:
    return f"svcnet-{lab}-underlay"


@attrs.frozen
class LabNode:
    name: str
    netns: str
    ip: str  # IPv4 InternalIP
    pod_cidrs: tuple[str, ...]
    port: str  # its veth's name in the underlay namespace

    def routes(self, topo: Topology) -> tuple[str, ...]:
        """The ``ip route`` arguments this node needs towards the others (owned by
        the lab: protocol ROUTE_PROTO)."""
        out = []
        for other in topo.nodes:
            if other.name == self.name:
                continue
            out.append(f"{other.ip}/32 dev eth0 scope link")
            out += [f"{c} via {other.ip} dev eth0 onlink" for c in other.pod_cidrs]
        for pod in topo.pods:
            if pod.node != self.name and not pod.host_network and not pod.in_node_cidr:
                node = topo.node(pod.node)
                if node is not None:
                    out.append(f"{pod.ip}/32 via {node.ip} dev eth0 onlink")
        return tuple(sorted(set(out)))


@attrs.frozen
class LabPod:
    namespace: str
    name: str
    node: str
    ip: str  # the pod's IPv4 address (the node's for hostNetwork pods)
    host_network: bool
    tcp: tuple[int, ...]
    udp: tuple[int, ...]
    netns: str  # the node's namespace for hostNetwork pods
    veth: str  # the node side's name ("" for hostNetwork)
    in_node_cidr: bool = True

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def identity(self) -> tuple[object, ...]:
        """What, when changed, means the pod must be rebuilt."""
        return (self.node, self.ip, self.host_network, self.tcp, self.udp, self.netns)


@attrs.frozen
class Topology:
    lab: str
    nodes: tuple[LabNode, ...]
    pods: tuple[LabPod, ...]
    service_cidrs: tuple[str, ...]
    cluster_cidrs: tuple[str, ...]
    lb_pools: tuple[str, ...]
    skipped: tuple[str, ...] = ()  # objects left out, with the reason

    def node(self, name: str) -> LabNode | None:
        return next((n for n in self.nodes if n.name == name), None)

    def pod(self, key: str) -> LabPod | None:
        return next((p for p in self.pods if p.key == key), None)

    def pod_at(self, ip: str) -> LabPod | None:
        return next((p for p in self.pods if p.ip == ip and not p.host_network), None)

    def node_at(self, ip: str) -> LabNode | None:
        return next((n for n in self.nodes if n.ip == ip), None)

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (
            underlay_netns(self.lab),
            ext_netns(self.lab),
            *(n.netns for n in self.nodes),
            *(p.netns for p in self.pods if not p.host_network),
        )

    def ext_routes(self) -> tuple[str, ...]:
        """ext's default routes into the cluster: node addresses on the link, pod
        CIDRs via their nodes, service CIDRs and LoadBalancer pools via the first node."""
        out = [f"{n.ip}/32 dev eth0 scope link" for n in self.nodes]
        for n in self.nodes:
            out += [f"{c} via {n.ip} dev eth0 onlink" for c in n.pod_cidrs]
        if self.nodes:
            first = self.nodes[0].ip
            out += [f"{c} via {first} dev eth0 onlink" for c in self.service_cidrs + self.lb_pools]
        return tuple(sorted(set(out)))


def _v4(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v for v in values if IPFamily.of_network(v) is IPFamily.IPv4)


def _targeted_ports(state: ClusterState) -> dict[tuple[str, str], set[tuple[int, Protocol]]]:
    """Per pod, the ports services send to it: Kubernetes forwards to a numeric
    ``targetPort`` whether or not the pod declares it, so its server listens there too."""
    out: dict[tuple[str, str], set[tuple[int, Protocol]]] = {}
    for (ns, name), svc in state.services.items():
        protocols = {sp.name: sp.protocol for sp in svc.ports}
        for port_name, endpoints in state.service_endpoints(ns, name).items():
            protocol = protocols.get(port_name, Protocol.TCP)
            for ep in endpoints:
                if ep.pod:
                    out.setdefault((ns, ep.pod), set()).add((ep.port, protocol))
    return out


def build(lab: str, state: ClusterState) -> Topology:
    """The topology the lab needs for ``state``."""
    skipped: list[str] = []
    nodes = []
    for name in sorted(state.nodes):
        node = state.nodes[name]
        ip = node.address(IPFamily.IPv4)
        if ip is None:
            skipped.append(f"node {name}: no IPv4 InternalIP (the lab is IPv4 only)")
            continue
        nodes.append(
            LabNode(name, node_netns(lab, name), ip, _v4(node.pod_cidrs), f"n{short(name)}")
        )
    by_name = {n.name: n for n in nodes}
    pods = []
    taken: dict[tuple[str, str], str] = {}
    targeted = _targeted_ports(state)
    for key in sorted(state.pods):
        pod = state.pods[key]
        ns, name = key
        where = f"pod {ns}/{name}"
        lab_node = by_name.get(pod.node_name)
        if lab_node is None:
            skipped.append(f"{where}: not on a node of the lab")
            continue
        ports = {(p.port, p.protocol) for p in pod.ports} | targeted.get(key, set())
        tcp = tuple(sorted(n for n, proto in ports if proto is Protocol.TCP))
        udp = tuple(sorted(n for n, proto in ports if proto is Protocol.UDP))
        if pod.host_network:
            clash = [p for p in tcp + udp if (lab_node.name, str(p)) in taken]
            if clash:
                skipped.append(f"{where}: host port {clash[0]} taken on {lab_node.name}")
                continue
            for p in tcp + udp:
                taken[(lab_node.name, str(p))] = where
            pods.append(
                LabPod(ns, name, lab_node.name, lab_node.ip, True, tcp, udp, lab_node.netns, "")
            )
            continue
        ip = pod.ip(IPFamily.IPv4)
        if ip is None:
            skipped.append(f"{where}: no IPv4 address")
            continue
        inside = any(
            ipaddress.ip_address(ip) in ipaddress.ip_network(c, strict=False)
            for c in lab_node.pod_cidrs
        )
        pods.append(
            LabPod(
                ns,
                name,
                lab_node.name,
                ip,
                False,
                tcp,
                udp,
                pod_netns(lab, ns, name),
                f"p{short(ns + '/' + name)}",
                inside,
            )
        )
    cfg = state.config
    return Topology(
        lab,
        tuple(nodes),
        tuple(pods),
        _v4(cfg.service_cidrs),
        _v4(cfg.cluster_cidrs),
        _v4(cfg.load_balancer_pool),
        tuple(skipped),
    )
