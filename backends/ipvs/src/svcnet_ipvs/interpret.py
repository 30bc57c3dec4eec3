"""Read-back + Probe -> Outcome (pure): what the IPVS data plane does to a probe.

The walk has three stages, as a packet meets them:

1. the companion table's ``nat-prerouting`` (or ``nat-output`` for a node source),
   run by the nftables backend's interpreter: it drops, rejects, or sets the packet's
   firewall mark (and the connection's mark);
2. IPVS: a packet whose mark is a firewall-mark virtual server's, and which is
   addressed to the node (an address of one of its interfaces, the dummy one
   included) or sent by the node itself, goes to one of the virtual server's real
   servers of weight > 0 (round robin: the *set* is the observable, each member
   reported with an equal share); a virtual server without one rejects, as IPVS
   does; persistence gives the affinity timeout;
3. the companion table's ``nat-postrouting`` after the rewrite (masquerade,
   hairpin).

Anything this module does not know (a forwarding method other than NAT, a rule the
nftables interpreter cannot run) raises rather than guessing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from fractions import Fraction

import attrs
from svcnet_nftables.interpret import Interpreter, InterpretError, Path
from svcnet_nftables.readback import Table

from svcnet.model import IPFamily
from svcnet.probe import Outcome, Probe, SourceKind, Verdict
from svcnet_ipvs.render import VirtualServer

FWD_MASQ = 0  # IP_VS_CONN_F_MASQ: NAT


@attrs.frozen
class ObservedServer:
    """A virtual server as read back (with its real servers' forwarding methods)."""

    server: VirtualServer
    forwarding: tuple[int, ...] = ()  # per real server, in ``server.dests`` order


@attrs.frozen
class Observed:
    """Everything read back from one node's namespace."""

    tables: Mapping[str, Table]  # the companion tables by nft family
    servers: tuple[ObservedServer, ...] = ()  # svcnet's virtual servers
    dummy: frozenset[str] = frozenset()  # addresses on svcnet's dummy interface
    local: frozenset[str] = frozenset()  # every address of the namespace's interfaces


def _server(observed: Observed, fam: str, mark: int) -> ObservedServer | None:
    family = IPFamily.IPv4 if fam == "ip" else IPFamily.IPv6
    for found in observed.servers:
        if found.server.family is family and found.server.fwmark == mark:
            return found
    return None


def _ipvs(observed: Observed, probe: Probe, paths: list[Path]) -> list[Path]:
    """Stage 2: every path IPVS takes over, forked over the live real servers."""
    out: list[Path] = []
    for p, verdict, pk in paths:
        found = _server(observed, pk.fam, pk.mark) if verdict is None and pk.mark else None
        addressed = probe.source_kind is SourceKind.NODE or str(pk.daddr) in observed.local
        if found is None or not addressed:
            out.append((p, verdict, pk))
            continue
        vs = found.server
        for method in found.forwarding:
            if method != FWD_MASQ:
                raise InterpretError(f"virtual server fwmark {vs.fwmark:#x}: forwarding {method}")
        live = [d for d in vs.dests if d.weight > 0]
        if not live:
            t = (*pk.trace, f"ipvs fwmark {vs.fwmark:#x}: no real server: reject")
            out.append((p, "reject", attrs.evolve(pk, trace=t)))
            continue
        for d in live:
            # a persistent firewall-mark service keeps the packet's destination port
            # (the kernel's ip_vs_sched_persist), not the real server's
            port = pk.dport if vs.timeout is not None else d.port
            t = (*pk.trace, f"ipvs fwmark {vs.fwmark:#x} ({vs.scheduler}): {d.ip} port {port}")
            pk2 = attrs.evolve(
                pk,
                daddr=ipaddress.ip_address(d.ip),
                dport=port,
                dnat=(ipaddress.ip_address(d.ip), port),
                affinity=vs.timeout,
                trace=t,
            )
            out.append((p * Fraction(1, len(live)), None, pk2))
    return out


def run(observed: Observed, probe: Probe) -> tuple[Outcome, tuple[str, ...]]:
    """The outcome of ``probe`` and the trace of its walk (the nftables backend's
    interpreter walks the companion table's hooks and sums the paths up)."""
    fam = "ip" if ipaddress.ip_address(probe.dst_ip).version == 4 else "ip6"
    table = observed.tables.get(fam)
    if table is None:
        return Outcome(Verdict.PASS), ()
    nft = Interpreter({fam: table})
    walked = nft.first_hook(probe)
    assert walked is not None  # the table of the probe's family exists
    paths = nft.hook(table, "postrouting", _ipvs(observed, probe, walked[1]))
    return nft.outcome(probe, paths)


def evaluate(observed: Observed, probe: Probe) -> Outcome:
    """The outcome of ``probe``."""
    return run(observed, probe)[0]
