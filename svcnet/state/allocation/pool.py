"""The allocators' building block: :class:`Pool`, and the pools of each kind.

A pool is a range of integers (addresses as ints, or ports) with a persistent
"used" tree (a sparse binary tree of used counts, path-copied on change) and a
persistent owner map. Taking, releasing and finding the lowest or highest free
value in a sub-range are O(log range) whatever the number of values held;
nothing scans the used values. The owner of each value is the
:class:`~svcnet.model.ObjectKey` holding it, so a conflict can name it.

The constructors fix what each kind of pool holds:

* :func:`cluster_ip_pool`: a service CIDR without its network address (nor the
  broadcast address in IPv4), with a lower "static" band of
  ``min(max(16, size/16), 256)`` addresses (see :meth:`Pool.dynamic`);
* :func:`node_port_pool`: a port range, static band ``min(max(16, size/32), 128)``;
* :func:`lb_pool`: every address of a LoadBalancer pool range (a /28 gives 16);
* :func:`pod_ip_pool`: a podCIDR without the network address, the first host
  address (conventionally the node's gateway, the bridge address a CNI plugin
  puts on the node) and, in IPv4, broadcast.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Iterable
from typing import Any

import attrs
from pyrsistent import PMap, pmap

from svcnet.model import IPFamily, IPNetwork, ObjectKey, ip_family

__all__ = [
    "Pool",
    "cluster_ip_pool",
    "dynamic_value",
    "family_of",
    "ip_int",
    "ip_str",
    "lb_pool",
    "node_port_pool",
    "pod_ip_pool",
    "pool_family",
    "release_all",
]

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


def _build(values: list[int], lo: int, hi: int, depth: int) -> _Tree:
    """The tree of the sorted offsets ``values[lo:hi]``, all in [0, 2**depth)."""
    if lo >= hi:
        return None
    if depth == 0:
        return _USED_LEAF
    half = 1 << (depth - 1)
    mid = bisect.bisect_left(values, half, lo, hi)
    left = _build(values, lo, mid, depth - 1)
    if mid < hi:
        for i in range(mid, hi):
            values[i] -= half
    right = _build(values, mid, hi, depth - 1)
    return (hi - lo, left, right)


_UNBUILT: Any = ("unbuilt",)  # a Pool's tree not yet built from its owners


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
    def from_owners(
        cls,
        lo: int,
        hi: int,
        band: int,
        family: IPFamily | None,
        depth: int,
        owners: dict[int, ObjectKey],
    ) -> Pool:
        """A pool holding ``owners``; its tree is built on first use (a large step
        builds many pools that are never used again before the next one)."""
        return cls(lo, hi, band, family, depth, _UNBUILT, pmap(owners))

    def _tree(self) -> _Tree:
        tree = self.tree
        if tree is _UNBUILT:
            values = sorted(v - self.lo for v in self.owners)
            tree = _build(values, 0, len(values), self.depth)
            object.__setattr__(self, "tree", tree)
        return tree

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
        tree = _set(self._tree(), self.depth, value - self.lo, True)
        return attrs.evolve(self, tree=tree, owners=self.owners.set(value, owner))

    def release(self, value: int, owner: ObjectKey | None = None) -> Pool:
        """Free ``value`` (only if ``owner`` holds it, when given)."""
        held = self.owners.get(value)
        if held is None or (owner is not None and held != owner):
            return self
        tree = _set(self._tree(), self.depth, value - self.lo, False)
        return attrs.evolve(self, tree=tree, owners=self.owners.remove(value))

    def lowest_free(self, lo: int | None = None, hi: int | None = None) -> int | None:
        a, b = (
            max(self.lo if lo is None else lo, self.lo),
            min(self.hi if hi is None else hi, self.hi),
        )
        if a > b:
            return None
        found = _lowest(self._tree(), self.depth, a - self.lo, b - self.lo)
        return None if found is None else found + self.lo

    def highest_free(self, lo: int | None = None, hi: int | None = None) -> int | None:
        a, b = (
            max(self.lo if lo is None else lo, self.lo),
            min(self.hi if hi is None else hi, self.hi),
        )
        if a > b:
            return None
        found = _highest(self._tree(), self.depth, a - self.lo, b - self.lo)
        return None if found is None else found + self.lo

    def dynamic(self) -> int | None:
        return dynamic_value(self)

    @property
    def free_count(self) -> int:
        return self.hi - self.lo + 1 - len(self.owners)


def dynamic_value(pool: Pool) -> int | None:
    """The next value ``pool`` hands out: upper band first (lowest free), then the
    lower band (highest free)."""
    split = pool.lo + pool.band
    found = pool.lowest_free(split, pool.hi)
    if found is None and pool.band:
        found = pool.highest_free(pool.lo, split - 1)
    return found


def _band(size: int, divisor: int, cap: int) -> int:
    band = min(max(16, size // divisor), cap)
    return band if band < size else 0


_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# exactly the dotted quads ipaddress accepts (no leading zeros, ASCII digits)
_DOTTED_QUAD = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}", re.ASCII)


def ip_int(address: str) -> int:
    quad = _DOTTED_QUAD.fullmatch(address)
    if quad is not None:  # 2x faster than ipaddress's parser, which a replay calls 60,000 times
        a, b, c, d = quad.groups()
        return (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)
    return int(ipaddress.ip_address(address))


def family_of(address: str) -> IPFamily:
    """:meth:`IPFamily.of` (which validates), faster for IPv4."""
    if _DOTTED_QUAD.fullmatch(address) is not None:
        return IPFamily.IPv4
    return IPFamily.of(address)


def ip_str(value: int, family: IPFamily) -> str:
    if family is IPFamily.IPv4:
        if 0 <= value <= 0xFFFFFFFF:  # what IPv4Address prints, 4x faster
            return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"
        return str(ipaddress.IPv4Address(value))
    return str(ipaddress.IPv6Address(value))


def _net(cidr: str) -> IPNetwork:
    return ipaddress.ip_network(cidr, strict=False)


def _net_family(net: IPNetwork) -> IPFamily:
    return IPFamily.IPv4 if net.version == 4 else IPFamily.IPv6


def cluster_ip_pool(cidr: str) -> Pool:
    net = _net(cidr)
    first = int(net.network_address) + 1
    last = int(net.broadcast_address) - (1 if net.version == 4 else 0)
    return Pool.create(first, last, _band(last - first + 1, 16, 256), _net_family(net))


def node_port_pool(lo: int, hi: int) -> Pool:
    return Pool.create(lo, hi, _band(hi - lo + 1, 32, 128))


def lb_pool(cidr: str) -> Pool:
    net = _net(cidr)
    return Pool.create(
        int(net.network_address), int(net.broadcast_address), family=_net_family(net)
    )


def pod_ip_pool(cidr: str) -> Pool:
    net = _net(cidr)
    return Pool.create(
        int(net.network_address) + 2,
        int(net.broadcast_address) - (1 if net.version == 4 else 0),
        family=_net_family(net),
    )


def pool_family(pool: Pool, ip: str) -> bool:
    """Is ``ip`` of the pool's family?"""
    return pool.family is ip_family(ip)


def release_all(pool: Pool, ips: Iterable[str], owner: ObjectKey) -> Pool:
    """``pool`` without those of ``ips`` (of its family) that ``owner`` holds."""
    for ip in ips:
        if pool_family(pool, ip):
            pool = pool.release(ip_int(ip), owner)
    return pool
