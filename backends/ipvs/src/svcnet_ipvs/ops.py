"""What to do to the kernel's IPVS table to make it hold the desired virtual servers
(pure): single add / edit / delete operations of virtual and real servers.

The diff starts from what was read back from the kernel (not from a cache), so a sync
that stopped half-way (netlink has no transactions) is completed by the next one.
Only svcnet's virtual servers (firewall marks in ``MARK_MIN..MARK_MAX``) are touched.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from svcnet.model import IPFamily
from svcnet_ipvs.render import MARK_MAX, MARK_MIN, RealServer, VirtualServer

ServerKey = tuple[IPFamily, int]


@attrs.frozen
class Op:
    """One netlink request: ``what`` is ``add``, ``edit`` or ``delete``; ``dest`` None:
    the virtual server itself."""

    what: str
    server: VirtualServer
    dest: RealServer | None = None

    def __str__(self) -> str:
        vs = self.server
        where = f"{vs.family.value} fwmark {vs.fwmark:#x}"
        if self.dest is None:
            return f"{self.what} virtual server {where}"
        d = self.dest
        return f"{self.what} real server {d.ip} port {d.port} weight {d.weight} of {where}"


def ours(mark: int) -> bool:
    """True for a firewall mark of svcnet's range."""
    return MARK_MIN <= mark <= MARK_MAX


def operations(
    actual: Mapping[ServerKey, VirtualServer],
    wanted: Mapping[ServerKey, VirtualServer],
    *,
    full: bool,
) -> list[Op]:
    """The requests moving ``actual`` to ``wanted``. Real servers leaving a virtual
    server that stays are kept with weight 0 (graceful termination: their connections
    go on, no new one is scheduled to them) unless ``full``, which deletes them.
    Order: new and changed virtual servers and their real servers first, deletions
    last (a frontend the companion table still sends to a server keeps working)."""
    adds: list[Op] = []
    dels: list[Op] = []
    for key, want in wanted.items():
        have = actual.get(key)
        if have is None:
            adds.append(Op("add", want))
            adds += [Op("add", want, d) for d in want.dests]
            continue
        if (have.protocol, have.timeout, have.scheduler) != (
            want.protocol,
            want.timeout,
            want.scheduler,
        ):
            adds.append(Op("edit", want))
        had = {(d.ip, d.port): d for d in have.dests}
        for d in want.dests:
            old = had.pop((d.ip, d.port), None)
            if old is None:
                adds.append(Op("add", want, d))
            elif old.weight != d.weight:
                adds.append(Op("edit", want, d))
        for old in had.values():
            if full:
                dels.append(Op("delete", want, old))
            elif old.weight != 0:
                dels.append(Op("edit", want, attrs.evolve(old, weight=0)))
    for key, have in actual.items():
        if key not in wanted and ours(have.fwmark):
            dels.append(Op("delete", have))
    return adds + dels
