"""Service DNS in the lab: a DNS server per node and every pod's resolv.conf.

The pure parts run anywhere; the kernel tests build small labs (root, iproute2,
dnslib) and resolve from inside pods with glibc (``getent``, ``curl``) and with a
dnslib client run in the pod's namespace (no ``dig`` needed).
"""

from __future__ import annotations

import glob
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from svcnet import manifests
from svcnet.kernel import netns
from svcnet.lab import topology
from svcnet.lab.control import resolv_conf
from svcnet.model import Kind, ObjectKey
from svcnet.state import Apply, ClusterState, Delete

SHARED_EXAMPLES = str(
    __import__("pathlib").Path(__file__).resolve().parents[1] / "svcnet" / "scenarios" / "examples"
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "tests", "fixtures", "demo")

# a second namespace: service data/cache (a named port) with one pod on node-b
DATA = """
apiVersion: v1
kind: Pod
metadata: {name: cache-0, namespace: data, labels: {app: cache}}
spec:
  nodeName: node-b
  containers: [{name: c, ports: [{name: redis, containerPort: 6379}]}]
status: {podIP: 10.244.2.30, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Service
metadata: {name: cache, namespace: data}
spec:
  selector: {app: cache}
  clusterIP: 10.96.5.5
  ports: [{name: redis, port: 6379, targetPort: redis}]
"""

EXTRA = """
apiVersion: v1
kind: Service
metadata: {name: late, namespace: default}
spec:
  selector: {app: web}
  clusterIP: 10.96.7.7
  ports: [{name: http, port: 80, targetPort: http}]
"""


