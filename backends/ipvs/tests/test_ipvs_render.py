"""The pure parts: virtual servers, marks, dummy addresses, the companion table's
text, the operations diff, and the interpreter over a hand-made read-back."""

from __future__ import annotations

import pytest
from ipvs_plans import NODE_IP, SETTINGS, plan
from svcnet_ipvs import interpret, ops, render
from svcnet_ipvs.render import CT_MASQ, CT_SVC, RealServer, VirtualServer
from svcnet_nftables.interpret import InterpretError
from svcnet_nftables.readback import ChainDump, RuleDump, TableDump

from svcnet.model import IPFamily, Protocol
from svcnet.plan import EndpointSet, Plan, ServiceRef
from svcnet.probe import Probe, SourceKind, Verdict


def test_one_virtual_server_per_port_and_endpoint_set() -> None:
    marks = render.Marks()
    servers = render.virtual_servers(plan(), marks)
    assert len(servers) == 2  # cluster and local sets of the one port
    by_dests = {len(vs.dests): vs for vs in servers.values()}
    assert by_dests[2].dests == (RealServer("10.244.1.10", 8080), RealServer("10.244.2.10", 8080))
    assert by_dests[1].dests == (RealServer("10.244.1.10", 8080),)
    for (fam, mark), vs in servers.items():
        assert fam is IPFamily.IPv4 and vs.fwmark == mark and ops.ours(mark)
        assert vs.timeout == 600 and vs.scheduler == "rr" and vs.protocol is Protocol.TCP
    # marks are stable across renders and freed with their port
    assert render.virtual_servers(plan(), marks).keys() == servers.keys()
    empty = Plan(SETTINGS)
    assert render.desired(empty, marks).servers == {}
    assert render.virtual_servers(plan(), marks).keys() == servers.keys()  # reused


def test_dummy_addresses_are_every_frontend_address() -> None:
    assert render.dummy_addresses(plan()) == {"10.96.0.10", "203.0.113.1", NODE_IP}


def test_companion_table_marks_every_frontend() -> None:
    marks = render.Marks()
    want = render.desired(plan(), marks)
    text = want.nft
    assert "add table ip svcnet-ipvs" in text and "delete table ip6 svcnet-ipvs" in text
    # nothing of the nftables backend's own table (whose skeleton is reused)
    assert all(" svcnet-ipvs" in line for line in text.splitlines())
    assert "eps-" not in text and "dnat" not in text
    cluster = marks.get(
        (ServiceRef("default", "web"), "http", IPFamily.IPv4, Protocol.TCP, EndpointSet.CLUSTER)
    )
    for key in ("10.96.0.10 . tcp . 80", f"{NODE_IP} . tcp . 30080", "203.0.113.1 . tcp . 80"):
        assert f"{key} : {cluster:#x}" in text
    assert f"ct mark set {CT_SVC | CT_MASQ:#x}" in text
    # the Local external route drops rather than falling back: rt_<pod>_<node>_<external>
    assert "rt_c_cm_cm" in text and "rt_c_lm_l" in text
    assert "203.0.113.1 . tcp . 80 . 198.51.100.0/24" in text


def test_no_virtual_server_for_a_port_without_endpoints() -> None:
    want = render.desired(plan(eps=()), render.Marks())
    assert want.servers == {}
    assert "goto do-reject" in want.nft


def _vs(mark: int, *dests: RealServer, timeout: int | None = None) -> VirtualServer:
    return VirtualServer(IPFamily.IPv4, mark, Protocol.TCP, timeout, tuple(dests))


A = RealServer("10.0.0.1", 80)
B = RealServer("10.0.0.2", 80)
M = render.MARK_MIN


def test_operations_add_edit_and_keep_leaving_real_servers_at_weight_0() -> None:
    key = (IPFamily.IPv4, M)
    assert [str(o) for o in ops.operations({}, {key: _vs(M, A)}, full=False)] == [
        f"add virtual server IPv4 fwmark {M:#x}",
        f"add real server 10.0.0.1 port 80 weight 1 of IPv4 fwmark {M:#x}",
    ]
    moved = ops.operations({key: _vs(M, A)}, {key: _vs(M, B, timeout=60)}, full=False)
    assert [(o.what, o.dest) for o in moved] == [
        ("edit", None),
        ("add", B),
        ("edit", RealServer("10.0.0.1", 80, 0)),
    ]
    assert [
        (o.what, o.dest) for o in ops.operations({key: _vs(M, A)}, {key: _vs(M, B)}, full=True)
    ] == [
        ("add", B),
        ("delete", A),
    ]
    # a weight-0 real server back in the set gets its weight back; one left out stays
    back = ops.operations(
        {key: _vs(M, RealServer("10.0.0.1", 80, 0))}, {key: _vs(M, A)}, full=False
    )
    assert [(o.what, o.dest) for o in back] == [("edit", A)]


