"""Pure tests: rendering, text conversion, read-back parsing, interpretation errors."""

from __future__ import annotations

import ipaddress
from fractions import Fraction

import attrs
import pytest
from plans import NODE, sample_plan
from svcnet_nftables import interpret, readback, render

from svcnet.model import Protocol
from svcnet.plan import Plan, PlanEndpoint, ServiceRef
from svcnet.probe import Probe, SourceKind, Verdict


def test_full_render_has_the_fixed_layout() -> None:
    text, refs = render.render_full(sample_plan())
    assert "add rule ip svcnet services ip daddr . meta l4proto . th dport vmap @fe" in text
    # one endpoint map and one fwd rule per protocol: the map's "<proto> dport" data
    # makes nft add "meta l4proto <proto>" to the rule using it
    for proto in ("tcp", "udp", "sctp"):
        assert (
            f"add rule ip svcnet fwd-cluster-3-masq meta l4proto {proto} "
            "meta mark set meta mark | 16384 dnat ip to ip daddr . meta l4proto . th dport"
            f" . numgen random mod 3 map @eps-cluster-{proto}"
        ) in text
        assert (
            f"add map ip6 svcnet eps-local-{proto} {{ typeof ip6 daddr . meta l4proto . th dport"
            f" . numgen random mod 1 : ip6 daddr . {proto} dport; }}"
        ) in text
    assert "eps-cluster " not in text and "@eps-cluster\n" not in text
    assert "add element ip svcnet eps-cluster-udp { 10.96.0.10 . udp . 53 . 0 :" in text
    # one route chain per combination of routes, shared: the source is classified there
    assert "add rule ip svcnet rt_c3_l1m_l1 ip saddr @cluster-cidrs goto fwd-cluster-3" in text
    assert "add rule ip svcnet rt_c3_l1m_l1 fib saddr type local goto fwd-local-1-masq" in text
    # each fe element's comment: service, port index and name, kind, routes, affinity
    assert (
        '203.0.113.1 . tcp . 80 comment "default/web 0 http L ccmcmclml -" : goto rt_c3_l1m_l1'
        in (text)
    )
    assert '10.96.0.30 . tcp . 80 comment "default/empty 0 - C rrrrrr -" : goto do-reject' in text
    assert (
        "add element ip svcnet fw-allow"
        ' { 203.0.113.1 . tcp . 80 . 198.51.100.0/24 comment "198.51.100.0/24" }'
    ) in text
    assert "reject with icmpv6 port-unreachable" in text
    # hairpin: an equality test through a self-filled dynamic set, no element per endpoint
    assert (
        "add rule ip svcnet nat-postrouting ct status dnat update @hairpin { ip saddr . ip saddr }"
        in text
    )
    assert "element ip svcnet hairpin" not in text
    assert "flush ruleset" not in text
    assert refs[("ip", "chain", "fwd-cluster-3-masq")] > 0
    assert refs[("ip", "chain", "rt_c3_l1m_l1")] == 1
    # rule count does not depend on the number of services
    rules = [line for line in text.splitlines() if line.startswith("add rule")]
    assert len(rules) < 80


def test_one_endpoint_change_is_a_few_element_updates() -> None:
    plan = sample_plan()
    _, refs = render.render_full(plan)
    web = plan.services[ServiceRef("default", "web")]
    port = web.ports[0]
    eps = list(port.cluster_endpoints)
    eps[2] = PlanEndpoint("10.244.2.12", 8080)
    port = attrs.evolve(port, cluster_endpoints=tuple(sorted(eps)))
    new = attrs.evolve(web, ports=(port, *web.ports[1:]))
    plan2 = Plan(plan.settings, plan.services.set(web.ref, new))
    text, delta = render.render_changes(plan, plan2.diff(plan), refs)
    lines = text.splitlines()
    assert all(" element " in line for line in lines), text
    assert len(lines) == 2  # delete + add in eps-cluster-tcp; hairpin needs no element
    assert all("eps-cluster-tcp" in line for line in lines)
    assert "10.244.2.12 . 8080" in lines[1]
    assert not +delta  # no shared chain born or dead


def test_no_change_renders_nothing() -> None:
    plan = sample_plan()
    _, refs = render.render_full(plan)
    text, delta = render.render_changes(plan, plan.diff(plan), refs)
    assert text == ""
    assert not +delta


def _ruleset(exprs: list[object], *more: list[object]) -> readback.Ruleset:
    rules = [
        {
            "rule": {
                "family": "ip",
                "table": "svcnet",
                "chain": "pre",
                "handle": 2 + i,
                "expr": rule,
            }
        }
        for i, rule in enumerate((exprs, *more))
    ]
    return readback.parse(
        {
            "nftables": [
                {"table": {"family": "ip", "name": "svcnet", "handle": 1}},
                {
                    "chain": {
                        "family": "ip",
                        "table": "svcnet",
                        "name": "pre",
                        "handle": 1,
                        "type": "nat",
                        "hook": "prerouting",
                        "prio": -100,
                        "policy": "accept",
                    }
                },
                *rules,
            ]
        }
    )


def test_interpreter_numgen_probabilities() -> None:
    rs = _ruleset(
        [
            {
                "dnat": {
                    "family": "ip",
                    "addr": {
                        "map": {
                            "key": {"numgen": {"mode": "random", "mod": 3, "offset": 0}},
                            "data": {
                                "set": [
                                    [0, {"concat": ["10.0.0.1", 80]}],
                                    [1, {"concat": ["10.0.0.1", 80]}],
                                    [2, {"concat": ["10.0.0.2", 80]}],
                                ]
                            },
                        }
                    },
                }
            }
        ]
    )
    out = interpret.evaluate(rs, Probe(SourceKind.POD, "10.244.0.1", NODE, "10.96.0.1", 80))
    assert out.verdict is Verdict.FORWARD
    assert {t.address: t.probability for t in out.targets} == {
        "10.0.0.1:80": Fraction(2, 3),
        "10.0.0.2:80": Fraction(1, 3),
    }


