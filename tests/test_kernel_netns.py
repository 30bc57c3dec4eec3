"""svcnet.kernel.netns: the one place that makes, deletes, lists and reaps svcnet-
namespaces (entering them: tests/test_kernel_setns.py)."""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

from svcnet.errors import BackendErrorKind
from svcnet.kernel import netns

PREFIX = "svcnet-tn-"


def _listed() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


@pytest.mark.parametrize(
    "name", ["", "default", "svcnet", "x-svcnet-a", "svcnet-../x", "svcnet-a/b"]
)
def test_refuses_names_that_are_not_svcnet(name: str) -> None:
    for act in (netns.fresh, netns.delete, netns.create, netns.reap_orphans, netns.Namespaces):
        with pytest.raises(netns.LabError, match="refusing"):
            act(name)


def test_delete_all_tries_every_name_and_raises_the_first_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tried: list[str] = []

    def delete(name: str) -> None:
        tried.append(name)
        if name.endswith("-2"):
            raise netns.LabError(f"cannot delete {name}")

    monkeypatch.setattr(netns, "delete", delete)
    with pytest.raises(netns.LabError, match="svcnet-x-2"):
        netns.delete_all(["svcnet-x-1", "svcnet-x-2", "svcnet-x-3"])
    assert tried == ["svcnet-x-1", "svcnet-x-2", "svcnet-x-3"]


def test_fresh_names_carry_the_pid_and_skip_leftovers(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []

    def create(name: str) -> bool:
        made.append(name)
        return len(made) > 1  # the first name is taken (left by an earlier process)

    monkeypatch.setattr(netns, "create", create)
    name = netns.fresh(PREFIX)
    assert made[-1] == name and len(made) == 2 and made[0] != name
    pid, _, serial = name.removeprefix(PREFIX).partition("-")
    assert pid == str(os.getpid()) and serial.isdigit()


# -- kernel --------------------------------------------------------------------------------


@pytest.mark.kernel
def test_fresh_namespace_has_loopback_up_and_scratch_deletes_it() -> None:
    with pytest.raises(RuntimeError), netns.scratch(PREFIX) as name:
        assert name in _listed() and name in netns.listed(PREFIX)
        lo = netns.ip_json(name, "link", "show", "lo")
        assert lo and "UP" in lo[0]["flags"]  # type: ignore[operator]
        raise RuntimeError("fail inside: the namespace must still go")
    assert name not in _listed()
    netns.delete(name)  # already gone: no error


@pytest.mark.kernel
def test_namespaces_release_one_and_delete_the_rest_on_failure() -> None:
    with pytest.raises(RuntimeError), netns.Namespaces(PREFIX) as spaces:
        a, b, c = spaces.new(), spaces.new(), spaces.new()
        assert len({a, b, c}) == 3 and {a, b, c} <= _listed()
        spaces.release(b)
        assert b not in _listed() and {a, c} <= _listed()
        raise RuntimeError("fail inside: the others must still go")
    assert not {a, b, c} & _listed()
    assert spaces.made == []


@pytest.mark.kernel
def test_create_leaves_nothing_behind_when_loopback_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = netns.run

    def run(args: list[str], **kw: object) -> str:
        if args[-3:] == ["set", "lo", "up"]:
            raise netns.LabError("lo stays down")
        return real(args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(netns, "run", run)
    name = f"{PREFIX}{os.getpid()}-lo"
    with pytest.raises(netns.LabError, match="lo stays down"):
        netns.create(name)
    monkeypatch.undo()
    assert name not in _listed()


def test_create_failure_is_a_permission_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(netns.LabError) as err:
        netns.create(f"{PREFIX}{os.getpid()}-nopath")
    assert err.value.kind is BackendErrorKind.PERMISSION
    assert "cannot create network namespace" in str(err.value)


@pytest.mark.kernel
def test_reap_orphans_deletes_only_namespaces_of_dead_processes() -> None:
    # A pid above pid_max can never be alive: it stands for a run killed by SIGKILL.
    dead = int(pathlib.Path("/proc/sys/kernel/pid_max").read_text()) + 1
    orphan = f"{PREFIX}{dead}-1"
    mine = f"{PREFIX}{os.getpid()}-orphan"
    not_ours = f"{PREFIX}{dead}-x-y"  # not a <prefix><pid>-<n> name
    for name in (orphan, mine, not_ours):
        netns.create(name)
    try:
        assert netns.reap_orphans(PREFIX) == [orphan]
        assert orphan not in _listed() and {mine, not_ours} <= _listed()
    finally:
        netns.delete_all([orphan, mine, not_ours])
    assert not {orphan, mine, not_ours} & _listed()


@pytest.mark.kernel
def test_sysctls_are_written_inside_the_namespace() -> None:
    key = "net/ipv4/ip_forward"
    with open(f"/proc/sys/{key}", encoding="ascii") as f:
        root_before = f.read()
    with netns.scratch(PREFIX) as name:
        netns.sysctls(name, {"net.ipv4.ip_forward": "1"})
        inside = subprocess.run(
            ["ip", "netns", "exec", name, "cat", f"/proc/sys/{key}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    with open(f"/proc/sys/{key}", encoding="ascii") as f:
        assert f.read() == root_before  # the root namespace's value is untouched
    assert inside.strip() == "1"
