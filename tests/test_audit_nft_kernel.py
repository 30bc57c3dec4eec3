"""svcnet audit against a real kernel, kube-proxy's nftables mode: the tables rendered
by tests/test_audit_nft.py from the documented layout, loaded with ``nft -j -f`` into a
fresh svcnet-au-* namespace and read live with ``svcnet audit --netns`` (the kernel's
own listing: its handles, its element and expression forms), before and after
damage."""

from __future__ import annotations

import copy
import json
import subprocess
from typing import Any

import pytest
import test_audit_kernel
from click.testing import CliRunner
from test_audit import FIXTURE
from test_audit_nft import kube_nft, rules_of

from svcnet import manifests
from svcnet.cli.audit import read_netns, run_audit
from svcnet.cli.dns import _state_from_files
from svcnet.cli.main import cli
from svcnet.model import ClusterConfig
from svcnet.probes import node_probes
from svcnet.state import Apply, ClusterState

pytestmark = pytest.mark.kernel
NODE = "node-a"
DUAL_STACK = FIXTURE.parent / "dual-stack.yaml"
DUAL_CONFIG = ClusterConfig(
    service_cidrs=("10.96.0.0/16", "fd00:96::/112"),
    cluster_cidrs=("10.244.0.0/16", "fd00:244::/56"),
)


netns = test_audit_kernel.netns  # a fresh svcnet-au-* namespace per test


def _load(netns: str, listing: dict[str, Any]) -> None:
    """Replace kube-proxy's tables in ``netns`` with ``listing`` (``nft -j -f``)."""
    doc = copy.deepcopy(listing)
    for obj in doc["nftables"]:
        if "rule" in obj:
            obj["rule"].pop("handle", None)  # the kernel numbers them
    families = sorted({o["table"]["family"] for o in doc["nftables"] if "table" in o})
    flush = [{"flush": {"ruleset": None}}]
    for text in (json.dumps({"nftables": flush}), json.dumps(doc)):
        proc = subprocess.run(
            ["ip", "netns", "exec", netns, "nft", "-j", "-f", "-"],
            input=text, capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    listed = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "list", "tables"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    assert all(f"table {f} kube-proxy" in listed for f in families), listed


def _audit(netns: str) -> tuple[int, dict[str, Any]]:
    out = CliRunner().invoke(
        cli, ["audit", "--netns", netns, "--node", NODE, "-f", str(FIXTURE), "-o", "json"]
    )
    assert out.exit_code in (0, 1), out.output
    return out.exit_code, json.loads(out.output)


def test_kube_proxy_nft_rules_read_live_agree_then_damage_shows(netns: str) -> None:
    state = _state_from_files([str(FIXTURE)])
    listing = kube_nft(state, NODE)
    _load(netns, listing)
    code, doc = _audit(netns)
    assert doc["layout"] == "kube-proxy-nftables"
    assert code == 0, json.dumps(doc["findings"][:3], indent=1)
    assert doc["disagree"] == 0 and doc["agree"] == doc["probes"] > 100
    # a wrong DNAT port, written into the kernel and read back from it
    bad = copy.deepcopy(listing)
    for rule in rules_of(bad, "endpoint-"):
        for e in rule["expr"]:
            if "dnat" in e and e["dnat"]["addr"] == "10.244.2.11":
                e["dnat"]["port"] = 9090
    _load(netns, bad)
    code, doc = _audit(netns)
    assert code == 1
    findings = [f for f in doc["findings"] if f["by_design"] is None]
    assert findings
    assert all("10.244.2.11:9090" in f["rules"] for f in findings)
    assert all(any("dnat to 10.244.2.11 . 9090" in t for t in f["trace"]) for f in findings)


def test_both_families_read_live_agree_then_a_lost_element_shows(netns: str) -> None:
    """Dual-stack: ``ip kube-proxy`` and ``ip6 kube-proxy`` as the kernel lists them."""
    objects = manifests.load(DUAL_STACK.read_text(), filename=str(DUAL_STACK))
    state = ClusterState.empty(DUAL_CONFIG).step(Apply(tuple(objects)))
    listing = kube_nft(state, NODE)
    _load(netns, listing)
    report = run_audit(state, NODE, None, *read_netns(netns))
    assert report.layout == "kube-proxy-nftables"
    assert report.ok and not report.findings, report.text()
    assert {":" in p.dst_ip for p in node_probes(state, NODE)} == {True, False}  # both asked
    # the IPv6 ClusterIP's service-ips element gone: rejected by cluster-ips-check
    bad = copy.deepcopy(listing)
    for obj in bad["nftables"]:
        m = obj.get("map", {})
        if m.get("family") == "ip6" and m.get("name") == "service-ips":
            m["elem"] = [e for e in m["elem"] if e[0]["concat"][0] != "fd00:96::10"]
            if not m["elem"]:
                del m["elem"]  # nft takes no empty element list
    _load(netns, bad)
    report = run_audit(state, NODE, None, *read_netns(netns))
    assert report.failures
    for f in report.failures:
        assert f.probe.dst_ip == "fd00:96::10" and f.rules == "reject"
        assert any(t.startswith("ip6 cluster-ips-check") for t in f.trace), f.trace
