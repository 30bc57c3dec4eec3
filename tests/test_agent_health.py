"""svcnet.agent.health: the agent's health, health-check node ports, /healthz and /livez.

Pure parts (NodeHealth on a fake clock, health_checks from a state, parse_address)
run anywhere. Everything that binds a socket is a kernel test: it binds inside a
fresh ``svcnet-th-*`` network namespace, and the HTTP client (``http.client``) runs
on a thread that entered that namespace; what listens there is read back from the
kernel with ``ss -N``.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from svcnet import manifests
from svcnet.agent.health import (
    AddressError,
    HealthCheck,
    HealthCheckPorts,
    HealthCheckTracker,
    HTTPEndpoint,
    NodeHealth,
    health_checks,
    health_routes,
    parse_address,
)
from svcnet.kernel import netns, setns
from svcnet.model import Kind, ObjectKey
from svcnet.plan.types import ServiceRef
from svcnet.state import Apply, ClusterState, Delete

PREFIX = "svcnet-th-"
PROXY_NAME = "service.kubernetes.io/service-proxy-name"
T = TypeVar("T")


class FakeTime:
    """A clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_health(timeout: float = 60.0) -> tuple[NodeHealth, FakeTime, FakeTime]:
    mono, wall = FakeTime(1000.0), FakeTime(1_700_000_000.0)
    return NodeHealth(timeout, monotonic=mono, clock=wall), mono, wall


# -- NodeHealth (pure) -----------------------------------------------------------------


def test_healthy_at_start_and_while_a_change_waits_less_than_the_timeout() -> None:
    health, mono, _ = make_health(60.0)
    assert health.healthy
    assert health.healthz()[0] == 200 and health.livez()[0] == 200
    health.queued()
    mono.now += 59.9
    assert health.healthy and health.pending_for == pytest.approx(59.9)
    assert health.healthz()[0] == 200


def test_unhealthy_when_the_oldest_queued_change_is_older_than_the_timeout() -> None:
    health, mono, wall = make_health(60.0)
    health.synced()
    synced_at = wall.now
    health.queued()
    mono.now += 30
    health.queued()  # a later change does not move the oldest one
    mono.now += 30
    wall.now += 60
    assert not health.healthy
    code, body = health.healthz()
    assert code == 503
    assert body == {
        "lastUpdated": "2023-11-14T22:13:20.000000Z",  # the last sync, not now
        "currentTime": "2023-11-14T22:14:20.000000Z",
        "nodeEligible": True,
    }
    assert synced_at == 1_700_000_000.0
    assert health.livez() == (503, {k: body[k] for k in ("lastUpdated", "currentTime")})
    health.synced()
    assert health.healthy and health.pending_for is None
    code, body = health.healthz()
    assert code == 200 and body["lastUpdated"] == body["currentTime"]


def test_a_first_sync_that_never_succeeds_turns_unhealthy() -> None:
    health, mono, _ = make_health(10.0)
    health.queued()
    mono.now += 10.0
    code, body = health.healthz()
    assert code == 503 and body["lastUpdated"] is None and health.last_updated is None


def test_node_not_eligible_fails_healthz_but_not_livez() -> None:
    health, _, _ = make_health()
    health.set_node_eligible(False)
    code, body = health.healthz()
    assert code == 503 and body["nodeEligible"] is False
    assert health.healthy  # the proxy itself is fine
    code, body = health.livez()
    assert code == 200 and "nodeEligible" not in body
    health.set_node_eligible(True)
    assert health.healthz()[0] == 200


def test_health_routes_answer_json_and_report_each_request() -> None:
    health, _, _ = make_health()
    seen: list[tuple[str, int]] = []
    routes = health_routes(health, on_request=lambda path, code: seen.append((path, code)))
    assert sorted(routes) == ["/healthz", "/livez"]
    health.set_node_eligible(False)
    code, ctype, body = routes["/healthz"]()
    assert (code, ctype) == (503, "application/json")
    assert json.loads(body)["nodeEligible"] is False
    assert routes["/livez"]()[0] == 200
    assert seen == [("/healthz", 503), ("/livez", 200)]


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout"):
        NodeHealth(0)


# -- parse_address (pure) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0:10256", ("0.0.0.0", 10256)),
        ("[::]:10256", ("::", 10256)),
        (":10256", ("", 10256)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[fd00::1]:9100", ("fd00::1", 9100)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("10256", "no port"),
        ("::1:10256", "brackets"),
        ("[::1:10256", "unclosed"),
        ("[10.0.0.1]:80", "IPv6"),
        ("localhost:80", "not an IP address"),
        ("0.0.0.0:99999", "0-65535"),
        ("0.0.0.0:http", "0-65535"),
    ],
)
def test_parse_address_names_the_option_and_value(text: str, why: str) -> None:
    with pytest.raises(AddressError, match=why) as info:
        parse_address(text, what="--healthz-bind-address")
    assert str(info.value).startswith(f"--healthz-bind-address {text!r}")


