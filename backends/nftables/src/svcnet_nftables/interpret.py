"""Structure + Probe -> Outcome (pure): an evaluator of the rules read back.

It walks the hook chains a probe's first packet meets — ``output`` for a node
source, ``prerouting`` otherwise, then ``postrouting`` after DNAT — and runs
every rule it reaches, expression by expression. ``numgen random mod N``
forks the walk into N equally likely branches, so a DNAT through
``numgen ... map`` yields each endpoint with probability (its buckets) / N.
Dynamic (timeout) sets are learned state: the probe is a *new* client, so
lookups in them miss, except for elements the probe's own walk added (the
hairpin test adds ``saddr . saddr`` and then looks up ``saddr . daddr``). An
``update`` keyed by the source address alone records the client: it gives the
set's timeout as the affinity timeout. An expression or statement this module does
not know raises :class:`InterpretError` rather than guessing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import attrs

from svcnet.errors import SvcnetError
from svcnet.probe import Outcome, Probe, SourceKind, Target, Verdict
from svcnet_nftables.readback import MISS, Ruleset, SetView, Table, atom, matches

_MAX_DEPTH = 32
_MISS = MISS


class InterpretError(SvcnetError, ValueError):
    """The read-back holds something the interpreter does not understand."""


@attrs.frozen
class Packet:
    fam: str
    saddr: Any
    daddr: Any
    proto: str
    dport: int
    kind: SourceKind
    mark: int = 0
    ctmark: int = 0  # the connection's mark (``ct mark``; the IPVS backend's tables set it)
    dnat: tuple[Any, int] | None = None
    masquerade: bool = False
    affinity: int | None = None
    trace: tuple[str, ...] = ()
    # elements this packet's own walk added to dynamic sets: (set name, key)
    learned: tuple[tuple[str, Any], ...] = ()


Path = tuple[Fraction, str | None, Packet]  # (probability, verdict or None = fell through, packet)


_eq = matches

# payload protocols that carry an implicit "meta l4proto <proto>" dependency
_L4 = ("tcp", "udp", "sctp")


def _l4_deps(obj: Any) -> set[str]:
    """Protocols named by tcp/udp/sctp payload expressions anywhere in ``obj``."""
    out: set[str] = set()
    if isinstance(obj, dict):
        payload = obj.get("payload")
        if isinstance(payload, dict) and payload.get("protocol") in _L4:
            out.add(payload["protocol"])
        for v in obj.values():
            out |= _l4_deps(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            out |= _l4_deps(v)
    return out


class Interpreter:
    def __init__(self, ruleset: Ruleset | Mapping[str, Table]) -> None:
        self.tables: Mapping[str, Table] = (
            ruleset.tables if isinstance(ruleset, Ruleset) else ruleset
        )
        # id(rule) -> protocols its tcp/udp/sctp payload expressions depend on
        self._deps: dict[int, frozenset[str]] = {}

    # -- sets ------------------------------------------------------------
    def _set(self, table: Table, ref: str) -> SetView:
        name = ref[1:]
        found = table.set(name)
        if found is None:
            raise InterpretError(f"rule refers to a missing set @{name}")
        return found

    def _elements(self, table: Table, right: Any) -> tuple[tuple[Any, Any], ...] | None:
        if isinstance(right, dict) and "set" in right:
            out = []
            for e in right["set"]:
                if isinstance(e, list) and len(e) == 2:
                    out.append((atom(e[0]), atom(e[1])))
                else:
                    out.append((atom(e), None))
            return tuple(out)
        return None

    def _prefetch(self, table: Table, right: Any, values: list[Any]) -> None:
        """Let a set read on demand ask for several keys at once (if it can)."""
        if len(values) > 1 and isinstance(right, str) and right.startswith("@"):
            s = table.set(right[1:])
            ask = getattr(s, "prefetch", None)
            if ask is not None and not s.dynamic:  # type: ignore[union-attr]
                ask(values)

    def _lookup(self, table: Table, right: Any, value: Any) -> Any:
        if isinstance(right, str) and right.startswith("@"):
            s = self._set(table, right)
            return _MISS if s.dynamic else s.lookup(value)
        elems = self._elements(table, right)
        if elems is None:
            raise InterpretError(f"not a set or map: {right!r}")
        for key, data in elems:
            if _eq(value, key):
                return data
        return _MISS

    # -- expressions -------------------------------------------------------------
    def value(self, table: Table, expr: Any, pkt: Packet) -> list[tuple[Fraction, Any]]:
        one = Fraction(1)
        if isinstance(expr, int | str) and not isinstance(expr, bool):
            return [(one, atom(expr))]
        if not isinstance(expr, dict) or len(expr) != 1:
            raise InterpretError(f"unknown expression {expr!r}")
        ((kind, body),) = expr.items()
        if kind == "payload":
            field = (body.get("protocol"), body.get("field"))
            if field == (pkt.fam, "saddr"):
                return [(one, pkt.saddr)]
            if field == (pkt.fam, "daddr"):
                return [(one, pkt.daddr)]
            # th and <proto> dport are the same load (transport header, offset 2); a
            # <proto> payload also implies "meta l4proto <proto>": _rule skips a rule
            # whose protocol payloads name another protocol before getting here
            if body.get("field") == "dport" and body.get("protocol") in ("th", *_L4):
                return [(one, pkt.dport)]
        elif kind == "meta":
            if body.get("key") == "l4proto":
                return [(one, pkt.proto)]
            if body.get("key") == "mark":
                return [(one, pkt.mark)]
        elif kind == "fib":
            if body.get("result") == "type" and body.get("flags") == ["saddr"]:
                return [(one, "local" if pkt.kind is SourceKind.NODE else "unicast")]
        elif kind == "ct":
            if body.get("key") == "status":
                return [(one, frozenset({"dnat"}) if pkt.dnat else frozenset())]
            if body.get("key") == "mark":
                return [(one, pkt.ctmark)]
        elif kind == "numgen":
            if body.get("mode") == "random":
                mod = int(body["mod"])
                off = int(body.get("offset", 0))
                return [(Fraction(1, mod), off + i) for i in range(mod)]
        elif kind == "concat":
            acc: list[tuple[Fraction, tuple[Any, ...]]] = [(one, ())]
            for part in body:
                acc = [(p * q, (*t, v)) for p, t in acc for q, v in self.value(table, part, pkt)]
            return list(acc)
        elif kind in ("&", "|", "^"):
            a, b = body
            out = []
            for p, x in self.value(table, a, pkt):
                for q, y in self.value(table, b, pkt):
                    r = x & y if kind == "&" else x | y if kind == "|" else x ^ y
                    out.append((p * q, r))
            return out
        elif kind == "map":
            keys = self.value(table, body["key"], pkt)
            self._prefetch(table, body["data"], [k for _, k in keys])
            return [(p, d) for p, k in keys for d in [self._lookup(table, body["data"], k)]]
        elif kind in ("prefix", "range", "set"):
            return [(one, atom(expr))]
        raise InterpretError(f"unknown expression {expr!r}")

    def _matches(self, table: Table, op: str, left: Any, right: Any, pkt: Packet) -> bool:
        if op == "in":
            flags = {right} if isinstance(right, str) else set(right)
            return bool(flags <= set(left))
        if isinstance(right, str) and right.startswith("@"):
            s = self._set(table, right)
            if s.dynamic:
                hit = any(n == s.name and _eq(left, k) for n, k in pkt.learned)
            else:
                hit = s.lookup(left) is not _MISS
        elif (elems := self._elements(table, right)) is not None:
            hit = any(_eq(left, k) for k, _ in elems)
        else:
            rights = [v for _, v in self.value(table, right, _NOPKT)]
            hit = any(_eq(left, r) for r in rights)
        if op == "==":
            return hit
        if op == "!=":
            return not hit
        raise InterpretError(f"unknown match operator {op!r}")

    # -- rules and chains -----------------------------------------------------------
    def _rule(
        self, table: Table, chain: str, rule: Any, pkt: Packet
    ) -> list[tuple[Fraction, Any, Packet]]:
        """Run one rule: [(p, outcome, packet)]; outcome None = go on with the next rule."""
        where = f"{pkt.fam} {chain} #{rule.handle}"
        deps = self._deps.get(id(rule))
        if deps is None:
            deps = self._deps[id(rule)] = frozenset(_l4_deps(rule.exprs))
        if deps and deps != {pkt.proto}:
            # nft puts "meta l4proto <proto>" in front of a rule that loads a
            # tcp/udp/sctp header field (match, map key, nat or set statement alike);
            # listings may fold that match away: the rule does not match this packet
            return [(Fraction(1), None, pkt)]
        states: list[tuple[Fraction, Packet]] = [(Fraction(1), pkt)]
        done: list[tuple[Fraction, Any, Packet]] = []
        for expr in rule.exprs:
            if not states:
                break
            if not isinstance(expr, dict) or len(expr) != 1:
                raise InterpretError(f"{where}: unknown statement {expr!r}")
            ((kind, body),) = expr.items()
            nxt: list[tuple[Fraction, Packet]] = []
            for p, pk in states:
                if kind == "match":
                    for q, v in self.value(table, body["left"], pk):
                        if self._matches(table, body["op"], v, body["right"], pk):
                            nxt.append((p * q, pk))
                        else:
                            done.append((p * q, None, pk))
                elif kind == "counter":
                    nxt.append((p, pk))
                elif kind == "mangle":
                    ct = body["key"] == {"ct": {"key": "mark"}}
                    if body["key"] != {"meta": {"key": "mark"}} and not ct:
                        raise InterpretError(f"{where}: unknown mangle {body!r}")
                    for q, v in self.value(table, body["value"], pk):
                        t = (*pk.trace, f"{where}: {'ct ' if ct else ''}mark set {v:#x}")
                        pk2 = attrs.evolve(pk, ctmark=v) if ct else attrs.evolve(pk, mark=v)
                        nxt.append((p * q, attrs.evolve(pk2, trace=t)))
                elif (
                    kind == "set" and isinstance(body, dict) and body.get("op") in ("update", "add")
                ):
                    s = self._set(table, body["set"])
                    client = body["elem"] == {"payload": {"protocol": pk.fam, "field": "saddr"}}
                    for q, key in self.value(table, body["elem"], pk):
                        nxt.append(
                            (
                                p * q,
                                attrs.evolve(
                                    pk,
                                    affinity=s.timeout if client else pk.affinity,
                                    learned=(*pk.learned, (s.name, key)),
                                    trace=(*pk.trace, f"{where}: update {body['set']}"),
                                ),
                            )
                        )
                elif kind == "vmap":
                    for q, k in self.value(table, body["key"], pk):
                        d = self._lookup(table, body["data"], k)
                        if d is _MISS:
                            done.append((p * q, None, pk))
                        else:
                            t = (*pk.trace, f"{where}: vmap {_show(k)} -> {' '.join(d)}")
                            done.append((p * q, d, attrs.evolve(pk, trace=t)))
                elif kind == "dnat":
                    for q, target in self._nat_target(table, body, pk):
                        if target is None:
                            done.append((p * q, None, pk))
                            continue
                        t = (*pk.trace, f"{where}: dnat to {_show(target)}")
                        done.append((p * q, ("accept",), attrs.evolve(pk, dnat=target, trace=t)))
                elif kind == "masquerade":
                    t = (*pk.trace, f"{where}: masquerade")
                    done.append((p, ("accept",), attrs.evolve(pk, masquerade=True, trace=t)))
                elif kind == "reject":
                    done.append(
                        (p, ("reject",), attrs.evolve(pk, trace=(*pk.trace, f"{where}: reject")))
                    )
                elif kind in ("accept", "drop", "return"):
                    done.append(
                        (p, (kind,), attrs.evolve(pk, trace=(*pk.trace, f"{where}: {kind}")))
                    )
                elif kind in ("jump", "goto"):
                    done.append((p, (kind, body["target"]), pk))
                else:
                    raise InterpretError(f"{where}: unknown statement {expr!r}")
            states = nxt
        done += [(p, None, pk) for p, pk in states]
        return done

    def _nat_target(self, table: Table, body: Any, pkt: Packet) -> list[tuple[Fraction, Any]]:
        out: list[tuple[Fraction, Any]] = []
        for p, addr in self.value(table, body["addr"], pkt):
            if addr is _MISS:
                out.append((p, None))
            elif isinstance(addr, tuple) and len(addr) == 2:
                out.append((p, (addr[0], int(addr[1]))))
            elif "port" in body:
                for q, port in self.value(table, body["port"], pkt):
                    out.append((p * q, (addr, int(port))))
            else:
                out.append((p, (addr, pkt.dport)))
        return out

    def chain(self, table: Table, name: str, pkt: Packet, depth: int = 0) -> list[Path]:
        if depth > _MAX_DEPTH:
            raise InterpretError(f"chain nesting deeper than {_MAX_DEPTH} at {name}")
        if table.chain(name) is None:
            raise InterpretError(f"jump to a missing chain {name}")
        return self._rules(table, name, 0, pkt, depth)

    def _rules(self, table: Table, name: str, i: int, pkt: Packet, depth: int) -> list[Path]:
        found = table.chain(name)
        rules = found.rules if found is not None else ()
        if i >= len(rules):
            return [(Fraction(1), None, pkt)]
        out: list[Path] = []
        for p, res, pk in self._rule(table, name, rules[i], pkt):
            if res is None:
                sub = self._rules(table, name, i + 1, pk, depth)
            elif res[0] == "jump":
                sub = []
                for q, v, pk2 in self.chain(table, res[1], pk, depth + 1):
                    if v is None:
                        sub += [
                            (q * r, w, pk3)
                            for r, w, pk3 in self._rules(table, name, i + 1, pk2, depth)
                        ]
                    else:
                        sub.append((q, v, pk2))
            elif res[0] == "goto":
                sub = self.chain(table, res[1], pk, depth + 1)
            elif res[0] == "return":
                sub = [(Fraction(1), None, pk)]
            elif res[0] == "continue":
                sub = self._rules(table, name, i + 1, pk, depth)
            else:
                sub = [(Fraction(1), res[0], pk)]
            out += [(p * q, v, pk2) for q, v, pk2 in sub]
        return out

    def hook(self, table: Table, hook: str, paths: list[Path]) -> list[Path]:
        for base in table.base_chains(hook):
            nxt: list[Path] = []
            for p, v, pk in paths:
                if v in ("drop", "reject"):
                    nxt.append((p, v, pk))
                    continue
                for q, w, pk2 in self.chain(table, base.name, pk):
                    if w is None:
                        w = base.policy if base.policy == "drop" else None
                    nxt.append((p * q, None if w == "accept" else w, pk2))
            paths = nxt
        return paths

    # -- probes ---------------------------------------------------------------------
    def first_hook(self, probe: Probe) -> tuple[Table, list[Path]] | None:
        """``probe``'s packet walked through its first hook (``output`` for a node
        source, ``prerouting`` otherwise) and its family's table; None: no table."""
        daddr = ipaddress.ip_address(probe.dst_ip)
        fam = "ip" if daddr.version == 4 else "ip6"
        table = self.tables.get(fam)
        if table is None:
            return None
        pkt = Packet(
            fam=fam,
            saddr=ipaddress.ip_address(probe.source_ip),
            daddr=daddr,
            proto=probe.protocol.value.lower(),
            dport=probe.dst_port,
            kind=probe.source_kind,
        )
        first = "output" if probe.source_kind is SourceKind.NODE else "prerouting"
        return table, self.hook(table, first, [(Fraction(1), None, pkt)])

    def run(self, probe: Probe) -> tuple[Outcome, tuple[str, ...]]:
        walked = self.first_hook(probe)
        if walked is None:
            return Outcome(Verdict.PASS), ()
        table, paths = walked
        after: list[Path] = []
        for p, v, pk in paths:
            if v is None and pk.dnat is not None:
                pk = attrs.evolve(pk, daddr=pk.dnat[0], dport=pk.dnat[1])
            after.append((p, v, pk))
        return self.outcome(probe, self.hook(table, "postrouting", after))

    def outcome(self, probe: Probe, paths: list[Path]) -> tuple[Outcome, tuple[str, ...]]:
        """The outcome of ``probe``'s walked ``paths`` and their trace (an
        :class:`InterpretError` when the branches disagree)."""
        trace = tuple(dict.fromkeys(line for _, _, pk in paths for line in pk.trace))
        verdicts = {v for _, v, _ in paths}
        if verdicts == {"drop"}:
            return Outcome(Verdict.DROP), trace
        if verdicts == {"reject"}:
            return Outcome(Verdict.REJECT), trace
        if verdicts != {None}:
            raise InterpretError(f"{probe}: branches disagree ({sorted(map(str, verdicts))})")
        nat = [(p, pk) for p, _, pk in paths if pk.dnat is not None]
        if not nat:
            return Outcome(Verdict.PASS), trace
        if len(nat) != len(paths):
            raise InterpretError(f"{probe}: some branches DNAT, others do not")
        probs: dict[tuple[str, int, bool], Fraction] = {}
        affinity = {pk.affinity for _, pk in nat}
        for p, pk in nat:
            assert pk.dnat is not None
            key = (str(pk.dnat[0]), pk.dnat[1], pk.masquerade)
            probs[key] = probs.get(key, Fraction(0)) + p
        if len(affinity) != 1:
            raise InterpretError(f"{probe}: branches disagree on session affinity")
        targets = frozenset(Target(ip, port, masq, pr) for (ip, port, masq), pr in probs.items())
        return Outcome(Verdict.FORWARD, targets, affinity.pop()), trace


_NOPKT = Packet("ip", None, None, "", 0, SourceKind.EXTERNAL)


def _show(v: Any) -> str:
    if isinstance(v, tuple):
        return " . ".join(_show(x) for x in v)
    return str(v)


def evaluate(ruleset: Ruleset | Mapping[str, Table], probe: Probe) -> Outcome:
    """The outcome of ``probe`` (``ruleset``: a whole read-back, or tables by family)."""
    return Interpreter(ruleset).run(probe)[0]


def trace(ruleset: Ruleset | Mapping[str, Table], probe: Probe) -> tuple[str, ...]:
    """The trace lines of ``probe``'s walk."""
    return Interpreter(ruleset).run(probe)[1]


def run(ruleset: Ruleset | Mapping[str, Table], probe: Probe) -> tuple[Outcome, tuple[str, ...]]:
    """Both at once."""
    return Interpreter(ruleset).run(probe)
