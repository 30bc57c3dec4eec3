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
import socket
import struct
import sys
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import attrs

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
_VERDICT_CODES = {0: "drop", 1: "accept", -1: "continue", -3: "jump", -4: "goto", -5: "return"}
_FIB_TYPES = ("unspec", "unicast", "local", "broadcast", "anycast", "multicast",
              "blackhole", "unreachable", "prohibit")  # fmt: skip
_CT_STATUS = ("expected", "seen-reply", "assured", "confirmed", "snat", "dnat", "dying")
_META_KEYS = {3: "mark", 15: "nfproto", 16: "l4proto", 4: "iif", 5: "oif", 6: "iifname",
              7: "oifname", 1: "protocol", 2: "priority", 10: "skuid", 11: "skgid"}  # fmt: skip
_CT_KEYS = {0: "state", 1: "direction", 2: "status", 3: "mark"}
_HOOKS = ("prerouting", "input", "forward", "output", "postrouting")
_PROTO_BY_NAME = {v: k for k, v in PROTOCOLS.items()}
# expressions that load a register given in their attribute 1 (decoded as unknown loads)
_LOADS = frozenset({"rt", "exthdr", "socket", "osf", "xfrm", "tunnel", "inner"})


def nl_attrs(data: bytes) -> dict[int, bytes]:
    """Netlink attributes by type (flags masked off; a repeated type: the last)."""
    out: dict[int, bytes] = {}
    off, end = 0, len(data)
    while off + 4 <= end:
        alen, atype = struct.unpack_from("=HH", data, off)
        if alen < 4:
            raise ReadbackError(f"malformed netlink attribute at {off}")
        out[atype & 0x3FFF] = data[off + 4 : off + alen]
        off += (alen + 3) & ~3
    return out


def nl_list(data: bytes) -> list[bytes]:
    """The payloads of a nested list's attributes, in order."""
    out: list[bytes] = []
    off, end = 0, len(data)
    while off + 4 <= end:
        alen, _ = struct.unpack_from("=HH", data, off)
        if alen < 4:
            raise ReadbackError(f"malformed netlink list at {off}")
        out.append(data[off + 4 : off + alen])
        off += (alen + 3) & ~3
    return out