# -- health_checks (pure) --------------------------------------------------------------


def _pod(name: str, node: str, ip: str, *, ready: bool = True, terminating: bool = False) -> str:
    deletion = ", deletionTimestamp: '2026-01-01T00:00:00Z'" if terminating else ""
    status = "True" if ready else "False"
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, labels: {{app: {name.split("-")[0]}}}{deletion}}}
spec: {{nodeName: {node}, containers: [{{name: c, ports: [{{containerPort: 8080}}]}}]}}
status: {{podIP: {ip}, conditions: [{{type: Ready, status: "{status}"}}]}}
"""


def _lb(name: str, policy: str, hc: int | None, *, ports: int = 1, extra: str = "") -> str:
    hc_line = f", healthCheckNodePort: {hc}" if hc else ""
    port_list = ", ".join(f"{{name: p{i}, port: {80 + i}, targetPort: 8080}}" for i in range(ports))
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default{extra}}}
spec: {{type: LoadBalancer, selector: {{app: {name}}}, externalTrafficPolicy: {policy}{hc_line},
        ports: [{port_list}]}}
"""


NODES = """
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
kind: Node
metadata: {name: node-c}
spec: {podCIDR: 10.244.3.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.56.13}]}
"""


@pytest.fixture(scope="module")
def cluster() -> ClusterState:
    docs = [
        NODES,
        # web: Local, two ports (a pod counts once), pods on both nodes
        _lb("web", "Local", 32200, ports=2),
        _pod("web-1", "node-a", "10.244.1.10"),
        _pod("web-2", "node-a", "10.244.1.11"),
        _pod("web-3", "node-a", "10.244.1.12", terminating=True),  # serving, terminating
        _pod("web-4", "node-a", "10.244.1.13", ready=False),
        _pod("web-5", "node-b", "10.244.2.10"),
        # drain: Local, its only local pod on node-b is terminating
        _lb("drain", "Local", 32100),
        _pod("drain-1", "node-b", "10.244.2.20", terminating=True),
        _pod("drain-2", "node-a", "10.244.1.20"),
        # api: Cluster policy: no health check
        _lb("api", "Cluster", None),
        _pod("api-1", "node-a", "10.244.1.30"),
        # other: Local but served by another proxy
        _lb(
            "other", "Local", 32300, extra=", labels: {service.kubernetes.io/service-proxy-name: x}"
        ),
        _pod("other-1", "node-a", "10.244.1.40"),
    ]
    objs = manifests.load("\n---\n".join(d.strip() for d in docs))
    return ClusterState.empty().step(Apply(tuple(objs)))


def test_cluster_fixture_holds_what_the_counts_rely_on(cluster: ClusterState) -> None:
    eps = {e.pod: e for es in cluster.service_endpoints("default", "web").values() for e in es}
    assert eps["web-3"].serving and eps["web-3"].terminating and not eps["web-3"].ready
    assert not eps["web-4"].ready and not eps["web-4"].terminating
    assert cluster.services["default", "api"].health_check_node_port is None
    assert not cluster.services["default", "other"].proxied


def test_health_checks_count_local_ready_endpoints(cluster: ClusterState) -> None:
    web, drain = ServiceRef("default", "web"), ServiceRef("default", "drain")
    assert health_checks(cluster, "node-a") == (
        HealthCheck(drain, 32100, 1),
        HealthCheck(web, 32200, 2),  # web-1, web-2; not the terminating nor the unready
    )
    assert health_checks(cluster, "node-b") == (
        HealthCheck(drain, 32100, 0),  # only a terminating local endpoint
        HealthCheck(web, 32200, 1),
    )
    assert health_checks(cluster, "node-c") == (
        HealthCheck(drain, 32100, 0),
        HealthCheck(web, 32200, 0),
    )


def test_health_checks_follow_the_state(cluster: ClusterState) -> None:
    objs = manifests.load(_pod("web-4", "node-a", "10.244.1.13").strip())  # now ready
    state = cluster.step(Apply(tuple(objs)))
    counts = {c.ref.name: c.local_endpoints for c in health_checks(state, "node-a")}
    assert counts == {"drain": 1, "web": 3}


