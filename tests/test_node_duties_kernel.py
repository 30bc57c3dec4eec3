"""The agent's node duties, end to end, with real packets and real HTTP in a lab.

Kernel tests (root, iproute2, dnslib, nftables). Each test builds a lab from a
store (the follower in this process keeps its namespaces, pods and servers in step
with the store, as ``svcnet lab up`` does) and runs the node agents in this
process with the nftables backend, so that a test can switch a duty off, inject a
sync failure (a backend wrapper that raises: the one fake here, named so in the
tests that use it) and read the agent's own counters. Clients are real: a UDP
socket in the client pod's namespace, HTTP clients (``http.client``) in the
external client's namespace and in the node's. Every wait polls with a deadline.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from svcnet import manifests
from svcnet.kernel import netns
from svcnet.kernel.setns import enter
from svcnet.state import Apply, Delete
from svcnet.store import Store

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "tests" / "fixtures" / "demo" / "cluster.yaml"

BASE = """
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default, labels: {app: client}}
spec: {nodeName: node-a, containers: [{name: client}]}
status: {podIP: 10.244.1.20, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  selector: {app: echo}
  clusterIP: 10.96.0.50
  ports: [{name: echo, port: 53, targetPort: 8053, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: hc, namespace: default}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  healthCheckNodePort: 30900
  selector: {app: hc}
  clusterIP: 10.96.0.51
  loadBalancerIP: 203.0.113.20
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30901}]
"""


def pod(name: str, app: str, node: str, ip: str, *, terminating: bool = False) -> str:
    deletion = ", deletionTimestamp: '2026-12-05T00:00:00Z'" if terminating else ""
    ready = "False" if terminating else "True"
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, labels: {{app: {app}}}{deletion}}}
spec:
  nodeName: {node}
  containers:
    - name: c
      ports: [{{containerPort: 8080}}, {{containerPort: 8053, protocol: UDP}}]
status:
  podIP: {ip}
  conditions: [{{type: Ready, status: "{ready}"}}]
"""


ECHO_1 = pod("echo-1", "echo", "node-a", "10.244.1.50")
ECHO_2 = pod("echo-2", "echo", "node-b", "10.244.2.50")
HC_A = pod("hc-a", "hc", "node-a", "10.244.1.60")
HC_B = pod("hc-b", "hc", "node-b", "10.244.2.60")
NODE_IPS = {"node-a": "192.168.56.11", "node-b": "192.168.56.12"}


def _why_not() -> str:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    import importlib.util

    for module, what in (("dnslib", "the lab's DNS servers"), ("prometheus_client", "/metrics")):
        if importlib.util.find_spec(module) is None:
            return f"needs {module} ({what})"
    try:
        from svcnet.backend import load_backend

        load_backend("nftables")
    except Exception as e:  # any import failure means: no nftables backend here
        return f"nftables backend unavailable: {e}"
    return ""


WHY_NOT = _why_not()
pytestmark = [pytest.mark.kernel, pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "ok")]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:g} s: {what}")
        time.sleep(0.05)


def in_netns(where: str, work: Callable[[], Any]) -> Any:
    """Run ``work`` in a thread that has entered namespace ``where``; its result."""
    out: list[Any] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            enter(where)
            out.append(work())
        except BaseException as e:  # handed to the caller
            err.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(30)
    if err:
        raise err[0]
    assert out, f"no result from {where} within 30 s"
    return out[0]


def http_get(
    where: str, host: str, port: int, path: str = "/"
) -> tuple[int, dict[str, str], bytes]:
    """One real HTTP GET from namespace ``where``: (status, headers, body)."""

    def get() -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(host, port, timeout=3)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    return in_netns(where, get)  # type: ignore[no-any-return]


