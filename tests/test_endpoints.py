from svcnet.model import (
    ZONE_LABEL,
    ClusterConfig,
    ContainerPort,
    Endpoint,
    EndpointSlice,
    IPFamily,
    Labels,
    Node,
    Pod,
    Protocol,
    Service,
    ServicePort,
    ServiceType,
    SliceEndpoint,
    SlicePort,
)
from svcnet.state.endpoints import (
    compute,
    compute_all,
    pod_endpoints,
    service_families,
    slice_endpoints,
)

CFG = ClusterConfig()
DUAL = ClusterConfig(service_cidrs=("10.96.0.0/16", "fd00::/108"))
NODES = {
    "a": Node("a", labels={ZONE_LABEL: "z1"}, addresses=("192.168.0.1", "fd01::1")),
    "b": Node("b", addresses=("192.168.0.2",)),
}
SEL = Labels.of({"app": "web"})


def pod(name: str, *ips: str, **kw: object) -> Pod:
    kw.setdefault("labels", {"app": "web"})
    kw.setdefault("node_name", "a")
    kw.setdefault("ready", True)
    return Pod("default", name, pod_ips=ips, **kw)  # type: ignore[arg-type]


def web(**kw: object) -> Service:
    kw.setdefault("ports", (ServicePort(80, target_port=8080),))
    kw.setdefault("cluster_ips", ("10.96.0.10",))
    return Service("default", "web", selector=SEL, **kw)  # type: ignore[arg-type]


def test_conditions_and_zone() -> None:
    pods = [
        pod("ready", "10.244.0.2"),
        pod("notready", "10.244.0.3", ready=False),
        pod("term", "10.244.0.4", terminating=True),
        pod("noip"),
        pod("other", "10.244.0.5", labels={"app": "db"}),
        pod("otherns", "10.244.0.6").__class__("x", "p", labels=SEL, pod_ips=("10.244.0.6",)),
        pod("b", "10.244.0.7", node_name="b"),
    ]
    eps = pod_endpoints(web(), pods, NODES, CFG)[""]
    by_pod = {e.pod: e for e in eps}
    assert set(by_pod) == {"ready", "notready", "term", "b"}
    assert by_pod["ready"] == Endpoint(
        "10.244.0.2", 8080, "a", True, True, False, "", "ready", "z1"
    )
    assert (by_pod["notready"].ready, by_pod["notready"].serving) == (False, False)
    t = by_pod["term"]
    assert (t.ready, t.serving, t.terminating) == (False, True, True)
    assert by_pod["b"].zone == ""
    assert list(eps) == sorted(eps)
    published = pod_endpoints(web(publish_not_ready_addresses=True), pods, NODES, CFG)[""]
    assert all(e.ready for e in published)


def test_named_target_port_per_pod_and_protocol() -> None:
    svc = web(
        ports=(
            ServicePort(80, name="http", target_port="http"),
            ServicePort(53, name="dns", protocol=Protocol.UDP, target_port="dns"),
        )
    )
    pods = [
        pod(
            "p1",
            "10.244.0.2",
            ports=(ContainerPort(8080, "http"), ContainerPort(5353, "dns", Protocol.UDP)),
        ),
        pod(
            "p2",
            "10.244.0.3",
            ports=(ContainerPort(9090, "http"), ContainerPort(53, "dns", Protocol.TCP)),
        ),
    ]
    eps = pod_endpoints(svc, pods, NODES, CFG)
    assert [(e.ip, e.port) for e in eps["http"]] == [("10.244.0.2", 8080), ("10.244.0.3", 9090)]
    assert [(e.ip, e.port) for e in eps["dns"]] == [("10.244.0.2", 5353)]
    unset = pod_endpoints(web(ports=(ServicePort(80),)), pods, NODES, CFG)[""]
    assert {e.port for e in unset} == {80}


def test_families_and_host_network() -> None:
    pods = [
        pod("dual", "10.244.0.2", "fd02::2"),
        pod("host", host_network=True),
        pod("hostb", host_network=True, node_name="b"),
        pod("hostgone", host_network=True, node_name="gone"),
    ]
    v4 = pod_endpoints(web(), pods, NODES, DUAL)[""]
    assert {e.ip for e in v4} == {"10.244.0.2", "192.168.0.1", "192.168.0.2"}
    both = pod_endpoints(web(cluster_ips=("10.96.0.10", "fd00::10")), pods, NODES, DUAL)[""]
    assert {e.ip for e in both} == {
        "10.244.0.2",
        "fd02::2",
        "192.168.0.1",
        "fd01::1",
        "192.168.0.2",
    }
    headless = web(cluster_ips=(), headless=True)
    assert service_families(headless, DUAL) == (IPFamily.IPv4, IPFamily.IPv6)
    v6only = web(cluster_ips=(), headless=True, ip_families=(IPFamily.IPv6,))
    assert {e.ip for e in pod_endpoints(v6only, pods, NODES, DUAL)[""]} == {"fd02::2", "fd01::1"}


