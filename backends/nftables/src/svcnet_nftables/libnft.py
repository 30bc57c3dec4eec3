"""The only I/O module: a small ctypes wrapper over ``libnftables.so.1``.

Debian's ``python3-nftables`` binding installs only into the system Python, not
the interpreter svcnet runs on, so we call the C library directly. The five
functions used are stable API since nftables 0.9.

Network namespaces: libnftables' netlink socket belongs to the namespace that
is current when the context is created. Each :class:`Nft` therefore owns one
worker thread that enters the namespace for good (:func:`svcnet.kernel.enter`;
``setns`` affects only the calling thread on Linux), creates its context there
and runs every call; the caller's threads never change namespace. Whether the
process may touch netfilter at all is :func:`svcnet.kernel.has_net_admin`.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import errno
import json
import os
import queue
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from svcnet.kernel.setns import enter

NFT_CTX_OUTPUT_JSON = 1 << 4

T = TypeVar("T")


class LibnftablesError(Exception):
    """A libnftables call failed; ``message`` is nft's error text."""

    def __init__(self, message: str, rc: int = 1) -> None:
        self.message = message
        self.rc = rc
        super().__init__(message)


def _load() -> ctypes.CDLL:
    name = ctypes.util.find_library("nftables") or "libnftables.so.1"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as e:
        raise LibnftablesError(f"cannot load libnftables ({name}): {e}") from e
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    return lib


class Nft:
    """One libnftables context bound to a network namespace (None: the current one)."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self._lib = _load()
        self._jobs: queue.Queue[tuple[Callable[[], Any], queue.Queue[Any]] | None] = queue.Queue()
        self._ctx: int | None = None
        ready: queue.Queue[BaseException | None] = queue.Queue()
        self._thread = threading.Thread(
            target=self._worker, args=(ready,), name=f"nft-{netns or 'current'}", daemon=True
        )
        self._thread.start()
        err = ready.get()
        if err is not None:
            raise err

    def _worker(self, ready: queue.Queue[BaseException | None]) -> None:
        try:
            if self.netns is not None:
                enter(self.netns)  # svcnet.kernel.NamespaceError: NOT_FOUND or PERMISSION
            ctx = self._lib.nft_ctx_new(0)
            if not ctx:
                raise LibnftablesError("nft_ctx_new failed")
            self._lib.nft_ctx_output_set_flags(ctx, NFT_CTX_OUTPUT_JSON)
            self._lib.nft_ctx_buffer_output(ctx)
            self._lib.nft_ctx_buffer_error(ctx)
            self._ctx = ctx
            # the netlink reader's socket: a socket stays in the namespace it was made in
            self.netlink = Netlink(
                socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            )
        except BaseException as e:  # handed to the constructor
            ready.put(e)
            return
        ready.put(None)
        while True:
            job = self._jobs.get()
            if job is None:
                break
            fn, out = job
            try:
                out.put((True, fn()))
            except BaseException as e:  # handed to the caller
                out.put((False, e))
        self._lib.nft_ctx_free(ctx)
        self._ctx = None

    def _call(self, fn: Callable[[], T]) -> T:
        if not self._thread.is_alive():
            raise LibnftablesError("libnftables context is closed")
        out: queue.Queue[tuple[bool, Any]] = queue.Queue()
        self._jobs.put((fn, out))
        ok, value = out.get()
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` run on the context's thread, inside its namespace (a socket made
        there belongs to the namespace)."""
        return self._call(fn)

    def run(self, text: str) -> str:
        """Run ``text`` (nft syntax or JSON) as one transaction; nft's output."""

        def go() -> str:
            rc = self._lib.nft_run_cmd_from_buffer(self._ctx, text.encode())
            out = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode()
            err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode()
            if rc != 0:
                raise LibnftablesError(err.strip() or f"nft failed (rc={rc})", rc)
            return out

        return self._call(go)

    def run_json(self, commands: list[dict[str, Any]]) -> Any:
        out = self.run(json.dumps({"nftables": commands}, separators=(",", ":")))
        return json.loads(out) if out.strip() else None

    def list_json(self, what: str) -> Any:
        """``list <what>`` parsed from libnftables' JSON output."""

        def go() -> bytes:
            rc = self._lib.nft_run_cmd_from_buffer(self._ctx, f"list {what}".encode())
            err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode()  # resets it
            if rc != 0:
                raise LibnftablesError(err.strip() or f"nft failed (rc={rc})", rc)
            return bytes(self._lib.nft_ctx_get_output_buffer(self._ctx) or b"")

        out = self._call(go)
        return json.loads(out) if out.strip() else {"nftables": []}

    def close(self) -> None:
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
        if hasattr(self, "netlink"):
            self.netlink.close()


# -- a netlink reader (nf_tables get and dump requests; the replies stay raw bytes) ----
NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
MSG_GETTABLE, MSG_GETCHAIN, MSG_GETRULE, MSG_GETSET, MSG_GETSETELEM, MSG_GETGEN = (
    1,
    4,
    7,
    10,
    13,
    16,
)
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_F_REQUEST, _F_DUMP, _F_DUMP_INTR = 0x1, 0x300, 0x10
FAMILY_NUMBERS = {"ip": 2, "ip6": 10, "inet": 1}


