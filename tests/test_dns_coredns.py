"""Service DNS as CoreDNS answers it (issue 16): ExternalName aliases followed inside
the cluster domain, headless services without a published endpoint NXDOMAIN, and
``svcnet dns ADDRESS`` asking the PTR.

The pure tests read :mod:`svcnet.dns`; the DNS-server test asks a real
:class:`~svcnet.dns.server.DnsServer` over UDP on 127.0.0.1; the kernel test builds a
lab and resolves with glibc (``getent``, ``curl``) inside a pod.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from svcnet import dns, manifests
from svcnet.model import EndpointSlice, IPFamily, Service, ServicePort, SliceEndpoint, SlicePort
from svcnet.state import Apply, ClusterState

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "tests", "fixtures", "demo")

NODE = """
apiVersion: v1
kind: Node
metadata: {name: node-a}
spec: {podCIDR: 10.244.1.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.56.11}]}
"""

OBJECTS = """
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: data, labels: {app: db}}
spec:
  nodeName: node-a
  containers: [{name: c, ports: [{name: pg, containerPort: 5432}]}]
status: {podIP: 10.244.1.60, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: data, labels: {app: db, tier: spare}}
spec:
  nodeName: node-a
  containers: [{name: c, ports: [{name: pg, containerPort: 5432}]}]
status: {podIP: 10.244.1.61, conditions: [{type: Ready, status: "False"}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec:
  selector: {app: db}
  clusterIP: 10.96.5.5
  ipFamilyPolicy: PreferDualStack
  ports: [{name: pg, port: 5432, targetPort: pg}]
---
apiVersion: v1
kind: Service
metadata: {name: my-database, namespace: default}
spec: {type: ExternalName, externalName: db.data.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: alias-of-alias, namespace: default}
spec: {type: ExternalName, externalName: my-database.default.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: loop-a, namespace: default}
spec: {type: ExternalName, externalName: loop-b.default.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: loop-b, namespace: default}
spec: {type: ExternalName, externalName: loop-a.default.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: dangling, namespace: default}
spec: {type: ExternalName, externalName: nothing.data.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: outside, namespace: default}
spec: {type: ExternalName, externalName: billing.example.com}
---
apiVersion: v1
kind: Service
metadata: {name: to-headless, namespace: default}
spec: {type: ExternalName, externalName: hl.data.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: hl, namespace: data}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: pg, port: 5432, targetPort: pg}]
---
apiVersion: v1
kind: Service
metadata: {name: hl-none-ready, namespace: data}
spec:
  clusterIP: None
  selector: {tier: spare}
  ports: [{name: pg, port: 5432, targetPort: pg}]
---
apiVersion: v1
kind: Service
metadata: {name: hl-nothing, namespace: data}
spec:
  clusterIP: None
  selector: {app: nobody}
  ports: [{name: pg, port: 5432, targetPort: pg}]
---
apiVersion: v1
kind: Service
metadata: {name: hl-portless, namespace: data}
spec:
  clusterIP: None
  selector: {app: nobody}
---
apiVersion: v1
kind: Service
metadata: {name: hl-spare-published, namespace: data}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {tier: spare}
  ports: [{name: pg, port: 5432, targetPort: pg}]
