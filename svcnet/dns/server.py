"""A real DNS server for the cluster's Service names (I/O; needs ``svcnet[dns]``).

It answers from :mod:`svcnet.dns.records` over UDP and TCP, for the state a callable
returns at the moment of each query, so it follows updates (the zone is updated
incrementally with :meth:`svcnet.dns.records.Zone.update` when the state object changes).

Behaviour:

- authoritative (AA) for the cluster domain and the reverse zones of the service
  and cluster CIDRs; names are case-insensitive and the question is echoed as asked;
- TTL 5 s on every record (CoreDNS's kubernetes plugin default); the SOA of each
  zone is ``ns.dns.<domain>. hostmaster.<domain>. <serial> 7200 1800 86400 5`` with
  the state revision as serial, and goes in the authority section of NXDOMAIN and
  empty (NODATA) answers, so that both are cached for 5 s;
- SRV answers carry the targets' A/AAAA records in the additional section;
- an alias (ExternalName) is followed inside our zones as CoreDNS does: the answer
  holds each CNAME link, then the records of the asked type of the last target
  (:meth:`svcnet.dns.records.Zone.lookup`), so ``getent hosts`` of an ExternalName
  aliasing a service of the cluster gives that service's addresses;
- EDNS(0): the client's advertised UDP payload size is honoured (at least 512;
  512 without EDNS); our OPT record advertises 1232. An answer that does not fit
  loses its additional records first; if it still does not fit it is sent with
  the TC bit and no records, so the client retries over TCP (limit 65535);
- other names are forwarded to ``upstream`` (host, port) when one is given, or
  REFUSED (the default); an alias whose chain leaves our zones is followed
  through the upstream when there is one;
- what is not a query is never answered: a message with the QR bit set (a
  response, or a spoofed one from our own address) is dropped, so a server cannot
  loop with itself or ping-pong with another; a query with an opcode other than
  QUERY gets NOTIMP; an undecodable one, one without exactly one question, or one
  whose name breaks RFC 1035's limits (a label over 63 octets, a name over 255)
  FORMERR; a name outside our zones REFUSED (or forwarded); a type we hold no
  record of (0, 1234, 65535...) an empty answer (NXDOMAIN when the name does not
  exist). Names are compared label by label (:meth:`svcnet.dns.records.Zone.
  lookup_labels`): a label holding a literal dot matches nothing. SERVFAIL is
  left for a failing upstream and for a bug (counted in ``errors``).

Speed: every encoded answer is cached by the query's bytes after its ID (so the
client's case, flags and EDNS size are part of the key) until the state changes;
a cache hit costs a dict lookup and two bytes concatenations. Forwarded answers
are not cached.

:func:`start_in_netns` starts a server whose sockets live in a named network
namespace: they are created by a short-lived thread that entered it
(:func:`svcnet.kernel.enter`; a socket keeps the namespace it was created in).

As a process (the lab runs one per node, inside the node's namespace)::

    python -m svcnet.dns.server --state /run/svcnet/LAB/state.pickle \
        --listen 192.168.56.11:53 [--netns svcnet-LAB-n-node-a]

serves the state pickled in ``--state`` (written by :class:`svcnet.lab.control.Lab`),
reloading it when the file changes (checked on every query) or on SIGHUP; it
prints ``ready`` once bound and stops on SIGTERM. Other names are REFUSED.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import itertools
import os
import pickle
import signal
import socket
import struct
import sys
import threading
from collections.abc import Callable

from dnslib import (
    AAAA,
    CNAME,
    EDNS0,
    PTR,
    QTYPE,
    RCODE,
    RR,
    SOA,
    SRV,
    TXT,
    A,
    DNSLabel,
    DNSRecord,
)

from svcnet import dns
from svcnet.kernel.setns import enter
from svcnet.state import ClusterState

__all__ = ["TTL", "DnsServer", "StateFile", "main", "start_in_netns"]

TTL = 5
OUR_UDP_PAYLOAD = 1232
CLASSIC_UDP = 512
CACHE_MAX = 50_000
UPSTREAM_TIMEOUT = 2.0
TCP_IDLE = 10.0
BIND_TRIES = 20  # port 0: UDP ports tried until the same TCP port is free

StateSource = Callable[[], ClusterState]


def _rdata(rtype: str, text: str) -> object:
    if rtype == "A":
        return A(text)
    if rtype == "AAAA":
        return AAAA(text)
    if rtype == "CNAME":
        return CNAME(text)
    if rtype == "PTR":
        return PTR(text)
    if rtype == "SRV":
        prio, weight, port, target = text.split()
        return SRV(int(prio), int(weight), int(port), target)
    if rtype == "TXT":
        return TXT(text.strip('"'))
    raise ValueError(f"no rdata for {rtype}")


class DnsServer:
    """Serve ``source()``'s Service DNS on ``host:port`` (port 0: pick a free one)."""

    def __init__(
        self,
        source: StateSource,
        host: str = "127.0.0.1",
        port: int = 53,
        *,
        upstream: tuple[str, int] | None = None,
        ttl: int = TTL,
        netns: str | None = None,
        cache: bool = True,
        incremental: bool = True,
    ) -> None:
        self.source = source
        # False: rebuild the zone when the state changes (states that need not
        # descend from one another, e.g. reloaded from a file)
        self.incremental = incremental
        self.cache = cache  # False: encode every answer afresh (for measurements)
        self.host = host
        self.port = port
        self.upstream = upstream
        self.ttl = ttl
        self.netns = netns
        self._lock = threading.Lock()
        self._state: ClusterState | None = None
        self._zone: dns.Zone | None = None
        self._udp_cache: dict[bytes, bytes] = {}
        self._tcp_cache: dict[bytes, bytes] = {}
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self.errors = 0  # queries that raised inside the server (answered SERVFAIL)
        self.dropped = 0  # messages not answered: responses (QR set), runts
        self.udp_sent = 0  # UDP replies sent

    # -- lifecycle -----------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def start(self) -> DnsServer:
        if self.netns is None:
            self._bind()
        else:
            self._bind_in_netns(self.netns)
        self._spawn(self._serve_udp, "udp")
        self._spawn(self._serve_tcp, "tcp")
        return self

    def stop(self) -> None:
        self._stopping.set()
        for sock in (self._udp, self._tcp, *list(self._conns)):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(timeout=2.0)
        for sock in (self._udp, self._tcp):
            if sock is not None:
                sock.close()
        self._threads.clear()

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, target: Callable[[], None], what: str) -> threading.Thread:
        t = threading.Thread(target=target, name=f"svcnet-dns-{what}", daemon=True)
        t.start()
        self._threads.append(t)
        return t

    def _bind(self) -> None:
        # port 0: the UDP socket picks a free port, which may be taken for TCP (by
        # some connection's local end): then try another one
        for attempt in itertools.count(1):
            try:
                self._bind_once()
                return
            except OSError as e:
                if self.port != 0 or e.errno != errno.EADDRINUSE or attempt >= BIND_TRIES:
                    raise

    def _bind_once(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            udp.bind((self.host, self.port))
            port = udp.getsockname()[1]
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((self.host, port))
            tcp.listen(128)
        except OSError:
            udp.close()
            tcp.close()
            raise
        with contextlib.suppress(OSError):
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.port = port
        self._udp, self._tcp = udp, tcp

    def _bind_in_netns(self, name: str) -> None:
        failure: list[BaseException] = []

        def run() -> None:  # this thread enters the namespace and then ends
            try:
                enter(name)
                self._bind()
            except BaseException as e:
                failure.append(e)

        t = threading.Thread(target=run, name=f"svcnet-dns-bind-{name}", daemon=True)
        t.start()
        t.join()
        if failure:
            raise failure[0]

    # -- the zone ------------------------------------------------------------------
    def zone(self) -> dns.Zone:
        """The zone of the current state (updated incrementally when it changed)."""
        state = self.source()
        zone = self._zone
        if state is self._state and zone is not None:
            return zone
        with self._lock:
            if state is self._state and self._zone is not None:
                return self._zone
            old, zone = self._state, self._zone
            if (
                self.incremental
                and old is not None
                and zone is not None
                and state.revision > old.revision
            ):
                zone = zone.update(old, state)
            else:
                zone = dns.records(state)
            self._udp_cache = {}
            self._tcp_cache = {}
            self._state, self._zone = state, zone
            return zone

    # -- serving -------------------------------------------------------------------
    def _serve_udp(self) -> None:
        sock = self._udp
        assert sock is not None
        recv, send = sock.recvfrom, sock.sendto
        while not self._stopping.is_set():
            try:
                data, peer = recv(65535)
            except OSError:
                break
            if not data:
                if self._stopping.is_set():
                    break
                continue
            reply = self.handle(data, tcp=False)
            if reply is not None:
                self.udp_sent += 1
                with contextlib.suppress(OSError):
                    send(reply, peer)

    def _serve_tcp(self) -> None:
        sock = self._tcp
        assert sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                break
            self._conns.add(conn)
            t = threading.Thread(target=self._serve_conn, args=(conn,), daemon=True)
            t.start()

    def _serve_conn(self, conn: socket.socket) -> None:
        conn.settimeout(TCP_IDLE)
        try:
            while not self._stopping.is_set():
                head = _recv_exact(conn, 2)
                if head is None:
                    return
                (length,) = struct.unpack("!H", head)
                data = _recv_exact(conn, length)
                if data is None:
                    return
                reply = self.handle(data, tcp=True)
                if reply is None:
                    return
                conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            return
        finally:
            self._conns.discard(conn)
            conn.close()

    def handle(self, data: bytes, *, tcp: bool) -> bytes | None:
        """The reply to one query message (None: drop it)."""
        if len(data) < 12 or data[2] & 0x80:  # a runt, or a response: never answered
            self.dropped += 1
            return None
        if data[2] & 0x78:  # opcode other than QUERY (0)
            return _error_reply(data, RCODE.NOTIMP)
        zone = self.zone()
        cache = self._tcp_cache if tcp else self._udp_cache
        key = data[2:]
        hit = cache.get(key)
        if hit is not None:
            return data[:2] + hit
        try:
            reply, cacheable = self._answer(data, zone, tcp)
        except Exception:
            self.errors += 1
            return _error_reply(data, RCODE.SERVFAIL)
        if cacheable and self.cache:
            if len(cache) >= CACHE_MAX:
                cache.clear()
            cache[key] = reply[2:]
        return reply

    def _answer(self, data: bytes, zone: dns.Zone, tcp: bool) -> tuple[bytes, bool]:
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return _error_reply(data, RCODE.FORMERR) or b"", False
        reply = request.reply(ra=int(self.upstream is not None), aa=1)
        edns = next((r for r in request.ar if r.rtype == QTYPE.OPT), None)
        limit = 65535 if tcp else CLASSIC_UDP
        if edns is not None:
            if not tcp:
                limit = max(CLASSIC_UDP, min(int(edns.rclass), 65535))
            reply.add_ar(EDNS0(udp_len=OUR_UDP_PAYLOAD))
        if request.header.opcode != 0 or len(request.questions) != 1:
            reply.header.rcode = RCODE.NOTIMP if request.header.opcode else RCODE.FORMERR
            reply.header.aa = 0
            return reply.pack(), True
        q = request.q
        qname = q.qname
        labels = dns.wire_labels(qname.label)
        if labels is None:
            return _error_reply(data, RCODE.FORMERR) or b"", True
        qtype = QTYPE.get(q.qtype, str(q.qtype))
        answer = zone.lookup_labels(labels, str(qtype))
        if answer.rcode == dns.REFUSED or q.qclass != 1:
            if self.upstream is not None and q.qclass == 1:
                return self._forward(data, tcp), False
            reply.header.aa = 0
            reply.header.rcode = RCODE.REFUSED
            return reply.pack(), True
        cacheable = True
        if answer.rcode == dns.NXDOMAIN:
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(self._soa(answer.zone, zone))
        else:
            rtype = q.qtype
            if answer.qtype == "SOA" and answer.name == answer.zone:
                reply.add_answer(self._soa(answer.zone, zone))
            owner = qname  # the question's name as asked, then each alias target
            for _, target in answer.chain:
                reply.add_answer(RR(owner, QTYPE.CNAME, rdata=CNAME(target), ttl=self.ttl))
                owner = DNSLabel(target)
            for text in answer.records:
                reply.add_answer(RR(owner, rtype, rdata=_rdata(answer.qtype, text), ttl=self.ttl))
            final = answer.final
            outside = answer.chain and not answer.records and not zone.zone_of(final)
            if outside and self.upstream is not None:  # an alias leaving our zones
                cacheable = False
                for rr in self._chase(final + ".", q.qtype, tcp):
                    reply.add_answer(rr)
            if answer.qtype == "SRV":
                for text in answer.records:
                    self._add_target(reply, zone, text.split()[3])
            if not reply.rr:
                reply.add_auth(self._soa(answer.zone, zone))
        packed = reply.pack()
        if len(packed) > limit and len(reply.ar) > (edns is not None):
            # drop the optional additional records (keeping OPT) before truncating
            reply.ar = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
            packed = reply.pack()
        if len(packed) > limit:
            packed = self._truncated(request, edns is not None).pack()
        return packed, cacheable

    def _add_target(self, reply: DNSRecord, zone: dns.Zone, target: str) -> None:
        for rtype in ("A", "AAAA"):
            for text in zone.lookup(target, rtype).records:
                reply.add_ar(
                    RR(target, getattr(QTYPE, rtype), rdata=_rdata(rtype, text), ttl=self.ttl)
                )

    def _truncated(self, request: DNSRecord, edns: bool) -> DNSRecord:
        reply = request.reply(ra=int(self.upstream is not None), aa=1)
        reply.header.tc = 1
        if edns:
            reply.add_ar(EDNS0(udp_len=OUR_UDP_PAYLOAD))
        return reply

    def _soa(self, apex: str, zone: dns.Zone) -> RR:
        d = zone.domain
        serial = zone.revision % (1 << 32)
        rdata = SOA(
            mname=f"ns.dns.{d}.",
            rname=f"hostmaster.{d}.",
            times=(serial, 7200, 1800, 86400, self.ttl),
        )
        return RR(DNSLabel(apex + "."), QTYPE.SOA, rdata=rdata, ttl=self.ttl)

    # -- upstream ------------------------------------------------------------------
    def _forward(self, data: bytes, tcp: bool) -> bytes:
        assert self.upstream is not None
        try:
            return _exchange(data, self.upstream, tcp)
        except OSError:
            return _error_reply(data, RCODE.SERVFAIL) or b""

    def _chase(self, target: str, qtype: int, tcp: bool) -> list[RR]:
        assert self.upstream is not None
        query = DNSRecord.question(target.rstrip("."), QTYPE.get(qtype, "A"))
        try:
            reply = DNSRecord.parse(_exchange(query.pack(), self.upstream, tcp))
        except Exception:
            return []
        return list(reply.rr)


def _exchange(data: bytes, upstream: tuple[str, int], tcp: bool) -> bytes:
    family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
    if tcp:
        with socket.create_connection(upstream, timeout=UPSTREAM_TIMEOUT) as s:
            s.sendall(struct.pack("!H", len(data)) + data)
            head = _recv_exact(s, 2)
            if head is None:
                raise OSError("upstream closed the connection")
            body = _recv_exact(s, struct.unpack("!H", head)[0])
            if body is None:
                raise OSError("upstream closed the connection")
            return body
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(UPSTREAM_TIMEOUT)
        s.connect(upstream)
        s.send(data)
        while True:
            reply = s.recv(65535)
            if reply[:2] == data[:2]:
                return reply


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _error_reply(data: bytes, rcode: int) -> bytes | None:
    """A header-only reply with ``rcode`` (the question echoed when it parses)."""
    if len(data) < 12:
        return None
    try:
        reply = DNSRecord.parse(data).reply()
        reply.rr, reply.auth, reply.ar = [], [], []
        reply.header.aa = 0
        reply.header.rcode = rcode
        packed: bytes = reply.pack()
        return packed
    except Exception:
        flags = 0x8000 | (data[2] & 0x79) << 8 | rcode  # QR, opcode and RD copied
        return data[:2] + struct.pack("!HHHHH", flags, 0, 0, 0, 0)


def start_in_netns(
    netns: str,
    source: StateSource,
    host: str,
    port: int = 53,
    *,
    upstream: tuple[str, int] | None = None,
    ttl: int = TTL,
) -> DnsServer:
    """A started server bound to ``host:port`` inside network namespace ``netns``."""
    return DnsServer(source, host, port, upstream=upstream, ttl=ttl, netns=netns).start()


# -- as a process ----------------------------------------------------------------------


class StateFile:
    """A state source reading a pickled :class:`ClusterState` from ``path``: it is
    read again when the file's identity (inode, size, mtime) changed since the last
    call or after :meth:`invalidate`; an unreadable file keeps the last state."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._state: ClusterState | None = None
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        self._stamp = None

    def __call__(self) -> ClusterState:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = None
        state = self._state
        if state is not None and (stamp is None or stamp == self._stamp):
            return state
        with self._lock:
            if self._state is not None and (stamp is None or stamp == self._stamp):
                return self._state
            try:
                with open(self.path, "rb") as f:
                    loaded = pickle.load(f)
            except (OSError, EOFError, pickle.UnpicklingError):
                loaded = None
            if isinstance(loaded, ClusterState):
                self._state, self._stamp = loaded, stamp
            elif self._state is None:
                raise OSError(f"no cluster state in {self.path}")
            return self._state


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"{text!r}: use HOST:PORT")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Serve a lab's Service DNS (see the module doc).")
    ap.add_argument("--state", required=True, help="pickled ClusterState, reloaded on change")
    ap.add_argument("--listen", type=_listen, default=("127.0.0.1", 53), metavar="HOST:PORT")
    ap.add_argument("--netns", default=None, help="bind inside this named network namespace")
    ap.add_argument("--ttl", type=int, default=TTL)
    args = ap.parse_args(argv)
    source = StateFile(args.state)
    source()  # fail early when there is no state
    host, port = args.listen
    server = DnsServer(source, host, port, ttl=args.ttl, netns=args.netns, incremental=False)
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGHUP, lambda *_: source.invalidate())
    print("ready", flush=True)
    sys.stdout.close()
    try:
        while True:
            signal.pause()
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
