import attrs
import pytest

from svcnet.errors import ConflictError, NotFoundError, ValidationError
from svcnet.model import (
    ZONE_LABEL,
    ClusterConfig,
    EndpointSlice,
    IPFamily,
    Kind,
    Labels,
    Node,
    ObjectKey,
    Pod,
    Service,
    ServicePort,
    ServiceType,
    SliceEndpoint,
    SlicePort,
)
from svcnet.state import Apply, ClusterState, Configure, Delete, Touched, step
from svcnet.state.endpoints import compute_all

NODE = Node(
    "a", labels={ZONE_LABEL: "z1"}, pod_cidrs=("10.244.1.0/24",), addresses=("192.168.0.1",)
)
SEL = Labels.of({"app": "web"})


def web(**kw: object) -> Service:
    kw.setdefault("ports", (ServicePort(80, target_port=8080),))
    return Service("default", "web", selector=SEL, **kw)  # type: ignore[arg-type]


def pod(name: str, **kw: object) -> Pod:
    kw.setdefault("labels", {"app": "web"})
    kw.setdefault("node_name", "a")
    kw.setdefault("ready", True)
    return Pod("default", name, **kw)  # type: ignore[arg-type]


def key(kind: Kind, name: str, ns: str = "default") -> ObjectKey:
    return ObjectKey(kind, "" if kind is Kind.NODE else ns, name)


def test_apply_batch_nodes_first_and_endpoints() -> None:
    s = ClusterState.empty().step(Apply((pod("p1"), web(), NODE)))
    assert s.revision == 1
    assert s.pods[("default", "p1")].pod_ips == ("10.244.1.2",)
    eps = s.service_endpoints("default", "web")[""]
    assert [(e.ip, e.port, e.zone) for e in eps] == [("10.244.1.2", 8080, "z1")]
    assert s.service_endpoints("default", "nope") == {}
    assert step(s, Apply(())).revision == 2


def test_rejected_event_changes_nothing_and_is_all_or_nothing() -> None:
    s = ClusterState.empty().step(
        Apply((web(type=ServiceType.NODE_PORT, ports=(ServicePort(80, node_port=30080),)),))
    )
    bad = Apply(
        (
            pod("p1"),
            Service(
                "default",
                "other",
                type=ServiceType.NODE_PORT,
                ports=(ServicePort(80, node_port=30080),),
            ),
        )
    )
    with pytest.raises(
        ConflictError, match="nodePort 30080 is already allocated to Service default/web"
    ):
        s.step(bad)
    assert ("default", "p1") not in s.pods and s.revision == 1
    with pytest.raises(NotFoundError, match="Pod default/x"):
        s.step(Delete((key(Kind.POD, "x"),)))
    with pytest.raises(NotFoundError):
        s.step(Delete((key(Kind.SERVICE, "web"), key(Kind.SERVICE, "web"))))
    assert ("default", "web") in s.services


def test_replace_keeps_allocations() -> None:
    s = ClusterState.empty().step(
        Apply(
            (
                NODE,
                pod("p1"),
                web(type=ServiceType.LOAD_BALANCER, ports=(ServicePort(80, name="http"),)),
            )
        )
    )
    before = s.services[("default", "web")]
    s2 = s.step(
        Apply(
            (
                web(type=ServiceType.LOAD_BALANCER, ports=(ServicePort(8080, name="http"),)),
                pod("p1", ready=False),
            )
        )
    )
    after = s2.services[("default", "web")]
    assert after.cluster_ips == before.cluster_ips
    assert after.ports[0].node_port == before.ports[0].node_port
    assert after.load_balancer_ips == before.load_balancer_ips
    assert s2.pods[("default", "p1")].pod_ips == s.pods[("default", "p1")].pod_ips
    immutable = r'spec\.clusterIP: Invalid value: "10\.96\.0\.77": field is immutable'
    with pytest.raises(ValidationError, match=immutable):
        s2.step(Apply((web(cluster_ips=("10.96.0.77",)),)))
    s3 = s2.step(Apply((web(),)))
    assert s3.services[("default", "web")].ports[0].node_port is None
    s4 = s3.step(Apply((web(type=ServiceType.EXTERNAL_NAME, external_name="x.example"),)))
    assert s4.services[("default", "web")].cluster_ips == ()
    assert ("default", "web") not in s4.endpoints


def test_delete_frees_and_reuses() -> None:
    s = ClusterState.empty().step(Apply((web(cluster_ips=("10.96.0.10",)),)))
    with pytest.raises(
        ConflictError, match=r"clusterIP 10\.96\.0\.10 is already allocated to Service default/web"
    ):
        s.step(Apply((Service("default", "x", cluster_ips=("10.96.0.10",)),)))
    s = s.step(Delete((key(Kind.SERVICE, "web"),)))
    s = s.step(Apply((Service("default", "x", cluster_ips=("10.96.0.10",)),)))
    assert s.services[("default", "x")].cluster_ips == ("10.96.0.10",)


def test_pods_wait_for_their_node() -> None:
    s = ClusterState.empty().step(Apply((web(), pod("p1", node_name="late"))))
    assert s.pods[("default", "p1")].pod_ips == ()
    assert s.service_endpoints("default", "web")[""] == ()
    s = s.step(Apply((Node("late", pod_cidrs=("10.244.7.0/24",)),)))
    assert s.pods[("default", "p1")].pod_ips == ("10.244.7.2",)
    assert len(s.service_endpoints("default", "web")[""]) == 1
    s = s.step(Delete((key(Kind.NODE, "late"),)))
    assert s.pods[("default", "p1")].pod_ips == ()
    assert s.service_endpoints("default", "web")[""] == ()


