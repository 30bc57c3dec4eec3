"""Fault injection: the DNS server under random and crafted packets, over real UDP
and TCP sockets on 127.0.0.1.

Every test checks three things: the server stays up (a valid query is answered
after the damage), no packet makes it fail inside (``errors`` stays 0: no SERVFAIL
from an exception) and it does not loop (the number of UDP replies it sent is
exactly one per query it was sent; responses are dropped and counted).

The UDP loop serves one packet at a time, in arrival order, so a valid query sent
after the crafted packets is answered only once they have all been handled: the
counters are read at that point, without sleeping.
"""

from __future__ import annotations

import itertools
import socket
import struct
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

dnslib = pytest.importorskip("dnslib")
from dnslib import QTYPE, RCODE, DNSRecord  # noqa: E402

from svcnet import manifests  # noqa: E402
from svcnet.dns.server import DnsServer  # noqa: E402
from svcnet.state import Apply, ClusterState  # noqa: E402

DOCS = [
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "cache", "namespace": "data"},
        "spec": {"clusterIP": "10.96.3.3", "ports": [{"name": "redis", "port": 6379}]},
    },
]
NAME = "cache.data.svc.cluster.local"
CACHE = [b"cache", b"data", b"svc", b"cluster", b"local"]
_ids = itertools.count(1)


def _state() -> ClusterState:
    return ClusterState.empty().step(Apply(manifests.load(DOCS)))


@pytest.fixture
def server() -> Iterator[DnsServer]:
    state = _state()
    with DnsServer(lambda: state, "127.0.0.1", 0) as srv:
        yield srv


@pytest.fixture(scope="module")
def shared() -> Iterator[DnsServer]:
    state = _state()
    with DnsServer(lambda: state, "127.0.0.1", 0) as srv:
        yield srv


def header(qid: int, flags: int = 0x0100, qd: int = 1, an: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, 0, ar)


def wire_name(labels: list[bytes]) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\0"


def query(labels: list[bytes], qtype: int = 1, flags: int = 0x0100, qid: int = 0x4242) -> bytes:
    return header(qid, flags) + wire_name(labels) + struct.pack("!HH", qtype, 1)


def still_serving(srv: DnsServer) -> None:
    """A valid query gets its answer (other datagrams that arrive are skipped)."""
    qid = next(_ids) & 0xFFFF
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5.0)
        s.sendto(query(CACHE, qid=qid), srv.address)
        while True:
            data = s.recv(65535)
            if data[:2] == struct.pack("!H", qid):
                break
    reply = DNSRecord.parse(data)
    assert reply.header.rcode == RCODE.NOERROR
    assert [str(rr.rdata) for rr in reply.rr] == ["10.96.3.3"]


def send_from(sock: socket.socket | None, data: bytes, to: tuple[str, int]) -> None:
    assert sock is not None
    sock.sendto(data, to)


# -- random bytes -------------------------------------------------------------------


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.binary(max_size=600),
        # a plausible query header (QR clear, opcode QUERY, one question) and random rest:
        # reaches the question parser and the lookup rather than the first checks
        st.builds(
            lambda qid, rd, rest: header(qid, 0x0100 * rd) + rest,
            st.integers(0, 0xFFFF),
            st.booleans(),
            st.binary(max_size=300),
        ),
        # a valid query with bytes flipped
        st.builds(
            lambda pos, byte: (lambda q: q[: pos % len(q)] + bytes([byte]) + q[pos % len(q) + 1 :])(
                query(CACHE)
            ),
            st.integers(0, 200),
            st.integers(0, 255),
        ),
    )
)
def test_random_bytes_never_break_or_loop(shared: DnsServer, data: bytes) -> None:
    before_sent, before_dropped = shared.udp_sent, shared.dropped
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data, shared.address)
        s.close()
    still_serving(shared)
    answered = shared.udp_sent - before_sent
    dropped = shared.dropped - before_dropped
    # one reply for the valid query, and one reply or one drop for the random
    # datagram (an empty datagram is skipped before it is handled)
    assert answered + dropped == (2 if data else 1) and answered >= 1
    if data and (len(data) < 12 or data[2] & 0x80):
        assert dropped == 1  # a runt or a response: never answered
    assert shared.errors == 0


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(min_size=12, max_size=400))
def test_random_bytes_over_tcp(shared: DnsServer, data: bytes) -> None:
    with socket.create_connection(shared.address, timeout=5.0) as s:
        s.sendall(struct.pack("!H", len(data)) + data)
        s.shutdown(socket.SHUT_WR)
        head = s.recv(2)
        if data[2] & 0x80:
            assert head == b""  # a response: the connection is closed unanswered
        else:
            assert len(head) >= 1
    still_serving(shared)
    assert shared.errors == 0


# -- loops ----------------------------------------------------------------------------


