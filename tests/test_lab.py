"""svcnet.lab: the topology (pure), the prober's judgement, and real labs (kernel)."""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from svcnet import manifests
from svcnet.lab import topology
from svcnet.lab.prober import Fate, Observation, _parse
from svcnet.lab.traffic import Sender, Unrealisable, judge, sender_for
from svcnet.model import Protocol
from svcnet.probe import Verdict
from svcnet.scenario.format import Expected, ProbeSpec, Source
from svcnet.state import Apply, ClusterState

SHARED_EXAMPLES = str(
    __import__("pathlib").Path(__file__).resolve().parents[1] / "svcnet" / "scenarios" / "examples"
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "tests", "fixtures", "demo")
EXAMPLES = sorted(glob.glob(SHARED_EXAMPLES + "/*.yaml"))

NODE = """
apiVersion: v1
kind: Node
metadata: {name: %s}
spec: {podCIDR: %s}
status: {addresses: [{type: InternalIP, address: %s}]}
"""


def demo_state() -> ClusterState:
    objects = []
    for path in sorted(glob.glob(os.path.join(DEMO, "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            objects += manifests.load(f.read(), filename=path)
    return ClusterState.empty().step(Apply(objects))


# -- topology (pure) ---------------------------------------------------------------------


def test_topology_names_and_interfaces_fit_the_kernel() -> None:
    topo = topology.build("lab1", demo_state())
    assert [n.name for n in topo.nodes] == ["node-a", "node-b"]
    assert topo.node("node-a") is not None
    assert topo.node("node-a").netns == "svcnet-lab1-n-node-a"  # type: ignore[union-attr]
    pod = topo.pod("default/web-2")
    assert pod is not None
    assert pod.netns == "svcnet-lab1-p-default-web-2"
    assert (pod.ip, pod.node, pod.tcp, pod.udp) == ("10.244.2.10", "node-b", (8080,), (8053,))
    names = [n.port for n in topo.nodes] + [p.veth for p in topo.pods]
    assert all(0 < len(n) <= 15 for n in names)
    assert len(set(names)) == len(names)
    assert set(topo.namespaces) >= {"svcnet-lab1-underlay", "svcnet-lab1-ext"}
    assert all(ns.startswith("svcnet-lab1-") for ns in topo.namespaces)


def test_topology_routes_between_nodes() -> None:
    topo = topology.build("lab1", demo_state())
    a = topo.node("node-a")
    assert a is not None
    assert a.routes(topo) == (
        "10.244.2.0/24 via 192.168.56.12 dev eth0 onlink",
        "192.168.56.12/32 dev eth0 scope link",
    )
    ext = topo.ext_routes()
    assert "10.96.0.0/16 via 192.168.56.11 dev eth0 onlink" in ext
    assert "203.0.113.0/28 via 192.168.56.11 dev eth0 onlink" in ext


def test_topology_skips_what_the_lab_cannot_build() -> None:
    docs = manifests.load(
        NODE % ("v6", "fd00:1::/64", "fd00::1")
        + "---\n"
        + textwrap.dedent(
            """
            apiVersion: v1
            kind: Pod
            metadata: {name: p, namespace: default}
            spec: {nodeName: v6, containers: [{name: c}]}
            status: {podIP: "fd00:1::5"}
            """
        )
    )
    state = ClusterState.empty().step(Apply(docs))
    topo = topology.build("x", state)
    assert topo.nodes == () and topo.pods == ()
    assert any("IPv4" in why for why in topo.skipped)


@pytest.mark.parametrize("bad", ["", "a-b", "UPPER", "x" * 21, "a/b"])
def test_lab_names_are_checked(bad: str) -> None:
    with pytest.raises(ValueError, match="lab"):
        topology.check_lab_name(bad)


# -- the prober's judgement (pure) ---------------------------------------------------------


def spec(src: Source, dst: str, port: int, expected: Expected) -> ProbeSpec:
    return ProbeSpec("p", src, dst, port, Protocol.TCP, expected)


FWD = Expected(Verdict.FORWARD, frozenset({"10.244.1.10:8080", "10.244.2.10:8080"}), False)
POD_SENDER = Sender("svcnet-x-p-default-client", "10.244.1.20", None, None, False)


def answered(ep: str, seen: str = "10.244.1.20") -> Observation:
    return Observation(Fate.ANSWERED, "web", ep, seen)


def test_parse_answers() -> None:
    assert _parse("web-1 10.244.1.20:4000 10.244.1.10:8080\n", "10.96.0.10:80") == Observation(
        Fate.ANSWERED, "web-1", "10.244.1.10:8080", "10.244.1.20"
    )
    assert _parse("web-1 10.244.1.20:4000 10.244.1.10:8080", "10.244.1.10:8080").fate is Fate.PASS
    assert _parse("-pass- 1.2.3.4:5 6.7.8.9:80", "6.7.8.9:80").fate is Fate.PASS
    assert _parse("garbage", "1.2.3.4:80").fate is Fate.ERROR


def test_judge_forward() -> None:
    s = spec(Source(pod="default/client"), "10.96.0.10", 80, FWD)
    both = [answered("10.244.1.10:8080"), answered("10.244.2.10:8080")]
    assert judge(s, POD_SENDER, both) == []
    (problem,) = judge(s, POD_SENDER, [answered("10.244.1.10:8080")] * 16)
    assert "never answered in 16 connections: 10.244.2.10:8080" in problem
    problems = judge(s, POD_SENDER, [*both, answered("10.244.9.9:80")])
    assert problems == ["unexpected endpoints 10.244.9.9:80"]
    masq = [answered("10.244.1.10:8080", "192.168.56.11"), answered("10.244.2.10:8080")]
    (problem,) = judge(s, POD_SENDER, masq)
    assert problem.startswith("masquerade towards 10.244.1.10:8080: expected false")


def test_judge_masquerade_is_not_checked_from_a_node() -> None:
    s = spec(Source(node="node-a"), "10.96.0.10", 80, FWD)
    node = Sender("svcnet-x-n-node-a", "192.168.56.11", None, None, True)
    seen = [answered(e, "192.168.56.11") for e in sorted(FWD.endpoints)]
    assert judge(s, node, seen) == []


def test_judge_sticky_and_other_verdicts() -> None:
    sticky = Expected(Verdict.FORWARD, FWD.endpoints, False, sticky=True)
    s = spec(Source(pod="default/client"), "10.96.0.10", 80, sticky)
    assert judge(s, POD_SENDER, [answered("10.244.2.10:8080")] * 5) == []
    mixed = [answered("10.244.2.10:8080"), answered("10.244.1.10:8080")]
    assert judge(s, POD_SENDER, mixed)[0].startswith("sticky")
    for verdict, fate in [
        (Verdict.REJECT, Fate.REFUSED),
        (Verdict.DROP, Fate.TIMEOUT),
        (Verdict.PASS, Fate.PASS),
        (Verdict.PASS, Fate.UNREACHABLE),
    ]:
        s = spec(Source(pod="default/client"), "10.96.0.99", 80, Expected(verdict))
        assert judge(s, POD_SENDER, [Observation(fate)]) == []
    s = spec(Source(pod="default/client"), "10.96.0.99", 80, Expected(Verdict.DROP))
    assert judge(s, POD_SENDER, [Observation(Fate.REFUSED)]) == [
        "verdict: expected drop, observed refused"
    ]


def test_unrealisable_probes_say_why() -> None:
    topo = topology.build("x", demo_state())
    cases = [
        (Source(pod="default/client", via="node-b"), "10.96.0.10", "ClusterIP"),
        (Source(pod="default/client", via="node-b"), "203.0.113.10", "own node"),
        (Source(external="10.244.1.99", via="node-a"), "10.96.0.10", "cluster address"),
        (Source(external="198.51.100.7", via="node-a"), "192.168.56.12", "node node-b"),
        (Source(external="192.168.56.12", via="node-a"), "10.96.0.10", "node node-b's address"),
        (Source(pod="default/client"), "fd00::1", "IPv4 only"),
    ]
    for src, dst, why in cases:
        with pytest.raises(Unrealisable, match=why):
            sender_for(topo, spec(src, dst, 80, Expected(Verdict.DROP)))
    ext = sender_for(
        topo,
        spec(
            Source(external="198.51.100.7", via="node-b"),
            "203.0.113.10",
            80,
            Expected(Verdict.DROP),
        ),
    )
    assert (ext.bind, ext.via_ip, ext.node_source) == ("198.51.100.7", "192.168.56.12", False)
    other_node = sender_for(
        topo,
        spec(
            Source(external="192.168.56.12", via="node-a"),
            "192.168.56.11",
            30080,
            Expected(Verdict.DROP),
        ),
    )
    assert other_node.netns == "svcnet-x-n-node-b"


# -- kernel --------------------------------------------------------------------------------

WHY_NOT = (
    "needs root"
    if os.geteuid() != 0
    else "needs iproute2 (ip)"
    if shutil.which("ip") is None
    else ""
)


def root_links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout
    return {link["ifname"] for link in json.loads(out or "[]")}


def lab_pids(name: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", "podserver.py"], capture_output=True, text=True).stdout
    from svcnet.kernel.netns import netns_of

    return [int(p) for p in out.split() if (netns_of(int(p)) or "").startswith(f"svcnet-{name}-")]


@pytest.fixture(scope="module")
def iptables_lab() -> Iterator[object]:
    if WHY_NOT:
        pytest.skip(WHY_NOT)
    from svcnet.backend import load_backend
    from svcnet.lab.control import Lab

    lab = Lab(f"tl{os.getpid() % 100000}", load_backend("iptables"))
    try:
        lab.up(demo_state())
        yield lab
    finally:
        lab.down()


def lab_run(lab: object, where: str, *args: str) -> subprocess.CompletedProcess[str]:
    topo = lab.topo  # type: ignore[attr-defined]
    pod = topo.pod(where)
    ns = pod.netns if pod is not None else topo.node(where).netns
    return subprocess.run(
        ["ip", "netns", "exec", ns, *args], capture_output=True, text=True, timeout=20
    )


@pytest.mark.kernel
@pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "ok")
@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
@pytest.mark.parametrize(
    "url",
    ["http://10.96.0.10/", "http://192.168.56.11:30080/", "http://203.0.113.10/"],
    ids=["clusterip", "nodeport", "loadbalancer"],
)
def test_http_from_a_pod_reaches_a_pod(iptables_lab: object, url: str) -> None:
    p = lab_run(iptables_lab, "default/client", "curl", "-sS", "-m", "5", "-i", url)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("HTTP/1.0 200 OK")
    body = p.stdout.replace("\r\n", "\n").split("\n\n", 1)[1].split()
    assert body[0] in {"web-1", "web-2", "web-3"}
    assert body[2].endswith(":8080")


@pytest.mark.kernel
@pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "ok")
@pytest.mark.parametrize(
    "dst",
    [("10.96.0.10", 53), ("192.168.56.11", 30053), ("203.0.113.10", 53)],
    ids=["clusterip", "nodeport", "loadbalancer"],
)
def test_udp_from_a_pod_reaches_a_pod(iptables_lab: object, dst: tuple[str, int]) -> None:
    from svcnet.lab import prober

    pod = iptables_lab.topo.pod("default/client")  # type: ignore[attr-defined]
    obs = prober.send(pod.netns, dst[0], dst[1], Protocol.UDP, timeout=2.0)
    assert obs.fate is Fate.ANSWERED, obs
    assert obs.pod in {"web-1", "web-2", "web-3"}
    assert obs.endpoint.endswith(":8053")
    # an undefined port of the ClusterIP is refused, for UDP too (ICMP port unreachable)
    assert prober.send(pod.netns, "10.96.0.10", 54, Protocol.UDP).fate is Fate.REFUSED


def chi_square_p(counts: list[int]) -> float:
    """Upper tail of the chi-square test of uniformity; exact for 3 categories
    (two degrees of freedom: P(X > x) = exp(-x / 2))."""
    assert len(counts) == 3
    n = sum(counts)
    e = n / 3
    stat = sum((c - e) ** 2 / e for c in counts)
    return math.exp(-stat / 2)


def spread(lab: object, n: int = 1000) -> list[int]:
    from svcnet.lab import prober

    pod = lab.topo.pod("default/client")  # type: ignore[attr-defined]
    tally = {"web-1": 0, "web-2": 0, "web-3": 0}
    for _ in range(n):
        obs = prober.send(pod.netns, "10.96.0.10", 80, timeout=2.0)
        assert obs.fate is Fate.ANSWERED, obs
        tally[obs.pod] += 1
    return [tally[k] for k in sorted(tally)]


@pytest.mark.kernel
@pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "ok")
def test_iptables_spreads_connections_uniformly(iptables_lab: object) -> None:
    counts = spread(iptables_lab)
    assert chi_square_p(counts) > 0.001, counts


@pytest.mark.kernel
@pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "ok")
def test_nftables_spreads_connections_uniformly() -> None:
    from svcnet.backend import load_backend
    from svcnet.lab.control import Lab

    try:
        cls = load_backend("nftables")
    except Exception as e:
        pytest.skip(f"nftables backend does not import: {e}")
    lab = Lab(f"tn{os.getpid() % 100000}", cls)
    try:
        try:
            lab.up(demo_state())
        except Exception as e:
            pytest.skip(f"nftables backend does not sync: {e}")
        counts = spread(lab)
        assert chi_square_p(counts) > 0.001, counts
    finally:
        lab.down()


