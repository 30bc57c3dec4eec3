"""Plan / Changes -> ``iptables-restore --noflush`` text for whole tables (pure).

The rules of one service come from :mod:`svcnet_iptables.render`; this module
assembles them into restore input: a full sync (the static filter table, one nat
restore per family, streamed while the tool creates the chains), a partial sync
(only the chains of changed services, with ``-C`` lines checking svcnet's jumps and
shared rules first) and cleanup. See :mod:`svcnet_iptables.render` for the layout.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Iterator, Sequence

import attrs

from svcnet.model import IPFamily
from svcnet.plan import Changes, Plan, ServicePlan, ServiceRef

from .readback import Table, parse_rule
from .render import (
    FAMILIES,
    FILTER,
    FILTER_TABLE,
    JUMPS,
    MARK_DROP,
    MARK_MASQ,
    MARK_REJECT,
    NAT,
    NODEPORTS,
    POSTROUTING,
    SERVICES,
    SHARED_CHAINS,
    TABLES,
    PortShape,
    Renderer,
    port_chain_names,
    port_shape,
    ref_key,
    static_filter,
)


@attrs.frozen
class Existing:
    """What a table holds of svcnet's, as read back: its chains and jump rules."""

    chains: frozenset[str] = frozenset()
    jumps: tuple[tuple[str, str], ...] = ()  # (built-in chain, rule spec)
    # filter only: the table holds exactly the static chain and its jumps
    # (see :func:`filter_intact`); a full sync rewrites it only when False
    intact: bool = False


def restore_text(
    table: str,
    declare: dict[str, list[str]],
    delete: Iterable[str] = (),
    jumps_delete: Iterable[tuple[str, str]] = (),
    jumps_insert: Iterable[tuple[str, str]] = (),
    checks: Iterable[tuple[str, str]] = (),
) -> str:
    """One ``iptables-restore --noflush`` transaction for ``table``.

    ``checks`` (chain, rule spec) come first, as ``-C`` lines: a rule missing
    makes the tool refuse the whole transaction. Every declared chain is created
    or flushed, then filled; ``delete`` chains are flushed and removed; jump rules
    are deleted and inserted first in their built-in chains. Nothing else in the
    table is touched.
    """
    gone = sorted(set(delete) - set(declare))
    lines: list[str] = [f"*{table}"]
    lines += [f"-C {chain} {spec}" for chain, spec in checks]
    # Chains are declared in descending name order: iptables-nft (1.8.x) keeps its
    # chain cache sorted by name and inserts new chains from the front, so this
    # order makes each insert O(1) (ascending order made a 2,000-service load 25%
    # slower and later small restores 40% slower, as they re-read the chains).
    lines += [f":{c} - [0:0]" for c in sorted(declare, reverse=True)]
    lines += [f":{c} - [0:0]" for c in gone]
    lines += [f"-D {chain} {spec}" for chain, spec in jumps_delete]
    for chain in sorted(declare):
        lines += [f"-A {chain} {rule}" for rule in declare[chain]]
    lines += [f"-X {c}" for c in gone]
    lines += [f"-I {chain} 1 {spec}" for chain, spec in reversed(list(jumps_insert))]
    lines.append("COMMIT")
    lines.append("")
    return "\n".join(lines)


def expected_jumps(table: str) -> list[tuple[str, str]]:
    return [(chain, spec) for t, chain, spec in JUMPS if t == table]


def filter_intact(table: Table) -> bool:
    """Whether a read-back filter table holds exactly svcnet's static chain (rule by
    rule, compared as parsed) and one jump from each of INPUT, FORWARD and OUTPUT."""
    if table.own_chains != {FILTER}:
        return False
    want = [
        attrs.evolve(parse_rule(FILTER, shlex.split(spec), ""), text="")
        for spec in static_filter(table.family)[FILTER]
    ]
    have = [attrs.evolve(r, text="") for r in table.chains[FILTER]]
    if have != want:
        return False
    return _jump_changes(FILTER_TABLE, Existing(table.own_chains, table.jumps)) == ([], [])


