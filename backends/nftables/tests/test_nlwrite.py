"""svcnet_nftables.nlwrite: the full sync written as one netlink batch of our own.

Pure: its elements and shared chains are render's. Kernel: the tables it installs
read back (over netlink, handles aside) exactly as libnftables' install of
render's text; a batch the kernel refuses changes nothing."""

from __future__ import annotations

import re
from collections import Counter

import attrs
import pytest
from plans import NODE, SETTINGS, sample_plan
from svcnet_nftables import NftablesBackend, nlwrite, render
from svcnet_nftables.libnft import nla

from svcnet.errors import BackendError
from svcnet.kernel import nf_tables_generation
from svcnet.model import IPFamily, Protocol
from svcnet.plan import (
    Action,
    EndpointSet,
    Frontend,
    FrontendKind,
    Plan,
    PlanEndpoint,
    PortPlan,
    Route,
    ServicePlan,
    ServiceRef,
)

C = Route(Action.FORWARD, EndpointSet.CLUSTER, False)
CM = Route(Action.FORWARD, EndpointSet.CLUSTER, True)
LM = Route(Action.FORWARD, EndpointSet.LOCAL, True)


def plain(plan: Plan) -> Plan:
    """``plan`` without what nlwrite leaves to libnftables (affinity, source ranges)."""
    svcs = {}
    for ref, svc in plan.services.items():
        ports = tuple(
            attrs.evolve(p, source_ranges=()) for p in svc.ports if p.affinity_timeout is None
        )
        svcs[ref] = attrs.evolve(svc, ports=ports)
    return Plan(plan.settings, svcs)


def wide_plan() -> Plan:
    """IPv4 and IPv6, three protocols, node ports, local endpoints, reject and drop
    routes, a proxied service without endpoints, a port without frontends and an
    unproxied service."""
    v6 = PortPlan.build(
        "v6",
        IPFamily.IPv6,
        Protocol.SCTP,
        [Frontend(FrontendKind.CLUSTER_IP, "fd00:96::20", 9000)],
        [PlanEndpoint("fd00:244::5", 9001), PlanEndpoint("fd00:244::6", 9001)],
        [PlanEndpoint("fd00:244::5", 9001)],
        C,
        CM,
        LM,
        CM,
        LM,
        Route(Action.DROP),
    )
    udp = PortPlan.build(
        "u",
        IPFamily.IPv4,
        Protocol.UDP,
        [
            Frontend(FrontendKind.CLUSTER_IP, "10.96.0.20", 53),
            Frontend(FrontendKind.NODE_PORT, "192.168.56.11", 30053),
        ],
        [PlanEndpoint(f"10.244.1.{n}", 53) for n in range(10, 17)],
        [],
        C,
        CM,
        CM,
        Route(Action.REJECT),
        Route(Action.DROP),
        CM,
    )
    empty = PortPlan.build(
        "",
        IPFamily.IPv4,
        Protocol.TCP,
        [Frontend(FrontendKind.CLUSTER_IP, "10.96.0.21", 80)],
        [],
        [],
        C,
        C,
        C,
        C,
        C,
        C,
    )
    lost = PortPlan.build(  # endpoints but no frontend (lost to a conflict): no element
        "lost",
        IPFamily.IPv4,
        Protocol.TCP,
        [],
        [PlanEndpoint("10.244.1.30", 80)],
        [],
        C,
        C,
        C,
        C,
        C,
        C,
    )
    services = [
        ServicePlan(ServiceRef("ns", "wide"), ("10.96.0.20", "fd00:96::20"), (udp, v6, lost)),
        ServicePlan(ServiceRef("ns", "empty"), ("10.96.0.21",), (empty,)),
        ServicePlan(ServiceRef("ns", "foreign"), ("10.96.0.22",), (), proxied=False),
    ]
    return Plan(SETTINGS, {s.ref: s for s in services})


PLANS = {"sample": lambda: plain(sample_plan()), "wide": wide_plan}


# -- pure ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PLANS))
def test_elements_and_refs_are_renders(name: str) -> None:
    plan = PLANS[name]()
    got = nlwrite.encode(plan)
    assert got is not None
    assert got.refs == render.full_refs(plan)
    want: render.Elements = render._elements()
    for svc in plan.services.values():
        render.add_service(svc, want, Counter())
    sizes = {k: len(v) for k, v in want.items() if v}
    assert {k: len(v) for k, v in got.sets.items() if v} == sizes


def test_affinity_and_source_ranges_are_left_to_libnftables() -> None:
    plan = sample_plan()
    assert any(
        p.source_ranges or p.affinity_timeout for s in plan.services.values() for p in s.ports
    )
    assert nlwrite.encode(plan) is None


def test_large_sets_are_split_into_messages_under_64k() -> None:
    n = 3000
    port = PortPlan.build(
        "",
        IPFamily.IPv4,
        Protocol.TCP,
        [Frontend(FrontendKind.CLUSTER_IP, "10.96.1.1", 80)],
        [PlanEndpoint(f"10.244.{k // 250}.{k % 250 + 1}", 8080) for k in range(n)],
        [],
        C,
        C,
        C,
        C,
        C,
        C,
    )
    svc = ServicePlan(ServiceRef("ns", "big"), ("10.96.1.1",), (port,))
    elements = nlwrite.encode(Plan(SETTINGS, {svc.ref: svc}))
    assert elements is not None
    chunks = list(nlwrite._chunks(iter(elements.sets[("ip", "eps-cluster-tcp")].values())))
    assert len(chunks) > 1 and all(len(c) <= nlwrite.CHUNK for c in chunks)
    assert sum(len(c) for c in chunks) == sum(
        map(len, elements.sets[("ip", "eps-cluster-tcp")].values())
    )


