"""A live lab: bound to a store, it follows ``svcnet apply`` and ``svcnet delete``.

Kernel tests (root, iproute2, curl, dnslib). The follower test drives
:class:`svcnet.lab.follow.Follower` in this process (plumbing and DNS, no rules);
the live-flow test runs the real thing: ``svcnet lab up`` with the nftables
agents, ``svcnet apply``/``delete`` as separate processes, and curls from the
client pod's namespace. Every wait polls with a deadline.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from svcnet import manifests
from svcnet.kernel import netns
from svcnet.state import Apply, Delete
from svcnet.store import Store

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "tests" / "fixtures" / "demo"

WEB4 = """
apiVersion: v1
kind: Pod
metadata: {name: web-4, namespace: default, labels: {app: web}}
spec:
  nodeName: node-a
  containers:
    - name: web
      ports: [{name: http, containerPort: 8080}, {name: echo, containerPort: 8053, protocol: UDP}]
status: {podIP: 10.244.1.11, conditions: [{type: Ready, status: "True"}]}
"""

SHOP = """
apiVersion: v1
kind: Service
metadata: {name: shop, namespace: default}
spec:
  selector: {app: shop}
  clusterIP: 10.96.0.40
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: shop-1, namespace: default, labels: {app: shop}}
spec:
  nodeName: node-b
  containers: [{name: shop, ports: [{name: http, containerPort: 8080}]}]
status: {podIP: 10.244.2.40, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: shop-2, namespace: default, labels: {app: shop}}
spec:
  nodeName: node-a
  containers: [{name: shop, ports: [{name: http, containerPort: 8080}]}]