class Lab:
    """A lab following a store, with in-process nftables agents for its nodes."""

    def __init__(self, name: str, store: Store) -> None:
        self.name = name
        self.store = store
        self.agents: dict[str, Any] = {}
        self.threads: list[threading.Thread] = []
        self.follower: Any = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def ns(self, what: str) -> str:
        return f"svcnet-{self.name}-{what}"

    def change(self, step: Any) -> int:
        with self.store.modify() as session:
            session.save(session.state.step(step))
        return self.store.version()

    def apply(self, *texts: str) -> int:
        objs: list[Any] = []
        for i, text in enumerate(texts):
            objs += manifests.load(text, filename=f"doc{i}")
        return self.change(Apply(tuple(objs)))

    def delete(self, text: str) -> int:
        return self.change(Delete(tuple(o.key for o in manifests.load(text, filename="x"))))

    def start_follower(self) -> None:
        from svcnet.lab.control import Lab as LabControl
        from svcnet.lab.follow import Follower

        LabControl(self.name).up(self.store.list().state)
        self.follower = Follower(self.name, self.store.path, None)
        self.follower.start()

        def follow() -> None:
            while not self._stop.is_set():
                try:
                    if not self.follower.poll():
                        time.sleep(0.02)
                except Exception:  # a failed round is retried by the next poll
                    time.sleep(0.1)

        self._poller = threading.Thread(target=follow, daemon=True)
        self._poller.start()

    def in_step(self, version: int) -> bool:
        return bool(self.follower.version >= version)

    def start_agent(self, node: str, backend: Any = None, **options: Any) -> Any:
        from svcnet.agent import Agent, StoreSource
        from svcnet.backend import load_backend

        if backend is None:
            backend = load_backend("nftables")(node, netns=self.ns(f"n-{node}"))
        options.setdefault("healthz_address", "0.0.0.0:10256")
        options.setdefault("metrics_address", "127.0.0.1:10249")
        agent = Agent(StoreSource(self.store), node, backend, run_dir=None, **options)
        t = threading.Thread(target=agent.run, daemon=True)
        t.start()
        self.agents[node] = agent
        self.threads.append(t)
        version = self.store.version()
        assert agent.wait_synced(version, 60), f"agent for {node}: not synced: {agent.error}"
        return agent

    def synced(self, version: int) -> None:
        """Every agent and the follower reflect store ``version``."""
        wait_for(f"the lab at version {version}", lambda: self.in_step(version))
        for node, agent in self.agents.items():
            assert agent.wait_synced(version, 30), f"agent {node} at {agent.version}: {agent.error}"

    def close(self) -> None:
        from svcnet.lab.control import down

        for agent in self.agents.values():
            agent.stop()
        for t in self.threads:
            t.join(30)
        for agent in self.agents.values():
            agent.backend.cleanup()
            agent.backend.close()
        self._stop.set()
        if self._poller is not None:
            self._poller.join(10)
        down(self.name)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    name = f"nd{os.getpid() % 100000}"
    store = Store(str(tmp_path / "store.db"))
    the_lab = Lab(name, store)
    the_lab.apply(CLUSTER.read_text(), BASE)
    try:
        the_lab.start_follower()
        yield the_lab
    finally:
        the_lab.close()
    assert netns.listed(f"svcnet-{name}-") == []


# -- UDP conntrack cleanup ------------------------------------------------------------


