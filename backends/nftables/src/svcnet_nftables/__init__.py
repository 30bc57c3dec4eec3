"""svcnet's nftables data plane: tables ``ip svcnet`` and ``ip6 svcnet``.

Only :mod:`svcnet_nftables.libnft` does I/O; :mod:`.render`, :mod:`.readback`,
:mod:`.interpret` and :mod:`.observed` are pure. See the README for the layout.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable

from svcnet.backend import Backend, Capabilities
from svcnet.errors import BackendError, BackendErrorKind
from svcnet.kernel import has_net_admin, nf_tables_generation
from svcnet.plan import Changes, Plan
from svcnet.probe import Outcome, Probe
from svcnet_nftables import interpret, observed, readback, render
from svcnet_nftables.libnft import LibnftablesError, Nft

__all__ = ["NftablesBackend"]

#: The chains :meth:`NftablesBackend.check` lists: the fixed skeleton whose rules
#: do not depend on the plan (base chains with the jumps, the dispatch chain using
#: every set and map, the reject chain).
WATCHED = ("nat-prerouting", "nat-output", "nat-postrouting", "services", "do-reject")


def _kind(message: str) -> BackendErrorKind:
    low = message.lower()
    if "operation not permitted" in low or "permission denied" in low:
        return BackendErrorKind.PERMISSION
    if "protocol not supported" in low or "not supported" in low:
        return BackendErrorKind.UNSUPPORTED
    return BackendErrorKind.REFUSED


class NftablesBackend(Backend):
    """Programs one node's nftables (in network namespace ``netns``)."""

    name = "nftables"
    capabilities = Capabilities(kernel=True)
    contract = "1.1"  # the backend contract version implemented (svcnet.backend)

    def __init__(self, node: str, *, netns: str | None = None) -> None:
        super().__init__(node, netns=netns)
        if not has_net_admin():
            raise BackendError(
                BackendErrorKind.PERMISSION, "nftables backend needs CAP_NET_ADMIN (run as root)"
            )
        try:
            self._nft = Nft(netns)  # a missing namespace: svcnet.kernel.NamespaceError
        except LibnftablesError as e:
            raise BackendError(BackendErrorKind.UNSUPPORTED, e.message) from e
        try:
            self._nft.run("list tables")
        except LibnftablesError as e:
            self._nft.close()
            kind = _kind(e.message)
            if kind is BackendErrorKind.REFUSED:
                kind = BackendErrorKind.UNSUPPORTED
            raise BackendError(kind, f"nf_tables is not usable here: {e.message}") from e
        self._refs: Counter[tuple[str, str, str]] = Counter()
        # the watched chains as listed right after the last full sync
        self._fingerprint: tuple[tuple[str, str, str], ...] = ()
        # the ruleset generation right after this backend's last transaction
        self._gen: int | None = None

    # -- programming -----------------------------------------------------------------
    def _run(self, text: str) -> None:
        try:
            self._nft.run(text)
        except LibnftablesError as e:
            raise BackendError(_kind(e.message), f"nft refused the transaction: {e.message}") from e
        self._gen = self._generation()

    def _generation(self) -> int | None:
        """The namespace's nf_tables generation (None if it cannot be read)."""
        try:
            return nf_tables_generation(self.netns)
        except BackendError:
            return None

    def sync(self, plan: Plan) -> None:
        """Install ``plan`` whole (one transaction). Overridden only to skip the base
        class's ``plan.diff(None)``: sorting every service costs ~0.5 s at 10k services
        and a full sync does not use the changes."""
        self._check_node(plan.node)
        self._sync(plan)
        self.installed = plan

    def _sync(self, plan: Plan) -> None:
        text, refs = render.render_full(plan)
        self._run(text)
        self._refs = refs
        try:
            self._fingerprint = self._watched()
        except BackendError:  # installed all the same; check() finds nothing until next
            self._fingerprint = ()

    def _watched(self) -> tuple[tuple[str, str, str], ...]:
        """(family, chain, its rules as canonical JSON without handles) per watched
        chain; a chain or table that is missing lists as ``"missing"``."""
        out = []
        for fam in render.FAMILIES.values():
            for chain in WATCHED:
                try:
                    listing = self._nft.list_json(f"chain {fam} {render.TABLE} {chain}")
                except LibnftablesError as e:
                    if "no such file" in e.message.lower():
                        out.append((fam, chain, "missing"))
                        continue
                    raise BackendError(_kind(e.message), e.message) from e
                rules = []
                for item in listing.get("nftables", []):
                    if "rule" in item:
                        rule = {k: v for k, v in item["rule"].items() if k != "handle"}
                        rules.append(rule)
                    elif "chain" in item:
                        rules.append({k: v for k, v in item["chain"].items() if k != "handle"})
                out.append((fam, chain, json.dumps(rules, sort_keys=True)))
        return tuple(out)

    def untouched(self) -> bool:
        """Nothing committed in the namespace's nf_tables since this backend's last
        transaction: the generation read right after it is still current."""
        if self.installed is None or self._gen is None:
            return False
        return self._generation() == self._gen

    def check(self) -> tuple[str, ...]:
        """A cheap look for damage, in two stages. First the namespace's nf_tables
        generation id (one netlink request, well under a millisecond at any size):
        the kernel bumps it on every committed transaction, so if it is still the
        one read right after this backend's last transaction nothing changed. If
        it moved (someone else committed something, maybe in another table), the
        watched chains (:data:`WATCHED`: the fixed skeleton of each family's table,
        with the hooks' jumps and the dispatch rule over the frontend map) are
        listed and compared with their listing after the last full sync; that sees
        a flushed or deleted table (``nft flush ruleset`` too), a deleted or
        changed jump, a rule inserted into or deleted from those chains, but costs
        libnftables' cache fill: ~80 ms at 12 services, ~15 s at 10,000 (every
        listing reads the whole table). Elements (one missing among thousands, a
        flushed map) and the shared forwarding chains are left to the periodic
        full sync."""
        if self.installed is None or not self._fingerprint:
            return ()
        gen = self._generation()
        if gen is not None and gen == self._gen:
            return ()
        now = self._watched()
        if now == self._fingerprint:
            self._gen = gen
            return ()
        return tuple(
            f"{fam} {render.TABLE} chain {chain}: "
            + ("missing" if new == "missing" else "rules differ")
            for (fam, chain, old), (_f, _c, new) in zip(self._fingerprint, now, strict=True)
            if old != new
        )

    def _install(self, changes: Changes, target: Plan, *, full: bool) -> None:
        if full or self.installed is None:
            self._sync(target)
            return
        cmds, delta = render.render_changes(self.installed, changes, self._refs)
        if cmds:
            self._run(cmds)
        refs = self._refs
        for key, d in delta.items():
            if d:
                left = refs[key] + d
                if left > 0:
                    refs[key] = left
                else:
                    del refs[key]

    # -- reading back -----------------------------------------------------------------
    def observe(self) -> readback.Ruleset:
        """svcnet's tables, listed from the kernel now."""
        return self._list(render.FAMILIES.values())

    def observed_plan(self) -> Plan:
        """The tables listed now, as a plan (:mod:`svcnet_nftables.observed`)."""
        return observed.observed_plan(self.observe(), self.node)

    def _list(self, families: Iterable[str]) -> readback.Ruleset:
        listings = []
        for fam in families:
            try:
                listings.append(self._nft.list_json(f"table {fam} {render.TABLE}"))
            except LibnftablesError as e:
                if "no such file" in e.message.lower():
                    continue
                raise BackendError(_kind(e.message), e.message) from e
        return readback.parse(listings)

    def _for(self, probe: Probe) -> readback.Ruleset:
        """The read-back a probe needs: its family's table only (from the kernel, now)."""
        return self._list(["ip6" if ":" in probe.dst_ip else "ip"])

    def evaluate(self, probe: Probe) -> Outcome:
        return interpret.evaluate(self._for(probe), probe)

    def trace(self, probe: Probe) -> tuple[str, ...]:
        return interpret.trace(self._for(probe), probe)

    # -- teardown -----------------------------------------------------------------------
    def cleanup(self) -> None:
        self._run(
            "".join(
                f"add table {fam} {render.TABLE}\ndelete table {fam} {render.TABLE}\n"
                for fam in render.FAMILIES.values()
            )
        )
        self.installed = None
        self._refs = Counter()
        self._fingerprint = ()

    def close(self) -> None:
        self._nft.close()
