"""nf_tables netlink replies -> :class:`~svcnet_nftables.readback.Ruleset` (pure).

:class:`svcnet_nftables.libnft.Netlink` sends the requests and hands back each reply's
raw attributes; this module decodes them. Set and map elements decode to the raw JSON
shapes libnftables prints, so :class:`~svcnet_nftables.readback.SetDump` and
:mod:`.observed` read both alike; rules decode to JSON statements that
:mod:`.interpret` and :mod:`.observed` read as they read libnftables' listing
(register loads are tracked symbolically). Two differences from libnftables' text, both
the same matches: a ``meta l4proto`` match stays explicit (libnftables folds it into a
following ``tcp dport``), and transport ports are ``th`` payloads.

Two ways to read: :func:`read_table` decodes a whole table (``observe()``);
:class:`LazyTable` fetches only what an evaluation asks for — the base chains, the
rules of each chain the walk reaches, the definition of each set it names, and for an
exact-match set the one element of the packet's key (a netlink GET); an interval set is
dumped whole (they hold CIDRs and source ranges, a few elements).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import attrs

from svcnet_nftables.nlrules import (
    HOST_ORDER,
    be32,
    comment_of,
    cstr,
    nl_attrs,
    nl_list,
    ntop,
    rule_dump,
    set_names,
    verdict_json,
)
from svcnet_nftables.readback import (
    MISS,
    PROTOCOLS,
    ChainDump,
    ReadbackError,
    RuleDump,
    SetDump,
    TableDump,
    atom,
)

#
# Set and map elements decode to the raw JSON shapes libnftables prints (so SetDump and
# observed.py read both alike); rules decode to JSON statements the interpreter and
# observed.py read as they read libnftables' listing. Register loads are tracked
# symbolically; a ``meta l4proto`` match stays explicit (libnftables folds it into a
# following ``tcp dport``) and transport ports are ``th`` payloads: the same matches.

_TYPE_NAMES = {
    1: "verdict", 4: "integer", 5: "string", 7: "ipv4_addr", 8: "ipv6_addr",
    9: "ether_addr", 12: "inet_proto", 13: "inet_service", 19: "mark",
}  # fmt: skip
_TYPE_SIZES = {7: 4, 8: 16, 9: 6, 12: 1, 13: 2, 19: 4}
_NFT_DATA_VERDICT = 0xFFFFFF00
_SET_FLAGS = (
    (1, "anonymous"),
    (2, "constant"),
    (4, "interval"),
    (0x10, "timeout"),
    (0x20, "dynamic"),
)
_HOOKS = ("prerouting", "input", "forward", "output", "postrouting")
_PROTO_BY_NAME = {v: k for k, v in PROTOCOLS.items()}


@attrs.frozen
class SetInfo:
    """One set's definition as the kernel reports it (NFT_MSG_NEWSET attributes)."""

    name: str
    flags: int
    key_types: tuple[int, ...]
    key_lens: tuple[int, ...]  # each field's length in bytes (4-byte aligned in keys)
    key_len: int
    data_types: tuple[int, ...] | None  # None: a plain set; (1,) a verdict map
    data_len: int
    timeout_ms: int | None

    @property
    def anonymous(self) -> bool:
        return bool(self.flags & 1)

    def dump(self, raw: tuple[Any, ...] = (), normalised: tuple[Any, ...] | None = None) -> SetDump:
        names = tuple(_TYPE_NAMES.get(t, f"type-{t}") for t in self.key_types)
        data = None
        if self.data_types is not None:
            data = " . ".join(_TYPE_NAMES.get(t, f"type-{t}") for t in self.data_types)
        return SetDump(
            name=self.name,
            is_map=self.data_types is not None,
            type=names,
            data_type=data,
            flags=frozenset(n for bit, n in _SET_FLAGS if self.flags & bit and n != "anonymous"),
            timeout=None if self.timeout_ms is None else self.timeout_ms // 1000,
            raw=raw,
            normalised=normalised,
        )


def _split_types(value: int) -> tuple[int, ...]:
    if value == _NFT_DATA_VERDICT:
        return (1,)
    out = []
    while value:
        out.append(value & 0x3F)
        value >>= 6
    return tuple(reversed(out)) or (0,)


def _field_lens(types: tuple[int, ...], total: int, given: tuple[int, ...]) -> tuple[int, ...]:
    if given and len(given) == len(types):
        return given
    sizes = [_TYPE_SIZES.get(t) for t in types]
    known = sum(((s or 0) + 3) & ~3 for s in sizes)
    rest = total - known
    return tuple(s if s is not None else max(rest, 0) for s in sizes)


