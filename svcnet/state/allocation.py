"""Pure, persistent allocators: ClusterIPs, NodePorts (and health-check ports),
LoadBalancer pool addresses and pod IPs.

Every allocator is a :class:`Pool`: a range of integers (addresses as ints,
or ports) with a persistent "used" tree (a sparse binary tree of used counts,
path-copied on change) and a persistent owner map. Taking, releasing and
finding the lowest or highest free value in a sub-range are O(log range)
whatever the number of values held; nothing scans the used values.

Dynamic choices are deterministic:

* ClusterIPs and NodePorts prefer the upper part of their range, as KEP-3070
  (ClusterIP) and KEP-3668 (NodePort) do, so values that users pin, usually
  low ones, rarely collide with allocated ones. The lower "static" band is
  ``min(max(16, size/16), 256)`` addresses (``min(max(16, size/32), 128)``
  ports). Dynamic values are the lowest free one of the upper band, and when
  that is full the highest free one of the lower band.
* ClusterIPs never use the network address (nor the broadcast address in IPv4).
* LoadBalancer addresses: every address of each pool range is usable (a /28
  gives 16); the lowest free one first.
* Pod IPs come from the node's podCIDR(s), lowest free first, skipping the
  network address, the first host address (conventionally the node's gateway,
  the bridge address a CNI plugin puts on the node) and, in IPv4, broadcast.

The owner of each value is the :class:`~svcnet.model.ObjectKey` holding it, so
a conflict can name it. Owners of LoadBalancer addresses that could not get one
wait in a queue, served in arrival order when an address is freed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs
from pyrsistent import PMap, pmap

from svcnet.errors import ConflictError, ValidationError
from svcnet.model import (
    IPFamily,
    IPFamilyPolicy,
    IPNetwork,
    Node,
    ObjectKey,
    Pod,
    Service,
    ServiceType,
    TrafficPolicy,
)

# --------------------------------------------------------------------------- the tree
# A subtree covering 2**d values is None (all free) or (used, left, right).
_Tree = tuple[int, Any, Any] | None
_USED_LEAF: _Tree = (1, None, None)


def _count(node: _Tree) -> int:
    return 0 if node is None else node[0]


def _set(node: _Tree, depth: int, offset: int, used: bool) -> _Tree:
    if depth == 0:
        return _USED_LEAF if used else None
    half = 1 << (depth - 1)
    _, left, right = node if node is not None else (0, None, None)
    if offset < half:
        left = _set(left, depth - 1, offset, used)
    else:
        right = _set(right, depth - 1, offset - half, used)
    total = _count(left) + _count(right)
    return None if total == 0 else (total, left, right)


def _lowest(node: _Tree, depth: int, a: int, b: int) -> int | None:
    """Lowest free offset in [a, b] (inside this subtree's [0, 2**depth))."""
    if node is None:
        return a
    if node[0] == 1 << depth:
        return None
    half = 1 << (depth - 1)
    if a < half:
        found = _lowest(node[1], depth - 1, a, min(b, half - 1))
        if found is not None:
            return found
    if b >= half:
        found = _lowest(node[2], depth - 1, max(a, half) - half, b - half)
        if found is not None:
            return found + half
    return None


def _highest(node: _Tree, depth: int, a: int, b: int) -> int | None:
    """Highest free offset in [a, b]."""
    if node is None:
        return b
    if node[0] == 1 << depth:
        return None
    half = 1 << (depth - 1)
    if b >= half:
        found = _highest(node[2], depth - 1, max(a, half) - half, b - half)
        if found is not None:
            return found + half
    if a < half:
        return _highest(node[1], depth - 1, a, min(b, half - 1))
    return None


@attrs.frozen
class Pool:
    """Values ``lo..hi`` (inclusive); a persistent set of held values with owners."""

    lo: int
    hi: int
    band: int = 0  # the size of the lower "static" band (0: no band)
    family: IPFamily | None = None  # for address pools
    depth: int = attrs.field(default=0, eq=False)
    tree: _Tree = attrs.field(default=None, eq=False, repr=False)
    owners: PMap[int, ObjectKey] = attrs.field(factory=pmap, repr=False)

    @classmethod
    def create(cls, lo: int, hi: int, band: int = 0, family: IPFamily | None = None) -> Pool:
        size = max(hi - lo + 1, 1)
        return cls(lo, hi, band, family, max(size - 1, 1).bit_length())

    def __contains__(self, value: int) -> bool:
        return self.lo <= value <= self.hi

    def owner(self, value: int) -> ObjectKey | None:
        return self.owners.get(value)

    def take(self, value: int, owner: ObjectKey) -> Pool:
        assert value in self and value not in self.owners
        tree = _set(self.tree, self.depth, value - self.lo, True)
        return attrs.evolve(self, tree=tree, owners=self.owners.set(value, owner))

    def release(self, value: int, owner: ObjectKey | None = None) -> Pool:
        """Free ``value`` (only if ``owner`` holds it, when given)."""
        held = self.owners.get(value)
        if held is None or (owner is not None and held != owner):
            return self
        tree = _set(self.tree, self.depth, value - self.lo, False)
        return attrs.evolve(self, tree=tree, owners=self.owners.remove(value))

    def lowest_free(self, lo: int | None = None, hi: int | None = None) -> int | None:
        a, b = (
            max(self.lo if lo is None else lo, self.lo),
            min(self.hi if hi is None else hi, self.hi),
        )
        if a > b:
            return None
        found = _lowest(self.tree, self.depth, a - self.lo, b - self.lo)
        return None if found is None else found + self.lo

    def highest_free(self, lo: int | None = None, hi: int | None = None) -> int | None:
        a, b = (
            max(self.lo if lo is None else lo, self.lo),
            min(self.hi if hi is None else hi, self.hi),
        )
        if a > b:
            return None
        found = _highest(self.tree, self.depth, a - self.lo, b - self.lo)
        return None if found is None else found + self.lo

    def dynamic(self) -> int | None:
        """The next value to hand out: upper band first (lowest free), then the
        lower band (highest free)."""
        split = self.lo + self.band
        found = self.lowest_free(split, self.hi)
        if found is None and self.band:
            found = self.highest_free(self.lo, split - 1)
        return found

    @property
    def free_count(self) -> int:
        return self.hi - self.lo + 1 - len(self.owners)


def _band(size: int, divisor: int, cap: int) -> int:
    band = min(max(16, size // divisor), cap)
    return band if band < size else 0


def _ip_int(address: str) -> int:
    return int(ipaddress.ip_address(address))


def _ip_str(value: int, family: IPFamily) -> str:
    if family is IPFamily.IPv4:
        return str(ipaddress.IPv4Address(value))
    return str(ipaddress.IPv6Address(value))


def _net(cidr: str) -> IPNetwork:
    return ipaddress.ip_network(cidr, strict=False)


def cluster_ip_pool(cidr: str) -> Pool:
    net = _net(cidr)
    first = int(net.network_address) + 1
    last = int(net.broadcast_address) - (1 if net.version == 4 else 0)
    return Pool.create(first, last, _band(last - first + 1, 16, 256), _family(net))


def pod_ip_pool(cidr: str) -> Pool:
    net = _net(cidr)
    return Pool.create(
        int(net.network_address) + 2,
        int(net.broadcast_address) - (1 if net.version == 4 else 0),
        family=_family(net),
    )


def _lb_pool(cidr: str) -> Pool:
    net = _net(cidr)
    return Pool.create(int(net.network_address), int(net.broadcast_address), family=_family(net))


def _family(net: IPNetwork) -> IPFamily:
    return IPFamily.IPv4 if net.version == 4 else IPFamily.IPv6


@attrs.frozen
class Allocations:
    """Everything allocated in a cluster, as persistent values."""

    cluster_ips: PMap[IPFamily, Pool]
    cluster_cidrs: PMap[IPFamily, str]
    families: tuple[IPFamily, ...]  # the service families, primary first
    node_ports: Pool
    lb_pools: tuple[tuple[IPFamily, Pool], ...]  # sorted by family then address
    lb_waiting: PMap[ObjectKey, int] = attrs.field(factory=pmap)  # -> arrival number
    pod_pools: PMap[str, tuple[Pool, ...]] = attrs.field(factory=pmap)  # per node
    pod_waiting: PMap[str, PMap[ObjectKey, int]] = attrs.field(factory=pmap)  # per node
    seq: int = 0

    @classmethod
    def for_config(
        cls,
        service_cidrs: Iterable[str],
        node_port_range: tuple[int, int],
        load_balancer_pool: Iterable[str],
    ) -> Allocations:
        cips: dict[IPFamily, Pool] = {}
        cidrs: dict[IPFamily, str] = {}
        for cidr in service_cidrs:
            fam = IPFamily.of_network(cidr)
            if fam not in cips:
                cips[fam], cidrs[fam] = cluster_ip_pool(cidr), cidr
        lo, hi = node_port_range
        lbs = sorted(
            ((IPFamily.of_network(c), _lb_pool(c)) for c in load_balancer_pool),
            key=lambda fp: (fp[0].value, fp[1].lo),
        )
        return cls(
            pmap(cips),
            pmap(cidrs),
            tuple(cidrs),
            Pool.create(lo, hi, _band(hi - lo + 1, 32, 128)),
            tuple(lbs),
        )

    # ------------------------------------------------------------ load balancers
    def _lb_index(self, ip: int, family: IPFamily) -> int | None:
        for i, (fam, pool) in enumerate(self.lb_pools):
            if fam is family and ip in pool:
                return i
        return None

    def _lb_set(self, i: int, pool: Pool) -> Allocations:
        pools = list(self.lb_pools)
        pools[i] = (pools[i][0], pool)
        return attrs.evolve(self, lb_pools=tuple(pools))

    def lb_owner(self, address: str) -> ObjectKey | None:
        i = self._lb_index(_ip_int(address), IPFamily.of(address))
        return None if i is None else self.lb_pools[i][1].owner(_ip_int(address))

    def _lb_take(self, addresses: Iterable[str], owner: ObjectKey) -> Allocations | None:
        alloc = self
        for a in addresses:
            ip, fam = _ip_int(a), IPFamily.of(a)
            i = alloc._lb_index(ip, fam)
            if i is None or alloc.lb_pools[i][1].owner(ip) is not None:
                return None
            alloc = alloc._lb_set(i, alloc.lb_pools[i][1].take(ip, owner))
        return alloc

    def _lb_release(self, addresses: Iterable[str], owner: ObjectKey) -> Allocations:
        alloc = self
        for a in addresses:
            i = alloc._lb_index(_ip_int(a), IPFamily.of(a))
            if i is not None:
                alloc = alloc._lb_set(i, alloc.lb_pools[i][1].release(_ip_int(a), owner))
        return alloc

    def _lb_try(
        self, svc: Service, prefer: tuple[str, ...]
    ) -> tuple[Allocations, tuple[str, ...]] | None:
        """Addresses for a LoadBalancer service, all or nothing."""
        if svc.load_balancer_ip:
            wanted: tuple[str, ...] = (svc.load_balancer_ip,)
        elif prefer and (taken := self._lb_take(prefer, svc.key)) is not None:
            return taken, prefer
        else:
            families = tuple(IPFamily.of(ip) for ip in svc.cluster_ips) or svc.ip_families
            chosen: list[str] = []
            for fam in families:
                pools = [p for f, p in self.lb_pools if f is fam]
                if not pools:
                    continue
                found = next((v for p in pools if (v := p.lowest_free()) is not None), None)
                if found is None:
                    return None
                chosen.append(_ip_str(found, fam))
            if not chosen:
                return None
            wanted = tuple(chosen)
        taken = self._lb_take(wanted, svc.key)
        return None if taken is None else (taken, wanted)

    def serve_lb_waiting(
        self, lookup: Callable[[ObjectKey], Service]
    ) -> tuple[Allocations, list[Service]]:
        """Give addresses to waiting services, in arrival order, where possible."""
        alloc, served = self, []
        for key, _ in sorted(self.lb_waiting.items(), key=lambda kv: kv[1]):
            svc = lookup(key)
            got = alloc._lb_try(svc, ())
            if got is not None:
                alloc = attrs.evolve(got[0], lb_waiting=got[0].lb_waiting.remove(key))
                served.append(attrs.evolve(svc, load_balancer_ips=got[1]))
        return alloc, served

    # ---------------------------------------------------------------- services
    def release_service(self, svc: Service) -> Allocations:
        key = svc.key
        cips = self.cluster_ips
        for ip in svc.cluster_ips:
            fam = IPFamily.of(ip)
            if fam in cips:
                cips = cips.set(fam, cips[fam].release(_ip_int(ip), key))
        ports = self.node_ports
        for p in svc.ports:
            if p.node_port is not None:
                ports = ports.release(p.node_port, key)
        if svc.health_check_node_port is not None:
            ports = ports.release(svc.health_check_node_port, key)
        alloc = attrs.evolve(
            self, cluster_ips=cips, node_ports=ports, lb_waiting=self.lb_waiting.discard(key)
        )
        if not svc.status_ingress:
            alloc = alloc._lb_release(svc.load_balancer_ips, key)
        return alloc

    def allocate_service(self, old: Service | None, new: Service) -> tuple[Allocations, Service]:
        """Allocate for ``new`` (replacing ``old``, whose allocations are kept
        where ``new`` leaves them unset). Raises ValidationError/ConflictError."""
        seq = self.lb_waiting.get(new.key)
        alloc = self if old is None else self.release_service(old)
        alloc, new = alloc._cluster_ips(old, new)
        alloc, new = alloc._node_ports(old, new)
        return alloc._load_balancer(old, new, seq)

    def _cluster_ips(self, old: Service | None, new: Service) -> tuple[Allocations, Service]:
        obj = str(new.key)
        old_ips = old.cluster_ips if old is not None else ()
        if new.type is ServiceType.EXTERNAL_NAME:
            return self, attrs.evolve(new, cluster_ips=(), headless=False)
        if new.headless:
            if old_ips:
                raise ValidationError(obj, "spec.clusterIP", "field is immutable")
            return self, attrs.evolve(new, cluster_ips=())
        field = "spec.clusterIPs" if len(new.cluster_ips) > 1 else "spec.clusterIP"
        given = list(new.cluster_ips)
        for ip in given:
            kept = next((o for o in old_ips if IPFamily.of(o) is IPFamily.of(ip)), None)
            if kept is not None and kept != ip:
                raise ValidationError(obj, field, "field is immutable")
        if not given and old_ips:
            given = list(old_ips)
        fams_given = [IPFamily.of(ip) for ip in given]
        if len(set(fams_given)) != len(fams_given):
            raise ValidationError(obj, field, "may hold at most one address per IP family")
        families = self._families(new, fams_given, obj)
        chosen: dict[IPFamily, str] = {}
        alloc = self
        for i, ip in enumerate(given):
            fam = IPFamily.of(ip)
            where = "spec.clusterIP" if i == 0 else f"spec.clusterIPs[{i}]"
            if fam not in families:
                if old is not None and ip in old_ips and new.ip_family_policy is not None:
                    continue  # dual-stack downgraded: the secondary is released
                raise ValidationError(
                    obj,
                    "spec.clusterIPs",
                    f"{ip}: family {fam.value} not in the service's"
                    f" ipFamilies ({', '.join(f.value for f in families)})",
                )
            pool = alloc.cluster_ips[fam]
            value = _ip_int(ip)
            if value not in pool:
                raise ValidationError(
                    obj,
                    where,
                    f"clusterIP {ip} is not in the valid range of service CIDR"
                    f" {alloc.cluster_cidrs[fam]}",
                )
            holder = pool.owner(value)
            if holder is not None:
                raise ConflictError(obj, where, f"clusterIP {ip} is already allocated to {holder}")
            alloc = attrs.evolve(
                alloc, cluster_ips=alloc.cluster_ips.set(fam, pool.take(value, new.key))
            )
            chosen[fam] = ip
        for fam in families:
            if fam in chosen:
                continue
            pool = alloc.cluster_ips[fam]
            value_or_none = pool.dynamic()
            if value_or_none is None:
                raise ValidationError(
                    obj,
                    "spec.clusterIP",
                    f"no {fam.value} ClusterIP left in service CIDR {alloc.cluster_cidrs[fam]}",
                )
            alloc = attrs.evolve(
                alloc, cluster_ips=alloc.cluster_ips.set(fam, pool.take(value_or_none, new.key))
            )
            chosen[fam] = _ip_str(value_or_none, fam)
        policy = new.ip_family_policy or (
            IPFamilyPolicy.REQUIRE_DUAL_STACK if len(families) > 1 else IPFamilyPolicy.SINGLE_STACK
        )
        return alloc, attrs.evolve(
            new,
            cluster_ips=tuple(chosen[f] for f in families),
            ip_families=families,
            ip_family_policy=policy,
        )

    def _families(self, svc: Service, fams_given: list[IPFamily], obj: str) -> tuple[IPFamily, ...]:
        """The service's families, primary first (kube-apiserver's rules)."""
        requested = list(dict.fromkeys(fams_given + list(svc.ip_families)))
        for fam in requested:
            if fam not in self.cluster_ips:
                raise ValidationError(
                    obj, "spec.ipFamilies", f"{fam.value} is not configured on this cluster"
                )
        if not self.families:
            raise ValidationError(obj, "spec.clusterIP", "the cluster has no service CIDR")
        policy = svc.ip_family_policy
        if policy is None:
            dual = len(fams_given) > 1 or len(svc.ip_families) > 1
            policy = IPFamilyPolicy.REQUIRE_DUAL_STACK if dual else IPFamilyPolicy.SINGLE_STACK
        first = requested[0] if requested else self.families[0]
        if policy is IPFamilyPolicy.SINGLE_STACK:
            if len(requested) > 1:
                raise ValidationError(
                    obj, "spec.ipFamilyPolicy", "SingleStack services have exactly one IP family"
                )
            return (first,)
        if len(self.families) < 2:
            if policy is IPFamilyPolicy.REQUIRE_DUAL_STACK:
                raise ValidationError(
                    obj,
                    "spec.ipFamilyPolicy",
                    "RequireDualStack on a single-stack cluster (one service CIDR)",
                )
            return (first,)
        other = IPFamily.IPv6 if first is IPFamily.IPv4 else IPFamily.IPv4
        return (first, other)

    def _node_ports(self, old: Service | None, new: Service) -> tuple[Allocations, Service]:
        obj = str(new.key)
        lb = new.type is ServiceType.LOAD_BALANCER
        wants = new.type is ServiceType.NODE_PORT or (lb and new.allocate_load_balancer_node_ports)
        keep = old is not None and old.external and wants
        lo, hi = self.node_ports.lo, self.node_ports.hi
        pool = self.node_ports
        ports = list(new.ports)
        own: dict[int, set[Any]] = {}

        def pin(value: int, where: str, protocol: Any, label: str) -> None:
            nonlocal pool
            if value not in pool:
                raise ValidationError(
                    obj,
                    where,
                    f"{label} {value}: provided port is not in the valid range."
                    f" The range of valid ports is {lo}-{hi}",
                )
            if value in own:
                if protocol is None or protocol in own[value]:
                    raise ValidationError(obj, where, f"{label} {value}: duplicate value")
                own[value].add(protocol)
                return
            holder = pool.owner(value)
            if holder is not None:
                raise ConflictError(obj, where, f"{label} {value} is already allocated to {holder}")
            pool = pool.take(value, new.key)
            own[value] = {protocol}

        for i, p in enumerate(ports):
            where = f"spec.ports[{i}].nodePort"
            if p.node_port is not None and not new.external:
                raise ValidationError(
                    obj, where, f"may not be used when `type` is '{new.type.value}'"
                )
            value = p.node_port
            if value is None and keep and old is not None:
                match = next((o for o in old.ports if p.name and o.name == p.name), None) or next(
                    (o for o in old.ports if (o.port, o.protocol) == (p.port, p.protocol)), None
                )
                value = match.node_port if match is not None else None
                if value is not None and value in own and p.protocol in own[value]:
                    value = None
            if value is not None:
                pin(value, where, p.protocol, "nodePort")
                ports[i] = attrs.evolve(p, node_port=value)
        hc = new.health_check_node_port
        wants_hc = lb and new.external_traffic_policy is TrafficPolicy.LOCAL
        if hc is not None and not wants_hc:
            raise ValidationError(
                obj,
                "spec.healthCheckNodePort",
                "may only be set when `type` is 'LoadBalancer'"
                " and `externalTrafficPolicy` is 'Local'",
            )
        if wants_hc and hc is None and old is not None:
            hc = old.health_check_node_port
        if hc is not None:
            pin(hc, "spec.healthCheckNodePort", None, "healthCheckNodePort")
        for i, p in enumerate(ports):
            if p.node_port is None and wants:
                value = pool.dynamic()
                if value is None:
                    raise ValidationError(
                        obj, f"spec.ports[{i}].nodePort", f"no nodePort left in {lo}-{hi}"
                    )
                pool = pool.take(value, new.key)
                own[value] = {p.protocol}
                ports[i] = attrs.evolve(p, node_port=value)
        if wants_hc and hc is None:
            hc = pool.dynamic()
            if hc is None:
                raise ValidationError(
                    obj, "spec.healthCheckNodePort", f"no nodePort left in {lo}-{hi}"
                )
            pool = pool.take(hc, new.key)
        return attrs.evolve(self, node_ports=pool), attrs.evolve(
            new, ports=tuple(ports), health_check_node_port=hc
        )

    def _load_balancer(
        self, old: Service | None, new: Service, seq: int | None
    ) -> tuple[Allocations, Service]:
        key = new.key
        if new.type is not ServiceType.LOAD_BALANCER:
            return self, attrs.evolve(new, load_balancer_ips=())
        if new.status_ingress:
            return attrs.evolve(self, lb_waiting=self.lb_waiting.discard(key)), attrs.evolve(
                new, load_balancer_ips=new.status_ingress
            )
        prefer = new.load_balancer_ips
        if (
            not prefer
            and old is not None
            and old.type is ServiceType.LOAD_BALANCER
            and not old.status_ingress
            and old.load_balancer_ip == new.load_balancer_ip
        ):
            prefer = old.load_balancer_ips
        got = self._lb_try(new, prefer)
        if got is not None:
            alloc, ips = got
            return attrs.evolve(alloc, lb_waiting=alloc.lb_waiting.discard(key)), attrs.evolve(
                new, load_balancer_ips=ips
            )
        if seq is not None:  # keeps its place in the queue
            return attrs.evolve(self, lb_waiting=self.lb_waiting.set(key, seq)), attrs.evolve(
                new, load_balancer_ips=()
            )
        return attrs.evolve(
            self, lb_waiting=self.lb_waiting.set(key, self.seq), seq=self.seq + 1
        ), attrs.evolve(new, load_balancer_ips=())

    def reconfigure(
        self,
        service_cidrs: Iterable[str],
        node_port_range: tuple[int, int],
        load_balancer_pool: Iterable[str],
        services: Iterable[Service],
    ) -> Allocations:
        """The same allocations under a new configuration; refused (ValidationError
        naming the service) when one falls outside the new ranges."""
        fresh = Allocations.for_config(service_cidrs, node_port_range, load_balancer_pool)
        alloc = attrs.evolve(
            fresh,
            lb_waiting=self.lb_waiting,
            pod_pools=self.pod_pools,
            pod_waiting=self.pod_waiting,
            seq=self.seq,
        )
        for svc in services:
            obj, key = str(svc.key), svc.key
            for ip in svc.cluster_ips:
                fam, value = IPFamily.of(ip), _ip_int(ip)
                pool = alloc.cluster_ips.get(fam)
                if pool is None or value not in pool:
                    raise ValidationError(
                        obj, "spec.clusterIP", f"clusterIP {ip} is outside the new service CIDRs"
                    )
                alloc = attrs.evolve(
                    alloc, cluster_ips=alloc.cluster_ips.set(fam, pool.take(value, key))
                )
            nps = alloc.node_ports
            values = {p.node_port for p in svc.ports if p.node_port is not None}
            if svc.health_check_node_port is not None:
                values.add(svc.health_check_node_port)
            for v in sorted(values):
                if v not in nps:
                    raise ValidationError(
                        obj,
                        "spec.ports",
                        f"nodePort {v} is outside the new range {nps.lo}-{nps.hi}",
                    )
                nps = nps.take(v, key)
            alloc = attrs.evolve(alloc, node_ports=nps)
            if svc.type is ServiceType.LOAD_BALANCER and not svc.status_ingress:
                taken = alloc._lb_take(svc.load_balancer_ips, key)
                if taken is None:
                    raise ValidationError(
                        obj,
                        "status.loadBalancer.ingress",
                        "address(es) "
                        f"{', '.join(svc.load_balancer_ips)} outside the new"
                        " loadBalancerPool",
                    )
                alloc = taken
        return alloc

    # ---------------------------------------------------------------- pod IPs
    def _pod_wait(self, node: str, key: ObjectKey) -> Allocations:
        waiting = self.pod_waiting.get(node, pmap())
        if key in waiting:
            return self
        return attrs.evolve(
            self,
            pod_waiting=self.pod_waiting.set(node, waiting.set(key, self.seq)),
            seq=self.seq + 1,
        )

    def _pod_unwait(self, node: str, key: ObjectKey) -> Allocations:
        waiting = self.pod_waiting.get(node)
        if waiting is None or key not in waiting:
            return self
        waiting = waiting.remove(key)
        pw = self.pod_waiting.set(node, waiting) if waiting else self.pod_waiting.remove(node)
        return attrs.evolve(self, pod_waiting=pw)

    def pods_waiting(self, node: str) -> int:
        return len(self.pod_waiting.get(node, ()))

    def _pin_pod_ips(self, pod: Pod) -> Allocations:
        pools = self.pod_pools.get(pod.node_name)
        if pools is None or not pod.pod_ips:
            return self
        new = list(pools)
        for ip in pod.pod_ips:
            value = _ip_int(ip)
            for i, pool in enumerate(new):
                if value in pool and pool.owner(value) is None and pool_family(pool, ip):
                    new[i] = pool.take(value, pod.key)
        return attrs.evolve(self, pod_pools=self.pod_pools.set(pod.node_name, tuple(new)))

    def release_pod(self, pod: Pod) -> Allocations:
        alloc = self._pod_unwait(pod.node_name, pod.key)
        pools = alloc.pod_pools.get(pod.node_name)
        if pools is None or not pod.pod_ips:
            return alloc
        new = tuple(_release_all(p, pod.pod_ips, pod.key) for p in pools)
        return attrs.evolve(alloc, pod_pools=alloc.pod_pools.set(pod.node_name, new))

    def assign_pod(self, old: Pod | None, new: Pod) -> tuple[Allocations, Pod]:
        """IPs for ``new`` (``old``'s allocated ones kept on the same node)."""
        alloc = self if old is None else self.release_pod(old)
        if new.pod_ips:
            return alloc._pin_pod_ips(new), new
        if new.host_network or not new.node_name:
            return alloc, attrs.evolve(new, pod_ips_allocated=False)
        if old is not None and old.pod_ips_allocated and old.node_name == new.node_name:
            kept = attrs.evolve(new, pod_ips=old.pod_ips, pod_ips_allocated=True)
            return alloc._pin_pod_ips(kept), kept
        return alloc._pod_take(new)

    def _pod_take(self, pod: Pod) -> tuple[Allocations, Pod]:
        pools = self.pod_pools.get(pod.node_name)
        bare = attrs.evolve(pod, pod_ips=(), pod_ips_allocated=False)
        if not pools:
            return self._pod_wait(pod.node_name, pod.key), bare
        new, ips = list(pools), []
        for i, pool in enumerate(pools):
            value = pool.lowest_free()
            if value is None:
                return self._pod_wait(pod.node_name, pod.key), bare
            new[i] = pool.take(value, pod.key)
            ips.append(_ip_str(value, pool.family or IPFamily.IPv4))
        alloc = attrs.evolve(self, pod_pools=self.pod_pools.set(pod.node_name, tuple(new)))
        return alloc._pod_unwait(pod.node_name, pod.key), attrs.evolve(
            pod, pod_ips=tuple(ips), pod_ips_allocated=True
        )

    def serve_pod_waiting(
        self, node: str, lookup: Callable[[ObjectKey], Pod]
    ) -> tuple[Allocations, list[Pod]]:
        alloc, served = self, []
        for key, _ in sorted(self.pod_waiting.get(node, pmap()).items(), key=lambda kv: kv[1]):
            alloc, pod = alloc._pod_take(lookup(key))
            if pod.pod_ips:
                served.append(pod)
        return alloc, served

    def set_node(
        self, old: Node | None, node: Node, pods: Sequence[Pod]
    ) -> tuple[Allocations, list[Pod]]:
        """(Re)build the node's pod pools when its podCIDRs change. ``pods`` are
        the pods on the node; returns those whose IPs changed."""
        if old is not None and old.pod_cidrs == node.pod_cidrs:
            return self, []
        pools = tuple(pod_ip_pool(c) for c in node.pod_cidrs)
        alloc = attrs.evolve(self, pod_pools=self.pod_pools.set(node.name, pools))
        current = {p.key: p for p in pods}
        changed: dict[ObjectKey, Pod] = {}
        for key in sorted(current):
            pod = current[key]
            if pod.pod_ips_allocated and not all(
                any(_ip_int(ip) in p and pool_family(p, ip) for p in pools) for ip in pod.pod_ips
            ):
                pod = attrs.evolve(pod, pod_ips=(), pod_ips_allocated=False)
                current[key] = changed[key] = pod
                alloc = alloc._pod_wait(node.name, key)
            alloc = alloc._pin_pod_ips(pod)
        alloc, served = alloc.serve_pod_waiting(node.name, current.__getitem__)
        changed.update((p.key, p) for p in served)
        return alloc, list(changed.values())

    def remove_node(self, name: str, pods: Iterable[Pod]) -> tuple[Allocations, list[Pod]]:
        """The node is gone: its pods lose allocated IPs and wait for it."""
        alloc = attrs.evolve(self, pod_pools=self.pod_pools.discard(name))
        changed = []
        for pod in sorted(pods, key=lambda p: p.key):
            if pod.pod_ips_allocated:
                pod = attrs.evolve(pod, pod_ips=(), pod_ips_allocated=False)
                changed.append(pod)
            if not pod.pod_ips and not pod.host_network:
                alloc = alloc._pod_wait(name, pod.key)
        return alloc, changed


def pool_family(pool: Pool, ip: str) -> bool:
    return pool.family is IPFamily.of(ip)


def _release_all(pool: Pool, ips: Iterable[str], owner: ObjectKey) -> Pool:
    for ip in ips:
        if pool_family(pool, ip):
            pool = pool.release(_ip_int(ip), owner)
    return pool
