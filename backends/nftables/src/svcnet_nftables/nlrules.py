"""nf_tables rule replies -> JSON statements (pure; see :mod:`svcnet_nftables.nlread`).

Register loads are tracked symbolically, so a match, lookup, map or NAT reads the
expression that filled its registers. The statements come out as libnftables' JSON
prints them, with two differences of shape that match the same packets: a ``meta
l4proto`` match stays explicit (libnftables folds it into a following ``tcp dport``)
and transport ports are ``th`` payloads. An expression this module does not know
becomes a statement (or a register load) the interpreter refuses.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from svcnet_nftables.readback import PROTOCOLS, ReadbackError, RuleDump

if TYPE_CHECKING:
    from svcnet_nftables.nlread import SetInfo

_FIB_TYPES = ("unspec", "unicast", "local", "broadcast", "anycast", "multicast",
              "blackhole", "unreachable", "prohibit")  # fmt: skip
_CT_STATUS = ("expected", "seen-reply", "assured", "confirmed", "snat", "dnat", "dying")
_META_KEYS = {3: "mark", 15: "nfproto", 16: "l4proto", 4: "iif", 5: "oif", 6: "iifname",
              7: "oifname", 1: "protocol", 2: "priority", 10: "skuid", 11: "skgid"}  # fmt: skip
_CT_KEYS = {0: "state", 1: "direction", 2: "status", 3: "mark"}
# expressions that load a register given in their attribute 1 (decoded as unknown loads)
_LOADS = frozenset({"rt", "exthdr", "socket", "osf", "xfrm", "tunnel", "inner"})

#: the byte order of host-order values (numgen, marks, ct status) in registers and keys
HOST_ORDER: Literal["little", "big"] = "little" if struct.pack("=H", 1)[0] == 1 else "big"


def ntop(b: bytes) -> str:
    """An IPv4 or IPv6 address's bytes as text (IPv6 in its compressed form)."""
    if len(b) == 4:
        return f"{b[0]}.{b[1]}.{b[2]}.{b[3]}"
    return str(ipaddress.IPv6Address(b))


_VERDICT_CODES = {0: "drop", 1: "accept", -1: "continue", -3: "jump", -4: "goto", -5: "return"}


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


