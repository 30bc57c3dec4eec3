"""svcnet.dns.server: the DNS server over real UDP and TCP sockets on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator

import pytest

dnslib = pytest.importorskip("dnslib")
from dnslib import EDNS0, QTYPE, RCODE, RR, A, DNSRecord  # noqa: E402

from svcnet import manifests  # noqa: E402
from svcnet.dns import server as dnsserver  # noqa: E402
from svcnet.dns.server import DnsServer  # noqa: E402
from svcnet.kernel.setns import enter  # noqa: E402
from svcnet.model import EndpointSlice, IPFamily, Service, ServicePort, SliceEndpoint, SlicePort  # noqa: E402
from svcnet.state import Apply, ClusterState  # noqa: E402

DOCS = [
    {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "node-a"},
        "spec": {"podCIDR": "10.244.1.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.56.11"}]},
    },
    {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "db-0", "namespace": "data", "labels": {"app": "db"}},
        "spec": {
            "nodeName": "node-a",
            "hostname": "db-0",
            "subdomain": "db",
            "containers": [{"name": "db", "ports": [{"name": "pg", "containerPort": 5432}]}],
        },
        "status": {"podIP": "10.244.1.60", "conditions": [{"type": "Ready", "status": "True"}]},
    },
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "db", "namespace": "data"},
        "spec": {
            "clusterIP": "None",
            "selector": {"app": "db"},
            "ports": [{"name": "pg", "port": 5432}],
        },
    },
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "cache", "namespace": "data"},
        "spec": {
            "clusterIP": "10.96.3.3",
            "selector": {"app": "cache"},
            "ports": [{"name": "redis", "port": 6379}],
        },
    },
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "billing", "namespace": "data"},
        "spec": {"type": "ExternalName", "externalName": "billing.example.com"},
    },
]
BIG = 100  # endpoints of the headless service "big": 100 A records do not fit in 512 bytes


def base_state() -> ClusterState:
    s = ClusterState.empty().step(Apply(manifests.load(DOCS)))
    svc = Service(namespace="data", name="big", headless=True, ports=(ServicePort(80, "http"),))
    eps = tuple(SliceEndpoint((f"10.244.2.{i + 1}",)) for i in range(BIG))
    sl = EndpointSlice("data", "big-1", "big", IPFamily.IPv4, eps, (SlicePort(80, "http"),))
    return s.step(Apply((svc, sl)))


class Holder:
    def __init__(self) -> None:
        self.state = base_state()

    def __call__(self) -> ClusterState:
        return self.state


@pytest.fixture
def holder() -> Holder:
    return Holder()


@pytest.fixture
def server(holder: Holder) -> Iterator[DnsServer]:
    with DnsServer(holder, "127.0.0.1", 0) as srv:
        yield srv


def ask(
    srv: DnsServer,
    name: str,
    qtype: str = "A",
    *,
    tcp: bool = False,
    edns: int | None = None,
    raw: bool = False,
) -> DNSRecord:
    query = DNSRecord.question(name, qtype)
    if edns is not None:
        query.add_ar(EDNS0(udp_len=edns))
    data = query.send("127.0.0.1", srv.port, tcp=tcp, timeout=3)
    if raw:
        return data
    reply = DNSRecord.parse(data)
    assert reply.header.id == query.header.id
    return reply


def answers(reply: DNSRecord) -> set[str]:
    return {str(rr.rdata) for rr in reply.rr}


def test_a_record_udp_and_tcp(server: DnsServer) -> None:
    for tcp in (False, True):
        r = ask(server, "cache.data.svc.cluster.local", tcp=tcp)
        assert r.header.rcode == RCODE.NOERROR and r.header.aa == 1
        assert answers(r) == {"10.96.3.3"}
        assert r.rr[0].ttl == dnsserver.TTL


def test_case_is_echoed_and_ignored(server: DnsServer) -> None:
    r = ask(server, "CaChE.data.SVC.cluster.local")
    assert answers(r) == {"10.96.3.3"}
    assert str(r.q.qname) == "CaChE.data.SVC.cluster.local."
    assert str(r.rr[0].rname) == "CaChE.data.SVC.cluster.local."


def test_srv_with_additional_addresses(server: DnsServer) -> None:
    r = ask(server, "_redis._tcp.cache.data.svc.cluster.local", "SRV")
    assert answers(r) == {"0 100 6379 cache.data.svc.cluster.local."}
    assert {(str(rr.rname), str(rr.rdata)) for rr in r.ar} == {
        ("cache.data.svc.cluster.local.", "10.96.3.3")
    }
    r = ask(server, "_pg._tcp.db.data.svc.cluster.local", "SRV")
    assert answers(r) == {"0 100 5432 db-0.db.data.svc.cluster.local."}


def test_ptr_and_cname(server: DnsServer) -> None:
    assert answers(ask(server, "3.3.96.10.in-addr.arpa", "PTR")) == {
        "cache.data.svc.cluster.local."
    }
    assert answers(ask(server, "60.1.244.10.in-addr.arpa", "PTR")) == {
        "db-0.db.data.svc.cluster.local."
    }
    r = ask(server, "billing.data.svc.cluster.local", "A")
    assert [QTYPE[rr.rtype] for rr in r.rr] == ["CNAME"]
    assert answers(r) == {"billing.example.com."}


def test_nxdomain_and_nodata_carry_the_soa(server: DnsServer, holder: Holder) -> None:
    r = ask(server, "nothing.data.svc.cluster.local")
    assert r.header.rcode == RCODE.NXDOMAIN and not r.rr
    (soa,) = r.auth
    assert QTYPE[soa.rtype] == "SOA" and str(soa.rname) == "cluster.local."
    assert soa.rdata.times[0] == holder.state.revision
    r = ask(server, "cache.data.svc.cluster.local", "AAAA")
    assert r.header.rcode == RCODE.NOERROR and not r.rr and QTYPE[r.auth[0].rtype] == "SOA"
    r = ask(server, "9.9.96.10.in-addr.arpa", "PTR")
    assert r.header.rcode == RCODE.NXDOMAIN and str(r.auth[0].rname) == "96.10.in-addr.arpa."
    r = ask(server, "cluster.local", "SOA")
    assert QTYPE[r.rr[0].rtype] == "SOA"


def test_other_names_refused_by_default(server: DnsServer) -> None:
    r = ask(server, "example.com")
    assert r.header.rcode == RCODE.REFUSED and r.header.aa == 0


def test_truncation_without_edns_then_tcp(server: DnsServer) -> None:
    r = ask(server, "big.data.svc.cluster.local")
    assert r.header.tc == 1 and not r.rr
    r = ask(server, "big.data.svc.cluster.local", tcp=True)
    assert r.header.tc == 0 and len(r.rr) == BIG
    assert answers(r) == {f"10.244.2.{i + 1}" for i in range(BIG)}
    srv = ask(server, "_http._tcp.big.data.svc.cluster.local", "SRV", tcp=True)
    assert len(srv.rr) == BIG and {str(rr.rdata).split()[1] for rr in srv.rr} == {"1"}


def test_edns_payload_size_is_honoured(server: DnsServer) -> None:
    small = ask(server, "big.data.svc.cluster.local", edns=1232)
    assert small.header.tc == 1  # ~1.7 kB of answers do not fit in 1232
    assert any(rr.rtype == QTYPE.OPT for rr in small.ar)
    data = ask(server, "big.data.svc.cluster.local", edns=4096, raw=True)
    assert 1232 < len(data) <= 4096
    r = DNSRecord.parse(data)
    assert r.header.tc == 0 and len(r.rr) == BIG
    assert (
        ask(server, "cache.data.svc.cluster.local", edns=100).header.tc == 0
    )  # < 512 counts as 512


def test_follows_state_updates(server: DnsServer, holder: Holder) -> None:
    assert answers(ask(server, "cache.data.svc.cluster.local")) == {"10.96.3.3"}
    new = manifests.load(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "data"},
            "spec": {"clusterIP": "10.96.3.4", "ports": [{"port": 80}]},
        }
    )
    holder.state = holder.state.step(Apply(new))
    assert answers(ask(server, "web.data.svc.cluster.local")) == {"10.96.3.4"}
    assert (
        ask(server, "nothing.data.svc.cluster.local").auth[0].rdata.times[0]
        == holder.state.revision
    )


def test_garbage_is_answered_or_dropped(server: DnsServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(
            b"\x12\x34" + b"\x01\x00" + b"\x00\x01" + b"\x00" * 6 + b"\xff\xff",
            ("127.0.0.1", server.port),
        )
        reply = s.recv(512)
    assert reply[:2] == b"\x12\x34" and reply[3] & 0x0F == RCODE.FORMERR
    assert answers(ask(server, "cache.data.svc.cluster.local")) == {"10.96.3.3"}  # still serving


def test_concurrent_clients(server: DnsServer) -> None:
    failures: list[str] = []

    def client(i: int) -> None:
        for j in range(50):
            name = "cache.data.svc.cluster.local" if j % 2 else "_pg._tcp.db.data.svc.cluster.local"
            try:
                r = ask(server, name, "A" if j % 2 else "SRV", tcp=(i == 0))
                if not r.rr:
                    failures.append(name)
            except Exception as e:
                failures.append(repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert server.errors == 0


class FakeUpstream:
    """A local upstream on 127.0.0.1 answering every A query with 192.0.2.53."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.asked: list[str] = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            if not data:
                return
            q = DNSRecord.parse(data)
            self.asked.append(str(q.q.qname))
            reply = q.reply()
            reply.add_answer(RR(q.q.qname, QTYPE.A, rdata=A("192.0.2.53"), ttl=60))
            self.sock.sendto(reply.pack(), peer)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # ENOTCONN, but Linux wakes the reader anyway
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(2)


