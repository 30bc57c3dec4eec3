"""Allocation of pod IPs from each node's podCIDR(s): lowest free first (see
:func:`~svcnet.state.allocation.pool.pod_ip_pool` for the addresses left out).

A pod that carries its IPs pins them; one that needs IPs on a node without a
podCIDR, or whose podCIDR is full, waits for that node, and waiting pods are
served in arrival order when addresses are freed or the node gets (new)
podCIDRs. A pod keeps its allocated IPs while it stays on its node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import attrs
from pyrsistent import PMap, pmap

from svcnet.model import IPFamily, Node, ObjectKey, Pod
from svcnet.state.allocation.pool import (
    Pool,
    ip_int,
    ip_str,
    pod_ip_pool,
    pool_family,
    release_all,
)

__all__ = ["PodAllocations"]


_POD_SLOTS = tuple(a.name for a in attrs.fields(Pod))
_setattr = object.__setattr__


def _with_ips(pod: Pod, ips: tuple[str, ...]) -> Pod:
    """``attrs.evolve(pod, pod_ips=ips, pod_ips_allocated=True)``, field by field:
    both fields are plain (no converter, no validator), and evolve's generic
    re-initialisation of all the others was a third of a large step's time."""
    new = object.__new__(Pod)
    for name in _POD_SLOTS:
        _setattr(new, name, getattr(pod, name))
    _setattr(new, "pod_ips", ips)
    _setattr(new, "pod_ips_allocated", True)
    return new


def _bare(pod: Pod) -> Pod:
    """``pod`` without IPs (waiting for some)."""
    return attrs.evolve(pod, pod_ips=(), pod_ips_allocated=False)


@attrs.frozen
class PodAllocations:
    """Every pod IP allocated in a cluster, and the pods waiting for one."""

    pod_pools: PMap[str, tuple[Pool, ...]] = attrs.field(factory=pmap)  # per node
    pod_waiting: PMap[str, PMap[ObjectKey, int]] = attrs.field(factory=pmap)  # per node
    seq: int = 0  # the next arrival number

    def _pod_wait(self, node: str, key: ObjectKey) -> PodAllocations:
        waiting = self.pod_waiting.get(node, pmap())
        if key in waiting:
            return self
        return attrs.evolve(
            self,
            pod_waiting=self.pod_waiting.set(node, waiting.set(key, self.seq)),
            seq=self.seq + 1,
        )

    def _pod_unwait(self, node: str, key: ObjectKey) -> PodAllocations:
        waiting = self.pod_waiting.get(node)
        if waiting is None or key not in waiting:
            return self
        waiting = waiting.remove(key)
        pw = self.pod_waiting.set(node, waiting) if waiting else self.pod_waiting.remove(node)
        return attrs.evolve(self, pod_waiting=pw)

    def pods_waiting(self, node: str) -> int:
        return len(self.pod_waiting.get(node, ()))

    def _pin_pod_ips(self, pod: Pod) -> PodAllocations:
        pools = self.pod_pools.get(pod.node_name)
        if pools is None or not pod.pod_ips:
            return self
        new = list(pools)
        for ip in pod.pod_ips:
            value = ip_int(ip)
            for i, pool in enumerate(new):
                if value in pool and pool.owner(value) is None and pool_family(pool, ip):
                    new[i] = pool.take(value, pod.key)
        by_node = self.pod_pools.set(pod.node_name, tuple(new))
        return PodAllocations(by_node, self.pod_waiting, self.seq)

    def release_pod(self, pod: Pod) -> PodAllocations:
        alloc = self._pod_unwait(pod.node_name, pod.key)
        pools = alloc.pod_pools.get(pod.node_name)
        if pools is None or not pod.pod_ips:
            return alloc
        new = tuple(release_all(p, pod.pod_ips, pod.key) for p in pools)
        return attrs.evolve(alloc, pod_pools=alloc.pod_pools.set(pod.node_name, new))

    def assign_pod(self, old: Pod | None, new: Pod) -> tuple[PodAllocations, Pod]:
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

    def _pod_take(self, pod: Pod) -> tuple[PodAllocations, Pod]:
        node, key = pod.node_name, pod.key
        pools = self.pod_pools.get(node)
        if not pools:
            return self._pod_wait(node, key), _bare(pod)
        new, ips = list(pools), []
        for i, pool in enumerate(pools):
            value = pool.lowest_free()
            if value is None:
                return self._pod_wait(node, key), _bare(pod)
            new[i] = pool.take(value, key)
            ips.append(ip_str(value, pool.family or IPFamily.IPv4))
        alloc = PodAllocations(self.pod_pools.set(node, tuple(new)), self.pod_waiting, self.seq)
        if node in alloc.pod_waiting:
            alloc = alloc._pod_unwait(node, key)
        return alloc, _with_ips(pod, tuple(ips))

    def serve_pod_waiting(
        self, node: str, lookup: Callable[[ObjectKey], Pod]
    ) -> tuple[PodAllocations, list[Pod]]:
        alloc, served = self, []
        for key, _ in sorted(self.pod_waiting.get(node, pmap()).items(), key=lambda kv: kv[1]):
            alloc, pod = alloc._pod_take(lookup(key))
            if pod.pod_ips:
                served.append(pod)
        return alloc, served

    def set_node(
        self, old: Node | None, node: Node, pods: Sequence[Pod]
    ) -> tuple[PodAllocations, list[Pod]]:
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
                any(ip_int(ip) in p and pool_family(p, ip) for p in pools) for ip in pod.pod_ips
            ):
                pod = attrs.evolve(pod, pod_ips=(), pod_ips_allocated=False)
                current[key] = changed[key] = pod
                alloc = alloc._pod_wait(node.name, key)
            alloc = alloc._pin_pod_ips(pod)
        alloc, served = alloc.serve_pod_waiting(node.name, current.__getitem__)
        changed.update((p.key, p) for p in served)
        return alloc, list(changed.values())

    def remove_node(self, name: str, pods: Iterable[Pod]) -> tuple[PodAllocations, list[Pod]]:
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
