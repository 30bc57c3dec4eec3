"""svcnet's IPVS data plane: firewall-mark virtual servers (pyroute2's IPVS netlink),
the dummy interface ``svcnet-ipvs0`` and the companion nftables tables
``ip svcnet-ipvs`` / ``ip6 svcnet-ipvs``.

:mod:`.render`, :mod:`.ops` and :mod:`.interpret` are pure; :mod:`.kernel` (IPVS,
rtnetlink) and the nftables backend's libnftables wrapper do the I/O. See the README
for the layout and why a sync is not atomic.
"""

from __future__ import annotations

from svcnet_nftables.libnft import LibnftablesError, Nft
from svcnet_nftables.readback import ReadbackError, parse

from svcnet.backend import Backend, Capabilities
from svcnet.errors import BackendError, BackendErrorKind
from svcnet.kernel import has_net_admin
from svcnet.plan import Changes, Plan
from svcnet.probe import Outcome, Probe
from svcnet_ipvs import interpret, ops, render
from svcnet_ipvs.kernel import Kernel

__all__ = ["IpvsBackend"]


class IpvsBackend(Backend):
    """Programs one node's IPVS table (in network namespace ``netns``)."""

    name = "ipvs"
    # round robin: the endpoint *set* is the observable, not the probabilities
    capabilities = Capabilities(kernel=True, exact_probabilities=False)
    contract = "1.0"  # observed_plan() (contract 1.1) is not implemented yet

    def __init__(self, node: str, *, netns: str | None = None) -> None:
        super().__init__(node, netns=netns)
        if not has_net_admin():
            raise BackendError(
                BackendErrorKind.PERMISSION, "ipvs backend needs CAP_NET_ADMIN (run as root)"
            )
        self._kernel = Kernel(netns)
        self._kernel.check_ipvs()  # before any change: a clear error on a kernel without
        try:
            self._nft = Nft(netns)
        except LibnftablesError as e:
            raise BackendError(BackendErrorKind.UNSUPPORTED, e.message) from e
        self._marks = render.Marks()

    # -- programming -------------------------------------------------------------------
    def _nft_run(self, text: str) -> None:
        try:
            self._nft.run(text)
        except LibnftablesError as e:
            raise BackendError(
                BackendErrorKind.REFUSED, f"nft refused the companion table: {e.message}"
            ) from e

    def _install(self, changes: Changes, target: Plan, *, full: bool) -> None:
        """Make ``target`` installed: not atomic (see the README). IPVS first (new
        virtual and real servers), then the companion tables in one transaction (what
        packets are sent where), then the dummy's addresses, then deletions; every
        step diffs against what the kernel holds, so a later sync completes one that
        stopped half-way."""
        self._mark_unknown()  # until the end: a failure leaves the next apply() a full sync
        want = render.desired(target, self._marks)
        self._kernel.sysctl("net/ipv4/vs/conntrack", "1")  # nat hooks see IPVS's packets
        actual = {k: s.server for k, s in self._kernel.servers().items()}
        todo = ops.operations(actual, want.servers, full=full)
        self._kernel.run(op for op in todo if op.what != "delete")
        self._nft_run(want.nft)
        self._kernel.set_addresses(want.addresses)
        self._kernel.run(op for op in todo if op.what == "delete")

    # -- reading back ------------------------------------------------------------------
    def observe(self) -> interpret.Observed:
        """The companion tables, svcnet's virtual servers and the namespace's addresses,
        read from the kernel now."""
        listings = []
        for fam in render.FAMILIES.values():
            try:
                listings.append(self._nft.list_json(f"table {fam} {render.TABLE}"))
            except LibnftablesError as e:
                if "no such file" in e.message.lower():
                    continue
                raise BackendError(BackendErrorKind.REFUSED, e.message) from e
        try:
            tables = parse(listings).tables if listings else {}
        except ReadbackError:
            raise
        dummy, local = self._kernel.addresses()
        servers = tuple(self._kernel.servers().values())
        return interpret.Observed(tables, servers, dummy, local)

    def evaluate(self, probe: Probe) -> Outcome:
        return interpret.run(self.observe(), probe)[0]

    def trace(self, probe: Probe) -> tuple[str, ...]:
        return interpret.run(self.observe(), probe)[1]

    # -- teardown ----------------------------------------------------------------------
    def cleanup(self) -> None:
        """Delete svcnet's virtual servers, the companion tables and the dummy
        interface; nothing else."""
        actual = {k: s.server for k, s in self._kernel.servers().items()}
        self._nft_run(render.cleanup_nft())
        self._kernel.run(ops.operations(actual, {}, full=True))
        self._kernel.delete_dummy()
        self.installed = None
        self._marks = render.Marks()

    def close(self) -> None:
        self._nft.close()
