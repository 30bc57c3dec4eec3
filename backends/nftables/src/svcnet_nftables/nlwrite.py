"""A full sync as one nf_tables netlink batch, written by svcnet itself.

libnftables parses and evaluates every element of an ``add element`` command
(50-90 µs each); at 100,000 services the maps hold ~700,000 elements. This module
encodes a plan's elements straight into ``NFT_MSG_NEWSETELEM`` messages and sends
the whole table (``NFT_MSG_NEWTABLE`` / ``NEWCHAIN`` / ``NEWSET`` / ``NEWRULE`` /
``NEWSETELEM`` between ``NFNL_MSG_BATCH_BEGIN`` and ``END``) as one transaction on
a plain ``NETLINK_NETFILTER`` socket: the kernel commits all of it or nothing.

The structure (chains, sets, rules, and the elements of the few small sets:
node addresses, CIDRs) is the same as :mod:`.render` writes, and is compiled by
libnftables itself: :class:`Template` runs render's commands for it in a private
scratch network namespace, reads the result back over netlink as raw attributes
and replays those attributes in the batch (so rule expressions are byte for byte
what libnftables would send; no second rule compiler). A template depends only on
the shared chains used and the node settings; it is cached per process.

Element-only changes (:func:`changes_batch`: no shared chain born or gone, the same
node settings) go as one batch of ``NFT_MSG_DELSETELEM`` then ``NEWSETELEM``
messages. What this writer leaves out (session affinity, LoadBalancer source
ranges: per-service chains, sets and interval elements; new settings or shared
chains in a change) makes :func:`encode` / :func:`changes_batch` return None, and
the backend uses libnftables for the whole transaction as before.

I/O only in :func:`build_template`, :func:`open_socket` and :func:`send` (called by
the backend); the rest is encoding.
"""

from __future__ import annotations

import errno
import gc
import socket
import struct
from collections import Counter
from collections.abc import Callable, Iterator, Mapping

from svcnet.errors import BackendError, BackendErrorKind
from svcnet.kernel import netns
from svcnet.model import IPFamily
from svcnet.plan import Changes, FrontendKind, NodeSettings, Plan, PortPlan, Route, ServicePlan
from svcnet_nftables import render
from svcnet_nftables.libnft import (
    FAMILY_NUMBERS,
    MSG_GETCHAIN,
    MSG_GETRULE,
    MSG_GETSET,
    MSG_GETSETELEM,
    NFNL_SUBSYS_NFTABLES,
    Netlink,
    Nft,
    nla,
    nla_str,
    os_strerror,
)
from svcnet_nftables.nlrules import cstr, nl_attrs, nl_list

# message types (nf_tables.h / nfnetlink.h)
MSG_NEWTABLE, MSG_DELTABLE, MSG_NEWCHAIN, MSG_NEWRULE, MSG_NEWSET = 0, 2, 3, 6, 9
MSG_NEWSETELEM, MSG_DELSETELEM = 12, 14
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
F_REQUEST, F_CREATE, F_APPEND = 0x1, 0x400, 0x800
NETLINK_CAP_ACK, NETLINK_EXT_ACK = 10, 11
NFT_GOTO, NF_DROP = -4, 0
#: bytes of element attributes per NEWSETELEM message (its list attribute's length
#: is 16 bits)
CHUNK = 60_000

_PROTO_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132}
# attributes of a dumped object that are replayed (the rest: handles, use counts)
_CHAIN_KEEP = (3, 4, 5, 7)  # NAME, HOOK, POLICY, TYPE
_SET_KEEP = (2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 15, 17, 18)
_RULE_KEEP = (4, 7)  # EXPRESSIONS, USERDATA
_ELEM_KEEP = (1, 2, 3, 6, 10)  # KEY, DATA, FLAGS, USERDATA, KEY_END
#: the sets whose elements :func:`encode` writes (every other set's come from the template)
BIG_SETS = frozenset(
    {render.FE_MAP, "cluster-ips", "foreign-ips"}
    | {render.eps_map(w, p) for w in ("cluster", "local") for p in render.PROTOCOLS}
)


