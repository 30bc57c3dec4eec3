"""Working copies for large steps (private to :mod:`svcnet.state`).

A step that applies many objects at once (a store replayed, a big manifest
applied) would pay a persistent update, a path copy in a pyrsistent map plus an
``attrs.evolve``, for every index entry, allocation and object it touches: about
0.3 ms per object, 20 s for 10,000 services and 50,000 pods. For such a step the
transaction thaws what it will update into mutable copies that offer the same
methods (``set``/``remove``/``discard`` that change the copy in place and return
it; :class:`BulkPool` for :class:`~svcnet.state.allocation.pool.Pool`) and freezes
them back into persistent values once, when the step succeeds. The code of the
step is the same in both modes: only the containers differ, so there is no second
path of validation or allocation. The old state is never touched: thawing copies.

Index sets (the values of the index maps) are kept canonical in both modes: a
``frozenset`` up to :data:`SMALL` members, a ``PSet`` above (so equal states have
equal, equally hashed indexes whatever their history).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar, cast

from pyrsistent import PMap, PSet, pmap, pset

from svcnet.model import ObjectKey
from svcnet.state.allocation.pool import Pool, dynamic_value

__all__ = [
    "SMALL",
    "BulkPool",
    "MMap",
    "MSet",
    "freeze_index",
    "freeze_map",
    "freeze_pool",
    "freeze_pools",
    "freeze_set",
    "index_add",
    "index_remove",
    "thaw_map",
    "thaw_pool",
    "thaw_pools",
]

K = TypeVar("K")
V = TypeVar("V")

SMALL = 32  # index sets up to this size are frozensets, larger ones PSets


class MMap(dict[Any, Any]):
    """A dict with PMap's updating methods, changing it in place."""

    def set(self, key: Any, value: Any) -> MMap:
        self[key] = value
        return self

    def remove(self, key: Any) -> MMap:
        del self[key]
        return self

    def discard(self, key: Any) -> MMap:
        self.pop(key, None)
        return self


class MSet(set[Any]):
    """A set with PSet's updating methods (``add``/``discard`` return it)."""

    def add(self, value: Any) -> MSet:  # type: ignore[override]
        set.add(self, value)
        return self

    def discard(self, value: Any) -> MSet:  # type: ignore[override]
        set.discard(self, value)
        return self


def _pset(items: Iterable[Any]) -> PSet[Any]:
    """A PSet with buckets for its size (``pset()`` gives any size 8 buckets: O(n)
    lookups, and a rebuild on the first add)."""
    values = set(items)
    return pset(values, pre_size=max(8, 2 * len(values)))


def thaw_map(m: PMap[K, V]) -> PMap[K, V]:
    """A mutable copy of ``m`` (typed as the PMap it stands in for)."""
    return cast("PMap[K, V]", MMap(m.items()))


def freeze_map(m: PMap[K, V], value: Any = None) -> PMap[K, V]:
    """``m`` as a PMap (itself when it is one); ``value`` converts each value."""
    if not isinstance(m, MMap):
        return m
    if value is None:
        return pmap(m)
    return pmap({k: value(v) for k, v in m.items()})


def freeze_set(s: PSet[K]) -> PSet[K]:
    """``s`` as a PSet (itself when it is one)."""
    return _pset(s) if isinstance(s, MSet) else s


def _canonical(s: Any) -> Any:
    """An index set in its canonical persistent form (None when empty)."""
    if not s:
        return None
    if len(s) <= SMALL:
        return s if type(s) is frozenset else frozenset(s)
    return s if isinstance(s, PSet) else _pset(s)


def freeze_index(m: PMap[Any, Any]) -> PMap[Any, Any]:
    """An index map (values: sets) as a PMap of canonical sets."""
    if not isinstance(m, MMap):
        return m
    return pmap({k: _canonical(v) for k, v in m.items() if v})


def index_add(m: PMap[Any, Any], key: Any, value: Any) -> PMap[Any, Any]:
    """Add ``value`` to the index set at ``key``."""
    s = m.get(key)
    if isinstance(m, MMap):
        if s is None:
            m[key] = {value}
        elif type(s) is set:
            s.add(value)
        else:
            m[key] = set(s) | {value}
        return m
    if s is None:
        return m.set(key, frozenset((value,)))
    if value in s:
        return m
    if type(s) is frozenset:
        return m.set(key, s | {value} if len(s) < SMALL else _pset((*s, value)))
    return m.set(key, s.add(value))