def set_info(data: bytes) -> SetInfo:
    """A NFT_MSG_NEWSET reply -> :class:`SetInfo`."""
    a = nl_attrs(data)
    key_types = _split_types(be32(a[4])) if 4 in a else (0,)
    key_len = be32(a[5]) if 5 in a else 0
    given: tuple[int, ...] = ()
    if 9 in a:
        desc = nl_attrs(a[9])
        if 2 in desc:
            given = tuple(be32(nl_attrs(f).get(1, b"\0\0\0\0")) for f in nl_list(desc[2]))
    flags = be32(a[3]) if 3 in a else 0
    data_types = _split_types(be32(a[6])) if 6 in a and flags & 8 else None
    data_len = be32(a[7]) if 7 in a else 0
    return SetInfo(
        name=cstr(a[2]),
        flags=flags,
        key_types=key_types,
        key_lens=_field_lens(key_types, key_len, given),
        key_len=key_len,
        data_types=data_types,
        data_len=data_len,
        timeout_ms=int(struct.unpack(">Q", a[11])[0]) if 11 in a else None,
    )


def _scalar(t: int, b: bytes) -> Any:
    """One field's bytes -> the JSON atom libnftables prints for type ``t``."""
    if t == 7 and len(b) == 4:
        return ntop(b)
    if t == 8 and len(b) == 16:
        return ntop(b)
    if t == 12 and len(b) == 1:
        return PROTOCOLS.get(b[0], b[0])
    if t == 13 and len(b) == 2:
        return (b[0] << 8) | b[1]
    if t in (4, 19) and len(b) == 4:
        return int.from_bytes(b, HOST_ORDER)
    return int.from_bytes(b, "big")


def _fields(types: tuple[int, ...], lens: tuple[int, ...], b: bytes) -> list[Any]:
    out, off = [], 0
    for t, n in zip(types, lens, strict=True):
        out.append(_scalar(t, b[off : off + n]))
        off += (n + 3) & ~3
    return out


def _span(t: int, lo: bytes, hi: bytes) -> Any:
    """A field's interval [lo, hi] as libnftables prints it: value, prefix or range."""
    if lo == hi:
        return _scalar(t, lo)
    a, z = int.from_bytes(lo, "big"), int.from_bytes(hi, "big")
    bits = len(lo) * 8
    host = (a ^ z).bit_length()
    if t in (7, 8) and a & ((1 << host) - 1) == 0 and (a | ((1 << host) - 1)) == z:
        return {"prefix": {"addr": _scalar(t, lo), "len": bits - host}}
    return {"range": [_scalar(t, lo), _scalar(t, hi)]}


def _key(info: SetInfo, b: bytes, end: bytes | None = None) -> Any:
    if end is None or end == b:
        vals = _fields(info.key_types, info.key_lens, b)
    else:
        vals, off = [], 0
        for t, n in zip(info.key_types, info.key_lens, strict=True):
            vals.append(_span(t, b[off : off + n], end[off : off + n]))
            off += (n + 3) & ~3
    return vals[0] if len(vals) == 1 else {"concat": vals}


def _data_json(info: SetInfo, b: bytes) -> Any:
    d = nl_attrs(b)
    if 2 in d:
        return verdict_json(d[2])
    types = info.data_types or (0,)
    lens = _field_lens(types, info.data_len, ())
    vals = _fields(types, lens, d.get(1, b""))
    return vals[0] if len(vals) == 1 else {"concat": vals}


def _wrap(val: Any, comment: str | None) -> Any:
    return {"elem": {"val": val, "comment": comment}} if comment is not None else val


def set_elements(info: SetInfo, replies: Iterable[bytes]) -> tuple[Any, ...]:
    """NFT_MSG_NEWSETELEM replies of one set -> its elements as libnftables' JSON."""
    items: list[tuple[bytes, bool, dict[int, bytes]]] = []
    for reply in replies:
        top = nl_attrs(reply)
        for raw in nl_list(top.get(3, b"")):
            e = nl_attrs(raw)
            key = nl_attrs(e.get(1, b"")).get(1, b"")
            end = bool(be32(e[3]) & 1) if 3 in e else False
            items.append((key, end, e))
    out: list[Any] = []
    interval = bool(info.flags & 4) and len(info.key_types) == 1
    if interval:  # rbtree: start elements and INTERVAL_END elements (key = end + 1)
        items.sort(key=lambda i: (i[0], not i[1]))
        top_key = b"\xff" * info.key_lens[0]
        for n, (key, end, e) in enumerate(items):
            if end:
                continue
            nxt = items[n + 1][0] if n + 1 < len(items) else None
            hi = (
                top_key
                if nxt is None
                else (int.from_bytes(nxt, "big") - 1).to_bytes(len(key), "big")
            )
            val = _span(info.key_types[0], key, hi)
            out.append(_elem(info, val, e))
        return tuple(out)
    if info.anonymous:  # libnftables prints them in key order
        items.sort(key=lambda i: i[0])
    for key, _end, e in items:
        kend = nl_attrs(e[10]).get(1) if 10 in e else None  # NFTA_SET_ELEM_KEY_END
        out.append(_elem(info, _key(info, key, kend), e))
    return tuple(out)