def test_forwarding_to_a_local_upstream(holder: Holder) -> None:
    up = FakeUpstream()
    try:
        with DnsServer(holder, "127.0.0.1", 0, upstream=("127.0.0.1", up.port)) as srv:
            r = ask(srv, "example.com")
            assert r.header.rcode == RCODE.NOERROR and answers(r) == {"192.0.2.53"}
            r = ask(srv, "billing.data.svc.cluster.local")  # the CNAME is followed upstream
            assert [QTYPE[rr.rtype] for rr in r.rr] == ["CNAME", "A"]
            assert answers(ask(srv, "cache.data.svc.cluster.local")) == {"10.96.3.3"}
        assert up.asked == ["example.com.", "billing.example.com."]
    finally:
        up.close()


def test_stop_releases_the_port(holder: Holder) -> None:
    srv = DnsServer(holder, "127.0.0.1", 0).start()
    port = srv.port
    srv.stop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))


@pytest.mark.kernel
def test_serves_inside_a_network_namespace(holder: Holder) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace")
    name = f"svcnet-t-dns-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        srv = dnsserver.start_in_netns(name, holder, "127.0.0.1", 53)
        try:
            out: list[bytes] = []

            def query_inside() -> None:  # a thread that enters the namespace, then ends
                enter(name)
                q = DNSRecord.question("cache.data.svc.cluster.local")
                out.append(q.send("127.0.0.1", 53, timeout=3))

            t = threading.Thread(target=query_inside)
            t.start()
            t.join()
            assert answers(DNSRecord.parse(out[0])) == {"10.96.3.3"}
            # the root namespace has no server on 127.0.0.1:53 from us
            assert srv.port == 53
        finally:
            srv.stop()
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


