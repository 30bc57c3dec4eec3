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

import ctypes
import ctypes.util
import json
import queue
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