_IPV4, _IPV6 = ipaddress.IPv4Address, ipaddress.IPv6Address


def _field_reader(t: int, n: int) -> Callable[[bytes, int], tuple[Any, Any]] | None:
    """(raw JSON atom, normalised value) of one key or data field at an offset."""
    if t == 7 and n == 4:
        return lambda b, o: (ntop(b[o : o + 4]), _IPV4(b[o : o + 4]))
    if t == 8 and n == 16:
        return lambda b, o: (
            ntop(b[o : o + 16]),
            _IPV6(b[o : o + 16]),
        )
    if t == 12 and n == 1:
        return lambda b, o: (PROTOCOLS.get(b[o], b[o]),) * 2
    if t == 13 and n == 2:
        return lambda b, o: ((b[o] << 8) | b[o + 1],) * 2
    if t in (4, 19) and n == 4:
        return lambda b, o: (int.from_bytes(b[o : o + 4], HOST_ORDER),) * 2
    return None


def _reader(
    types: tuple[int, ...], lens: tuple[int, ...]
) -> Callable[[bytes], tuple[Any, Any]] | None:
    """A decoder of a whole key or data value: (raw JSON, normalised)."""
    parts = []
    off = 0
    for t, n in zip(types, lens, strict=True):
        fn = _field_reader(t, n)
        if fn is None:
            return None
        parts.append((fn, off))
        off += (n + 3) & ~3
    if len(parts) == 1:
        ((fn, o),) = parts
        return lambda b: fn(b, o)

    def concat(b: bytes) -> tuple[Any, Any]:
        got = [fn(b, o) for fn, o in parts]
        return {"concat": [g[0] for g in got]}, tuple(g[1] for g in got)

    return concat


def fast_elements(
    info: SetInfo, replies: Iterable[bytes]
) -> tuple[tuple[Any, ...], tuple[Any, ...]] | None:
    """The elements of an exact-match set both as libnftables' JSON and normalised
    (:attr:`SetDump.elements`), in one pass; None when this set needs the general
    :func:`set_elements` (intervals, a type it does not know)."""
    if info.flags & 5:
        return None
    key_of = _reader(info.key_types, info.key_lens)
    data_of = None
    verdicts = info.data_types == (1,)
    if info.data_types is not None and not verdicts:
        data_of = _reader(info.data_types, _field_lens(info.data_types, info.data_len, ()))
        if data_of is None:
            return None
    if key_of is None:
        return None
    is_map = info.data_types is not None
    raws: list[Any] = []
    norms: list[Any] = []
    unpack = struct.unpack_from
    for reply in replies:
        top = nl_attrs(reply)
        for raw in nl_list(top.get(3, b"")):
            key = data = comment = None
            off, end = 0, len(raw)
            while off + 4 <= end:
                alen, atype = unpack("=HH", raw, off)
                atype &= 0x3FFF
                if atype == 1:  # KEY { VALUE }
                    key = raw[off + 8 : off + alen]
                elif atype == 2:  # DATA { VALUE | VERDICT }
                    data = raw[off + 4 : off + alen]
                elif atype == 6:
                    comment = comment_of(raw[off + 4 : off + alen])
                off += (alen + 3) & ~3
            if key is None:
                raise ReadbackError(f"an element of {info.name} without a key")
            kraw, knorm = key_of(key)
            if comment is not None:
                kraw = {"elem": {"val": kraw, "comment": comment}}
            if not is_map:
                raws.append(kraw)
                norms.append((knorm, None))
                continue
            if data is None:
                raise ReadbackError(f"an element of map {info.name} without data")
            if verdicts:
                draw = _data_json(info, data)
                dnorm = atom(draw)
            else:
                assert data_of is not None
                draw, dnorm = data_of(data[4:])
            raws.append([kraw, draw])
            norms.append((knorm, dnorm))
    return tuple(raws), tuple(norms)