# -- kernel ------------------------------------------------------------------------------
def _unhandled(backend: NftablesBackend) -> str:
    return re.sub(r"handle=\d+", "handle=_", repr(backend.observe()))


@pytest.mark.kernel
@pytest.mark.parametrize("name", sorted(PLANS))
def test_batch_reads_back_as_libnftables_install(netns: str, name: str) -> None:
    plan = PLANS[name]()
    be = NftablesBackend(NODE, netns=netns)
    try:
        before = nf_tables_generation(netns)
        be.sync(plan)  # the netlink batch
        assert nf_tables_generation(netns) == before + 1  # one transaction
        ours = _unhandled(be)
        assert "fe" in ours and "eps-cluster" in ours
        ours_plan = be.observed_plan()
        if name == "sample":  # (wide: a port without frontends leaves no trace to read)
            assert ours_plan == plan
        be._run(render.render_full(plan)[0])  # libnftables, the same plan
        assert _unhandled(be) == ours
        assert be.observed_plan() == ours_plan
    finally:
        be.cleanup()
        be.close()


@pytest.mark.kernel
def test_refused_batch_changes_nothing(netns: str) -> None:
    plan = PLANS["wide"]()
    be = NftablesBackend(NODE, netns=netns)
    try:
        be.sync(plan)
        installed = _unhandled(be)
        gen = nf_tables_generation(netns)
        elements = nlwrite.encode(PLANS["sample"]())
        assert elements is not None
        # a verdict to a chain that does not exist, after every other message
        elements.sets[("ip", render.FE_MAP)][b"x"] = nlwrite._elem(
            b"\x0a\x60\x00\x63" + nlwrite._PROTO_KEYS["tcp"] + nlwrite._PORTS[80],
            nlwrite._verdict("goto no-such-chain"),
        )
        text = nlwrite.Template.text(SETTINGS, list(elements.refs))
        batch = nlwrite.full_batch(elements, nlwrite.template(text, nlwrite.build_template))
        sock = be._nft.call(nlwrite.open_socket)
        try:
            with pytest.raises(BackendError, match="refused"):
                nlwrite.send(sock, batch)
        finally:
            sock.close()
        assert nf_tables_generation(netns) == gen
        assert _unhandled(be) == installed
    finally:
        be.cleanup()
        be.close()


@pytest.mark.parametrize("comment", ["a", "ab", "abc", "abcd", "default/svc-1 0", "x" * 128])
def test_comment_user_data_is_padded_like_nla(comment: str) -> None:
    text = comment.encode() + b"\0"
    assert nlwrite._udata(comment) == nla(6, bytes((0, len(text))) + text)
    assert nlwrite._udata("x" * (render.COMMENT_MAX + 1)) == b""


def _evolve_port(plan: Plan, ref: ServiceRef, index: int, **kw: object) -> Plan:
    svc = plan.services[ref]
    ports = list(svc.ports)
    ports[index] = attrs.evolve(ports[index], **kw)
    return Plan(plan.settings, plan.services.set(ref, attrs.evolve(svc, ports=tuple(ports))))


@pytest.mark.kernel
def test_element_changes_go_as_one_netlink_batch(netns: str) -> None:
    """An endpoint replaced (same count) and a service removed: element deletions and
    additions in one batch of ours; an endpoint count never seen before (a new shared
    chain): libnftables. Each step reads back as libnftables' full install of it."""
    a = PLANS["wide"]()
    wide = ServiceRef("ns", "wide")
    udp = a.services[wide].ports[0]
    eps = (*udp.cluster_endpoints[1:], PlanEndpoint("10.244.1.99", 53))
    b = _evolve_port(a, wide, 0, cluster_endpoints=tuple(sorted(eps)))
    c = Plan(b.settings, b.services.discard(ServiceRef("ns", "foreign")))
    d = _evolve_port(c, wide, 0, cluster_endpoints=eps[:3])
    be = NftablesBackend(NODE, netns=netns)
    used: list[str] = []
    run, send = be._run, be._send
    be._run = lambda text: (used.append("libnftables"), run(text))[1]  # type: ignore[method-assign]
    be._send = lambda batch: (used.append("netlink"), send(batch))[1]  # type: ignore[method-assign]
    try:
        be.sync(a)
        for before, after, path in ((a, b, "netlink"), (b, c, "netlink"), (c, d, "libnftables")):
            be.sync(before)
            used.clear()
            gen = nf_tables_generation(netns)
            be.apply(after.diff(before))
            assert used == [path]
            assert nf_tables_generation(netns) == gen + 1
            got, got_plan = _unhandled(be), be.observed_plan()
            be._run(render.render_full(after)[0])  # libnftables' install of the target
            assert _unhandled(be) == got
            assert be.observed_plan() == got_plan
    finally:
        be.cleanup()
        be.close()