def test_tracker_equals_health_checks_from_state_to_state(cluster: ClusterState) -> None:
    track = HealthCheckTracker("node-a")
    assert track(cluster) == health_checks(cluster, "node-a")
    steps: list[Apply | Delete] = [
        Apply(tuple(manifests.load(_pod("web-4", "node-a", "10.244.1.13").strip()))),
        Apply(tuple(manifests.load(_pod("web-6", "node-a", "10.244.1.14").strip()))),
        Delete((ObjectKey(Kind.POD, "default", "web-1"),)),
        Apply(tuple(manifests.load(_lb("api", "Local", 32050).strip()))),  # gains a check
        Apply(tuple(manifests.load(_lb("drain", "Cluster", None).strip()))),  # loses it
        Delete((ObjectKey(Kind.SERVICE, "default", "web"),)),
    ]
    state = cluster
    for event in steps:
        state = state.step(event)
        assert track(state) == health_checks(state, "node-a"), event
    assert [c.ref.name for c in track(state)] == ["api"]
    assert track.full_recounts == 1  # each step recounted only what changed
    fresh = ClusterState.empty().step(Apply(tuple(manifests.load(NODES))))
    assert track(fresh) == () and track.full_recounts == 2  # not a descendant: all


# -- kernel: sockets in a svcnet- namespace, a real HTTP client inside it --------------


@pytest.fixture
def ns() -> Iterator[str]:
    with netns.scratch(PREFIX) as name:
        yield name


