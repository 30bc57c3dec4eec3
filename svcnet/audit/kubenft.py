"""kube-proxy's nftables mode read from ``nft -j list ruleset`` JSON (pure).

kube-proxy's tables (``ip kube-proxy``, ``ip6 kube-proxy``) are walked by svcnet's
nftables interpreter (:mod:`svcnet_nftables.interpret`: verdict maps, ``numgen
random mod N vmap``, dynamic affinity sets, marks, DNAT, masquerade), with what
kube-proxy's layout needs on top (:class:`KubeNftInterpreter`):

- ``fib daddr type local`` is true for the node's own addresses and loopback;
- ``ct state new`` holds (a probe is a new connection's first packet);
- a hook's base chains run in priority order and, once a nat chain has DNATed the
  packet, the later ones see its new destination (the kernel rewrites the packet
  in the nat chain): ``filter-prerouting-pre-dnat`` (firewall-check) sees the
  frontend, ``filter-input``/``filter-forward``/``filter-output`` (the
  no-endpoint and cluster-ips checks) see the endpoint;
- after the first hook the packet is routed: to a local address it takes
  ``input``, otherwise ``forward``, then ``postrouting`` (masquerading: the mark
  decides, as the reference counts it, also for an endpoint at a local address); a
  node's own packet takes ``output``, ``postrouting`` and, to a local address,
  ``input``.

Only kube-proxy's tables are walked (a runtime's or a CNI's tables are not).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

import attrs
from svcnet_nftables import interpret as nft_interpret
from svcnet_nftables import readback as nft_readback

from svcnet.model import norm_ip
from svcnet.probe import Outcome, Probe, SourceKind, Verdict

__all__ = ["KUBE_PROXY_TABLE", "KubeNftInterpreter", "KubeNftReader", "UnreadableError"]

KUBE_PROXY_TABLE = "kube-proxy"
_NEW = frozenset({"new"})


class UnreadableError(nft_interpret.InterpretError):
    """The rules give a probe no single outcome (e.g. some ``numgen`` branches DNAT,
    others fall through); ``trace`` holds the rules every branch walked."""

    def __init__(self, message: str, trace: tuple[str, ...]) -> None:
        super().__init__(message)
        self.trace = trace


class KubeNftInterpreter(nft_interpret.Interpreter):
    """svcnet's nftables interpreter over kube-proxy's tables (see the module doc);
    ``local``: the node's own addresses."""

    def __init__(self, ruleset: nft_readback.Ruleset, local: Iterable[str]) -> None:
        super().__init__(ruleset)
        self.local = frozenset(norm_ip(a) for a in local)

    def is_local(self, ip: Any) -> bool:
        addr = ipaddress.ip_address(ip)
        return addr.is_loopback or norm_ip(str(addr)) in self.local

    def value(
        self, table: nft_readback.Table, expr: Any, pkt: nft_interpret.Packet
    ) -> list[tuple[Fraction, Any]]:
        if isinstance(expr, dict) and len(expr) == 1:
            ((kind, body),) = expr.items()
            if kind == "fib" and body.get("result") == "type" and body.get("flags") == ["daddr"]:
                return [(Fraction(1), "local" if self.is_local(pkt.daddr) else "unicast")]
            if kind == "ct" and body.get("key") == "state":
                return [(Fraction(1), _NEW)]
        return super().value(table, expr, pkt)

    def _matches(
        self, table: nft_readback.Table, op: str, left: Any, right: Any, pkt: nft_interpret.Packet
    ) -> bool:
        if isinstance(left, frozenset) and op == "==":
            op = "in"  # ``ct state new`` may be listed with "==": a flag test either way
        return super()._matches(table, op, left, right, pkt)

    def hook(
        self, table: nft_readback.Table, hook: str, paths: list[nft_interpret.Path]
    ) -> list[nft_interpret.Path]:
        for base in table.base_chains(hook):
            nxt: list[nft_interpret.Path] = []
            for p, v, pk in paths:
                if v in ("drop", "reject"):
                    nxt.append((p, v, pk))
                    continue
                for q, w, pk2 in self.chain(table, base.name, _natted(pk)):
                    if w is None:
                        w = base.policy if base.policy == "drop" else None
                    nxt.append((p * q, None if w == "accept" else w, pk2))
            paths = nxt
        return paths

    def _routed(
        self, table: nft_readback.Table, kind: SourceKind, paths: list[nft_interpret.Path]
    ) -> list[nft_interpret.Path]:
        """``paths`` after the first hook: routed to ``input``, ``forward`` and
        ``postrouting`` by their (rewritten) destination."""
        out: list[nft_interpret.Path] = []
        for path in paths:
            pk = _natted(path[2])
            local = self.is_local(pk.daddr)
            if kind is SourceKind.NODE:
                hooks = ("postrouting", "input") if local else ("postrouting",)
            else:
                # postrouting after input too: an endpoint at a local address
                # (a host-network pod) counts as masqueraded when marked, as the
                # reference and svcnet's own interpreter count it
                hooks = ("input" if local else "forward", "postrouting")
            walked = [(path[0], path[1], pk)]
            for hook in hooks:
                walked = self.hook(table, hook, walked)
            out += walked
        return out

    def run(self, probe: Probe) -> tuple[Outcome, tuple[str, ...]]:
        walked = self.first_hook(probe)
        if walked is None:
            return Outcome(Verdict.PASS), ()
        table, first = walked
        paths = self._routed(table, probe.source_kind, first)
        try:
            return self.outcome(probe, paths)
        except nft_interpret.InterpretError as e:
            trace = tuple(dict.fromkeys(line for _, _, pk in paths for line in pk.trace))
            raise UnreadableError(str(e), trace) from e


def _natted(pk: nft_interpret.Packet) -> nft_interpret.Packet:
    """``pk`` with its destination rewritten once DNATed."""
    if pk.dnat is None or (pk.daddr, pk.dport) == pk.dnat:
        return pk
    return attrs.evolve(pk, daddr=pk.dnat[0], dport=pk.dnat[1])


@attrs.frozen
class KubeNftReader:
    """Probes answered over kube-proxy's nftables tables."""

    layout: str
    interpreter: KubeNftInterpreter

    def answer(self, probe: Probe) -> Outcome:
        return self.interpreter.run(probe)[0]

    def trace(self, probe: Probe) -> tuple[str, ...]:
        return self.interpreter.run(probe)[1]