def _str(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode()


def _be32(b: bytes) -> int:
    return int(struct.unpack(">I", b[:4])[0])


def _comment_of(udata: bytes | None) -> str | None:
    """The comment TLV (type 0) in an element's or rule's user data."""
    off = 0
    while udata is not None and off + 2 <= len(udata):
        kind, length = udata[off], udata[off + 1]
        if kind == 0:
            return _str(udata[off + 2 : off + 2 + length])
        off += 2 + length
    return None


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
    key_types = _split_types(_be32(a[4])) if 4 in a else (0,)
    key_len = _be32(a[5]) if 5 in a else 0
    given: tuple[int, ...] = ()
    if 9 in a:
        desc = nl_attrs(a[9])
        if 2 in desc:
            given = tuple(_be32(nl_attrs(f).get(1, b"\0\0\0\0")) for f in nl_list(desc[2]))
    flags = _be32(a[3]) if 3 in a else 0
    data_types = _split_types(_be32(a[6])) if 6 in a and flags & 8 else None
    data_len = _be32(a[7]) if 7 in a else 0
    return SetInfo(
        name=_str(a[2]),
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
        return socket.inet_ntop(socket.AF_INET, b)
    if t == 8 and len(b) == 16:
        return socket.inet_ntop(socket.AF_INET6, b)
    if t == 12 and len(b) == 1:
        return PROTOCOLS.get(b[0], b[0])
    if t == 13 and len(b) == 2:
        return (b[0] << 8) | b[1]
    if t in (4, 19) and len(b) == 4:
        return int.from_bytes(b, sys.byteorder)
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


def _verdict_json(b: bytes) -> Any:
    v = nl_attrs(b)
    code = int(struct.unpack(">i", v[1][:4])[0]) if 1 in v else 0
    name = _VERDICT_CODES.get(code, f"verdict-{code}")
    if 2 in v:
        return {name: {"target": _str(v[2])}}
    return {name: None}


def _data_json(info: SetInfo, b: bytes) -> Any:
    d = nl_attrs(b)
    if 2 in d:
        return _verdict_json(d[2])
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
            end = bool(_be32(e[3]) & 1) if 3 in e else False
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
        return lambda b, o: (socket.inet_ntop(socket.AF_INET, b[o : o + 4]), _IPV4(b[o : o + 4]))
    if t == 8 and n == 16:
        return lambda b, o: (
            socket.inet_ntop(socket.AF_INET6, b[o : o + 16]),
            _IPV6(b[o : o + 16]),
        )
    if t == 12 and n == 1:
        return lambda b, o: (PROTOCOLS.get(b[o], b[o]),) * 2
    if t == 13 and n == 2:
        return lambda b, o: ((b[o] << 8) | b[o + 1],) * 2
    if t in (4, 19) and n == 4:
        return lambda b, o: (int.from_bytes(b[o : o + 4], sys.byteorder),) * 2
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
                    comment = _comment_of(raw[off + 4 : off + alen])
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
    val = _wrap(val, _comment_of(e.get(6)))
    if info.data_types is not None and 2 in e:
        return [val, _data_json(info, e[2])]
    return val


def chain_dump(data: bytes, rules: tuple[RuleDump, ...] = ()) -> ChainDump:
    """A NFT_MSG_NEWCHAIN reply -> :class:`ChainDump` (with ``rules``)."""
    a = nl_attrs(data)
    hook = prio = policy = None
    if 4 in a:
        h = nl_attrs(a[4])
        num = _be32(h[1]) if 1 in h else -1
        hook = _HOOKS[num] if 0 <= num < len(_HOOKS) else f"hook-{num}"
        prio = int(struct.unpack(">i", h[2][:4])[0]) if 2 in h else 0
        policy = "accept" if 5 not in a or _be32(a[5]) == 1 else "drop"
    return ChainDump(
        name=_str(a[3]),
        type=_str(a[7]) if 7 in a else None,
        hook=hook,
        prio=prio,
        policy=policy,
        rules=rules,
    )


def chain_name(data: bytes) -> str:
    return _str(nl_attrs(data)[3])


SetSource = Callable[[str], "SetInfo | None"]
AnonSource = Callable[[SetInfo], tuple[Any, ...]]


def rule_dump(data: bytes, family: str, sets: SetSource, anon: AnonSource) -> RuleDump:
    """A NFT_MSG_NEWRULE reply -> :class:`RuleDump` (``sets``: a set's definition by
    name; ``anon``: the elements of an anonymous set)."""
    a = nl_attrs(data)
    exprs = _Rule(family, sets, anon).decode(nl_list(a.get(4, b"")))
    return RuleDump(
        _str(a[2]), int(struct.unpack(">Q", a[3])[0]), tuple(exprs), _comment_of(a.get(7))
    )


# a register's content: (expression JSON, byte length, kind) where kind tells how to read
# a constant compared with it: addr, proto, port, host (host-endian int), be, fib, ct,
# ctmask (ct status & mask), map (a lookup's data), raw (an immediate's bytes)
_Reg = tuple[Any, int, str]


class _Rule:
    def __init__(self, family: str, sets: SetSource, anon: AnonSource) -> None:
        self.family = family
        self.sets = sets
        self.anon = anon
        self.regs: dict[int, _Reg] = {}
        self.out: list[Any] = []

    @staticmethod
    def _index(reg: int) -> int:
        return (reg - 1) * 4 if 1 <= reg <= 4 else reg - 8

    def _put(self, reg: bytes, value: _Reg) -> None:
        self.regs[self._index(_be32(reg))] = value

    def _get(self, reg: bytes, length: int | None = None) -> _Reg:
        """The expression in register ``reg``; ``length`` bytes from it: a concat."""
        i = self._index(_be32(reg))
        first = self.regs.get(i)
        if first is None:
            raise ReadbackError(f"rule reads register {_be32(reg)} that nothing loaded")
        if length is None or length <= first[1]:
            return first
        parts, kinds, got = [first[0]], [first[2]], (first[1] + 3) & ~3
        while got < length:
            nxt = self.regs.get(i + got // 4)
            if nxt is None:
                raise ReadbackError(f"rule reads register {_be32(reg)} past what was loaded")
            parts.append(nxt[0])
            kinds.append(nxt[2])
            got += (nxt[1] + 3) & ~3
        return {"concat": parts}, length, "concat:" + ",".join(kinds)

    def _const(self, kind: str, b: bytes) -> Any:
        if kind.startswith("concat:"):
            vals, off = [], 0
            for k in kind[7:].split(","):
                n = (
                    16
                    if k == "addr" and self.family == "ip6"
                    else 4
                    if k in ("addr", "host", "fib", "ct")
                    else 2
                    if k == "port"
                    else 1
                    if k == "proto"
                    else 4
                )
                vals.append(self._const(k, b[off : off + n]))
                off += (n + 3) & ~3
            return {"concat": vals}
        if kind == "addr" and len(b) in (4, 16):
            return socket.inet_ntop(socket.AF_INET if len(b) == 4 else socket.AF_INET6, b)
        if kind == "proto" and len(b) >= 1:
            return PROTOCOLS.get(b[0], b[0])
        if kind == "port" and len(b) >= 2:
            return (b[0] << 8) | b[1]
        if kind in ("host", "ct", "ctmask"):
            return int.from_bytes(b, sys.byteorder)
        if kind == "str":
            return _str(b)
        if kind == "fib":
            n = int.from_bytes(b, sys.byteorder)
            return _FIB_TYPES[n] if n < len(_FIB_TYPES) else n
        return int.from_bytes(b, "big")

    def _payload(self, base: int, off: int, length: int) -> tuple[Any, str]:
        fam = self.family
        known = {
            ("ip", 1, 12, 4): (fam, "saddr", "addr"), ("ip", 1, 16, 4): (fam, "daddr", "addr"),
            ("ip", 1, 9, 1): (fam, "protocol", "proto"),
            ("ip6", 1, 8, 16): (fam, "saddr", "addr"), ("ip6", 1, 24, 16): (fam, "daddr", "addr"),
            ("ip6", 1, 6, 1): (fam, "nexthdr", "proto"),
            (fam, 2, 0, 2): ("th", "sport", "port"), (fam, 2, 2, 2): ("th", "dport", "port"),
        }  # fmt: skip
        hit = known.get((fam, base, off, length))
        if hit is not None:
            return {"payload": {"protocol": hit[0], "field": hit[1]}}, hit[2]
        bases = {0: "ll", 1: "nh", 2: "th"}
        where = bases.get(base, f"base-{base}")
        return {"payload": {"base": where, "offset": off * 8, "len": length * 8}}, "be"

    def decode(self, items: list[bytes]) -> list[Any]:
        for item in items:
            e = nl_attrs(item)
            name = _str(e.get(1, b""))
            d = nl_attrs(e.get(2, b""))
            handler = getattr(self, f"_x_{name}", None)
            if handler is None:
                # an expression this reader does not know: a load (kept, to be refused
                # by the interpreter if a match reads it) or a statement (refused)
                if name in _LOADS and 1 in d:
                    self._put(d[1], ({name: {}}, 16, "be"))
                else:
                    self.out.append({name: None})
                continue
            handler(d)
        return self.out

    # -- loads ---------------------------------------------------------------------------
    def _x_payload(self, d: dict[int, bytes]) -> None:
        expr, kind = self._payload(_be32(d[2]), _be32(d[3]), _be32(d[4]))
        if 1 in d:
            self._put(d[1], (expr, _be32(d[4]), kind))
        else:  # a payload write
            self.out.append({"mangle": {"key": expr, "value": self._get(d[5])[0]}})

    def _x_meta(self, d: dict[int, bytes]) -> None:
        key = _be32(d[2])
        name = _META_KEYS.get(key, f"meta-{key}")
        kind = "proto" if name == "l4proto" else "str" if name.endswith("name") else "host"
        if 1 in d:
            length = {"proto": 1, "str": 16}.get(kind, 4)
            self._put(d[1], ({"meta": {"key": name}}, length, kind))
        else:
            value = self._get(d[3])[0]
            self.out.append({"mangle": {"key": {"meta": {"key": name}}, "value": value}})

    def _x_byteorder(self, d: dict[int, bytes]) -> None:
        # the same value in the other byte order (interval sets with concatenations
        # keep their keys big-endian): the expression is unchanged
        self._put(d[2], self._get(d[1]))

    def _x_ct(self, d: dict[int, bytes]) -> None:
        key = _be32(d[2])
        expr = {"ct": {"key": _CT_KEYS.get(key, f"ct-{key}")}}
        if 1 in d:
            self._put(d[1], (expr, 4, "ct" if key == 2 else "host"))
        else:
            self.out.append({"mangle": {"key": expr, "value": self._get(d[4])[0]}})

    def _x_fib(self, d: dict[int, bytes]) -> None:
        result = {1: "oif", 2: "oifname", 3: "type"}.get(_be32(d[2]), "unknown")
        bits = _be32(d[3]) if 3 in d else 0
        flags = [
            n
            for b, n in ((1, "saddr"), (2, "daddr"), (4, "mark"), (8, "iif"), (16, "oif"))
            if bits & b
        ]
        self._put(d[1], ({"fib": {"result": result, "flags": flags}}, 4, "fib"))

    def _x_numgen(self, d: dict[int, bytes]) -> None:
        mode = "random" if _be32(d[3]) == 1 else "inc"
        body = {"mode": mode, "mod": _be32(d[2]), "offset": _be32(d[4]) if 4 in d else 0}
        self._put(d[1], ({"numgen": body}, 4, "host"))

    def _x_immediate(self, d: dict[int, bytes]) -> None:
        data = nl_attrs(d[2])
        if _be32(d[1]) == 0:
            self.out.append(_verdict_json(data[2]))
        else:
            value = data.get(1, b"")
            self._put(d[1], (value, len(value), "raw"))

    def _x_bitwise(self, d: dict[int, bytes]) -> None:
        if 6 in d and _be32(d[6]) != 0:
            raise ReadbackError("bitwise shift is not supported")
        expr, length, kind = self._get(d[1])
        mask = nl_attrs(d[4]).get(1, b"")
        xor = nl_attrs(d[5]).get(1, b"")
        order = sys.byteorder if kind in ("host", "ct") else "big"
        m, x = int.from_bytes(mask, order), int.from_bytes(xor, order)
        ones = (1 << (8 * len(mask))) - 1
        if kind == "ct" and x == 0:
            self._put(d[2], ((expr, m), length, "ctmask"))
            return
        if x == 0:
            value: Any = {"&": [expr, m]}
        elif m | x == ones and m & x == 0:
            value = {"|": [expr, x]}
        else:
            value = {"^": [{"&": [expr, m]}, x]}
        self._put(d[2], (value, length, kind))

    # -- matches and lookups ---------------------------------------------------------
    def _x_cmp(self, d: dict[int, bytes]) -> None:
        data = nl_attrs(d[3]).get(1, b"")
        expr, _length, kind = self._get(d[1], len(data))
        op = ("==", "!=", "<", "<=", ">", ">=")[_be32(d[2])]
        if kind == "ctmask":
            ct, m = expr
            value = int.from_bytes(data, sys.byteorder)
            if value == 0 and op in ("==", "!="):
                names = [n for i, n in enumerate(_CT_STATUS) if m & (1 << i)]
                if len(names) == bin(m).count("1"):
                    right = names[0] if len(names) == 1 else names
                    self.out.append(
                        {
                            "match": {
                                "op": "in" if op == "!=" else "not in",
                                "left": ct,
                                "right": right,
                            }
                        }
                    )
                    return
            expr = {"ct-status-mask": {"mask": m}}  # not understood by the interpreter
        self.out.append({"match": {"op": op, "left": expr, "right": self._const(kind, data)}})

    def _set_ref(self, name: str) -> tuple[SetInfo | None, Any]:
        info = self.sets(name)
        if info is not None and info.anonymous:
            return info, {"set": list(self.anon(info))}
        return info, f"@{name}"

    def _x_lookup(self, d: dict[int, bytes]) -> None:
        info, ref = self._set_ref(_str(d[1]))
        key = self._get(d[2], info.key_len if info is not None else None)[0]
        inverted = 5 in d and bool(_be32(d[5]) & 1)
        if 3 not in d:
            self.out.append(
                {"match": {"op": "!=" if inverted else "==", "left": key, "right": ref}}
            )
        elif _be32(d[3]) == 0:
            self.out.append({"vmap": {"key": key, "data": ref}})
        else:
            length = info.data_len if info is not None else 4
            self._put(d[3], ({"map": {"key": key, "data": ref}}, length, "map"))

    def _x_dynset(self, d: dict[int, bytes]) -> None:
        name = _str(d[1])
        info = self.sets(name)
        key = self._get(d[4], info.key_len if info is not None else None)[0]
        op = ("add", "update", "delete")[_be32(d[3])] if _be32(d[3]) < 3 else "unknown"
        if 5 in d:
            data = self._get(d[5])[0]
            self.out.append({"map": {"op": op, "elem": key, "data": data, "map": f"@{name}"}})
        else:
            self.out.append({"set": {"op": op, "elem": key, "set": f"@{name}"}})

    # -- statements ---------------------------------------------------------------------
    def _x_nat(self, d: dict[int, bytes]) -> None:
        kind = "dnat" if _be32(d[1]) == 1 else "snat"
        fam = {2: "ip", 10: "ip6"}.get(_be32(d[2]), self.family)
        body: dict[str, Any] = {"family": fam}
        if 3 in d:
            expr, length, rkind = self._get(d[3])
            if rkind == "raw":
                body["addr"] = socket.inet_ntop(
                    socket.AF_INET if len(expr) == 4 else socket.AF_INET6, expr
                )
            else:
                body["addr"] = expr
            if 5 in d and not (rkind == "map" and length > (16 if fam == "ip6" else 4)):
                pexpr, _pl, pkind = self._get(d[5])
                body["port"] = self._const("port", pexpr) if pkind == "raw" else pexpr
        self.out.append({kind: body})

    def _x_masq(self, d: dict[int, bytes]) -> None:
        self.out.append({"masquerade": None})

    def _x_reject(self, d: dict[int, bytes]) -> None:
        kind = _be32(d[1]) if 1 in d else 0
        code = d.get(2, b"\0")[0]
        if kind == 1:
            self.out.append({"reject": {"type": "tcp reset"}})
            return
        icmp = "icmpx" if kind == 2 else "icmp" if self.family == "ip" else "icmpv6"
        unreachable = {"icmpx": 1, "icmp": 3, "icmpv6": 4}[icmp]
        expr: Any = "port-unreachable" if code == unreachable else code
        self.out.append({"reject": {"type": icmp, "expr": expr}})

    def _x_counter(self, d: dict[int, bytes]) -> None:
        self.out.append({"counter": None})


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
            b = v.to_bytes(4, sys.byteorder)
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
        reply = self._src.element(self.name, key)
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
            rules = tuple(
                rule_dump(r, self.family, self._info, self._anon_elements)
                for r in self._src.rules(name)
            )
            self._chains[name] = attrs.evolve(meta, rules=rules)
        return self._chains[name]

    def set(self, name: str) -> LazySet | None:
        info = self._info(name)
        return None if info is None or info.anonymous else LazySet(self._src, info)

    def base_chains(self, hook: str) -> list[ChainDump]:
        found = [c for c in self._meta.values() if c.hook == hook]
        return sorted(found, key=lambda c: c.prio or 0)
