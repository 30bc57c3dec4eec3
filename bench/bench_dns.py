"""Load test of the DNS server on loopback (bounded in time and queries).

    python bench/bench_dns.py [--seconds 4] [--procs 1] [--sockets 4] [--window 32] [--no-cache]

The server (svcnet.dns.server, in this process, its own threads) serves a
cluster of 200 services (ClusterIP with a named port, every 10th headless with 5
pods) on 127.0.0.1 and a free port. Client processes (separate from the
server's, so they do not share its interpreter lock) each drive ``--sockets`` UDP
sockets with ``--window`` queries outstanding on each, from a mix of A, SRV, PTR,
headless A and NXDOMAIN queries in random letter case (512 distinct queries).
The server's CPU time per answer is printed too: on a shared machine it says
what the server could do with a core to itself. Every reply is checked: same
ID, the expected rcode and answer count. Printed:
queries/second and errors (wrong or missing replies); a query still unanswered
1 s after it was sent (or after the end) counts as an error and is replaced.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import select
import socket
import struct
import sys
import time

from svcnet import dns, manifests
from svcnet.dns.server import DnsServer
from svcnet.state import Apply, ClusterState

SERVICES = 200


def cluster() -> ClusterState:
    docs: list[dict[str, object]] = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n1"},
            "spec": {"podCIDR": "10.244.0.0/16"},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.56.11"}]},
        },
    ]
    for i in range(SERVICES):
        headless = i % 10 == 0
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"svc-{i}", "namespace": f"ns-{i % 7}"},
                "spec": {
                    "clusterIP": "None" if headless else f"10.96.{i // 250}.{i % 250 + 1}",
                    "selector": {"app": f"a{i}"},
                    "ports": [{"name": "http", "port": 80}],
                },
            }
        )
        if headless:
            for j in range(5):
                docs.append(
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {
                            "name": f"p{i}-{j}",
                            "namespace": f"ns-{i % 7}",
                            "labels": {"app": f"a{i}"},
                        },
                        "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
                        "status": {
                            "podIP": f"10.244.{i}.{j + 1}",
                            "conditions": [{"type": "Ready", "status": "True"}],
                        },
                    }
                )
    return ClusterState.empty().step(Apply(manifests.load(docs)))


QTYPES = {"A": 1, "SRV": 33, "PTR": 12}


def encode(name: str, qtype: str) -> bytes:
    """A query without its ID (flags RD, one question)."""
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    return struct.pack("!HHHHH", 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", QTYPES[qtype], 1)


def workload(state: ClusterState, n: int = 512) -> list[tuple[bytes, int, int]]:
    """(query without ID, expected rcode, expected answer count)."""
    rnd = random.Random(7)
    zone = dns.records(state)
    out = []
    for _ in range(n):
        i = rnd.randrange(SERVICES)
        base = f"svc-{i}.ns-{i % 7}.svc.cluster.local"
        kind = rnd.choice(["A", "A", "SRV", "PTR", "NX"])
        if kind == "A":
            name, qtype = base, "A"
        elif kind == "SRV":
            name, qtype = f"_http._tcp.{base}", "SRV"
        elif kind == "PTR" and i % 10:
            name, qtype = dns.reverse_name(f"10.96.{i // 250}.{i % 250 + 1}"), "PTR"
        else:
            name, qtype = f"missing-{i}.ns-{i % 7}.svc.cluster.local", "A"
        ans = zone.lookup(name, qtype)
        rcode = {"NOERROR": 0, "NXDOMAIN": 3}[ans.rcode]
        cased = "".join(c.upper() if rnd.random() < 0.3 else c for c in name)
        out.append((encode(cased, qtype), rcode, len(ans.records)))
    return out


def client(
    port: int,
    seconds: float,
    sockets: int,
    window: int,
    work: list[tuple[bytes, int, int]],
    result: mp.Queue,
) -> None:  # type: ignore[type-arg]
    socks = []
    for _ in range(sockets):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        socks.append(s)
    poller = select.epoll()
    by_fd = {s.fileno(): s for s in socks}
    for s in socks:
        poller.register(s.fileno(), select.EPOLLIN)
    pending: dict[int, tuple[int, int, float, socket.socket]] = {}  # id -> rcode, ancount, t, sock
    next_id = 0
    k = 0
    sent = ok = errors = 0

    def send(s: socket.socket) -> None:
        nonlocal next_id, k, sent
        next_id = (next_id + 1) & 0xFFFF
        while next_id in pending:
            next_id = (next_id + 1) & 0xFFFF
        q, rcode, count = work[k % len(work)]
        k += 1
        pending[next_id] = (rcode, count, time.perf_counter(), s)
        try:
            s.send(struct.pack("!H", next_id) + q)
            sent += 1
        except BlockingIOError:
            del pending[next_id]

    for s in socks:
        for _ in range(window):
            send(s)
    start = time.perf_counter()
    end = start + seconds
    draining = False
    sweep = start + 0.25
    lost = 0
    while True:
        now = time.perf_counter()
        if now >= sweep:  # a query unanswered for 1 s is lost: count it, send another
            sweep = now + 0.25
            for rid, (_, _, t, sk) in list(pending.items()):
                if now - t > 1.0:
                    del pending[rid]
                    lost += 1
                    if not draining:
                        send(sk)
        if now >= end and not draining:
            draining, end = True, now + 1.0
        if draining and (not pending or now >= end):
            break
        for fd, _ in poller.poll(0.05):
            s = by_fd[fd]
            while True:
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    break
                (rid, flags, _qd, an) = struct.unpack("!HHHH", data[:8])
                want = pending.pop(rid, None)
                if want is None or (flags & 0x0F, an) != want[:2]:
                    errors += 1
                else:
                    ok += 1
                if not draining:
                    send(s)
    elapsed = min(time.perf_counter(), end) - start
    lost += len(pending)
    result.put((ok, errors + lost, sent, elapsed))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--sockets", type=int, default=4)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--no-cache", action="store_true", help="encode every answer with dnslib")
    args = ap.parse_args(argv)
    state = cluster()
    work = workload(state)
    ctx = mp.get_context("fork")
    with DnsServer(lambda: state, "127.0.0.1", 0, cache=not args.no_cache) as srv:
        q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
        procs = [
            ctx.Process(
                target=client, args=(srv.port, args.seconds, args.sockets, args.window, work, q)
            )
            for _ in range(args.procs)
        ]
        cpu0 = time.process_time()  # this process = the server (clients are children)
        for p in procs:
            p.start()
        results = [q.get(timeout=args.seconds + 30) for _ in procs]
        server_cpu = time.process_time() - cpu0
        for p in procs:
            p.join()
        server_errors = srv.errors
    ok = sum(r[0] for r in results)
    errors = sum(r[1] for r in results) + server_errors
    elapsed = max(r[3] for r in results)
    mode = "dnslib on every query" if args.no_cache else "answer cache"
    print(
        f"dns bench ({mode}): {ok} answers in {elapsed:.2f} s = {ok / elapsed:,.0f} queries/s; "
        f"errors: {errors} "
        f"(client procs {args.procs}, sockets {args.sockets}, window {args.window})"
    )
    per_query = server_cpu / max(ok, 1)
    print(
        f"server CPU: {per_query * 1e6:.1f} us per query (UDP loop, syscalls included) "
        f"= {1 / per_query:,.0f} queries/s per fully available core"
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