class Unsupported(Exception):
    """The plan has what this writer leaves to libnftables (affinity, source ranges)."""


def _attrs(data: bytes, keep: tuple[int, ...]) -> bytes:
    """The attributes of ``data`` whose type is in ``keep``, re-encoded in order."""
    out = []
    off, end = 0, len(data)
    while off + 4 <= end:
        alen, atype = struct.unpack_from("=HH", data, off)
        if alen < 4:
            break
        if atype & 0x3FFF in keep:
            out.append(data[off : off + alen] + b"\0" * (-alen % 4))
        off += (alen + 3) & ~3
    return b"".join(out)


def _udata(comment: str) -> bytes:
    """An element's user data carrying ``comment`` (left out when too long, as render)."""
    if len(comment) > render.COMMENT_MAX:
        return b""
    text = comment.encode()
    n = len(text) + 1  # the TLV: type 0 (comment), length, text with its NUL
    return _UDATA_HEAD.pack(6 + n, 6, 0, n) + text + _NUL_PAD[-(6 + n) % 4]


def _verdict(text: str) -> bytes:
    """NFTA_SET_ELEM_DATA for a verdict as render writes it (``drop``, ``goto X``)."""
    if text == "drop":
        body = nla(1, struct.pack(">i", NF_DROP))
    else:
        kind, chain = text.split(" ", 1)
        if kind != "goto":
            raise Unsupported(text)
        body = nla(1, struct.pack(">i", NFT_GOTO)) + nla_str(2, chain)
    return nla(2, nla(2, body, nested=True), nested=True)


_PROTO_KEYS = {p: struct.pack("B3x", n) for p, n in _PROTO_NUMBERS.items()}
_PORTS = [struct.pack(">H2x", p) for p in range(1 << 16)]
_BUCKETS = [struct.pack("=I", i) for i in range(256)]
_ELEM_HEAD = struct.Struct("=HHHHHH")
_UDATA_HEAD = struct.Struct("=HHBB")  # NFTA_SET_ELEM_USERDATA, then the TLV's head
_NUL_PAD = (b"\0", b"\0\0", b"\0\0\0", b"\0\0\0\0")  # a NUL, then padding (index)
_EXTERNAL = {k: k.external for k in FrontendKind}
# NFTA_SET_ELEM_DATA { NFTA_DATA_VALUE ... } headers for address . port data
_DATA4 = struct.pack("=HHHH", 16, 0x8002, 12, 1)
_DATA6 = struct.pack("=HHHH", 28, 0x8002, 24, 1)


def _bucket(i: int) -> bytes:
    """A numgen bucket as a key field (host order)."""
    return _BUCKETS[i] if i < len(_BUCKETS) else struct.pack("=I", i)


def _pton4(ip: str) -> bytes:
    return socket.inet_pton(socket.AF_INET, ip)


def _pton6(ip: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, ip)


def _elem(key: bytes, rest: bytes) -> bytes:
    """NFTA_LIST_ELEM { NFTA_SET_ELEM_KEY { NFTA_DATA_VALUE key }, rest } (``key``
    a multiple of 4 bytes; ``rest`` padded attributes)."""
    n = len(key)
    return _ELEM_HEAD.pack(12 + n + len(rest), 0x8001, 8 + n, 0x8001, 4 + n, 1) + key + rest


# a port's verdicts (encoded) per external flag, the shared chains it uses, its route codes
_Shape = tuple[dict[bool, bytes], tuple[str, ...], str]


