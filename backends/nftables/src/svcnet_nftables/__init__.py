"""svcnet's nftables data plane: tables ``ip svcnet`` and ``ip6 svcnet``.

Only :mod:`svcnet_nftables.libnft` (libnftables, and a netlink reader of its own)
and :mod:`svcnet_nftables.nlwrite` (full syncs and element-only changes as netlink
batches of its own) do I/O; :mod:`.render`, :mod:`.readback`, :mod:`.nlread`,
:mod:`.nlrules`, :mod:`.interpret` and :mod:`.observed` are pure. See the README for
the layout.
"""

from __future__ import annotations

import json
import socket
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TypeVar

from svcnet.backend import Backend, Capabilities
from svcnet.errors import BackendError, BackendErrorKind, SvcnetError
from svcnet.kernel import has_net_admin, nf_tables_generation
from svcnet.plan import Changes, Plan
from svcnet.probe import Outcome, Probe
from svcnet_nftables import interpret, nlread, nlrules, nlwrite, observed, readback, render
from svcnet_nftables.libnft import (
    MSG_GETCHAIN,
    MSG_GETRULE,
    MSG_GETSET,
    MSG_GETSETELEM,
    MSG_GETTABLE,
    DumpInterrupted,
    LibnftablesError,
    Netlink,
    Nft,
    nla,
    nla_str,
)

__all__ = ["NftablesBackend"]

#: The chains :meth:`NftablesBackend.check` lists: the fixed skeleton whose rules
#: do not depend on the plan (base chains with the jumps, the dispatch chain using
#: every set and map, the reject chain).
WATCHED = ("nat-prerouting", "nat-output", "nat-postrouting", "services", "do-reject")


_TRIES = 5  # reads of a ruleset that changes meanwhile
T = TypeVar("T")


class _Source:
    """:class:`svcnet_nftables.nlread.Source` over netlink: family ``family``'s
    ``svcnet`` table."""

    def __init__(self, netlink: Netlink, family: str) -> None:
        self._nl = netlink
        self.family = family
        self._table = nla_str(1, render.TABLE)  # NFTA_*_TABLE is attribute 1 everywhere

    def exists(self) -> bool:
        return self._nl.get(MSG_GETTABLE, self.family, self._table) is not None

    def chains(self) -> list[bytes]:
        return [
            c
            for c in self._nl.dump(MSG_GETCHAIN, self.family, self._table)
            if readback_table(c) == render.TABLE
        ]

    def rules(self, chain: str | None) -> list[bytes]:
        which = b"" if chain is None else nla_str(2, chain)
        try:
            return self._nl.dump(MSG_GETRULE, self.family, self._table + which)
        except LibnftablesError as e:
            if "No such file" in e.message:
                return []
            raise

    def sets(self) -> list[bytes]:
        return self._nl.dump(MSG_GETSET, self.family, self._table)

    def set(self, name: str) -> bytes | None:
        return self._nl.get(MSG_GETSET, self.family, self._table + nla_str(2, name))

    def elements(self, name: str) -> list[bytes]:
        return self._nl.dump(MSG_GETSETELEM, self.family, self._table + nla_str(2, name))

    def element(self, name: str, key: bytes) -> bytes | None:
        elem = nla(1, nla(1, nla(1, key), nested=True), nested=True)
        body = self._table + nla_str(2, name) + nla(3, elem, nested=True)
        return self._nl.get(MSG_GETSETELEM, self.family, body)

    def sets_named(self, names: list[str]) -> list[bytes | None]:
        bodies = [self._table + nla_str(2, n) for n in names]
        return self._nl.gets(MSG_GETSET, self.family, bodies)

    def elements_for(self, name: str, keys: list[bytes]) -> list[bytes | None]:
        bodies = [
            self._table
            + nla_str(2, name)
            + nla(3, nla(1, nla(1, nla(1, k), nested=True), nested=True), nested=True)
            for k in keys
        ]
        return self._nl.gets(MSG_GETSETELEM, self.family, bodies)


