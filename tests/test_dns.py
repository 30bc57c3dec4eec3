"""svcnet.dns: the records of the Kubernetes DNS specification, from the state."""

from __future__ import annotations

import ipaddress
import random
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svcnet import dns, manifests
from svcnet.errors import SvcnetError
from svcnet.model import (
    SERVICE_PROXY_NAME_LABEL,
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
)
from svcnet.state import Apply, ClusterState, Delete, Event

SHARED_EXAMPLES = str(
    __import__("pathlib").Path(__file__).resolve().parents[1] / "svcnet" / "scenarios" / "examples"
)

D = "cluster.local"


def state_of(*docs: dict[str, Any], config: ClusterConfig | None = None) -> ClusterState:
    st0 = ClusterState.empty(config or ClusterConfig())
    return st0.step(Apply(manifests.load(list(docs))))


NODE = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {"name": "node-a"},
    "spec": {"podCIDR": "10.244.1.0/24"},
    "status": {"addresses": [{"type": "InternalIP", "address": "192.168.56.11"}]},
}


def pod(name: str, ip: str, ns: str = "data", ready: bool = True, **spec: Any) -> dict[str, Any]:
    labels = spec.pop("labels", {"app": "db"})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "nodeName": "node-a",
            "containers": [{"name": "c", "ports": [{"name": "pg", "containerPort": 15432}]}],
            **spec,
        },
        "status": {
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def service(
    name: str, ns: str = "data", labels: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": spec,
    }


@pytest.fixture(scope="module")
def basic() -> ClusterState:
    return state_of(
        NODE,
        pod("db-0", "10.244.1.60", hostname="db-0", subdomain="db"),
        pod("db-1", "10.244.1.61"),
        pod("db-2", "10.244.1.62", ready=False),
        pod("app", "10.244.1.70", labels={}),
        service(
            "db",
            clusterIP="None",
            selector={"app": "db"},
            ports=[{"name": "pg", "port": 5432, "targetPort": "pg"}],
        ),
        service(
            "cache",
            clusterIP="10.96.3.3",
            selector={"app": "cache"},
            ports=[
                {"name": "redis", "port": 6379},
                {"name": "other", "port": 7000, "protocol": "UDP"},
            ],
        ),
        service(
            "np",
            type="NodePort",
            clusterIP="10.96.3.4",
            ports=[{"name": "http", "port": 80, "protocol": "UDP"}],
        ),
        service("billing", type="ExternalName", externalName="billing.example.com."),
        service("ipname", type="ExternalName", externalName="192.0.2.1"),
        service(
            "other",
            labels={SERVICE_PROXY_NAME_LABEL: "someone-else"},
            clusterIP="10.96.3.5",
            ports=[{"port": 1}],
        ),
        service("bare", clusterIP="None", selector={"app": "db"}),
    )


def q(s: ClusterState, name: str, qtype: str = "A") -> tuple[str, tuple[str, ...]]:
    a = dns.lookup(s, name, qtype)
    return a.rcode, a.records


# -- records ------------------------------------------------------------------------


def test_clusterip_records(basic: ClusterState) -> None:
    assert q(basic, "cache.data.svc.cluster.local") == ("NOERROR", ("10.96.3.3",))
    assert q(basic, "cache.data.svc.cluster.local.", "AAAA") == ("NOERROR", ())
    assert q(basic, "_redis._tcp.cache.data.svc.cluster.local", "SRV") == (
        "NOERROR",
        ("0 100 6379 cache.data.svc.cluster.local.",),
    )
    assert q(basic, "3.3.96.10.in-addr.arpa", "PTR") == (
        "NOERROR",
        ("cache.data.svc.cluster.local.",),
    )
    # the NodePort service has its ClusterIP name and a UDP SRV record
    assert q(basic, "np.data.svc.cluster.local") == ("NOERROR", ("10.96.3.4",))
    assert q(basic, "_http._udp.np.data.svc.cluster.local", "SRV")[1] == (
        "0 100 80 np.data.svc.cluster.local.",
    )
    assert q(basic, "_http._tcp.np.data.svc.cluster.local", "SRV")[0] == "NXDOMAIN"


def test_service_proxy_name_label_still_gets_dns(basic: ClusterState) -> None:
    assert q(basic, "other.data.svc.cluster.local") == ("NOERROR", ("10.96.3.5",))


def test_headless_records(basic: ClusterState) -> None:
    assert q(basic, "db.data.svc.cluster.local") == ("NOERROR", ("10.244.1.60", "10.244.1.61"))
    assert q(basic, "db-0.db.data.svc.cluster.local") == ("NOERROR", ("10.244.1.60",))
    assert q(basic, "10-244-1-61.db.data.svc.cluster.local") == ("NOERROR", ("10.244.1.61",))
    assert q(basic, "10-244-1-62.db.data.svc.cluster.local")[0] == "NXDOMAIN"  # not ready
    assert q(basic, "_pg._tcp.db.data.svc.cluster.local", "SRV") == (
        "NOERROR",
        (
            "0 50 15432 10-244-1-61.db.data.svc.cluster.local.",
            "0 50 15432 db-0.db.data.svc.cluster.local.",
        ),
    )
    assert q(basic, "60.1.244.10.in-addr.arpa", "PTR")[1] == (
        "10-244-1-60.bare.data.svc.cluster.local.",  # a second headless service selects it
        "db-0.db.data.svc.cluster.local.",
    )
    assert (
        q(basic, "70.1.244.10.in-addr.arpa", "PTR")[0] == "NXDOMAIN"
    )  # not behind a headless service


def test_headless_without_ports_takes_pods_directly(basic: ClusterState) -> None:
    assert q(basic, "bare.data.svc.cluster.local") == ("NOERROR", ("10.244.1.60", "10.244.1.61"))
    assert q(basic, "db-0.bare.data.svc.cluster.local")[0] == "NXDOMAIN"  # subdomain is db


def test_headless_without_ready_endpoints_is_nxdomain() -> None:
    s = state_of(
        NODE,
        service("hl", clusterIP="None", selector={"app": "none"}, ports=[{"name": "x", "port": 1}]),
    )
    assert q(s, "hl.data.svc.cluster.local") == ("NXDOMAIN", ())  # as CoreDNS
    assert q(s, "_x._tcp.hl.data.svc.cluster.local", "SRV") == ("NXDOMAIN", ())


def test_externalname(basic: ClusterState) -> None:
    assert q(basic, "billing.data.svc.cluster.local", "CNAME") == (
        "NOERROR",
        ("billing.example.com.",),
    )
    a = dns.lookup(basic, "billing.data.svc.cluster.local", "A")
    assert (a.rcode, a.records, a.cname) == ("NOERROR", (), "billing.example.com.")
    assert q(basic, "ipname.data.svc.cluster.local", "CNAME") == ("NOERROR", ())


def test_nxdomain_nodata_and_refused(basic: ClusterState) -> None:
    for name in (
        "nothing.data.svc.cluster.local",
        "cache.nowhere.svc.cluster.local",
        "_tcp.cache.data.svc.cluster.local",  # empty non-terminal: NXDOMAIN, as CoreDNS
        "x.y.z.cache.data.svc.cluster.local",
        "foo.cluster.local",
        "1-2-3-4.data.pod.cluster.local",
        "9.9.96.10.in-addr.arpa",
        "5.5.244.10.in-addr.arpa",
    ):
        assert q(basic, name, "PTR" if "arpa" in name else "A")[0] == "NXDOMAIN", name
    for name in (
        "cluster.local",
        "svc.cluster.local",
        "pod.cluster.local",
        "data.svc.cluster.local",
        "96.10.in-addr.arpa",
    ):
        assert q(basic, name) == ("NOERROR", ()), name
    assert q(basic, "example.com")[0] == "REFUSED"
    assert q(basic, "1.1.168.192.in-addr.arpa", "PTR")[0] == "REFUSED"
    assert q(basic, "dns-version.cluster.local", "TXT") == ("NOERROR", ('"1.1.0"',))


def test_case_insensitive(basic: ClusterState) -> None:
    assert q(basic, "CACHE.Data.SVC.cluster.LOCAL") == ("NOERROR", ("10.96.3.3",))
    assert q(basic, "_REDIS._Tcp.cache.data.svc.cluster.local", "srv")[1] == (
        "0 100 6379 cache.data.svc.cluster.local.",
    )


def test_dual_stack_and_ipv6_reverse() -> None:
    cfg = ClusterConfig(
        service_cidrs=("10.96.0.0/16", "fd00:96::/112"),
        cluster_cidrs=("10.244.0.0/16", "fd00:244::/56"),
    )
    s = state_of(
        service(
            "web",
            ns="default",
            ipFamilyPolicy="RequireDualStack",
            ipFamilies=["IPv4", "IPv6"],
            clusterIP="10.96.0.10",
            clusterIPs=["10.96.0.10", "fd00:96::10"],
            ports=[{"port": 80}],
        ),
        config=cfg,
    )
    assert q(s, "web.default.svc.cluster.local", "AAAA") == ("NOERROR", ("fd00:96::10",))
    ptr = ipaddress.ip_address("fd00:96::10").reverse_pointer
    assert q(s, ptr, "PTR") == ("NOERROR", ("web.default.svc.cluster.local.",))
    assert q(s, ipaddress.ip_address("fd00:96::11").reverse_pointer, "PTR")[0] == "NXDOMAIN"
    assert q(s, ipaddress.ip_address("fd00:97::11").reverse_pointer, "PTR")[0] == "REFUSED"


def test_helpers() -> None:
    assert dns.dashed("fd00:244::10") == "fd00-244--10"
    assert dns.reverse_zones("10.96.0.0/16") == ("96.10.in-addr.arpa",)
    assert len(dns.reverse_zones("10.96.0.0/12")) == 16
    assert dns.reverse_zones("10.244.1.0/25") == ("1.244.10.in-addr.arpa",)
    assert dns.search_path("Shop", "cluster.local.") == (
        "shop.svc.cluster.local",
        "svc.cluster.local",
        "cluster.local",
    )
    assert dns.search_names("a.b", ["x", "y"]) == ("a.b.x", "a.b.y", "a.b")
    assert dns.search_names("a.b.c.d.e.f", ["x"]) == ("a.b.c.d.e.f", "a.b.c.d.e.f.x")
    assert dns.search_names("a.", ["x"]) == ("a.",)


# -- resolution from a pod ------------------------------------------------------------


def test_search_path(basic: ClusterState) -> None:
    s = basic.step(
        Apply(
            manifests.load(
                [service("cache", ns="default", clusterIP="10.96.9.9", ports=[{"port": 1}])]
            )
        )
    )
    app = s.pods[("data", "app")]
    assert dns.resolve(s, "cache", "A", from_pod=app).records == ("10.96.3.3",)
    assert dns.resolve(s, "cache.default", "A", from_pod=app).records == ("10.96.9.9",)
    assert dns.resolve(s, "cache.default.svc", "A", from_pod=app).records == ("10.96.9.9",)
    a = dns.resolve(s, "cache.default.svc.cluster.local", "A", from_pod=app)
    assert (a.records, a.name) == (("10.96.9.9",), "cache.default.svc.cluster.local")
    assert dns.resolve(s, "billing", "A", from_pod=app).cname == "billing.example.com."
    assert dns.resolve(s, "3.3.96.10.in-addr.arpa", "PTR", from_pod=app).records == (
        "cache.data.svc.cluster.local.",
    )
    # nothing anywhere: the last name's answer; an existing name without the type: NODATA
    assert dns.resolve(s, "nothing", "A", from_pod=app).rcode == "REFUSED"
    assert dns.resolve(s, "nothing.svc.cluster.local.", "A", from_pod=app).rcode == "NXDOMAIN"
    nodata = dns.resolve(s, "cache", "AAAA", from_pod=app)
    assert (nodata.rcode, nodata.records, nodata.name) == (
        "NOERROR",
        (),
        "cache.data.svc.cluster.local",
    )
    # the Answer shape svcnet.scenario reads
    assert nodata.answer == nodata.records


def test_zone_cached_per_state(basic: ClusterState) -> None:
    assert dns.zone_for(basic) is dns.zone_for(basic)
    assert dns.zone_for(basic) == dns.records(basic)


def test_dns_basics_example_scenario() -> None:
    from svcnet.cli.main import cli

    res = CliRunner().invoke(
        cli,
        [
            "scenario",
            "run",
            SHARED_EXAMPLES + "/dns-basics.yaml",
            "--backend",
            "memory",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "8 passed, 0 failed" in res.output
    assert "skipped" not in res.output


def test_cli_dns_command(tmp_path: Any) -> None:
    import yaml

    from svcnet.cli.main import cli

    path = tmp_path / "m.yaml"
    path.write_text(
        yaml.safe_dump_all(
            [
                NODE,
                pod("app", "10.244.1.70", labels={}),
                service("cache", clusterIP="10.96.3.3", ports=[{"name": "r", "port": 1}]),
            ]
        )
    )
    run = CliRunner().invoke
    res = run(cli, ["dns", "cache", "--from", "data/app", "-f", str(path)])
    assert (res.exit_code, res.output) == (0, "10.96.3.3\n")
    res = run(cli, ["dns", "_r._tcp.cache.data.svc.cluster.local", "SRV", "-f", str(path)])
    assert res.output == "0 100 1 cache.data.svc.cluster.local.\n"
    res = run(cli, ["dns", "nope.data.svc.cluster.local", "-f", str(path)])
    assert res.exit_code == 1
    res = run(cli, ["dns", "x", "--from", "data/ghost", "-f", str(path)])
    assert res.exit_code == 1 and "Pod data/ghost" in res.output


# -- properties on random clusters ------------------------------------------------------

CONFIG = ClusterConfig(
    service_cidrs=("10.96.0.0/27",),
    cluster_cidrs=("10.244.0.0/16",),
    node_port_range=(30000, 30007),
    load_balancer_pool=("203.0.113.0/30",),
)
NAMES = ["a", "b", "c", "d"]
NSS = ["default", "other"]

pods_st = st.builds(
    Pod,
    namespace=st.sampled_from(NSS),
    name=st.sampled_from(["p1", "p2", "p3", "p4", "p5"]),
    labels=st.sampled_from([{"app": "x"}, {"app": "y"}, {}]),
    node_name=st.just("n1"),
    hostname=st.sampled_from(["", "h1", "h2"]),
    subdomain=st.sampled_from(["", *NAMES]),
    ports=st.sampled_from([(), (ContainerPort(8080, "http"),)]),
    pod_ips=st.sampled_from([(), (), ("10.244.9.9",), ("10.244.9.10",)]),
    ready=st.booleans(),
    terminating=st.booleans(),
)


@st.composite
def services_st(draw: st.DrawFn) -> Service:
    typ = draw(
        st.sampled_from(
            [
                ServiceType.CLUSTER_IP,
                ServiceType.CLUSTER_IP,
                ServiceType.NODE_PORT,
                ServiceType.EXTERNAL_NAME,
            ]
        )
    )
    headless = typ is ServiceType.CLUSTER_IP and draw(st.booleans())
    ports = draw(
        st.lists(
            st.builds(
                ServicePort,
                port=st.sampled_from([80, 81]),
                name=st.sampled_from(["", "http", "dns"]),
                protocol=st.sampled_from([Protocol.TCP, Protocol.UDP]),
                target_port=st.sampled_from([None, 8080, "http"]),
            ),
            max_size=2,
            unique_by=lambda p: p.name or str(p.port),
        ).map(tuple)
    )
    if len({p.name for p in ports}) < len(ports) or (
        len(ports) > 1 and any(not p.name for p in ports)
    ):
        ports = ports[:1]
    return Service(
        namespace=draw(st.sampled_from(NSS)),
        name=draw(st.sampled_from(NAMES)),
        type=typ,
        selector=draw(st.sampled_from([Labels.of({"app": "x"}), Labels.of({"app": "y"}), None])),
        ports=() if typ is ServiceType.EXTERNAL_NAME else ports,
        headless=headless,
        external_name="Ext.Example" if typ is ServiceType.EXTERNAL_NAME else "",
        publish_not_ready_addresses=draw(st.booleans()),
    )


slices_st = st.builds(
    EndpointSlice,
    namespace=st.sampled_from(NSS),
    name=st.sampled_from(["s1", "s2"]),
    service_name=st.sampled_from(NAMES),
    address_type=st.just(IPFamily.IPv4),
    endpoints=st.lists(
        st.builds(
            SliceEndpoint,
            addresses=st.sampled_from([("192.0.2.1",), ("192.0.2.2",), ("10.244.7.7",)]),
            ready=st.booleans(),
            hostname=st.sampled_from(["", "e1"]),
        ),
        max_size=3,
    ).map(tuple),
    ports=st.sampled_from([(), (SlicePort(80, "http"),), (SlicePort(53, "dns", Protocol.UDP),)]),
)

objects_st = st.one_of(pods_st, services_st(), slices_st)
events_st = st.one_of(
    st.lists(objects_st, min_size=1, max_size=3).map(lambda objs: Apply(tuple(objs))),
    st.builds(
        lambda k, ns, n: Delete((ObjectKey(k, ns, n),)),
        st.sampled_from([Kind.POD, Kind.SERVICE, Kind.ENDPOINT_SLICE]),
        st.sampled_from(NSS),
        st.sampled_from(["a", "b", "p1", "p2", "s1"]),
    ),
)


def run_events(events: list[Event]) -> list[ClusterState]:
    s = ClusterState.empty(CONFIG).step(
        Apply((Node("n1", pod_cidrs=("10.244.1.0/24",), addresses=("192.168.0.1",)),))
    )
    out = [s]
    for ev in events:
        try:
            s = s.step(ev)
        except SvcnetError:
            continue
        out.append(s)
    return out


PROPS = settings(
    max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


def check_spec(s: ClusterState) -> None:
    zone = dns.records(s)
    for (ns, name), svc in s.services.items():
        base = f"{name}.{ns}.svc.{D}"
        if svc.type is ServiceType.EXTERNAL_NAME:
            assert zone.lookup(base, "CNAME").records == ("ext.example.",)
            continue
        if svc.cluster_ips:
            want = {ip for ip in svc.cluster_ips if ":" not in ip}
            assert set(zone.lookup(base, "A").records) == want
            for ip in svc.cluster_ips:
                assert base + "." in zone.lookup(dns.reverse_name(ip), "PTR").records
            for sp in svc.ports:
                if sp.name:
                    srv = zone.lookup(
                        f"_{sp.name}._{sp.protocol.value.lower()}.{base}", "SRV"
                    ).records
                    assert srv == (f"0 100 {sp.port} {base}.",)
            continue
        assert svc.headless
        eps = s.service_endpoints(ns, name)
        if svc.ports:
            ready = {e.ip for lst in eps.values() for e in lst if e.ready}
            assert set(zone.lookup(base, "A").records) == ready
        else:  # the name exists only with a published address
            a = zone.lookup(base, "A")
            assert (a.rcode == "NOERROR") == bool(a.records or zone.lookup(base, "AAAA").records)
        for sp in svc.ports:
            if not sp.name:
                continue
            srv = zone.lookup(f"_{sp.name}._{sp.protocol.value.lower()}.{base}", "SRV").records
            targets = {
                (e.hostname or dns.dashed(e.ip), e.port) for e in eps.get(sp.name, ()) if e.ready
            }
            assert len(srv) == len(targets)
            for rec in srv:
                prio, weight, port, target = rec.split()
                assert (prio, int(weight)) == ("0", 100 // len(targets))
                host = target[: -len(base) - 2]
                assert (host, int(port)) in targets
                assert zone.lookup(target, "A").records  # the target resolves
    # every PTR record round-trips, every name's A records point back
    for name in list(zone.names()):
        for target in zone.rrsets(name).get("PTR", ()):
            ip = str(ipaddress.ip_address(".".join(reversed(name.split(".")[:4]))))
            assert ip in zone.lookup(target, "A").records


@PROPS
@given(st.lists(events_st, max_size=12))
def test_records_follow_the_spec(events: list[Event]) -> None:
    for s in run_events(events)[-3:]:
        check_spec(s)


@PROPS
@given(st.lists(events_st, max_size=15), st.data())
def test_incremental_zone_equals_full(events: list[Event], data: st.DataObject) -> None:
    states = run_events(events)
    zone = dns.records(states[0])
    prev = states[0]
    for s in states[1:]:
        if data.draw(st.booleans(), label="skip"):
            continue  # update across several revisions at once
        zone = zone.update(prev, s)
        prev = s
        assert zone == dns.records(s)
        assert zone.revision == s.revision
    zone = zone.update(prev, states[-1])
    assert zone == dns.records(states[-1])


@PROPS
@given(
    st.lists(events_st, max_size=10),
    st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12),
    st.sampled_from(NSS),
    st.integers(0, 2**32),
)
def test_unknown_names_and_case(events: list[Event], label: str, ns: str, seed: int) -> None:
    rnd = random.Random(seed)
    s = run_events(events)[-1]
    zone = dns.records(s)
    if (ns, label) not in s.services:
        assert zone.lookup(f"{label}.{ns}.svc.{D}", "A").rcode == "NXDOMAIN"
        assert zone.lookup(f"{label}.zz-{ns}.svc.{D}", "SRV").rcode == "NXDOMAIN"
    for name in list(zone.names())[:30]:
        flipped = "".join(c.upper() if rnd.random() < 0.5 else c for c in name)
        for qt in ("A", "SRV", "PTR", "CNAME"):
            assert zone.lookup(flipped, qt) == zone.lookup(name, qt)


@PROPS
@given(
    st.lists(st.tuples(st.booleans(), st.sampled_from(["", "x", "y"])), max_size=150),
    st.sampled_from([80, 8080]),
)
def test_headless_srv_weights(readiness: list[tuple[bool, str]], port: int) -> None:
    svc = Service(namespace="ns", name="hl", headless=True, ports=(ServicePort(port, "p"),))
    eps = tuple(
        SliceEndpoint((f"10.244.{i // 200}.{i % 200 + 1}",), ready=r, hostname=h and f"{h}{i}")
        for i, (r, h) in enumerate(readiness)
    )
    sl = EndpointSlice("ns", "hl-1", "hl", IPFamily.IPv4, eps, (SlicePort(port, "p"),))
    s = ClusterState.empty().step(Apply((svc, sl)))
    zone = dns.records(s)
    ready = [(e.addresses[0], e.hostname) for e in eps if e.ready]
    base = "hl.ns.svc.cluster.local"
    srv = zone.lookup(f"_p._tcp.{base}", "SRV")
    assert srv.rcode == ("NOERROR" if ready else "NXDOMAIN")  # no published endpoint
    assert len(srv.records) == len(ready)
    want = {f"0 {100 // len(ready)} {port} {h or dns.dashed(ip)}.{base}." for ip, h in ready}
    assert set(srv.records) == want
    assert set(zone.lookup(base, "A").records) == {ip for ip, _ in ready}
    for ip, h in ready:
        assert zone.lookup(dns.reverse_name(ip), "PTR").records == (
            f"{h or dns.dashed(ip)}.{base}.",
        )


# -- names off the wire: labels ------------------------------------------------------


def test_wire_labels_checks_rfc1035_limits() -> None:
    assert dns.wire_labels([b"Cache", b"DATA", b"svc"]) == ("cache", "data", "svc")
    assert dns.wire_labels([]) == ()
    assert dns.wire_labels([b"a" * 63]) == ("a" * 63,)
    assert dns.wire_labels([b"a" * 64]) is None
    assert dns.wire_labels([b""]) is None
    # 255 octets on the wire: 4 labels of 62 (63 octets each) + 1 of 1 (2) + root (1)
    assert dns.wire_labels([b"a" * 62] * 4 + [b"b"]) is not None
    assert dns.wire_labels([b"a" * 62] * 4 + [b"bb"]) is None
    # only ASCII letters are folded; other octets are kept as they are
    assert dns.wire_labels([b"\xc0A"]) == ("\xc0a",)


def test_lookup_labels_compares_label_by_label(basic: ClusterState) -> None:
    zone = dns.zone_for(basic)
    name = "cache.data.svc.cluster.local"
    assert zone.lookup_labels(name.split("."), "A") == zone.lookup(name, "A")
    assert zone.lookup_labels(name.upper().split("."), "A").records == ("10.96.3.3",)
    # the whole name as one label: outside every zone
    one = zone.lookup_labels([name], "A")
    assert (one.rcode, one.records, one.zone) == ("REFUSED", (), "")
    # a dotted label inside the cluster domain: a name that does not exist
    inner = zone.lookup_labels(["cache.data", "svc", "cluster", "local"], "A")
    assert (inner.rcode, inner.records, inner.zone) == ("NXDOMAIN", (), "cluster.local")
    assert inner.name == "cache\\.data.svc.cluster.local"
    # a dotted label that ends like the domain is not in it
    assert zone.lookup_labels(["a.cluster", "local"], "A").rcode == "REFUSED"
    assert zone.lookup_labels([], "A").rcode == "REFUSED"


@pytest.mark.parametrize("qtype", ["0", "1234", "65280", "65535", "ANY", "", "OPT"])
def test_types_without_records_get_an_empty_answer(basic: ClusterState, qtype: str) -> None:
    zone = dns.zone_for(basic)
    a = zone.lookup("cache.data.svc.cluster.local", qtype)
    assert (a.rcode, a.records) == ("NOERROR", ())
    assert zone.lookup("nothing.data.svc.cluster.local", qtype).rcode == "NXDOMAIN"