def _elem(info: SetInfo, val: Any, e: dict[int, bytes]) -> Any:
    val = _wrap(val, comment_of(e.get(6)))
    if info.data_types is not None and 2 in e:
        return [val, _data_json(info, e[2])]
    return val


def chain_dump(data: bytes, rules: tuple[RuleDump, ...] = ()) -> ChainDump:
    """A NFT_MSG_NEWCHAIN reply -> :class:`ChainDump` (with ``rules``)."""
    a = nl_attrs(data)
    hook = prio = policy = None
    if 4 in a:
        h = nl_attrs(a[4])
        num = be32(h[1]) if 1 in h else -1
        hook = _HOOKS[num] if 0 <= num < len(_HOOKS) else f"hook-{num}"
        prio = int(struct.unpack(">i", h[2][:4])[0]) if 2 in h else 0
        policy = "accept" if 5 not in a or be32(a[5]) == 1 else "drop"
    return ChainDump(
        name=cstr(a[3]),
        type=cstr(a[7]) if 7 in a else None,
        hook=hook,
        prio=prio,
        policy=policy,
        rules=rules,
    )


def chain_name(data: bytes) -> str:
    return cstr(nl_attrs(data)[3])


# -- whole tables and lazy ones ---------------------------------------------------------
class Source(Protocol):
    """Where the replies come from: one family's ``svcnet`` table in one namespace
    (:class:`svcnet_nftables.NftablesBackend` implements it over netlink)."""

    family: str

    def chains(self) -> list[bytes]:
        """NEWCHAIN replies of the table's chains."""

    def rules(self, chain: str | None) -> list[bytes]:
        """NEWRULE replies of one chain (None: every chain of the table)."""

    def sets(self) -> list[bytes]:
        """NEWSET replies of every set of the table (anonymous ones too)."""

    def set(self, name: str) -> bytes | None:
        """The NEWSET reply of one set (None: there is none)."""

    def elements(self, name: str) -> list[bytes]:
        """NEWSETELEM replies of a dump of one set's elements."""

    def element(self, name: str, key: bytes) -> bytes | None:
        """The NEWSETELEM reply for one key (None: no such element)."""

    def sets_named(self, names: list[str]) -> list[bytes | None]:
        """NEWSET replies of several sets, asked at once (None: no such set)."""

    def elements_for(self, name: str, keys: list[bytes]) -> list[bytes | None]:
        """NEWSETELEM replies for several keys of one set, asked at once."""


def read_table(src: Source, name: str) -> TableDump:
    """The whole table as :func:`svcnet_nftables.readback.parse` gives it."""
    infos = {i.name: i for i in map(set_info, src.sets())}
    anon: dict[str, tuple[Any, ...]] = {}

    def anon_elements(info: SetInfo) -> tuple[Any, ...]:
        if info.name not in anon:
            anon[info.name] = set_elements(info, src.elements(info.name))
        return anon[info.name]

    rules: dict[str, list[RuleDump]] = {}
    for reply in src.rules(None):
        rule = rule_dump(reply, src.family, infos.get, anon_elements)
        rules.setdefault(rule.chain, []).append(rule)
    chains = {}
    for reply in src.chains():
        c = chain_dump(reply)
        chains[c.name] = attrs.evolve(c, rules=tuple(rules.get(c.name, ())))
    for n in rules:
        if n not in chains:
            raise ReadbackError(f"rules for an unknown chain {src.family} {name} {n}")
    sets = {}
    for i in infos.values():
        if i.anonymous:
            continue
        replies = src.elements(i.name)
        fast = fast_elements(i, replies)
        if fast is None:
            sets[i.name] = i.dump(set_elements(i, replies))
        else:
            sets[i.name] = i.dump(fast[0], fast[1])
    return TableDump(src.family, name, chains, sets)


def encode_key(info: SetInfo, value: Any) -> bytes | None:
    """A packet value (as the interpreter holds it) as the set's key bytes; None when it
    cannot be a key of this set (another address family, an unknown type)."""
    parts = value if isinstance(value, tuple) else (value,)
    if len(parts) != len(info.key_types):
        return None
    out = bytearray()
    for t, n, v in zip(info.key_types, info.key_lens, parts, strict=True):
        if t in (7, 8):
            want = 4 if t == 7 else 6
            if (
                not isinstance(v, ipaddress.IPv4Address | ipaddress.IPv6Address)
                or v.version != want
            ):
                return None
            b = v.packed
        elif t == 12:
            num = _PROTO_BY_NAME.get(v) if isinstance(v, str) else v
            if not isinstance(num, int) or not 0 <= num < 256:
                return None
            b = bytes((num,))
        elif t == 13:
            if not isinstance(v, int) or not 0 <= v < 65536:
                return None
            b = v.to_bytes(2, "big")
        elif t in (4, 19) and n == 4:
            if not isinstance(v, int) or not 0 <= v < 1 << 32:
                return None
            b = v.to_bytes(4, HOST_ORDER)
        else:
            return None
        out += b + b"\0" * (-len(b) % 4)
    return bytes(out)


