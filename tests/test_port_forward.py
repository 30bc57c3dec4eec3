"""``svcnet port-forward`` as kubectl's (svcnet.cli.forward).

The resolution tests are pure: TYPE/NAME and ``[LOCAL:]REMOTE`` parsing, kubectl's
service-port to targetPort translation (named ports on the pod's containers), the
choice of one ready pod. The kernel tests run the real command against a real lab
(``svcnet lab up`` bound to a store): curls from this host's 127.0.0.1 through the
forward, all answered by the one pod it chose, two pairs, named ports, the errors
(one line, exit 1), and the command exiting 1 when that pod is deleted.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from svcnet import manifests
from svcnet.cli.forward import (
    PortPair,
    Target,
    choose_pod,
    parse_target,
    split_port,
    translate_ports,
)
from svcnet.errors import NotFoundError, ValidationError
from svcnet.model import ObjectKey, Pod
from svcnet.state import Apply, ClusterState

ROOT = Path(__file__).resolve().parents[1]

CLUSTER = """
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
  ports:
    - {name: http, port: 80, targetPort: http}
    - {name: metrics, port: 9090, targetPort: 9100}
    - {name: echo, port: 53, targetPort: echo, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: lonely, namespace: default}
spec:
  selector: {app: lonely}
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: lonely-1, namespace: default, labels: {app: lonely}}
spec: {nodeName: node-a, containers: [{name: app, ports: [{containerPort: 8080}]}]}
status: {phase: Running, podIP: 10.244.1.30, conditions: [{type: Ready, status: "False"}]}
"""


def web_pod(name: str, node: str, ip: str) -> str:
    return f"""
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, labels: {{app: web}}}}
spec:
  nodeName: {node}
  containers:
    - name: web
      ports:
        - {{name: http, containerPort: 8080}}
        - {{name: metrics, containerPort: 9100}}
        - {{name: echo, containerPort: 8053, protocol: UDP}}
