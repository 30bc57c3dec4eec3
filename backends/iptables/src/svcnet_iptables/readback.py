"""iptables-save text (or libiptc rules turned into argv) -> structure (pure).

Only svcnet's part is kept: its chains (``SVCNET-*``) and the rules of built-in
chains that jump to them. Every rule is parsed into a :class:`Rule` whose
matches and target the interpreter understands; an option it does not know is
kept in ``unknown`` so the interpreter can refuse to guess.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterable, Mapping

import attrs

from svcnet.errors import SvcnetError
from svcnet.model import IPFamily

PREFIX = "SVCNET-"
BUILTIN = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})


class ParseError(SvcnetError, ValueError):
    """A rule line could not be read."""


@attrs.frozen
class Addr:
    net: ipaddress.IPv4Network | ipaddress.IPv6Network
    negated: bool = False

    def matches(self, ip: str) -> bool:
        a = ipaddress.ip_address(ip)
        inside = a.version == self.net.version and a in self.net
        return inside != self.negated


@attrs.frozen
class Rule:
    """One rule, as the interpreter needs it. ``text`` is the saved line."""

    chain: str
    text: str
    src: Addr | None = None
    dst: Addr | None = None
    protocol: str | None = None
    dport: int | None = None
    src_local: bool | None = None  # -m addrtype --src-type LOCAL (False: negated)
    probability: str | None = None  # -m statistic --mode random --probability P (as written)
    recent: tuple[str, str, int | None] | None = None  # (rcheck|set, name, seconds)
    ctstate: frozenset[str] | None = None
    mark: tuple[int, int, bool] | None = None  # (value, mask, negated)
    comment: str | None = None
    target: str = ""
    to_destination: str | None = None
    reject_with: str | None = None
    set_xmark: tuple[int, int] | None = None  # MARK: value/mask, applied as (m & ~mask) ^ value
    or_mark: int | None = None
    unknown: tuple[str, ...] = ()


@attrs.frozen
class Table:
    family: IPFamily
    name: str
    chains: Mapping[str, tuple[Rule, ...]]  # svcnet's chains, and built-ins (jumps only)
    # svcnet chains that rules of other tools' chains jump to (iptables-save only)
    foreign_refs: frozenset[str] = frozenset()

    @property
    def own_chains(self) -> frozenset[str]:
        return frozenset(c for c in self.chains if c.startswith(PREFIX))

    @property
    def jumps(self) -> tuple[tuple[str, str], ...]:
        out = []
        for chain, rules in self.chains.items():
            if chain in BUILTIN:
                out += [(chain, r.text.split(" ", 2)[2]) for r in rules]
        return tuple(out)

    def rule_count(self) -> int:
        return sum(len(r) for r in self.chains.values())


@attrs.frozen
class Ruleset:
    """svcnet's rules in both families, as read back."""

    tables: Mapping[tuple[IPFamily, str], Table]

    def table(self, family: IPFamily, name: str) -> Table:
        t = self.tables.get((family, name))
        return t if t is not None else Table(family, name, {})

    def __str__(self) -> str:
        lines = []
        for (family, name), t in sorted(
            self.tables.items(), key=lambda kv: (kv[0][0].value, kv[0][1])
        ):
            lines.append(f"# {family.value} {name}")
            for rules in t.chains.values():
                lines += [r.text for r in rules]
        return "\n".join(lines)


def _addr(value: str, negated: bool) -> Addr:
    return Addr(ipaddress.ip_network(value, strict=False), negated)


def _int(value: str) -> int:
    return int(value, 0)


def _mark(value: str) -> tuple[int, int]:
    v, _, m = value.partition("/")
    return _int(v), (_int(m) if m else 0xFFFFFFFF)


