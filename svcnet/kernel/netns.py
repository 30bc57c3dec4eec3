"""Network namespace plumbing for the lab, the harness and the scenario runner (I/O).

Everything here that creates, deletes or writes acts only on namespaces whose
names start with ``svcnet-``; callers build those names
(:mod:`svcnet.lab.topology`, :mod:`svcnet.kernel.factory`). Links, addresses and
routes are set with iproute2 in batch mode (one ``ip -n NS -batch -`` process
per namespace and round), sysctls are written from a thread that has entered the
namespace (``/proc/sys/net`` belongs to the opener's namespace), and sockets are
created inside a namespace with :func:`entered` (a socket keeps the namespace it
was created in; see :mod:`svcnet.kernel.setns`).

This is also the one place that makes throw-away namespaces for tests and
scenario runs (:func:`fresh`, :class:`Namespaces`): each is named
``<prefix><pid>-<n>``, deleted when done (also on failure), and
:func:`reap_orphans` deletes those of runs that died before they could.

Why iproute2 and not pyroute2 here (pyroute2 0.9.7, measured on the project's
shared 2-core machine, medians; the numbers move with the load, the order did not):

* creating a namespace with ``lo`` up: ``ip netns add`` + ``ip link set lo up``
  6.6 ms; ``pyroute2.netns.create`` forks the Python process and took 12 ms
  before ``lo`` was even up (27 ms with ``IPRoute(netns=...)`` for ``lo``);
* deleting: ``ip netns delete`` 2.3 ms, ``pyroute2.netns.remove`` 0.1 ms -- but
  importing pyroute2 costs 230-300 ms per process, so it pays only past ~110
  deletions in one process (a lab of 2 nodes and 50 pods has 54 namespaces);
* the lab's links, addresses and routes (namespaces, veths, bridge, addresses,
  routes; no servers): the demo topology (2 nodes, 4 pods) 260-390 ms with
  ``ip -batch`` vs 490-690 ms with pyroute2 ``IPRoute`` handles opened inside
  each namespace; 2 nodes + 54 pods 2.0-3.1 s vs 3.3-4.6 s;
* per request: 200 routes added in one namespace took 23 ms with one ``ip -batch``
  process (0.12 ms a route, process start included) and 455 ms with one
  ``IPRoute`` handle (2.3 ms a route: each synchronous call sets up and tears
  down its asyncio transport and encodes the message in Python).

So pyroute2 stays out of the lab's build path; it is used where its speed does
not matter and its structured answers do: reading a namespace's links back in the
kernel tests (``tests/test_kernel_*.py``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator

from svcnet.errors import BackendError, BackendErrorKind
from svcnet.kernel import setns
from svcnet.kernel.setns import NETNS_DIR

ETC_NETNS = "/etc/netns"  # ``ip netns exec NS`` bind-mounts /etc/netns/NS/<file> over /etc/<file>
ETC_FILES = ("resolv.conf",)  # the only files we write there
PREFIX = "svcnet-"


class LabError(BackendError):
    """The lab could not build or tear down part of its topology."""

    def __init__(self, message: str, kind: BackendErrorKind = BackendErrorKind.STATE) -> None:
        super().__init__(kind, message)


def _check_name(name: str) -> None:
    if not name.startswith(PREFIX) or "/" in name:
        raise LabError(f"refusing to touch network namespace {name!r}: not an svcnet- namespace")


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the block in network namespace ``name`` (this thread only), then come
    back (:func:`svcnet.kernel.setns.entered`, limited to ``svcnet-`` names)."""
    _check_name(name)
    if not exists(name):
        raise LabError(f"network namespace {name} does not exist")
    with setns.entered(name):
        yield


def run(args: list[str], *, input: str | None = None, check: bool = True) -> str:
    try:
        p = subprocess.run(args, input=input, capture_output=True, text=True, check=False)
    except OSError as e:
        raise LabError(f"cannot run {args[0]}: {e}") from e
    if check and p.returncode != 0:
        raise LabError(f"{' '.join(args[:6])}: {(p.stderr or p.stdout).strip()}")
    return p.stdout


def exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def listed(prefix: str) -> list[str]:
    """The namespaces whose names start with ``prefix`` (an ``svcnet-`` prefix)."""
    _check_name(prefix)
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def create(name: str) -> bool:
    """Create ``name`` with ``lo`` up; False when it already existed. Raises
    :class:`LabError` (kind permission) when it cannot, leaving nothing behind."""
    _check_name(name)
    if exists(name):
        return False
    try:
        run(["ip", "netns", "add", name])
    except LabError as e:
        raise LabError(
            f"cannot create network namespace {name}: {e}", BackendErrorKind.PERMISSION
        ) from e
    try:
        run(["ip", "-n", name, "link", "set", "lo", "up"])
    except BaseException:
        with contextlib.suppress(Exception):  # the first error is the one to see
            delete(name)
        raise
    return True


def delete(name: str) -> None:
    """Delete ``name`` if it exists; quietly does nothing when it is already gone."""
    _check_name(name)
    if exists(name):
        run(["ip", "netns", "delete", name], check=False)


# -- throw-away namespaces: <prefix><pid>-<n> ---------------------------------------

_serial = itertools.count(1)


def fresh(prefix: str) -> str:
    """Create a new namespace ``<prefix><pid>-<n>`` (``lo`` up) and return its name.

    The creator's pid in the name lets :func:`reap_orphans` tell the namespaces
    of a run that died from those of one still going."""
    _check_name(prefix)
    while True:
        name = f"{prefix}{os.getpid()}-{next(_serial)}"
        if create(name):  # else: left by an earlier process with our pid; skip it
            return name