def nla(kind: int, payload: bytes, nested: bool = False) -> bytes:
    """One netlink attribute (padded to 4 bytes)."""
    head = struct.pack("=HH", 4 + len(payload), kind | (0x8000 if nested else 0))
    return head + payload + b"\0" * (-len(payload) % 4)


def nla_str(kind: int, text: str) -> bytes:
    return nla(kind, text.encode() + b"\0")


class NetlinkError(LibnftablesError):
    """A netlink request failed; ``errno`` is the kernel's error number."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.errno = code


class DumpInterrupted(NetlinkError):
    """The kernel flagged a dump as inconsistent (the ruleset changed during it)."""


class Netlink:
    """Read-only nf_tables requests on one NETLINK_NETFILTER socket. Each reply is
    returned as its raw attributes (the bytes after the nfgenmsg header); decoding is
    :mod:`svcnet_nftables.readback`'s. Thread-safe (one request at a time)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        sock.bind((0, 0))
        try:
            sock.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        self._seq = 0
        self._lock = threading.Lock()
        self._buf = bytearray(1 << 20)
        self._pending: collections.deque[tuple[int, int, int, bytes]] = collections.deque()

    def _send(self, msg: int, family: str, attrs: bytes, flags: int) -> int:
        self._seq += 1
        body = struct.pack("=BBH", FAMILY_NUMBERS[family], 0, 0) + attrs
        head = struct.pack(
            "=IHHII", 16 + len(body), (NFNL_SUBSYS_NFTABLES << 8) | msg, flags, self._seq, 0
        )
        try:
            self._sock.send(head + body)
        except OSError as e:
            raise NetlinkError(f"netlink: {e}", e.errno or errno.EIO) from e
        return self._seq

    def _next(self) -> tuple[int, int, int, bytes]:
        """The next message received: (seq, type, flags, the bytes after its header)."""
        if not self._pending:
            try:
                n = self._sock.recv_into(self._buf)
            except OSError as e:  # ENOBUFS: replies were lost; the caller reads again
                self._pending.clear()
                raise NetlinkError(f"netlink: {e}", e.errno or errno.EIO) from e
            off = 0
            while off + 16 <= n:
                length, mtype, flags, mseq = struct.unpack_from("=IHHI", self._buf, off)
                if length < 16:
                    raise NetlinkError("netlink: malformed reply", errno.EPROTO)
                self._pending.append(
                    (mseq, mtype, flags, bytes(self._buf[off + 16 : off + length]))
                )
                off += (length + 3) & ~3
        return self._pending.popleft()

    def _replies(self, seq: int, dump: bool) -> list[bytes]:
        out: list[bytes] = []
        intr = False
        while True:
            mseq, mtype, flags, body = self._next()
            if mseq != seq:
                continue  # left over from a request that failed half-way
            intr = intr or bool(flags & _F_DUMP_INTR)
            if mtype == _NLMSG_ERROR:
                code = -struct.unpack_from("=i", body)[0]
                if code:
                    raise NetlinkError(f"netlink: {os_strerror(code)}", code)
                return out
            if mtype == _NLMSG_DONE:
                if intr:
                    raise DumpInterrupted("netlink: dump interrupted", errno.EINTR)
                return out
            out.append(body[4:])  # after the nfgenmsg header
            if not dump:
                return out

    def dump(self, msg: int, family: str, attrs: bytes = b"") -> list[bytes]:
        """Every object a dump request returns (each as its attributes' bytes)."""
        with self._lock:
            return self._replies(self._send(msg, family, attrs, _F_REQUEST | _F_DUMP), True)

    def get(self, msg: int, family: str, attrs: bytes) -> bytes | None:
        """One object (None when the kernel says ENOENT)."""
        with self._lock:
            try:
                got = self._replies(self._send(msg, family, attrs, _F_REQUEST), False)
            except NetlinkError as e:
                if e.errno == errno.ENOENT:
                    return None
                raise
        return got[0] if got else None

    def gets(self, msg: int, family: str, requests: list[bytes]) -> list[bytes | None]:
        """Several get requests sent at once, their replies in order."""
        with self._lock:
            seqs = [self._send(msg, family, a, _F_REQUEST) for a in requests]
            out: list[bytes | None] = []
            for seq in seqs:
                try:
                    got = self._replies(seq, False)
                    out.append(got[0] if got else None)
                except NetlinkError as e:
                    if e.errno != errno.ENOENT:
                        raise
                    out.append(None)
            return out

    def generation(self) -> int:
        """The nf_tables generation id (moves with every committed transaction)."""
        with self._lock:
            (reply,) = self._replies(self._send(MSG_GETGEN, "ip", b"", _F_REQUEST), False) or (b"",)
        off = 0
        while off + 4 <= len(reply):
            alen, atype = struct.unpack_from("=HH", reply, off)
            if atype & 0x7FFF == 1:  # NFTA_GEN_ID
                return int(struct.unpack_from(">I", reply, off + 4)[0])
            off += (alen + 3) & ~3
        raise NetlinkError("netlink: NFT_MSG_GETGEN without a generation id", errno.EPROTO)

    def close(self) -> None:
        self._sock.close()


def os_strerror(code: int) -> str:
    return f"{os.strerror(code)} (errno {code})"
