"""UDP conntrack cleanup against the kernel, with real packets (marker ``kernel``).

Four ``svcnet-ct-*`` namespaces: a client pod, a node (the nftables backend installs a
plan: ClusterIP 10.96.0.10, UDP and TCP port 53), pods A and B (UDP and TCP
responders on 5353 answering their name). Each pod and the client hang off the node
on a veth; the node forwards. Everything is read back from the node's conntrack table
with pyroute2 (in a thread that entered the node's namespace), and the answers are
real datagrams from the responders.

Shown: a connected UDP socket answered by A keeps going to A after the plan replaced
A by B (the stale entry: this is why the cleanup matters); ``clean`` deletes exactly
that entry, the TCP connection's entry to the same ClusterIP stays, and the next
datagram from the same socket is answered by B; deleting the service takes its UDP
flow; an unchanged plan costs no dump; a flow gone before its deletion is not
counted; flows injected with conntrack netlink are cleaned by the rule.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from svcnet.agent.conntrack import ConntrackCleaner, ConntrackError, Flow
from svcnet.backend import Backend, load_backend
from svcnet.errors import BackendErrorKind, SvcnetError
from svcnet.kernel import netns, setns
from svcnet.model import IPFamily, Protocol
from svcnet.plan import Plan
from svcnet.plan.types import Action as A
from svcnet.plan.types import (
    EndpointSet,
    Frontend,
    FrontendKind,
    NodeSettings,
    PlanEndpoint,
    PortPlan,
    Route,
    ServicePlan,
    ServiceRef,
)

pytestmark = pytest.mark.kernel

T = TypeVar("T")
DEADLINE = 20.0  # seconds any wait below may take at most (it normally takes far less)
PREFIX = "svcnet-ct-"
NODE, NODE_IP = "node-a", "10.0.0.1"
CLUSTER_IP, PORT, TARGET = "10.96.0.10", 53, 5353
CLIENT_IP = "10.244.1.20"
PODS = {"A": "10.244.1.11", "B": "10.244.1.12"}
SETTINGS = NodeSettings(NODE, (NODE_IP,), ("10.244.0.0/16",), ("10.96.0.0/16",))
FORWARD = Route(A.FORWARD, EndpointSet.CLUSTER)
REF = ServiceRef("default", "dns")
FAMILIES = {IPFamily.IPv4: socket.AF_INET, IPFamily.IPv6: socket.AF_INET6}


def plan(pod: str | None) -> Plan:
    """The dns service (UDP and TCP 53 -> ``pod``:5353), or no service (None)."""
    if pod is None:
        return Plan(SETTINGS, {})
    eps = [PlanEndpoint(PODS[pod], TARGET)]
    ports = tuple(
        PortPlan.build(
            name,
            IPFamily.IPv4,
            proto,
            [Frontend(FrontendKind.CLUSTER_IP, CLUSTER_IP, PORT)],
            eps,
            (),
            FORWARD,
            FORWARD,
            FORWARD,
            FORWARD,
            FORWARD,
            FORWARD,
        )
        for name, proto in (("dns", Protocol.UDP), ("dns-tcp", Protocol.TCP))
    )
    return Plan(SETTINGS, {REF: ServicePlan(REF, (CLUSTER_IP,), ports)})


def in_ns(ns: str, work: Callable[[], T]) -> T:
    """Run ``work`` in a fresh thread inside ``ns`` (pyroute2 sockets are per thread)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            setns.enter(ns)
            box["value"] = work()
        except BaseException as e:  # handed to the caller
            box["error"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join(DEADLINE)
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def kernel_flows(ns: str) -> list[Any]:
    """Every conntrack entry of ``ns`` (IPv4), read back with pyroute2."""

    def dump() -> list[Any]:
        from pyroute2 import Conntrack

        ct = Conntrack()
        try:
            return list(ct.dump_entries())
        finally:
            ct.close()

    return in_ns(ns, dump)


def to_service(ns: str, proto: int) -> list[Any]:
    return [
        e
        for e in kernel_flows(ns)
        if e.tuple_orig.proto == proto
        and (e.tuple_orig.daddr, e.tuple_orig.dport) == (CLUSTER_IP, PORT)
    ]


class Responders:
    """A UDP and a TCP server on :5353 in a pod's namespace, answering the pod's name."""

    def __init__(self, ns: str, name: str) -> None:
        self.name = name.encode()
        self.stop = threading.Event()
        with setns.entered(ns):
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.udp.bind(("0.0.0.0", TARGET))
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("0.0.0.0", TARGET))
        self.tcp.listen()
        self.udp.settimeout(0.1)
        self.tcp.settimeout(0.1)
        self.conns: list[socket.socket] = []
        self.threads = [threading.Thread(target=f) for f in (self._udp, self._tcp)]
        for t in self.threads:
            t.start()

    def _udp(self) -> None:
        while not self.stop.is_set():
            try:
                _, peer = self.udp.recvfrom(2048)
            except TimeoutError:
                continue
            self.udp.sendto(self.name, peer)

    def _tcp(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            self.conns.append(conn)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(DEADLINE)
        for s in (self.udp, self.tcp, *self.conns):
            s.close()


def ask(sock: socket.socket) -> str:
    """Send a datagram on the connected ``sock`` until one is answered (deadline)."""
    end = time.monotonic() + DEADLINE
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
        while True:  # answers to earlier retries must not be read as this one's
            sock.recv(2048)
    sock.settimeout(0.3)
    while time.monotonic() < end:
        sock.send(b"who?")
        try:
            return sock.recv(2048).decode()
        except (TimeoutError, ConnectionRefusedError):
            continue
    raise AssertionError(f"no answer from {CLUSTER_IP}:{PORT} within {DEADLINE} s")


@pytest.fixture
def lab() -> Iterator[dict[str, str]]:
    """The namespaces, wired: client and pods on veths off the node."""
    with netns.Namespaces(PREFIX) as spaces:
        names = {"node": spaces.new(), "client": spaces.new()}
        names.update({pod: spaces.new() for pod in PODS})
        peers = {"client": CLIENT_IP, **PODS}
        for i, (who, ip) in enumerate(peers.items()):
            dev = f"v{i}"
            netns.batch(
                names["node"],
                [
                    f"link add {dev} type veth peer name eth0 netns {names[who]}",
                    f"addr add {NODE_IP}/32 dev {dev}",
                    f"link set {dev} up",
                    f"route add {ip}/32 dev {dev}",
                ],
            )
            netns.batch(
                names[who],
                [
                    f"addr add {ip}/32 dev eth0",
                    "link set eth0 up",
                    f"route add {NODE_IP}/32 dev eth0",
                    f"route add default via {NODE_IP} dev eth0",
                ],
            )
        netns.sysctls(names["node"], {"net.ipv4.ip_forward": "1"})
        yield names


@pytest.fixture
def backend(lab: dict[str, str]) -> Iterator[Backend]:
    with load_backend("nftables")(NODE, netns=lab["node"]) as b:
        yield b


@pytest.fixture
def pods(lab: dict[str, str]) -> Iterator[dict[str, Responders]]:
    running = {pod: Responders(lab[pod], pod) for pod in PODS}
    try:
        yield running
    finally:
        for r in running.values():
            r.close()


@pytest.fixture
def cleaner(lab: dict[str, str]) -> Iterator[ConntrackCleaner]:
    with ConntrackCleaner(lab["node"]) as c:
        yield c


@contextlib.contextmanager
def client(lab: dict[str, str], kind: int) -> Iterator[socket.socket]:
    with setns.entered(lab["client"]):
        sock = socket.socket(socket.AF_INET, kind)
    with sock:
        sock.settimeout(DEADLINE)
        sock.connect((CLUSTER_IP, PORT))
        yield sock


def reply_sources(flows: list[Any]) -> list[tuple[str, int]]:
    return [(e.tuple_reply.saddr, e.tuple_reply.sport) for e in flows]


def test_replaced_endpoint_stale_udp_flow_is_deleted_and_the_new_pod_answers(
    lab: dict[str, str],
    backend: Backend,
    pods: dict[str, Responders],
    cleaner: ConntrackCleaner,
) -> None:
    node = lab["node"]
    old, new = plan("A"), plan("B")
    backend.sync(old)
    with client(lab, socket.SOCK_DGRAM) as udp, client(lab, socket.SOCK_STREAM) as tcp:
        assert ask(udp) == "A"
        assert reply_sources(to_service(node, socket.IPPROTO_UDP)) == [(PODS["A"], TARGET)]
        assert reply_sources(to_service(node, socket.IPPROTO_TCP)) == [(PODS["A"], TARGET)]

        backend.update(new)
        # without the cleanup the same socket keeps going to A: the entry NATs it there
        assert ask(udp) == "A"
        assert ask(udp) == "A"

        assert cleaner.clean(old, new) == 1
        assert to_service(node, socket.IPPROTO_UDP) == []
        tcp_left = to_service(node, socket.IPPROTO_TCP)
        assert reply_sources(tcp_left) == [(PODS["A"], TARGET)], "the TCP flow was touched"

        assert ask(udp) == "B"
        assert reply_sources(to_service(node, socket.IPPROTO_UDP)) == [(PODS["B"], TARGET)]

        # nothing UDP changed: 0 without a dump
        dumps = cleaner.dumps
        assert cleaner.clean(new, new) == 0
        assert cleaner.clean(new, plan("B")) == 0  # an equal plan, another object
        assert cleaner.dumps == dumps

        # the service is deleted: its UDP flow goes, the TCP connection's entry stays
        gone = plan(None)
        backend.update(gone)
        assert cleaner.clean(new, gone) == 1
        assert cleaner.dumps == dumps + 1  # one dump, filtered to the deleted frontend
        assert to_service(node, socket.IPPROTO_UDP) == []
        assert reply_sources(to_service(node, socket.IPPROTO_TCP)) == [(PODS["A"], TARGET)]
        assert tcp.fileno() >= 0


def test_first_clean_after_a_restart_clears_flows_to_vanished_endpoints(
    lab: dict[str, str],
    backend: Backend,
    pods: dict[str, Responders],
) -> None:
    backend.sync(plan("A"))
    with client(lab, socket.SOCK_DGRAM) as udp:
        assert ask(udp) == "A"
        backend.update(plan("B"))  # changed while no agent was watching
        with ConntrackCleaner(lab["node"]) as fresh:
            assert fresh.clean(None, plan("B")) == 1
        assert ask(udp) == "B"


def test_a_flow_gone_before_its_deletion_is_not_counted(
    lab: dict[str, str], cleaner: ConntrackCleaner
) -> None:
    flow = Flow(IPFamily.IPv4, Protocol.UDP, CLIENT_IP, 40000, CLUSTER_IP, PORT, PODS["A"], TARGET)
    inject(lab["node"], [flow])
    assert cleaner.flows(IPFamily.IPv4) == [flow]
    assert cleaner.delete([flow]) == 1
    assert cleaner.delete([flow]) == 0  # ENOENT: gone already
    assert cleaner.flows(IPFamily.IPv4) == []


def inject(ns: str, flows: list[Flow]) -> None:
    """Create conntrack entries for ``flows`` with conntrack netlink (no packets)."""

    def add() -> None:
        from pyroute2 import Conntrack
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

        cts = {fam: Conntrack(nfgen_family=af) for fam, af in FAMILIES.items()}
        try:
            for f in flows:
                af = FAMILIES[f.family]
                orig = NFCTAttrTuple(
                    family=af,
                    saddr=f.src_ip,
                    daddr=f.dst_ip,
                    proto=socket.IPPROTO_UDP,
                    sport=f.src_port,
                    dport=f.dst_port,
                )
                reply = NFCTAttrTuple(
                    family=af,
                    saddr=f.reply_src_ip,
                    daddr=f.src_ip,
                    proto=socket.IPPROTO_UDP,
                    sport=f.reply_src_port,
                    dport=f.src_port,
                )
                cts[f.family].entry("add", timeout=120, tuple_orig=orig, tuple_reply=reply)
        finally:
            for ct in cts.values():
                ct.close()

    in_ns(ns, add)


def test_injected_flows_are_cleaned_by_the_rule(
    lab: dict[str, str], cleaner: ConntrackCleaner
) -> None:
    """200 flows to the service, half answered by A (stale after A -> B), half by B,
    and 50 to another address: exactly the 100 stale ones go."""
    node = lab["node"]
    to_a = [
        Flow(IPFamily.IPv4, Protocol.UDP, CLIENT_IP, 20000 + i, CLUSTER_IP, PORT, PODS["A"], TARGET)
        for i in range(100)
    ]
    to_b = [
        Flow(IPFamily.IPv4, Protocol.UDP, CLIENT_IP, 30000 + i, CLUSTER_IP, PORT, PODS["B"], TARGET)
        for i in range(100)
    ]
    other = [
        Flow(
            IPFamily.IPv4, Protocol.UDP, CLIENT_IP, 40000 + i, "192.0.2.1", PORT, "192.0.2.1", PORT
        )
        for i in range(50)
    ]
    inject(node, to_a + to_b + other)
    assert cleaner.clean(plan("A"), plan("B")) == 100
    left = {(f.src_port, f.reply_src_ip) for f in cleaner.flows(IPFamily.IPv4)}
    assert left == {(f.src_port, f.reply_src_ip) for f in to_b + other}


def test_a_missing_namespace_is_an_svcnet_error_naming_it() -> None:
    with pytest.raises(ConntrackError, match="svcnet-ct-missing: open the conntrack socket") as e:
        ConntrackCleaner("svcnet-ct-missing")
    assert isinstance(e.value, SvcnetError)
    assert e.value.kind is BackendErrorKind.NOT_FOUND


def udp_plan(pod: str, family: IPFamily) -> Plan:
    """A UDP service with a ClusterIP and NodePort 30053 in ``family`` -> ``pod``."""
    v6 = family is IPFamily.IPv6
    ep = PlanEndpoint(f"fd00:244::{pod}" if v6 else f"10.244.1.{pod}", TARGET)
    fes = [
        Frontend(FrontendKind.CLUSTER_IP, "fd00:96::a" if v6 else CLUSTER_IP, PORT),
        Frontend(FrontendKind.NODE_PORT, "fd00::1" if v6 else NODE_IP, 30053),
    ]
    p = PortPlan.build("dns", family, Protocol.UDP, fes, [ep], (), *(FORWARD,) * 6)
    settings = NodeSettings(NODE, ("10.0.0.1", "fd00::1"), (), ())
    return Plan(settings, {REF: ServicePlan(REF, (fes[0].ip,), (p,))})


@pytest.mark.parametrize("family", list(IPFamily), ids=lambda f: f.value)
def test_node_port_and_ipv6_flows_are_cleaned_by_port_on_any_address(
    lab: dict[str, str], cleaner: ConntrackCleaner, family: IPFamily
) -> None:
    """Flows to the NodePort on two node addresses and to the ClusterIP, answered by
    the old endpoint, go; a flow to the next port and one answered by the new
    endpoint stay."""
    v6 = family is IPFamily.IPv6
    old_ep, new_ep = ("fd00:244::11", "fd00:244::12") if v6 else ("10.244.1.11", "10.244.1.12")
    client_ip = "fd00:244::20" if v6 else CLIENT_IP
    node_ips = ("fd00::1", "fd00:1::1") if v6 else (NODE_IP, "172.16.0.1")
    cluster_ip = "fd00:96::a" if v6 else CLUSTER_IP

    def f(sport: int, dst: str, dport: int, reply: str) -> Flow:
        rport = TARGET if reply in (old_ep, new_ep) else dport
        return Flow(family, Protocol.UDP, client_ip, sport, dst, dport, reply, rport)

    stale = [f(1, node_ips[0], 30053, old_ep), f(2, node_ips[1], 30053, old_ep)]
    stale.append(f(3, cluster_ip, PORT, old_ep))
    kept = [f(4, node_ips[0], 30054, old_ep), f(5, node_ips[1], 30053, new_ep)]
    inject(lab["node"], stale + kept)
    dumps = cleaner.dumps
    assert cleaner.clean(udp_plan("11", family), udp_plan("12", family)) == 3
    assert cleaner.dumps == dumps + 2  # the ClusterIP and the NodePort, kernel-filtered
    assert sorted(cleaner.flows(family), key=lambda x: x.src_port) == kept


def test_a_failed_clean_names_the_namespace_and_is_owed(
    lab: dict[str, str], cleaner: ConntrackCleaner
) -> None:
    """A dump that fails raises ConntrackError naming the namespace and the
    operation; the next clean, even with no plan change, still deletes the flow."""
    node = lab["node"]
    flow = Flow(IPFamily.IPv4, Protocol.UDP, CLIENT_IP, 40000, CLUSTER_IP, PORT, PODS["A"], TARGET)
    inject(node, [flow])
    real = cleaner._dump_all

    async def broken(scopes: Any) -> list[Flow]:
        raise OSError(errno.ENOBUFS, "injected failure")

    cleaner._dump_all = broken  # type: ignore[method-assign]
    with pytest.raises(ConntrackError, match=f"network namespace {node}: dump the UDP flows"):
        cleaner.clean(plan("A"), plan("B"))
    cleaner._dump_all = real  # type: ignore[method-assign]
    assert cleaner.flows(IPFamily.IPv4) == [flow]
    assert cleaner.clean(plan("B"), plan("B")) == 1  # owed: from the failed call's old plan
    assert cleaner.flows(IPFamily.IPv4) == []
    assert cleaner.clean(plan("B"), plan("B")) == 0
