import ipaddress

import attrs
import pytest

from svcnet.errors import ConflictError, ValidationError
from svcnet.model import (
    ClusterConfig,
    IPFamily,
    IPFamilyPolicy,
    Kind,
    Node,
    ObjectKey,
    Pod,
    Service,
    ServicePort,
    ServiceType,
    TrafficPolicy,
)
from svcnet.state import Apply, ClusterState
from svcnet.state.allocation import (
    PodAllocations,
    Pool,
    ServiceAllocations,
    cluster_ip_pool,
    pod_ip_pool,
)

OWNER = ObjectKey(Kind.SERVICE, "default", "a")


def alloc(
    cidrs: tuple[str, ...] = ("10.96.0.0/16",),
    ports: tuple[int, int] = (30000, 32767),
    pool: tuple[str, ...] = ("203.0.113.0/30",),
) -> ServiceAllocations:
    return ServiceAllocations.for_config(cidrs, ports, pool)


def svc(name: str, **kw: object) -> Service:
    kw.setdefault("ports", (ServicePort(80),))
    return Service("default", name, **kw)  # type: ignore[arg-type]


def test_pool_lowest_highest_and_release() -> None:
    p = Pool.create(10, 20)
    assert p.lowest_free() == 10 and p.highest_free() == 20
    p = p.take(10, OWNER).take(20, OWNER)
    assert p.lowest_free() == 11 and p.highest_free() == 19
    assert p.lowest_free(15, 15) == 15
    assert p.owner(10) == OWNER
    p2 = p.release(10)
    assert p2.lowest_free() == 10 and p.lowest_free() == 11  # persistent
    assert p2.release(10) == p2  # releasing a free value is a no-op
    assert p.release(10, ObjectKey(Kind.SERVICE, "x", "y")) == p  # not the owner


def test_pool_full() -> None:
    p = Pool.create(0, 2)
    for v in range(3):
        p = p.take(v, OWNER)
    assert p.lowest_free() is None and p.dynamic() is None and p.free_count == 0


def test_dynamic_prefers_upper_band_then_lower_from_the_top() -> None:
    p = Pool.create(0, 99, band=16)
    assert p.dynamic() == 16
    for v in range(16, 100):
        p = p.take(v, OWNER)
    assert p.dynamic() == 15


def test_cluster_ip_pool_excludes_network_and_broadcast() -> None:
    p = cluster_ip_pool("10.96.0.0/30")
    assert (p.lo, p.hi) == (
        int(ipaddress.ip_address("10.96.0.1")),
        int(ipaddress.ip_address("10.96.0.2")),
    )
    p6 = cluster_ip_pool("fd00::/126")
    assert p6.hi == int(ipaddress.ip_address("fd00::3"))


def test_pod_pool_skips_network_gateway_broadcast() -> None:
    p = pod_ip_pool("10.244.1.0/24")
    assert str(ipaddress.ip_address(p.lo)) == "10.244.1.2"
    assert str(ipaddress.ip_address(p.hi)) == "10.244.1.254"


def test_cluster_ip_dynamic_upper_band() -> None:
    a, s = alloc().allocate_service(None, svc("a"))
    assert s.cluster_ips == ("10.96.1.1",)  # above the static band of 256
    assert s.ip_families == (IPFamily.IPv4,)
    assert s.ip_family_policy is IPFamilyPolicy.SINGLE_STACK
    _, s2 = a.allocate_service(None, svc("b"))
    assert s2.cluster_ips == ("10.96.1.2",)


def test_cluster_ip_pinned_conflict_and_range() -> None:
    a, _ = alloc().allocate_service(None, svc("x", cluster_ips=("10.96.0.10",)))
    with pytest.raises(ConflictError) as e:
        a.allocate_service(None, svc("y", cluster_ips=("10.96.0.10",)))
    assert e.value.message == "clusterIP 10.96.0.10 is already allocated to Service default/x"
    assert e.value.field == "spec.clusterIP"
    assert e.value.obj == "Service default/y"
    for bad in ("10.97.0.1", "10.96.0.0", "10.96.255.255"):
        with pytest.raises(ValidationError) as v:
            a.allocate_service(None, svc("z", cluster_ips=(bad,)))
        assert v.value.field == "spec.clusterIP"
        assert not isinstance(v.value, ConflictError)


