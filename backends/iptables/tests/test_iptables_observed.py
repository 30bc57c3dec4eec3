"""observed.py: rendered rules, read back as iptables-save or libiptc would give them,
decode to the plan they were rendered from (pure; clusters drawn by
svcnet.testing.strategies)."""

from __future__ import annotations

import contextlib
import shlex

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import FakeKernel
from svcnet_iptables import IptablesBackend
from svcnet_iptables.observed import observed_plan
from svcnet_iptables.readback import Ruleset, build
from svcnet_iptables.render import FAMILIES, NAT, Renderer
from svcnet_iptables.sync import full_sync, partial_sync

from svcnet.errors import SvcnetError
from svcnet.plan import Plan, compile
from svcnet.state import Apply, ClusterState
from svcnet.testing import strategies

SETTINGS = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _state(data: st.DataObject) -> ClusterState:
    config = data.draw(strategies.configs(IptablesBackend.capabilities))
    state = ClusterState.empty(config)
    with contextlib.suppress(SvcnetError):
        objects = data.draw(strategies.cluster_objects(config, IptablesBackend.capabilities))
        state = state.step(Apply(tuple(objects)))
    return state


def _nodes(state: ClusterState) -> list[str]:
    return sorted(state.nodes) or ["node-a"]


def _as_libiptc(kernel: FakeKernel) -> Ruleset:
    """The fake kernel's rules the way the libiptc driver reads them: (chain, argv)
    pairs through readback.build, never through iptables-save text."""
    tables = {}
    for family in FAMILIES:
        for (f, name), chains in kernel.tables.items():
            if f is not family:
                continue
            pairs = [(c, shlex.split(r)) for c, rules in chains.items() for r in rules]
            tables[(family, name)] = build(family, name, pairs, chains)
    return Ruleset(tables)


@SETTINGS
@given(data=st.data())
def test_full_sync_reads_back_as_the_plan(data: st.DataObject) -> None:
    state = _state(data)
    for node in _nodes(state):
        plan = compile(state, node)
        kernel = FakeKernel()
        kernel.apply(full_sync(Renderer(), plan, {}))
        want = plan
        assert observed_plan(kernel.read(), node) == want, str(plan)
        assert observed_plan(_as_libiptc(kernel), node) == want


@SETTINGS
@given(data=st.data())
def test_incremental_syncs_read_back_as_each_plan(data: st.DataObject) -> None:
    state = _state(data)
    node = _nodes(state)[0]
    renderer = Renderer()
    plan = compile(state, node)
    kernel = FakeKernel()
    kernel.apply(full_sync(renderer, plan, {}))
    for _ in range(data.draw(st.integers(1, 5))):
        try:
            state = state.step(data.draw(strategies.events(state, IptablesBackend.capabilities)))
        except SvcnetError:
            continue  # refused: the state (and the plan) stay
        new = compile(state, node)
        kernel.apply(partial_sync(renderer, plan, new.diff(plan), new))
        plan = new
        assert observed_plan(kernel.read(), node) == plan, str(plan)


def test_nothing_installed_reads_back_as_an_empty_plan_of_the_node() -> None:
    observed = observed_plan(FakeKernel().read(), "node-x")
    assert observed.node == "node-x"
    assert not observed.services


@SETTINGS
@given(data=st.data())
def test_a_deleted_rule_shows_in_the_observed_plan(data: st.DataObject) -> None:
    """Deleting any one rule of a service's own chains changes what is read back
    for that service."""
    state = _state(data)
    node = _nodes(state)[0]
    plan = compile(state, node)
    kernel = FakeKernel()
    renderer = Renderer()
    kernel.apply(full_sync(renderer, plan, {}))
    owned = [
        (family, chain, rule, svc.ref)
        for svc in plan.services.values()
        for family in FAMILIES
        for chain, rules in renderer.service(svc, plan.settings, family).chains[NAT].items()
        for rule in rules
    ]
    if not owned:
        return  # nothing rendered for any service on this node
    family, chain, rule, ref = data.draw(st.sampled_from(owned))
    kernel.tables[(family, NAT)][chain].remove(rule)
    observed = observed_plan(kernel.read(), node)
    want = plan
    assert observed != want
    assert observed.services.get(ref) != want.services[ref], f"deleting {chain} {rule}"
    others = {r: s for r, s in want.services.items() if r != ref}
    assert {r: s for r, s in observed.services.items() if r != ref} == others