status: {podIP: 10.244.1.40, conditions: [{type: Ready, status: "True"}]}
"""


def _why_not() -> str:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "curl", "getent"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    import importlib.util

    if importlib.util.find_spec("dnslib") is None:
        return "needs dnslib (the lab's DNS servers)"
    return ""


WHY_NOT = _why_not()
pytestmark = [pytest.mark.kernel, pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "ok")]


def lab_name(tag: str) -> str:
    return f"{tag}{os.getpid() % 100000}"


def in_pod(lab: str, pod: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a command in a pod's namespace of lab ``lab`` (``pod``: NS-NAME)."""
    return subprocess.run(
        ["ip", "netns", "exec", f"svcnet-{lab}-p-{pod}", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def curl(lab: str, url: str) -> str:
    """The first word of the answer to one curl from the client pod ("" if none)."""
    p = in_pod(lab, "default-client", "curl", "-s", "-m", "2", url)
    return p.stdout.split()[0] if p.returncode == 0 and p.stdout.strip() else ""


def resolves(lab: str, name: str) -> bool:
    return in_pod(lab, "default-client", "getent", "hosts", name).returncode == 0


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:g} s: {what}")
        time.sleep(0.05)


def objects(text: str, name: str) -> Any:
    return tuple(manifests.load(text, filename=name))


# -- the follower alone (plumbing and DNS) ------------------------------------------------


def test_follower_builds_and_removes_pods_and_serves_dns(tmp_path: Path) -> None:
    from svcnet.lab.control import Lab, down
    from svcnet.lab.follow import Follower

    name = lab_name("lf")
    store = Store(str(tmp_path / "store.db"))
    demo: list[Any] = []
    for path in sorted(DEMO.glob("*.yaml")):
        demo += manifests.load(path.read_text(), filename=str(path))
    with store.modify() as session:
        session.save(session.state.step(Apply(tuple(demo))))
    try:
        Lab(name).up(store.list().state)
        said: list[str] = []
        follower = Follower(name, store.path, None, progress=said.append)
        follower.start()
        web4_ns = f"svcnet-{name}-p-default-web-4"
        assert not netns.exists(web4_ns)

        with store.modify() as session:
            session.save(session.state.step(Apply(objects(WEB4, "web4"))))
        wait_for("the follower takes the change", follower.poll)
        assert netns.exists(web4_ns)
        assert curl(name, "http://10.244.1.11:8080/") == "web-4"  # its server, pod to pod
        assert follower.lab.extra["version"] == store.version()

        assert not resolves(name, "shop")
        with store.modify() as session:
            session.save(session.state.step(Apply(objects(SHOP, "shop"))))
        wait_for("the follower takes the change", follower.poll)
        assert wait_for("shop resolves", lambda: resolves(name, "shop"))
        getent = in_pod(name, "default-client", "getent", "hosts", "shop").stdout
        assert getent.split()[:2] == ["10.96.0.40", "shop.default.svc.cluster.local"]

        gone = [o.key for o in objects(SHOP, "shop")] + [o.key for o in objects(WEB4, "web4")]
        server = follower.lab.servers["default/web-4"]
        with store.modify() as session:
            session.save(session.state.step(Delete(tuple(gone))))
        wait_for("the follower takes the deletions", follower.poll)
        assert not follower.poll()  # nothing new
        assert not netns.exists(web4_ns)
        assert not netns.exists(f"svcnet-{name}-p-default-shop-1")
        assert not netns.alive(server)
        assert wait_for("shop no longer resolves", lambda: not resolves(name, "shop"))
        assert resolves(name, "web")  # the rest of the lab is untouched

        # fallen behind a compacted log: the follower lists again and catches up
        compacting = Store(store.path, log_limit=1)
        with compacting.modify() as session:
            session.save(session.state.step(Apply(objects(WEB4, "web4"))))
        with compacting.modify() as session:
            session.save(session.state.step(Apply(objects(SHOP, "shop"))))
        wait_for("the follower lists again", follower.poll)
        assert any("compacted" in line and "listing again" in line for line in said), said
        assert follower.version == store.version()
        assert netns.exists(web4_ns) and netns.exists(f"svcnet-{name}-p-default-shop-1")
        assert wait_for("shop resolves again", lambda: resolves(name, "shop"))
    finally:
        down(name)
    assert netns.listed(f"svcnet-{name}-") == []


# -- the live flow: lab up, apply, curl, delete, curl ---------------------------------------


def svcnet(store: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "svcnet", "--store", str(store), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def _live_why_not() -> str:
    try:
        from svcnet.backend import load_backend

        load_backend("nftables")
    except Exception as e:  # any import failure means: no nftables backend here
        return f"nftables backend unavailable: {e}"
    p = subprocess.run(
        [sys.executable, "-m", "svcnet", "agent", "--help"], capture_output=True, text=True
    )
    if p.returncode != 0:
        said = (p.stderr or p.stdout).strip().splitlines() or ["(no output)"]
        return f"no `svcnet agent` command yet: {said[-1]}"
    return ""


@pytest.fixture(scope="module")
def live_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    why = _live_why_not()
    if why:
        pytest.skip(why)
    store = tmp_path_factory.mktemp("live") / "store.db"
    name = lab_name("ll")
    try:
        p = svcnet(store, "lab", "up", str(DEMO), "--name", name, "--backend", "nftables")
        assert p.returncode == 0, p.stderr + p.stdout
        assert f"store: {store}" in p.stdout
        assert "pod/web-1 created" in p.stdout
        yield name, store
    finally:
        p = svcnet(store, "lab", "down", "--name", name)
        assert p.returncode == 0, p.stderr
        assert netns.listed(f"svcnet-{name}-") == []


def in_step(name: str, store: Path) -> bool:
    """The follower and every agent report the store's current version."""
    from svcnet.lab.control import read_record
    from svcnet.lab.follow import agents_in_step
    from svcnet.lab.topology import build

    version = Store(str(store)).version()
    record = read_record(name)
    if record.get("version") != version:
        return False
    state = Store(str(store)).load()
    done, _ = agents_in_step(build(name, state), record.get("agents", {}), version)
    return done


def test_lab_status_shows_each_agent(live_lab: tuple[str, Path]) -> None:
    name, store = live_lab
    p = svcnet(store, "lab", "status", "--name", name)
    assert p.returncode == 0, p.stderr
    agents = [line for line in p.stdout.splitlines() if line.strip().startswith("agent ")]
    assert len(agents) == 2, p.stdout
    assert all("running" in line and "error none" in line for line in agents), p.stdout
    # each agent's own /healthz, asked over HTTP in its node's namespace
    assert all("health 200 ok" in line for line in agents), p.stdout


def test_lab_metrics_prints_the_agents_prometheus_metrics(live_lab: tuple[str, Path]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    name, store = live_lab
    p = svcnet(store, "lab", "metrics", "node-a", "--name", name)
    assert p.returncode == 0, p.stderr
    families = {f.name: f for f in text_string_to_metric_families(p.stdout)}
    syncs = families["kubeproxy_sync_proxy_rules_duration_seconds"]
    count = [s.value for s in syncs.samples if s.name.endswith("_count")]
    assert count and count[0] >= 1, p.stdout  # the agent has synced at least once
    info = [s.labels for s in families["svcnet_agent_info"].samples]
    assert info == [{"node": "node-a", "backend": "nftables"}], info
    p = svcnet(store, "lab", "metrics", "node-z", "--name", name)
    assert p.returncode == 1 and "no node 'node-z'" in p.stderr, p.stderr


def test_a_new_pod_is_reached_and_a_deleted_one_is_not(
    live_lab: tuple[str, Path], tmp_path: Path
) -> None:
    name, store = live_lab
    web4 = tmp_path / "web4.yaml"
    web4.write_text(WEB4)
    p = svcnet(store, "apply", "-f", str(web4))
    assert p.returncode == 0 and "pod/web-4 created" in p.stdout, p.stderr
    wait_for("a curl to the ClusterIP reaches web-4", lambda: curl(name, "10.96.0.10") == "web-4")

    p = svcnet(store, "delete", "pod", "web-4")
    assert p.returncode == 0, p.stderr
    wait_for(
        "web-4's namespace is gone", lambda: not netns.exists(f"svcnet-{name}-p-default-web-4")
    )
    wait_for("the lab and its agents reach the store's version", lambda: in_step(name, store))
    answers = collections.Counter(curl(name, "10.96.0.10") for _ in range(30))
    assert "web-4" not in answers
    assert set(answers) <= {"web-1", "web-2", "web-3"}, answers
    assert sum(answers.values()) == 30


def test_a_new_service_answers_by_name_until_deleted(
    live_lab: tuple[str, Path], tmp_path: Path
) -> None:
    name, store = live_lab
    shop = tmp_path / "shop.yaml"
    shop.write_text(SHOP)
    assert not resolves(name, "shop")
    p = svcnet(store, "apply", "-f", str(shop))
    assert p.returncode == 0 and "service/shop created" in p.stdout, p.stdout + p.stderr
    wait_for(
        "curl http://shop answers from a shop pod",
        lambda: curl(name, "http://shop") in {"shop-1", "shop-2"},
    )
    p = svcnet(store, "delete", "-f", str(shop))
    assert p.returncode == 0, p.stderr
    wait_for("the name shop no longer resolves", lambda: not resolves(name, "shop"))
    assert curl(name, "http://shop") == ""


NODE_C = """
apiVersion: v1
kind: Node
metadata: {name: node-c}
spec: {podCIDR: 10.244.3.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.56.13}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-5, namespace: default, labels: {app: web}}
spec:
  nodeName: node-c
  containers:
    - name: web
      ports: [{name: http, containerPort: 8080}, {name: echo, containerPort: 8053, protocol: UDP}]
status: {podIP: 10.244.3.10, conditions: [{type: Ready, status: "True"}]}
"""


def test_a_new_node_gets_an_agent_and_its_pod_is_reached(
    live_lab: tuple[str, Path], tmp_path: Path
) -> None:
    from svcnet.lab.control import our_agent, read_record

    name, store = live_lab
    node_ns = f"svcnet-{name}-n-node-c"
    node_c = tmp_path / "node-c.yaml"
    node_c.write_text(NODE_C)
    p = svcnet(store, "apply", "-f", str(node_c))
    assert p.returncode == 0, p.stderr
    wait_for(
        "a curl from node-a's client reaches web-5 on node-c",
        lambda: curl(name, "10.96.0.10") == "web-5",
    )
    wait_for("the lab and its agents reach the store's version", lambda: in_step(name, store))
    pid = read_record(name)["agents"][node_ns]
    assert our_agent(pid, node_ns)
    p = svcnet(store, "lab", "status", "--name", name)
    assert sum(line.strip().startswith("agent ") for line in p.stdout.splitlines()) == 3, p.stdout

    p = svcnet(store, "delete", "-f", str(node_c))
    assert p.returncode == 0, p.stderr
    wait_for("node-c's namespace is gone", lambda: not netns.exists(node_ns))
    wait_for("node-c's agent has stopped", lambda: not our_agent(pid, node_ns))
    wait_for("the lab and its agents reach the store's version", lambda: in_step(name, store))
    assert node_ns not in read_record(name)["agents"]
    answers = {curl(name, "10.96.0.10") for _ in range(20)}
    assert answers <= {"web-1", "web-2", "web-3"}, answers