def test_lb_waiting_served_in_arrival_order() -> None:
    cfg = ClusterConfig(load_balancer_pool=("203.0.113.0/32",))
    lbs = [
        Service("default", n, type=ServiceType.LOAD_BALANCER, ports=(ServicePort(80),))
        for n in "abc"
    ]
    s = ClusterState.empty(cfg).step(Apply(lbs))
    got = {k[1]: v.load_balancer_ips for k, v in s.services.items()}
    assert got == {"a": ("203.0.113.0",), "b": (), "c": ()}
    r = s.revision
    s = s.step(Delete((key(Kind.SERVICE, "a"),)))
    assert s.services[("default", "b")].load_balancer_ips == ("203.0.113.0",)
    assert s.services[("default", "c")].load_balancer_ips == ()
    ch = s.changed_since(r)
    assert ch is not None and ch.services == {("default", "a"), ("default", "b")}


def test_node_change_updates_zone_and_host_network() -> None:
    s = ClusterState.empty().step(Apply((NODE, web(), pod("h", host_network=True))))
    eps = s.service_endpoints("default", "web")[""]
    assert [(e.ip, e.zone) for e in eps] == [("192.168.0.1", "z1")]
    s = s.step(Apply((attrs.evolve(NODE, labels={ZONE_LABEL: "z2"}, addresses=("192.168.0.9",)),)))
    eps = s.service_endpoints("default", "web")[""]
    assert [(e.ip, e.zone) for e in eps] == [("192.168.0.9", "z2")]
    assert s.changed_since(s.revision - 1) == Touched(
        frozenset({("default", "web")}), frozenset({"a"}), False
    )


def test_incremental_recompute_only_selecting_services() -> None:
    objs: list[object] = [NODE]
    for i in range(50):
        objs.append(
            Service(
                "default", f"s{i}", selector=Labels.of({"app": f"a{i}"}), ports=(ServicePort(80),)
            )
        )
        objs.append(pod(f"p{i}", labels={"app": f"a{i}"}))
    s = ClusterState.empty().step(Apply(tuple(objs)))  # type: ignore[arg-type]
    s = s.step(Apply((pod("p7", labels={"app": "a7"}, ready=False),)))
    assert s.last_recomputed == {("default", "s7")}
    s = s.step(Apply((pod("p7", labels={"app": "a8"}),)))
    assert s.last_recomputed == {("default", "s7"), ("default", "s8")}
    assert len(s.service_endpoints("default", "s8")[""]) == 2


def test_selectorless_service_uses_slices() -> None:
    svc = Service("default", "ext", ports=(ServicePort(80, name="http"),))
    sl = EndpointSlice(
        "default",
        "ext-1",
        "ext",
        IPFamily.IPv4,
        endpoints=(SliceEndpoint(("192.0.2.1",)),),
        ports=(SlicePort(8080, "http"),),
    )
    s = ClusterState.empty().step(Apply((svc, sl)))
    assert [e.address for e in s.service_endpoints("default", "ext")["http"]] == ["192.0.2.1:8080"]
    s = s.step(Delete((key(Kind.ENDPOINT_SLICE, "ext-1"),)))
    assert s.service_endpoints("default", "ext")["http"] == ()


def test_service_proxy_name_still_allocated() -> None:
    s = ClusterState.empty().step(
        Apply((NODE, pod("p"), web(labels={"service.kubernetes.io/service-proxy-name": "other"})))
    )
    svc = s.services[("default", "web")]
    assert not svc.proxied and svc.cluster_ips
    assert len(s.service_endpoints("default", "web")[""]) == 1


def test_configure() -> None:
    s = ClusterState.empty().step(
        Apply((web(type=ServiceType.NODE_PORT, ports=(ServicePort(80, node_port=30080),)),))
    )
    with pytest.raises(ValidationError):
        s.step(Configure(ClusterConfig(node_port_range=(31000, 32000))))
    s2 = s.step(Configure(ClusterConfig(service_cidrs=("10.96.0.0/12",))))
    assert s2.config.service_cidrs == ("10.96.0.0/12",)
    assert s2.changed_since(s.revision) == Touched(frozenset(), frozenset(), True)  # config: all
    with pytest.raises(ValidationError):
        s.step(Configure(ClusterConfig(service_cidrs=("not-a-cidr",))))


def test_changed_since_bounds() -> None:
    s = ClusterState.empty()
    assert s.changed_since(0) == Touched()
    assert s.changed_since(5) is None
    for i in range(3):
        s = s.step(Apply((Node(f"n{i}"),)))
    assert s.changed_since(1) == Touched(nodes=frozenset({"n1", "n2"}))
    s = attrs.evolve(s, revision=s.revision)  # still answers after evolve
    big = s
    for _ in range(4100):
        big = big.step(Apply(()))
    assert big.changed_since(0) is None
    assert big.changed_since(big.revision - 10) == Touched()


def test_matches_from_scratch() -> None:
    objs = (
        NODE,
        web(),
        pod("p1"),
        pod("p2", ready=False, terminating=True),
        pod("p3", node_name="b"),
    )
    s = ClusterState.empty().step(Apply(objs))
    s = s.step(Delete((key(Kind.POD, "p1"),)))
    s = s.step(Apply((Node("b", pod_cidrs=("10.244.2.0/24",)),)))
    ref = compute_all(s.config, s.nodes, s.pods.values(), s.services.values(), s.slices.values())
    assert dict(s.endpoints) == ref