def test_cluster_ip_immutable_and_kept() -> None:
    a, s = alloc().allocate_service(None, svc("x"))
    _, s2 = a.allocate_service(s, svc("x"))
    assert s2.cluster_ips == s.cluster_ips
    with pytest.raises(ValidationError, match="field is immutable"):
        a.allocate_service(s, svc("x", cluster_ips=("10.96.0.99",)))
    with pytest.raises(ValidationError, match="field is immutable"):
        a.allocate_service(s, svc("x", headless=True))
    a3, s3 = a.allocate_service(s, svc("x", type=ServiceType.EXTERNAL_NAME, external_name="e.com"))
    assert s3.cluster_ips == ()
    assert a3.cluster_ips[IPFamily.IPv4].owners == {}


def test_dual_stack_policies() -> None:
    dual = alloc(cidrs=("10.96.0.0/16", "fd00::/108"))
    _, s = dual.allocate_service(None, svc("p", ip_family_policy=IPFamilyPolicy.PREFER_DUAL_STACK))
    assert [IPFamily.of(i) for i in s.cluster_ips] == [IPFamily.IPv4, IPFamily.IPv6]
    _, s = dual.allocate_service(
        None,
        svc("r", ip_family_policy=IPFamilyPolicy.REQUIRE_DUAL_STACK, ip_families=(IPFamily.IPv6,)),
    )
    assert [IPFamily.of(i) for i in s.cluster_ips] == [IPFamily.IPv6, IPFamily.IPv4]
    _, s = dual.allocate_service(None, svc("s", cluster_ips=("fd00::10",)))
    assert s.cluster_ips == ("fd00::10",) and s.ip_families == (IPFamily.IPv6,)
    _, s = dual.allocate_service(None, svc("t"))
    assert s.ip_families == (IPFamily.IPv4,)
    single = alloc()
    _, s = single.allocate_service(
        None, svc("p", ip_family_policy=IPFamilyPolicy.PREFER_DUAL_STACK)
    )
    assert len(s.cluster_ips) == 1
    with pytest.raises(ValidationError) as e:
        single.allocate_service(None, svc("r", ip_family_policy=IPFamilyPolicy.REQUIRE_DUAL_STACK))
    assert e.value.field == "spec.ipFamilyPolicy"
    with pytest.raises(ValidationError) as e:
        single.allocate_service(None, svc("v6", ip_families=(IPFamily.IPv6,)))
    assert e.value.field == "spec.ipFamilies"


def np_svc(name: str, *ports: ServicePort, **kw: object) -> Service:
    return svc(name, type=ServiceType.NODE_PORT, ports=ports, **kw)


def test_node_ports_dynamic_pinned_conflict() -> None:
    a, s = alloc().allocate_service(
        None, np_svc("web", ServicePort(80, node_port=30080), ServicePort(443, name="s"))
    )
    assert s.ports[0].node_port == 30080
    assert s.ports[1].node_port == 30000 + 86  # upper band first (band = 2768 // 32)
    with pytest.raises(ConflictError) as e:
        a.allocate_service(None, np_svc("other", ServicePort(80, node_port=30080)))
    assert e.value.message == "nodePort 30080 is already allocated to Service default/web"
    assert e.value.field == "spec.ports[0].nodePort"
    with pytest.raises(ValidationError, match="valid range"):
        a.allocate_service(None, np_svc("other", ServicePort(80, node_port=29999)))
    with pytest.raises(ValidationError, match="may not be used"):
        a.allocate_service(None, svc("cip", ports=(ServicePort(80, node_port=30001),)))


def test_node_ports_kept_by_name_or_port_protocol_and_released_on_type_change() -> None:
    a, s = alloc().allocate_service(
        None, np_svc("web", ServicePort(80, name="http"), ServicePort(443, name="https"))
    )
    # reordered and renumbered ports: matched by name
    _, s2 = a.allocate_service(
        s, np_svc("web", ServicePort(8443, name="https"), ServicePort(8080, name="http"))
    )
    assert s2.ports[0].node_port == s.ports[1].node_port
    assert s2.ports[1].node_port == s.ports[0].node_port
    a3, s3 = a.allocate_service(s, svc("web", ports=(ServicePort(80, name="http"),)))
    assert s3.ports[0].node_port is None
    assert a3.node_ports.owners == {}
    # unnamed: matched by (port, protocol)
    b, u = alloc().allocate_service(None, np_svc("u", ServicePort(53), ServicePort(54)))
    _, u2 = b.allocate_service(u, np_svc("u", ServicePort(54), ServicePort(53)))
    assert u2.ports[0].node_port == u.ports[1].node_port


