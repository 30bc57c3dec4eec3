"""Probes read the kernel at every call: lazy per-chain reading, drift seen at once.

Pure part: :func:`split_line` splits as ``shlex`` does, and :class:`Chains`
parses a chain only when it is looked up. Kernel part (marker ``kernel``, a fresh
``svcnet-`` namespace per test, both variants): another tool's change to svcnet's
rules shows in the very next ``evaluate`` / ``trace``, without ``refresh()``.
"""

from __future__ import annotations

import shlex
import shutil
from typing import Any

import pytest
from support import kernel_skip_reason, netns, sh
from svcnet_iptables import IptablesBackend
from svcnet_iptables.readback import (
    Chains,
    ParseError,
    parse_save,
    saved_ruleset,
    split_line,
)

from svcnet import manifests
from svcnet.model import ClusterConfig, IPFamily
from svcnet.plan import compile
from svcnet.probe import Probe, SourceKind, Verdict
from svcnet.state import Apply, ClusterState

LINES = [
    '-A SVCNET-SERVICES -d 10.96.1.10/32 -p tcp -m comment --comment "ns/web:http x" -j X',
    "-A SVCNET-SEP-X -p tcp -j DNAT --to-destination 10.244.1.21:8080",
    '-A C -m comment --comment "" -j RETURN',
    '-A C -m comment --comment a"b c"d -j RETURN',
    '-A C -m comment --comment "with \\"escaped\\" quotes" -j RETURN',
    "-A C -m comment --comment 'single quoted' -j RETURN",
    "-A C\t-j  RETURN",
]


@pytest.mark.parametrize("line", LINES)
def test_split_line_is_shlex(line: str) -> None:
    assert split_line(line) == shlex.split(line)


def test_split_line_refuses_an_unclosed_quote_like_shlex() -> None:
    with pytest.raises(ValueError):
        split_line('-A C -m comment --comment "open -j RETURN')
    with pytest.raises(ParseError):
        parse_save(
            '*nat\n:SVCNET-X - [0:0]\n-A SVCNET-X -m comment --comment "a\nCOMMIT\n', IPFamily.IPv4
        )


def test_chains_parse_only_what_is_looked_up() -> None:
    saved = (
        "*nat\n:PREROUTING ACCEPT [0:0]\n:SVCNET-SERVICES - [0:0]\n:SVCNET-SVC-A - [0:0]\n"
        ":SVCNET-EMPTY - [0:0]\n"
        "-A PREROUTING -j SVCNET-SERVICES\n"
        "-A SVCNET-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 80 -j SVCNET-SVC-A\n"
        "-A SVCNET-SVC-A -j DNAT --to-destination 10.244.1.2:80\nCOMMIT\n"
    )
    table = parse_save(saved, IPFamily.IPv4)["nat"]
    chains = table.chains
    assert isinstance(chains, Chains)
    assert list(chains) == ["SVCNET-SERVICES", "SVCNET-SVC-A", "SVCNET-EMPTY", "PREROUTING"]
    assert "SVCNET-SVC-A" in chains and "SVCNET-NONE" not in chains
    assert repr(chains) == "Chains(4 chains, 1 parsed)"  # PREROUTING: parsed to be kept
    (rule,) = chains["SVCNET-SVC-A"]
    assert rule.target == "DNAT" and rule.to_destination == "10.244.1.2:80"
    assert repr(chains) == "Chains(4 chains, 2 parsed)"
    assert chains["SVCNET-EMPTY"] == ()
    assert table.rule_count() == 3


# -- kernel ---------------------------------------------------------------------------

CONFIG = ClusterConfig(service_cidrs=("10.96.0.0/16",), cluster_cidrs=("10.244.0.0/16",))


def _state() -> ClusterState:
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "node-a"},
            "spec": {"podCIDRs": ["10.244.1.0/24"]},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.56.11"}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "selector": {"app": "web"},
                "clusterIP": "10.96.0.10",
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            },
        },
    ]
    for k in (1, 2):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"web-{k}", "namespace": "default", "labels": {"app": "web"}},
                "spec": {"nodeName": "node-a", "containers": [{"name": "c"}]},
                "status": {
                    "podIPs": [{"ip": f"10.244.1.{10 + k}"}],
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            }
        )
    return ClusterState.empty(CONFIG).step(Apply(tuple(manifests.load(docs))))


PROBE = Probe(SourceKind.POD, "10.244.1.50", "node-a", "10.96.0.10", 80)


def _variant_or_skip(variant: str) -> None:
    reason = kernel_skip_reason("restore")
    if reason:
        pytest.skip(reason)
    for exe in (f"iptables-{variant}", f"iptables-{variant}-save", f"iptables-{variant}-restore"):
        if shutil.which(exe) is None:
            pytest.skip(f"{exe} is not installed")


def _dnat_rule(ns: str, variant: str, ip: str) -> str:
    """The saved line of the SEP chain rule that DNATs to ``ip``."""
    saved = sh(ns, f"iptables-{variant}-save -t nat")
    (line,) = [ln for ln in saved.splitlines() if f"--to-destination {ip}:" in ln]
    return line


