"""The lab's pod server: a tiny TCP + UDP responder (standard library only).

Run inside a pod's network namespace as a script::

    python3 podserver.py --name web-1 --tcp 8080 --udp 53

It answers every TCP connection and every UDP datagram with one line::

    <pod name> <client ip>:<client port> <local ip>:<local port>

i.e. who answered, the client address it saw (the node's address when the
source was masqueraded) and the address the packet was delivered to (the
endpoint, after DNAT). When the first bytes of a TCP connection look like an
HTTP request the line is sent as a minimal HTTP/1.0 response, so ``curl``
works. It prints ``ready`` on stdout once every socket is bound.
"""

from __future__ import annotations

import argparse
import select
import signal
import socket
import struct
import sys
import threading

IP_PKTINFO = 8
HTTP_METHODS = (b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ")


def line(name: str, client: tuple[str, int], local: tuple[str, int]) -> bytes:
    return f"{name} {client[0]}:{client[1]} {local[0]}:{local[1]}\n".encode()


def serve_tcp(name: str, conn: socket.socket, client: tuple[str, int]) -> None:
    try:
        conn.settimeout(0.5)
        try:
            first = conn.recv(4096)
        except TimeoutError:
            first = b""
        body = line(name, client, conn.getsockname()[:2])
        if first.startswith(HTTP_METHODS):
            head = (
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            conn.sendall(head + (b"" if first.startswith(b"HEAD ") else body))
        else:
            conn.sendall(body)
    except OSError:
        pass
    finally:
        conn.close()


def serve_udp(name: str, sock: socket.socket) -> None:
    try:
        _, anc, _, client = sock.recvmsg(2048, socket.CMSG_SPACE(12))
    except OSError:
        return
    local_ip = sock.getsockname()[0]
    pktinfo = b""
    for level, kind, data in anc:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
            _ifindex, _spec, addr = struct.unpack("i4s4s", data[:12])
            local_ip = socket.inet_ntoa(addr)
            pktinfo = struct.pack("i4s4s", 0, addr, b"\0\0\0\0")
    reply = line(name, client[:2], (local_ip, sock.getsockname()[1]))
    try:
        if pktinfo:  # answer from the address the datagram was sent to (conntrack needs it)
            sock.sendmsg([reply], [(socket.IPPROTO_IP, IP_PKTINFO, pktinfo)], 0, client)
        else:
            sock.sendto(reply, client)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--bind", default="0.0.0.0")
    ap.add_argument("--tcp", type=int, action="append", default=[])
    ap.add_argument("--udp", type=int, action="append", default=[])
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    tcp, udp = [], []
    for port in args.tcp:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((args.bind, port))
        s.listen(512)
        tcp.append(s)
    for port in args.udp:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        s.bind((args.bind, port))
        udp.append(s)
    print("ready", flush=True)
    sys.stdout.close()
    if not tcp and not udp:
        signal.pause()
    while True:
        readable, _, _ = select.select(tcp + udp, [], [])
        for s in readable:
            if s.type == socket.SOCK_STREAM:
                try:
                    conn, client = s.accept()
                except OSError:
                    continue
                threading.Thread(
                    target=serve_tcp, args=(args.name, conn, client[:2]), daemon=True
                ).start()
            else:
                serve_udp(args.name, s)


if __name__ == "__main__":
    sys.exit(main())