def test_hostname_only_for_matching_subdomain() -> None:
    pods = [
        pod("p", "10.244.0.2", hostname="h", subdomain="web"),
        pod("q", "10.244.0.3", hostname="h2"),
    ]
    eps = pod_endpoints(web(), pods, NODES, CFG)[""]
    assert {e.pod: e.hostname for e in eps} == {"p": "h", "q": ""}


def test_dedupe_identical_ip_port() -> None:
    pods = [pod("p", "10.244.0.2", ready=False), pod("q", "10.244.0.2")]
    eps = pod_endpoints(web(), pods, NODES, CFG)[""]
    assert len(eps) == 1 and eps[0].ready and eps[0].pod == "q"


def test_slices_for_selectorless_services() -> None:
    svc = Service(
        "default",
        "ext",
        ports=(ServicePort(80, name="http"), ServicePort(81, name="x")),
        cluster_ips=("10.96.0.11",),
    )
    slices = [
        EndpointSlice(
            "default",
            "ext-1",
            "ext",
            IPFamily.IPv4,
            endpoints=(
                SliceEndpoint(("192.0.2.1", "192.0.2.100"), zone="z2", node_name="a"),
                SliceEndpoint(("192.0.2.2",), ready=False, serving=True, terminating=True),
            ),
            ports=(SlicePort(8080, "http"), SlicePort(9090, "x", Protocol.UDP)),
        ),
        EndpointSlice(
            "default",
            "ext-2",
            "ext",
            IPFamily.IPv6,
            endpoints=(SliceEndpoint(("fd00::1",)),),
            ports=(SlicePort(8080, "http"),),
        ),
        EndpointSlice(
            "default",
            "other",
            "web",
            IPFamily.IPv4,
            endpoints=(SliceEndpoint(("192.0.2.9",)),),
            ports=(SlicePort(1, "http"),),
        ),
        EndpointSlice(
            "default",
            "ext-3",
            "ext",
            IPFamily.IPv4,
            endpoints=(SliceEndpoint(("192.0.2.1",), zone="z2", node_name="a"),),
            ports=(SlicePort(8080, "http"),),
        ),
    ]
    eps = slice_endpoints(svc, slices, CFG)
    assert eps["x"] == ()  # protocol differs
    assert [(e.ip, e.port, e.zone, e.ready, e.terminating) for e in eps["http"]] == [
        ("192.0.2.1", 8080, "z2", True, False),
        ("192.0.2.2", 8080, "", False, True),
    ]
    assert compute(svc, [], NODES, slices, CFG) == {"http": eps["http"], "x": ()}


def test_topology_the_traffic_distributions_read() -> None:
    # PreferSameNode reads an endpoint's node, PreferSameZone (PreferClose) its zone:
    # a pod's come from its node (the zone label; none for an unknown node), a
    # slice endpoint's from the slice
    pods = [
        pod("on-a", "10.244.0.2"),
        pod("on-b", "10.244.0.3", node_name="b"),
        pod("on-gone", "10.244.0.4", node_name="gone"),
    ]
    svc = web(traffic_distribution="PreferSameNode")
    eps = pod_endpoints(svc, pods, NODES, CFG)[""]
    assert [(e.pod, e.node_name, e.zone) for e in eps] == [
        ("on-a", "a", "z1"),
        ("on-b", "b", ""),
        ("on-gone", "gone", ""),
    ]
    sliced = Service(
        "default",
        "ext",
        ports=(ServicePort(80, name="http"),),
        cluster_ips=("10.96.0.11",),
        traffic_distribution="PreferSameZone",
    )
    slices = [
        EndpointSlice(
            "default",
            "ext-1",
            "ext",
            IPFamily.IPv4,
            endpoints=(
                SliceEndpoint(("192.0.2.1",), zone="z2", node_name="b"),
                SliceEndpoint(("192.0.2.2",)),
            ),
            ports=(SlicePort(8080, "http"),),
        )
    ]
    got = slice_endpoints(sliced, slices, CFG)["http"]
    assert [(e.ip, e.node_name, e.zone) for e in got] == [
        ("192.0.2.1", "b", "z2"),
        ("192.0.2.2", "", ""),
    ]


def test_external_name_has_no_entry() -> None:
    svc = Service("default", "e", type=ServiceType.EXTERNAL_NAME, external_name="example.com")
    assert compute(svc, [], NODES, [], CFG) is None
    assert compute_all(CFG, NODES, [], [svc, web()], []) == {("default", "web"): {"": ()}}