def test_operations_touch_only_svcnet_marks() -> None:
    foreign = (IPFamily.IPv4, 7)
    gone = (IPFamily.IPv4, M + 1)
    out = ops.operations({foreign: _vs(7, A), gone: _vs(M + 1, A)}, {}, full=True)
    assert [(o.what, o.server.fwmark) for o in out] == [("delete", M + 1)]


# -- the interpreter -------------------------------------------------------------------
def _table(masq: bool) -> TableDump:
    meta_mark = {"meta": {"key": "mark"}}
    ct_mark = {"ct": {"key": "mark"}}
    pre = (
        RuleDump("pre", 1, ({"mangle": {"key": meta_mark, "value": M}},)),
        RuleDump(
            "pre", 2, ({"mangle": {"key": ct_mark, "value": CT_SVC | (CT_MASQ if masq else 0)}},)
        ),
    )
    post = (
        RuleDump(
            "post",
            3,
            (
                {"match": {"op": "==", "left": {"&": [ct_mark, CT_MASQ]}, "right": CT_MASQ}},
                {"masquerade": None},
            ),
        ),
    )
    chains = {
        "pre": ChainDump("pre", "nat", "prerouting", -100, "accept", pre),
        "out": ChainDump("out", "nat", "output", -100, "accept", pre),
        "post": ChainDump("post", "nat", "postrouting", 100, "accept", post),
    }
    return TableDump("ip", render.TABLE, chains, {})


def _observed(
    *dests: RealServer, masq: bool = False, local: bool = True, method: int = 0
) -> interpret.Observed:
    vs = _vs(M, *dests, timeout=300)
    return interpret.Observed(
        {"ip": _table(masq)},
        (interpret.ObservedServer(vs, tuple(method for _ in dests)),),
        frozenset({"10.96.0.10"}),
        frozenset({"10.96.0.10"} if local else ()),
    )


PROBE = Probe(SourceKind.POD, "10.244.3.3", "node-a", "10.96.0.10", 80)


def test_interpreter_forwards_to_the_live_real_servers() -> None:
    out = interpret.evaluate(_observed(A, B, RealServer("10.0.0.3", 80, 0), masq=True), PROBE)
    assert out.verdict is Verdict.FORWARD
    assert out.endpoints == {"10.0.0.1:80", "10.0.0.2:80"}
    assert [t.probability for t in out.targets] == [0.5, 0.5]  # the live set, equal shares
    assert all(t.masquerade for t in out.targets)
    assert out.affinity_timeout == 300


def test_interpreter_ipvs_sees_only_packets_for_the_node() -> None:
    assert interpret.evaluate(_observed(A, local=False), PROBE).verdict is Verdict.PASS
    node = Probe(SourceKind.NODE, NODE_IP, "node-a", "10.96.0.10", 80)
    assert interpret.evaluate(_observed(A, local=False), node).verdict is Verdict.FORWARD


def test_interpreter_rejects_without_a_live_real_server() -> None:
    out = interpret.evaluate(_observed(RealServer("10.0.0.1", 80, 0)), PROBE)
    assert out.verdict is Verdict.REJECT


def test_interpreter_refuses_what_it_does_not_know() -> None:
    with pytest.raises(InterpretError, match="forwarding 3"):
        interpret.evaluate(_observed(A, method=3), PROBE)


def test_interpreter_a_persistent_server_keeps_the_destination_port() -> None:
    # the kernel's persistence template for firewall-mark services keeps the packet's
    # port: real traffic in the VM was refused where the real server's port differed
    out = interpret.evaluate(_observed(RealServer("10.0.0.1", 8080)), PROBE)
    assert out.endpoints == {"10.0.0.1:80"}
