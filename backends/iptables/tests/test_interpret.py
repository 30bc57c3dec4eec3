"""interpret.py: read-back rules + probe -> outcome (pure)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from svcnet_iptables.interpret import Interpreter, InterpretError, rule_probability
from svcnet_iptables.readback import Ruleset, parse_save

from svcnet.model import IPFamily, Protocol
from svcnet.probe import Probe, SourceKind, Target, Verdict

HEAD = """*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:SVCNET-SERVICES - [0:0]
:SVCNET-SVC-A - [0:0]
:SVCNET-SEP-1 - [0:0]
:SVCNET-SEP-2 - [0:0]
:SVCNET-SEP-3 - [0:0]
:SVCNET-MARK-MASQ - [0:0]
:SVCNET-POSTROUTING - [0:0]
-A PREROUTING -j SVCNET-SERVICES
-A OUTPUT -j SVCNET-SERVICES
-A POSTROUTING -j SVCNET-POSTROUTING
-A SVCNET-SERVICES -d 10.96.1.10/32 -p tcp -m tcp --dport 80 -j SVCNET-SVC-A
-A SVCNET-MARK-MASQ -j MARK --or-mark 0x4000
-A SVCNET-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A SVCNET-POSTROUTING -j MASQUERADE --random-fully
"""
FILTER = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:SVCNET-FILTER - [0:0]
-A INPUT -m conntrack --ctstate NEW -j SVCNET-FILTER
-A FORWARD -m conntrack --ctstate NEW -j SVCNET-FILTER
-A OUTPUT -m conntrack --ctstate NEW -j SVCNET-FILTER
-A SVCNET-FILTER -d 10.96.1.10/32 -j REJECT --reject-with icmp-port-unreachable
-A SVCNET-FILTER -d 10.96.0.0/16 -j DROP
COMMIT
"""
SEPS = "".join(
    f"-A SVCNET-SEP-{i} -s 10.244.1.{i}/32 -j SVCNET-MARK-MASQ\n"
    f"-A SVCNET-SEP-{i} -p tcp{{sticky{i}}} -j DNAT --to-destination 10.244.1.{i}:8080\n"
    for i in (1, 2, 3)
)


def ruleset(svc_rules: str, sticky: bool = False) -> Ruleset:
    marks = {
        f"sticky{i}": f" -m recent --set --name SVCNET-SEP-{i} --rsource" if sticky else ""
        for i in (1, 2, 3)
    }
    text = HEAD + svc_rules + SEPS.format(**marks) + "COMMIT\n" + FILTER
    return Ruleset({(IPFamily.IPv4, t): v for t, v in parse_save(text, IPFamily.IPv4).items()})


CASCADE = (
    "-A SVCNET-SVC-A ! -s 10.244.0.0/16 -j SVCNET-MARK-MASQ\n"
    "-A SVCNET-SVC-A -m statistic --mode random --probability 0.33333333349 -j SVCNET-SEP-1\n"
    "-A SVCNET-SVC-A -m statistic --mode random --probability 0.50000000000 -j SVCNET-SEP-2\n"
    "-A SVCNET-SVC-A -j SVCNET-SEP-3\n"
)
AFFINITY = "".join(
    f"-A SVCNET-SVC-A -m recent --name SVCNET-SEP-{i} --rcheck --seconds 10800 --reap "
    f"-j SVCNET-SEP-{i}\n"
    for i in (1, 2, 3)
)


def probe(kind: SourceKind = SourceKind.POD, src: str = "10.244.2.9", port: int = 80) -> Probe:
    return Probe(kind, src, "node-a", "10.96.1.10", port, Protocol.TCP)


def test_rule_probability_recovers_small_fractions() -> None:
    assert rule_probability("0.33333333349") == Fraction(1, 3)
    assert rule_probability("0.3333333333") == Fraction(1, 3)
    assert rule_probability("0.50000000000") == Fraction(1, 2)
    assert rule_probability("0.25") == Fraction(1, 4)
    assert rule_probability("1.0") == 1
    assert rule_probability("0.0") == 0
    # not near a small fraction: the kernel's own value, k / 2**31
    kernel = Fraction(round(Fraction("0.123456789") * 2**31), 2**31)
    assert rule_probability("0.123456789") == kernel


def test_three_way_cascade_is_uniform() -> None:
    outcome = Interpreter(ruleset(CASCADE)).evaluate(probe())
    assert outcome.verdict is Verdict.FORWARD
    assert outcome.targets == frozenset(
        Target(f"10.244.1.{i}", 8080, False, Fraction(1, 3)) for i in (1, 2, 3)
    )
    assert outcome.affinity_timeout is None


def test_off_cluster_source_is_masqueraded_and_hairpin_marks_itself() -> None:
    ext = Interpreter(ruleset(CASCADE)).evaluate(probe(SourceKind.EXTERNAL, "198.51.100.7"))
    assert {t.masquerade for t in ext.targets} == {True}
    hairpin = Interpreter(ruleset(CASCADE)).evaluate(probe(src="10.244.1.2"))
    by_ip = {t.ip: t.masquerade for t in hairpin.targets}
    assert by_ip == {"10.244.1.1": False, "10.244.1.2": True, "10.244.1.3": False}


def test_recent_based_affinity_is_detected() -> None:
    outcome = Interpreter(ruleset(AFFINITY + CASCADE, sticky=True)).evaluate(probe())
    assert outcome.affinity_timeout == 10800
    assert {t.probability for t in outcome.targets} == {Fraction(1, 3)}
    # checking without setting (or the reverse) is not affinity
    assert Interpreter(ruleset(AFFINITY + CASCADE)).evaluate(probe()).affinity_timeout is None
    loose = Interpreter(ruleset(CASCADE, sticky=True)).evaluate(probe())
    assert loose.affinity_timeout is None


def test_filter_verdicts_for_undnated_packets() -> None:
    rs = ruleset(CASCADE)
    assert Interpreter(rs).evaluate(probe(port=81)).verdict is Verdict.REJECT
    other = Probe(SourceKind.POD, "10.244.2.9", "node-a", "10.96.9.9", 80, Protocol.TCP)
    assert Interpreter(rs).evaluate(other).verdict is Verdict.DROP
    outside = Probe(SourceKind.POD, "10.244.2.9", "node-a", "8.8.8.8", 53, Protocol.UDP)
    assert Interpreter(rs).evaluate(outside).verdict is Verdict.PASS
    assert Interpreter(rs).trace(probe(port=81))[-1].startswith("filter: -A SVCNET-FILTER")


def test_refuses_what_it_cannot_evaluate() -> None:
    with pytest.raises(InterpretError, match="cannot evaluate"):
        Interpreter(ruleset("-A SVCNET-SVC-A -m frag --fraglast -j DROP\n" + CASCADE)).evaluate(
            probe()
        )
    partial = "-A SVCNET-SVC-A -m statistic --mode random --probability 0.5 -j SVCNET-SEP-1\n"
    with pytest.raises(InterpretError, match="different verdicts"):
        Interpreter(ruleset(partial)).evaluate(probe())
    with pytest.raises(InterpretError, match="unknown target"):
        Interpreter(ruleset("-A SVCNET-SVC-A -j SVCNET-NOWHERE\n")).evaluate(probe())
