"""iptables-save text (or libiptc rules turned into argv) -> structure (pure).

Only svcnet's part is kept: its chains (``SVCNET-*``) and the rules of built-in
chains that jump to them. Every rule is parsed into a :class:`Rule` whose
matches and target the interpreter understands; an option it does not know is
kept in ``unknown`` so the interpreter can refuse to guess.

Parsing is lazy per chain (:class:`Chains`): a saved table's lines are grouped by
chain at once, and a chain's rules are parsed the first time it is looked up, so a
probe's walk parses the few chains it reaches and not the 200,000 rules of a
10,000-service table. Lines are split by :func:`split_line` (``shlex`` only where
the line has a backslash or a single quote; ``shlex`` was 80% of a full parse).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping

import attrs

from svcnet.errors import SvcnetError
from svcnet.model import IPFamily

PREFIX = "SVCNET-"
BUILTIN = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})


class ParseError(SvcnetError, ValueError):
    """A rule line could not be read."""


@functools.lru_cache(maxsize=1024)
def _ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """A probe's address, parsed once (a walk compares it with every rule's)."""
    return ipaddress.ip_address(ip)


@attrs.frozen
class Addr:
    net: ipaddress.IPv4Network | ipaddress.IPv6Network
    negated: bool = False

    def matches(self, ip: str) -> bool:
        a = _ip(ip)
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


_TOKEN = re.compile(r'(?:[^ \t\r\n"]+|"[^"]*")+')


def split_line(line: str) -> list[str]:
    """The words of a saved line, exactly as ``shlex.split`` gives them (a
    ``ValueError`` for an unclosed quote). Lines with only double quotes, which is
    how iptables-save quotes a comment, are split by one regular expression."""
    if "\\" in line or "'" in line or line.count('"') % 2:
        return shlex.split(line)
    if '"' not in line:
        return _TOKEN.findall(line)
    return [tok.replace('"', "") for tok in _TOKEN.findall(line)]


@functools.lru_cache(maxsize=1 << 16)
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


_Pending = list[tuple[str, list[str] | None]]  # (saved line, its words if split)
_QUOTING = frozenset("\"'\\\t\r")


class Chains(Mapping[str, tuple[Rule, ...]]):
    """A table's chains, name -> rules: each chain's saved lines are parsed into
    :class:`Rule` s the first time the chain is looked up, and kept.
    ``in``, iteration and ``len`` parse nothing."""

    def __init__(
        self,
        pending: dict[str, _Pending],
        parsed: dict[str, tuple[Rule, ...]] | None = None,
    ) -> None:
        self._pending = pending
        self._parsed: dict[str, tuple[Rule, ...]] = dict(parsed or {})

    def __getitem__(self, chain: str) -> tuple[Rule, ...]:
        rules = self._parsed.get(chain)
        if rules is None:
            lines = self._pending[chain]  # KeyError: no such chain
            rules = tuple(
                parse_rule(chain, (split_line(line) if argv is None else argv)[2:], line)
                for line, argv in lines
            )
            self._parsed[chain] = rules
        return rules

    def __contains__(self, chain: object) -> bool:
        return chain in self._pending

    def __iter__(self) -> Iterator[str]:
        return iter(self._pending)

    def __len__(self) -> int:
        return len(self._pending)

    def __repr__(self) -> str:
        return f"Chains({len(self._pending)} chains, {len(self._parsed)} parsed)"


def _words(line: str) -> list[str]:
    try:
        return split_line(line)
    except ValueError as e:
        raise ParseError(f"cannot read {line!r}: {e}") from e


class _Collector:
    """One table's lines, grouped as :func:`parse_save` keeps them."""

    def __init__(self) -> None:
        self.pending: dict[str, _Pending] = {}
        self.parsed: dict[str, tuple[Rule, ...]] = {}
        self.refs: set[str] = set()

    def declare(self, chain: str) -> None:
        if chain.startswith(PREFIX):
            self.pending.setdefault(chain, [])

    def add(self, line: str) -> None:
        """One ``-A`` line: svcnet's chains' lines wait (only a line a plain split
        cannot read is split now, so an unreadable one fails here as before); a
        built-in chain's rules, and a rule of another chain naming svcnet, are
        parsed now (their targets decide what is kept)."""
        head = line[3:].split(" ", 1)[0]
        argv: list[str] | None = None
        if not head or not _QUOTING.isdisjoint(head):
            argv = _words(line)
            chain = argv[1]
        else:
            chain = head
        if chain.startswith(PREFIX):
            if argv is None and ("\\" in line or "'" in line or line.count('"') % 2):
                argv = _words(line)
            self.pending.setdefault(chain, []).append((line, argv))
            return
        if chain not in BUILTIN and PREFIX not in line:
            return  # its target cannot be an svcnet chain
        argv = argv if argv is not None else _words(line)
        rule = parse_rule(chain, argv[2:], line)
        if not rule.target.startswith(PREFIX):
            return
        if chain in BUILTIN:
            self.pending.setdefault(chain, [])
            self.parsed[chain] = (*self.parsed.get(chain, ()), rule)
        else:
            self.refs.add(rule.target)

    def table(self, family: IPFamily, name: str) -> Table:
        return Table(family, name, Chains(self.pending, self.parsed), frozenset(self.refs))


