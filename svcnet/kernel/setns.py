"""Entering network namespaces: the one ``setns(2)`` of svcnet (I/O).

``setns(fd, CLONE_NEWNET)`` moves only the calling thread; sockets keep the
namespace they were created in, and a netlink or netfilter handle talks to the
namespace its socket belongs to. Two ways in:

* :func:`entered` -- the block runs in the namespace and the thread comes back
  afterwards (also on failure). The way back is the thread's own namespace
  (``/proc/thread-self/ns/net``) saved on entry, so threads never disturb each
  other and blocks nest; no lock is needed (today's callers: the lab's sockets
  and sysctls, the iptables libiptc driver around every table operation).
* :func:`enter` -- the calling thread moves for good: for worker threads that
  live in one namespace (the nftables context thread, the DNS server's bind
  thread).

Namespaces are named (``/run/netns/<name>``, what ``ip netns`` makes) or given as
an absolute path (``/proc/<pid>/ns/net``). This module refuses no name: entering
is harmless; the destructive operations of :mod:`svcnet.kernel.netns` are the
ones limited to ``svcnet-`` names.

Why ctypes and not ``pyroute2.netns.setns``/``pushns``/``popns``: they make the
same syscall, but importing pyroute2 (0.9.7) costs 230-300 ms per process
(measured on the project's shared machine; ``import svcnet`` itself is ~250 ms
there), paid by every backend process, while this module is part of the backend
contract and must not need the ``lab`` extra that carries pyroute2;
``pushns``/``popns`` keep one process-wide stack and save ``/proc/self/ns/net``
(the main thread's namespace), so they are wrong from worker threads; and
``setns(name)`` creates a missing namespace unless given ``flags=0``. Where
pyroute2 was measured against iproute2 for the lab, see
:mod:`svcnet.kernel.netns`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Iterator

from svcnet.errors import BackendError, BackendErrorKind

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
_OWN = "/proc/thread-self/ns/net"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class NamespaceError(BackendError):
    """A network namespace could not be entered: ``NOT_FOUND`` when it does not
    exist, ``PERMISSION`` when ``setns`` is refused (no CAP_SYS_ADMIN)."""

    def __init__(self, message: str, kind: BackendErrorKind = BackendErrorKind.NOT_FOUND) -> None:
        super().__init__(kind, message)


def netns_path(netns: str) -> str:
    """The file of namespace ``netns``: an absolute path as given, else /run/netns/<netns>."""
    if netns.startswith("/"):
        return netns
    if not netns or "/" in netns or netns in (".", ".."):
        raise NamespaceError(f"{netns!r} is not a network namespace name")
    return os.path.join(NETNS_DIR, netns)


def _open(netns: str) -> int:
    try:
        return os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise NamespaceError(f"network namespace {netns} does not exist ({e.strerror})") from e


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NamespaceError(
            f"cannot enter network namespace {what}: {os.strerror(err)}",
            BackendErrorKind.PERMISSION,
        )


def enter(netns: str) -> None:
    """Move the calling thread into ``netns`` for good (a worker thread's first step)."""
    fd = _open(netns)
    try:
        _setns(fd, netns)
    finally:
        os.close(fd)


@contextlib.contextmanager
def entered(netns: str | None) -> Iterator[None]:
    """Run the block with this thread in ``netns`` (None: where it is), then come back."""
    if netns is None:
        yield
        return
    target = _open(netns)
    try:
        own = os.open(_OWN, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target, netns)
            try:
                yield
            finally:
                _setns(own, "of this thread (on the way back)")
        finally:
            os.close(own)
    finally:
        os.close(target)


__all__ = ["CLONE_NEWNET", "NETNS_DIR", "NamespaceError", "enter", "entered", "netns_path"]
