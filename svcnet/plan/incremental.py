"""update(plan, old_state, new_state) and advance(): the plan brought to a new state
by recompiling only what the change can reach.

The state says which services and nodes changed since a revision
(:meth:`ClusterState.changed_since`, a :class:`svcnet.state.Touched`). The
compiler's :class:`~svcnet.plan.compiler.FrontendIndex` of the old plan (kept
beside it, :func:`~svcnet.plan.compiler.index_of`) says which other services claim
the frontends those services claim(ed): they are recompiled too, since a frontend
may have changed hands. Everything else is shared with the old plan.

Falls back to a full :func:`~svcnet.plan.compiler.compile` when the change is
unknown (too old for the state's log), the configuration changed, a node change
matters to this node (its own addresses: NodePorts and source ranges; any zone
label: PreferClose), or the plan has no index (not built by compile()/update()).
Either way the result equals ``compile(new_state, plan.node)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from svcnet.model import Node
from svcnet.plan.compiler import (
    NO_CLAIMS,
    Claim,
    ClaimKey,
    FrontendIndex,
    NsName,
    Rank,
    compile,
    compile_service,
    index_of,
    insert_rank,
    lost_claims,
    remember,
    settings_for,
    without_lost,
)
from svcnet.plan.types import Changes, Plan, ServicePlan, ServiceRef

if TYPE_CHECKING:
    from svcnet.state import ClusterState

__all__ = ["advance", "update"]


def _node_matters(old: Node | None, new: Node | None, this_node: bool) -> bool:
    """Does this node change force a full recompile?"""
    if (old.zone if old else None) != (new.zone if new else None):
        return True  # endpoint zones (PreferClose) and this node's zone come from labels
    if this_node:  # NodePort frontends and source ranges use this node's addresses
        return (old.addresses if old else None) != (new.addresses if new else None)
    return False


def _incremental(
    plan: Plan, old_state: ClusterState, new_state: ClusterState
) -> tuple[Plan, frozenset[ServiceRef]] | None:
    """The updated plan and the services that may differ; None: compile in full."""
    touched = new_state.changed_since(plan.revision)
    if touched is None or touched.config:
        return None
    index = index_of(plan)
    if index is None:
        return None
    name = plan.node
    for n in touched.nodes:
        if _node_matters(old_state.nodes.get(n), new_state.nodes.get(n), n == name):
            return None
    node = new_state.nodes.get(name)
    # 1. recompile the touched services, noting the keys whose claimants changed
    entries: dict[NsName, ServicePlan | None] = {}
    by_ref: dict[NsName, tuple[Claim, ...]] = {}
    by_key: dict[ClaimKey, tuple[Rank, ...]] = {}
    for key in touched.services:
        svc = new_state.services.get(key)
        claims: list[Claim] = []
        if svc is not None:
            entries[key] = compile_service(new_state, svc, name, node, claims=claims)
        else:
            entries[key] = None
        old = index.by_ref.get(key, NO_CLAIMS)
        new = tuple(claims)
        if old == new:
            continue
        by_ref[key] = new
        old_set, new_set = set(old), set(new)
        for ck, rank in old_set - new_set:
            held = by_key[ck] if ck in by_key else index.by_key.get(ck, ())
            by_key[ck] = tuple(r for r in held if r != rank)
        for ck, rank in new_set - old_set:
            held = by_key[ck] if ck in by_key else index.by_key.get(ck, ())
            by_key[ck] = insert_rank(held, rank)
    owners = index.by_key.update(by_key)
    claims_of = index.by_ref.update(by_ref)
    # 2. every claimant of those keys too (a frontend may have changed hands)
    for ranks in by_key.values():
        for namespace, svc_name, _, _ in ranks:
            if (namespace, svc_name) not in entries:
                svc = new_state.services[namespace, svc_name]
                entries[namespace, svc_name] = compile_service(new_state, svc, name, node)
    # 3. without the frontends they lost
    evolver = plan.services.evolver()
    refs: set[ServiceRef] = set()
    for key, entry in entries.items():
        ref = ServiceRef(*key)
        refs.add(ref)
        if entry is None:
            if ref in plan.services:
                evolver.remove(ref)
        else:
            lost = lost_claims(claims_of.get(key, NO_CLAIMS), owners)
            evolver.set(ref, without_lost(entry, new_state.services[key], lost))
    new_plan = Plan(settings_for(new_state, name), evolver.persistent(), new_state.revision)
    return remember(new_plan, FrontendIndex(owners, claims_of)), frozenset(refs)


def update(plan: Plan, old_state: ClusterState, new_state: ClusterState) -> Plan:
    """``plan`` (compiled from ``old_state``) brought to ``new_state``: only the services
    ``new_state.changed_since(plan.revision)`` names are recompiled, with those claiming
    a frontend whose claimants changed (conflicting frontends); everything when that is
    unknown, the configuration changed, a node change matters here (this node's
    addresses, any zone label), or ``plan`` was not built by compile()/update() (the
    compiler has no index of its claims). Equal to ``compile(new_state, plan.node)``."""
    result = _incremental(plan, old_state, new_state)
    return compile(new_state, plan.node) if result is None else result[0]


def advance(plan: Plan, old_state: ClusterState, new_state: ClusterState) -> tuple[Plan, Changes]:
    """:func:`update` and the :class:`Changes` from ``plan`` to its result (cheap:
    only the recompiled services are compared)."""
    result = _incremental(plan, old_state, new_state)
    if result is None:
        new_plan = compile(new_state, plan.node)
        return new_plan, new_plan.diff(plan)
    new_plan, refs = result
    return new_plan, new_plan.diff_keys(plan, refs)