def _eps_dnat(proto: str, elements: list[object]) -> dict[str, object]:
    """dnat to daddr . l4proto . <proto> dport . numgen map (as listed)."""
    key = [
        {"payload": {"protocol": "ip", "field": "daddr"}},
        {"meta": {"key": "l4proto"}},
        {"payload": {"protocol": proto, "field": "dport"}},
        {"numgen": {"mode": "random", "mod": 1, "offset": 0}},
    ]
    return {
        "dnat": {
            "family": "ip",
            "addr": {"map": {"key": {"concat": key}, "data": {"set": elements}}},
        }
    }


def test_tcp_payload_implies_l4proto_tcp() -> None:
    """The old layout (one map, data "tcp dport", no protocol match) is caught: nft puts
    "meta l4proto tcp" in front of the rule, so a UDP probe is not DNATed by it."""
    both = [
        [{"concat": ["10.96.0.1", "tcp", 53, 0]}, {"concat": ["10.0.0.1", 5353]}],
        [{"concat": ["10.96.0.1", "udp", 53, 0]}, {"concat": ["10.0.0.1", 5353]}],
    ]
    udp_only = [[{"concat": ["10.96.0.1", "udp", 53, 0]}, {"concat": ["10.0.0.2", 53]}]]
    rs = _ruleset([_eps_dnat("tcp", both)], [_eps_dnat("udp", udp_only)])
    tcp = Probe(SourceKind.POD, "10.244.0.1", NODE, "10.96.0.1", 53, Protocol.TCP)
    udp = Probe(SourceKind.POD, "10.244.0.1", NODE, "10.96.0.1", 53, Protocol.UDP)
    sctp = Probe(SourceKind.POD, "10.244.0.1", NODE, "10.96.0.1", 53, Protocol.SCTP)
    assert {t.address for t in interpret.evaluate(rs, tcp).targets} == {"10.0.0.1:5353"}
    # the UDP probe passes the tcp rule and is DNATed by the next one
    assert {t.address for t in interpret.evaluate(rs, udp).targets} == {"10.0.0.2:53"}
    assert interpret.evaluate(rs, sctp).verdict is Verdict.PASS
    # only the old rule: the UDP probe is not DNATed at all
    old = _ruleset([_eps_dnat("tcp", both)])
    assert interpret.evaluate(old, udp).verdict is Verdict.PASS
    # same for a match: "tcp dport 53 drop" does not drop UDP; "th dport 53 drop" does
    match = {"op": "==", "right": 53}
    tcp_match = {**match, "left": {"payload": {"protocol": "tcp", "field": "dport"}}}
    th_match = {**match, "left": {"payload": {"protocol": "th", "field": "dport"}}}
    assert interpret.evaluate(_ruleset([{"match": tcp_match}, {"drop": None}]), tcp).verdict is (
        Verdict.DROP
    )
    assert interpret.evaluate(_ruleset([{"match": tcp_match}, {"drop": None}]), udp).verdict is (
        Verdict.PASS
    )
    assert interpret.evaluate(_ruleset([{"match": th_match}, {"drop": None}]), udp).verdict is (
        Verdict.DROP
    )


def test_unknown_expression_is_an_error_not_a_guess() -> None:
    rs = _ruleset(
        [
            {"match": {"op": "==", "left": {"osf": {"key": "name"}}, "right": "Linux"}},
            {"drop": None},
        ]
    )
    with pytest.raises(interpret.InterpretError, match="osf"):
        interpret.evaluate(rs, Probe(SourceKind.POD, "10.244.0.1", NODE, "10.96.0.1", 80))


def test_no_table_means_pass() -> None:
    out = interpret.evaluate(
        readback.Ruleset({}), Probe(SourceKind.POD, "10.244.0.1", NODE, "10.96.0.1", 80)
    )
    assert out.verdict is Verdict.PASS


def test_set_lookup_indexes_raw_elements() -> None:
    fe = readback.SetDump(
        "fe",
        True,
        ("ipv6_addr", "inet_proto", "inet_service"),
        "verdict",
        frozenset(),
        None,
        raw=(
            [{"concat": ["fd00:96:0:0::10", "tcp", 80]}, {"goto": {"target": "rt_c2_c2m_c2m"}}],
            [{"concat": ["fd00:96::11", 132, 80]}, {"drop": None}],
        ),
    )
    addr = ipaddress.ip_address("fd00:96::10")
    assert fe.lookup((addr, "tcp", 80)) == ("goto", "rt_c2_c2m_c2m")
    assert fe.lookup((ipaddress.ip_address("fd00:96::11"), "sctp", 80)) == ("drop",)
    assert fe.lookup((addr, "udp", 80)) is readback.MISS
    cidrs = readback.SetDump(
        "cluster-cidrs",
        False,
        ("ipv4_addr",),
        None,
        frozenset({"interval"}),
        None,
        raw=({"prefix": {"addr": "10.244.0.0", "len": 16}},),
    )
    assert cidrs.lookup(ipaddress.ip_address("10.244.3.4")) is None
    assert cidrs.lookup(ipaddress.ip_address("10.245.0.1")) is readback.MISS
