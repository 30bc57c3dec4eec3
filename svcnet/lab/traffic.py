"""Scenario probes as real packets: ``svcnet scenario run --traffic`` (I/O).

:class:`TrafficChecker` is the scenario runner's traffic hook: for each scenario
it builds a lab (its own namespaces, programmed with the chosen kernel backend),
brings it up to date after every accepted ``apply``/``delete``, sends each probe
as real packets and compares the observed fate with the expectation:

* ``forward``: every connection is answered by one of the expected endpoints;
  with several endpoints and no affinity, each must answer at least once in
  ``8 x n`` connections (the chance of missing one by bad luck is below
  ``n * e**-8``); with ``sticky: true``, all answers come from one endpoint;
  ``masquerade``: the client address the endpoint saw differs from the one the
  probe was sent from. From a node (or a host-network pod) the sender's address
  is the node's own, so masquerade cannot be told apart and is not checked.
* ``reject``: connection refused; ``drop``: timeout; ``pass``: the packet reached
  its destination untouched (see :mod:`svcnet.lab.prober`).

A probe that cannot be realised with real packets is reported as skipped, with
the reason: IPv6 (the lab is IPv4 only), SCTP, a ``via`` probe whose packet the
sender's own node would handle first (a ClusterIP, or any address that is not
the ``via`` node's), an external source using a cluster address, an endpoint
that is not a pod of the lab.

``dns`` steps (:meth:`TrafficChecker.check_dns`): the query is sent over UDP to
the real DNS server of the lab (the pod's node's, or the first node's for a query
without ``from``), from inside the pod's namespace, trying the names of the pod's
search path as glibc does (:func:`svcnet.dns.search_names`), and the answer is
compared with the expectation.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import socket
from collections.abc import Iterator

import attrs

from svcnet import dns
from svcnet.backend import Backend
from svcnet.kernel import netns
from svcnet.lab import prober
from svcnet.lab.control import DNS_PORT, Lab
from svcnet.lab.prober import Fate, Observation
from svcnet.lab.topology import Topology, ext_netns
from svcnet.model import IPFamily, Protocol, parse_endpoint
from svcnet.probe import Probe, Verdict
from svcnet.scenario import ProbeSpec, Scenario, Status
from svcnet.scenario.format import DnsQuery, dns_text, norm_record
from svcnet.state import ClusterState

_counter = itertools.count(1)


class Unrealisable(Exception):
    """This probe cannot be sent as real packets (the message says why)."""


@attrs.frozen
class Sender:
    netns: str
    source: str  # the address the packet carries
    bind: str | None  # bind the socket to this address (external client)
    via_ip: str | None  # external client: route the destination through this node
    node_source: bool  # the sender is a node (masquerade is invisible)


@attrs.frozen
class TrafficCheck:
    status: Status
    observed: str = ""
    reason: str = ""


def _in(ip: str, cidrs: tuple[str, ...]) -> bool:
    a = ipaddress.ip_address(ip)
    return any(a in ipaddress.ip_network(c, strict=False) for c in cidrs)


def sender_for(topo: Topology, spec: ProbeSpec) -> Sender:
    """Where and how to send ``spec`` in the lab, or :class:`Unrealisable`."""
    if IPFamily.of(spec.dst_ip) is not IPFamily.IPv4:
        raise Unrealisable("the lab is IPv4 only")
    if spec.protocol is Protocol.SCTP:
        raise Unrealisable("the lab does not send SCTP")
    src = spec.source
    if src.node is not None:
        node = topo.node(src.node)
        if node is None:
            raise Unrealisable(f"node {src.node} is not in the lab")
        return Sender(node.netns, node.ip, None, None, True)
    if src.pod is not None:
        pod = topo.pod(src.pod)
        if pod is None:
            raise Unrealisable(f"pod {src.pod} is not in the lab")
        if src.via is not None and src.via != pod.node:
            via = topo.node(src.via)
            if _in(spec.dst_ip, topo.service_cidrs):
                raise Unrealisable(
                    "a via probe to a ClusterIP: the pod's own node would handle it first"
                )
            if via is None or spec.dst_ip != via.ip:
                raise Unrealisable(
                    f"a via probe to {spec.dst_ip}: the pod's own node would handle it first"
                )
            _check_return_path(topo, spec, src.via)
        return Sender(pod.netns, pod.ip, None, None, pod.host_network)
    assert src.external is not None and src.via is not None
    via = topo.node(src.via)
    if via is None:
        raise Unrealisable(f"node {src.via} is not in the lab")
    ext = src.external
    if IPFamily.of(ext) is not IPFamily.IPv4:
        raise Unrealisable("the lab is IPv4 only")
    other = topo.node_at(spec.dst_ip)
    if other is not None and other.name != via.name:
        raise Unrealisable(
            f"the destination is node {other.name}'s address: that node would handle it"
        )
    if ext == spec.dst_ip:
        raise Unrealisable("the source is the destination address: it would never leave the client")
    sender_node = topo.node_at(ext)
    if sender_node is not None:  # another node reaching this one
        if spec.dst_ip != via.ip:
            raise Unrealisable(
                f"an external source using node {sender_node.name}'s address: "
                "its own rules would handle the packet first"
            )
        return Sender(sender_node.netns, ext, None, None, False)
    if (
        _in(ext, topo.cluster_cidrs)
        or _in(ext, topo.service_cidrs)
        or topo.pod_at(ext) is not None
        or ipaddress.ip_address(ext).is_loopback
    ):
        raise Unrealisable("an external source using a cluster address")
    return Sender(ext_netns(topo.lab), ext, ext, via.ip, False)


def _check_return_path(topo: Topology, spec: ProbeSpec, via: str) -> None:
    """A pod's packet handled on another node: an endpoint's unmasqueraded reply
    goes back to the pod directly, bypassing the node that rewrote the request."""
    if spec.expected.verdict is not Verdict.FORWARD:
        return
    for ep in sorted(spec.expected.endpoints):
        ip, _ = parse_endpoint(ep)
        pod = topo.pod_at(ip)
        node = topo.node_at(ip)
        on = pod.node if pod is not None else node.name if node is not None else None
        if on != via and spec.expected.masquerade_of(ep) is False:
            raise Unrealisable(
                f"the reply from {ep} (not on {via}, not masqueraded) would bypass {via}: "
                "the connection cannot work with real packets"
            )


def observe(topo: Topology, sender: Sender, spec: ProbeSpec, count: int) -> list[Observation]:
    """Send ``count`` connections for ``spec`` from ``sender``."""
    with contextlib.ExitStack() as stack:
        if sender.bind is not None:
            stack.enter_context(prober.ext_source(topo, sender.bind))
        if sender.via_ip is not None:
            stack.enter_context(prober.ext_route(topo, spec.dst_ip, sender.via_ip))
        stack.enter_context(
            prober.pass_listener(topo, sender.netns, spec.dst_ip, spec.dst_port, spec.protocol)
        )
        out = []
        for _ in range(count):
            obs = prober.send(
                sender.netns, spec.dst_ip, spec.dst_port, spec.protocol, source=sender.bind
            )
            out.append(obs)
            if obs.fate is not Fate.ANSWERED:
                break  # not a forward: one packet says it all
        return out


def verdict_of(obs: Observation) -> Verdict | None:
    return {
        Fate.ANSWERED: Verdict.FORWARD,
        Fate.PASS: Verdict.PASS,
        Fate.UNREACHABLE: Verdict.PASS,
        Fate.REFUSED: Verdict.REJECT,
        Fate.TIMEOUT: Verdict.DROP,
    }.get(obs.fate)


def judge(spec: ProbeSpec, sender: Sender, seen: list[Observation]) -> list[str]:
    """What differs between the expectation and the observations ([] = it holds)."""
    want = spec.expected
    problems: list[str] = []
    verdicts = {verdict_of(o) for o in seen}
    if verdicts != {want.verdict}:
        got = ", ".join(sorted(str(o) for o in seen[:3]))
        return [f"verdict: expected {want.verdict.value}, observed {got}"]
    if want.verdict is not Verdict.FORWARD:
        return []
    reached = [o.endpoint for o in seen]
    unexpected = sorted(set(reached) - want.endpoints)
    if unexpected:
        problems.append("unexpected endpoints " + ", ".join(unexpected))
    if want.sticky:
        if len(set(reached)) > 1:
            problems.append("sticky: answers came from " + ", ".join(sorted(set(reached))))
    elif len(want.endpoints) > 1:
        missing = sorted(want.endpoints - set(reached))
        if missing:
            problems.append(f"never answered in {len(seen)} connections: " + ", ".join(missing))
    if not sender.node_source:
        for o in seen:
            expect = want.masquerade_of(o.endpoint)
            masq = o.seen != sender.source
            if expect is not None and masq != expect:
                problems.append(
                    f"masquerade towards {o.endpoint}: expected {str(expect).lower()}, "
                    f"the endpoint saw {o.seen} (sent from {sender.source})"
                )
                break
    return problems


def summary(seen: list[Observation]) -> str:
    if not seen:
        return "nothing sent"
    if any(o.fate is not Fate.ANSWERED for o in seen):
        return ", ".join(str(o) for o in seen[:3])
    counts: dict[str, int] = {}
    for o in seen:
        key = f"{o.endpoint} (saw {o.seen})"
        counts[key] = counts.get(key, 0) + 1
    return "answered by " + ", ".join(f"{k} x{n}" for k, n in sorted(counts.items()))


class TrafficChecker:
    """The scenario runner's traffic hook (see the module docstring)."""

    def __init__(self, backend: type[Backend], *, lab_prefix: str = "t") -> None:
        self.backend = backend
        self.lab_prefix = lab_prefix
        self.lab: Lab | None = None

    def begin(self, scenario: Scenario) -> None:
        name = f"{self.lab_prefix}{os.getpid() % 100000}x{next(_counter)}"
        self.lab = Lab(name, self.backend)

    def sync(self, state: ClusterState) -> None:
        assert self.lab is not None
        self.lab.up(state)

    def check(self, spec: ProbeSpec, probe: Probe, state: ClusterState) -> TrafficCheck:
        lab = self.lab
        if lab is None or lab.topo is None:
            return TrafficCheck(Status.SKIPPED, reason="the lab was not built")
        topo = lab.topo
        try:
            sender = sender_for(topo, spec)
            for ep in spec.expected.endpoints:
                ip, _port = parse_endpoint(ep)
                if topo.pod_at(ip) is None and topo.node_at(ip) is None:
                    raise Unrealisable(f"endpoint {ep} is not a pod of the lab")
        except Unrealisable as e:
            return TrafficCheck(Status.SKIPPED, reason=f"not sent as traffic: {e}")
        n = len(spec.expected.endpoints)
        count = 1
        if spec.expected.verdict is Verdict.FORWARD:
            count = 5 if spec.expected.sticky else max(1, min(8 * n, 40))
        try:
            seen = observe(topo, sender, spec, count)
        except Exception as e:
            return TrafficCheck(Status.FAILED, reason=f"lab error: {type(e).__name__}: {e}")
        problems = judge(spec, sender, seen)
        status = Status.FAILED if problems else Status.PASSED
        return TrafficCheck(status, summary(seen), "; ".join(problems))

    def check_dns(self, q: DnsQuery, state: ClusterState) -> TrafficCheck:
        """``q`` answered by the lab's real DNS server over UDP."""
        topo = self.lab.topo if self.lab is not None else None
        if topo is None or not topo.nodes:
            return TrafficCheck(Status.SKIPPED, reason="the lab was not built")
        names: tuple[str, ...] = (q.query,)
        if q.from_pod is None:
            where, server = topo.nodes[0].netns, topo.nodes[0].ip
        else:
            pod = topo.pod(q.from_pod)
            node = topo.node(pod.node) if pod is not None else None
            if pod is None or node is None or pod.host_network:
                return TrafficCheck(Status.SKIPPED, reason=f"pod {q.from_pod} has no lab namespace")
            search = dns.search_path(pod.namespace, state.config.cluster_domain)
            where, server, names = pod.netns, node.ip, dns.search_names(q.query, search)
        try:
            rcode, records = resolve_over_udp(where, server, names, q.qtype, q.query)
        except Exception as e:
            return TrafficCheck(Status.FAILED, reason=f"lab error: {type(e).__name__}: {e}")
        answer = frozenset(norm_record(q.qtype, r) for r in records)
        problems = []
        if rcode != q.rcode:
            problems.append(f"rcode: expected {q.rcode}, observed {rcode}")
        if answer != q.answer:
            problems.append(f"answer: expected {sorted(q.answer)}, observed {sorted(answer)}")
        status = Status.FAILED if problems else Status.PASSED
        return TrafficCheck(status, dns_text(rcode, answer), "; ".join(problems))

    def end(self) -> None:
        if self.lab is not None:
            lab, self.lab = self.lab, None
            lab.down()


