"""What svcnet's read-back iptables rules do to a probe (pure).

The packet's path through netfilter is walked rule by rule from the read-back
alone: nat PREROUTING (OUTPUT for a node's own packets), then filter INPUT /
FORWARD (OUTPUT), then nat POSTROUTING. Matches are evaluated against the probe:
``-s/-d`` against its addresses, ``-m addrtype --src-type LOCAL`` is true for a
node's own packets, ``--ctstate NEW`` holds (a probe is a first packet), a
``--rcheck`` of ``-m recent`` misses (a new client) but records that affinity
is checked, ``-m statistic --mode random`` splits the walk in two branches.

Probabilities come from the rule text: the kernel keeps ``--probability p`` as
``round(p * 2**31)``; the exact kernel value is recovered from the printed
number and, when it lies within the kernel's rounding of a fraction with a
small denominator (``1/3`` is stored as 715827883/2**31), that fraction is the
rule's probability. A target's probability is the product of ``(1 - p)`` of the
statistic rules passed before it times ``p`` of the one taken.
"""

from __future__ import annotations

from fractions import Fraction

import attrs

from svcnet.errors import SvcnetError
from svcnet.model import IPFamily, Protocol, parse_endpoint
from svcnet.probe import Outcome, Probe, SourceKind, Target, Verdict

from .readback import Rule, Ruleset, Table

MAX_DEPTH = 32
_CONTINUE, _LEAVE, _DONE = "continue", "leave", "done"
_SCALE = 1 << 31


class InterpretError(SvcnetError):
    """The read-back holds something the interpreter cannot evaluate."""


def rule_probability(text: str) -> Fraction:
    """The probability a ``--probability`` value stands for, as the kernel applies it."""
    value = Fraction(text)
    raw = round(value * _SCALE)
    exact = Fraction(min(max(raw, 0), _SCALE), _SCALE)
    if raw >= _SCALE:
        return Fraction(1)
    simple = exact.limit_denominator(1 << 15)
    if abs(simple - exact) <= Fraction(1, 2 * _SCALE):
        return simple
    return exact


@attrs.frozen
class _State:
    dst_ip: str
    dst_port: int
    mark: int = 0
    dnat: tuple[str, int] | None = None
    checked: frozenset[tuple[str, int]] = frozenset()  # (recent name, seconds) checked
    set_name: str | None = None
    verdict: Verdict | None = None  # DROP / REJECT decided by a rule
    masquerade: bool = False
    trail: tuple[str, ...] = ()


@attrs.frozen
class _Branch:
    p: Fraction
    state: _State
    done: bool  # a terminal target ended the hook; else the branch left the chain


