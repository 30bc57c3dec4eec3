"""svcnet's iptables data plane.

``IptablesBackend(node, netns=..., driver="restore")`` programs one node's network
namespace with kube-proxy's iptables layout (see :mod:`svcnet_iptables.render`),
through ``iptables-restore`` (``driver="restore"``, nft or legacy, the default)
or python-iptables (``driver="iptc"``, legacy tables only). It reads the rules
back from the kernel and answers probes from that read-back alone, read at each
probe (the nft variant: only the chains the probe reaches, see
:mod:`svcnet_iptables.chains`).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import ClassVar, Protocol, TypeVar

from svcnet.backend import Backend, Capabilities
from svcnet.errors import BackendError, BackendErrorKind, SvcnetError
from svcnet.kernel import nf_tables_generation
from svcnet.model import IPFamily
from svcnet.plan import Changes, Plan
from svcnet.probe import Outcome, Probe

from .chains import ChainLister, listed_ruleset
from .interpret import Interpreter, InterpretError
from .observed import observed_plan
from .readback import Ruleset, parse_save, saved_ruleset
from .render import FAMILIES, FILTER_TABLE, SHARED_CHAINS, TABLES, Renderer
from .sync import (
    Existing,
    cleanup_text,
    filter_intact,
    filter_sync,
    full_sync_stream,
    partial_sync,
)

__all__ = ["InterpretError", "IptablesBackend", "Ruleset"]

T = TypeVar("T")


class Driver(Protocol):
    name: str

    def check(self) -> None: ...
    def read(self, families: Iterable[IPFamily] = ...) -> Ruleset: ...
    def apply(self, texts: dict[tuple[IPFamily, str], str]) -> None: ...
    def save_text(self, family: IPFamily, table: str | None = None) -> str: ...
    def close(self) -> None: ...


def _existing(rs: Ruleset) -> dict[tuple[IPFamily, str], Existing]:
    out = {}
    for family in FAMILIES:
        for table in TABLES:
            t = rs.table(family, table)
            intact = table == FILTER_TABLE and filter_intact(t)
            out[(family, table)] = Existing(t.own_chains, t.jumps, intact)
    return out


def refuse_foreign_references(renderer: Renderer, plan: Plan, rs: Ruleset) -> None:
    """Raise, before anything is written, when a rule of another tool jumps to an
    svcnet chain that a full sync to ``plan`` would delete (the restore deleting it
    would be refused, possibly after the other family's had committed)."""
    for (family, table), t in rs.tables.items():
        if not t.foreign_refs:
            continue
        keep = set(SHARED_CHAINS[table])
        for svc in plan.services.values():
            keep.update(renderer.service(svc, plan.settings, family).chains[table])
        if table == "nat":  # the dispatch trees' chains the plan keeps
            keep.update(renderer.tree_names(plan, family))
        doomed = sorted(t.foreign_refs - keep)
        if doomed:
            raise BackendError(
                BackendErrorKind.REFUSED,
                f"{family.value} {table}: rules of another tool jump to svcnet chains "
                f"this sync would delete ({', '.join(doomed[:5])}); nothing was changed",
            )


@contextmanager
def gc_paused() -> Iterator[None]:
    """Rendering builds hundreds of thousands of acyclic strings and lists; with a
    big cluster state alive, the cyclic collector's full passes over it cost 2-3x
    the rendering itself. It is paused for the block (and only if it was on)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class IptablesBackend(Backend):
    """kube-proxy's iptables layout, installed with iptables-restore or libiptc."""

    name: ClassVar[str] = "iptables"
    capabilities: ClassVar[Capabilities] = Capabilities(kernel=True)
    contract: ClassVar[str] = "1.1"  # the backend contract version implemented

    def __init__(
        self,
        node: str,
        *,
        netns: str | None = None,
        driver: str = "restore",
        variant: str | None = None,
    ) -> None:
        super().__init__(node, netns=netns)
        self.driver: Driver
        if driver == "restore":
            from .restore import RestoreDriver

            self.driver = RestoreDriver(netns, variant)
        elif driver == "iptc":
            if variant not in (None, "legacy"):
                raise BackendError(
                    BackendErrorKind.UNSUPPORTED, "the iptc driver programs legacy tables only"
                )
            from .libiptc import LibiptcDriver

            self.driver = LibiptcDriver(netns)
        else:
            raise BackendError(
                BackendErrorKind.UNSUPPORTED, f"unknown iptables driver {driver!r} (restore, iptc)"
            )
        self._renderer = Renderer()
        self._checked = False
        self._gen: int | None = None  # nf_tables generation after the last install
        self.last_texts: dict[tuple[IPFamily, str], str] = {}
        # nft variant: per family, the nf_tables generation and an interpreter over
        # the chains read at that generation (each read when a probe first reached
        # it); used only while the namespace's generation is still that one.
        self._probe_views: dict[IPFamily, tuple[int, Interpreter]] = {}
        self._lister: ChainLister | None = None

    def _check(self) -> None:
        if not self._checked:
            self.driver.check()
            self._checked = True

    def _install(self, changes: Changes, target: Plan, *, full: bool) -> None:
        """One restore per table written: the static filter tables first (only where
        they are not intact), then one nat restore per family. Each restore is
        atomic and the filter is the same for every plan, so each family holds the
        old plan or the new one, whole. If a restore fails or the rendering raises
        after some restore committed, the kernel may hold the new plan in one family
        and the old in the other: ``installed`` becomes unknown (None) and the next
        sync is full."""
        self._check()
        committed: list[tuple[IPFamily, str]] = []
        self._gen = None
        try:
            self._write(changes, target, full=full, committed=committed)
        except BaseException:
            if committed:
                self._mark_unknown()
            raise
        self._gen = self._generation()

    def _generation(self) -> int | None:
        """The nf_tables generation of the namespace, for the nft variant (None:
        legacy, or it cannot be read)."""
        if getattr(self.driver, "variant", None) != "nft":
            return None
        try:
            return nf_tables_generation(self.netns)
        except SvcnetError:
            return None

    def _write(
        self,
        changes: Changes,
        target: Plan,
        *,
        full: bool,
        committed: list[tuple[IPFamily, str]],
    ) -> None:
        if full or self.installed is None:
            rs = self.driver.read()
            refuse_foreign_references(self._renderer, target, rs)
            existing = _existing(rs)
            texts = filter_sync(existing)
            self._apply_each(texts, committed)
            streams = full_sync_stream(self._renderer, target, existing)
            restore_stream = getattr(self.driver, "restore_stream", None)
            restore = getattr(self.driver, "restore", None)
            if restore_stream is not None and restore is not None:
                # the first (IPv4 nat) restore parses while its text is still being
                # rendered; the other family's text is rendered meanwhile
                items = list(streams.items())
                rest: list[str] = []

                def render_rest() -> None:
                    rest.extend("".join(chunks) for _key, chunks in items[1:])

                with gc_paused():
                    first_key, first = items[0]
                    texts[first_key] = restore_stream(first_key[0], first, meanwhile=render_rest)
                committed.append(first_key)
                for (key, _chunks), text in zip(items[1:], rest, strict=True):
                    restore(key[0], text)
                    committed.append(key)
                    texts[key] = text
                self.last_texts = texts
                return
            with gc_paused():
                nat = {key: "".join(chunks) for key, chunks in streams.items()}
            self._apply_each(nat, committed)
            self.last_texts = {**texts, **nat}
            return
        with gc_paused():
            # the restore tools run -C lines (libiptc's driver does not)
            checks = self.driver.name == "restore"
            texts = partial_sync(self._renderer, self.installed, changes, target, checks=checks)
        try:
            self._apply_each(texts, committed)
        except BaseException:
            if committed:
                self._roll_back(self.installed, target, committed)
            raise
        self.last_texts = texts

    def _roll_back(
        self, previous: Plan, target: Plan, committed: list[tuple[IPFamily, str]]
    ) -> None:
        """After one family's incremental restore committed and the other's failed
        (another tool's rule referring to a chain being deleted, say): put the
        committed family back as ``previous`` had it, so the failed apply changes
        nothing. If that fails too, ``committed`` stays and what is installed
        becomes unknown."""
        with gc_paused():
            back = partial_sync(self._renderer, target, previous.diff(target), previous)
        try:
            for key in list(committed):
                if key in back:
                    self.driver.apply({key: back[key]})
                committed.remove(key)
        except SvcnetError:
            pass

    def _apply_each(
        self, texts: dict[tuple[IPFamily, str], str], committed: list[tuple[IPFamily, str]]
    ) -> None:
        """One driver transaction per table, in order, noting each that committed."""
        for key, text in texts.items():
            self.driver.apply({key: text})
            committed.append(key)

    def check(self) -> tuple[str, ...]:
        """A cheap look for damage: each family's filter table (``*-save -t
        filter``: svcnet's part is static; legacy: 13 ms for both families at
        10,000 services) must hold exactly svcnet's static chain and its three
        jumps. The nft variant's save tool fills its cache from every table (~0.5 s
        at 2,000 services), so it first compares the namespace's nf_tables
        generation (:func:`svcnet.kernel.nf_tables_generation`, one netlink
        request) with the one read after its own last restore, and reads filter
        only when someone else committed.
        The nat table, which grows with the services (reading it costs ~1 s
        per family at 10,000 services with legacy), is not read here: every
        incremental nat restore starts with ``-C`` lines for svcnet's nat jumps and
        the fixed rules of its shared chains (:func:`sync.nat_canaries`), so a
        flushed table or shared chain or a deleted jump makes the restore refuse,
        changing nothing, and :meth:`apply` falls back to a full sync."""
        if self.installed is None:
            return ()
        self._check()
        gen = self._generation()
        if gen is not None and gen == self._gen:
            return ()  # nft variant: no nf_tables transaction since this backend's last
        problems = []
        for family in FAMILIES:
            if self.driver.name == "restore":
                text = self.driver.save_text(family, FILTER_TABLE)
                table = parse_save(text, family).get(FILTER_TABLE)
            else:
                table = self.driver.read((family,)).table(family, FILTER_TABLE)
            if table is None or not filter_intact(table):
                problems.append(f"{family.value} filter: svcnet's static chain or jumps differ")
        if not problems:
            self._gen = gen
        return tuple(problems)

    def observe(self) -> Ruleset:
        self._check()
        return self.driver.read()

    def observed_plan(self) -> Plan:
        """What the kernel holds now, read back (both families, every call: never the
        installed plan nor the probes' cached read-back) and decoded by
        :func:`svcnet_iptables.observed.observed_plan`: equal to the installed plan
        when nothing drifted."""
        self._check()
        return observed_plan(self.driver.read(), self.node)

    def _probe_lister(self) -> ChainLister | None:
        """The per-chain reader (nft variant of the restore driver), else None."""
        if self._lister is None and self.driver.name == "restore":
            variant = getattr(self.driver, "variant", None)
            if variant == "nft":
                self._lister = ChainLister(self.netns, variant)
        return self._lister

    def _read_for_probe(self, family: IPFamily) -> Ruleset:
        """What a probe of ``family`` walks, read from the kernel now: with the nft
        variant, a ruleset whose chains are each read when the walk reaches them
        (``iptables-nft -t T -S CHAIN``); else the family's tables, read whole
        (legacy: the kernel hands whole tables only), each chain found in the saved
        text and parsed when the walk reaches it."""
        lister = self._probe_lister()
        if lister is not None:
            return listed_ruleset(lister, family, TABLES)
        if self.driver.name == "restore":
            return saved_ruleset(self.driver.save_text(family), family, TABLES)
        return self.driver.read((family,))

    def _probe(self, probe: Probe, run: Callable[[Interpreter], T]) -> T:
        """``run`` over the rules installed now (never a cache of this backend's
        own: a probe sees drift). With the nft variant the chains already read are
        reused while the namespace's nf_tables generation (one netlink request;
        every commit by anyone changes it) is the one they were read at, and the
        generation is read again after the walk: if it moved meanwhile, the walk
        is repeated on a fresh read. Legacy tables have no generation and are read
        at every call."""
        self._check()
        family = IPFamily.of(probe.dst_ip)
        if self._probe_lister() is None:
            return run(Interpreter(self._read_for_probe(family)))
        for _attempt in range(3):
            gen = self._generation()
            if gen is None:
                self._probe_views.pop(family, None)
                return run(Interpreter(self._read_for_probe(family)))
            view = self._probe_views.get(family)
            if view is None or view[0] != gen:
                view = (gen, Interpreter(self._read_for_probe(family)))
                self._probe_views[family] = view
            result = run(view[1])
            if self._generation() == gen:
                return result
            self._probe_views.pop(family, None)
        return run(Interpreter(self._read_for_probe(family)))

    def refresh(self) -> None:
        """Forget the chains read for probes (they are also dropped by themselves
        whenever the kernel's rules change; kept for callers of the old cache)."""
        self._probe_views.clear()

    def evaluate(self, probe: Probe) -> Outcome:
        return self._probe(probe, lambda interp: interp.evaluate(probe))

    def trace(self, probe: Probe) -> tuple[str, ...]:
        return self._probe(probe, lambda interp: interp.trace(probe))

    def cleanup(self) -> None:
        self._check()
        existing = _existing(self.driver.read())
        texts = {
            key: cleanup_text(key[1], ex) for key, ex in existing.items() if ex.chains or ex.jumps
        }
        if texts:
            self.driver.apply(texts)
        self.installed = None

    def close(self) -> None:
        self.driver.close()
