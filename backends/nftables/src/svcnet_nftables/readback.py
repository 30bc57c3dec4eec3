"""``nft -j list table`` JSON -> :class:`Ruleset` (pure).

Set and map elements are normalised into Python values so the interpreter can
compare them with packet fields: addresses become :mod:`ipaddress` objects,
prefixes networks, ranges :class:`Range`, concatenations tuples, protocol
names lower-case strings, verdicts tuples such as ``("goto", "reject")``.
Rules keep their JSON expressions as read.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from typing import Any, Final, Protocol

import attrs

from svcnet.errors import SvcnetError

PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp"}
VERDICTS = ("accept", "drop", "continue", "return", "jump", "goto")


class ReadbackError(SvcnetError, ValueError):
    """The JSON does not look like an nft listing."""


@attrs.frozen(order=True)
class Range:
    low: Any
    high: Any

    def __contains__(self, value: object) -> bool:
        try:
            return bool(self.low <= value <= self.high)
        except TypeError:
            return False


MISS: Final = object()  # a lookup found nothing


@attrs.frozen(slots=False)
class SetDump:
    """One set or map as listed. Elements stay raw JSON until asked for:
    :attr:`elements` normalises all of them; :meth:`lookup` of an exact-match set
    indexes the raw keys once and normalises only the data it returns."""

    name: str
    is_map: bool
    type: tuple[str, ...]
    data_type: str | None
    flags: frozenset[str]
    timeout: int | None
    raw: tuple[Any, ...] = attrs.field(default=(), eq=False, repr=False)
    # the elements already normalised (the netlink reader decodes both at once)
    normalised: tuple[tuple[Any, Any], ...] | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def dynamic(self) -> bool:
        """Filled from the packet path (affinity); its elements are learned state."""
        return "timeout" in self.flags or "dynamic" in self.flags

    @functools.cached_property
    def elements(self) -> tuple[tuple[Any, Any], ...]:
        """Every element as (key, data or None), normalised (see the module doc)."""
        if self.normalised is not None:
            return self.normalised
        return elements(self.raw, self.is_map, self.type)

    @functools.cached_property
    def _index(self) -> dict[Any, Any] | None:
        if "interval" in self.flags:
            return None
        protos = tuple(t == "inet_proto" for t in self.type)
        index: dict[Any, Any] = {}
        for e in self.raw:
            if self.is_map:
                if not (isinstance(e, list) and len(e) == 2):
                    raise ReadbackError(f"unexpected map element {e!r}")
                index[_raw_key(e[0], protos)] = e[1]
            else:
                index[_raw_key(e, protos)] = None
        return index

    def lookup(self, value: Any) -> Any:
        """The data of the element matching ``value`` (a packet value: addresses as
        :mod:`ipaddress` objects, tuples for concatenations), None for a plain set's
        element, :data:`MISS` when there is none."""
        index = self._index
        if index is None:
            for key, data in self.elements:
                if matches(value, key):
                    return data
            return MISS
        found = index.get(_probe_key(value), MISS)
        if found is MISS or found is None:
            return found
        return atom(found)


def _raw_key(value: Any, protos: tuple[bool, ...], pos: int = 0) -> Any:
    """A raw JSON element key -> the hashable form :func:`_probe_key` gives packet values."""
    if isinstance(value, dict):
        if "concat" in value:
            return tuple(_raw_key(v, protos, i) for i, v in enumerate(value["concat"]))
        if "elem" in value:
            return _raw_key(value["elem"]["val"], protos, pos)
        raise ReadbackError(f"unexpected element key {value!r}")
    if isinstance(value, str):
        if ":" in value:
            try:
                return str(ipaddress.ip_address(value))
            except ValueError:
                return value.lower()
        return value.lower()
    if isinstance(value, int) and pos < len(protos) and protos[pos]:
        return PROTOCOLS.get(value, value)
    return value


def _probe_key(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_probe_key(v) for v in value)
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    return value


_PROTO_NUMBERS = {v: k for k, v in PROTOCOLS.items()}


def matches(a: Any, b: Any) -> bool:
    """Does packet value ``a`` match normalised element key ``b`` (prefixes, ranges)?"""
    if isinstance(b, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return (
            isinstance(a, ipaddress.IPv4Address | ipaddress.IPv6Address)
            and a.version == b.version
            and a in b
        )
    if isinstance(b, Range):
        return a in b
    if isinstance(a, str) and isinstance(b, int):
        return _PROTO_NUMBERS.get(a) == b
    if isinstance(a, int) and isinstance(b, str):
        return _PROTO_NUMBERS.get(b) == a
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(matches(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@attrs.frozen
class RuleDump:
    chain: str
    handle: int
    exprs: tuple[Any, ...]
    comment: str | None = None


@attrs.frozen
class ChainDump:
    name: str
    type: str | None = None
    hook: str | None = None
    prio: int | None = None
    policy: str | None = None
    rules: tuple[RuleDump, ...] = ()


@attrs.frozen
class TableDump:
    family: str
    name: str
    chains: dict[str, ChainDump]
    sets: dict[str, SetDump]

    def base_chains(self, hook: str) -> list[ChainDump]:
        found = [c for c in self.chains.values() if c.hook == hook]
        return sorted(found, key=lambda c: c.prio or 0)

    def chain(self, name: str) -> ChainDump | None:
        return self.chains.get(name)

    def set(self, name: str) -> SetDump | None:
        return self.sets.get(name)


class SetView(Protocol):
    """What the interpreter asks of a set (:class:`SetDump`, or a set read on demand)."""

    @property
    def name(self) -> str: ...

    @property
    def timeout(self) -> int | None: ...

    @property
    def dynamic(self) -> bool: ...

    def lookup(self, value: Any) -> Any: ...


class Table(Protocol):
    """What the interpreter asks of a table (:class:`TableDump`, or one read on demand)."""

    def chain(self, name: str) -> ChainDump | None: ...

    def set(self, name: str) -> SetView | None: ...

    def base_chains(self, hook: str) -> list[ChainDump]: ...


@attrs.frozen
class Ruleset:
    tables: dict[str, TableDump]  # by nft family ("ip", "ip6")

    @property
    def empty(self) -> bool:
        return not self.tables


def atom(value: Any) -> Any:
    """One element atom or literal -> a comparable Python value."""
    if isinstance(value, bool):
        raise ReadbackError(f"unexpected boolean {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return ipaddress.ip_address(value)
        except ValueError:
            return value.lower()
    if isinstance(value, list):
        return tuple(atom(v) for v in value)
    if isinstance(value, dict):
        if "concat" in value:
            return tuple(atom(v) for v in value["concat"])
        if "prefix" in value:
            p = value["prefix"]
            return ipaddress.ip_network(f"{p['addr']}/{p['len']}", strict=False)
        if "range" in value:
            lo, hi = value["range"]
            return Range(atom(lo), atom(hi))
        if "elem" in value:
            return atom(value["elem"]["val"])
        verdict = [k for k in value if k in VERDICTS]
        if len(verdict) == 1:
            body = value[verdict[0]]
            return (verdict[0], body["target"]) if isinstance(body, dict) else (verdict[0],)
    raise ReadbackError(f"unexpected element value {value!r}")


def _types(t: Any) -> tuple[str, ...]:
    if t is None:
        return ()
    return tuple(t) if isinstance(t, list) else tuple(s.strip() for s in str(t).split("."))


def _fix_proto(key: Any, types: tuple[str, ...]) -> Any:
    if "inet_proto" not in types:
        return key
    if len(types) == 1:
        return PROTOCOLS.get(key, key) if isinstance(key, int) else key
    if isinstance(key, tuple):
        return tuple(
            PROTOCOLS.get(k, k) if t == "inet_proto" and isinstance(k, int) else k
            for k, t in zip(key, types, strict=False)
        )
    return key


def elements(
    raw: Iterable[Any], is_map: bool, types: tuple[str, ...]
) -> tuple[tuple[Any, Any], ...]:
    out: list[tuple[Any, Any]] = []
    for e in raw:
        if is_map:
            if isinstance(e, list) and len(e) == 2:
                k, d = e
            else:
                raise ReadbackError(f"unexpected map element {e!r}")
            out.append((_fix_proto(atom(k), types), atom(d)))
        else:
            out.append((_fix_proto(atom(e), types), None))
    return tuple(out)


def parse(listing: Any) -> Ruleset:
    """Parse one or more ``nft -j list table`` outputs (dicts or lists of them)."""
    docs = listing if isinstance(listing, list) else [listing]
    tables: dict[tuple[str, str], dict[str, Any]] = {}
    for doc in docs:
        if not isinstance(doc, dict) or "nftables" not in doc:
            raise ReadbackError("not an nft JSON listing (no 'nftables' key)")
        for obj in doc["nftables"]:
            if "table" in obj:
                t = obj["table"]
                tables.setdefault((t["family"], t["name"]), {"chains": {}, "sets": {}, "rules": []})
            elif "chain" in obj:
                c = obj["chain"]
                tbl = tables.setdefault(
                    (c["family"], c["table"]), {"chains": {}, "sets": {}, "rules": []}
                )
                tbl["chains"][c["name"]] = c
            elif "set" in obj or "map" in obj:
                is_map = "map" in obj
                s = obj["map" if is_map else "set"]
                tbl = tables.setdefault(
                    (s["family"], s["table"]), {"chains": {}, "sets": {}, "rules": []}
                )
                types = _types(s.get("type"))
                tbl["sets"][s["name"]] = SetDump(
                    name=s["name"],
                    is_map=is_map,
                    type=types,
                    data_type=s.get("map") if isinstance(s.get("map"), str) else None,
                    flags=frozenset(s.get("flags", ())),
                    timeout=s.get("timeout"),
                    raw=tuple(s.get("elem", ())),
                )
            elif "rule" in obj:
                r = obj["rule"]
                tbl = tables.setdefault(
                    (r["family"], r["table"]), {"chains": {}, "sets": {}, "rules": []}
                )
                tbl["rules"].append(r)
    out: dict[str, TableDump] = {}
    for (family, name), tbl in tables.items():
        rules: dict[str, list[RuleDump]] = {}
        for r in tbl["rules"]:
            rules.setdefault(r["chain"], []).append(
                RuleDump(r["chain"], int(r.get("handle", 0)), tuple(r["expr"]), r.get("comment"))
            )
        chains = {
            n: ChainDump(
                name=n,
                type=c.get("type"),
                hook=c.get("hook"),
                prio=c.get("prio"),
                policy=c.get("policy"),
                rules=tuple(rules.get(n, ())),
            )
            for n, c in tbl["chains"].items()
        }
        for n in rules:
            if n not in chains:
                raise ReadbackError(f"rules for an unknown chain {family} {name} {n}")
        out[family] = TableDump(family, name, chains, tbl["sets"])
    return Ruleset(out)
