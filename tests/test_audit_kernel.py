"""svcnet audit against real kernels: kube-proxy's iptables layout (rendered by
tests/test_audit.py from the documented layout) loaded with iptables-restore into a
fresh svcnet-au-* namespace and read live with ``svcnet audit --netns``, before and
after damage; and svcnet's own iptables and nftables backends after a sync: no
disagreement."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from test_audit import FIXTURE, V4, _damage, kube_saves

from svcnet.backend import load_backend
from svcnet.cli.dns import _state_from_files
from svcnet.cli.main import cli
from svcnet.plan import compile
from svcnet.testing.plugin import create_netns, delete_netns, kernel_unavailable

pytestmark = pytest.mark.kernel
NODE = "node-a"


@pytest.fixture
def netns() -> Iterator[str]:
    reason = kernel_unavailable()
    if reason:
        pytest.skip(reason)
    name = create_netns("svcnet-au-")
    try:
        yield name
    finally:
        delete_netns(name)


def _restore(netns: str, text: str) -> None:
    proc = subprocess.run(
        ["ip", "netns", "exec", netns, "iptables-restore"],
        input=text, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    if proc.returncode != 0 and "recent" in proc.stderr:
        pytest.skip(f"the kernel lacks a match kube-proxy's layout uses: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr


def _audit(netns: str) -> tuple[int, dict[str, Any]]:
    out = CliRunner().invoke(
        cli, ["audit", "--netns", netns, "--node", NODE, "-f", str(FIXTURE), "-o", "json"]
    )
    assert out.exit_code in (0, 1), out.output
    return out.exit_code, json.loads(out.output)


def test_kube_proxy_rules_read_live_agree_then_damage_shows(netns: str) -> None:
    state = _state_from_files([str(FIXTURE)])
    text = kube_saves(state, NODE)[V4]
    _restore(netns, text)
    code, doc = _audit(netns)
    assert code == 0, doc
    assert doc["layout"] == "kube-proxy-iptables"
    assert doc["disagree"] == 0 and doc["differ_by_design"] > 0 and doc["agree"] > 100
    # a wrong DNAT port, written into the kernel and read back from it
    _restore(
        netns,
        _damage(text, r"(-j DNAT --to-destination 10\.244\.2\.11:)8080$", r"\g<1>9090"),
    )
    code, doc = _audit(netns)
    assert code == 1
    findings = [f for f in doc["findings"] if f["by_design"] is None]
    assert findings
    assert all("10.244.2.11:9090" in f["rules"] for f in findings)
    assert all(any("10.244.2.11:9090" in t for t in f["trace"]) for f in findings)


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_svcnet_backends_after_a_sync_have_no_disagreement(netns: str, backend: str) -> None:
    state = _state_from_files([str(FIXTURE)])
    be = load_backend(backend)(NODE, netns=netns)
    try:
        be.sync(compile(state, NODE))
    finally:
        be.close()
    code, doc = _audit(netns)
    assert doc["layout"] == f"svcnet-{backend}"
    assert code == 0 and doc["disagree"] == 0 and doc["differ_by_design"] == 0, doc
    assert doc["agree"] == doc["probes"] and doc["agree"] > 100
