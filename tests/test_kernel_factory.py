"""svcnet.kernel.factory: the one backend factory for kernel work (a fresh
namespace per backend instance), used by the scenario command, the pytest
plugin and the backends' kernel tests."""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

from svcnet.backend import load_backend
from svcnet.kernel import SCENARIO_PREFIX, TEST_PREFIX, NetnsFactory, kernel_backends, netns

PREFIX = "svcnet-tf-"


def _listed() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def _loopback_up(name: str) -> bool:
    from pyroute2 import IPRoute

    from svcnet.kernel import entered

    with entered(name), IPRoute(groups=0) as ipr:
        (lo,) = ipr.link("get", ifname="lo")
        return bool(lo["flags"] & 1)


def test_prefixes_are_svcnet_names() -> None:
    assert TEST_PREFIX.startswith("svcnet-") and SCENARIO_PREFIX.startswith("svcnet-")
    assert TEST_PREFIX != SCENARIO_PREFIX


@pytest.mark.kernel
def test_each_backend_gets_a_fresh_namespace_all_deleted_on_failure() -> None:
    memory = load_backend("memory")
    made: list[str] = []
    with pytest.raises(RuntimeError), kernel_backends(memory, PREFIX) as make:
        assert make.name == "memory" and make.capabilities == memory.capabilities
        for node in ("node-a", "node-b"):
            backend = make(node)
            assert backend.node == node and backend.netns is not None
            assert make.netns_of(backend) == backend.netns
            made.append(backend.netns)
        assert set(made) <= _listed()
        assert all(n.startswith(f"{PREFIX}{os.getpid()}-") for n in made)
        assert all(_loopback_up(n) for n in made)
        raise RuntimeError("fail inside: the namespaces must still go")
    assert len(set(made)) == 2
    assert not set(made) & _listed()


@pytest.mark.kernel
def test_release_deletes_one_namespace_at_once() -> None:
    memory = load_backend("memory")
    with kernel_backends(memory, PREFIX) as make:
        a, b = make("node-a"), make("node-b")
        assert a.netns is not None and b.netns is not None
        make.release(a)
        assert a.netns not in _listed() and b.netns in _listed()
        make.release(a)  # twice: nothing left to do
    assert b.netns not in _listed()


class Refuses(load_backend("memory")):  # type: ignore[misc]
    """A backend whose constructor fails (after looking at its namespace)."""

    seen: list[str] = []

    def __init__(self, node: str, *, netns: str | None = None) -> None:
        assert netns is not None
        Refuses.seen.append(netns)
        raise RuntimeError(f"cannot program {netns}")


@pytest.mark.kernel
def test_a_backend_that_cannot_be_made_leaves_no_namespace() -> None:
    Refuses.seen = []
    with NetnsFactory(Refuses, PREFIX) as make:
        with pytest.raises(RuntimeError, match="cannot program"):
            make("node-a")
        (space,) = Refuses.seen
        assert space not in _listed()
        assert make._spaces.made == []


@pytest.mark.kernel
def test_orphans_of_dead_runs_are_reaped_when_a_factory_starts() -> None:
    # A pid above pid_max can never be alive: it stands for a run killed by SIGKILL.
    dead = int(pathlib.Path("/proc/sys/kernel/pid_max").read_text()) + 1
    orphan = f"{PREFIX}{dead}-1"
    netns.create(orphan)
    try:
        with kernel_backends(load_backend("memory"), PREFIX) as make:
            assert orphan not in _listed()
            backend = make("node-a")
            assert backend.netns in _listed()
    finally:
        netns.delete(orphan)
    assert orphan not in _listed()
