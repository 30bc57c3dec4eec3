"""Real packets in the lab: send a probe, observe its fate (I/O).

A probe is sent from a namespace of the lab (a pod's, a node's, or the external
client's with the source address bound) as a TCP connection or a connected UDP
datagram, and its fate is read off what comes back:

* **answered** — a pod server replied ``<pod> <client seen> <local address>``:
  the packet was forwarded to that endpoint; the client address it saw tells
  whether the source was masqueraded (it differs from the address sent from).
* **pass** — the packet reached its destination untouched: either a pod server
  answered on the very address and port probed, or a *pass listener* did. For
  every probe the prober binds a temporary listener on the destination
  address and port where the packet would end up if no rule touched it: in the
  namespace owning the address (a pod, a node — also for 127.0.0.1, the
  sender's), or else at the external client, which accepts packets for any
  address arriving on its underlay link (it is every node's default gateway).
  A rule that rewrites the destination never lets the packet reach it.
* **refused** — ECONNREFUSED (a TCP RST or ICMP port unreachable; for UDP the
  connected socket reports the ICMP error): a reject.
* **timeout** — nothing within the timeout: a drop.
* **unreachable** — EHOSTUNREACH / ENETUNREACH (no route): counted as pass.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import ipaddress
import select
import socket
import threading
from collections.abc import Iterator

import attrs

from svcnet.kernel import netns
from svcnet.lab.topology import EXT_UNDERLAY_IP, Topology, ext_netns
from svcnet.model import Protocol

IP_FREEBIND = 15
IP_TRANSPARENT = 19  # answers may leave from an address that is not local (AnyIP)
PASS_MARK = "-pass-"
TIMEOUT = 0.6


class Fate(enum.Enum):
    ANSWERED = "answered"
    PASS = "pass"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    ERROR = "error"


@attrs.frozen
class Observation:
    fate: Fate
    pod: str = ""  # the answering pod's name
    endpoint: str = ""  # ip:port the answer came from (after DNAT)
    seen: str = ""  # the client address the answering side saw
    detail: str = ""

    def __str__(self) -> str:
        if self.fate is Fate.ANSWERED:
            return f"{self.pod} at {self.endpoint} saw {self.seen}"
        if self.fate is Fate.PASS:
            return f"pass ({self.detail})" if self.detail else "pass"
        return str(self.fate.value) + (f" ({self.detail})" if self.detail else "")


def _parse(text: str, dst: str) -> Observation:
    parts = text.split()
    if len(parts) >= 3 and parts[0] == PASS_MARK:
        return Observation(Fate.PASS, seen=parts[1].rpartition(":")[0], detail="pass listener")
    if len(parts) >= 3:
        endpoint = parts[2]
        seen = parts[1].rpartition(":")[0]
        if endpoint == dst:
            return Observation(Fate.PASS, parts[0], endpoint, seen, f"{parts[0]} answered on it")
        return Observation(Fate.ANSWERED, parts[0], endpoint, seen)
    return Observation(Fate.ERROR, detail=f"unexpected answer {text!r}")


def send(
    where: str,
    dst_ip: str,
    dst_port: int,
    protocol: Protocol = Protocol.TCP,
    *,
    source: str | None = None,
    timeout: float = TIMEOUT,
) -> Observation:
    """One connection (TCP) or datagram (UDP) from namespace ``where``."""
    kind = socket.SOCK_STREAM if protocol is Protocol.TCP else socket.SOCK_DGRAM
    if protocol is Protocol.SCTP:
        return Observation(Fate.ERROR, detail="SCTP is not sent by the lab")
    with netns.entered(where):
        s = socket.socket(socket.AF_INET, kind)
    dst = f"{dst_ip}:{dst_port}"
    try:
        s.settimeout(timeout)
        if source is not None:
            s.bind((source, 0))
        try:
            s.connect((dst_ip, dst_port))
            s.send(b"?\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(512)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            return Observation(Fate.TIMEOUT)
        except ConnectionRefusedError:
            return Observation(Fate.REFUSED)
        except OSError as e:
            if e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                return Observation(Fate.UNREACHABLE, detail=e.strerror or "")
            return Observation(Fate.ERROR, detail=str(e))
        return _parse(data.decode(errors="replace"), dst)
    finally:
        s.close()


class PassListener:
    """A temporary listener on ``ip:port`` in ``where`` answering ``-pass- ...``."""

    def __init__(self, where: str, ip: str, port: int, protocol: Protocol) -> None:
        kind = socket.SOCK_STREAM if protocol is Protocol.TCP else socket.SOCK_DGRAM
        with netns.entered(where):
            self.sock = socket.socket(socket.AF_INET, kind)
        self.stop_r, self.stop_w = socket.socketpair()
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
            self.sock.setsockopt(socket.IPPROTO_IP, IP_TRANSPARENT, 1)
            self.sock.bind((ip, port))
            if kind == socket.SOCK_STREAM:
                self.sock.listen(64)
        except OSError:
            self.close()
            raise
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            ready, _, _ = select.select([self.sock, self.stop_r], [], [])
            if self.stop_r in ready:
                return
            with contextlib.suppress(OSError):
                if self.sock.type == socket.SOCK_STREAM:
                    conn, client = self.sock.accept()
                    with conn:
                        local = conn.getsockname()
                        conn.sendall(
                            f"{PASS_MARK} {client[0]}:{client[1]} {local[0]}:{local[1]}\n".encode()
                        )
                else:
                    _, client = self.sock.recvfrom(2048)
                    local = self.sock.getsockname()
                    self.sock.sendto(
                        f"{PASS_MARK} {client[0]}:{client[1]} {local[0]}:{local[1]}\n".encode(),
                        client,
                    )

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.stop_w.send(b"x")
        if getattr(self, "thread", None) is not None:
            self.thread.join(1.0)
        for s in (self.sock, self.stop_r, self.stop_w):
            s.close()


@contextlib.contextmanager
def pass_listener(
    topo: Topology, sender: str, dst_ip: str, dst_port: int, protocol: Protocol
) -> Iterator[None]:
    """A pass listener where an untouched packet to ``dst_ip`` would land (see the
    module docstring); nothing when that port is taken there already."""
    where = owner_of(topo, sender, dst_ip)
    try:
        listener: PassListener | None = PassListener(where, dst_ip, dst_port, protocol)
    except (OSError, netns.LabError):
        listener = None
    try:
        yield
    finally:
        if listener is not None:
            listener.close()


def owner_of(topo: Topology, sender: str, dst_ip: str) -> str:
    """The namespace that holds ``dst_ip`` (the external client for any other address)."""
    if ipaddress.ip_address(dst_ip).is_loopback:
        return sender
    pod = topo.pod_at(dst_ip)
    if pod is not None:
        return pod.netns
    node = topo.node_at(dst_ip)
    if node is not None:
        return node.netns
    return ext_netns(topo.lab)


@contextlib.contextmanager
def ext_route(topo: Topology, dst_ip: str, via_ip: str) -> Iterator[None]:
    """Route ``dst_ip`` from the external client through ``via_ip`` for the block."""
    ext = ext_netns(topo.lab)
    if topo.node_at(dst_ip) is not None or dst_ip == EXT_UNDERLAY_IP:
        yield  # node addresses are on the link already
        return
    netns.batch(ext, [f"route replace {dst_ip}/32 via {via_ip} dev eth0 onlink"])
    try:
        yield
    finally:
        netns.batch(ext, [f"route del {dst_ip}/32"], force=True)


@contextlib.contextmanager
def ext_source(topo: Topology, source: str) -> Iterator[None]:
    """Give the external client the address ``source`` for the block."""
    ext = ext_netns(topo.lab)
    if source == EXT_UNDERLAY_IP:
        yield
        return
    netns.batch(ext, [f"addr add {source}/32 dev eth0"], force=True)
    try:
        yield
    finally:
        netns.batch(ext, [f"addr del {source}/32 dev eth0"], force=True)