class Elements:
    """The big sets' elements of one plan, as encoded element attributes by
    (family, set name) and key (the last one for a key wins, as in render's dicts)."""

    def __init__(self) -> None:
        self.sets: dict[tuple[str, str], dict[bytes, bytes]] = {}
        self.refs: Counter[tuple[str, str, str]] = Counter()
        self._verdicts: dict[str, bytes] = {}
        self._addr: dict[str, bytes] = {}
        self._shapes: dict[tuple[object, ...], tuple[tuple[Route, ...], _Shape]] = {}

    def _set(self, fam: str, name: str) -> dict[bytes, bytes]:
        got = self.sets.get((fam, name))
        if got is None:
            got = self.sets[(fam, name)] = {}
        return got

    def addr(self, ip: str) -> bytes:
        got = self._addr.get(ip)
        if got is None:
            if ":" in ip:
                got = socket.inet_pton(socket.AF_INET6, ip)
            else:
                got = socket.inet_pton(socket.AF_INET, ip)
            if len(self._addr) > 1 << 20:
                self._addr.clear()
            self._addr[ip] = got
        return got

    def _shape(self, port: PortPlan) -> _Shape:
        """render's shape of ``port`` (its verdicts encoded), memoised by the identity
        of its routes (the compiler shares a few Route objects between all ports;
        hashing six routes per port was a fifth of the encoding time)."""
        routes = port.routes
        externals = frozenset([_EXTERNAL[fe.kind] for fe in port.frontends])
        memo = (
            *map(id, routes),
            len(port.cluster_endpoints),
            len(port.local_endpoints),
            externals,
        )
        hit = self._shapes.get(memo)
        if hit is not None and all(a is b for a, b in zip(hit[0], routes, strict=True)):
            return hit[1]
        verdicts, chains, _used, codes = render._shape(port, "", externals)
        encoded = {ext: self._verdict(v) for ext, v in verdicts.items()}
        shape = (encoded, chains, codes)
        self._shapes[memo] = (routes, shape)  # the routes kept: their ids stay theirs
        return shape

    def _verdict(self, text: str) -> bytes:
        got = self._verdicts.get(text)
        if got is None:
            got = self._verdicts[text] = _verdict(text)
        return got

    def add_service(self, svc: ServicePlan) -> None:
        """What :func:`svcnet_nftables.render.add_service` adds, encoded."""
        for n, ip in enumerate(svc.cluster_ips):
            where = "cluster-ips" if svc.proxied else "foreign-ips"
            key = self.addr(ip)
            self._set("ip6" if ":" in ip else "ip", where)[key] = _elem(
                key, _udata(f"{svc.ref} {n}")
            )
        if not svc.proxied:
            return
        for index, port in enumerate(svc.ports):
            if port.affinity_timeout is not None or port.source_ranges:
                raise Unsupported(str(svc.ref))
            fam = "ip" if port.family is IPFamily.IPv4 else "ip6"
            proto = port.protocol.value.lower()
            verdicts, chains, codes = self._shape(port)
            refs = self.refs
            for chain in chains:
                refs[(fam, "chain", chain)] += 1
            fe_map = self._set(fam, render.FE_MAP)
            pnum = _PROTO_KEYS[proto]
            keys: list[bytes] = []
            for fe in port.frontends:
                key = self.addr(fe.ip) + pnum + _PORTS[fe.port]
                keys.append(key)
                vdata = verdicts[fe.kind.external]
                comment = render.fe_comment(svc, index, port, fe.kind, codes)
                fe_map[key] = _elem(key, vdata + _udata(comment))
            for which, eps in (
                ("cluster", port.cluster_endpoints),
                ("local", port.local_endpoints),
            ):
                if not eps or not keys:  # no frontend (e.g. lost to a conflict): no keys
                    continue
                emap = self._set(fam, render.eps_map(which, proto))
                v6 = fam == "ip6"
                head = _DATA6 if v6 else _DATA4
                pton = _pton6 if v6 else _pton4
                klen = len(keys[0]) + 4
                ehead = _ELEM_HEAD.pack(
                    12 + klen + len(head) + (20 if v6 else 8), 0x8001, 8 + klen, 0x8001, 4 + klen, 1
                )
                ports = _PORTS
                tails = [  # per endpoint: its bucket, and the element's data after the key
                    (_bucket(i), head + pton(ep.ip) + ports[ep.port]) for i, ep in enumerate(eps)
                ]
                for key in keys:
                    for bucket, data in tails:
                        k = key + bucket
                        emap[k] = ehead + k + data


