"""The core switch ``ClusterConfig.authority``: under ``"api"`` the API server's
objects are authoritative (endpoints from EndpointSlices with their hints, no
allocation, no range checks), and the plan and svcnet.semantics agree there."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from svcnet_memory import MemoryBackend

from svcnet.errors import ValidationError
from svcnet.model import (
    Authority,
    ClusterConfig,
    EndpointSlice,
    IPFamily,
    KubeObject,
    Labels,
    Node,
    Pod,
    Protocol,
    Service,
    ServicePort,
    ServiceType,
    SliceEndpoint,
    SlicePort,
    TrafficDistribution,
)
from svcnet.plan import compile
from svcnet.probe import Probe, SourceKind
from svcnet.semantics import evaluate
from svcnet.state import Apply, ClusterState, Configure, Delete
from svcnet.state import endpoints as ep
from svcnet.testing.probes import probe_space
from svcnet.testing.strategies import draw_cluster_objects, draw_config, draw_endpoint_slice

API = ClusterConfig(authority=Authority.API)
ZONE = "topology.kubernetes.io/zone"


def node(name: str, ip: str, zone: str = "") -> Node:
    return Node(name, labels={ZONE: zone} if zone else {}, addresses=(ip,))


def web(**kw: object) -> Service:
    fields: dict[str, object] = dict(
        namespace="default",
        name="web",
        selector=Labels.of({"app": "web"}),
        ports=(ServicePort(80, target_port=8080),),
        cluster_ips=("10.96.0.10",),
    )
    fields.update(kw)
    return Service(**fields)  # type: ignore[arg-type]


def slice_of(*eps: SliceEndpoint, name: str = "web-abc") -> EndpointSlice:
    return EndpointSlice(
        "default",
        name,
        "web",
        IPFamily.IPv4,
        endpoints=eps,
        ports=(SlicePort(8080),),
        labels={"kubernetes.io/service-name": "web"},
    )


def addresses(state: ClusterState, name: str = "web") -> list[str]:
    return [e.ip for e in state.service_endpoints("default", name)[""]]


def test_authority_is_svcnet_by_default_and_converts_from_text() -> None:
    assert ClusterConfig().authority is Authority.SVCNET
    assert not ClusterConfig().api_authority
    assert ClusterConfig(authority="api").api_authority  # type: ignore[arg-type,unused-ignore]
    with pytest.raises(ValueError):
        ClusterConfig(authority="kubelet")  # type: ignore[arg-type,unused-ignore]


def test_api_endpoints_come_from_slices_never_from_the_selector() -> None:
    pod = Pod("default", "p", labels={"app": "web"}, pod_ips=("10.244.0.5",), ready=True)
    own = ClusterState.empty().step(Apply([web(), pod]))
    assert addresses(own) == ["10.244.0.5"]  # svcnet: the selector's pod
    api = ClusterState.empty(API).step(Apply([web(), pod]))
    assert addresses(api) == []  # the API: no slice yet, the pod does not count
    api = api.step(Apply([slice_of(SliceEndpoint(("10.244.1.7",), node_name="n2"))]))
    assert addresses(api) == ["10.244.1.7"]
    pod2 = attrs.evolve(pod, name="q", pod_ips=("10.244.0.6",))
    assert addresses(api.step(Apply([pod2]))) == ["10.244.1.7"]
    assert addresses(api.step(Delete([pod.key]))) == ["10.244.1.7"]


def test_api_takes_addresses_as_given_without_range_checks() -> None:
    # Outside the configured service CIDR, NodePort range and pool: svcnet would
    # refuse or reallocate; under the API these are the API server's values.
    lb = web(
        type=ServiceType.LOAD_BALANCER,
        cluster_ips=("172.20.0.10",),
        ports=(ServicePort(80, target_port=8080, node_port=4000),),
        status_ingress=("198.51.100.9",),
    )
    twin = attrs.evolve(lb, name="twin")  # the same ClusterIP and NodePort: no conflict
    state = ClusterState.empty(API).step(Apply([lb, twin]))
    got = state.services[("default", "web")]
    assert got.cluster_ips == ("172.20.0.10",)
    assert got.ports[0].node_port == 4000
    assert got.load_balancer_ips == ("198.51.100.9",)
    assert got.ip_families == (IPFamily.IPv4,)
    with pytest.raises(ValidationError):
        ClusterState.empty().step(Apply([lb]))  # svcnet's range check refuses it
    unset = ClusterState.empty(API).step(Apply([web(name="bare", cluster_ips=())]))
    assert unset.services[("default", "bare")].cluster_ips == ()  # nothing allocated
    pod = Pod("default", "p", node_name="n1")
    assert (
        ClusterState.empty(API)
        .step(Apply([node("n1", "192.0.2.1"), pod]))
        .pods[("default", "p")]
        .pod_ips
        == ()
    )


def test_authority_cannot_change_under_objects() -> None:
    state = ClusterState.empty().step(Apply([web()]))
    with pytest.raises(ValidationError) as e:
        state.step(Configure(API))
    assert e.value.field == "authority"
    empty = ClusterState.empty().step(Configure(API))
    assert empty.config.api_authority
    assert empty.step(Configure(ClusterConfig())).config.authority is Authority.SVCNET


def hinted_state(distribution: TrafficDistribution | None) -> ClusterState:
    eps = (
        SliceEndpoint(("10.244.0.5",), node_name="n1", zone="a", for_zones=("a",)),
        SliceEndpoint(("10.244.1.5",), node_name="n2", zone="b", for_zones=("b", "a")),
        SliceEndpoint(("10.244.2.5",), node_name="n3", zone="c", for_zones=("c",)),
    )
    return ClusterState.empty(API).step(
        Apply(
            [
                node("n1", "192.0.2.1", "a"),
                node("n2", "192.0.2.2", "b"),
                node("n3", "192.0.2.3", "c"),
                node("n4", "192.0.2.4", "d"),
                web(traffic_distribution=distribution),
                slice_of(*eps),
            ]
        )
    )


def forwarded(state: ClusterState, on: str) -> set[str]:
    probe = Probe(SourceKind.NODE, "192.0.2.9", on, "10.96.0.10", 80)
    want = evaluate(state, probe)
    backend = MemoryBackend(on)
    backend.sync(compile(state, on))
    assert backend.evaluate(probe) == want  # the plan agrees
    return {address.rsplit(":", 1)[0] for address in want.endpoints}


@pytest.mark.parametrize("distribution", [None, TrafficDistribution.PREFER_SAME_ZONE])
def test_api_topology_follows_the_slice_hints(distribution: TrafficDistribution | None) -> None:
    state = hinted_state(distribution)
    # zone a is hinted on two endpoints (one of them in zone b): both, not zone a's one
    assert forwarded(state, "n1") == {"10.244.0.5", "10.244.1.5"}
    assert forwarded(state, "n3") == {"10.244.2.5"}
    # zone d has no hint: every ready endpoint
    assert forwarded(state, "n4") == {"10.244.0.5", "10.244.1.5", "10.244.2.5"}


def test_api_topology_ignores_zone_hints_unless_every_ready_endpoint_has_one() -> None:
    state = hinted_state(None)
    unhinted = slice_of(SliceEndpoint(("10.244.3.5",), node_name="n4", zone="a"), name="web-x")
    state = state.step(Apply([unhinted]))
    assert len(forwarded(state, "n1")) == 4
    # a not-ready endpoint without hints does not count
    state = state.step(
        Apply([attrs.evolve(unhinted, endpoints=(SliceEndpoint(("10.244.3.5",), ready=False),))])
    )
    assert forwarded(state, "n1") == {"10.244.0.5", "10.244.1.5"}


def test_api_node_hints_come_before_zone_hints() -> None:
    eps = (
        SliceEndpoint(
            ("10.244.0.5",), node_name="n1", zone="a", for_zones=("a",), for_nodes=("n1",)
        ),
        SliceEndpoint(
            ("10.244.0.6",), node_name="n2", zone="a", for_zones=("a",), for_nodes=("n2",)
        ),
    )
    state = ClusterState.empty(API).step(
        Apply(
            [
                node("n1", "192.0.2.1", "a"),
                node("n2", "192.0.2.2", "a"),
                node("n3", "192.0.2.3", "a"),
                web(),
                slice_of(*eps),
            ]
        )
    )
    assert forwarded(state, "n1") == {"10.244.0.5"}
    assert forwarded(state, "n3") == {"10.244.0.5", "10.244.0.6"}  # no node hint: the zone's


def test_hints_are_dropped_under_svcnet_authority() -> None:
    eps = (SliceEndpoint(("10.244.0.5",), for_zones=("a",), for_nodes=("n1",)),)
    state = ClusterState.empty().step(Apply([web(selector=None), slice_of(*eps)]))
    (only,) = state.service_endpoints("default", "web")[""]
    assert (only.for_zones, only.for_nodes) == ((), ())


@attrs.frozen(repr=False)
class Pair:
    """A svcnet-built state and its API-authority twin (a short repr for Hypothesis)."""

    own: ClusterState
    api: ClusterState

    def __repr__(self) -> str:
        return f"Pair({len(self.api.services)} services, {len(self.api.slices)} slices)"


@st.composite
def api_clusters(draw: st.DrawFn) -> Pair:
    """A cluster as svcnet builds it, and the same services (with svcnet's
    allocations, as an API server would have them) with slices for every one,
    stepped under the API's authority."""
    config = draw_config(draw)
    objects = draw_cluster_objects(draw, config)
    own = ClusterState.empty(config).step(Apply(objects))
    # what an API server holds: svcnet's allocations, pool addresses as ingress
    services = [attrs.evolve(s, status_ingress=s.load_balancer_ips) for s in own.services.values()]
    slices: dict[tuple[str, str], EndpointSlice] = {}
    for svc in services:
        if svc.type is not ServiceType.EXTERNAL_NAME:
            for _ in range(draw(st.integers(0, 2))):
                sl = draw_endpoint_slice(draw, config, svc)
                slices[(sl.namespace, sl.name)] = sl
    pods = [o for o in objects if isinstance(o, Pod)]
    nodes = list(own.nodes.values())
    batch: list[KubeObject] = [*nodes, *services, *slices.values(), *pods]
    api = ClusterState.empty(attrs.evolve(config, authority=Authority.API)).step(Apply(batch))
    return Pair(ClusterState.empty(config).step(Apply(services)), api)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(api_clusters())