def query_udp(where: str, server: str, name: str, qtype: str) -> tuple[str, list[str], bool]:
    """One query from namespace ``where`` to ``server:53`` over UDP: (rcode, the
    records of type ``qtype``, whether a CNAME answered)."""
    from dnslib import QTYPE, RCODE, DNSRecord

    request = DNSRecord.question(name, qtype)
    with netns.entered(where):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(2.0)
        for attempt in range(2):
            sock.sendto(request.pack(), (server, DNS_PORT))
            try:
                data = sock.recv(65535)
            except TimeoutError:
                if attempt:
                    raise
                continue
            reply = DNSRecord.parse(data)
            if reply.header.id == request.header.id:
                break
    rtype = getattr(QTYPE, qtype.upper())
    records = [str(rr.rdata) for rr in reply.rr if rr.rtype == rtype]
    cname = any(rr.rtype == QTYPE.CNAME for rr in reply.rr)
    return str(RCODE.get(reply.header.rcode)), records, cname


def resolve_over_udp(
    where: str, server: str, names: tuple[str, ...], qtype: str, query: str
) -> tuple[str, list[str]]:
    """``names`` tried in order as :func:`svcnet.dns.resolve` does (records or a
    CNAME end the search; else the as-is answer when it came first, else an empty
    NOERROR when some name existed, else the last answer)."""
    as_is_first = len(names) > 1 and names[0] == query
    first: tuple[str, list[str]] | None = None
    nodata: tuple[str, list[str]] | None = None
    last: tuple[str, list[str]] = ("NXDOMAIN", [])
    for i, name in enumerate(names):
        rcode, records, cname = query_udp(where, server, name, qtype)
        if rcode == "NOERROR" and (records or cname):
            return rcode, records
        if i == 0 and as_is_first:
            first = (rcode, records)
        elif rcode == "NOERROR":
            nodata = nodata or (rcode, records)
        last = (rcode, records)
    return first or nodata or last


@contextlib.contextmanager
def traffic_checker(backend: type[Backend]) -> Iterator[TrafficChecker]:
    checker = TrafficChecker(backend)
    try:
        yield checker
    finally:
        checker.end()