def inside(name: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` on a thread that entered namespace ``name``; its result or error."""
    out: list[T] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            setns.enter(name)
            out.append(fn())
        except BaseException as e:  # handed to the caller
            err.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    if err:
        raise err[0]
    assert out, "the client thread did not finish in 30 s"
    return out[0]


def get(
    name: str, port: int, path: str = "/", host: str = "127.0.0.1"
) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` from ``host:port`` inside namespace ``name`` (http.client)."""

    def fetch() -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    return inside(name, fetch)


def head(name: str, port: int) -> tuple[int, str | None]:
    """HEAD / inside namespace ``name``: the status and the weight header (no body)."""

    def fetch() -> tuple[int, str | None]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("HEAD", "/")
            resp = conn.getresponse()
            assert resp.read() == b""
            return resp.status, resp.getheader("X-Load-Balancing-Endpoint-Weight")
        finally:
            conn.close()

    return inside(name, fetch)


def listening(name: str) -> set[int]:
    """TCP ports listening in namespace ``name``, read from the kernel (``ss -N``)."""
    out = subprocess.run(
        ["ss", "-N", name, "-Hltn"], capture_output=True, text=True, check=True
    ).stdout
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}


def check(name: str, port: int, count: int) -> HealthCheck:
    return HealthCheck(ServiceRef("default", name), port, count)


@pytest.mark.kernel
def test_health_check_ports_open_answer_and_close(ns: str) -> None:
    health, mono, _ = make_health(60.0)
    ports = HealthCheckPorts(ns, health)
    try:
        ports.update([check("web", 32200, 2), check("drain", 32100, 0)])
        assert sorted(ports.ports) == [32100, 32200] and ports.failed == {}
        assert {32100, 32200} <= listening(ns)

        status, headers, body = get(ns, 32200, "/any/path?x=1")
        assert status == 200
        assert headers["Content-Type"] == "application/json"
        assert headers["X-Load-Balancing-Endpoint-Weight"] == "2"
        assert json.loads(body) == {
            "service": {"namespace": "default", "name": "web"},
            "localEndpoints": 2,
            "serviceProxyHealthy": True,
        }
        # every address of both families
        assert get(ns, 32200, host="::1")[0] == 200
        # a client that connects and says nothing holds up no one
        idle = inside(ns, lambda: socket.create_connection(("127.0.0.1", 32200), timeout=10))
        try:
            assert get(ns, 32200)[0] == 200
            assert head(ns, 32200) == (200, "2")
        finally:
            idle.close()

        status, headers, body = get(ns, 32100)  # no local ready endpoint
        assert status == 503 and headers["X-Load-Balancing-Endpoint-Weight"] == "0"
        assert json.loads(body)["localEndpoints"] == 0

        ports.update([check("web", 32200, 0), check("drain", 32100, 1)])  # recounted
        assert get(ns, 32200)[0] == 503
        assert get(ns, 32100)[0] == 200

        health.queued()  # the agent falls behind: every port says 503
        mono.now += 60
        status, headers, body = get(ns, 32100)
        assert status == 503 and headers["X-Load-Balancing-Endpoint-Weight"] == "1"
        assert json.loads(body) == {
            "service": {"namespace": "default", "name": "drain"},
            "localEndpoints": 1,
            "serviceProxyHealthy": False,
        }
        health.synced()
        assert get(ns, 32100)[0] == 200

        ports.update([check("drain", 32100, 1)])  # web is gone: its port closes
        assert sorted(ports.ports) == [32100]
        with pytest.raises(ConnectionRefusedError):
            get(ns, 32200)
        assert 32200 not in listening(ns)
        assert get(ns, 32100)[0] == 200
    finally:
        ports.close()
    assert not {32100, 32200} & listening(ns)
    with pytest.raises(ConnectionRefusedError):
        get(ns, 32100)


@pytest.mark.kernel
def test_a_port_in_use_is_logged_and_retried(ns: str, caplog: pytest.LogCaptureFixture) -> None:
    health, _, _ = make_health()
    ports = HealthCheckPorts(ns, health, logger=logging.getLogger("test.health"))

    def squat() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("0.0.0.0", 32100))
        s.listen(1)
        return s

    blocker = inside(ns, squat)
    try:
        with caplog.at_level(logging.WARNING, logger="test.health"):
            ports.update([check("web", 32100, 1), check("api", 32101, 1)])
        assert sorted(ports.ports) == [32101]
        assert list(ports.failed) == [32100] and "in use" in ports.failed[32100]
        assert any("32100" in r.getMessage() for r in caplog.records)
        assert get(ns, 32101)[0] == 200
        blocker.close()
        ports.update([check("web", 32100, 1), check("api", 32101, 1)])  # tried again
        assert sorted(ports.ports) == [32100, 32101] and ports.failed == {}
        status, _, body = get(ns, 32100)
        assert status == 200 and json.loads(body)["service"]["name"] == "web"
    finally:
        blocker.close()
        ports.close()


@pytest.mark.kernel
def test_http_endpoint_serves_healthz_and_livez(ns: str) -> None:
    health, mono, _ = make_health(30.0)
    seen: list[tuple[str, int]] = []

    def record(path: str, code: int) -> None:
        seen.append((path, code))

    routes: dict[str, Any] = dict(health_routes(health, record))
    routes["/metrics"] = lambda: (200, "text/plain; version=0.0.4", b"up 1\n")
    server = HTTPEndpoint(ns, ":0", routes)
    server.start()
    try:
        port = server.port
        assert port > 0 and port in listening(ns)
        status, headers, body = get(ns, port, "/healthz")
        assert status == 200 and headers["Content-Type"] == "application/json"
        answer = json.loads(body)
        assert set(answer) == {"lastUpdated", "currentTime", "nodeEligible"}
        assert answer["nodeEligible"] is True
        status, _, body = get(ns, port, "/livez", host="::1")
        assert status == 200 and set(json.loads(body)) == {"lastUpdated", "currentTime"}
        assert get(ns, port, "/metrics")[2] == b"up 1\n"
        assert get(ns, port, "/nope")[0] == 404
        assert get(ns, port, "/healthz/")[0] == 404

        health.set_node_eligible(False)
        assert get(ns, port, "/healthz")[0] == 503
        assert get(ns, port, "/livez")[0] == 200
        health.set_node_eligible(True)
        health.queued()
        mono.now += 31
        assert get(ns, port, "/healthz?verbose")[0] == 503
        assert get(ns, port, "/livez")[0] == 503
        assert seen == [
            ("/healthz", 200),
            ("/livez", 200),
            ("/healthz", 503),
            ("/livez", 200),
            ("/healthz", 503),
            ("/livez", 503),
        ]
    finally:
        server.close()
    assert port not in listening(ns)
    with pytest.raises(ConnectionRefusedError):
        get(ns, port, "/healthz")


@pytest.mark.kernel
def test_http_endpoint_on_a_taken_port_raises_naming_the_address(ns: str) -> None:
    health, _, _ = make_health()
    first = HTTPEndpoint(ns, "127.0.0.1:0", health_routes(health))
    first.start()
    try:
        address = f"127.0.0.1:{first.port}"
        second = HTTPEndpoint(ns, address, health_routes(health))
        with pytest.raises(AddressError, match=f"'{address}' in network namespace {ns}"):
            second.start()
        second.close()
        assert get(ns, first.port, "/livez")[0] == 200
    finally:
        first.close()
    again = HTTPEndpoint(ns, f"127.0.0.1:{first.port}", health_routes(health))
    again.start()  # close freed the port
    try:
        assert again.port == first.port and get(ns, again.port, "/livez")[0] == 200
    finally:
        again.close()
