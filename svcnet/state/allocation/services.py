"""Allocation for services: ClusterIPs, NodePorts (and health-check ports) and
LoadBalancer pool addresses, with kube-apiserver's validation of what a service
asks for (immutable ClusterIPs, families and family policies, ports in range,
no value held twice).

Dynamic choices are deterministic:

* ClusterIPs and NodePorts prefer the upper part of their range, as KEP-3070
  (ClusterIP) and KEP-3668 (NodePort) do, so values that users pin, usually
  low ones, rarely collide with allocated ones (the bands are
  :mod:`svcnet.state.allocation.pool`'s). Dynamic values are the lowest free one
  of the upper band, and when that is full the highest free one of the lower band.
* LoadBalancer addresses: the lowest free one of the pool ranges first. Services
  that could not get one wait in a queue, served in arrival order when an
  address is freed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs
from pyrsistent import PMap, pmap

from svcnet.errors import ConflictError, ValidationError
from svcnet.model import (
    IPFamily,
    IPFamilyPolicy,
    ObjectKey,
    Service,
    ServiceType,
    TrafficPolicy,
    ip_family,
)
from svcnet.state.allocation.pool import (
    Pool,
    cluster_ip_pool,
    family_of,
    ip_int,
    ip_str,
    lb_pool,
    node_port_pool,
)

__all__ = ["ServiceAllocations"]


@attrs.frozen
class ServiceAllocations:
    """Everything allocated to services in a cluster, as persistent values."""

    cluster_ips: PMap[IPFamily, Pool]
    cluster_cidrs: PMap[IPFamily, str]
    families: tuple[IPFamily, ...]  # the service families, primary first
    node_ports: Pool
    lb_pools: tuple[tuple[IPFamily, Pool], ...]  # sorted by family then address
    lb_waiting: PMap[ObjectKey, int] = attrs.field(factory=pmap)  # -> arrival number
    seq: int = 0  # the next arrival number

    @classmethod
    def for_config(
        cls,
        service_cidrs: Iterable[str],
        node_port_range: tuple[int, int],
        load_balancer_pool: Iterable[str],
    ) -> ServiceAllocations:
        cips: dict[IPFamily, Pool] = {}
        cidrs: dict[IPFamily, str] = {}
        for cidr in service_cidrs:
            fam = IPFamily.of_network(cidr)
            if fam not in cips:
                cips[fam], cidrs[fam] = cluster_ip_pool(cidr), cidr
        lo, hi = node_port_range
        lbs = sorted(
            ((IPFamily.of_network(c), lb_pool(c)) for c in load_balancer_pool),
            key=lambda fp: (fp[0].value, fp[1].lo),
        )
        return cls(
            pmap(cips),
            pmap(cidrs),
            tuple(cidrs),
            node_port_pool(lo, hi),
            tuple(lbs),
        )

    # ------------------------------------------------------------ load balancers
    def _lb_index(self, ip: int, family: IPFamily) -> int | None:
        for i, (fam, pool) in enumerate(self.lb_pools):
            if fam is family and ip in pool:
                return i
        return None

    def _lb_set(self, i: int, pool: Pool) -> ServiceAllocations:
        pools = list(self.lb_pools)
        pools[i] = (pools[i][0], pool)
        return attrs.evolve(self, lb_pools=tuple(pools))

    def lb_owner(self, address: str) -> ObjectKey | None:
        i = self._lb_index(ip_int(address), family_of(address))
        return None if i is None else self.lb_pools[i][1].owner(ip_int(address))

    def _lb_take(self, addresses: Iterable[str], owner: ObjectKey) -> ServiceAllocations | None:
        alloc = self
        for a in addresses:
            ip, fam = ip_int(a), family_of(a)
            i = alloc._lb_index(ip, fam)
            if i is None or alloc.lb_pools[i][1].owner(ip) is not None:
                return None
            alloc = alloc._lb_set(i, alloc.lb_pools[i][1].take(ip, owner))
        return alloc

    def _lb_release(self, addresses: Iterable[str], owner: ObjectKey) -> ServiceAllocations:
        alloc = self
        for a in addresses:
            i = alloc._lb_index(ip_int(a), family_of(a))
            if i is not None:
                alloc = alloc._lb_set(i, alloc.lb_pools[i][1].release(ip_int(a), owner))
        return alloc

    def _lb_try(
        self, svc: Service, prefer: tuple[str, ...]
    ) -> tuple[ServiceAllocations, tuple[str, ...]] | None:
        """Addresses for a LoadBalancer service, all or nothing."""
        if svc.load_balancer_ip:
            wanted: tuple[str, ...] = (svc.load_balancer_ip,)
        elif prefer and (taken := self._lb_take(prefer, svc.key)) is not None:
            return taken, prefer
        else:
            families = tuple(family_of(ip) for ip in svc.cluster_ips) or svc.ip_families
            chosen: list[str] = []
            for fam in families:
                pools = [p for f, p in self.lb_pools if f is fam]
                if not pools:
                    continue
                found = next((v for p in pools if (v := p.lowest_free()) is not None), None)
                if found is None:
                    return None
                chosen.append(ip_str(found, fam))
            if not chosen:
                return None
            wanted = tuple(chosen)
        taken = self._lb_take(wanted, svc.key)
        return None if taken is None else (taken, wanted)

    def serve_lb_waiting(
        self, lookup: Callable[[ObjectKey], Service]
    ) -> tuple[ServiceAllocations, list[Service]]:
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
    def release_service(self, svc: Service) -> ServiceAllocations:
        key = svc.key
        cips = self.cluster_ips
        for ip in svc.cluster_ips:
            fam = family_of(ip)
            if fam in cips:
                cips = cips.set(fam, cips[fam].release(ip_int(ip), key))
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

    def allocate_service(
        self, old: Service | None, new: Service
    ) -> tuple[ServiceAllocations, Service]:
        """Allocate for ``new`` (replacing ``old``, whose allocations are kept
        where ``new`` leaves them unset). Raises ValidationError/ConflictError."""
        seq = self.lb_waiting.get(new.key)
        alloc = self if old is None else self.release_service(old)
        alloc, new = alloc._cluster_ips(old, new)
        alloc, new = alloc._node_ports(old, new)
        return alloc._load_balancer(old, new, seq)

    def _cluster_ips(self, old: Service | None, new: Service) -> tuple[ServiceAllocations, Service]:
        obj = str(new.key)
        old_ips = old.cluster_ips if old is not None else ()
        if new.type is ServiceType.EXTERNAL_NAME:
            return self, attrs.evolve(new, cluster_ips=(), headless=False)
        if new.headless:
            if old_ips:
                raise ValidationError(obj, "spec.clusterIP", "field is immutable", value="None")
            return self, attrs.evolve(new, cluster_ips=())
        field = "spec.clusterIPs" if len(new.cluster_ips) > 1 else "spec.clusterIP"
        given = list(new.cluster_ips)
        for ip in given:
            kept = next((o for o in old_ips if ip_family(o) is family_of(ip)), None)
            if kept is not None and kept != ip:
                raise ValidationError(obj, field, "field is immutable", value=_shown_ips(new))
        if not given and old_ips:
            given = list(old_ips)
        fams_given = [family_of(ip) for ip in given]
        if len(set(fams_given)) != len(fams_given):
            raise ValidationError(
                obj, field, "may hold at most one address per IP family", value=tuple(given)
            )
        families = self._families(new, fams_given, obj)
        chosen: dict[IPFamily, str] = {}
        alloc = self
        for i, ip in enumerate(given):
            fam = family_of(ip)
            where = "spec.clusterIP" if i == 0 else f"spec.clusterIPs[{i}]"
            if fam not in families:
                if old is not None and ip in old_ips and new.ip_family_policy is not None:
                    continue  # dual-stack downgraded: the secondary is released
                raise ValidationError(
                    obj,
                    "spec.clusterIPs",
                    f"{ip}: family {fam.value} not in the service's"
                    f" ipFamilies ({', '.join(f.value for f in families)})",
                    value=tuple(given),
                )
            pool = alloc.cluster_ips[fam]
            value = ip_int(ip)
            if value not in pool:
                raise ValidationError(
                    obj,
                    where,
                    f"clusterIP {ip} is not in the valid range of service CIDR"
                    f" {alloc.cluster_cidrs[fam]}",
                    value=ip,
                )
            holder = pool.owner(value)
            if holder is not None:
                raise ConflictError(
                    obj, where, f"clusterIP {ip} is already allocated to {holder}", value=ip
                )
            alloc = alloc._with_pool(fam, pool.take(value, new.key))
            chosen[fam] = ip
        for fam in families:
            if fam in chosen:
                continue
            pool = alloc.cluster_ips[fam]
            value_or_none = pool.dynamic()
            if value_or_none is None:
                raise alloc.no_cluster_ip_left(obj, fam)
            alloc = alloc._with_pool(fam, pool.take(value_or_none, new.key))
            chosen[fam] = ip_str(value_or_none, fam)
        policy = new.ip_family_policy or (
            IPFamilyPolicy.REQUIRE_DUAL_STACK if len(families) > 1 else IPFamilyPolicy.SINGLE_STACK
        )
        return alloc, attrs.evolve(
            new,
            cluster_ips=tuple(chosen[f] for f in families),
            ip_families=families,
            ip_family_policy=policy,
        )

    def _with_pool(self, family: IPFamily, pool: Pool) -> ServiceAllocations:
        """These allocations with ``pool`` as the ``family`` ClusterIP pool."""
        return ServiceAllocations(
            self.cluster_ips.set(family, pool),
            self.cluster_cidrs,
            self.families,
            self.node_ports,
            self.lb_pools,
            self.lb_waiting,
            self.seq,
        )

    def no_cluster_ip_left(self, obj: str, fam: IPFamily) -> ValidationError:
        """The refusal of a service ``obj`` that needs a ``fam`` ClusterIP when none is
        free (also raised ahead of time for a batch that cannot fit)."""
        return ValidationError(
            obj,
            "spec.clusterIP",
            f"no {fam.value} ClusterIP left in service CIDR {self.cluster_cidrs[fam]}",
        )

    def _families(self, svc: Service, fams_given: list[IPFamily], obj: str) -> tuple[IPFamily, ...]:
        """The service's families, primary first (kube-apiserver's rules)."""
        requested = list(dict.fromkeys(fams_given + list(svc.ip_families)))
        for fam in requested:
            if fam not in self.cluster_ips:
                raise ValidationError(
                    obj,
                    "spec.ipFamilies",
                    f"{fam.value} is not configured on this cluster",
                    value=fam.value,
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
                    obj,
                    "spec.ipFamilyPolicy",
                    "SingleStack services have exactly one IP family"
                    f" (ipFamilies {', '.join(f.value for f in requested)})",
                    value=policy.value,
                )
            return (first,)
        if len(self.families) < 2:
            if policy is IPFamilyPolicy.REQUIRE_DUAL_STACK:
                raise ValidationError(
                    obj,
                    "spec.ipFamilyPolicy",
                    "RequireDualStack on a single-stack cluster (one service CIDR)",
                    value=policy.value,
                )
            return (first,)
        other = IPFamily.IPv6 if first is IPFamily.IPv4 else IPFamily.IPv4
        return (first, other)

    def _node_ports(self, old: Service | None, new: Service) -> tuple[ServiceAllocations, Service]:
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
                    value=value,
                )
            if value in own:
                if protocol is None or protocol in own[value]:
                    raise ValidationError(
                        obj, where, f"{label} {value}: duplicate value", value=value
                    )
                own[value].add(protocol)
                return
            holder = pool.owner(value)
            if holder is not None:
                raise ConflictError(
                    obj, where, f"{label} {value} is already allocated to {holder}", value=value
                )
            pool = pool.take(value, new.key)
            own[value] = {protocol}

        for i, p in enumerate(ports):
            where = f"spec.ports[{i}].nodePort"
            if p.node_port is not None and not new.external:
                raise ValidationError(
                    obj,
                    where,
                    f"may not be used when `type` is '{new.type.value}'",
                    value=p.node_port,
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
                value=hc,
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
        if pool is self.node_ports and hc == new.health_check_node_port and not own:
            return self, new  # nothing held nor changed (a ClusterIP service)
        return attrs.evolve(self, node_ports=pool), attrs.evolve(
            new, ports=tuple(ports), health_check_node_port=hc
        )

    def _load_balancer(
        self, old: Service | None, new: Service, seq: int | None
    ) -> tuple[ServiceAllocations, Service]:
        key = new.key
        if new.type is not ServiceType.LOAD_BALANCER:
            return self, attrs.evolve(new, load_balancer_ips=()) if new.load_balancer_ips else new
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
    ) -> ServiceAllocations:
        """The same allocations under a new configuration; refused (ValidationError
        naming the service) when one falls outside the new ranges."""
        fresh = ServiceAllocations.for_config(service_cidrs, node_port_range, load_balancer_pool)
        alloc = attrs.evolve(fresh, lb_waiting=self.lb_waiting, seq=self.seq)
        for svc in services:
            obj, key = str(svc.key), svc.key
            for ip in svc.cluster_ips:
                fam, value = family_of(ip), ip_int(ip)
                pool = alloc.cluster_ips.get(fam)
                if pool is None or value not in pool:
                    raise ValidationError(
                        obj,
                        "spec.clusterIP" if ip == svc.cluster_ips[0] else "spec.clusterIPs",
                        f"clusterIP {ip} is outside the new service CIDRs",
                        value=ip,
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
                        _node_port_field(svc, v),
                        f"nodePort {v} is outside the new range {nps.lo}-{nps.hi}",
                        value=v,
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
                        value=svc.load_balancer_ips,
                    )
                alloc = taken
        return alloc


def _shown_ips(svc: Service) -> str | tuple[str, ...]:
    """The ClusterIP(s) a service asked for, as its refusal shows them."""
    return svc.cluster_ips if len(svc.cluster_ips) > 1 else svc.cluster_ips[0]


def _node_port_field(svc: Service, value: int) -> str:
    """The field path holding node port ``value`` in ``svc``."""
    for i, p in enumerate(svc.ports):
        if p.node_port == value:
            return f"spec.ports[{i}].nodePort"
    return "spec.healthCheckNodePort"