class Interpreter:
    def __init__(self, ruleset: Ruleset) -> None:
        self.ruleset = ruleset

    def _matches(self, rule: Rule, probe: Probe, st: _State) -> bool:
        if rule.unknown:
            raise InterpretError(f"cannot evaluate {rule.text!r}: {', '.join(rule.unknown)}")
        if rule.src is not None and not rule.src.matches(probe.source_ip):
            return False
        if rule.dst is not None and not rule.dst.matches(st.dst_ip):
            return False
        if rule.protocol is not None and rule.protocol not in ("all", probe.protocol.value.lower()):
            return False
        if rule.dport is not None and rule.dport != st.dst_port:
            return False
        if rule.src_local is not None and (probe.source_kind is SourceKind.NODE) != rule.src_local:
            return False
        if rule.ctstate is not None and "NEW" not in rule.ctstate:
            return False
        if rule.mark is not None:
            value, mask, neg = rule.mark
            if ((st.mark & mask) == value) == neg:
                return False
        # a new client has no learned entry: --rcheck misses
        return not (rule.recent is not None and rule.recent[0] == "rcheck")

    def _run(
        self, table: Table, chain: str, probe: Probe, st: _State, p: Fraction, depth: int
    ) -> list[_Branch]:
        if depth > MAX_DEPTH:
            raise InterpretError(f"chain {chain} nests too deep (a loop?)")
        rules = table.chains.get(chain)
        if rules is None:
            if chain in ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"):
                return [_Branch(p, st, False)]
            raise InterpretError(f"jump to missing chain {chain} in {table.name}")
        live = [(p, st)]
        out: list[_Branch] = []
        for rule in rules:
            if (
                len(live) == 1
                and (rule.recent is None or rule.recent[0] != "rcheck")
                and not self._matches(rule, probe, live[0][1])
            ):
                continue  # the one branch passes this rule unchanged (the common case)
            nxt: list[tuple[Fraction, _State]] = []
            for bp, bst in live:
                if rule.recent is not None and rule.recent[0] == "rcheck" and rule.recent[2]:
                    bst = attrs.evolve(
                        bst, checked=bst.checked | {(rule.recent[1], rule.recent[2])}
                    )
                if not self._matches(rule, probe, bst):
                    nxt.append((bp, bst))
                    continue
                take = bp
                if rule.probability is not None:
                    q = rule_probability(rule.probability)
                    if q < 1:
                        nxt.append((bp * (1 - q), bst))
                    take = bp * q
                    if take == 0:
                        continue
                bst = attrs.evolve(bst, trail=(*bst.trail, f"{table.name}: {rule.text}"))
                if rule.recent is not None and rule.recent[0] == "set":
                    bst = attrs.evolve(bst, set_name=rule.recent[1])
                for kind, b in self._target(table, rule, probe, bst, take, depth):
                    if kind == _CONTINUE:
                        nxt.append((b.p, b.state))
                    else:
                        out.append(b)
            live = nxt
            if not live:
                break
        out += [_Branch(bp, bst, False) for bp, bst in live]
        return out

    def _target(
        self, table: Table, rule: Rule, probe: Probe, st: _State, p: Fraction, depth: int
    ) -> list[tuple[str, _Branch]]:
        """(what happens next, branch): continue in this chain, leave it, or done."""
        t = rule.target
        if t == "":
            return [(_CONTINUE, _Branch(p, st, False))]
        if t == "RETURN":
            return [(_LEAVE, _Branch(p, st, False))]
        if t == "ACCEPT":
            return [(_DONE, _Branch(p, st, True))]
        if t in ("DROP", "REJECT"):
            v = Verdict.DROP if t == "DROP" else Verdict.REJECT
            return [(_DONE, _Branch(p, attrs.evolve(st, verdict=v), True))]
        if t == "DNAT":
            if rule.to_destination is None:
                raise InterpretError(f"DNAT without --to-destination: {rule.text!r}")
            ip, port = parse_endpoint(rule.to_destination)
            nst = attrs.evolve(st, dnat=(ip, port), dst_ip=ip, dst_port=port)
            return [(_DONE, _Branch(p, nst, True))]
        if t == "MARK":
            mark = st.mark
            if rule.set_xmark is not None:
                value, mask = rule.set_xmark
                mark = (mark & ~mask & 0xFFFFFFFF) ^ value
            if rule.or_mark is not None:
                mark |= rule.or_mark
            return [(_CONTINUE, _Branch(p, attrs.evolve(st, mark=mark), False))]
        if t == "MASQUERADE":
            return [(_DONE, _Branch(p, attrs.evolve(st, masquerade=True), True))]
        if t in table.chains:
            # a user chain: RETURN or falling off its end continues here
            return [
                (_DONE if b.done else _CONTINUE, b)
                for b in self._run(table, t, probe, st, p, depth + 1)
            ]
        raise InterpretError(f"unknown target {t!r} in {rule.text!r}")

    def filter_chain(self, probe: Probe, dst_ip: str, dnat: bool) -> str:
        """The filter hook a packet takes after nat (``dst_ip``: its destination
        then): OUTPUT for a node's own packets, FORWARD once DNATed, else INPUT
        (svcnet's layout; a reader of another layout may route by address)."""
        if probe.source_kind is SourceKind.NODE:
            return "OUTPUT"
        return "FORWARD" if dnat else "INPUT"

    def walk(self, probe: Probe) -> list[_Branch]:
        family = IPFamily.of(probe.dst_ip)
        nat = self.ruleset.table(family, "nat")
        flt = self.ruleset.table(family, "filter")
        local = probe.source_kind is SourceKind.NODE
        start = _State(probe.dst_ip, probe.dst_port)
        out: list[_Branch] = []
        for b1 in self._run(nat, "OUTPUT" if local else "PREROUTING", probe, start, Fraction(1), 0):
            if b1.state.verdict is not None:
                out.append(b1)
                continue
            fchain = self.filter_chain(probe, b1.state.dst_ip, b1.state.dnat is not None)
            for b2 in self._run(flt, fchain, probe, b1.state, b1.p, 0):
                if b2.state.verdict is not None:
                    out.append(b2)
                    continue
                out += self._run(nat, "POSTROUTING", probe, b2.state, b2.p, 0)
        return out

    def evaluate(self, probe: Probe) -> Outcome:
        branches = [b for b in self.walk(probe) if b.p > 0]
        verdicts = set()
        for b in branches:
            if b.state.verdict is not None:
                verdicts.add(b.state.verdict)
            elif b.state.dnat is not None:
                verdicts.add(Verdict.FORWARD)
            else:
                verdicts.add(Verdict.PASS)
        if len(verdicts) != 1:
            raise InterpretError(
                f"{probe}: the rules give different verdicts by chance: "
                + ", ".join(sorted(v.value for v in verdicts))
            )
        verdict = verdicts.pop()
        if verdict is not Verdict.FORWARD:
            return Outcome(verdict)
        probs: dict[tuple[str, int, bool], Fraction] = {}
        timeouts: set[int | None] = set()
        for b in branches:
            assert b.state.dnat is not None
            key = (b.state.dnat[0], b.state.dnat[1], b.state.masquerade)
            probs[key] = probs.get(key, Fraction(0)) + b.p
            timeout = None
            if b.state.set_name is not None:
                for name, seconds in b.state.checked:
                    if name == b.state.set_name:
                        timeout = seconds
            timeouts.add(timeout)
        if len(timeouts) != 1:
            raise InterpretError(f"{probe}: session affinity holds for some endpoints only")
        return Outcome(
            Verdict.FORWARD,
            frozenset(Target(ip, port, masq, p) for (ip, port, masq), p in probs.items()),
            timeouts.pop(),
        )

    def trace(self, probe: Probe) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for b in self.walk(probe):
            for line in b.state.trail:
                seen.setdefault(line, None)
        return tuple(seen)


def evaluate(ruleset: Ruleset, probe: Probe) -> Outcome:
    return Interpreter(ruleset).evaluate(probe)


__all__ = ["InterpretError", "Interpreter", "Protocol", "evaluate", "rule_probability"]