def index_remove(m: PMap[Any, Any], key: Any, value: Any) -> PMap[Any, Any]:
    """Remove ``value`` from the index set at ``key`` (the key goes with its last one)."""
    s = m.get(key)
    if s is None or value not in s:
        return m
    if isinstance(m, MMap):
        if type(s) is not set:
            s = m[key] = set(s)
        s.discard(value)
        if not s:
            del m[key]
        return m
    if len(s) == 1:
        return m.remove(key)
    if type(s) is frozenset:
        return m.set(key, s - {value})
    s = s.remove(value)
    return m.set(key, frozenset(s) if len(s) <= SMALL else s)


# ------------------------------------------------------------------------------ pools
class BulkPool:
    """A mutable stand-in for a :class:`Pool`: the same methods (``take`` and
    ``release`` change it and return it), owners in a dict, and lowest/highest free
    values found by scanning from a remembered point (every value between a range's
    start and its point is held), which is O(1) amortised for the dense, in-order
    allocation of a large step."""

    def __init__(self, pool: Pool) -> None:
        self.lo, self.hi, self.band, self.family = pool.lo, pool.hi, pool.band, pool.family
        self.depth = pool.depth
        self.owners: dict[int, ObjectKey] = dict(pool.owners.items())
        self._low: dict[int, int] = {}  # range start -> no free value in [start, point)
        self._high: dict[int, int] = {}  # range end -> no free value in (point, end]

    def __contains__(self, value: int) -> bool:
        return self.lo <= value <= self.hi

    def owner(self, value: int) -> ObjectKey | None:
        return self.owners.get(value)

    def take(self, value: int, owner: ObjectKey) -> BulkPool:
        assert value in self and value not in self.owners
        self.owners[value] = owner
        return self

    def release(self, value: int, owner: ObjectKey | None = None) -> BulkPool:
        held = self.owners.get(value)
        if held is None or (owner is not None and held != owner):
            return self
        del self.owners[value]
        for start, point in self._low.items():
            if start <= value < point:
                self._low[start] = value
        for end, point in self._high.items():
            if point < value <= end:
                self._high[end] = value
        return self

    def lowest_free(self, lo: int | None = None, hi: int | None = None) -> int | None:
        a = max(self.lo if lo is None else lo, self.lo)
        b = min(self.hi if hi is None else hi, self.hi)
        if a > b:
            return None
        owners, v = self.owners, self._low.get(a, a)
        while v <= b and v in owners:
            v += 1
        self._low[a] = v
        return v if v <= b else None

    def highest_free(self, lo: int | None = None, hi: int | None = None) -> int | None:
        a = max(self.lo if lo is None else lo, self.lo)
        b = min(self.hi if hi is None else hi, self.hi)
        if a > b:
            return None
        owners, v = self.owners, self._high.get(b, b)
        while v >= a and v in owners:
            v -= 1
        self._high[b] = v
        return v if v >= a else None

    def dynamic(self) -> int | None:
        return dynamic_value(cast(Pool, self))

    @property
    def free_count(self) -> int:
        return self.hi - self.lo + 1 - len(self.owners)


def thaw_pool(pool: Pool) -> Pool:
    """A :class:`BulkPool` copy of ``pool`` (typed as the Pool it stands in for)."""
    return cast(Pool, BulkPool(pool))


def freeze_pool(pool: Pool) -> Pool:
    """``pool`` as a :class:`Pool` (itself when it is one); its tree is built when
    first needed."""
    if not isinstance(pool, BulkPool):
        return pool
    return Pool.from_owners(pool.lo, pool.hi, pool.band, pool.family, pool.depth, pool.owners)


def thaw_pools(pools: Iterable[Pool]) -> tuple[Pool, ...]:
    return tuple(thaw_pool(p) for p in pools)


def freeze_pools(pools: Iterable[Pool]) -> tuple[Pool, ...]:
    return tuple(freeze_pool(p) for p in pools)