def test_api_state_holds_the_given_services_and_slice_endpoints(
    pair: Pair,
) -> None:
    own, api = pair.own, pair.api
    assert dict(api.services) == dict(own.services)  # nothing reallocated, nothing checked
    reference = ep.compute_all(
        api.config, api.nodes, (), api.services.values(), api.slices.values()
    )
    assert dict(api.endpoints) == reference  # slices only: no pod given
    # ... and the plan and the oracle agree on every interesting probe
    for name in api.nodes:
        backend = MemoryBackend(name)
        backend.sync(compile(api, name))
        space = probe_space(api)
        for dsts in space.kinds:
            for dst in dsts[:4]:
                for kind, source, on in space.sources(dst)[:2]:
                    if on != name:
                        continue
                    probe = Probe(kind, source, on, *dst)
                    assert backend.evaluate(probe) == evaluate(api, probe), probe


def test_slice_ports_match_by_name_and_protocol_under_api() -> None:
    svc = web(ports=(ServicePort(53, name="dns", protocol=Protocol.UDP),))
    sl = attrs.evolve(
        slice_of(SliceEndpoint(("10.244.0.5",))),
        ports=(SlicePort(5353, "dns", Protocol.UDP), SlicePort(9, "dns", Protocol.TCP)),
    )
    state = ClusterState.empty(API).step(Apply([svc, sl]))
    assert [e.port for e in state.service_endpoints("default", "web")["dns"]] == [5353]