"""

D = "svc.cluster.local"


def build(*texts: str) -> ClusterState:
    objects = []
    for i, text in enumerate(texts):
        objects += manifests.load(text, filename=f"doc-{i}")
    return ClusterState.empty().step(Apply(objects))


@pytest.fixture(scope="module")
def state() -> ClusterState:
    return build(NODE, OBJECTS)


def ask(state: ClusterState, name: str, qtype: str = "A") -> dns.Answer:
    return dns.lookup(state, name, qtype)


# -- ExternalName to a name of the cluster -----------------------------------------------


def test_externalname_to_a_service_carries_its_addresses(state: ClusterState) -> None:
    a = ask(state, f"my-database.default.{D}")
    assert (a.rcode, a.records) == ("NOERROR", ("10.96.5.5",))
    assert a.chain == ((f"my-database.default.{D}", f"db.data.{D}."),)
    assert a.cname == f"db.data.{D}." and a.final == f"db.data.{D}"
    # the CNAME itself is unchanged, and a type the target lacks is an empty answer
    assert ask(state, f"my-database.default.{D}", "CNAME").records == (f"db.data.{D}.",)
    aaaa = ask(state, f"my-database.default.{D}", "AAAA")
    assert (aaaa.rcode, aaaa.records, len(aaaa.chain)) == ("NOERROR", (), 1)


def test_externalname_chains_are_followed(state: ClusterState) -> None:
    a = ask(state, f"alias-of-alias.default.{D}")
    assert a.records == ("10.96.5.5",)
    assert [owner for owner, _ in a.chain] == [
        f"alias-of-alias.default.{D}",
        f"my-database.default.{D}",
    ]
    assert a.chain[-1][1] == f"db.data.{D}."


def test_externalname_to_a_headless_service_gives_its_ready_pods(state: ClusterState) -> None:
    a = ask(state, f"to-headless.default.{D}")
    assert a.records == ("10.244.1.60",)
    srv = ask(state, f"_pg._tcp.hl.data.{D}", "SRV")
    assert srv.records == (f"0 100 5432 10-244-1-60.hl.data.{D}.",)


def test_externalname_loops_and_dead_ends_stop(state: ClusterState) -> None:
    loop = ask(state, f"loop-a.default.{D}")
    assert (loop.rcode, loop.records) == ("NOERROR", ())
    assert [t for _, t in loop.chain] == [f"loop-b.default.{D}.", f"loop-a.default.{D}."]
    dead = ask(state, f"dangling.default.{D}")
    assert (dead.rcode, dead.records, dead.chain) == (
        "NOERROR",
        (),
        ((f"dangling.default.{D}", f"nothing.data.{D}."),),
    )
    out = ask(state, f"outside.default.{D}")
    assert (out.records, out.final) == ((), "billing.example.com")


def test_chains_are_bounded() -> None:
    n = dns.MAX_CHAIN + 3
    docs = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"hop{i}", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": f"hop{i + 1}.default.{D}"},
        }
        for i in range(n)
    ]
    last = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"hop{n}", "namespace": "default"},
        "spec": {"clusterIP": "10.96.9.9", "ports": [{"port": 80}]},
    }
    s = ClusterState.empty().step(Apply(manifests.load([*docs, last])))
    far = ask(s, f"hop0.default.{D}")
    assert len(far.chain) == dns.MAX_CHAIN and far.records == ()
    near = ask(s, f"hop{n - dns.MAX_CHAIN}.default.{D}")
    assert len(near.chain) == dns.MAX_CHAIN and near.records == ("10.96.9.9",)


def test_a_pod_resolver_follows_the_alias(state: ClusterState) -> None:
    client = manifests.load(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: c, namespace: default}\n"
        "spec: {nodeName: node-a, containers: [{name: c}]}\n"
        "status: {podIP: 10.244.1.9}\n"
    )[0]
    s = state.step(Apply((client,)))
    a = dns.resolve(s, "my-database", "A", from_pod=s.pods[("default", "c")])
    assert (a.name, a.records) == (f"my-database.default.{D}", ("10.96.5.5",))


# -- headless services without a published endpoint ---------------------------------------


@pytest.mark.parametrize("name", ["hl-none-ready", "hl-nothing", "hl-portless"])
def test_headless_without_published_endpoints_is_nxdomain(state: ClusterState, name: str) -> None:
    for qtype in ("A", "AAAA", "SRV", "TXT"):
        assert ask(state, f"{name}.data.{D}", qtype).rcode == "NXDOMAIN", qtype
    assert ask(state, f"_pg._tcp.{name}.data.{D}", "SRV").rcode == "NXDOMAIN"
    assert ask(state, f"data.{D}").rcode == "NOERROR"  # the namespace still exists


def test_published_not_ready_and_ready_headless_services_exist(state: ClusterState) -> None:
    spare = ask(state, f"hl-spare-published.data.{D}")
    assert (spare.rcode, spare.records) == ("NOERROR", ("10.244.1.61",))
    hl = ask(state, f"_pg._tcp.hl.data.{D}", "SRV")
    assert hl.rcode == "NOERROR"
    assert ask(state, f"_other._tcp.hl.data.{D}", "SRV").rcode == "NXDOMAIN"
    assert ask(state, f"hl.data.{D}", "AAAA") == dns.Answer(
        "NOERROR", (), f"hl.data.{D}", "AAAA", zone="cluster.local"
    )


def test_headless_name_comes_and_goes_with_its_endpoint() -> None:
    svc = Service(namespace="ns", name="hl", headless=True, ports=(ServicePort(80, "p"),))
    s0 = ClusterState.empty().step(Apply((svc,)))

    def sl(ready: bool) -> EndpointSlice:
        ep = SliceEndpoint(("10.244.0.7",), ready=ready)
        return EndpointSlice("ns", "hl-1", "hl", IPFamily.IPv4, (ep,), (SlicePort(80, "p"),))

    s1 = s0.step(Apply((sl(True),)))
    s2 = s1.step(Apply((sl(False),)))
    zone = dns.records(s0)
    got = []
    for prev, cur in ((s0, s1), (s1, s2)):
        zone = zone.update(prev, cur)
        assert zone == dns.records(cur)  # the incremental zone agrees
        got.append(
            (zone.lookup(f"hl.ns.{D}", "A").rcode, zone.lookup(f"_p._tcp.hl.ns.{D}", "SRV").rcode)
        )
    assert dns.records(s0).lookup(f"hl.ns.{D}", "A").rcode == "NXDOMAIN"
    assert got == [("NOERROR", "NOERROR"), ("NXDOMAIN", "NXDOMAIN")]


# -- svcnet dns ADDRESS ----------------------------------------------------------------


def write(tmp_path: Any, *texts: str) -> str:
    path = os.path.join(str(tmp_path), "objects.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n---\n".join(texts))
    return path


def test_cli_answers_the_ptr_of_an_address(tmp_path: Any) -> None:
    from svcnet.cli.main import cli

    path = write(tmp_path, NODE, OBJECTS)
    run = CliRunner().invoke
    for args in (["10.96.5.5", "PTR"], ["10.96.5.5"], ["10.96.5.5", "ptr"]):
        r = run(cli, ["dns", *args, "-f", path])
        assert (r.exit_code, r.output) == (0, f"db.data.{D}.\n"), args
    r = run(cli, ["dns", "10.244.1.60", "-f", path])
    assert r.output == f"10-244-1-60.hl.data.{D}.\n"
    r = run(cli, ["dns", "10.96.77.77", "-f", path])
    assert r.exit_code == 1 and "NXDOMAIN 77.77.96.10.in-addr.arpa" in r.output
    r = run(cli, ["dns", "192.0.2.1", "-f", path])
    assert r.exit_code == 1 and "REFUSED" in r.output


def test_cli_prints_the_alias_chain(tmp_path: Any) -> None:
    from svcnet.cli.main import cli

    path = write(tmp_path, NODE, OBJECTS)
    r = CliRunner().invoke(cli, ["dns", f"alias-of-alias.default.{D}", "-f", path])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == [
        f"alias-of-alias.default.{D}. CNAME my-database.default.{D}.",
        f"my-database.default.{D}. CNAME db.data.{D}.",
        "10.96.5.5",
    ]
    r = CliRunner().invoke(cli, ["dns", f"hl-nothing.data.{D}", "-f", path])
    assert r.exit_code == 1 and "NXDOMAIN" in r.output


# -- the real server -----------------------------------------------------------------------


def test_server_answers_the_chain_then_the_records(state: ClusterState) -> None:
    pytest.importorskip("dnslib", reason="needs dnslib (pip install 'svcnet[dns]')")
    from dnslib import QTYPE, RCODE, DNSRecord

    from svcnet.dns.server import DnsServer

    with DnsServer(lambda: state, port=0) as server:
        name = f"Alias-Of-Alias.default.{D}"
        for tcp in (False, True):
            raw = DNSRecord.question(name, "A").send(*server.address, tcp=tcp, timeout=3)
            reply = DNSRecord.parse(raw)
            assert RCODE.get(reply.header.rcode) == "NOERROR"
            got = [(str(rr.rname), QTYPE.get(rr.rtype), str(rr.rdata)) for rr in reply.rr]
            assert got == [
                (f"{name}.", "CNAME", f"my-database.default.{D}."),
                (f"my-database.default.{D}.", "CNAME", f"db.data.{D}."),
                (f"db.data.{D}.", "A", "10.96.5.5"),
            ]
        raw = DNSRecord.question(f"hl-none-ready.data.{D}", "A").send(*server.address, timeout=3)
        reply = DNSRecord.parse(raw)
        assert RCODE.get(reply.header.rcode) == "NXDOMAIN"
        assert [QTYPE.get(rr.rtype) for rr in reply.auth] == ["SOA"]


# -- kernel: getent and curl in a lab pod ----------------------------------------------------

WHY_NOT = (
    "needs root"
    if os.geteuid() != 0
    else "needs iproute2 (ip)"
    if shutil.which("ip") is None
    else "needs getent"
    if shutil.which("getent") is None
    else "needs curl"
    if shutil.which("curl") is None
    else ""
)
try:
    import dnslib  # noqa: F401
except ImportError:
    WHY_NOT = WHY_NOT or "needs dnslib (pip install 'svcnet[dns]')"

ALIAS = """
apiVersion: v1
kind: Service
metadata: {name: my-database, namespace: default}
spec: {type: ExternalName, externalName: web.default.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: nobody, namespace: default}
spec: {clusterIP: None, selector: {app: nobody}, ports: [{name: http, port: 80}]}
"""


def lab_state() -> ClusterState:
    texts = []
    for path in sorted(glob.glob(os.path.join(DEMO, "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            texts.append(f.read())
    return build(*texts, ALIAS)


@pytest.fixture(scope="module")
def alias_lab() -> Iterator[Any]:
    if WHY_NOT:
        pytest.skip(WHY_NOT)
    from svcnet.backend import load_backend
    from svcnet.lab.control import Lab

    lab = Lab(f"tk{os.getpid() % 100000}", load_backend("iptables"))
    try:
        lab.up(lab_state())
        yield lab
    finally:
        lab.down()


def in_pod(lab: Any, pod: str, *args: str) -> subprocess.CompletedProcess[str]:
    where = lab.topo.pod(pod)
    return subprocess.run(
        ["ip", "netns", "exec", where.netns, *args], capture_output=True, text=True, timeout=30
    )


@pytest.mark.kernel
@pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "ok")
def test_lab_pod_resolves_and_reaches_an_externalname_alias(alias_lab: Any) -> None:
    p = in_pod(alias_lab, "default/client", "getent", "hosts", "my-database")
    assert p.returncode == 0, (p.stdout, p.stderr)
    fields = p.stdout.split()
    # glibc: the address, the canonical name (the alias target), then the alias
    assert fields[:2] == ["10.96.0.10", "web.default.svc.cluster.local"], fields
    assert "my-database.default.svc.cluster.local" in fields[2:]
    p = in_pod(alias_lab, "default/client", "curl", "-sS", "-m", "5", "http://my-database")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[0] in {"web-1", "web-2", "web-3"}
    # a headless service with no endpoint: getent finds nothing
    p = in_pod(alias_lab, "default/client", "getent", "hosts", "nobody")
    assert (p.returncode, p.stdout) == (2, "")