@pytest.mark.kernel
@pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "ok")
def test_lab_up_update_down_leaves_nothing_behind() -> None:
    from svcnet.kernel import netns
    from svcnet.lab.control import Lab, read_record

    before = root_links()
    name = f"tu{os.getpid() % 100000}"
    state = demo_state()
    lab = Lab(name)  # no backend: topology and servers only
    try:
        topo = lab.up(state)
        assert netns.listed(f"svcnet-{name}-") == sorted(topo.namespaces)
        assert len(lab_pids(name)) == 3
        assert sorted(read_record(name)["servers"]) == [
            "default/web-1",
            "default/web-2",
            "default/web-3",
        ]
        lab.up(state)  # idempotent: the same servers keep running
        assert sorted(lab.servers.values()) == sorted(lab_pids(name))
        from svcnet.model import Kind, ObjectKey
        from svcnet.state import Delete

        smaller = state.step(Delete([ObjectKey(Kind.POD, "default", "web-3")]))
        lab.up(smaller)
        assert not netns.exists(f"svcnet-{name}-p-default-web-3")
        assert len(lab_pids(name)) == 2
        assert root_links() == before  # the root namespace is never touched
    finally:
        lab.down()
    assert netns.listed(f"svcnet-{name}-") == []
    assert lab_pids(name) == []
    assert not os.path.exists(f"/run/svcnet/{name}")
    assert root_links() == before


