"""What an agent tells other processes (I/O): its status file, its namespace lock,
and the network programming latencies it measured.

Files live in :data:`AGENT_DIR` (``/run/svcnet/agents``), one pair per network
namespace an agent programs, named by :func:`agent_key` (the namespace's name, or
``host`` for the root namespace):

* ``<key>.json`` -- the status, rewritten atomically (a temporary file in the same
  directory, then ``rename``) after each sync, so a reader never sees half of
  one; its fields are documented in ``docs/reference/agent.md`` and built by
  :meth:`svcnet.agent.Agent.status`;
* ``<key>.lock`` -- held with an exclusive ``flock`` for the agent's life, with
  its pid inside: a second agent for the same namespace is refused
  (:class:`AgentError`). The kernel drops a ``flock`` when its holder dies, even
  by SIGKILL, so a killed agent never blocks the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import tempfile
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from svcnet.errors import SvcnetError

__all__ = [
    "AGENT_DIR",
    "AgentError",
    "LatencyWindow",
    "NamespaceLock",
    "agent_key",
    "lock_path",
    "read_status",
    "status_path",
    "write_status",
]

AGENT_DIR = "/run/svcnet/agents"
HOST = "host"  # the key of the root network namespace


class AgentError(SvcnetError):
    """The agent cannot start or run as asked (another agent holds its namespace,
    a missing namespace, an unwritable status directory)."""


def agent_key(netns: str | None) -> str:
    """The name of an agent's files: its network namespace, or ``host``."""
    if netns is None:
        return HOST
    if not netns or "/" in netns or netns.startswith("."):
        raise AgentError(f"agent: network namespace name {netns!r} cannot name a file")
    return netns


def status_path(netns: str | None, directory: str = AGENT_DIR) -> str:
    """``<directory>/<key>.json``: the status of the agent programming ``netns``."""
    return os.path.join(directory, agent_key(netns) + ".json")


def lock_path(netns: str | None, directory: str = AGENT_DIR) -> str:
    """``<directory>/<key>.lock``: the lock of the agent programming ``netns``."""
    return os.path.join(directory, agent_key(netns) + ".lock")


def _where(netns: str | None) -> str:
    return "the root network namespace (--host)" if netns is None else f"network namespace {netns}"


class NamespaceLock:
    """An exclusive ``flock`` on ``path`` with this process's pid inside, held from
    :meth:`acquire` to :meth:`release` (or the ``with`` block)."""

    def __init__(self, path: str, netns: str | None) -> None:
        self.path = path
        self.netns = netns
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; :class:`AgentError` naming the holder's pid when another
        process has it.

        The holder removes the file when it releases the lock, so a process that
        got the lock on a file that is no longer the one at ``path`` (unlinked by
        the holder it waited for) tries again on the new one."""
        for _ in range(100):
            if self._acquire_once():
                return
        raise AgentError(f"agent: the lock {self.path} keeps being replaced")

    def _acquire_once(self) -> bool:
        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise AgentError(f"agent: cannot open the lock {self.path}: {e.strerror}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = os.pread(fd, 32, 0).decode().strip()
            os.close(fd)
            pid = f"pid {holder}" if holder.isdigit() else "another process"
            raise AgentError(
                f"an agent ({pid}) already programs {_where(self.netns)} (lock {self.path})"
            ) from e
        except OSError as e:
            os.close(fd)
            raise AgentError(f"agent: cannot lock {self.path}: {e.strerror}") from e
        try:
            same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # its holder removed it after we opened it: take the new one
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return True

    def release(self) -> None:
        """Remove the file, then drop the lock (removing it while still holding the
        lock: a process waiting on the old file sees it is gone and retries)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(fd)  # closing the last descriptor releases the flock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> NamespaceLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def write_status(path: str, status: Mapping[str, Any]) -> None:
    """Write ``status`` as JSON to ``path`` atomically (temporary file + rename)."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(status, f, indent=2, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_status(path: str) -> dict[str, Any] | None:
    """The status at ``path``; None when there is none yet (or it is not JSON)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class LatencyWindow:
    """The last ``size`` latencies (seconds) and how many were ever recorded."""

    def __init__(self, size: int = 1000) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self.count = 0
        self.last: float | None = None

    def add(self, values: Iterable[float], last: float | None = None) -> None:
        """Record ``values``; ``last`` (default: their maximum) becomes :attr:`last`."""
        got = [max(v, 0.0) for v in values]
        self._values.extend(got)
        self.count += len(got)
        if last is not None:
            self.last = max(last, 0.0)
        elif got:
            self.last = max(got)

    def percentile(self, p: float) -> float | None:
        """The nearest-rank ``p``-th percentile of the window (None when empty)."""
        if not self._values:
            return None
        ordered = sorted(self._values)
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        return ordered[rank - 1]

    def summary_ms(self) -> dict[str, float | int | None]:
        """``{last, p50, p99, count}``, in milliseconds (None when unknown)."""

        def ms(v: float | None) -> float | None:
            return None if v is None else round(v * 1000, 3)

        return {
            "last": ms(self.last),
            "p50": ms(self.percentile(50)),
            "p99": ms(self.percentile(99)),
            "count": self.count,
        }