def readback_table(reply: bytes) -> str | None:
    """The table a NEWCHAIN/NEWRULE/NEWSET reply belongs to."""
    raw = nlrules.nl_attrs(reply).get(1)
    return None if raw is None else raw.split(b"\0", 1)[0].decode()


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
        # the socket of svcnet_nftables.nlwrite's batches (made in the namespace on first use)
        self._wsock: socket.socket | None = None

    # -- programming -----------------------------------------------------------------
    def _run(self, text: str) -> None:
        try:
            self._nft.run(text)
        except LibnftablesError as e:
            raise BackendError(_kind(e.message), f"nft refused the transaction: {e.message}") from e
        self._gen = self._generation()

    def _write(self, plan: Plan, elements: nlwrite.Elements) -> None:
        """Install ``plan`` as one netlink batch of our own (:mod:`.nlwrite`)."""
        text = nlwrite.Template.text(plan.settings, list(elements.refs))
        try:
            tpl = nlwrite.template(text, nlwrite.build_template)
        except LibnftablesError as e:
            raise BackendError(_kind(e.message), f"nft refused the structure: {e.message}") from e
        self._send(nlwrite.full_batch(elements, tpl))

    def _send(self, batch: bytes) -> None:
        """One nf_tables batch on this backend's netlink socket (made in the namespace
        on first use)."""
        if self._wsock is None:
            self._wsock = self._nft.call(nlwrite.open_socket)
        nlwrite.send(self._wsock, batch)
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
        elements = nlwrite.encode(plan)
        if elements is None:  # affinity or source ranges: libnftables writes it all
            text, refs = render.render_full(plan)
            self._run(text)
        else:
            self._write(plan, elements)
            refs = elements.refs
        self._refs = refs
        try:
            self._fingerprint = self._watched()
        except BackendError:  # installed all the same; check() finds nothing until next
            self._fingerprint = ()

    def _watched(self) -> tuple[tuple[str, str, str], ...]:
        """(family, chain, its definition and rules as canonical JSON without handles)
        per watched chain, read over netlink (a few requests, whatever the table's
        size); a chain or table that is missing lists as ``"missing"``."""
        return self._consistent(self._read_watched)

    def _read_watched(self) -> tuple[tuple[str, str, str], ...]:
        out = []
        for fam in render.FAMILIES.values():
            src = _Source(self._nft.netlink, fam)
            table = nlread.LazyTable(src, render.TABLE, src.chains())
            for chain in WATCHED:
                found = table.chain(chain)
                if found is None:
                    out.append((fam, chain, "missing"))
                    continue
                head = [found.type, found.hook, found.prio, found.policy]
                rules = [[r.exprs, r.comment] for r in found.rules]
                out.append((fam, chain, json.dumps([head, rules], sort_keys=True)))
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
        read over netlink (their rules only: a few milliseconds at any size, where
        libnftables' listing cost ~15 s at 10,000 services) and compared with their
        reading after the last full sync; that sees a flushed or deleted table
        (``nft flush ruleset`` too), a deleted or changed jump, a rule inserted
        into or deleted from those chains. Elements (one missing among thousands, a
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
        written = nlwrite.changes_batch(self.installed, changes, self._refs)
        if written is not None:  # elements only: one netlink batch of our own
            batch, delta = written
            if batch:
                self._send(batch)
        else:
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
        """svcnet's tables, read from the kernel now (a netlink dump of each family's
        table, decoded by :mod:`svcnet_nftables.nlread`; libnftables' listing of the
        same costs seconds at 10,000 services, see docs/performance.md)."""
        return self._consistent(self._read_all)

    def observe_libnftables(self) -> readback.Ruleset:
        """The same read-back through libnftables' JSON listing (slow at scale; kept to
        check the netlink reader against)."""
        return self._list(render.FAMILIES.values())

    def observed_plan(self) -> Plan:
        """The tables read now, as a plan (:mod:`svcnet_nftables.observed`)."""
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

    def _consistent(self, read: Callable[[], T]) -> T:
        """``read()`` between two reads of the nf_tables generation that agree (a
        transaction committed in between makes it read again; a few tries)."""
        nl = self._nft.netlink
        for attempt in range(_TRIES):
            try:
                before = nl.generation()
                value = read()
                if nl.generation() == before or attempt == _TRIES - 1:
                    return value
            except DumpInterrupted:
                if attempt == _TRIES - 1:
                    raise BackendError(
                        BackendErrorKind.REFUSED, "the ruleset kept changing while read"
                    ) from None
            except LibnftablesError as e:
                raise BackendError(_kind(e.message), e.message) from e
            except (KeyError, IndexError, ValueError, struct.error, UnicodeDecodeError) as e:
                if isinstance(e, SvcnetError):
                    raise
                raise readback.ReadbackError(f"unexpected netlink reply: {e!r}") from e
        raise AssertionError("unreachable")

    def _read_all(self) -> readback.Ruleset:
        tables = {}
        for fam in render.FAMILIES.values():
            src = _Source(self._nft.netlink, fam)
            if src.exists():
                tables[fam] = nlread.read_table(src, render.TABLE)
        return readback.Ruleset(tables)

    def _tables_for(self, probe: Probe) -> Callable[[], tuple[Outcome, tuple[str, ...]]]:
        """An evaluation of ``probe`` over its family's table read on demand."""
        fam = "ip6" if ":" in probe.dst_ip else "ip"

        def run() -> tuple[Outcome, tuple[str, ...]]:
            src = _Source(self._nft.netlink, fam)
            chains = src.chains()
            tables: dict[str, readback.Table] = {}
            if chains or src.exists():
                tables[fam] = nlread.LazyTable(src, render.TABLE, chains)
            return interpret.run(tables, probe)

        return run

    def evaluate(self, probe: Probe) -> Outcome:
        """What the installed rules do to ``probe``: reads only what its walk reaches
        (:class:`svcnet_nftables.nlread.LazyTable`), from the kernel, at every call."""
        return self._consistent(self._tables_for(probe))[0]

    def trace(self, probe: Probe) -> tuple[str, ...]:
        return self._consistent(self._tables_for(probe))[1]

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
        if self._wsock is not None:
            self._wsock.close()
            self._wsock = None
        self._nft.close()
