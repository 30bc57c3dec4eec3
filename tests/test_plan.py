"""compile(), update() and diffs of the plan."""

from __future__ import annotations

import sys
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svcnet.errors import SvcnetError
from svcnet.model import (
    SERVICE_PROXY_NAME_LABEL,
    ClusterConfig,
    ContainerPort,
    Endpoint,
    Labels,
    Node,
    Pod,
    Protocol,
    Service,
    ServicePort,
    ServiceType,
    TrafficPolicy,
)
from svcnet.plan import (
    DROP,
    REJECT,
    Action,
    EndpointSet,
    Frontend,
    FrontendKind,
    Plan,
    PlanEndpoint,
    PortPlan,
    ServiceRef,
    advance,
    compile,
    incremental,
    update,
)
from svcnet.plan.compiler import index_of
from svcnet.probe import SourceKind
from svcnet.state import Apply, ClusterState, Touched
from svcnet.testing.strategies import NODE_NAMES as NODES

# Objects and events are svcnet.testing.strategies'; whole clusters built through the
# state, seeded draws and the Configure event live with the memory backend's tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backends" / "memory" / "tests"))
from clusters import RandomDraw, events, state_cluster, state_clusters

T = TypeVar("T")
FAST = settings(
    deadline=None,
    derandomize=True,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _cluster() -> ClusterState:
    nodes = (
        Node("node-a", addresses=("192.168.56.11",)),
        Node("node-b", addresses=("192.168.56.12",)),
    )
    pods = tuple(
        Pod(
            "default",
            f"web-{n}",
            labels={"app": "web"},
            node_name=f"node-{n}",
            pod_ips=(ip,),
            ready=True,
            ports=(ContainerPort(8080),),
        )
        for n, ip in (("a", "10.244.1.2"), ("b", "10.244.2.2"))
    )
    web = Service(
        "default",
        "web",
        selector=Labels.of({"app": "web"}),
        type=ServiceType.LOAD_BALANCER,
        ports=(ServicePort(80, target_port=8080, node_port=30080),),
        cluster_ips=("10.96.0.10",),
        external_ips=("198.51.100.50",),
        status_ingress=("203.0.113.5",),
        external_traffic_policy=TrafficPolicy.LOCAL,
        load_balancer_source_ranges=("192.168.56.0/24", "2001:db8::/64"),
    )
    other = Service(
        "default",
        "other",
        labels={SERVICE_PROXY_NAME_LABEL: "x"},
        ports=(ServicePort(80),),
        cluster_ips=("10.96.0.11",),
    )
    empty = Service(
        "default",
        "empty",
        ports=(ServicePort(53, protocol=Protocol.UDP),),
        cluster_ips=("10.96.0.12",),
        internal_traffic_policy=TrafficPolicy.LOCAL,
    )
    ext = Service("default", "ext", type=ServiceType.EXTERNAL_NAME, external_name="example.com")
    hl = Service(
        "default", "hl", headless=True, selector=Labels.of({"app": "web"}), ports=(ServicePort(80),)
    )
    return ClusterState.empty(ClusterConfig()).step(
        Apply((*nodes, *pods, web, other, empty, ext, hl))
    )


def test_compile_shape() -> None:
    state = _cluster()
    plan = compile(state, "node-b")
    assert plan.revision == state.revision
    assert plan.settings.node_ips == ("192.168.56.12",)
    assert plan.settings.service_cidrs == state.config.service_cidrs
    assert set(plan.services) == {ServiceRef("default", n) for n in ("web", "other", "empty")}
    other = plan.services[ServiceRef("default", "other")]
    assert not other.proxied and other.cluster_ips == ("10.96.0.11",) and other.ports == ()
    (port,) = plan.services[ServiceRef("default", "web")].ports
    assert set(port.frontends) == {
        Frontend(FrontendKind.CLUSTER_IP, "10.96.0.10", 80),
        Frontend(FrontendKind.EXTERNAL_IP, "198.51.100.50", 80),
        Frontend(FrontendKind.LOAD_BALANCER, "203.0.113.5", 80),
        Frontend(FrontendKind.NODE_PORT, "192.168.56.12", 30080),
    }
    assert port.cluster_endpoints == (
        PlanEndpoint("10.244.1.2", 8080),
        PlanEndpoint("10.244.2.2", 8080),
    )
    assert port.local_endpoints == (PlanEndpoint("10.244.2.2", 8080),)
    # a range holds the node's address: the LB IP may send; the IPv6 range is not this family's
    assert port.source_ranges == ("192.168.56.0/24", "203.0.113.5/32")
    assert (
        port.route(FrontendKind.LOAD_BALANCER, SourceKind.EXTERNAL).endpoints is EndpointSet.LOCAL
    )
    assert (
        port.external_from_pod.endpoints is EndpointSet.CLUSTER
        and not port.external_from_pod.masquerade
    )
    assert port.external_from_node.masquerade
    assert port.internal_from_pod.action is Action.FORWARD and not port.internal_from_pod.masquerade
    (none,) = plan.services[ServiceRef("default", "empty")].ports
    assert none.internal_from_pod == REJECT and none.external_from_external == REJECT
    text = str(plan)
    assert "service default/web" in text and "NodePort 192.168.56.12:30080" in text


def test_etp_local_without_local_endpoint_drops_external_sources() -> None:
    state = _cluster().step(
        Apply(
            (
                Pod(
                    "default",
                    "web-b",
                    labels={"app": "web"},
                    node_name="node-b",
                    pod_ips=("10.244.2.2",),
                    ready=False,
                    ports=(ContainerPort(8080),),
                ),
            )
        )
    )
    (port,) = compile(state, "node-b").services[ServiceRef("default", "web")].ports
    assert port.external_from_external == DROP and port.local_endpoints == ()


@FAST
@given(state_clusters(), state_clusters(), st.sampled_from(NODES))
def test_diff_then_apply_gives_the_new_plan(a: ClusterState, b: ClusterState, node: str) -> None:
    old, new = compile(a, node), compile(b, node)
    assert new.diff(old).apply_to(old) == new
    assert new.diff(None).apply_to(None) == new
    assert new.diff(new).empty
    for svc in new.services.values():  # compile's tuples are what PortPlan.build makes
        for port in svc.ports:
            assert PortPlan.build(*attrs.astuple(port, recurse=False)) == port


def test_the_compiler_keeps_its_index_beside_the_plan() -> None:
    state = _cluster()
    plan = compile(state, "node-a")
    assert "claims" not in attrs.fields_dict(Plan)  # nothing of the compiler's inside
    index = index_of(plan)
    assert index is not None
    copy = attrs.evolve(plan)  # an equal plan the compiler did not build: no index
    assert copy == plan and index_of(copy) is None
    gone = weakref.ref(index)
    del plan, copy, index
    assert gone() is None  # the index went with its plan


def test_update_of_a_compiled_plan_is_incremental(monkeypatch: pytest.MonkeyPatch) -> None:
    state = _cluster()
    plan = compile(state, "node-a")
    pod = state.pods["default", "web-b"]
    new_state = state.step(Apply((attrs.evolve(pod, ready=False),)))
    expected = compile(new_state, "node-a")

    def no_full_compile(*_: object) -> Plan:
        raise AssertionError("update() compiled in full")

    monkeypatch.setattr(incremental, "compile", no_full_compile)
    new_plan, changes = advance(plan, state, new_state)
    assert new_plan == expected and update(plan, state, new_state) == expected
    assert [s.ref for s in changes.replaced] == [ServiceRef("default", "web")]
    with pytest.raises(AssertionError, match="compiled in full"):  # no index: full compile
        update(attrs.evolve(plan), state, new_state)


@FAST
@given(st.data())
def test_incremental_update_equals_full_compile(data: st.DataObject) -> None:
    seed = data.draw(st.integers(0, 2**32 - 1))
    draw = RandomDraw(seed)
    state = state_cluster(draw)
    node = NODES[draw.rnd.randint(0, 2)]
    plan = compile(state, node)
    for _ in range(8):
        event = events(draw, state)
        try:
            new_state = state.step(event)
        except SvcnetError:
            continue
        new_plan, changes = advance(plan, state, new_state)
        full = compile(new_state, node)
        assert new_plan == full, f"after {event}"
        assert new_plan.revision == new_state.revision
        assert changes.apply_to(plan) == full
        assert update(plan, state, new_state) == full
        plan, state = new_plan, new_state


# -- performance -------------------------------------------------------------------


@attrs.frozen
class _BigState:
    """10,000 services x 5 endpoints without building them through svcnet.state."""

    config: ClusterConfig
    nodes: dict[str, Node]
    services: dict[tuple[str, str], Service]
    endpoints: dict[tuple[str, str], dict[str, tuple[Endpoint, ...]]]
    revision: int = 1
    changed: frozenset[tuple[str, str]] = frozenset()

    def service_endpoints(self, namespace: str, name: str) -> Mapping[str, tuple[Endpoint, ...]]:
        return self.endpoints.get((namespace, name), {})

    def changed_since(self, revision: int) -> Touched | None:
        return Touched(self.changed) if revision == self.revision - 1 else None


def _big(count: int) -> _BigState:
    config = ClusterConfig(service_cidrs=("10.96.0.0/12",), cluster_cidrs=("10.0.0.0/8",))
    services = {}
    endpoints = {}
    for i in range(count):
        ip = f"10.{96 + i // 65536}.{(i // 256) % 256}.{i % 256}"
        svc = Service(
            "default",
            f"s{i}",
            type=ServiceType.NODE_PORT,
            cluster_ips=(ip,),
            ports=(ServicePort(80, target_port=8080, node_port=30000 + i % 2000),),
        )
        services[("default", f"s{i}")] = svc
        endpoints[("default", f"s{i}")] = {
            "": tuple(
                Endpoint(
                    f"10.{1 + k // 65536}.{(k // 256) % 256}.{k % 256}",
                    8080,
                    node_name=NODES[k % 3],
                )
                for k in range(i * 5, i * 5 + 5)
            )
        }
    nodes = {n: Node(n, addresses=(f"192.168.56.{11 + j}",)) for j, n in enumerate(NODES)}
    return _BigState(config, nodes, services, endpoints)


@pytest.mark.slow
def test_one_change_among_10000_services_rebuilds_one_entry() -> None:
    """At scale, an update rebuilds the changed service's entry and shares every other
    one with the old plan. The times are printed, not asserted (the machine may be
    busy): bench/bench_plan.py measures them against the targets."""
    state = _big(10_000)
    seconds, plan = _timed(lambda: compile(state, "node-a"))
    assert len(plan.services) == 10_000
    print(f"compile of 10,000 services x 5 endpoints: {seconds:.2f}s (target < 1 s)")
    key = ("default", "s7")
    eps = state.endpoints[key][""][1:]
    after = attrs.evolve(
        state, endpoints={**state.endpoints, key: {"": eps}}, revision=2, changed=frozenset({key})
    )
    seconds, (new_plan, changes) = _timed(lambda: advance(plan, state, after))
    print(f"update + diff after one endpoint change: {seconds * 1000:.2f} ms (target < 5 ms)")
    assert [s.ref.name for s in changes.replaced] == ["s7"] and not changes.added
    assert new_plan.revision == 2 and new_plan == compile(after, "node-a")
    rebuilt = [ref.name for ref, svc in new_plan.services.items() if plan.services[ref] is not svc]
    assert rebuilt == ["s7"]


def _timed(fn: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value