def parse_save(text: str, family: IPFamily) -> dict[str, Table]:
    """``iptables-save`` output -> svcnet's part of each table in it (the rules of
    svcnet's chains parsed lazily, see :class:`Chains`)."""
    tables: dict[str, Table] = {}
    current: str | None = None
    col = _Collector()
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] == "#":
            continue
        if line[0] == "-" and line.startswith("-A "):
            col.add(line)
        elif line[0] == ":":
            col.declare(line[1:].split()[0])
        elif line[0] == "*":
            current = line[1:]
            col = _Collector()
        elif line == "COMMIT":
            if current is not None:
                tables[current] = col.table(family, current)
            current = None
    return tables


def parse_listing(text: str, family: IPFamily, table: str, chain: str) -> tuple[Rule, ...]:
    """``iptables -t TABLE -S CHAIN`` output -> the chain's rules as :func:`parse_save`
    keeps them (a built-in chain: only its rules that jump to svcnet's chains)."""
    col = _Collector()
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("-A "):
            col.add(line)
    return col.table(family, table).chains.get(chain, ())


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


class LazyChains(Mapping[str, tuple[Rule, ...]]):
    """One table's chains as :func:`parse_save` keeps them (svcnet's chains, and the
    built-in chains' jumps to them), each fetched (:meth:`_fetch`) the first time it
    is looked up and then kept; another tool's chain is never fetched (it is not
    there, as in a parsed save). Iterating parses the whole table once
    (:meth:`_saved`)."""

    def __init__(self, family: IPFamily, name: str) -> None:
        self._family = family
        self._name = name
        self._found: dict[str, tuple[Rule, ...] | None] = {}
        self._whole: Table | None = None

    def _fetch(self, chain: str) -> tuple[Rule, ...] | None:
        """The rules of ``chain`` (svcnet's or built-in), None when it is not there."""
        raise NotImplementedError

    def _saved(self) -> str:
        """The whole table as save text (``*name`` ... ``COMMIT``)."""
        raise NotImplementedError

    def __getitem__(self, chain: str) -> tuple[Rule, ...]:
        if chain not in self._found:
            if not (chain.startswith(PREFIX) or chain in BUILTIN):
                raise KeyError(chain)
            self._found[chain] = self._fetch(chain)
        found = self._found[chain]
        if found is None:
            raise KeyError(chain)
        return found

    def __contains__(self, chain: object) -> bool:
        if not isinstance(chain, str):
            return False
        try:
            self[chain]
        except KeyError:
            return False
        return True

    def _all(self) -> Table:
        if self._whole is None:
            self._whole = parse_save(self._saved(), self._family).get(self._name) or Table(
                self._family, self._name, {}
            )
        return self._whole

    def __iter__(self) -> Iterator[str]:
        return iter(self._all().chains)

    def __len__(self) -> int:
        return len(self._all().chains)


class SavedChains(LazyChains):
    """One table of a saved text, read without going through the text: a chain
    looked up is found with ``str.find`` (its ``:CHAIN`` declaration, and its rules,
    which a save prints together) and only its lines are parsed. For probes over a
    big table, where grouping every line costs more than the few lookups of a walk."""

    def __init__(self, family: IPFamily, name: str, section: str) -> None:
        super().__init__(family, name)
        self._section = section  # "\n"-led lines of one table, "*name" to "COMMIT"

    def _lines(self, chain: str) -> list[str]:
        text = self._section
        marker = "\n-A " + chain + " "
        start = text.find(marker)
        out: list[str] = []
        while start >= 0:
            end = text.find("\n", start + 1)
            out.append(text[start + 1 : end if end >= 0 else len(text)].strip())
            start = end if end >= 0 and text.startswith(marker, end) else -1
        return out

    def _fetch(self, chain: str) -> tuple[Rule, ...] | None:
        lines = self._lines(chain)
        if chain in BUILTIN:
            col = _Collector()
            for ln in lines:
                col.add(ln)
            return col.parsed.get(chain, ())
        if lines or self._section.find("\n:" + chain + " ") >= 0:
            return tuple(parse_rule(chain, _words(ln)[2:], ln) for ln in lines)
        return None

    def _saved(self) -> str:
        return f"*{self._name}{self._section}\nCOMMIT\n"


def saved_ruleset(text: str, family: IPFamily, tables: Iterable[str]) -> Ruleset:
    """``iptables-save`` output -> a ruleset of ``tables`` whose chains are found and
    parsed when looked up (:class:`SavedChains`); a table not in the text is empty."""
    out: dict[tuple[IPFamily, str], Table] = {}
    for name in tables:
        head = f"*{name}\n"
        start = 0 if text.startswith(head) else text.find("\n" + head)
        if start < 0:
            continue
        body = text.find("\n", start + 1)
        end = text.find("\nCOMMIT", body)
        section = text[body : end if end >= 0 else len(text)]
        out[(family, name)] = Table(family, name, SavedChains(family, name, section))
    return Ruleset(out)