def encode(plan: Plan) -> Elements | None:
    """The big sets' elements of ``plan`` and its shared chains' refcounts (the same
    as :func:`svcnet_nftables.render.full_refs`); None when the plan needs what only
    libnftables writes here."""
    out = Elements()
    collecting = gc.isenabled()  # (svcnet._gc is past the backend contract)
    gc.disable()  # a large build of acyclic data: the collector only thrashes
    try:
        for svc in plan.services.values():
            out.add_service(svc)
    except Unsupported:
        return None
    finally:
        if collecting:
            gc.enable()
    return out


# -- the structure, compiled by libnftables in a scratch namespace ----------------------
class Template:
    """Per family: the chains, sets, rules and small sets' elements of the table
    libnftables builds from render's commands (no big-set elements), as raw
    attributes to replay."""

    def __init__(self) -> None:
        self.chains: dict[str, list[bytes]] = {}
        self.sets: dict[str, list[bytes]] = {}
        self.rules: dict[str, list[bytes]] = {}
        self.elements: dict[str, list[tuple[str, bytes]]] = {}

    @staticmethod
    def text(settings: NodeSettings, chains: list[tuple[str, str, str]]) -> str:
        """render's commands for the structure: skeleton, shared chains, settings."""
        cmds: list[str] = []
        for fam in render.FAMILIES.values():
            cmds += render.skeleton(fam)
        for fam, _, name in sorted(chains, key=lambda k: (render._order(k[2]), k)):
            cmds += render.shared_chain_cmds(fam, name)
        small: render.Elements = render._elements()
        render.settings_elements(settings, small)
        cmds += [render.element_cmd("add", f, n, items) for (f, n), items in small.items() if items]
        return "\n".join(cmds) + "\n"

    @classmethod
    def read(cls, netlink: Netlink) -> Template:
        """The template from the tables in ``netlink``'s namespace."""
        t = cls()
        table = nla_str(1, render.TABLE)
        for fam in render.FAMILIES.values():
            chains = netlink.dump(MSG_GETCHAIN, fam, table)
            t.chains[fam] = [_attrs(c, _CHAIN_KEEP) for c in chains]
            t.rules[fam] = []
            for c in chains:
                name = nl_attrs(c)[3]
                which = table + nla(2, name)
                for r in netlink.dump(MSG_GETRULE, fam, which):
                    t.rules[fam].append(nla(2, name) + _attrs(r, _RULE_KEEP))
            t.sets[fam] = []
            t.elements[fam] = []
            for s in netlink.dump(MSG_GETSET, fam, table):
                name_s = cstr(nl_attrs(s)[2])
                t.sets[fam].append(_attrs(s, _SET_KEEP))
                if name_s in BIG_SETS:
                    continue
                for reply in netlink.dump(MSG_GETSETELEM, fam, table + nla_str(2, name_s)):
                    for item in nl_list(nl_attrs(reply).get(3, b"")):
                        t.elements[fam].append(
                            (name_s, nla(1, _attrs(item, _ELEM_KEEP), nested=True))
                        )
        return t


_TEMPLATES: dict[str, Template] = {}


def build_template(text: str) -> Template:
    """Run ``text`` with libnftables in a scratch namespace (``svcnet-nlw<pid>-<n>``,
    deleted after) and read the tables back as a :class:`Template`."""
    with netns.scratch("svcnet-nlw") as ns:
        nft = Nft(ns)
        try:
            nft.run(text)
            return Template.read(nft.netlink)
        finally:
            nft.close()


def template(text: str, build: Callable[[str], Template]) -> Template:
    """The template of structure ``text`` (``build`` makes it; kept per process)."""
    got = _TEMPLATES.get(text)
    if got is None:
        got = build(text)
        if len(_TEMPLATES) > 64:
            _TEMPLATES.clear()
        _TEMPLATES[text] = got
    return got