def parse_rule(chain: str, argv: list[str], text: str) -> Rule:
    """Parse a rule's argv (everything after ``-A CHAIN``)."""
    fields: dict[str, object] = {}
    unknown: list[str] = []
    module = ""
    i = 0
    neg = False
    while i < len(argv):
        tok = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if tok == "!":
            neg = True
            i += 1
            continue
        consumed = 2
        if tok in ("-s", "--source"):
            fields["src"] = _addr(nxt, neg)
        elif tok in ("-d", "--destination"):
            fields["dst"] = _addr(nxt, neg)
        elif tok in ("-p", "--protocol"):
            fields["protocol"] = nxt.lower()
            if neg:
                unknown.append("! -p")
        elif tok in ("-m", "--match"):
            module = nxt
        elif tok in ("-j", "--jump", "-g", "--goto"):
            if tok in ("-g", "--goto"):
                unknown.append("goto")
            fields["target"] = nxt
            module = "target:" + nxt
        elif tok == "--dport" and module in ("tcp", "udp", "sctp"):
            fields["dport"] = int(nxt)
            if neg:
                unknown.append("! --dport")
        elif tok == "--src-type" and module == "addrtype":
            if nxt != "LOCAL":
                unknown.append(f"--src-type {nxt}")
            fields["src_local"] = not neg
        elif module == "statistic" and tok == "--mode":
            if nxt != "random":
                unknown.append(f"--mode {nxt}")
        elif module == "statistic" and tok == "--probability":
            fields["probability"] = nxt
        elif module == "recent" and tok in ("--rcheck", "--set", "--update", "--remove"):
            mode = tok[2:]
            if mode not in ("rcheck", "set"):
                unknown.append(tok)
            r = fields.get("recent") or ("", "DEFAULT", None)
            assert isinstance(r, tuple)
            fields["recent"] = (mode, r[1], r[2])
            consumed = 1
        elif module == "recent" and tok == "--name":
            r = fields.get("recent") or ("", "DEFAULT", None)
            assert isinstance(r, tuple)
            fields["recent"] = (r[0], nxt, r[2])
        elif module == "recent" and tok == "--seconds":
            r = fields.get("recent") or ("", "DEFAULT", None)
            assert isinstance(r, tuple)
            fields["recent"] = (r[0], r[1], int(nxt))
        elif module == "recent" and tok in ("--reap", "--rsource"):
            consumed = 1
        elif module == "recent" and tok == "--mask":
            pass
        elif module == "conntrack" and tok == "--ctstate":
            fields["ctstate"] = frozenset(nxt.split(","))
            if neg:
                unknown.append("! --ctstate")
        elif module == "mark" and tok == "--mark":
            v, m = _mark(nxt)
            fields["mark"] = (v, m, neg)
        elif module == "comment" and tok == "--comment":
            fields["comment"] = nxt
        elif module == "target:DNAT" and tok == "--to-destination":
            fields["to_destination"] = nxt
        elif module == "target:REJECT" and tok == "--reject-with":
            fields["reject_with"] = nxt
        elif module == "target:MARK" and tok == "--set-xmark":
            fields["set_xmark"] = _mark(nxt)
        elif module == "target:MARK" and tok == "--xor-mark":
            fields["set_xmark"] = (_int(nxt), 0)
        elif module == "target:MARK" and tok == "--or-mark":
            fields["or_mark"] = _int(nxt)
        elif module == "target:MASQUERADE" and tok in ("--random-fully", "--random"):
            consumed = 1
        else:
            unknown.append(tok)
            consumed = 1
        neg = False
        i += consumed
    rec = fields.get("recent")
    if isinstance(rec, tuple) and rec[0] == "":
        unknown.append("-m recent without a mode")
    return Rule(chain=chain, text=text, unknown=tuple(unknown), **fields)  # type: ignore[arg-type]


def parse_save(text: str, family: IPFamily) -> dict[str, Table]:
    """``iptables-save`` output -> svcnet's part of each table in it."""
    tables: dict[str, Table] = {}
    current: str | None = None
    chains: dict[str, list[Rule]] = {}
    refs: set[str] = set()
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            current = line[1:]
            chains = {}
            refs = set()
            continue
        if line == "COMMIT":
            if current is not None:
                tables[current] = _table(family, current, chains, frozenset(refs))
            current = None
            continue
        if line.startswith(":"):
            name = line[1:].split()[0]
            if name.startswith(PREFIX):
                chains.setdefault(name, [])
            continue
        if line.startswith("-A "):
            try:
                argv = shlex.split(line)
            except ValueError as e:
                raise ParseError(f"cannot read {line!r}: {e}") from e
            chain = argv[1]
            rule = parse_rule(chain, argv[2:], line)
            if chain.startswith(PREFIX) or (chain in BUILTIN and rule.target.startswith(PREFIX)):
                chains.setdefault(chain, []).append(rule)
            elif rule.target.startswith(PREFIX):
                refs.add(rule.target)
    return tables


def _table(
    family: IPFamily,
    name: str,
    chains: dict[str, list[Rule]],
    foreign_refs: frozenset[str] = frozenset(),
) -> Table:
    return Table(family, name, {c: tuple(rs) for c, rs in chains.items()}, foreign_refs)


def build(
    family: IPFamily, name: str, rules: Iterable[tuple[str, list[str]]], own: Iterable[str]
) -> Table:
    """A table from (chain, argv) pairs (the libiptc driver's read-back)."""
    chains: dict[str, list[Rule]] = {c: [] for c in own if c.startswith(PREFIX)}
    for chain, argv in rules:
        text = "-A " + chain + " " + " ".join(shlex.quote(a) for a in argv)
        rule = parse_rule(chain, argv, text)
        if chain.startswith(PREFIX) or (chain in BUILTIN and rule.target.startswith(PREFIX)):
            chains.setdefault(chain, []).append(rule)
    return _table(family, name, chains)