def delete_all(names: Iterable[str]) -> None:
    """Delete every namespace of ``names``, each tried even when one before it
    fails; the first failure is raised at the end."""
    first: BaseException | None = None
    for name in names:
        try:
            delete(name)
        except Exception as e:  # keep deleting the others; raise it after
            first = first or e
    if first is not None:
        raise first


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[str]:
    """A :func:`fresh` namespace for the block, deleted after it (also on failure)."""
    name = fresh(prefix)
    try:
        yield name
    finally:
        delete(name)


class Namespaces:
    """The throw-away namespaces one run makes with one ``prefix``: :meth:`new`
    creates one, :meth:`release` deletes one, :meth:`close` (or leaving the
    ``with`` block, also on failure) deletes what is left."""

    def __init__(self, prefix: str) -> None:
        _check_name(prefix)
        self.prefix = prefix
        self.made: list[str] = []

    def new(self) -> str:
        name = fresh(self.prefix)
        self.made.append(name)
        return name

    def release(self, name: str) -> None:
        if name in self.made:
            self.made.remove(name)
            delete(name)

    def close(self) -> None:
        made, self.made = self.made, []
        delete_all(made)

    def __enter__(self) -> Namespaces:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reap_orphans(prefix: str) -> list[str]:
    """Delete the ``<prefix><pid>-<n>`` namespaces whose creating process is gone
    (a run killed with SIGKILL cannot clean up after itself); the names deleted."""
    reaped = []
    for name in listed(prefix):
        pid, dash, serial = name[len(prefix) :].partition("-")
        if not (pid.isdigit() and dash and serial.isalnum()):
            continue  # not a throw-away name (a lab's namespace, say)
        if int(pid) == os.getpid() or os.path.exists(f"/proc/{pid}"):
            continue
        delete(name)
        reaped.append(name)
    return reaped


def batch(name: str, commands: Iterable[str], *, force: bool = False) -> None:
    """Run iproute2 ``commands`` (without the leading ``ip``) in namespace ``name``."""
    _check_name(name)
    lines = [c for c in commands if c]
    if not lines:
        return
    args = ["ip", "-n", name] + (["-force"] if force else []) + ["-batch", "-"]
    run(args, input="\n".join(lines) + "\n", check=not force)


def ip_json(name: str, *args: str) -> list[dict[str, object]]:
    _check_name(name)
    out = run(["ip", "-j", "-n", name, *args], check=False)
    try:
        value = json.loads(out or "[]")
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def sysctls(name: str, values: dict[str, str]) -> None:
    """Write ``/proc/sys/<key>`` (dots as slashes) inside namespace ``name``."""
    with entered(name):
        for key, value in values.items():
            path = "/proc/sys/" + key.replace(".", "/")
            with open(path, "w", encoding="ascii") as f:
                f.write(value)


def pids(name: str) -> list[int]:
    """Processes running in namespace ``name`` (``ip netns pids``)."""
    _check_name(name)
    if not exists(name):
        return []
    out = run(["ip", "netns", "pids", name], check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop(pid_list: Iterable[int], timeout: float = 2.0) -> None:
    """SIGTERM the given processes, SIGKILL what is left after ``timeout``."""
    todo = [p for p in set(pid_list) if p > 1 and p != os.getpid()]
    for p in todo:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while todo and time.monotonic() < deadline:
        for p in todo:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(p, os.WNOHANG)
        todo = [p for p in todo if alive(p)]
        if todo:
            time.sleep(0.02)
    for p in todo:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(p, 0)


def netns_of(pid: int) -> str | None:
    """The name of the named namespace ``pid`` runs in, if it is one of /run/netns."""
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    with contextlib.suppress(OSError):
        for n in os.listdir(NETNS_DIR):
            s2 = os.stat(os.path.join(NETNS_DIR, n))
            if (s2.st_dev, s2.st_ino) == (st.st_dev, st.st_ino):
                return n
    return None


def write_etc(name: str, filename: str, text: str) -> bool:
    """Write ``/etc/netns/<name>/<filename>`` (seen as /etc/<filename> by
    ``ip netns exec name``); False when it already held ``text``."""
    _check_name(name)
    if filename not in ETC_FILES:
        raise LabError(f"refusing to write /etc/netns/{name}/{filename}")
    folder = os.path.join(ETC_NETNS, name)
    path = os.path.join(folder, filename)
    with contextlib.suppress(OSError), open(path, encoding="utf-8") as f:
        if f.read() == text:
            return False
    os.makedirs(folder, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return True


def remove_etc(name: str) -> None:
    """Remove the files :func:`write_etc` writes for ``name`` and then its folder
    (left in place when something else is in it)."""
    _check_name(name)
    folder = os.path.join(ETC_NETNS, name)
    for filename in ETC_FILES:
        for leaf in (filename, filename + ".tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, leaf))
    with contextlib.suppress(FileNotFoundError, OSError):
        os.rmdir(folder)


def etc_listed(prefix: str) -> list[str]:
    """The folders of /etc/netns whose names start with ``prefix`` (an ``svcnet-`` prefix)."""
    _check_name(prefix)
    try:
        names = os.listdir(ETC_NETNS)
    except OSError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def is_root() -> bool:
    return os.geteuid() == 0


__all__ = [
    "NETNS_DIR",
    "LabError",
    "Namespaces",
    "alive",
    "batch",
    "create",
    "delete",
    "delete_all",
    "entered",
    "etc_listed",
    "exists",
    "fresh",
    "ip_json",
    "is_root",
    "listed",
    "netns_of",
    "pids",
    "reap_orphans",
    "remove_etc",
    "run",
    "scratch",
    "stop",
    "sysctls",
    "write_etc",
]