def lab_state(*extra: str) -> ClusterState:
    objects = []
    for path in sorted(glob.glob(os.path.join(DEMO, "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            objects += manifests.load(f.read(), filename=path)
    for i, text in enumerate((DATA, *extra)):
        objects += manifests.load(text, filename=f"extra-{i}")
    return ClusterState.empty().step(Apply(objects))


# -- pure --------------------------------------------------------------------------------


def test_resolv_conf_is_cluster_first() -> None:
    topo = topology.build("x1", lab_state())
    pod, node = topo.pod("data/cache-0"), topo.node("node-b")
    assert pod is not None and node is not None
    assert resolv_conf(pod, node, "cluster.local") == (
        "nameserver 192.168.56.12\n"
        "search data.svc.cluster.local svc.cluster.local cluster.local\n"
        "options ndots:5\n"
    )


@pytest.mark.parametrize("name", ["default", "svcnet", "../svcnet-x", "svcnet-a/../../etc"])
def test_etc_files_are_only_written_for_svcnet_namespaces(name: str) -> None:
    with pytest.raises(netns.LabError):
        netns.write_etc(name, "resolv.conf", "nameserver 127.0.0.1\n")
    with pytest.raises(netns.LabError):
        netns.remove_etc(name)


def test_etc_files_are_only_resolv_conf() -> None:
    with pytest.raises(netns.LabError, match="refusing"):
        netns.write_etc("svcnet-x1-p-default-a", "hosts", "127.0.0.1 a\n")


def test_state_file_source_reloads_on_change(tmp_path: object) -> None:
    pytest.importorskip("dnslib")
    from svcnet.dns.server import DnsServer, StateFile

    path = os.path.join(str(tmp_path), "state.pickle")
    first, second = lab_state(), lab_state(EXTRA)
    with open(path, "wb") as f:
        pickle.dump(first, f)
    source = StateFile(path)
    server = DnsServer(source, incremental=False)
    assert source() is source()  # unchanged file: the same object (the zone stays cached)
    assert server.zone().lookup("late.default.svc.cluster.local", "A").rcode == "NXDOMAIN"
    with open(path + ".tmp", "wb") as f:
        pickle.dump(second, f)
    os.replace(path + ".tmp", path)
    assert server.zone().lookup("late.default.svc.cluster.local", "A").records == ("10.96.7.7",)
    with open(path, "wb") as f:
        f.write(b"not a pickle")
    source.invalidate()
    assert source() == second  # an unreadable file keeps the last good state


# -- kernel ------------------------------------------------------------------------------

WHY_NOT = (
    "needs root"
    if os.geteuid() != 0
    else "needs iproute2 (ip)"
    if shutil.which("ip") is None
    else "needs getent"
    if shutil.which("getent") is None
    else ""
)
try:
    import dnslib  # noqa: F401
except ImportError:
    WHY_NOT = WHY_NOT or "needs dnslib (pip install 'svcnet[dns]')"

kernel = pytest.mark.kernel
needs_kernel = pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "ok")


def dns_pids(lab: str) -> list[int]:
    """Running DNS servers of lab ``lab`` (their command line names its state file)."""
    out = subprocess.run(
        ["pgrep", "-f", "svcnet.dns.server"], capture_output=True, text=True
    ).stdout
    mark = f"/run/svcnet/{lab}/state.pickle".encode()
    pids = []
    for p in out.split():
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if mark in f.read().split(b"\0"):
                    pids.append(int(p))
        except OSError:
            pass
    return pids


def etc_left(lab: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir("/etc/netns") if n.startswith(f"svcnet-{lab}-"))
    except FileNotFoundError:
        return []


def in_pod(lab: object, pod: str, *args: str) -> subprocess.CompletedProcess[str]:
    where = lab.topo.pod(pod)  # type: ignore[attr-defined]
    return subprocess.run(
        ["ip", "netns", "exec", where.netns, *args], capture_output=True, text=True, timeout=30
    )


QUERY = textwrap.dedent(
    """
    import sys
    from dnslib import DNSRecord, RCODE
    name, qtype, tcp = sys.argv[1], sys.argv[2], sys.argv[3] == "tcp"
    server = open("/etc/resolv.conf").read().split("nameserver ")[1].split()[0]
    reply = DNSRecord.parse(DNSRecord.question(name, qtype).send(server, 53, tcp=tcp, timeout=3))
    print(RCODE.get(reply.header.rcode))
    for rr in reply.rr:
        print("an", str(rr.rdata))
    for rr in reply.ar:
        print("ar", str(rr.rdata))
    """
)


def query(lab: object, pod: str, name: str, qtype: str, tcp: bool = False) -> list[str]:
    """Ask the pod's nameserver (from its resolv.conf), as ``dig`` would."""
    p = in_pod(lab, pod, sys.executable, "-c", QUERY, name, qtype, "tcp" if tcp else "udp")
    assert p.returncode == 0, p.stderr
    return p.stdout.splitlines()


@pytest.fixture(scope="module")
def dns_lab() -> Iterator[object]:
    if WHY_NOT:
        pytest.skip(WHY_NOT)
    from svcnet.backend import load_backend
    from svcnet.lab.control import Lab

    lab = Lab(f"td{os.getpid() % 100000}", load_backend("iptables"))
    try:
        lab.up(lab_state())
        yield lab
    finally:
        lab.down()


@kernel
@needs_kernel
@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
@pytest.mark.parametrize("url", ["http://web", "http://web.default.svc.cluster.local"])
def test_curl_a_service_by_name(dns_lab: object, url: str) -> None:
    p = in_pod(dns_lab, "default/client", "curl", "-sS", "-m", "5", url)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[0] in {"web-1", "web-2", "web-3"}
    assert p.stdout.split()[2].endswith(":8080")


@kernel
@needs_kernel
def test_getent_resolves_short_and_qualified_names(dns_lab: object) -> None:
    p = in_pod(dns_lab, "default/client", "getent", "hosts", "web")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["10.96.0.10", "web.default.svc.cluster.local"]
    p = in_pod(dns_lab, "default/client", "getent", "hosts", "cache.data")
    assert p.stdout.split() == ["10.96.5.5", "cache.data.svc.cluster.local"]
    # from data/cache-0 (node-b's server) the short name of its own namespace works
    p = in_pod(dns_lab, "data/cache-0", "getent", "hosts", "cache")
    assert p.stdout.split() == ["10.96.5.5", "cache.data.svc.cluster.local"]


@kernel
@needs_kernel
def test_short_name_of_another_namespace_does_not_resolve(dns_lab: object) -> None:
    p = in_pod(dns_lab, "default/client", "getent", "hosts", "cache")
    assert p.returncode == 2, p.stdout  # getent: key not found
    assert p.stdout == ""


@kernel
@needs_kernel
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_srv_and_ptr_answers(dns_lab: object, tcp: bool) -> None:
    srv = query(dns_lab, "default/client", "_http._tcp.web.default.svc.cluster.local", "SRV", tcp)
    assert srv == ["NOERROR", "an 0 100 80 web.default.svc.cluster.local.", "ar 10.96.0.10"]
    ptr = query(dns_lab, "default/client", "10.0.96.10.in-addr.arpa", "PTR", tcp)
    assert ptr == ["NOERROR", "an web.default.svc.cluster.local."]
    missing = query(dns_lab, "default/client", "nothing.default.svc.cluster.local", "A", tcp)
    assert missing == ["NXDOMAIN"]


@kernel
@needs_kernel
def test_names_outside_the_cluster_are_refused(dns_lab: object) -> None:
    assert query(dns_lab, "default/client", "example.com", "A") == ["REFUSED"]
    p = in_pod(dns_lab, "default/client", "getent", "hosts", "example.com")
    assert p.returncode == 2


@kernel
@needs_kernel
def test_dns_follows_updates_pod_removal_and_down() -> None:
    from svcnet.lab.control import Lab

    name = f"tw{os.getpid() % 100000}"
    lab = Lab(name)  # no backend: DNS and resolv.conf do not need the rules
    try:
        lab.up(lab_state())
        servers = sorted(lab.dns.values())
        assert len(servers) == 2 and sorted(dns_pids(name)) == servers
        pods = ["data/cache-0", "default/client", "default/web-1", "default/web-2", "default/web-3"]
        assert etc_left(name) == [f"svcnet-{name}-p-{k.replace('/', '-')}" for k in pods]
        assert query(lab, "default/client", "late.default.svc.cluster.local", "A") == ["NXDOMAIN"]
        bigger = lab_state(EXTRA)
        lab.up(bigger)
        assert sorted(dns_pids(name)) == servers  # the same servers re-read the state
        got = query(lab, "default/client", "late.default.svc.cluster.local", "A")
        assert got == ["NOERROR", "an 10.96.7.7"]
        lab.up(bigger.step(Delete([ObjectKey(Kind.POD, "data", "cache-0")])))
        assert f"svcnet-{name}-p-data-cache-0" not in etc_left(name)
    finally:
        lab.down()
    assert etc_left(name) == []
    assert dns_pids(name) == []


@kernel
@needs_kernel
def test_down_after_a_crash_removes_dns_servers_and_resolv_conf() -> None:
    from svcnet.lab.control import down

    name = f"tx{os.getpid() % 100000}"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_lab_dns import lab_state
        from svcnet.lab.control import Lab
        Lab({name!r}).up(lab_state())
        os.kill(os.getpid(), signal.SIGKILL)  # crash: no cleanup at all
        """
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert p.returncode == -signal.SIGKILL, p.stderr
    try:
        assert len(dns_pids(name)) == 2  # the servers outlive the crash...
        assert len(etc_left(name)) == 5
    finally:
        down(name)  # ...until down finds them
    assert dns_pids(name) == []
    assert etc_left(name) == []
    assert netns.listed(f"svcnet-{name}-") == []


# -- dns steps of `svcnet scenario run --traffic` ------------------------------------------

DNS_EXAMPLE = SHARED_EXAMPLES + "/dns-basics.yaml"


class DnsOnlyTraffic:
    """A traffic hook that answers dns steps (no lab, no root)."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def begin(self, scenario: object) -> None:
        pass

    def sync(self, state: ClusterState) -> None:
        pass

    def check(self, spec: object, probe: object, state: ClusterState) -> object:
        from svcnet.lab.traffic import TrafficCheck
        from svcnet.scenario import Status

        return TrafficCheck(Status.SKIPPED, reason="test")

    def check_dns(self, q: object, state: ClusterState) -> object:
        from svcnet.lab.traffic import TrafficCheck
        from svcnet.scenario import Status

        self.queries.append(str(q))
        return TrafficCheck(Status.FAILED, observed="x", reason="fake")

    def end(self) -> None:
        pass


@pytest.mark.skipif(not os.path.exists(DNS_EXAMPLE), reason="no dns-basics.yaml example")
def test_scenario_runner_sends_dns_steps_to_the_traffic_hook() -> None:
    from svcnet.backend import load_backend
    from svcnet.scenario import Status, load_scenario, run_scenario

    hook = DnsOnlyTraffic()
    result = run_scenario(load_scenario(DNS_EXAMPLE), load_backend("memory"), hook)
    dns = [r for r in result.results if r.kind == "dns"]
    traffic = [r for r in result.results if r.kind == "traffic" and r.name in hook.queries]
    assert len(dns) == len(hook.queries) == len(traffic) == 7
    assert all(r.status is Status.PASSED for r in dns)
    assert all(r.status is Status.FAILED and r.reason == "fake" for r in traffic)


@kernel
@needs_kernel
def test_traffic_checker_asks_the_real_server() -> None:
    from svcnet.backend import load_backend
    from svcnet.lab.traffic import TrafficChecker
    from svcnet.scenario import Status
    from svcnet.scenario.format import DnsQuery

    checker = TrafficChecker(load_backend("iptables"), lab_prefix="tq")
    state = lab_state()
    checker.begin(None)  # type: ignore[arg-type]
    try:
        checker.sync(state)
        ok = DnsQuery("web", "A", "default/client", frozenset({"10.96.0.10"}))
        got = checker.check_dns(ok, state)
        assert (got.status, got.observed) == (Status.PASSED, "[10.96.0.10]"), got
        srv = DnsQuery(
            "_redis._tcp.cache.data.svc.cluster.local",
            "SRV",
            answer=frozenset({"0 100 6379 cache.data.svc.cluster.local."}),
        )
        assert checker.check_dns(srv, state).status is Status.PASSED
        other_ns = DnsQuery("cache", "A", "default/client", rcode="REFUSED")  # as the model
        assert checker.check_dns(other_ns, state).status is Status.PASSED
        wrong = DnsQuery("web", "A", "default/client", frozenset({"10.96.0.99"}))
        got = checker.check_dns(wrong, state)
        assert got.status is Status.FAILED and "10.96.0.99" in got.reason
    finally:
        checker.end()
