"""Readers of a node's rules, one per layout, each answering probes (pure).

Rules come in as text already read (``iptables-save`` output, ``nft -j list
ruleset`` JSON); reading them from a live namespace or from files is the CLI's
job (:mod:`svcnet.cli.audit`).

- ``kube-proxy-iptables``: kube-proxy's iptables mode (``KUBE-SERVICES``,
  ``KUBE-SVC-*``, ``KUBE-SEP-*``, ``KUBE-EXT-*``, ``KUBE-FW-*``, ``KUBE-NODEPORTS``,
  ``KUBE-MARK-MASQ``, ``KUBE-POSTROUTING``, filter ``KUBE-SERVICES``,
  ``KUBE-EXTERNAL-SERVICES``, ``KUBE-PROXY-FIREWALL``, ``KUBE-FORWARD``). Walked by
  svcnet's iptables interpreter (:mod:`svcnet_iptables.interpret`: chains,
  ``-m statistic``, ``-m recent``, marks, DNAT, MASQUERADE), with what kube-proxy's
  layout needs on top (:class:`KubeInterpreter`): kube-proxy's part of the tables is
  kept (its ``KUBE-`` chains and the built-in chains' jumps to them; other tools'
  rules are not walked), ``-m addrtype --dst-type LOCAL`` is true for the node's
  own addresses and 127.0.0.0/8, ``-m conntrack ! --ctstate`` (kube-proxy's
  ``KUBE-FIREWALL``) sees a new packet, DNAT once NATed, and a packet that is not
  DNATed to a local address takes filter FORWARD (the kernel routes it on), not
  INPUT;
- ``svcnet-iptables`` / ``svcnet-nftables``: svcnet's own layouts, read and walked
  by those backends' readers and interpreters.

- ``kube-proxy-nftables``: kube-proxy's nftables mode (tables ``ip kube-proxy`` and
  ``ip6 kube-proxy``: maps ``service-ips``, ``service-nodeports``,
  ``no-endpoint-services``, ``no-endpoint-nodeports``, ``firewall-ips``; chains
  ``services``, ``service-*``, ``local-*``, ``external-*``, ``endpoint-*``,
  ``mark-for-masquerade``, ``masquerading``, the ``filter-*`` checks), walked by
  svcnet's nftables interpreter with the hooks, routing and matches kube-proxy's
  layout needs (:mod:`svcnet.audit.kubenft`).
"""

from __future__ import annotations

import enum
import ipaddress
import json
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from svcnet_iptables import interpret as ipt_interpret
from svcnet_iptables import readback as ipt_readback
from svcnet_nftables import interpret as nft_interpret
from svcnet_nftables import readback as nft_readback
from svcnet_nftables.render import TABLE as SVCNET_NFT_TABLE

from svcnet.errors import SvcnetError
from svcnet.model import IPFamily, norm_ip
from svcnet.probe import Outcome, Probe, SourceKind

from .kubenft import KUBE_PROXY_TABLE, KubeNftInterpreter, KubeNftReader

__all__ = [
    "KubeInterpreter",
    "KubeRule",
    "Layout",
    "LayoutError",
    "detect_layout",
    "parse_kube_save",
    "reader",
]


class Layout(enum.Enum):
    KUBE_PROXY_IPTABLES = "kube-proxy-iptables"
    KUBE_PROXY_NFTABLES = "kube-proxy-nftables"
    SVCNET_IPTABLES = "svcnet-iptables"
    SVCNET_NFTABLES = "svcnet-nftables"


class LayoutError(SvcnetError, ValueError):
    """The rules given are not in a layout the audit reads."""


# -- kube-proxy's iptables layout ------------------------------------------------------


@attrs.frozen
class KubeRule(ipt_readback.Rule):
    """A rule of kube-proxy's tables: svcnet's :class:`~svcnet_iptables.readback.Rule`,
    ``-m addrtype --dst-type LOCAL`` (``dst_local``; False: negated) and ``-m
    conntrack ! --ctstate S,...`` (``ctstate_not``: the states that make it miss)."""

    dst_local: bool | None = None
    ctstate_not: frozenset[str] | None = None


def _take(argv: list[str], option: str) -> tuple[list[str], str | None, bool]:
    """``argv`` without its ``[!] OPTION VALUE``; the value (None: no such option) and
    whether it was negated."""
    if option not in argv:
        return argv, None, False
    i = argv.index(option)
    value = argv[i + 1] if i + 1 < len(argv) else ""
    neg = i > 0 and argv[i - 1] == "!"
    return argv[: i - 1 if neg else i] + argv[i + 2 :], value, neg


