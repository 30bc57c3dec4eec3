"""``svcnet exec [-n NS] POD -- CMD`` as kubectl exec, and ``svcnet lab exec`` with -n.

Kernel tests against a real lab (``svcnet lab up`` bound to a store, nftables
agents, the lab's DNS): the command runs in the pod's network namespace (asked of
the kernel with ``ip netns identify``), sees the pod's resolv.conf, reaches a
service by name as ``kubectl exec web-1 -- curl -s http://web`` does, and passes
its exit status through; unknown pods and commands are one-line errors.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LAB = """
apiVersion: v1
kind: Node
metadata: {name: node-a}
spec: {podCIDR: 10.244.1.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.56.11}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
spec: {podCIDR: 10.244.2.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.56.12}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: default, labels: {app: web}}
spec: {nodeName: node-a, containers: [{name: web, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.244.1.10, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: default, labels: {app: web}}
spec: {nodeName: node-b, containers: [{name: web, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.244.2.10, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default, labels: {app: client}}
spec: {nodeName: node-a, containers: [{name: client}]}
status: {podIP: 10.244.1.20, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: tool, namespace: ops, labels: {app: tool}}
spec: {nodeName: node-b, containers: [{name: tool}]}
status: {podIP: 10.244.2.30, conditions: [{type: Ready, status: "True"}]}
"""


def _why_not() -> str:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "curl", "getent"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if importlib.util.find_spec("dnslib") is None:
        return "needs dnslib (the lab's DNS servers)"
    try:
        from svcnet.backend import load_backend

        load_backend("nftables")
    except Exception as e:  # any import failure means: no nftables backend here
        return f"nftables backend unavailable: {e}"
    return ""


WHY_NOT = _why_not()
pytestmark = [pytest.mark.kernel, pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "ok")]


def svcnet(store: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "svcnet", "--store", str(store), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    from svcnet.kernel import netns

    where = tmp_path_factory.mktemp("exec")
    store = where / "store.db"
    (where / "lab.yaml").write_text(LAB)
    name = f"ex{os.getpid() % 100000}"
    try:
        p = svcnet(
            store, "lab", "up", str(where / "lab.yaml"), "--name", name, "--backend", "nftables"
        )
        assert p.returncode == 0, p.stderr + p.stdout
        yield name, store
    finally:
        p = svcnet(store, "lab", "down", "--name", name)
        assert p.returncode == 0, p.stderr
        assert netns.listed(f"svcnet-{name}-") == []


def test_exec_runs_in_the_pods_namespace(lab: tuple[str, Path]) -> None:
    name, store = lab
    for args, pod in [
        (["web-1"], "default-web-1"),
        (["pod/web-2"], "default-web-2"),
        (["-n", "ops", "tool"], "ops-tool"),
        (["pod/ops/tool"], "ops-tool"),
    ]:
        p = svcnet(store, "exec", "--name", name, *args, "--", "ip", "netns", "identify")
        assert p.returncode == 0, (args, p.stderr)
        assert p.stdout.split() == [f"svcnet-{name}-p-{pod}"], (args, p.stdout)
    # -n before the verb, as `kubectl -n ops exec tool -- ...`
    p = svcnet(store, "-n", "ops", "exec", "--name", name, "tool", "--", "ip", "netns", "identify")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [f"svcnet-{name}-p-ops-tool"], p.stdout
    # a service: one of the pods it selects
    p = svcnet(store, "exec", "--name", name, "svc/web", "--", "ip", "netns", "identify")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[0] in {f"svcnet-{name}-p-default-web-{i}" for i in (1, 2)}


def test_exec_sees_the_pods_resolv_conf_and_reaches_a_service_by_name(
    lab: tuple[str, Path],
) -> None:
    name, store = lab
    p = svcnet(store, "exec", "--name", name, "-n", "ops", "tool", "--", "cat", "/etc/resolv.conf")
    assert p.returncode == 0, p.stderr
    assert "search ops.svc.cluster.local svc.cluster.local cluster.local" in p.stdout, p.stdout
    assert "nameserver 192.168.56.12" in p.stdout, p.stdout  # tool's node
    p = svcnet(store, "exec", "--name", name, "web-1", "--", "getent", "hosts", "web")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[0] == "10.96.0.10", p.stdout
    # kubectl exec web-1 -- curl -s http://web: through the node's rules to a web pod
    answers = set()
    for _ in range(6):
        p = svcnet(
            store, "exec", "--name", name, "web-1", "--", "curl", "-s", "-m", "5", "http://web"
        )
        assert p.returncode == 0, p.stderr
        answers.add(p.stdout.split()[0])
    assert answers <= {"web-1", "web-2"} and answers, answers


def test_exit_status_is_the_commands(lab: tuple[str, Path]) -> None:
    name, store = lab
    p = svcnet(store, "exec", "--name", name, "client", "--", "sh", "-c", "exit 7")
    assert p.returncode == 7, p.stderr
    p = svcnet(store, "exec", "--name", name, "-it", "client", "--", "true")
    assert p.returncode == 0, p.stderr  # kubectl's -it is accepted


def test_errors_are_one_line(lab: tuple[str, Path]) -> None:
    name, store = lab
    for args, code, said in [
        (["ghost", "--", "true"], 1, "error: pod default/ghost not found"),
        (["-n", "ops", "web-1", "--", "true"], 1, "error: pod ops/web-1 not found"),
        (["svc/nope", "--", "true"], 1, "error: service default/nope not found"),
        (["client", "--", "no-such-command-svcnet"], 127, 'error: exec: "no-such-command-svcnet"'),
    ]:
        p = svcnet(store, "exec", "--name", name, *args)
        assert p.returncode == code, (args, p.stderr)
        assert p.stderr.strip().splitlines() == [p.stderr.strip()], p.stderr
        assert p.stderr.startswith(said), (said, p.stderr)


def test_lab_exec_takes_a_pod_name_with_n(lab: tuple[str, Path]) -> None:
    name, store = lab
    for args, pod in [
        (["pod", "client"], "default-client"),  # = default/client
        (["pod", "default/client"], "default-client"),
        (["-n", "ops", "pod", "tool"], "ops-tool"),
    ]:
        p = svcnet(store, "lab", "exec", "--name", name, *args, "--", "ip", "netns", "identify")
        assert p.returncode == 0, (args, p.stderr)
        assert p.stdout.split() == [f"svcnet-{name}-p-{pod}"], (args, p.stdout)
    p = svcnet(store, "lab", "exec", "--name", name, "pod", "ghost", "--", "true")
    assert p.returncode == 1 and "pod default/ghost is not in lab" in p.stderr, p.stderr