class LazySet:
    """A set read on demand: its definition now, then per :meth:`lookup` the one
    element for the key (exact-match sets), or the whole set (interval sets)."""

    def __init__(self, src: Source, info: SetInfo) -> None:
        self._src = src
        self.info = info
        self.name = info.name
        self.timeout = None if info.timeout_ms is None else info.timeout_ms // 1000
        self._whole: SetDump | None = None
        self._got: dict[bytes, bytes | None] = {}  # key -> reply, for this evaluation

    def prefetch(self, values: Iterable[Any]) -> None:
        """Ask for the elements of several packet values in one round trip (the
        endpoint buckets of a ``numgen`` map lookup)."""
        if self.info.flags & 4:
            return
        keys = [k for v in values if (k := encode_key(self.info, v)) is not None]
        keys = [k for k in dict.fromkeys(keys) if k not in self._got]
        if len(keys) > 1:
            self._got.update(zip(keys, self._src.elements_for(self.name, keys), strict=True))

    @property
    def dynamic(self) -> bool:
        return bool(self.info.flags & 0x30)

    def whole(self) -> SetDump:
        if self._whole is None:
            raw = set_elements(self.info, self._src.elements(self.name))
            self._whole = self.info.dump(raw)
        return self._whole

    def lookup(self, value: Any) -> Any:
        """As :meth:`svcnet_nftables.readback.SetDump.lookup`."""
        key = None if self.info.flags & 4 else encode_key(self.info, value)
        if key is None:
            return self.whole().lookup(value)
        if key in self._got:
            reply = self._got[key]
        else:
            reply = self._got[key] = self._src.element(self.name, key)
        if reply is None:
            return MISS
        found = set_elements(self.info, [reply])
        if not found:
            return MISS
        if self.info.data_types is None:
            return None
        return atom(found[0][1])


class LazyTable:
    """One family's table read as an evaluation walks it (see the module doc). Every
    read goes to the kernel, once per table object: make a new one per evaluation."""

    def __init__(self, src: Source, name: str, chains: list[bytes]) -> None:
        self.family = src.family
        self.name = name
        self._src = src
        self._meta = {c.name: c for c in map(chain_dump, chains)}
        self._chains: dict[str, ChainDump] = {}
        self._infos: dict[str, SetInfo | None] = {}
        self._anon: dict[str, tuple[Any, ...]] = {}
        self._sets: dict[str, LazySet | None] = {}

    def _info(self, name: str) -> SetInfo | None:
        if name not in self._infos:
            reply = self._src.set(name)
            self._infos[name] = None if reply is None else set_info(reply)
        return self._infos[name]

    def _anon_elements(self, info: SetInfo) -> tuple[Any, ...]:
        if info.name not in self._anon:
            self._anon[info.name] = set_elements(info, self._src.elements(info.name))
        return self._anon[info.name]

    def chain(self, name: str) -> ChainDump | None:
        if name not in self._chains:
            meta = self._meta.get(name)
            if meta is None:
                return None
            replies = self._src.rules(name)
            wanted = sorted({n for r in replies for n in set_names(r)} - self._infos.keys())
            if len(wanted) > 1:  # the definitions of the sets its rules name, at once
                for n, reply in zip(wanted, self._src.sets_named(wanted), strict=True):
                    self._infos[n] = None if reply is None else set_info(reply)
            rules = tuple(
                rule_dump(r, self.family, self._info, self._anon_elements) for r in replies
            )
            self._chains[name] = attrs.evolve(meta, rules=rules)
        return self._chains[name]

    def set(self, name: str) -> LazySet | None:
        if name not in self._sets:
            info = self._info(name)
            found = None if info is None or info.anonymous else LazySet(self._src, info)
            self._sets[name] = found
        return self._sets[name]

    def base_chains(self, hook: str) -> list[ChainDump]:
        found = [c for c in self._meta.values() if c.hook == hook]
        return sorted(found, key=lambda c: c.prio or 0)
