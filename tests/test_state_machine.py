"""Random event sequences against ClusterState, with its invariants checked after each."""

import ipaddress

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from svcnet.errors import SvcnetError
from svcnet.model import (
    ZONE_LABEL,
    ClusterConfig,
    ContainerPort,
    EndpointSlice,
    IPFamily,
    Kind,
    Labels,
    Node,
    ObjectKey,
    Pod,
    Protocol,
    Service,
    ServicePort,
    ServiceType,
    SliceEndpoint,
    SlicePort,
    TrafficPolicy,
)
from svcnet.state import Apply, ClusterState, Delete, Event
from svcnet.state.endpoints import compute_all

settings.register_profile(
    "svcnet-state",
    max_examples=100,
    stateful_step_count=30,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

CONFIG = ClusterConfig(
    service_cidrs=("10.96.0.0/28",),
    node_port_range=(30000, 30007),
    load_balancer_pool=("203.0.113.0/30",),
)
NODES = ["n1", "n2", "n3"]
NAMES = ["a", "b", "c", "d", "e"]
NSS = ["default", "other"]

nodes = st.builds(
    lambda i, labels, cidr, addr: Node(
        NODES[i],
        labels=labels,
        pod_cidrs=(f"10.244.{i}{cidr}",) if cidr else (),  # distinct per node
        addresses=(f"192.168.0.{i + 1}{addr}",) if addr is not None else (),
    ),
    st.integers(0, len(NODES) - 1),
    st.sampled_from([{}, {ZONE_LABEL: "z1"}, {ZONE_LABEL: "z2"}]),
    st.sampled_from([".0/30", ".8/29", ""]),
    st.sampled_from(["", "0", None]),
)
pods = st.builds(
    Pod,
    namespace=st.sampled_from(NSS),
    name=st.sampled_from(NAMES),
    labels=st.sampled_from([{"app": "x"}, {"app": "y"}, {"app": "x", "t": "1"}, {}]),
    node_name=st.sampled_from([*NODES, "", "ghost"]),
    host_network=st.booleans(),
    ports=st.sampled_from(
        [(), (ContainerPort(8080, "http"),), (ContainerPort(9090, "http", Protocol.UDP),)]
    ),
    pod_ips=st.sampled_from([(), (), ("10.244.9.9",)]),
    ready=st.booleans(),
    terminating=st.booleans(),
)
ports = st.lists(
    st.builds(
        ServicePort,
        port=st.sampled_from([80, 81]),
        name=st.sampled_from(["", "http", "dns"]),
        protocol=st.sampled_from([Protocol.TCP, Protocol.UDP]),
        target_port=st.sampled_from([None, 8080, "http"]),
        node_port=st.sampled_from([None, None, 30000, 30006, 30007]),
    ),
    min_size=1,
    max_size=2,
).map(tuple)


@st.composite
def services(draw: st.DrawFn) -> Service:
    typ = draw(st.sampled_from(list(ServiceType)))
    headless = typ is ServiceType.CLUSTER_IP and draw(st.booleans())
    ps = draw(ports)
    if typ not in (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER):
        ps = tuple(ServicePort(p.port, p.name, p.protocol, p.target_port) for p in ps)
    lb = typ is ServiceType.LOAD_BALANCER
    return Service(
        namespace=draw(st.sampled_from(NSS)),
        name=draw(st.sampled_from(NAMES)),
        type=typ,
        selector=draw(
            st.sampled_from([Labels.of({"app": "x"}), Labels.of({"app": "y", "t": "1"}), None])
        ),
        ports=ps,
        headless=headless,
        cluster_ips=()
        if headless or typ is ServiceType.EXTERNAL_NAME
        else draw(st.sampled_from([(), (), ("10.96.0.2",), ("10.96.0.14",), ("10.96.0.99",)])),
        external_traffic_policy=draw(st.sampled_from(list(TrafficPolicy)))
        if lb
        else TrafficPolicy.CLUSTER,
        load_balancer_ip=draw(st.sampled_from(["", "", "203.0.113.1", "198.51.100.1"]))
        if lb
        else "",
        status_ingress=draw(st.sampled_from([(), (), ("192.0.2.7",)])) if lb else (),
        external_name="svc.example" if typ is ServiceType.EXTERNAL_NAME else "",
        publish_not_ready_addresses=draw(st.booleans()),
    )


slices = st.builds(
    EndpointSlice,
    namespace=st.sampled_from(NSS),
    name=st.sampled_from(["s1", "s2"]),
    service_name=st.sampled_from(NAMES),
    address_type=st.just(IPFamily.IPv4),
    endpoints=st.lists(
        st.builds(
            SliceEndpoint,
            addresses=st.sampled_from([("192.0.2.1",), ("192.0.2.2",)]).map(tuple),
            ready=st.booleans(),
            serving=st.booleans(),
            terminating=st.booleans(),
        ),
        max_size=2,
    ).map(tuple),
    ports=st.sampled_from([(SlicePort(8080, "http"),), (SlicePort(53, "", Protocol.TCP),)]),
)
objects = st.one_of(nodes, pods, services(), slices)


def snapshot(s: ClusterState) -> tuple[object, ...]:
    return (
        s.revision,
        dict(s.nodes),
        dict(s.pods),
        dict(s.services),
        dict(s.slices),
        dict(s.endpoints),
    )


class StateMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.state = ClusterState.empty(CONFIG)

    def _step(self, event: Event) -> None:
        before, snap = self.state, snapshot(self.state)
        try:
            self.state = self.state.step(event)
        except SvcnetError:
            assert snapshot(before) == snap
            assert self.state is before
            return
        assert self.state.revision == before.revision + 1

    @rule(objs=st.lists(objects, min_size=1, max_size=3))
    def apply(self, objs: list[Node | Pod | Service | EndpointSlice]) -> None:
        self._step(Apply(tuple(objs)))

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        keys = (
            [n.key for n in self.state.nodes.values()]
            + [p.key for p in self.state.pods.values()]
            + [s.key for s in self.state.services.values()]
            + [s.key for s in self.state.slices.values()]
            + [ObjectKey(Kind.POD, "default", "missing")]
        )
        chosen = data.draw(
            st.lists(st.sampled_from(sorted(keys)), min_size=1, max_size=2, unique=True)
        )
        self._step(Delete(tuple(chosen)))

    @invariant()
    def nothing_held_twice_and_in_range(self) -> None:
        s = self.state
        net = ipaddress.ip_network("10.96.0.0/28")
        lbpool = ipaddress.ip_network("203.0.113.0/30")
        cips: set[str] = set()
        nports: set[int] = set()
        lbs: set[str] = set()
        for svc in s.services.values():
            for ip in svc.cluster_ips:
                assert ip not in cips
                cips.add(ip)
                a = ipaddress.ip_address(ip)
                assert a in net and a not in (net.network_address, net.broadcast_address)
            mine = {p.node_port for p in svc.ports if p.node_port is not None}
            if svc.health_check_node_port is not None:
                assert svc.health_check_node_port not in mine
                mine.add(svc.health_check_node_port)
            assert not mine & nports
            assert all(30000 <= v <= 30007 for v in mine)
            nports |= mine
            if svc.type is ServiceType.LOAD_BALANCER and not svc.status_ingress:
                for ip in svc.load_balancer_ips:
                    assert ip not in lbs and ipaddress.ip_address(ip) in lbpool
                    lbs.add(ip)
            if svc.type is ServiceType.NODE_PORT:
                assert all(p.node_port is not None for p in svc.ports)
            if svc.type is ServiceType.EXTERNAL_NAME or svc.headless:
                assert svc.cluster_ips == ()
            else:
                assert svc.cluster_ips
        pod_ips: set[str] = set()
        for pod in s.pods.values():
            if pod.pod_ips_allocated:
                node = s.nodes[pod.node_name]
                for ip in pod.pod_ips:
                    assert ip not in pod_ips
                    pod_ips.add(ip)
                    assert any(
                        ipaddress.ip_address(ip) in ipaddress.ip_network(c) for c in node.pod_cidrs
                    )
        # the allocators hold exactly what the objects hold (deleting frees)
        alloc = s._svc_alloc
        assert {
            str(ipaddress.ip_address(v)) for v in alloc.cluster_ips[IPFamily.IPv4].owners
        } == cips
        assert set(alloc.node_ports.owners) == nports
        held_lb = {str(ipaddress.ip_address(v)) for _, p in alloc.lb_pools for v in p.owners}
        assert held_lb == lbs
        for key in alloc.lb_waiting:
            svc = s.services[(key.namespace, key.name)]
            assert svc.type is ServiceType.LOAD_BALANCER and svc.load_balancer_ips == ()

    @invariant()
    def lb_waiting_only_when_needed(self) -> None:
        s = self.state
        pool = s._svc_alloc.lb_pools[0][1]
        for key in s._svc_alloc.lb_waiting:
            svc = s.services[(key.namespace, key.name)]
            if not svc.load_balancer_ip:
                assert pool.free_count == 0

    @invariant()
    def endpoints_match_from_scratch(self) -> None:
        s = self.state
        ref = compute_all(
            s.config, s.nodes, s.pods.values(), s.services.values(), s.slices.values()
        )
        assert dict(s.endpoints) == ref
        objs = [*s.nodes.values(), *s.pods.values(), *s.services.values(), *s.slices.values()]
        fresh = ClusterState.empty(s.config).step(Apply(tuple(objs)))
        assert dict(fresh.endpoints) == dict(s.endpoints)
        assert dict(fresh.pods) == dict(s.pods)


StateMachine.TestCase.settings = settings.get_profile("svcnet-state")
TestStateMachine = StateMachine.TestCase