def _kube_rule(chain: str, argv: list[str], text: str) -> KubeRule:
    unknown: list[str] = []
    rest, dst_type, neg = _take(argv, "--dst-type")
    dst_local = None
    if dst_type is not None:
        if dst_type == "LOCAL":
            dst_local = not neg
        else:
            unknown.append(f"--dst-type {dst_type}")
    ctstate_not = None
    if "--ctstate" in rest and rest[rest.index("--ctstate") - 1] == "!":
        rest, states, _neg = _take(rest, "--ctstate")
        ctstate_not = frozenset((states or "").split(","))
    rule = ipt_readback.parse_rule(chain, rest, text)
    fields = attrs.asdict(rule, recurse=False)
    fields["unknown"] = (*rule.unknown, *unknown)
    return KubeRule(dst_local=dst_local, ctstate_not=ctstate_not, **fields)


def _kube_proxys(chain: str, line: str) -> bool:
    """Whether a saved rule is kube-proxy's part: a rule of a ``KUBE-`` chain, or a
    built-in chain's jump to one (other tools' rules are not walked)."""
    if chain.startswith("KUBE-"):
        return True
    return chain in ipt_readback.BUILTIN and (" -j KUBE-" in line or " -g KUBE-" in line)


def parse_kube_save(text: str, family: IPFamily) -> dict[str, ipt_readback.Table]:
    """``iptables-save`` output -> kube-proxy's part of every table in it: its
    ``KUBE-`` chains and the built-in chains' jumps to them (as svcnet's reader keeps
    svcnet's part), each rule parsed as a :class:`KubeRule`."""
    tables: dict[str, ipt_readback.Table] = {}
    current: str | None = None
    chains: dict[str, list[ipt_readback.Rule]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            current, chains = line[1:], {}
        elif line.startswith(":"):
            name = line[1:].split()[0]
            if name.startswith("KUBE-") or name in ipt_readback.BUILTIN:
                chains.setdefault(name, [])
        elif line.startswith("-A "):
            try:
                argv = ipt_readback.split_line(line)
            except ValueError as e:
                raise ipt_readback.ParseError(f"cannot read {line!r}: {e}") from e
            if _kube_proxys(argv[1], line):
                chains.setdefault(argv[1], []).append(_kube_rule(argv[1], argv[2:], line))
        elif line == "COMMIT" and current is not None:
            tables[current] = ipt_readback.Table(
                family, current, {c: tuple(rs) for c, rs in chains.items()}
            )
            current = None
    return tables


class KubeInterpreter(ipt_interpret.Interpreter):
    """svcnet's iptables interpreter over kube-proxy's tables: ``--dst-type LOCAL``
    is true for ``local`` (the node's addresses) and loopback; a packet that is not
    DNATed to a local address is forwarded (filter FORWARD), one to a local
    address is delivered (INPUT), a node's own packet goes out (OUTPUT)."""

    def __init__(self, ruleset: ipt_readback.Ruleset, local: Iterable[str]) -> None:
        super().__init__(ruleset)
        self.local = frozenset(norm_ip(a) for a in local)

    def is_local(self, ip: str) -> bool:
        return ipaddress.ip_address(ip).is_loopback or norm_ip(ip) in self.local

    def _matches(self, rule: ipt_readback.Rule, probe: Probe, st: Any) -> bool:
        if isinstance(rule, KubeRule):
            if rule.dst_local is not None and self.is_local(st.dst_ip) != rule.dst_local:
                return False
            # a probe is a new connection's first packet; DNAT is a state once NATed
            states = {"NEW", "DNAT"} if st.dnat is not None else {"NEW"}
            if rule.ctstate_not is not None and states & rule.ctstate_not:
                return False
        return super()._matches(rule, probe, st)

    def filter_chain(self, probe: Probe, dst_ip: str, dnat: bool) -> str:
        if probe.source_kind is SourceKind.NODE:
            return "OUTPUT"
        return "INPUT" if self.is_local(dst_ip) else "FORWARD"


# -- answering probes ------------------------------------------------------------------


@attrs.frozen
class IptablesReader:
    """Probes answered over iptables tables (either layout)."""

    layout: str
    interpreter: ipt_interpret.Interpreter

    def answer(self, probe: Probe) -> Outcome:
        return self.interpreter.evaluate(probe)

    def trace(self, probe: Probe) -> tuple[str, ...]:
        return self.interpreter.trace(probe)


@attrs.frozen
class NftablesReader:
    """Probes answered over svcnet's nftables tables."""

    layout: str
    ruleset: nft_readback.Ruleset

    def answer(self, probe: Probe) -> Outcome:
        return nft_interpret.evaluate(self.ruleset, probe)

    def trace(self, probe: Probe) -> tuple[str, ...]:
        return nft_interpret.trace(self.ruleset, probe)


def _nft_tables(listing: Mapping[str, Any]) -> set[tuple[str, str]]:
    out = set()
    for obj in listing.get("nftables", ()):
        if isinstance(obj, dict) and "table" in obj:
            out.add((obj["table"].get("family", ""), obj["table"].get("name", "")))
    return out


def _only_table(listing: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The listing's objects that belong to table ``name`` (any family)."""
    keep = []
    for obj in listing.get("nftables", ()):
        if not isinstance(obj, dict):
            continue
        body = next(iter(obj.values()), None)
        if isinstance(body, dict) and body.get("table", body.get("name")) == name:
            keep.append(obj)
    return {"nftables": keep}


def detect_layout(iptables: Iterable[str] = (), nft_json: str | None = None) -> Layout:
    """Whose rules these are, by their chain and table names."""
    texts = list(iptables)
    if any(":KUBE-SERVICES " in t or "-A KUBE-SERVICES " in t for t in texts):
        return Layout.KUBE_PROXY_IPTABLES
    if any(":" + ipt_readback.PREFIX in t for t in texts):
        return Layout.SVCNET_IPTABLES
    if nft_json is not None:
        tables = {name for _fam, name in _nft_tables(_load_json(nft_json))}
        if KUBE_PROXY_TABLE in tables:
            return Layout.KUBE_PROXY_NFTABLES
        if SVCNET_NFT_TABLE in tables:
            return Layout.SVCNET_NFTABLES
    raise LayoutError(
        "no known layout in the rules given: no KUBE-SERVICES or SVCNET- chain, "
        "no nftables table kube-proxy or svcnet"
    )


def _load_json(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise LayoutError(f"nft JSON: not JSON: {e}") from e
    if not isinstance(doc, dict) or "nftables" not in doc:
        raise LayoutError("nft JSON: no 'nftables' key (expected `nft -j list ruleset`)")
    return doc


def reader(
    layout: Layout,
    *,
    iptables: Mapping[IPFamily, str] | None = None,
    nft_json: str | None = None,
    local: Iterable[str] = (),
) -> IptablesReader | NftablesReader | KubeNftReader:
    """The reader of ``layout`` over the rules given: ``iptables``, save texts by
    family (``iptables-save``, ``ip6tables-save``); ``nft_json``, ``nft -j list
    ruleset``; ``local``, the node's own addresses."""
    if layout in (Layout.KUBE_PROXY_IPTABLES, Layout.SVCNET_IPTABLES):
        if not iptables:
            raise LayoutError(f"layout {layout.value}: no iptables-save text given")
        tables: dict[tuple[IPFamily, str], ipt_readback.Table] = {}
        for family, text in iptables.items():
            if layout is Layout.KUBE_PROXY_IPTABLES:
                parsed = parse_kube_save(text, family)
            else:
                parsed = ipt_readback.parse_save(text, family)
            tables.update({(family, name): t for name, t in parsed.items()})
        ruleset = ipt_readback.Ruleset(tables)
        if layout is Layout.KUBE_PROXY_IPTABLES:
            return IptablesReader(layout.value, KubeInterpreter(ruleset, local))
        return IptablesReader(layout.value, ipt_interpret.Interpreter(ruleset))
    if layout is Layout.SVCNET_NFTABLES:
        if nft_json is None:
            raise LayoutError(f"layout {layout.value}: no nft JSON given")
        doc = _only_table(_load_json(nft_json), SVCNET_NFT_TABLE)
        return NftablesReader(layout.value, nft_readback.parse(doc))
    if layout is Layout.KUBE_PROXY_NFTABLES:
        if nft_json is None:
            raise LayoutError(f"layout {layout.value}: no nft JSON given")
        doc = _only_table(_load_json(nft_json), KUBE_PROXY_TABLE)
        kube = nft_readback.parse(doc)
        if not kube.tables:
            raise LayoutError(f"layout {layout.value}: no table {KUBE_PROXY_TABLE} in the JSON")
        return KubeNftReader(layout.value, KubeNftInterpreter(kube, local))
    raise LayoutError(f"layout {layout.value}: not read by svcnet audit")