def cstr(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode()


def be32(b: bytes) -> int:
    return int(struct.unpack(">I", b[:4])[0])


def comment_of(udata: bytes | None) -> str | None:
    """The comment TLV (type 0) in an element's or rule's user data."""
    off = 0
    while udata is not None and off + 2 <= len(udata):
        kind, length = udata[off], udata[off + 1]
        if kind == 0:
            return cstr(udata[off + 2 : off + 2 + length])
        off += 2 + length
    return None


def verdict_json(b: bytes) -> Any:
    v = nl_attrs(b)
    code = int(struct.unpack(">i", v[1][:4])[0]) if 1 in v else 0
    name = _VERDICT_CODES.get(code, f"verdict-{code}")
    if 2 in v:
        return {name: {"target": cstr(v[2])}}
    return {name: None}


SetSource = Callable[[str], "SetInfo | None"]
AnonSource = Callable[["SetInfo"], tuple[Any, ...]]


def set_names(data: bytes) -> list[str]:
    """The named sets a NEWRULE reply's lookups and dynsets use."""
    out = []
    for item in nl_list(nl_attrs(data).get(4, b"")):
        e = nl_attrs(item)
        if cstr(e.get(1, b"\0")) in ("lookup", "dynset"):
            name = nl_attrs(e.get(2, b"")).get(1)
            if name is not None:
                out.append(cstr(name))
    return out


def rule_dump(data: bytes, family: str, sets: SetSource, anon: AnonSource) -> RuleDump:
    """A NFT_MSG_NEWRULE reply -> :class:`RuleDump` (``sets``: a set's definition by
    name; ``anon``: the elements of an anonymous set)."""
    a = nl_attrs(data)
    exprs = _Rule(family, sets, anon).decode(nl_list(a.get(4, b"")))
    return RuleDump(
        cstr(a[2]), int(struct.unpack(">Q", a[3])[0]), tuple(exprs), comment_of(a.get(7))
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
        self.regs[self._index(be32(reg))] = value

    def _get(self, reg: bytes, length: int | None = None) -> _Reg:
        """The expression in register ``reg``; ``length`` bytes from it: a concat."""
        i = self._index(be32(reg))
        first = self.regs.get(i)
        if first is None:
            raise ReadbackError(f"rule reads register {be32(reg)} that nothing loaded")
        if length is None or length <= first[1]:
            return first
        parts, kinds, got = [first[0]], [first[2]], (first[1] + 3) & ~3
        while got < length:
            nxt = self.regs.get(i + got // 4)
            if nxt is None:
                raise ReadbackError(f"rule reads register {be32(reg)} past what was loaded")
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
            return ntop(b)
        if kind == "proto" and len(b) >= 1:
            return PROTOCOLS.get(b[0], b[0])
        if kind == "port" and len(b) >= 2:
            return (b[0] << 8) | b[1]
        if kind in ("host", "ct", "ctmask"):
            return int.from_bytes(b, HOST_ORDER)
        if kind == "str":
            return cstr(b)
        if kind == "fib":
            n = int.from_bytes(b, HOST_ORDER)
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
            name = cstr(e.get(1, b""))
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
        expr, kind = self._payload(be32(d[2]), be32(d[3]), be32(d[4]))
        if 1 in d:
            self._put(d[1], (expr, be32(d[4]), kind))
        else:  # a payload write
            self.out.append({"mangle": {"key": expr, "value": self._get(d[5])[0]}})

    def _x_meta(self, d: dict[int, bytes]) -> None:
        key = be32(d[2])
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
        key = be32(d[2])
        expr = {"ct": {"key": _CT_KEYS.get(key, f"ct-{key}")}}
        if 1 in d:
            self._put(d[1], (expr, 4, "ct" if key == 2 else "host"))
        else:
            self.out.append({"mangle": {"key": expr, "value": self._get(d[4])[0]}})

    def _x_fib(self, d: dict[int, bytes]) -> None:
        result = {1: "oif", 2: "oifname", 3: "type"}.get(be32(d[2]), "unknown")
        bits = be32(d[3]) if 3 in d else 0
        flags = [
            n
            for b, n in ((1, "saddr"), (2, "daddr"), (4, "mark"), (8, "iif"), (16, "oif"))
            if bits & b
        ]
        self._put(d[1], ({"fib": {"result": result, "flags": flags}}, 4, "fib"))

    def _x_numgen(self, d: dict[int, bytes]) -> None:
        mode = "random" if be32(d[3]) == 1 else "inc"
        body = {"mode": mode, "mod": be32(d[2]), "offset": be32(d[4]) if 4 in d else 0}
        self._put(d[1], ({"numgen": body}, 4, "host"))

    def _x_immediate(self, d: dict[int, bytes]) -> None:
        data = nl_attrs(d[2])
        if be32(d[1]) == 0:
            self.out.append(verdict_json(data[2]))
        else:
            value = data.get(1, b"")
            self._put(d[1], (value, len(value), "raw"))

    def _x_bitwise(self, d: dict[int, bytes]) -> None:
        if 6 in d and be32(d[6]) != 0:
            raise ReadbackError("bitwise shift is not supported")
        expr, length, kind = self._get(d[1])
        mask = nl_attrs(d[4]).get(1, b"")
        xor = nl_attrs(d[5]).get(1, b"")
        order = HOST_ORDER if kind in ("host", "ct") else "big"
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
        op = ("==", "!=", "<", "<=", ">", ">=")[be32(d[2])]
        if kind == "ctmask":
            ct, m = expr
            value = int.from_bytes(data, HOST_ORDER)
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
        info, ref = self._set_ref(cstr(d[1]))
        key = self._get(d[2], info.key_len if info is not None else None)[0]
        inverted = 5 in d and bool(be32(d[5]) & 1)
        if 3 not in d:
            self.out.append(
                {"match": {"op": "!=" if inverted else "==", "left": key, "right": ref}}
            )
        elif be32(d[3]) == 0:
            self.out.append({"vmap": {"key": key, "data": ref}})
        else:
            length = info.data_len if info is not None else 4
            self._put(d[3], ({"map": {"key": key, "data": ref}}, length, "map"))

    def _x_dynset(self, d: dict[int, bytes]) -> None:
        name = cstr(d[1])
        info = self.sets(name)
        key = self._get(d[4], info.key_len if info is not None else None)[0]
        op = ("add", "update", "delete")[be32(d[3])] if be32(d[3]) < 3 else "unknown"
        if 5 in d:
            data = self._get(d[5])[0]
            self.out.append({"map": {"op": op, "elem": key, "data": data, "map": f"@{name}"}})
        else:
            self.out.append({"set": {"op": op, "elem": key, "set": f"@{name}"}})

    # -- statements ---------------------------------------------------------------------
    def _x_nat(self, d: dict[int, bytes]) -> None:
        kind = "dnat" if be32(d[1]) == 1 else "snat"
        fam = {2: "ip", 10: "ip6"}.get(be32(d[2]), self.family)
        body: dict[str, Any] = {"family": fam}
        if 3 in d:
            expr, length, rkind = self._get(d[3])
            if rkind == "raw":
                body["addr"] = ntop(expr)
            else:
                body["addr"] = expr
            if 5 in d and not (rkind == "map" and length > (16 if fam == "ip6" else 4)):
                pexpr, _pl, pkind = self._get(d[5])
                body["port"] = self._const("port", pexpr) if pkind == "raw" else pexpr
        self.out.append({kind: body})

    def _x_masq(self, d: dict[int, bytes]) -> None:
        self.out.append({"masquerade": None})

    def _x_reject(self, d: dict[int, bytes]) -> None:
        kind = be32(d[1]) if 1 in d else 0
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