def test_a_query_spoofed_from_the_servers_own_address_does_not_loop(server: DnsServer) -> None:
    # sent from the server's own socket: the answer comes back to the server itself
    send_from(server._udp, query(CACHE), server.address)
    send_from(server._udp, query(CACHE, flags=0x8100), server.address)  # and a response
    for _ in range(3):
        still_serving(server)
    # the spoofed query was answered once (to itself); that answer and the spoofed
    # response were dropped; then the three valid queries: nothing else was sent
    assert server.udp_sent == 1 + 3
    assert server.dropped == 2
    assert server.errors == 0


def test_two_servers_do_not_ping_pong() -> None:
    state = _state()
    with (
        DnsServer(lambda: state, "127.0.0.1", 0) as a,
        DnsServer(lambda: state, "127.0.0.1", 0) as b,
    ):
        send_from(a._udp, query(CACHE), b.address)  # b answers to a, a drops the answer
        send_from(b._udp, query([b"x", *CACHE]), a.address)  # a answers to b, b drops it
        send_from(a._udp, query(CACHE, flags=0x8500), b.address)  # a response: dropped
        for _ in range(3):
            still_serving(a)
            still_serving(b)
        assert (a.udp_sent, b.udp_sent) == (1 + 3, 1 + 3)
        assert (a.dropped, b.dropped) == (1, 2)
        assert a.errors == b.errors == 0


# -- crafted packets -------------------------------------------------------------------

A63 = [b"a" * 63] * 3  # 3 * 64 = 192 octets on the wire
CRAFTED: dict[str, tuple[bytes, set[int]]] = {
    "label of 64 octets": (query([b"a" * 64, *CACHE]), {RCODE.FORMERR}),
    "name of 257 octets": (query([*A63, b"b" * 63]), {RCODE.FORMERR}),
    "name of 257 octets in the zone": (query([*A63, b"b" * 33, *CACHE]), {RCODE.FORMERR}),
    "name of 255 octets": (query([*A63, b"b" * 61]), {RCODE.REFUSED}),
    "name of 255 octets in the zone": (query([*A63, b"b" * 31, *CACHE]), {RCODE.NXDOMAIN}),
    "reserved label type 0x40": (header(1) + b"\x41" + b"a" * 65 + b"\0\0\1\0\1", {RCODE.FORMERR}),
    "pointer to itself": (header(1) + b"\xc0\x0c" + b"\0\1\0\1", {RCODE.FORMERR}),
    "pointer forwards": (header(1) + b"\xc0\x20" + b"\0\1\0\1" + b"\0" * 20, {RCODE.FORMERR}),
    "pointer loop": (
        header(1) + b"\x01a\xc0\x0e" + b"\x01b\xc0\x0c" + b"\0\1\0\1",
        {RCODE.FORMERR},
    ),
    "non-UTF-8 label": (query([b"\xff\xfe", *CACHE]), {RCODE.FORMERR, RCODE.NXDOMAIN}),
    "label holding the whole name": (query([NAME.encode()]), {RCODE.REFUSED}),
    "dotted label in the zone": (query([b"cache.data", *CACHE[2:]]), {RCODE.NXDOMAIN}),
    "no question": (header(1, qd=0), {RCODE.FORMERR}),
    "two questions": (
        header(1, qd=2) + (wire_name(CACHE) + b"\0\1\0\1") * 2,
        {RCODE.FORMERR},
    ),
    "truncated question": (query(CACHE)[:-3], {RCODE.FORMERR}),
    "counts larger than the records": (
        header(1, an=5, ar=9) + wire_name(CACHE) + b"\0\1\0\1",
        {RCODE.FORMERR},
    ),
    "opcode NOTIFY": (query(CACHE, flags=0x2000), {RCODE.NOTIMP}),
    "opcode UPDATE": (query(CACHE, flags=0x2800), {RCODE.NOTIMP}),
    "root name": (query([]), {RCODE.REFUSED}),
    **{
        f"type {t}": (query(CACHE, t), {RCODE.NOERROR})
        for t in (0, 1234, 65280, 65535, QTYPE.ANY, QTYPE.OPT, QTYPE.AXFR)
    },
    **{
        f"type {t}, missing name": (query([b"zz", *CACHE], t), {RCODE.NXDOMAIN})
        for t in (0, 1234, 65280, 65535)
    },
}


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_packets(server: DnsServer, case: str, tcp: bool) -> None:
    data, rcodes = CRAFTED[case]
    if tcp:
        with socket.create_connection(server.address, timeout=5.0) as s:
            s.sendall(struct.pack("!H", len(data)) + data)
            head = s.recv(2)
            reply = s.recv(struct.unpack("!H", head)[0])
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5.0)
            s.sendto(data, server.address)
            reply = s.recv(65535)
    assert reply[:2] == data[:2]
    assert reply[2] & 0x80  # a response
    assert reply[3] & 0x0F in rcodes, (case, reply[3] & 0x0F)
    if reply[3] & 0x0F == RCODE.NOERROR:
        assert struct.unpack("!H", reply[6:8]) == (0,)  # an empty answer
    assert server.errors == 0
    still_serving(server)