# -- what is not a plain query ----------------------------------------------------------


def _wire_query(labels: list[bytes], qtype: int = 1, flags: int = 0x0100) -> bytes:
    name = b"".join(bytes([len(label)]) + label for label in labels) + b"\0"
    return struct.pack("!HHHHHH", 0x4242, flags, 1, 0, 0, 0) + name + struct.pack("!HH", qtype, 1)


def _exchange(srv: DnsServer, data: bytes) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        s.sendto(data, ("127.0.0.1", srv.port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


CACHE = [b"cache", b"data", b"svc", b"cluster", b"local"]


def test_responses_are_not_answered(server: DnsServer) -> None:
    assert _exchange(server, _wire_query(CACHE, flags=0x8100)) is None
    assert server.dropped == 1
    assert answers(ask(server, "cache.data.svc.cluster.local")) == {"10.96.3.3"}


@pytest.mark.parametrize("opcode", [1, 2, 4, 5, 15])
def test_other_opcodes_get_notimp(server: DnsServer, opcode: int) -> None:
    reply = _exchange(server, _wire_query(CACHE, flags=0x0100 | opcode << 11))
    assert reply is not None
    r = DNSRecord.parse(reply)
    assert (r.header.rcode, r.header.opcode, r.header.qr, r.rr) == (RCODE.NOTIMP, opcode, 1, [])


@pytest.mark.parametrize("qtype", [0, 1234, 65280, 65535])
def test_unknown_types_get_an_empty_answer(server: DnsServer, qtype: int) -> None:
    reply = _exchange(server, _wire_query(CACHE, qtype))
    nx = _exchange(server, _wire_query([b"nothing", *CACHE[1:]], qtype))
    assert reply is not None and nx is not None
    r, n = DNSRecord.parse(reply), DNSRecord.parse(nx)
    assert (r.header.rcode, r.rr, r.q.qtype) == (RCODE.NOERROR, [], qtype)
    assert r.auth[0].rtype == QTYPE.SOA  # NODATA, negatively cacheable
    assert n.header.rcode == RCODE.NXDOMAIN
    assert server.errors == 0


def test_over_long_names_get_formerr(server: DnsServer) -> None:
    for labels in ([b"a" * 63] * 3 + [b"b" * 60] + CACHE, [b"a" * 64, *CACHE]):
        reply = _exchange(server, _wire_query(labels))
        assert reply is not None and reply[:2] == b"\x42\x42"
        assert reply[3] & 0x0F == RCODE.FORMERR and reply[2] & 0x80
    assert server.errors == 0


def test_a_label_holding_a_dot_is_not_the_dotted_name(server: DnsServer) -> None:
    whole = _exchange(server, _wire_query([b"cache.data.svc.cluster.local"]))
    inner = _exchange(server, _wire_query([b"cache.data", *CACHE[2:]]))
    assert whole is not None and inner is not None
    assert DNSRecord.parse(whole).header.rcode == RCODE.REFUSED
    assert DNSRecord.parse(inner).header.rcode == RCODE.NXDOMAIN
    assert DNSRecord.parse(inner).rr == []