def test_same_node_port_different_protocols_in_one_service() -> None:
    from svcnet.model import Protocol

    _, s = alloc().allocate_service(
        None,
        np_svc(
            "dns",
            ServicePort(53, name="udp", protocol=Protocol.UDP, node_port=30053),
            ServicePort(53, name="tcp", node_port=30053),
        ),
    )
    assert {p.node_port for p in s.ports} == {30053}
    with pytest.raises(ValidationError, match="duplicate"):
        alloc().allocate_service(
            None,
            np_svc(
                "d",
                ServicePort(53, name="a", node_port=30053),
                ServicePort(54, name="b", node_port=30053),
            ),
        )


def lb(name: str, **kw: object) -> Service:
    return svc(name, type=ServiceType.LOAD_BALANCER, **kw)


def test_lb_ports_health_check_and_no_nodeports() -> None:
    a, s = alloc().allocate_service(None, lb("l", external_traffic_policy=TrafficPolicy.LOCAL))
    assert s.ports[0].node_port is not None and s.health_check_node_port is not None
    assert s.health_check_node_port != s.ports[0].node_port
    _, s2 = a.allocate_service(s, lb("l", external_traffic_policy=TrafficPolicy.LOCAL))
    assert s2.health_check_node_port == s.health_check_node_port
    a3, s3 = a.allocate_service(s, lb("l"))
    assert s3.health_check_node_port is None
    assert len(a3.node_ports.owners) == 1
    _, s4 = alloc().allocate_service(None, lb("n", allocate_load_balancer_node_ports=False))
    assert s4.ports[0].node_port is None
    with pytest.raises(ValidationError) as e:
        alloc().allocate_service(None, np_svc("h", ServicePort(80), health_check_node_port=30100))
    assert e.value.field == "spec.healthCheckNodePort"


def test_lb_pool_lowest_first_exhaustion_and_waiting_order() -> None:
    a = alloc(pool=("203.0.113.0/31",))
    a, s1 = a.allocate_service(None, lb("a"))
    a, s2 = a.allocate_service(None, lb("b"))
    assert (s1.load_balancer_ips, s2.load_balancer_ips) == (("203.0.113.0",), ("203.0.113.1",))
    a, s3 = a.allocate_service(None, lb("c"))
    a, s4 = a.allocate_service(None, lb("d"))
    assert s3.load_balancer_ips == () and s4.load_balancer_ips == ()
    a = a.release_service(s2)
    services = {s.key: s for s in (s1, s3, s4)}
    a, served = a.serve_lb_waiting(services.__getitem__)
    assert [(s.name, s.load_balancer_ips) for s in served] == [("c", ("203.0.113.1",))]
    assert list(a.lb_waiting) == [s4.key]


def test_lb_requested_status_and_kept() -> None:
    a = alloc()
    a, s = a.allocate_service(None, lb("a", load_balancer_ip="203.0.113.2"))
    assert s.load_balancer_ips == ("203.0.113.2",)
    a2, t = a.allocate_service(None, lb("b", load_balancer_ip="203.0.113.2"))
    assert t.load_balancer_ips == () and t.key in a2.lb_waiting
    a2, t = a.allocate_service(None, lb("b", load_balancer_ip="198.51.100.1"))
    assert t.load_balancer_ips == ()
    a3, u = a.allocate_service(None, lb("c", status_ingress=("192.0.2.9",)))
    assert u.load_balancer_ips == ("192.0.2.9",) and a3.lb_owner("203.0.113.0") is None
    a4, k = a.allocate_service(s, lb("a", load_balancer_ip="203.0.113.2", ports=(ServicePort(81),)))
    assert k.load_balancer_ips == ("203.0.113.2",) and a4.lb_owner("203.0.113.2") == s.key


