"""The netlink reader (:mod:`svcnet_nftables.nlread`) against libnftables' listing.

Kernel tests, each in a fresh ``svcnet-nt-*`` namespace: after a sync of the sample
plan, and after each kind of damage, the netlink read-back (``observe()``) holds what
libnftables lists, the plan read back from it is the same, and every probe's
``evaluate()``/``trace()`` (read on demand from the kernel) equals the interpreter run
over libnftables' listing, including the refusals.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from typing import Any

import pytest
from plans import NODE, sample_plan
from svcnet_nftables import NftablesBackend, interpret, nlread, observed
from svcnet_nftables.readback import Ruleset, TableDump
from test_kernel import probes_for

from conftest import nft_in
from svcnet.errors import SvcnetError
from svcnet.probe import Probe

pytestmark = pytest.mark.kernel


def _l4_folded(exprs: tuple[Any, ...]) -> list[Any]:
    """A rule's statements without the known differences of shape: libnftables folds
    a ``meta l4proto`` match into a following ``<proto> dport`` where the netlink
    reader keeps the match and names the port ``th dport``; a dnat's family."""
    text = json.dumps(list(exprs))
    for proto in ("tcp", "udp", "sctp"):
        text = text.replace(f'"protocol": "{proto}", "field"', '"protocol": "th", "field"')
    ports = '"protocol": "th", "field": "dport"' in text
    out = []
    for e in json.loads(text):
        if "dnat" in e:
            e = {"dnat": {k: v for k, v in e["dnat"].items() if k != "family"}}
        m = e.get("match", {})
        if ports and m.get("op") == "==" and m.get("left") == {"meta": {"key": "l4proto"}}:
            continue
        out.append(e)
    return out


def _same_tables(nl: Ruleset, lib: Ruleset) -> None:
    assert sorted(nl.tables) == sorted(lib.tables)
    for fam, want in lib.tables.items():
        got: TableDump = nl.tables[fam]
        assert sorted(got.chains) == sorted(want.chains)
        for name, c in want.chains.items():
            g = got.chains[name]
            assert (g.type, g.hook, g.prio, g.policy) == (c.type, c.hook, c.prio, c.policy), name
            assert [r.handle for r in g.rules] == [r.handle for r in c.rules], name
            for gr, wr in zip(g.rules, c.rules, strict=True):
                assert _l4_folded(gr.exprs) == _l4_folded(wr.exprs), (name, gr.handle)
        assert sorted(got.sets) == sorted(want.sets)
        for name, s in want.sets.items():
            g = got.sets[name]
            assert (g.is_map, g.type, g.data_type, g.timeout, g.dynamic) == (
                s.is_map, s.type, s.data_type, s.timeout, s.dynamic,
            ), name  # fmt: skip
            if not s.dynamic:
                assert sorted(map(json.dumps, g.raw)) == sorted(map(json.dumps, s.raw)), name


def _outcome(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except SvcnetError as e:
        return ("refused", type(e).__name__)


def _same_evaluations(be: NftablesBackend, probes: list[Probe]) -> int:
    lib = be.observe_libnftables()
    for p in probes:
        want = _outcome(lambda p=p: interpret.run(lib, p))  # type: ignore[misc]
        got = _outcome(lambda p=p: (be.evaluate(p), be.trace(p)))  # type: ignore[misc]
        assert got == want, p
    return len(probes)


def test_netlink_read_back_equals_libnftables(netns: str) -> None:
    be = NftablesBackend(NODE, netns=netns)
    try:
        plan = sample_plan()
        be.sync(plan)
        nl, lib = be.observe(), be.observe_libnftables()
        _same_tables(nl, lib)
        assert observed.observed_plan(nl, NODE) == observed.observed_plan(lib, NODE)
        assert be.observed_plan() == observed.observed_plan(lib, NODE)
        assert _same_evaluations(be, probes_for(plan)) > 50
    finally:
        be.close()


def _fe_key(ns: str) -> str:
    for line in nft_in(ns, "list", "map", "ip", "svcnet", "fe").splitlines():
        if "10.96.0.10 . tcp . 80" in line:
            return "10.96.0.10 . tcp . 80"
    raise AssertionError("the sample plan's web frontend is not in the fe map")


_S = ("ip", "svcnet")
DAMAGE: dict[str, Callable[[str], list[str]]] = {
    "deleted fe element": lambda ns: ["delete", "element", *_S, "fe", f"{{ {_fe_key(ns)} }}"],
    "flushed fe map": lambda ns: ["flush", "map", *_S, "fe"],
    "foreign return rule": lambda ns: [
        "insert", "rule", *_S, "services", "ip", "daddr", "10.96.0.10", "return"
    ],
    "foreign port match": lambda ns: [
        "insert", "rule", *_S, "services", "tcp", "dport", "80", "drop"
    ],
    "unknown expression": lambda ns: [
        "insert", "rule", *_S, "services", "iifname", "lo", "accept"
    ],
    "unknown statement": lambda ns: ["insert", "rule", *_S, "services", "log"],
    "deleted endpoint": lambda ns: [
        "delete", "element", *_S, "eps-cluster-tcp", "{ 10.96.0.10 . tcp . 80 . 0 }"
    ],
    "flushed chain": lambda ns: ["flush", "chain", *_S, "nat-prerouting"],
    "deleted table": lambda ns: ["delete", "table", *_S],
}  # fmt: skip


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_drift_is_seen_by_the_targeted_read(netns: str, damage: str) -> None:
    """Each call reads the kernel: damage done after a first evaluate shows in the
    next, exactly as libnftables' full listing shows it (or both refuse)."""
    be = NftablesBackend(NODE, netns=netns)
    try:
        plan = sample_plan()
        be.sync(plan)
        probes = [p for p in probes_for(plan) if ipaddress.ip_address(p.dst_ip).version == 4]
        before = {p: _outcome(lambda p=p: be.evaluate(p)) for p in probes}
        nft_in(netns, *DAMAGE[damage](netns))
        assert _same_evaluations(be, probes) == len(probes)
        after = {p: _outcome(lambda p=p: be.evaluate(p)) for p in probes}
        assert after != before, f"{damage}: no probe changed"
        _same_tables(be.observe(), be.observe_libnftables())
    finally:
        be.close()


def test_encode_key_refuses_what_cannot_be_a_key() -> None:
    info = nlread.SetInfo("fe", 8, (7, 12, 13), (4, 1, 2), 12, (1,), 0, None)
    key = nlread.encode_key(info, (ipaddress.ip_address("10.0.0.1"), "tcp", 80))
    assert key == bytes([10, 0, 0, 1, 6, 0, 0, 0, 0, 80, 0, 0])
    assert nlread.encode_key(info, (ipaddress.ip_address("fd00::1"), "tcp", 80)) is None
    assert nlread.encode_key(info, (ipaddress.ip_address("10.0.0.1"), "tcp")) is None
    assert nlread.encode_key(info, (ipaddress.ip_address("10.0.0.1"), "tcp", 70000)) is None