class UdpClient:
    """One connected UDP socket in the client pod, sending every 50 ms and noting
    who answered each datagram (None: no answer within 50 ms)."""

    def __init__(self, where: str, address: tuple[str, int]) -> None:
        self.where = where
        self.address = address
        self.answers: list[tuple[float, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        enter(self.where)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(self.address)  # one source port: one conntrack flow all along
        s.settimeout(0.05)
        try:
            while not self._stop.is_set():
                sent = time.monotonic()
                who: str | None = None
                try:
                    s.send(b"ping\n")
                    who = s.recv(512).decode().split()[0]
                except (TimeoutError, ConnectionRefusedError, OSError):
                    who = None
                self.answers.append((sent, who))
                time.sleep(max(0.0, 0.05 - (time.monotonic() - sent)))
        finally:
            s.close()

    def since(self, t: float) -> list[str | None]:
        return [who for sent, who in list(self.answers) if sent >= t]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def flows(where: str, ip: str) -> int:
    """UDP conntrack flows in namespace ``where`` whose original destination is ``ip``."""
    from pyroute2 import Conntrack

    def count() -> int:
        with Conntrack() as ct:
            return sum(
                1
                for entry in ct.dump_entries()
                if entry.tuple_orig.daddr == ip and entry.tuple_orig.proto == socket.IPPROTO_UDP
            )

    return in_netns(where, count)  # type: ignore[no-any-return]


@pytest.mark.parametrize("cleanup", [True, False], ids=["cleanup", "no-cleanup"])
def test_udp_client_follows_its_pod_when_replaced(lab: Lab, cleanup: bool) -> None:
    version = lab.apply(ECHO_1)
    lab.synced(version)
    agent = lab.start_agent("node-a", conntrack_cleanup=cleanup)
    lab.start_agent("node-b", conntrack_cleanup=cleanup)
    client = UdpClient(lab.ns("p-default-client"), ("10.96.0.50", 53))
    try:
        wait_for("echo-1 answers the client", lambda: "echo-1" in client.since(0))
        assert flows(lab.ns("n-node-a"), "10.96.0.50") == 1
        # a rolling replacement: the new pod first, then the old one goes
        lab.synced(lab.apply(ECHO_2))
        version = lab.delete(ECHO_1)
        lab.synced(version)
        replaced = time.monotonic()
        if cleanup:
            wait_for("echo-2 answers the same socket", lambda: "echo-2" in client.since(replaced))
            assert agent.duties.conntrack_deleted == 1
            later = time.monotonic()
            wait_for("20 more answers", lambda: len(client.since(later)) >= 20)
            assert set(client.since(later)) == {"echo-2"}
        else:
            # the flow still points at echo-1, whose namespace is gone: the client's
            # datagrams keep following the stale entry (its timeout restarts with each)
            wait_for("3 s of datagrams", lambda: len(client.since(replaced)) >= 60, timeout=60)
            assert "echo-2" not in client.since(replaced)
            assert agent.duties.conntrack_deleted == 0
            assert flows(lab.ns("n-node-a"), "10.96.0.50") == 1
    finally:
        client.stop()


# -- health-check node ports -----------------------------------------------------------


def health_check(lab: Lab, node: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    status, headers, body = http_get(lab.ns("ext"), NODE_IPS[node], 30900)
    return status, headers, json.loads(body)


def test_health_check_port_follows_local_ready_endpoints(lab: Lab) -> None:
    lab.synced(lab.apply(HC_A, HC_B))
    lab.start_agent("node-a")
    lab.start_agent("node-b")
    for node in ("node-a", "node-b"):
        status, headers, body = health_check(lab, node)
        assert status == 200, (node, body)
        assert body == {
            "service": {"namespace": "default", "name": "hc"},
            "localEndpoints": 1,
            "serviceProxyHealthy": True,
        }
        assert headers["x-load-balancing-endpoint-weight"] == "1"

    lab.synced(lab.delete(HC_A))
    status, headers, body = health_check(lab, "node-a")
    assert (status, body["localEndpoints"], headers["x-load-balancing-endpoint-weight"]) == (
        503,
        0,
        "0",
    )
    assert health_check(lab, "node-b")[0] == 200

    # a terminating local endpoint does not count
    lab.synced(lab.apply(pod("hc-a", "hc", "node-a", "10.244.1.60", terminating=True)))
    status, _, body = health_check(lab, "node-a")
    assert (status, body["localEndpoints"]) == (503, 0)

    lab.synced(lab.apply(HC_A))
    status, _, body = health_check(lab, "node-a")
    assert (status, body["localEndpoints"]) == (200, 1)

    # the service goes: its port closes
    lab.synced(lab.delete(BASE.split("---")[2]))
    with pytest.raises(ConnectionRefusedError):
        health_check(lab, "node-a")


# -- /healthz, /livez and /metrics -----------------------------------------------------


def failing(cls: type[Any]) -> type[Any]:
    """``cls`` whose next ``fail`` installs raise (the injected fault)."""
    from svcnet.errors import BackendError, BackendErrorKind

    class Failing(cls):  # type: ignore[misc, valid-type]
        fail = 0

        def _maybe_fail(self) -> None:
            if self.fail:
                self.fail -= 1
                raise BackendError(BackendErrorKind.REFUSED, "injected sync failure")

        def sync(self, plan: Any) -> None:
            self._maybe_fail()
            super().sync(plan)

        def apply(self, changes: Any) -> None:
            self._maybe_fail()
            super().apply(changes)

    return Failing


def healthz(lab: Lab, path: str = "/healthz") -> int:
    return http_get(lab.ns("n-node-a"), "127.0.0.1", 10256, path)[0]


def test_healthz_turns_503_while_syncs_fail_injected(lab: Lab) -> None:
    from svcnet.backend import load_backend

    backend = failing(load_backend("nftables"))("node-a", netns=lab.ns("n-node-a"))
    agent = lab.start_agent("node-a", backend=backend, sync_period=60, health_timeout=1.0)
    assert healthz(lab) == 200 and healthz(lab, "/livez") == 200
    _, _, body = http_get(lab.ns("n-node-a"), "127.0.0.1", 10256, "/healthz")
    assert json.loads(body)["nodeEligible"] is True

    backend.fail = 1_000_000  # every sync fails from now on
    lab.apply(HC_A)
    wait_for("/healthz answers 503", lambda: healthz(lab) == 503)
    assert healthz(lab, "/livez") == 503
    assert agent.failed_syncs >= 1
    backend.fail = 0
    wait_for("/healthz answers 200 again", lambda: healthz(lab) == 200)
    assert agent.error is None


def scrape(lab: Lab) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The node-a agent's /metrics over HTTP, parsed by prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    status, headers, body = http_get(lab.ns("n-node-a"), "127.0.0.1", 10249, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def delta(before: dict[Any, float], after: dict[Any, float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_metrics_count_a_scripted_sequence_with_an_injected_failure(lab: Lab) -> None:
    from svcnet.backend import load_backend

    lab.synced(lab.apply(ECHO_1))
    backend = failing(load_backend("nftables"))("node-a", netns=lab.ns("n-node-a"))
    agent = lab.start_agent("node-a", backend=backend, sync_period=600)
    client = UdpClient(lab.ns("p-default-client"), ("10.96.0.50", 53))
    try:
        wait_for("echo-1 answers the client", lambda: "echo-1" in client.since(0))
        before = scrape(lab)

        # 3 endpoint changes (a pod comes, becomes a second one's peer, goes)
        lab.synced(lab.apply(HC_A))
        lab.synced(lab.apply(HC_B))
        lab.synced(lab.delete(HC_B))
        # 1 injected sync failure: the change waits, the retry installs it
        backend.fail = 1
        lab.synced(lab.delete(HC_A))
        # 1 damaged table: the next incremental install finds it and installs in full
        subprocess.run(
            ["ip", "netns", "exec", lab.ns("n-node-a"), "nft", "flush", "table", "ip", "svcnet"],
            check=True,
        )
        lab.synced(lab.apply(HC_A))
        # 1 UDP endpoint replacement with a live flow: one stale flow deleted
        lab.synced(lab.apply(ECHO_2))
        lab.synced(lab.delete(ECHO_1))
        wait_for("echo-2 answers", lambda: "echo-2" in client.since(time.monotonic() - 0.5))
        after = scrape(lab)
    finally:
        client.stop()

    assert delta(before, after, "kubeproxy_sync_proxy_rules_endpoint_changes_total") == 7
    assert delta(before, after, "kubeproxy_sync_proxy_rules_service_changes_total") == 0
    assert delta(before, after, "kubeproxy_sync_proxy_rules_nftables_sync_failures_total") == 1
    assert delta(before, after, "svcnet_drift_resyncs_total") == 1
    assert delta(before, after, "kubeproxy_conntrack_reconciler_deleted_entries_total") == 1
    # every change's network programming latency was measured once
    assert delta(before, after, "kubeproxy_network_programming_duration_seconds_count") == 7
    assert agent.failed_syncs == 1
