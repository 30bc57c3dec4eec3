"""UDP conntrack cleanup: the agent's first node duty (I/O in :class:`ConntrackCleaner`).

Why it is needed. UDP has no connection to close: the kernel's connection tracker
keeps one entry per (source, destination) pair for as long as datagrams keep coming
(``nf_conntrack_udp_timeout_stream``, 120 s by default, refreshed by every packet),
and a packet that matches an entry is NATed as the entry says without ever reaching
the rules again. A client that keeps sending to a ClusterIP after its endpoint pod
was replaced would keep going to the dead pod's address; a client that was rejected
while the service had no endpoint keeps the entry of the un-NATed flow. So, after a
sync, the flows whose rules changed are deleted and the next datagram is NATed
afresh by the new rules.

What is deleted (kube-proxy >= 1.32 does the same, ``pkg/proxy/conntrack``): the UDP
flows of the plan's families whose *original destination* is a UDP frontend of the
new plan -- a ClusterIP, external IP or LoadBalancer address with its port, or a
NodePort by its port on any address, as kube-proxy matches NodePort flows -- and whose
*reply source* is not one of that frontend's serving endpoints (the addresses its
rules may DNAT to: the port's cluster and local endpoints). That covers a removed
endpoint (the reply would come from it) and a service that went from no endpoint to
some (the flow was never DNATed: its reply source is the frontend itself). Also
deleted: flows to a UDP frontend of the old plan that the new one no longer has (a
deleted service or port, a changed protocol). Nothing else is touched: TCP and SCTP
flows (they end with their connection), flows to addresses that are no frontend.

Cheap when nothing UDP changed: :meth:`ConntrackCleaner.clean` compares the UDP
frontends and endpoint sets of the two plans service by service (only the services
whose :class:`ServicePlan` object changed, so a 10,000-service plan costs one walk
of its map) and returns 0 without asking the kernel. When some changed, it dumps
only the flows sent to those frontends (one kernel-filtered dump each, up to
``SCOPED_DUMPS_MAX``; past that, one dump of every UDP flow per family): a flow to a
frontend whose endpoints did not change was judged at the clean that followed its
last change. The first clean (``old`` None) and the one after a failed clean dump
every UDP flow: a restarted agent must clear flows to endpoints that vanished while
it was away.

Why pyroute2's conntrack netlink and not the ``conntrack`` tool: the agent calls
this after every sync that touched UDP, and a tool means a process per call (per
deletion, in the tool's filter syntax, or a second dump to parse); with netlink the
agent keeps one socket, the kernel filters the dump (only UDP, only one family:
``CTA_FILTER``, kernel >= 5.8), the entries come back as structured tuples (no text
to parse, no locale), and each deletion is one message answered with an errno
(``ENOENT``: the flow expired meanwhile, not an error).

Namespaces. A netlink socket talks to the namespace it was created in. pyroute2
(0.9.7) creates the socket lazily, at the first request, and once *per thread*
(``threading.local``): entering the namespace around the constructor would bind
nothing, and a call from another thread would silently open a socket in that thread's
namespace. So all conntrack work runs in one worker thread that has entered the
namespace for good (:func:`svcnet.kernel.setns.enter`) before pyroute2 is touched;
:meth:`ConntrackCleaner.clean` hands it the work and waits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import ipaddress
import socket
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, TypeVar

import attrs

from svcnet.errors import BackendError, BackendErrorKind
from svcnet.model import IPFamily, Protocol
from svcnet.plan import Plan
from svcnet.plan.types import FrontendKind, ServicePlan, ServiceRef

T = TypeVar("T")

Endpoint = tuple[str, int]  # (ip, port), the ip in its compressed text form
_FAMILY = {IPFamily.IPv4: socket.AF_INET, IPFamily.IPv6: socket.AF_INET6}
_PROTOCOL = {socket.IPPROTO_UDP: Protocol.UDP, socket.IPPROTO_TCP: Protocol.TCP}


class ConntrackError(BackendError):
    """Conntrack could not be read or changed; the message names the namespace and
    the operation, the native error (pyroute2's ``NetlinkError``, ``OSError``) is
    ``__cause__``."""

    def __init__(self, message: str, kind: BackendErrorKind = BackendErrorKind.REFUSED) -> None:
        super().__init__(kind, message)


def _ip(text: str) -> str:
    """``text`` in one canonical form (IPv6 compressed), so plan and kernel agree."""
    return ipaddress.ip_address(text).compressed


@attrs.frozen(order=True)
class Target:
    """A UDP frontend as conntrack sees it: an address and port, or (``ip`` None) a
    NodePort: the port on any address of the family."""

    family: IPFamily = attrs.field(order=lambda f: f.value)
    ip: str | None = attrs.field(order=lambda ip: ip or "")  # NodePorts first
    port: int

    def __str__(self) -> str:
        where = self.ip if self.ip is not None else f"*({self.family.value})"
        return f"{where}:{self.port}"


@attrs.frozen
class Flow:
    """One conntrack entry, as much of it as the cleanup reads: the original
    direction's addresses and ports (what the client sent to) and the reply's source
    (who answers: the endpoint after DNAT, the frontend itself without)."""

    family: IPFamily
    protocol: Protocol | None  # None: neither UDP nor TCP
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    reply_src_ip: str
    reply_src_port: int

    @property
    def reply_source(self) -> Endpoint:
        return (self.reply_src_ip, self.reply_src_port)

    def __str__(self) -> str:
        proto = self.protocol.value if self.protocol is not None else "?"
        return (
            f"{proto} {self.src_ip}:{self.src_port} -> {self.dst_ip}:{self.dst_port}"
            f" (reply from {self.reply_src_ip}:{self.reply_src_port})"
        )


Targets = dict[Target, frozenset[Endpoint]]

# a ServicePlan's contribution, memoised by identity: plans share the ServicePlan
# objects of unchanged services, so a sync that touched three services computes three
_memo: dict[int, tuple[ServicePlan, Targets]] = {}
_memo_lock = threading.Lock()
_MEMO_MAX = 50_000


def service_targets(svc: ServicePlan) -> Targets:
    """The UDP frontends of one service -> the endpoints its rules may DNAT to."""
    with _memo_lock:
        hit = _memo.get(id(svc))
    if hit is not None and hit[0] is svc:
        return hit[1]
    out: Targets = {}
    for port in svc.ports:
        if port.protocol is not Protocol.UDP:
            continue
        serving = frozenset(
            (_ip(e.ip), e.port) for e in port.cluster_endpoints + port.local_endpoints
        )
        for f in port.frontends:
            ip = None if f.kind is FrontendKind.NODE_PORT else _ip(f.ip)
            key = Target(port.family, ip, f.port)
            out[key] = out.get(key, frozenset()) | serving
    with _memo_lock:
        if len(_memo) >= _MEMO_MAX:
            _memo.clear()
        _memo[id(svc)] = (svc, out)
    return out


def _merge(into: Targets, more: Mapping[Target, frozenset[Endpoint]]) -> None:
    for key, serving in more.items():
        into[key] = into.get(key, frozenset()) | serving


def udp_targets(plan: Plan | None) -> Targets:
    """Every UDP frontend of ``plan`` (ClusterIP, external IP and LoadBalancer by
    address and port; NodePort by port on any address) -> the frozenset of its serving
    endpoints ``(ip, port)``: the port's cluster and local endpoints."""
    out: Targets = {}
    if plan is not None:
        for svc in plan.services.values():
            _merge(out, service_targets(svc))
    return out


def changed_targets(old: Plan, new: Plan) -> set[Target]:
    """The UDP frontends added, removed, or whose serving endpoints changed from
    ``old`` to ``new``; only services whose plan object changed are looked at."""
    if old is new:
        return set()
    changes = new.diff(old)
    refs: list[ServiceRef] = [s.ref for s in changes.added + changes.replaced]
    refs += changes.removed
    before: Targets = {}
    after: Targets = {}
    for ref in refs:
        if (svc := old.services.get(ref)) is not None:
            _merge(before, service_targets(svc))
        if (svc := new.services.get(ref)) is not None:
            _merge(after, service_targets(svc))
    return {t for t in before.keys() | after.keys() if before.get(t) != after.get(t)}


def udp_changed(old: Plan | None, new: Plan) -> bool:
    """Whether the UDP targets of ``old`` and ``new`` differ (``old`` None: yes)."""
    return old is None or bool(changed_targets(old, new))


def _lookup(targets: Targets, flow: Flow) -> frozenset[Endpoint] | None:
    """The serving endpoints of the frontend ``flow`` was sent to (None: no frontend)."""
    serving = targets.get(Target(flow.family, flow.dst_ip, flow.dst_port))
    if serving is None:
        serving = targets.get(Target(flow.family, None, flow.dst_port))
    return serving


def stale_in(old_targets: Targets, new_targets: Targets, flows: Iterable[Flow]) -> list[Flow]:
    """:func:`stale` on targets already computed."""
    out: list[Flow] = []
    for flow in flows:
        if flow.protocol is not Protocol.UDP:
            continue
        serving = _lookup(new_targets, flow)
        if serving is not None:
            if flow.reply_source not in serving:
                out.append(flow)
        elif _lookup(old_targets, flow) is not None:
            out.append(flow)  # its frontend is gone
    return out


def stale(old: Plan | None, new: Plan, flows: Iterable[Flow]) -> list[Flow]:
    """The flows to delete after going from ``old`` to ``new`` (see the module
    docstring): UDP flows to a frontend of ``new`` whose reply source is not one of
    its serving endpoints, and UDP flows to a frontend only ``old`` had."""
    return stale_in(udp_targets(old), udp_targets(new), flows)


def families(*targets: Targets) -> list[IPFamily]:
    """The families that have UDP targets, IPv4 first."""
    present = {t.family for ts in targets for t in ts}
    return [f for f in IPFamily if f in present]


class _Owed:
    """No clean is owed (the sentinel of :attr:`ConntrackCleaner._owed`)."""


_NOTHING_OWED = _Owed()


class ConntrackCleaner:
    """Deletes stale UDP conntrack entries in network namespace ``netns`` (None: the
    caller's own) after each sync. One worker thread lives in the namespace and owns
    the netlink sockets (see the module docstring); :meth:`close` ends it.

    A failed :meth:`clean` raises :class:`ConntrackError` and is owed: the next call
    cleans from the failed call's ``old`` plan, even if the plan did not change since.
    """

    SCOPED_DUMPS_MAX = 32  # past this many changed frontends, one dump per family

    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self._where = f"network namespace {netns}" if netns else "this network namespace"
        self._sockets: dict[IPFamily, Any] = {}
        self._owed: Plan | _Owed | None = _NOTHING_OWED
        self._lock = threading.Lock()  # one clean at a time
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dumps = 0  # conntrack dump requests made by clean(), for tests and metrics
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="svcnet-conntrack"
        )
        try:
            self._run("open the conntrack socket", self._open)
        except BaseException:
            self._pool.shutdown(wait=True)
            raise

    # -- worker side (all pyroute2 objects live in the worker thread) ------------------
    def _open(self) -> None:
        from svcnet.kernel import setns

        if self.netns is not None:
            setns.enter(self.netns)  # NamespaceError: NOT_FOUND or PERMISSION
        from pyroute2.conntrack import AsyncConntrack

        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)

        async def open_all() -> None:
            for family, af in _FAMILY.items():
                ct = AsyncConntrack(nfgen_family=af)
                await ct.count()  # the socket is made here, in this thread's namespace
                self._sockets[family] = ct

        self._loop.run_until_complete(open_all())

    async def _dump(self, family: IPFamily, target: Target | None) -> list[Flow]:
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

        want = NFCTAttrTuple(family=_FAMILY[family], proto=socket.IPPROTO_UDP)
        address = None
        if target is not None:  # the kernel filters on the original tuple too
            want.dport = target.port
            address = target.ip
            if family is IPFamily.IPv4:
                want.daddr = address
            # IPv6: a filter on the address matched no entry (kernel 6.18, pyroute2
            # 0.9.7), so the kernel filters on the port and the address is checked here
        flows = []
        async for e in await self._sockets[family].dump_entries(tuple_orig=want):
            o, r = e.tuple_orig, e.tuple_reply
            if address is not None and _ip(o.daddr) != address:
                continue
            flows.append(
                Flow(
                    family,
                    _PROTOCOL.get(o.proto),
                    _ip(o.saddr),
                    o.sport or 0,
                    _ip(o.daddr),
                    o.dport or 0,
                    _ip(r.saddr),
                    r.sport or 0,
                )
            )
        return flows

    async def _dump_all(self, scopes: list[tuple[IPFamily, Target | None]]) -> list[Flow]:
        seen: dict[Flow, None] = {}  # a flow in two dumps (a NodePort's port, an address)
        for family, target in scopes:
            seen.update(dict.fromkeys(await self._dump(family, target)))
        return list(seen)

    async def _delete(self, flows: list[Flow]) -> int:
        from pyroute2.netlink.exceptions import NetlinkError
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

        deleted = 0
        for flow in flows:
            orig = NFCTAttrTuple(
                family=_FAMILY[flow.family],
                saddr=flow.src_ip,
                daddr=flow.dst_ip,
                proto=socket.IPPROTO_UDP,
                sport=flow.src_port,
                dport=flow.dst_port,
            )
            try:
                await self._sockets[flow.family].entry("del", tuple_orig=orig)
            except NetlinkError as e:
                if e.code == errno.ENOENT:
                    continue  # expired or deleted between the dump and now
                raise
            deleted += 1
        return deleted

    def _run(self, operation: str, work: Callable[[], T]) -> T:
        """Run ``work`` in the worker thread; native failures become ConntrackError."""
        try:
            return self._pool.submit(work).result()
        except ConntrackError:
            raise
        except BackendError as e:  # the namespace cannot be entered: NOT_FOUND, PERMISSION
            raise ConntrackError(f"{self._where}: {operation}: {e}", e.kind) from e
        except Exception as e:
            raise ConntrackError(f"{self._where}: {operation}: {e}") from e

    def _run_async(self, operation: str, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        if not self._sockets:
            raise ConntrackError(f"{self._where}: {operation}: closed", BackendErrorKind.STATE)
        loop = self._loop
        assert loop is not None  # set with the sockets
        return self._run(operation, lambda: loop.run_until_complete(work()))

    # -- caller side -----------------------------------------------------------------
    def flows(self, family: IPFamily, target: Target | None = None) -> list[Flow]:
        """The UDP flows of ``family`` in the namespace (None: all of them; else those
        sent to ``target``), from a dump the kernel filters."""
        what = f"dump the UDP {family.value} flows" + (f" to {target}" if target else "")
        return self._run_async(what, lambda: self._dump_all([(family, target)]))

    def delete(self, flows: Iterable[Flow]) -> int:
        """Delete ``flows`` (by their original tuple); how many were there to delete."""
        todo = list(flows)
        return self._run_async(f"delete {len(todo)} UDP flows", lambda: self._delete(todo))

    def clean(self, old: Plan | None, new: Plan) -> int:
        """Delete the stale UDP flows after a sync from ``old`` (None: first sync) to
        ``new``; how many were deleted. Returns 0 at once when no UDP frontend or
        endpoint set changed; else dumps only the flows to the frontends that changed
        (all UDP flows of the plans' families on the first clean, after a failed one,
        or past :attr:`SCOPED_DUMPS_MAX` changed frontends)."""
        with self._lock:
            scope: set[Target] | None = None  # None: every UDP flow
            if not isinstance(self._owed, _Owed):
                old = self._owed  # a failed clean is still owed: clean from its old plan
            elif old is not None:
                scope = changed_targets(old, new)
                if not scope:
                    return 0
            self._owed = old
            old_targets, new_targets = udp_targets(old), udp_targets(new)
            if scope is None or len(scope) > self.SCOPED_DUMPS_MAX:
                scopes: list[tuple[IPFamily, Target | None]] = [
                    (f, None) for f in families(old_targets, new_targets)
                ]
            else:
                scopes = [(t.family, t) for t in sorted(scope)]
            if not scopes:
                self._owed = _NOTHING_OWED
                return 0
            self.dumps += len(scopes)
            flows = self._run_async(
                f"dump the UDP flows ({len(scopes)} dumps)", lambda: self._dump_all(scopes)
            )
            doomed = stale_in(old_targets, new_targets, flows)
            deleted = self.delete(doomed) if doomed else 0
            self._owed = _NOTHING_OWED
            return deleted

    def close(self) -> None:
        """Close the sockets and end the worker thread (idempotent)."""
        with self._lock:
            if self._sockets:
                sockets, self._sockets = self._sockets, {}

                def shut() -> None:
                    for ct in sockets.values():
                        ct.close()
                    if self._loop is not None:
                        self._loop.close()

                with contextlib.suppress(Exception):  # closing: nothing left to do with it
                    self._pool.submit(shut).result()
            self._pool.shutdown(wait=True)

    def __enter__(self) -> ConntrackCleaner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "ConntrackCleaner",
    "ConntrackError",
    "Endpoint",
    "Flow",
    "Target",
    "Targets",
    "changed_targets",
    "families",
    "service_targets",
    "stale",
    "stale_in",
    "udp_changed",
    "udp_targets",
]