def test_comments_fit_what_iptables_accepts() -> None:
    """A comment longer than 255 characters would fail the whole restore: the
    settings comment of a node with a long name and many CIDRs is cut, and the
    plan read back differs only in the settings that comment carried."""
    from svcnet_iptables.readback import parse_rule
    from svcnet_iptables.render import MARK_MASQ, MAX_COMMENT

    from svcnet.plan import NodeSettings

    long_name = "n" * 253
    cidrs = tuple(f"10.{i}.0.0/16" for i in range(40))
    plan = Plan(NodeSettings(long_name, ("192.168.56.11",), cidrs, ("10.96.0.0/16",)))
    kernel = FakeKernel()
    kernel.apply(full_sync(Renderer(), plan, {}))
    for family in FAMILIES:
        for chain, rules in kernel.tables[(family, NAT)].items():
            for rule in rules:
                comment = parse_rule(chain, shlex.split(rule), rule).comment
                assert comment is None or len(comment) <= MAX_COMMENT, rule
    (masq,) = kernel.tables[(FAMILIES[0], NAT)][MARK_MASQ]
    assert len(parse_rule(MARK_MASQ, shlex.split(masq), masq).comment or "") == MAX_COMMENT
    observed = observed_plan(kernel.read(), "node-a")
    assert observed.settings != plan.settings and not observed.services


def test_a_port_with_no_frontend_reads_back() -> None:
    """A port whose every frontend another service claimed has no rule a packet
    meets; its SVCNET-LOST chain and SEP chains still carry it (nothing jumps to
    them)."""
    from svcnet.model import IPFamily, Protocol
    from svcnet.plan import (
        Action,
        EndpointSet,
        NodeSettings,
        PlanEndpoint,
        PortPlan,
        Route,
        ServicePlan,
        ServiceRef,
    )

    cluster = Route(Action.FORWARD, EndpointSet.CLUSTER, True)
    local = Route(Action.FORWARD, EndpointSet.LOCAL, False)
    eps = (PlanEndpoint("10.244.1.5", 8080), PlanEndpoint("10.244.2.5", 8080))
    port = PortPlan.build(
        "dns", IPFamily.IPv4, Protocol.UDP, (), eps, eps[:1],
        cluster, cluster, cluster, cluster, cluster, local,
        source_ranges=("198.51.100.0/24",), affinity_timeout=30,
    )  # fmt: skip
    ref = ServiceRef("kube-system", "dns")
    settings = NodeSettings("node-a", ("192.168.56.11",), ("10.244.0.0/16",), ("10.96.0.0/16",))
    plan = Plan(settings, {ref: ServicePlan(ref, ("10.96.0.10",), (port,))})
    kernel = FakeKernel()
    kernel.apply(full_sync(Renderer(), plan, {}))
    nat = kernel.tables[(IPFamily.IPv4, NAT)]
    (lost,) = [c for c in nat if c.startswith("SVCNET-LOST-")]
    assert not any(lost in r for rules in nat.values() for r in rules), "something jumps there"
    assert observed_plan(kernel.read(), "node-a") == plan
    assert observed_plan(_as_libiptc(kernel), "node-a") == plan
    nat[lost].clear()
    assert observed_plan(kernel.read(), "node-a").services[ref].ports == ()


def test_route_letters_are_one_per_route() -> None:
    from svcnet_iptables.render import ROUTE_CODES, _code

    assert len(set(ROUTE_CODES.values())) == len(ROUTE_CODES) == 6
    assert all(_code(route) == letter for route, letter in ROUTE_CODES.items())