# -- the batch -----------------------------------------------------------------------
class Batch:
    """Messages of one nf_tables transaction, encoded as they are added."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.seq = 0
        self._msg(NFNL_MSG_BATCH_BEGIN, 0, b"", F_REQUEST, res_id=NFNL_SUBSYS_NFTABLES)

    def _msg(self, mtype: int, family: int, attrs: bytes, flags: int, res_id: int = 0) -> None:
        self.seq += 1
        body = struct.pack("=BBH", family, 0, socket.htons(res_id)) + attrs
        self.parts.append(struct.pack("=IHHII", 16 + len(body), mtype, flags, self.seq, 0))
        self.parts.append(body)

    def nft(self, msg: int, fam: str, attrs: bytes) -> None:
        flags = F_REQUEST | (F_CREATE if msg not in (MSG_DELTABLE, MSG_DELSETELEM) else 0)
        if msg == MSG_NEWRULE:
            flags |= F_APPEND  # at the chain's end, in the template's order
        self._msg((NFNL_SUBSYS_NFTABLES << 8) | msg, FAMILY_NUMBERS[fam], attrs, flags)

    def end(self) -> bytes:
        self._msg(NFNL_MSG_BATCH_END, 0, b"", F_REQUEST, res_id=NFNL_SUBSYS_NFTABLES)
        return b"".join(self.parts)


def _chunks(items: Iterator[bytes]) -> Iterator[bytes]:
    """Element attributes grouped into lists of at most :data:`CHUNK` bytes."""
    buf: list[bytes] = []
    size = 0
    for item in items:
        if size + len(item) > CHUNK and buf:
            yield b"".join(buf)
            buf, size = [], 0
        buf.append(item)
        size += len(item)
    if buf:
        yield b"".join(buf)


def full_batch(elements: Elements, tpl: Template) -> bytes:
    """The transaction replacing both tables: add, delete and add each table, then
    its chains, sets, rules and elements (as render_full's commands do)."""
    b = Batch()
    table = nla_str(1, render.TABLE)
    set_id = 0
    for fam in render.FAMILIES.values():
        b.nft(MSG_NEWTABLE, fam, table)
        b.nft(MSG_DELTABLE, fam, table)
        b.nft(MSG_NEWTABLE, fam, table)
        for chain in tpl.chains[fam]:
            b.nft(MSG_NEWCHAIN, fam, table + chain)
        for s in tpl.sets[fam]:
            set_id += 1
            b.nft(MSG_NEWSET, fam, table + s + nla(10, struct.pack(">I", set_id)))
        for rule in tpl.rules[fam]:
            b.nft(MSG_NEWRULE, fam, table + rule)
        small: dict[str, list[bytes]] = {}
        for name, item in tpl.elements[fam]:
            small.setdefault(name, []).append(item)
        for name, items in small.items():
            head = table + nla_str(2, name)
            for chunk in _chunks(iter(items)):
                b.nft(MSG_NEWSETELEM, fam, head + nla(3, chunk, nested=True))
    for (fam, name), elems in elements.sets.items():
        head = table + nla_str(2, name)
        for chunk in _chunks(iter(elems.values())):
            b.nft(MSG_NEWSETELEM, fam, head + nla(3, chunk, nested=True))
    return b.end()


def changes_batch(
    previous: Plan, changes: Changes, refs: Mapping[tuple[str, str, str], int]
) -> tuple[bytes, Counter[tuple[str, str, str]]] | None:
    """``changes`` from ``previous`` as one transaction of element deletions and
    additions (what :func:`svcnet_nftables.render.render_changes` sends when no shared
    chain is born or dies), and the refcount delta; None when the change needs more
    (new settings, a shared chain created or deleted, affinity or source ranges
    before or after): libnftables then writes it."""
    if changes.settings_changed:
        return None
    olds = [previous.services[r] for r in changes.removed if r in previous.services]
    olds += [previous.services[s.ref] for s in changes.replaced if s.ref in previous.services]
    old, new = Elements(), Elements()
    try:
        for svc in olds:
            old.add_service(svc)
        for svc in (*changes.added, *changes.replaced):
            new.add_service(svc)
    except Unsupported:
        return None
    delta: Counter[tuple[str, str, str]] = Counter(new.refs)
    delta.subtract(old.refs)
    for key, d in delta.items():
        before = refs.get(key, 0)
        if (before <= 0) != (before + d <= 0):  # a shared chain born or gone
            return None
    b = Batch()
    table = nla_str(1, render.TABLE)
    adds: list[tuple[str, str, list[bytes]]] = []
    for fam, name in old.sets.keys() | new.sets.keys():
        o = old.sets.get((fam, name), {})
        n = new.sets.get((fam, name), {})
        head = table + nla_str(2, name)
        gone = [_elem(k, b"") for k, v in o.items() if n.get(k) != v]
        for chunk in _chunks(iter(gone)):
            b.nft(MSG_DELSETELEM, fam, head + nla(3, chunk, nested=True))
        adds.append((fam, name, [v for k, v in n.items() if o.get(k) != v]))
    for fam, name, items in adds:  # after every deletion (a changed element: both)
        head = table + nla_str(2, name)
        for chunk in _chunks(iter(items)):
            b.nft(MSG_NEWSETELEM, fam, head + nla(3, chunk, nested=True))
    return (b.end() if b.seq > 1 else b""), delta


def elements_batch(items: dict[tuple[str, str], list[bytes]]) -> bytes:
    """A transaction adding the encoded elements ``items`` (by family and set) to the
    installed table (the benchmark's measure of the kernel's cost per element)."""
    b = Batch()
    table = nla_str(1, render.TABLE)
    for (fam, name), elems in items.items():
        head = table + nla_str(2, name)
        for chunk in _chunks(iter(elems)):
            b.nft(MSG_NEWSETELEM, fam, head + nla(3, chunk, nested=True))
    return b.end()


def send(sock: socket.socket, batch: bytes) -> None:
    """Send ``batch`` on ``sock`` (a bound NETLINK_NETFILTER socket). The kernel
    handles a batch within the send call: any message queued afterwards is an error
    (and the transaction was aborted: nothing changed)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, 32, len(batch) + (1 << 16))  # SO_SNDBUFFORCE
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, len(batch) + (1 << 16))
    try:
        sent = sock.send(batch)
    except OSError as e:
        raise BackendError(
            BackendErrorKind.REFUSED, f"nf_tables batch of {len(batch)} bytes: {e}"
        ) from e
    if sent != len(batch):
        raise BackendError(
            BackendErrorKind.REFUSED, f"nf_tables batch: sent {sent} of {len(batch)}"
        )
    errors: list[str] = []
    while True:
        try:
            data = sock.recv(1 << 16, socket.MSG_DONTWAIT)
        except BlockingIOError:
            break
        except OSError as e:
            errors.append(f"netlink: {e}")
            continue
        off = 0
        while off + 20 <= len(data):
            length, mtype, _flags, seq = struct.unpack_from("=IHHI", data, off)
            if mtype == 2:  # NLMSG_ERROR
                code = -struct.unpack_from("=i", data, off + 16)[0]
                if code:
                    errors.append(f"message {seq}: {os_strerror(code)}")
            off += max((length + 3) & ~3, 20)
    if errors:
        kind = BackendErrorKind.REFUSED
        if any(f"(errno {errno.EPERM})" in e for e in errors):
            kind = BackendErrorKind.PERMISSION
        raise BackendError(kind, "kernel refused the nf_tables batch: " + "; ".join(errors[:5]))


def open_socket() -> socket.socket:
    """A NETLINK_NETFILTER socket in the current thread's namespace, for :func:`send`."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
    sock.bind((0, 0))
    sock.setsockopt(270, NETLINK_CAP_ACK, 1)  # SOL_NETLINK: no echo of failed messages
    return sock
