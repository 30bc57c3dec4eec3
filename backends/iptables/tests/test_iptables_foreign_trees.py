"""A rule of another tool that jumps to one of svcnet's dispatch-tree chains: a full
sync that keeps the chain goes ahead; one that would delete it is refused (before
anything is written), as for svcnet's other chains."""

from __future__ import annotations

import pytest
from svcnet_iptables import refuse_foreign_references
from svcnet_iptables.readback import Ruleset, Table
from svcnet_iptables.render import Renderer

from svcnet.errors import BackendError
from svcnet.model import ClusterConfig, IPFamily, Labels, Node, Pod, Service, ServicePort
from svcnet.plan import compile
from svcnet.state import Apply, ClusterState


def plan_of(services: int):  # type: ignore[no-untyped-def]
    config = ClusterConfig(service_cidrs=("10.96.0.0/24",), cluster_cidrs=("10.0.0.0/8",))
    objects: list[object] = [Node("node-a", pod_cidrs=("10.1.0.0/24",), addresses=("192.168.0.1",))]
    for i in range(services):
        objects.append(
            Service(
                "default", f"s{i}", selector=Labels.of({"app": f"a{i}"}), ports=(ServicePort(80),)
            )
        )
        objects.append(
            Pod("default", f"p{i}", labels={"app": f"a{i}"}, node_name="node-a", ready=True)
        )
    state = ClusterState.empty(config).step(Apply(tuple(objects)))  # type: ignore[arg-type]
    return compile(state, "node-a")


def with_foreign_jump(chain: str) -> Ruleset:
    nat = Table(IPFamily.IPv4, "nat", {}, frozenset({chain}))
    return Ruleset({(IPFamily.IPv4, "nat"): nat})


def test_a_kept_tree_chain_may_be_referenced() -> None:
    renderer = Renderer(leaf=2, bits=1)
    plan = plan_of(12)
    names = renderer.tree_names(plan, IPFamily.IPv4)
    assert names, "12 addresses with leaf 2 make trees"
    for name in names:
        refuse_foreign_references(renderer, plan, with_foreign_jump(name))  # no refusal


def test_a_tree_chain_the_sync_drops_is_refused() -> None:
    renderer = Renderer(leaf=2, bits=1)
    big, small = plan_of(12), plan_of(1)
    gone = set(renderer.tree_names(big, IPFamily.IPv4)) - set(
        renderer.tree_names(small, IPFamily.IPv4)
    )
    assert gone
    with pytest.raises(BackendError, match="would delete"):
        refuse_foreign_references(renderer, small, with_foreign_jump(sorted(gone)[0]))
