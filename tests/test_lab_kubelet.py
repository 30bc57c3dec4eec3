"""A live lab as kubernetes.io's tutorials use a cluster: a Deployment and a Service,
no hand-written pod status or IP; the lab's kubelet marks each pod ready when its
readiness probe passes, and the endpoint appears then.

Kernel test (root, iproute2, curl, dnslib, the nftables backend): ``svcnet lab up``,
``svcnet scale`` and ``svcnet get`` run as separate processes, curls from the client
pod's namespace. Every wait polls with a deadline.
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

from svcnet.kernel import netns
from svcnet.store import Store

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "tests" / "fixtures" / "demo" / "cluster.yaml"

# as https://kubernetes.io/docs/tutorials/services/connect-applications-service/
# writes it, plus a readiness probe and a client pod to curl from
NGINX = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: my-nginx
spec:
  selector:
    matchLabels:
      run: my-nginx
  replicas: 2
  template:
    metadata:
      labels:
        run: my-nginx
    spec:
      containers:
      - name: my-nginx
        image: nginx
        ports:
        - containerPort: 80
        readinessProbe:
          httpGet:
            path: /
            port: 80
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: my-nginx
  labels:
    run: my-nginx
spec:
  ports:
  - port: 80
    protocol: TCP
  selector:
    run: my-nginx
---
apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  containers:
  - name: client
    image: curlimages/curl
"""

# its probe asks a port nothing listens on: running, never ready
NEVER_READY = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: broken
spec:
  selector:
    matchLabels: {app: broken}
  replicas: 1
  template:
    metadata:
      labels: {app: broken}
    spec:
      containers:
      - name: broken
        image: nginx
        ports: [{containerPort: 80}]
        readinessProbe:
          tcpSocket: {port: 81}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: broken}
spec:
  ports: [{port: 80}]
  selector: {app: broken}
"""


def _why_not() -> str:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "curl"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    import importlib.util

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


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:g} s: {what}")
        time.sleep(0.1)


def curl(lab: str, url: str) -> str:
    """Who answered one curl from the client pod ("" if nobody)."""
    p = subprocess.run(
        ["ip", "netns", "exec", f"svcnet-{lab}-p-default-client", "curl", "-s", "-m", "2", url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return p.stdout.split()[0] if p.returncode == 0 and p.stdout.strip() else ""


def ready_pods(store: Path, app: str) -> dict[str, bool]:
    """Pod name -> ready, for the pods labelled ``app`` (the store as ``get`` sees it)."""
    state = Store(str(store)).load()
    return {
        pod.name: pod.ready
        for pod in state.pods.values()
        if pod.labels.get("run") == app or pod.labels.get("app") == app
    }


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    store = tmp_path / "store.db"
    files = tmp_path / "files"
    files.mkdir()
    (files / "nginx.yaml").write_text(NGINX)
    name = f"kl{os.getpid() % 100000}"
    try:
        p = svcnet(
            store, "lab", "up", str(CLUSTER), str(files), "--name", name, "--backend", "nftables"
        )
        assert p.returncode == 0, p.stderr + p.stdout
        yield name, store
    finally:
        p = svcnet(store, "lab", "down", "--name", name)
        assert p.returncode == 0, p.stderr
        assert netns.listed(f"svcnet-{name}-") == []
    assert Store(str(store)).kubelet() == "store"  # the store reports readiness again


def test_a_deployment_is_served_once_its_probes_pass(lab: tuple[str, Path], tmp_path: Path) -> None:
    name, store = lab
    assert Store(str(store)).kubelet() == "lab"
    pods = wait_for("2 my-nginx pods ready", lambda: (r := ready_pods(store, "my-nginx"))
                    and len(r) == 2 and all(r.values()) and r)  # fmt: skip
    assert all(p.startswith("my-nginx-") and len(p.split("-")) == 4 for p in pods), pods
    got = svcnet(store, "get", "pods", "-l", "run=my-nginx")
    assert got.returncode == 0, got.stderr
    rows = [line.split() for line in got.stdout.splitlines()[1:]]
    assert sorted((r[0], r[1], r[2]) for r in rows) == sorted((p, "1/1", "Running") for p in pods)

    answers = collections.Counter(curl(name, "http://my-nginx") for _ in range(30))
    assert set(answers) == set(pods), answers  # by name, each pod in turn

    # a probe that never passes: Running, not ready, no endpoint, nothing answers
    broken = tmp_path / "broken.yaml"
    broken.write_text(NEVER_READY)
    assert svcnet(store, "apply", "-f", str(broken)).returncode == 0
    wait_for("the broken pod runs", lambda: len(ready_pods(store, "broken")) == 1)
    (bad,) = ready_pods(store, "broken")
    wait_for("the broken pod is reported Running", lambda: "Running" in svcnet(
        store, "get", "pod", bad).stdout)  # fmt: skip
    row = svcnet(store, "get", "pod", bad).stdout.splitlines()[1].split()
    assert row[1:3] == ["0/1", "Running"], row
    assert ready_pods(store, "broken") == {bad: False}
    assert curl(name, "http://broken") == ""

    # scale to 5, then 1; a rollout restart replaces the pod: each served once ready
    def scaled(n: int) -> dict[str, bool]:
        p = svcnet(store, "scale", "deployment/my-nginx", "--replicas", str(n))
        assert p.returncode == 0, p.stderr

        def done() -> dict[str, bool] | None:
            r = ready_pods(store, "my-nginx")
            return r if len(r) == n and all(r.values()) else None

        return wait_for(f"{n} my-nginx pods, all ready", done)  # type: ignore[no-any-return]

    def all_answer(want: set[str]) -> None:
        seen: set[str] = set()

        def more() -> bool:
            seen.update(curl(name, "http://my-nginx") for _ in range(10))
            seen.discard("")
            return want <= seen

        wait_for(f"curl by name reaches each of {sorted(want)}", more)
        assert seen <= want, seen  # and nothing else (no pod scaled away)

    five = scaled(5)
    assert set(pods) <= set(five)
    all_answer(set(five))
    (one,) = scaled(1)
    wait_for("the scaled-away pods' namespaces go", lambda: all(
        not netns.exists(f"svcnet-{name}-p-default-{p}") for p in five if p != one))  # fmt: skip
    all_answer({one})
    p = svcnet(store, "rollout", "restart", "deployment/my-nginx")
    assert p.returncode == 0, p.stderr
    (fresh,) = wait_for("the restarted pod, ready", lambda: (r := ready_pods(store, "my-nginx"))
                        and len(r) == 1 and one not in r and all(r.values()) and r)  # fmt: skip
    all_answer({fresh})
    p = svcnet(store, "rollout", "status", "deployment/my-nginx")
    assert p.returncode == 0 and "successfully rolled out" in p.stdout, p.stdout + p.stderr
