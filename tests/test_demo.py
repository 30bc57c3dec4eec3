"""`svcnet demo`, run as a subprocess: with root real packets, else sampled outcomes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

ROW = re.compile(
    r"^(pod default/client \(node-a\)|node node-b|external 198\.51\.100\.7)\s+"
    r"(ClusterIP|NodePort|LoadBalancer) (\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(.+)$"
)


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "svcnet", "demo", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def table(stdout: str) -> list[tuple[str, ...]]:
    rows = [m.groups() for line in stdout.splitlines() if (m := ROW.match(line))]
    assert rows, stdout
    return rows


def check_rows(rows: list[tuple[str, ...]], count: int) -> None:
    assert len(rows) == 9  # 3 sources x 3 addresses
    assert {r[0].split()[0] for r in rows} == {"pod", "node", "external"}
    assert {r[1] for r in rows} == {"ClusterIP", "NodePort", "LoadBalancer"}
    for r in rows:
        counts = [int(c) for c in r[3:6]]
        assert sum(counts) == count, r  # every connection answered by a web pod
        assert all(c > 0 for c in counts), r  # each of the three pods answered some


def test_demo_without_packets_samples_the_memory_backend() -> None:
    p = run_demo("--memory", "--count", "60")
    assert p.returncode == 0, p.stderr
    assert "no packets sent" in p.stderr
    assert "web-1" in p.stdout.splitlines()[2] or "web-1" in p.stdout
    rows = table(p.stdout)
    check_rows(rows, 60)
    by = {(r[0].split()[0], r[1]): r[6] for r in rows}
    assert "10.244.1.20 (kept)" in by[("pod", "ClusterIP")]
    assert "masquerade" in by[("external", "NodePort")]


@pytest.mark.kernel
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
@pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2 (ip)")
def test_demo_sends_real_packets_and_cleans_up() -> None:
    p = run_demo()
    assert p.returncode == 0, p.stderr
    assert re.search(r"backend: (nftables|iptables)", p.stderr), p.stderr
    assert "real connections through" in p.stdout
    rows = table(p.stdout)
    check_rows(rows, 100)
    by = {(r[0].split()[0], r[1]): r[6] for r in rows}
    assert by[("pod", "ClusterIP")] == "10.244.1.20 (kept)"
    assert "(masquerade)" in by[("external", "NodePort")]
    assert "(masquerade)" in by[("pod", "LoadBalancer")]
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "svcnet-demo-" not in left
