"""`svcnet demo`, run as a subprocess: with root real packets, else sampled outcomes.

The demo's manifests (examples/demo) are a Deployment, a client pod and three
Services with no pod names, IPs or status; the names and addresses the table must
show are derived here from the settled state (the same controllers, scheduler and
kubelet the demo runs), never written down.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from svcnet.lab.demo import EXAMPLES, load_state
from svcnet.model import IPFamily

SOURCE = re.compile(r"^(pod default/client \(node-a\)|node node-b|external 198\.51\.100\.7)\s+")


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "svcnet", "demo", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def expected() -> tuple[list[str], str, dict[str, str]]:
    """The Deployment's pod names (sorted), the client pod's IP and each node's
    InternalIP, from the settled demo state."""
    state = load_state(EXAMPLES)
    web = sorted(p.name for p in state.pods.values() if p.labels.get("app") == "web")
    client = state.pods[("default", "client")]
    nodes = {name: node.address(IPFamily.IPv4) or "" for name, node in state.nodes.items()}
    return web, client.pod_ips[0], nodes


def table(stdout: str, pods: list[str]) -> list[tuple[str, ...]]:
    """Rows as (source, kind, address, count per pod..., seen), read under the header
    that must name exactly ``pods``."""
    lines = stdout.splitlines()
    head = next((i for i, line in enumerate(lines) if line.startswith("from ")), None)
    assert head is not None, stdout
    assert lines[head].split()[2:-5] == pods, lines[head]  # then "client address the pod saw"
    counts = r"\s+".join(r"(\d+)" for _ in pods)
    row = re.compile(
        SOURCE.pattern + r"(ClusterIP|NodePort|LoadBalancer) (\S+)\s+" + counts + r"\s+(.+)$"
    )
    rows = [m.groups() for line in lines[head:] if (m := row.match(line))]
    assert rows, stdout
    return rows


def check_rows(rows: list[tuple[str, ...]], count: int, pods: int) -> None:
    assert len(rows) == 9  # 3 sources x 3 addresses
    assert {r[0].split()[0] for r in rows} == {"pod", "node", "external"}
    assert {r[1] for r in rows} == {"ClusterIP", "NodePort", "LoadBalancer"}
    for r in rows:
        counts = [int(c) for c in r[3 : 3 + pods]]
        assert sum(counts) == count, r  # every connection answered by a web pod
        assert all(c > 0 for c in counts), r  # each of the pods answered some


def test_the_demo_manifests_write_no_pod_status_or_ip() -> None:
    docs = [
        doc
        for path in sorted(Path(EXAMPLES).glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if doc
    ]
    kinds = sorted(doc["kind"] for doc in docs)
    assert kinds.count("Deployment") == 1 and kinds.count("Pod") == 1, kinds
    for doc in docs:
        if doc["kind"] in ("Deployment", "Pod"):
            assert "status" not in doc, doc
            assert "podIP" not in str(doc) and "conditions" not in str(doc), doc


def test_the_settled_demo_has_three_deployment_pods_with_ips() -> None:
    web, client_ip, _ = expected()
    state = load_state(EXAMPLES)
    assert len(web) == 3
    for name in web:
        assert re.fullmatch(r"web-[0-9a-z]+-[0-9a-z]{5}", name), name
        pod = state.pods[("default", name)]
        assert pod.pod_ips and pod.ready and pod.node_name in state.nodes, pod
    assert state.pods[("default", "client")].node_name == "node-a"
    assert client_ip.startswith("10.244.1.")  # node-a's podCIDR


def test_demo_without_packets_samples_the_memory_backend() -> None:
    web, client_ip, _ = expected()
    p = run_demo("--memory", "--count", "60")
    assert p.returncode == 0, p.stderr
    assert "no packets sent" in p.stderr
    rows = table(p.stdout, web)
    check_rows(rows, 60, len(web))
    by = {(r[0].split()[0], r[1]): r[-1] for r in rows}
    assert by[("pod", "ClusterIP")] == f"{client_ip} (kept)"
    assert "masquerade" in by[("external", "NodePort")]


@pytest.mark.kernel
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
@pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2 (ip)")
def test_demo_sends_real_packets_and_cleans_up() -> None:
    web, client_ip, nodes = expected()
    p = run_demo()
    assert p.returncode == 0, p.stderr
    assert re.search(r"backend: (nftables|iptables)", p.stderr), p.stderr
    assert "real connections through" in p.stdout
    rows = table(p.stdout, web)
    check_rows(rows, 100, len(web))
    by = {(r[0].split()[0], r[1]): r[-1] for r in rows}
    assert by[("pod", "ClusterIP")] == f"{client_ip} (kept)"
    assert by[("node", "ClusterIP")] == f"{nodes['node-b']} (the node's own)"
    assert "(masquerade)" in by[("external", "NodePort")]
    assert "(masquerade)" in by[("pod", "LoadBalancer")]
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "svcnet-demo-" not in left