status: {{podIP: {ip}, conditions: [{{type: Ready, status: "True"}}]}}
"""


WEB = (
    web_pod("web-1", "node-a", "10.244.1.10")
    + web_pod("web-2", "node-b", "10.244.2.10")
    + web_pod("web-3", "node-b", "10.244.2.11")
)
STRAY = """
apiVersion: v1
kind: Pod
metadata: {name: stray, namespace: default, labels: {app: stray}}
spec: {nodeName: node-z, containers: [{name: web, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.244.9.10, conditions: [{type: Ready, status: "True"}]}
"""


def state_of(text: str) -> ClusterState:
    return ClusterState.empty().step(Apply(tuple(manifests.load(text, filename="t.yaml"))))


@pytest.fixture(scope="module")
def state() -> ClusterState:
    return state_of(CLUSTER + WEB)


def everywhere(_: Pod) -> bool:
    return True


# -- TYPE/NAME and [LOCAL:]REMOTE --------------------------------------------------------


def test_type_name_as_kubectl_spells_it() -> None:
    assert parse_target("svc/web") == Target("service", "default", "web")
    assert parse_target("service/web", "shop") == Target("service", "shop", "web")
    assert parse_target("svc/default/web", "shop") == Target("service", "default", "web")
    assert parse_target("deploy/web", "x") == Target("deployment", "x", "web")
    assert parse_target("deployments.apps/web") == Target("deployment", "default", "web")
    assert parse_target("pod/web-1") == Target("pod", "default", "web-1")
    assert parse_target("web-1", "x") == Target("pod", "x", "web-1")
    for bad, said in [
        ("job/web", "unknown resource type 'job'"),
        ("svc/", "a name is missing"),
        ("a/b/c/d", "use TYPE/NAME"),
    ]:
        with pytest.raises(ValidationError, match=said):
            parse_target(bad)


def test_port_pairs() -> None:
    assert split_port("8080:80") == (8080, "80")
    assert split_port(":80") == (0, "80")  # a random local port
    assert split_port("0:80") == (0, "80")
    assert split_port("80") == (None, "80")
    assert split_port("8443:https") == (8443, "https")
    for bad, said in [
        ("1:2:3", re.escape("use [LOCAL:]REMOTE")),
        ("8080:", re.escape("use [LOCAL:]REMOTE")),
        ("x:80", "the local port must be 0-65535"),
        ("70000:80", "the local port must be 0-65535"),
        ("8080:0", "the remote port must be 1-65535"),
        ("8080:Bad_Name", "no number and no name"),
    ]:
        with pytest.raises(ValidationError, match=said):
            split_port(bad)


# -- kubectl's translation: service ports to the pod's target ports ---------------------


def test_service_ports_go_to_their_target_ports_on_the_pod(state: ClusterState) -> None:
    web = state.services[("default", "web")]
    pod = state.pods[("default", "web-1")]
    pairs = translate_ports(["80", ":http", "8443:http", "http", "9090", "7000:metrics"], pod, web)
    assert pairs == [
        PortPair(80, 8080, "80"),  # PORT alone: listen on the service port
        PortPair(0, 8080, ":http"),
        PortPair(8443, 8080, "8443:http"),
        PortPair(80, 8080, "http"),  # a port name alone: the service port's number
        PortPair(9090, 9100, "9090"),  # a numeric targetPort
        PortPair(7000, 9100, "7000:metrics"),
    ]
    with pytest.raises(ValidationError, match=re.escape("web: spec.ports: no port 8081")):
        translate_ports(["8081"], pod, web)
    with pytest.raises(ValidationError, match=re.escape("named 'https' (ports: http 80/TCP")):
        translate_ports([":https"], pod, web)
    with pytest.raises(ValidationError, match=re.escape("port 53 (echo) is UDP only")):
        translate_ports(["echo"], pod, web)


def test_a_named_target_port_the_pod_lacks_is_an_error() -> None:
    text = CLUSTER.replace("targetPort: http}", "targetPort: web}") + WEB
    st = state_of(text)
    with pytest.raises(ValidationError, match=r"pod default/web-2: .* named 'web'"):
        translate_ports(["80"], st.pods[("default", "web-2")], st.services[("default", "web")])


def test_pod_ports_by_number_or_container_port_name(state: ClusterState) -> None:
    pod = state.pods[("default", "web-2")]
    assert translate_ports(["http", ":metrics", "5000:8080", "9999"], pod) == [
        PortPair(8080, 8080, "http"),
        PortPair(0, 9100, ":metrics"),
        PortPair(5000, 8080, "5000:8080"),
        PortPair(9999, 9999, "9999"),  # kubectl forwards an undeclared number as it is
    ]
    with pytest.raises(ValidationError, match="no container port named 'nope'"):
        translate_ports(["nope"], pod)
    with pytest.raises(ValidationError, match=re.escape("port 8053 (8053) is UDP only")):
        translate_ports(["8053"], pod)


# -- one pod, chosen when the command starts --------------------------------------------


def test_a_service_picks_one_ready_pod_in_the_lab_oldest_first(state: ClusterState) -> None:
    svc = Target("service", "default", "web")
    created: dict[ObjectKey, float] = {
        state.pods[("default", n)].key: t
        for n, t in [("web-1", 30.0), ("web-2", 10.0), ("web-3", 20.0)]
    }
    pod, service = choose_pod(state, svc, everywhere, created)
    assert (pod.name, service) == ("web-2", state.services[("default", "web")])
    pod, _ = choose_pod(state, svc, lambda p: p.name != "web-2", created)
    assert pod.name == "web-3"
    pod, _ = choose_pod(state, svc, everywhere)  # no creation times: by name
    assert pod.name == "web-1"


def test_kubectls_order_ready_longest_then_fewest_restarts(state: ClusterState) -> None:
    import attrs

    def with_pods(**changes: dict[str, int]) -> ClusterState:
        pods = [attrs.evolve(state.pods[("default", n)], **c) for n, c in changes.items()]
        return state.step(Apply(tuple(pods)))

    svc = Target("service", "default", "web")
    ready_since = with_pods(
        **{"web-1": {"ready_since": 9}, "web-2": {"ready_since": 4}, "web-3": {"ready_since": 0}}
    )
    assert choose_pod(ready_since, svc, everywhere)[0].name == "web-2"  # ready the longest
    restarts = with_pods(**{"web-1": {"restarts": 3}, "web-2": {"restarts": 1}})
    assert choose_pod(restarts, svc, everywhere)[0].name == "web-3"  # fewest restarts
    created = with_pods(**{"web-1": {"created": 7}, "web-2": {"created": 5}})
    assert choose_pod(created, svc, everywhere)[0].name == "web-2"  # oldest (known) first


def test_no_ready_pod_names_each_pod_and_why(state: ClusterState) -> None:
    with pytest.raises(
        ValidationError, match=r"service default/lonely: .*no ready pod \(lonely-1 not ready\)"
    ):
        choose_pod(state, Target("service", "default", "lonely"), everywhere)
    with pytest.raises(ValidationError, match="web-1 not in the lab, web-2 not in the lab"):
        choose_pod(state, Target("service", "default", "web"), lambda p: False)
    pod, _ = choose_pod(state, Target("service", "default", "lonely"), everywhere, need_ready=False)
    assert pod.name == "lonely-1"  # exec takes a pod that is not ready


def test_unknown_objects_and_a_service_without_selector(state: ClusterState) -> None:
    with pytest.raises(NotFoundError, match="service default/ghost not found"):
        choose_pod(state, Target("service", "default", "ghost"), everywhere)
    with pytest.raises(NotFoundError, match="pod shop/web-1 not found"):
        choose_pod(state, Target("pod", "shop", "web-1"), everywhere)
    pending = state_of(
        CLUSTER
        + WEB.replace(
            "status: {podIP: 10.244.2.11,", "status: {phase: Pending, podIP: 10.244.2.11,"
        )
    )
    with pytest.raises(
        ValidationError, match=re.escape("status.phase: the pod is not running (phase Pending)")
    ):
        choose_pod(pending, Target("pod", "default", "web-3"), everywhere)
    bare = state_of(
        "apiVersion: v1\nkind: Service\nmetadata: {name: ext}\n"
        "spec: {clusterIP: 10.96.0.30, ports: [{port: 80}]}\n"
    )
    with pytest.raises(ValidationError, match=re.escape("spec.selector: none")):
        choose_pod(bare, Target("service", "default", "ext"), everywhere)


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx, ports: [{name: http, containerPort: 8080}]}]
"""


def test_a_deployment_selects_its_pods(state: ClusterState) -> None:
    with_deployment = state_of(CLUSTER + WEB + "---" + DEPLOYMENT)
    target = Target("deployment", "default", "web")
    pod, service = choose_pod(with_deployment, target, lambda p: p.name != "web-1")
    assert (pod.name, service) == ("web-2", None)
    assert translate_ports([":http"], pod, service) == [PortPair(0, 8080, ":http")]
    with pytest.raises(NotFoundError, match="deployment default/api not found"):
        choose_pod(with_deployment, Target("deployment", "default", "api"), everywhere)


# -- the real command against a real lab --------------------------------------------------


def _why_not() -> str:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "curl"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    try:
        from svcnet.backend import load_backend

        load_backend("nftables")
    except Exception as e:  # any import failure means: no nftables backend here
        return f"nftables backend unavailable: {e}"
    return ""


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
    why = _why_not()
    if why:
        pytest.skip(why)
    from svcnet.kernel import netns

    where = tmp_path_factory.mktemp("pf")
    store = where / "store.db"
    files = where / "lab.yaml"
    files.write_text(CLUSTER + WEB)
    (where / "stray.yaml").write_text(STRAY)
    name = f"pf{os.getpid() % 100000}"
    try:
        p = svcnet(store, "lab", "up", str(files), "--name", name, "--backend", "nftables")
        assert p.returncode == 0, p.stderr + p.stdout
        p = svcnet(store, "apply", "-f", str(where / "stray.yaml"))
        assert p.returncode == 0, p.stderr + p.stdout
        yield name, store
    finally:
        p = svcnet(store, "lab", "down", "--name", name)
        assert p.returncode == 0, p.stderr
        assert netns.listed(f"svcnet-{name}-") == []


class Forward:
    """A running ``svcnet port-forward``: its ``Forwarding from`` lines, stopped
    (by PID) when the test ends."""

    def __init__(self, store: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "svcnet", "--store", str(store), "port-forward", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        for stream, sink in (
            (self.proc.stdout, self.lines.put),
            (self.proc.stderr, self.err.append),
        ):
            threading.Thread(target=self._read, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _read(stream: IO[str], sink: Callable[[str], Any]) -> None:
        for line in stream:
            sink(line.rstrip("\n"))

    def forwarding(self, count: int, timeout: float = 60.0) -> list[tuple[int, int]]:
        """The first ``count`` ``Forwarding from 127.0.0.1:LOCAL -> REMOTE`` lines."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no Forwarding lines within {timeout:g} s: {self.err}")
            if line.startswith("Forwarding from 127.0.0.1:"):
                local, _, remote = line.removeprefix("Forwarding from 127.0.0.1:").partition(" -> ")
                out.append((int(local), int(remote.split()[0].rsplit(":", 1)[-1])))
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def curl(port: int) -> str:
    """The pod that answered one curl to 127.0.0.1:``port`` ("" if none)."""
    p = subprocess.run(
        ["curl", "-s", "-m", "5", f"http://127.0.0.1:{port}/"], capture_output=True, text=True
    )
    return p.stdout.split()[0] if p.returncode == 0 and p.stdout.strip() else ""


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:g} s: {what}")
        time.sleep(0.05)
    return value


@pytest.mark.kernel
def test_pods_by_name_and_named_ports(lab: tuple[str, Path]) -> None:
    name, store = lab
    fw = Forward(store, "--name", name, "-n", "default", "pod/web-2", ":http", ":metrics")
    try:
        (http, to_http), (metrics, to_metrics) = fw.forwarding(2)
        assert (to_http, to_metrics) == (8080, 9100)
        assert {curl(http), curl(metrics)} == {"web-2"}
    finally:
        fw.stop()
    fw = Forward(store, "--name", name, "web-3", ":8080")  # a bare NAME is a pod
    try:
        [(port, _)] = fw.forwarding(1)
        assert curl(port) == "web-3"
    finally:
        fw.stop()


@pytest.mark.kernel
def test_the_readme_spelling_keeps_working(lab: tuple[str, Path]) -> None:
    name, store = lab
    fw = Forward(store, "--name", name, "svc/default/web", ":80")
    try:
        [(port, remote)] = fw.forwarding(1)
        assert remote == 8080
        assert curl(port) in {"web-1", "web-2", "web-3"}
    finally:
        fw.stop()


@pytest.mark.kernel
def test_errors_are_one_line_and_exit_1(lab: tuple[str, Path]) -> None:
    name, store = lab
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        port = taken.getsockname()[1]
        cases = [
            (["svc/web", f"{port}:80"], f"unable to listen on 127.0.0.1:{port}"),
            (["svc/ghost", "80"], "service default/ghost not found"),
            (["svc/web", ":https"], "no port named 'https'"),
            (["svc/lonely", ":80"], "no ready pod (lonely-1 not ready)"),
            (["pod/stray", ":8080"], f"pod default/stray is not in lab {name}"),
            (["-n", "shop", "svc/web", ":80"], "service shop/web not found"),
        ]
        for args, said in cases:
            p = svcnet(store, "port-forward", "--name", name, *args, timeout=60)
            assert p.returncode == 1, (args, p.stdout, p.stderr)
            assert p.stderr.strip().splitlines() == [p.stderr.strip()], p.stderr  # one line
            assert p.stderr.startswith("error: ") and said in p.stderr, (said, p.stderr)
            assert "Forwarding" not in p.stdout
        p = svcnet(store, "-n", "shop", "port-forward", "--name", name, "svc/web", ":80")
        assert p.returncode == 1 and "service shop/web not found" in p.stderr, p.stderr
    finally:
        taken.close()


@pytest.mark.kernel
def test_a_service_forwards_to_one_pod_until_it_is_deleted(lab: tuple[str, Path]) -> None:
    name, store = lab
    fw = Forward(store, "--name", name, "svc/web", ":80", ":metrics")
    try:
        (http, to_http), (metrics, to_metrics) = fw.forwarding(2)
        assert (to_http, to_metrics) == (8080, 9100)
        answers = [curl(http) for _ in range(20)]
        chosen = answers[0]
        assert chosen in {"web-1", "web-2", "web-3"}
        assert answers == [chosen] * 20  # every connection to the one pod, not spread
        assert curl(metrics) == chosen

        p = svcnet(store, "delete", "pod", chosen)
        assert p.returncode == 0, p.stderr
        wait_for("port-forward exits", lambda: fw.proc.poll() is not None)
        assert fw.proc.returncode == 1
        wait_for("its stderr is read", lambda: any("lost connection" in e for e in fw.err), 10)
        said = [e for e in fw.err if e.startswith("error: ")]
        assert said and f"lost connection to pod default/{chosen}" in said[-1], fw.err
        assert not any("Traceback" in e for e in fw.err), fw.err
    finally:
        fw.stop()


@pytest.mark.kernel
def test_an_address_goes_through_the_labs_rules_from_outside(lab: tuple[str, Path]) -> None:
    name, store = lab
    fw = Forward(store, "--name", name, "10.96.0.10", ":80")  # web's ClusterIP, from ext
    try:
        [(port, remote)] = fw.forwarding(1)
        assert remote == 80
        answers = {curl(port) for _ in range(12)}
        assert answers <= {"web-1", "web-2", "web-3"} and answers, answers
    finally:
        fw.stop()
    p = svcnet(store, "port-forward", "--name", name, "--from", "node/node-a", "svc/web", ":80")
    assert p.returncode == 1 and "--from applies to an address destination only" in p.stderr


API = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers: [{name: api, image: nginx, ports: [{name: http, containerPort: 8080}]}]
"""


def _api_pods(name: str, store: Path) -> list[str]:
    """The ready ``app: api`` pods in the store whose namespaces the lab has built."""
    from svcnet.kernel import netns
    from svcnet.store import Store

    pods = Store(str(store)).list().state.pods.values()
    return [
        p.name
        for p in pods
        if p.labels.get("app") == "api"
        and p.ready
        and netns.exists(f"svcnet-{name}-p-default-{p.name}")
    ]


@pytest.mark.kernel
def test_a_deployment_forwards_to_one_of_its_pods(lab: tuple[str, Path], tmp_path: Path) -> None:
    from svcnet.store import Store

    name, store = lab
    (tmp_path / "api.yaml").write_text(API)
    p = svcnet(store, "apply", "-f", str(tmp_path / "api.yaml"))
    assert p.returncode == 0, p.stderr
    made = [p for p in Store(str(store)).list().state.pods.values() if p.labels.get("app") == "api"]
    if not made:
        pytest.skip("the store runs no Deployment controller yet: deployment/api made no pod")
    deadline = time.monotonic() + 90
    while len(_api_pods(name, store)) < 2:
        if time.monotonic() > deadline:
            pytest.skip("the lab made no ready pod of deployment/api within 90 s")
        time.sleep(0.1)
    fw = Forward(store, "--name", name, "deployment/api", ":http")
    try:
        [(port, remote)] = fw.forwarding(1)
        assert remote == 8080
        answers = [curl(port) for _ in range(20)]
        assert answers[0] in _api_pods(name, store)
        assert answers == [answers[0]] * 20
        p = svcnet(store, "delete", "pod", answers[0])
        assert p.returncode == 0, p.stderr
        wait_for("port-forward exits", lambda: fw.proc.poll() is not None)
        assert fw.proc.returncode == 1
        wait_for("its stderr is read", lambda: any("lost connection" in e for e in fw.err), 10)
    finally:
        fw.stop()