def filter_sync(existing: dict[tuple[IPFamily, str], Existing]) -> dict[tuple[IPFamily, str], str]:
    """Restore texts writing the static filter table of each family where it is not
    intact (normally only the first sync, or after damage): written before nat."""
    out: dict[tuple[IPFamily, str], str] = {}
    for family in FAMILIES:
        ex = existing.get((family, FILTER_TABLE), Existing())
        if ex.intact:
            continue
        dels, ins = _jump_changes(FILTER_TABLE, ex)
        out[(family, FILTER_TABLE)] = restore_text(
            FILTER_TABLE, static_filter(family), ex.chains, dels, ins
        )
    return out


def full_sync(
    renderer: Renderer, plan: Plan, existing: dict[tuple[IPFamily, str], Existing]
) -> dict[tuple[IPFamily, str], str]:
    """Restore texts of a full sync, in the order to apply them: the filter tables
    that are not intact, then one nat text per family."""
    out = filter_sync(existing)
    for key, chunks in full_sync_stream(renderer, plan, existing).items():
        out[key] = "".join(chunks)
    return out


def full_sync_stream(
    renderer: Renderer, plan: Plan, existing: dict[tuple[IPFamily, str], Existing]
) -> dict[tuple[IPFamily, str], Iterator[str]]:
    """The nat restore texts of a full sync, per family, as lazy chunks: a restore
    process creates the chains (declared first, in descending name order, see
    :func:`restore_text`; their names come from :func:`service_chain_names`
    without rendering) while the services' rules are rendered and written. The
    filter tables are :func:`filter_sync`'s (to be applied first)."""
    return {
        (family, NAT): _stream_table(
            renderer, plan, family, NAT, existing.get((family, NAT), Existing())
        )
        for family in FAMILIES
    }


def service_shapes(svc: ServicePlan, family: IPFamily) -> list[PortShape]:
    return [port_shape(svc, port) for port in (svc.ports_of(family) if svc.proxied else ())]


def service_chain_names(
    svc: ServicePlan, family: IPFamily, table: str, shapes: Sequence[PortShape] | None = None
) -> list[str]:
    """The chains :func:`render_service` creates in ``table``, without rendering."""
    if shapes is None:
        shapes = service_shapes(svc, family)
    ports = svc.ports_of(family) if svc.proxied else ()
    names: list[str] = []
    for port, shape in zip(ports, shapes, strict=True):
        names += port_chain_names(port, shape)[table]
    return names


def _stream_table(
    renderer: Renderer, plan: Plan, family: IPFamily, table: str, ex: Existing
) -> Iterator[str]:
    settings = plan.settings
    ordered = [svc for _ref, svc in sorted(plan.services.items(), key=lambda kv: ref_key(kv[0]))]
    names = list(SHARED_CHAINS[table])
    if table == NAT:
        names += renderer.tree_names(plan, family)  # the dispatch trees' chains
    shapes: dict[ServiceRef, list[PortShape]] = {}
    for svc in ordered:
        cached = renderer.cached(svc, settings, family)
        if cached is not None:
            names += cached.chains[table]
        else:
            shapes[svc.ref] = service_shapes(svc, family)
            names += service_chain_names(svc, family, table, shapes[svc.ref])
    declared = frozenset(names)
    gone = sorted(ex.chains - declared)
    dels, ins = _jump_changes(table, ex)
    names.sort(reverse=True)
    head = [f"*{table}"] + [f":{c} - [0:0]" for c in names]
    head += [f":{c} - [0:0]" for c in gone]
    head += [f"-D {chain} {spec}" for chain, spec in dels]
    yield "\n".join(head) + "\n"
    # the restore process now creates the chains while the rules are rendered
    batch: list[str] = []
    for svc in ordered:
        sc = renderer.service(svc, settings, family, shapes.get(svc.ref))
        if not declared.issuperset(sc.chains[table]):
            raise AssertionError(f"{svc.ref}: rendered chains that were not declared")
        batch.append(sc.blocks[table])
        if len(batch) >= 64:
            yield "".join(batch)
            batch.clear()
    yield "".join(batch)
    shared = renderer.shared(plan, family)[table]
    if not declared.issuperset(shared):
        raise AssertionError(f"{family.value} {table}: shared chains that were not declared")
    tail = [f"-A {chain} {rule}" for chain, rules in shared.items() for rule in rules]
    tail += [f"-X {c}" for c in gone]
    tail += [f"-I {chain} 1 {spec}" for chain, spec in reversed(ins)]
    tail.append("COMMIT")
    yield "\n".join(tail) + "\n"


