"""svcnet.kernel.setns and svcnet.kernel.caps: the one setns and the one capability check.

The kernel tests read what a thread sees inside a namespace back with pyroute2
(an independent netlink client) and compare it with what ``ip -n`` says.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator

import pytest

from svcnet.errors import BackendErrorKind
from svcnet.kernel import caps, netns, setns

PREFIX = "svcnet-tk-"


def _ns_id(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _here() -> tuple[int, int]:
    return _ns_id("/proc/thread-self/ns/net")


def _links_seen_by_a_new_socket() -> set[str]:
    """The links of the namespace this thread is in, asked over a netlink socket
    made now (pyroute2)."""
    from pyroute2 import IPRoute

    with IPRoute(groups=0) as ipr:
        return {str(m.get("ifname")) for m in ipr.link("dump")}


def _ip_links(name: str) -> set[str]:
    out = subprocess.run(
        ["ip", "-n", name, "-o", "link", "show"], capture_output=True, text=True, check=True
    )
    return {line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines()}


@pytest.fixture
def two() -> Iterator[tuple[str, str]]:
    """Two fresh namespaces, each with its own link (bridges da / db)."""
    with netns.Namespaces(PREFIX) as spaces:
        a, b = spaces.new(), spaces.new()
        netns.batch(a, ["link add da type bridge"])
        netns.batch(b, ["link add db type bridge"])
        yield a, b


@pytest.mark.kernel
def test_entered_sees_the_namespaces_own_links_and_comes_back(two: tuple[str, str]) -> None:
    a, _ = two
    home = _here()
    with setns.entered(a):
        assert _here() == _ns_id(f"/run/netns/{a}")
        inside = _links_seen_by_a_new_socket()
    assert _here() == home
    assert inside == _ip_links(a) == {"lo", "da"}
    assert "da" not in _links_seen_by_a_new_socket()  # the root namespace's view


@pytest.mark.kernel
def test_entered_nests_and_comes_back_after_a_failure(two: tuple[str, str]) -> None:
    a, b = two
    home = _here()
    seen: list[set[str]] = []
    with pytest.raises(RuntimeError), setns.entered(a):
        seen.append(_links_seen_by_a_new_socket())
        with setns.entered(b):
            seen.append(_links_seen_by_a_new_socket())
        seen.append(_links_seen_by_a_new_socket())
        raise RuntimeError("fail inside: the thread must come back")
    assert seen == [{"lo", "da"}, {"lo", "db"}, {"lo", "da"}]
    assert _here() == home


@pytest.mark.kernel
def test_threads_enter_different_namespaces_at_the_same_time(two: tuple[str, str]) -> None:
    a, b = two
    home = _here()
    both_inside = threading.Barrier(2)
    seen: dict[str, set[str]] = {}
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            with setns.entered(name):
                both_inside.wait()  # the other thread is inside its namespace now
                seen[name] = _links_seen_by_a_new_socket()
                both_inside.wait()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert seen == {a: {"lo", "da"}, b: {"lo", "db"}}
    assert _here() == home


@pytest.mark.kernel
def test_enter_moves_a_worker_thread_for_good(two: tuple[str, str]) -> None:
    a, _ = two
    home = _here()
    seen: list[tuple[int, int]] = []

    def worker() -> None:
        setns.enter(a)
        seen.append(_here())

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == [_ns_id(f"/run/netns/{a}")]
    assert _here() == home  # the caller's thread never moved


def test_a_missing_namespace_is_not_found() -> None:
    name = f"{PREFIX}{os.getpid()}-missing"
    with pytest.raises(setns.NamespaceError) as err, setns.entered(name):
        pytest.fail("the block must not run")
    assert err.value.kind is BackendErrorKind.NOT_FOUND
    with pytest.raises(setns.NamespaceError):
        setns.enter(name)
    with pytest.raises(netns.LabError, match="does not exist"), netns.entered(name):
        pytest.fail("the block must not run")


@pytest.mark.parametrize("name", ["", ".", "..", "a/b"])
def test_names_that_are_not_namespace_names_are_refused(name: str) -> None:
    with pytest.raises(setns.NamespaceError, match="not a network namespace name"):
        setns.enter(name)


def test_entered_none_stays_where_it_is() -> None:
    home = _here()
    with setns.entered(None):
        assert _here() == home


def test_net_admin_follows_the_effective_capability_mask() -> None:
    with open("/proc/self/status", encoding="ascii") as f:
        line = next(x for x in f if x.startswith("CapEff:"))
    mask = int(line.split()[1], 16)
    assert caps.effective_caps() == mask
    assert caps.has_net_admin() is bool(mask & (1 << 12))


def test_net_admin_without_proc_falls_back_to_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caps, "effective_caps", lambda: None)
    for euid, expected in ((0, True), (1000, False)):
        monkeypatch.setattr(caps.os, "geteuid", lambda e=euid: e)
        assert caps.has_net_admin() is expected


@pytest.mark.kernel
def test_entering_without_privilege_is_a_permission_error(two: tuple[str, str]) -> None:
    import shutil
    import sys

    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to run a process without privileges")
    a, _ = two
    code = (
        "from svcnet.kernel import NamespaceError, entered\n"
        "try:\n"
        f"    with entered({a!r}): print('inside')\n"
        "except NamespaceError as e: print(e.kind.name)\n"
    )
    out = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    )
    assert out.stdout.strip() == "PERMISSION"
