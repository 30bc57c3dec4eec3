"""`svcnet diff` against a real kernel: the nftables tables of a fresh svcnet-df-*
network namespace, read back (observed_plan) and compared with the plan compiled from
the store, through the real command line (python -m svcnet)."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

from svcnet.backend import load_backend
from svcnet.plan import FrontendKind, Plan, compile
from svcnet.store import Store
from svcnet.testing.plugin import create_netns, delete_netns, kernel_unavailable

pytestmark = pytest.mark.kernel

DEMO = str(pathlib.Path(__file__).parent.parent / "tests" / "fixtures" / "demo")
NODE = "node-a"


def run(store: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "svcnet", "--store", str(store), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def store(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "store.db"
    proc = run(path, "apply", "-f", DEMO)
    assert proc.returncode == 0, proc.stderr
    return path


@pytest.fixture
def netns() -> Iterator[str]:
    reason = kernel_unavailable()
    if reason:
        pytest.skip(reason)
    name = create_netns("svcnet-df-")
    try:
        yield name
    finally:
        delete_netns(name)


def _install(store: pathlib.Path, netns: str) -> Plan:
    """What `svcnet sync` does for one node, into ``netns``."""
    plan = compile(Store(str(store)).load(), NODE)
    backend = load_backend("nftables")(NODE, netns=netns)
    try:
        backend.sync(plan)
    finally:
        backend.close()
    return plan


def _diff(store: pathlib.Path, netns: str) -> subprocess.CompletedProcess[str]:
    proc = run(store, "diff", "--backend", "nftables", "--netns", netns, "--node", NODE)
    assert "Traceback" not in proc.stderr, proc.stderr
    for repr_ in ("NodeSettings(", "Plan(", "ServicePlan(", "PortPlan("):
        assert repr_ not in proc.stdout, proc.stdout  # the plan's text, never a repr
    return proc


def test_diff_reads_the_kernel(store: pathlib.Path, netns: str) -> None:
    # nothing installed yet: every service is what the next sync would add
    before = _diff(store, netns)
    assert before.returncode == 1, before.stdout + before.stderr
    assert "+service default/web " in before.stdout
    assert "(no changes)" not in before.stdout

    plan = _install(store, netns)
    same = _diff(store, netns)
    assert (same.returncode, same.stdout) == (0, f"node {NODE}: (no changes)\n"), same.stderr

    # hand damage: the last endpoint of web's first port, behind its ClusterIP
    web = next(s for s in plan.services.values() if s.ref.name == "web")
    port = next(p for p in web.ports if p.cluster_endpoints)
    cip = next(f for f in port.frontends if f.kind is FrontendKind.CLUSTER_IP)
    proto = port.protocol.value.lower()
    gone = port.cluster_endpoints[-1]
    subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "delete", "element", "ip", "svcnet",
         f"eps-cluster-{proto}",
         f"{{ {cip.ip} . {proto} . {cip.port} . {len(port.cluster_endpoints) - 1} }}"],
        check=True, capture_output=True,
    )  # fmt: skip
    damaged = _diff(store, netns)
    assert damaged.returncode == 1, damaged.stdout + damaged.stderr
    lines = damaged.stdout.splitlines()
    assert lines[0] == f"node {NODE}:"
    assert lines[1].startswith(f"--- nftables in {netns} (now)")
    assert lines[2] == "+++ the plan (from the store)"
    removed = [x for x in lines if x.startswith("-    cluster endpoints:")]
    added = [x for x in lines if x.startswith("+    cluster endpoints:")]
    # the kernel's line lacks the endpoint; the plan's (what sync installs) has it
    assert len(removed) == 1 and str(gone) not in removed[0], damaged.stdout
    assert len(added) == 1 and str(gone) in added[0], damaged.stdout
    assert f" service default/web {', '.join(web.cluster_ips)}" in lines  # context: whose


def test_diff_errors_exit_2(store: pathlib.Path, netns: str) -> None:
    memory = run(store, "diff", "--backend", "memory")
    assert memory.returncode == 2 and "nothing to read back" in memory.stderr
    ghost = run(store, "diff", "--backend", "nftables", "--netns", netns, "--node", "nope")
    assert ghost.returncode == 2 and "Node nope not found" in ghost.stderr
    one = run(store, "diff", "--backend", "nftables", "--netns", netns)
    assert one.returncode == 2 and "--node" in one.stderr
    nowhere = run(store, "diff", "--backend", "nftables")
    assert nowhere.returncode == 2 and "--lab LAB or --host (or --netns NS)" in nowhere.stderr
    lab = run(store, "diff", "--backend", "nftables", "--lab", "svcnet-df-no-such-lab")
    assert lab.returncode == 2 and "has no namespace svcnet-svcnet-df-no-such-lab-n-" in lab.stderr