def _target(spec: str) -> str:
    return spec.rsplit("-j ", 1)[-1].split()[0] if "-j " in spec else ""


def _jump_changes(table: str, ex: Existing) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(deletes, inserts) leaving exactly one of each svcnet jump in ``table``.

    Jumps already there, one each, stay where they are (a foreign rule inserted
    before them keeps its place).
    """
    want = expected_jumps(table)
    have = sorted((c, _target(s)) for c, s in ex.jumps)
    if have == sorted((c, _target(s)) for c, s in want):
        return [], []
    return list(ex.jumps), want


def nat_canaries(renderer: Renderer, plan: Plan, family: IPFamily) -> list[tuple[str, str]]:
    """Rules a partial sync checks (``-C``) before changing a family's nat table:
    svcnet's three jumps and the fixed rules of its shared chains. A flushed table
    or chain, a deleted jump or shared chain makes the restore fail: nothing
    changes and the backend falls back to a full sync."""
    shared = renderer.shared(plan, family)[NAT]
    out = [(chain, spec) for chain, spec in expected_jumps(NAT)]
    out.append((SERVICES, f"-j {NODEPORTS}"))
    for chain in (MARK_MASQ, MARK_REJECT, MARK_DROP, POSTROUTING):
        out.append((chain, shared[chain][-1]))
    return out


def partial_sync(
    renderer: Renderer,
    previous: Plan,
    changes: Changes,
    target: Plan,
    *,
    checks: bool = False,
) -> dict[tuple[IPFamily, str], str]:
    """Restore texts rewriting the changed services' chains and those shared chains
    whose rules differ from the installed plan's: nat only (the filter table is
    static); a family with nothing to change gets no text. ``checks``: each text
    starts with :func:`nat_canaries` of the installed plan, as ``-C`` lines."""
    out: dict[tuple[IPFamily, str], str] = {}
    old_refs = [s.ref for s in changes.replaced] + list(changes.removed)
    new_svcs = list(changes.added) + list(changes.replaced)
    for family in FAMILIES:
        old_chains: dict[str, set[str]] = {t: set() for t in TABLES}
        for ref in old_refs:
            svc = previous.services.get(ref)
            if svc is None:
                continue
            sc = renderer.service(svc, previous.settings, family)
            for t in TABLES:
                old_chains[t] |= set(sc.chains[t])
        if changes.settings_changed:
            # every service's rules depend on the settings: rewrite them all
            for svc in previous.services.values():
                sc = renderer.service(svc, previous.settings, family)
                for t in TABLES:
                    old_chains[t] |= set(sc.chains[t])
            new_list = list(target.services.values())
        else:
            new_list = new_svcs
        if (
            not changes.settings_changed
            and not changes.added
            and not changes.removed
            and all(
                renderer.dispatch_of(previous.services[s.ref], previous.settings, family)
                == renderer.dispatch_of(s, target.settings, family)
                for s in changes.replaced
                if s.ref in previous.services
            )
        ):
            renderer.carry_shared(previous, target, family)
        declare = renderer.shared(target, family)
        before = renderer.shared(previous, family)
        for t in TABLES:  # dispatch tree chains the target no longer has
            old_chains[t] |= set(before[t]) - set(declare[t])
        if not changes.settings_changed:
            for t in TABLES:
                for chain, rules in list(declare[t].items()):
                    if before[t].get(chain) == rules:
                        del declare[t][chain]
        for svc in new_list:
            sc = renderer.service(svc, target.settings, family)
            for t in TABLES:
                declare[t].update(sc.chains[t])
        # the filter table is static: a partial sync is one nat text per family
        if declare[NAT] or old_chains[NAT]:
            canaries = nat_canaries(renderer, previous, family) if checks else []
            out[(family, NAT)] = restore_text(NAT, declare[NAT], old_chains[NAT], checks=canaries)
    renderer.forget(changes.removed)
    return out


def cleanup_text(table: str, ex: Existing) -> str:
    return restore_text(table, {}, ex.chains, ex.jumps, ())


def iter_rules(text: str) -> Iterator[str]:
    for line in text.splitlines():
        if line.startswith("-"):
            yield line