@pytest.mark.kernel
@pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "ok")
def test_down_cleans_up_after_a_crash() -> None:
    from svcnet.kernel import netns
    from svcnet.lab.control import down

    name = f"tc{os.getpid() % 100000}"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_lab import demo_state
        from svcnet.lab.control import Lab
        Lab({name!r}).up(demo_state())
        os.kill(os.getpid(), signal.SIGKILL)  # crash: no cleanup at all
        """
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert p.returncode == -signal.SIGKILL, p.stderr
    try:
        assert netns.listed(f"svcnet-{name}-")
        assert len(lab_pids(name)) == 3  # the servers outlive the crash...
    finally:
        down(name)  # ...until down finds them
    assert netns.listed(f"svcnet-{name}-") == []
    assert lab_pids(name) == []
    assert down(name) == []  # idempotent


@pytest.mark.kernel
@pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "ok")
@pytest.mark.skipif(not EXAMPLES, reason="no scenario examples in svcnet/scenarios/examples")
def test_scenario_examples_pass_with_traffic_on_iptables() -> None:
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "svcnet",
            "scenario",
            "run",
            *EXAMPLES,
            "--backend",
            "iptables",
            "--traffic",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    doc = json.loads(p.stdout)
    traffic = [r for r in doc["results"] if r["kind"] == "traffic"]
    failed = [r for r in doc["results"] if r["status"] == "failed"]
    assert not failed, failed
    assert p.returncode == 0
    assert len(traffic) >= 15
    assert all(r["status"] == "passed" for r in traffic)


# -- the scenario runner's traffic hook (no root: a fake lab) ----------------------------


class FakeTraffic:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def begin(self, scenario: object) -> None:
        self.calls.append("begin")

    def sync(self, state: ClusterState) -> None:
        self.calls.append(f"sync {len(state.pods)}")

    def check(self, spec: ProbeSpec, probe: object, state: ClusterState) -> object:
        from svcnet.lab.traffic import TrafficCheck
        from svcnet.scenario import Status

        self.calls.append(f"check {spec.name}")
        if spec.expected.verdict is Verdict.DROP:
            return TrafficCheck(Status.SKIPPED, reason="not sent as traffic: test")
        return TrafficCheck(Status.PASSED, observed="fine")

    def end(self) -> None:
        self.calls.append("end")


@pytest.mark.skipif(not EXAMPLES, reason="no scenario examples in svcnet/scenarios/examples")
def test_scenario_runner_calls_the_traffic_hook() -> None:
    from svcnet.backend import load_backend
    from svcnet.scenario import Status, load_scenario, run_scenario

    path = next(p for p in EXAMPLES if p.endswith("clusterip-basics.yaml"))
    memory = load_backend("memory")
    hook = FakeTraffic()
    result = run_scenario(load_scenario(path), memory, hook)
    plain = run_scenario(load_scenario(path), memory)
    probes = [r for r in result.results if r.kind == "probe"]
    traffic = [r for r in result.results if r.kind == "traffic"]
    assert len(traffic) == len(probes) == 7
    assert [r.status for r in plain.results] == [r.status for r in probes]
    assert [r.name for r in traffic] == [r.name for r in probes]
    assert sum(r.status is Status.SKIPPED for r in traffic) == 1  # the drop
    assert hook.calls[0] == "begin" and hook.calls[-1] == "end"
    assert hook.calls[1:3] == ["sync 4", "check a pod reaches the ready pods without masquerade"]
    assert "sync 3" in hook.calls  # after the delete