@pytest.mark.kernel
@pytest.mark.parametrize("variant", ["nft", "legacy"])
def test_drift_shows_in_the_next_probe(variant: str) -> None:
    _variant_or_skip(variant)
    with netns() as ns:
        be = IptablesBackend("node-a", netns=ns, variant=variant)
        try:
            be.sync(compile(_state(), "node-a"))
            first = be.evaluate(PROBE)
            assert first.verdict is Verdict.FORWARD
            assert {t.ip for t in first.targets} == {"10.244.1.11", "10.244.1.12"}
            assert be.evaluate(PROBE) == first
            assert any("10.244.1.11:8080" in line for line in be.trace(PROBE))
            # another tool rewrites one endpoint's DNAT rule: port 8080 -> 9090
            line = _dnat_rule(ns, variant, "10.244.1.11")
            chain = line.split()[1]
            sh(
                ns,
                f"iptables-{variant} -t nat -R {chain} 1 {line.split(' ', 2)[2]}".replace(
                    "10.244.1.11:8080", "10.244.1.11:9090"
                ),
            )
            drifted = be.evaluate(PROBE)  # no refresh(): the probe reads the kernel
            assert {(t.ip, t.port) for t in drifted.targets} == {
                ("10.244.1.11", 9090),
                ("10.244.1.12", 8080),
            }
            assert any("10.244.1.11:9090" in line for line in be.trace(PROBE))
            # the jump into svcnet's nat chains goes: the probe passes untouched
            sh(ns, f"iptables-{variant} -t nat -F PREROUTING")
            assert be.evaluate(PROBE).verdict is not Verdict.FORWARD
        finally:
            be.cleanup()
            be.close()


@pytest.mark.kernel
def test_nft_variant_reads_only_the_chains_a_probe_reaches() -> None:
    _variant_or_skip("nft")
    with netns() as ns:
        be = IptablesBackend("node-a", netns=ns, variant="nft")
        try:
            be.sync(compile(_state(), "node-a"))
            be.evaluate(PROBE)
            lister = be._lister
            assert lister is not None
            total = len(sh(ns, "iptables-nft -t nat -S").splitlines())
            reached = lister.calls
            assert 0 < reached < total  # chains of this probe's walk, not every chain
            be.evaluate(PROBE)  # same nf_tables generation: nothing read but it
            assert lister.calls == reached
            sh(ns, "iptables-nft -t filter -A FORWARD -s 192.0.2.1/32 -j ACCEPT")  # anyone's commit
            be.evaluate(PROBE)
            assert lister.calls > reached  # a new generation: chains read again
        finally:
            be.cleanup()
            be.close()


def test_saved_ruleset_finds_each_chain_as_parse_save_keeps_it() -> None:
    saved = (
        "# Generated by iptables-save\n*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        ":FOREIGN - [0:0]\n:SVCNET-SERVICES - [0:0]\n:SVCNET-SVC-A - [0:0]\n"
        ":SVCNET-SVC-AB - [0:0]\n:SVCNET-EMPTY - [0:0]\n"
        "-A PREROUTING -s 1.2.3.4/32 -j FOREIGN\n-A PREROUTING -j SVCNET-SERVICES\n"
        "-A FOREIGN -j SVCNET-SVC-A\n"
        "-A SVCNET-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 80 -j SVCNET-SVC-A\n"
        '-A SVCNET-SERVICES -m comment --comment "a b" -j SVCNET-SVC-AB\n'
        "-A SVCNET-SVC-A -j DNAT --to-destination 10.244.1.2:80\n"
        "-A SVCNET-SVC-AB -j DNAT --to-destination 10.244.1.3:80\nCOMMIT\n"
        "*filter\n:INPUT ACCEPT [0:0]\n:SVCNET-FILTER - [0:0]\n"
        "-A INPUT -j SVCNET-FILTER\n-A SVCNET-FILTER -d 10.96.0.1/32 -j REJECT\nCOMMIT\n"
    )
    eager = parse_save(saved, IPFamily.IPv4)
    lazy = saved_ruleset(saved, IPFamily.IPv4, ("nat", "filter", "raw"))
    assert set(lazy.tables) == {(IPFamily.IPv4, "nat"), (IPFamily.IPv4, "filter")}
    for name in ("nat", "filter"):
        chains = lazy.table(IPFamily.IPv4, name).chains
        for chain, rules in eager[name].chains.items():
            assert chains[chain] == rules
        assert "FOREIGN" not in chains and "SVCNET-NONE" not in chains
        assert dict(chains) == dict(eager[name].chains)  # iterating reads it all
    nat = lazy.table(IPFamily.IPv4, "nat").chains
    assert [r.target for r in nat["PREROUTING"]] == ["SVCNET-SERVICES"]
    assert nat["OUTPUT"] == () and nat["SVCNET-EMPTY"] == ()