def test_reconfigure_refuses_allocations_outside() -> None:
    a, s = alloc().allocate_service(None, np_svc("w", ServicePort(80, node_port=30080)))
    with pytest.raises(ValidationError):
        a.reconfigure(("10.96.0.0/16",), (31000, 32000), (), [s])
    with pytest.raises(ValidationError):
        a.reconfigure(("10.100.0.0/16",), (30000, 32767), (), [s])
    b = a.reconfigure(("10.96.0.0/12",), (30000, 32767), (), [s])
    assert b.node_ports.owner(30080) == s.key


def test_pod_ips_from_node_cidr() -> None:
    a = PodAllocations()
    node = Node("n", pod_cidrs=("10.244.1.0/30", "fd00:1::/126"))
    a, changed = a.set_node(None, node, [])
    assert changed == []
    a, p = a.assign_pod(None, Pod("d", "p", node_name="n"))
    assert p.pod_ips == ("10.244.1.2", "fd00:1::2") and p.pod_ips_allocated
    a2, q = a.assign_pod(None, Pod("d", "q", node_name="n"))
    assert q.pod_ips == () and a2.pods_waiting("n") == 1  # v4 /30 exhausted
    a3 = a2.release_pod(p)
    a3, served = a3.serve_pod_waiting("n", {q.key: q}.__getitem__)
    assert [s.pod_ips for s in served] == [("10.244.1.2", "fd00:1::2")]
    # kept on replace; given and hostNetwork pods get none
    _, p2 = a.assign_pod(p, attrs.evolve(p, pod_ips=(), pod_ips_allocated=False, ready=True))
    assert p2.pod_ips == p.pod_ips
    _, h = a.assign_pod(None, Pod("d", "h", node_name="n", host_network=True))
    assert h.pod_ips == ()


def test_pods_wait_for_unknown_node() -> None:
    a, p = PodAllocations().assign_pod(None, Pod("d", "p", node_name="later"))
    assert p.pod_ips == () and a.pods_waiting("later") == 1
    a, changed = a.set_node(None, Node("later", pod_cidrs=("10.244.9.0/24",)), [p])
    assert [c.pod_ips for c in changed] == [("10.244.9.2",)]
    a, gone = a.remove_node("later", changed)
    assert gone[0].pod_ips == () and a.pods_waiting("later") == 1


# -- a batch that cannot fit its service CIDR is refused before any allocation --


def _cip_service(name: str, **kw: object) -> Service:
    return Service(namespace="default", name=name, ports=(ServicePort(80, "http"),), **kw)  # type: ignore[arg-type]


def _small_cluster() -> ClusterState:
    # 10.96.0.0/29: six usable ClusterIPs
    return ClusterState.empty(ClusterConfig(service_cidrs=("10.96.0.0/29",)))


def _first_failure_one_by_one(state: ClusterState, services: list[Service]) -> str:
    """The error the step gives when the same services arrive one per step."""
    for svc in services:
        try:
            state = state.step(Apply([svc]))
        except ValidationError as e:
            return str(e)
    raise AssertionError("every service fitted")


def test_exhausting_batch_refused_with_the_error_sequential_steps_give() -> None:
    state = _small_cluster()
    services = [_cip_service(f"s{i}") for i in range(9)]
    with pytest.raises(ValidationError) as err:
        state.step(Apply(services))
    assert str(err.value) == _first_failure_one_by_one(state, services)
    assert "Service default/s6" in str(err.value) and "spec.clusterIP" in str(err.value)
    assert "no IPv4 ClusterIP left in service CIDR 10.96.0.0/29" in str(err.value)


def test_batch_that_fits_only_because_an_update_frees_an_address_is_accepted() -> None:
    state = _small_cluster().step(Apply([_cip_service(f"s{i}") for i in range(6)]))
    freed = attrs.evolve(
        state.services[("default", "s0")],
        type=ServiceType.EXTERNAL_NAME,
        external_name="db.example.com",
        cluster_ips=(),
        ip_families=(),
        ip_family_policy=None,
    )
    after = state.step(Apply([freed, _cip_service("new")]))
    assert after.services[("default", "new")].cluster_ips
    assert after.services[("default", "s0")].cluster_ips == ()


def test_same_service_twice_in_a_batch_counts_once() -> None:
    state = _small_cluster().step(Apply([_cip_service(f"s{i}") for i in range(5)]))
    after = state.step(Apply([_cip_service("last"), _cip_service("last")]))
    assert len(after.services) == 6
