"""``svcnet agent`` as a real process programming nftables in a fresh ``svcnet-``
network namespace, driven by ``svcnet apply`` / ``svcnet delete`` in other
processes. Everything is read back from the kernel: the rules' answer to a probe
(the nftables backend's ``evaluate`` in that namespace, compared with the
semantics oracle on the store's state) and ``nft list ruleset``.

Shown: a pod applied becomes an endpoint, and goes when deleted; an agent killed
with SIGKILL and started again converges to the same ruleset, no rule twice; a
second agent for the namespace is refused (exit 1, the first one's pid named); a
hand-deleted map element is back after the next periodic resync; SIGTERM exits 0
leaving the rules, ``--cleanup`` removes the tables.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

import pytest
from storehelp import DEMO, WEB4_POD, wait
from storehelp import svcnet as run_svcnet

from svcnet import semantics
from svcnet.agent import AGENT_DIR, read_status
from svcnet.backend import load_backend
from svcnet.kernel import netns
from svcnet.probe import Outcome, Probe, SourceKind, Verdict
from svcnet.store import Store

pytestmark = pytest.mark.kernel

DEADLINE = 60.0  # seconds any wait below may take at most (it normally takes far less)
PREFIX = "svcnet-ag-"
NODE = "node-a"
NFT = ("ip", "netns", "exec")  # then the namespace and the nft command
# the demo's client pod on node-a to the web service's ClusterIP
PROBE = Probe(SourceKind.POD, "10.244.1.20", NODE, "10.96.0.10", 80)
WEB4 = "10.244.2.12:8080"
POD = WEB4_POD


def svcnet(store: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_svcnet(store, *args, timeout=DEADLINE)


def _wait(what: str, cond: Callable[[], bool]) -> None:
    wait(what, cond, DEADLINE, interval=0.02)


@pytest.fixture
def ns() -> Iterator[str]:
    with netns.scratch(PREFIX) as name:
        try:
            yield name
        finally:  # the files of the agents the test ran, in the default directory
            for ext in (".json", ".lock"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(AGENT_DIR, name + ext))


@pytest.fixture
def store(tmp_path: pathlib.Path) -> str:
    path = str(tmp_path / "store.db")
    done = svcnet(path, "apply", "-f", str(DEMO))
    assert done.returncode == 0, done.stderr
    return path


class AgentProcess:
    """One ``svcnet agent`` process; its stderr goes to a file (read after)."""

    def __init__(self, store: str, ns: str, log: pathlib.Path, *extra: str) -> None:
        self.log = log
        self._out: IO[str] = open(log, "a")  # noqa: SIM115 - closed in stop()/kill()
        args = ["--store", store, "agent", "--node", NODE, "--backend", "nftables"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "svcnet", *args, "--netns", ns, *extra],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.status_file = os.path.join(AGENT_DIR, ns + ".json")
        for i, arg in enumerate(extra):
            if arg == "--run-dir":
                self.status_file = os.path.join(extra[i + 1], ns + ".json")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def status(self) -> dict[str, Any]:
        return read_status(self.status_file) or {}

    def wait_programmed(self, store: str) -> dict[str, Any]:
        """Poll the status until this process reports the store's current version."""
        version = Store(store).version()

        def done() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"the agent exited {self.proc.returncode}: {self.output()}")
            got = self.status()
            return got.get("pid") == self.pid and got.get("version") == version

        _wait(f"the agent programs version {version}", done)
        return self.status()

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(DEADLINE)
        self._out.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(DEADLINE)
        self._out.close()

    def output(self) -> str:
        return self.log.read_text()  # the process writes to the file itself


@contextlib.contextmanager
def agent(store: str, ns: str, log: pathlib.Path, *extra: str) -> Iterator[AgentProcess]:
    proc = AgentProcess(store, ns, log, *extra)
    try:
        yield proc
    finally:
        proc.kill()


@contextlib.contextmanager
def reader(ns: str) -> Iterator[Any]:
    """A second nftables backend in ``ns``, used only to read the kernel back."""
    backend = load_backend("nftables")(NODE, netns=ns)
    try:
        yield backend
    finally:
        backend.close()


def _outcome(ns: str) -> Outcome:
    with reader(ns) as backend:
        got: Outcome = backend.evaluate(PROBE)
        return got


def _expected(store: str) -> Outcome:
    return semantics.evaluate(Store(store).load(), PROBE)


def _ruleset(ns: str) -> list[str]:
    done = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "list", "ruleset"],
        capture_output=True,
        text=True,
        check=True,
        timeout=DEADLINE,
    )
    return done.stdout.splitlines()


def _tables(ns: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "list", "tables"],
        capture_output=True,
        text=True,
        check=True,
        timeout=DEADLINE,
    ).stdout


def test_agent_follows_the_store_survives_sigkill_and_holds_its_namespace(
    ns: str, store: str, tmp_path: pathlib.Path
) -> None:
    with agent(store, ns, tmp_path / "agent1.log") as first:
        status = first.wait_programmed(store)
        assert status["netns"] == ns and status["backend"] == "nftables"
        assert status["node"] == NODE and status["full_syncs"] == 1
        assert "agent: node node-a programmed store version" in first.output()
        before = _outcome(ns)
        assert before.verdict is Verdict.FORWARD and WEB4 not in before.endpoints
        assert before == _expected(store)
        # a pod applied by another process becomes an endpoint in the kernel
        pod = tmp_path / "web4.yaml"
        pod.write_text(POD)
        done = svcnet(store, "apply", "-f", str(pod))
        assert done.returncode == 0, done.stderr
        status = first.wait_programmed(store)
        assert status["last_sync"]["full"] is False  # an incremental sync did it
        after = _outcome(ns)
        assert WEB4 in after.endpoints and after == _expected(store)
        # killed without a chance to clean up, started again: the same ruleset
        ruleset = _ruleset(ns)
        first.kill()
        with agent(store, ns, tmp_path / "agent2.log") as second:
            status = second.wait_programmed(store)
            assert status["syncs"] == 1 and status["last_sync"]["why"] == "start"
            again = _ruleset(ns)
            assert sorted(again) == sorted(ruleset)  # nothing twice, nothing lost
            assert _outcome(ns) == after
            # a second agent for the same namespace is refused
            refused = svcnet(store, "agent", "--node", NODE, "--backend", "nftables", "--netns", ns)
            assert refused.returncode == 1
            assert (
                f"error: an agent (pid {second.pid}) already programs network namespace {ns}"
                in refused.stderr
            )
            assert second.proc.poll() is None
            # a deletion follows too
            done = svcnet(store, "delete", "pod", "web-4")
            assert done.returncode == 0, done.stderr
            second.wait_programmed(store)
            gone = _outcome(ns)
            assert WEB4 not in gone.endpoints and gone == _expected(store)
            # SIGTERM: exit 0, the rules stay
            assert second.terminate() == 0, second.output()
        assert sorted(_ruleset(ns)) != [] and "table ip svcnet" in _tables(ns)
        assert _outcome(ns) == gone
        assert read_status(second.status_file)["running"] is False  # type: ignore[index]


def test_a_hand_deleted_element_is_back_after_the_next_resync(
    ns: str, store: str, tmp_path: pathlib.Path
) -> None:
    run_dir = str(tmp_path / "agents")
    with agent(
        store, ns, tmp_path / "agent.log", "--run-dir", run_dir, "--sync-period", "0.5"
    ) as proc:
        proc.wait_programmed(store)
        whole = _outcome(ns)
        assert whole.verdict is Verdict.FORWARD and whole == _expected(store)
        ruleset = _ruleset(ns)
        # untouched (the nf_tables generation has not moved): periods pass, no rewrite
        _wait("a resync skipped", lambda: proc.status().get("resyncs_skipped", 0) >= 2)
        assert proc.status()["full_syncs"] == 1  # the start only
        # delete the ClusterIP's TCP entry of the frontend map by hand
        element = "{ 10.96.0.10 . tcp . 80 }"
        subprocess.run(
            [*NFT, ns, "nft", "delete", "element", "ip", "svcnet", "fe", element],
            check=True,
            timeout=DEADLINE,
        )
        assert _outcome(ns).verdict is Verdict.REJECT  # the kernel really lost it
        full = proc.status()["full_syncs"]
        _wait("a resync puts it back", lambda: proc.status().get("full_syncs", 0) > full)
        _wait("the element is back", lambda: _outcome(ns) == whole)
        assert sorted(_ruleset(ns)) == sorted(ruleset)
        assert proc.status()["last_sync"]["why"] == "period"
        assert proc.terminate() == 0, proc.output()


def test_cleanup_removes_the_tables_on_sigterm(ns: str, store: str, tmp_path: pathlib.Path) -> None:
    run_dir = str(tmp_path / "agents")
    with agent(store, ns, tmp_path / "agent.log", "--run-dir", run_dir, "--cleanup") as proc:
        proc.wait_programmed(store)
        assert "table ip svcnet" in _tables(ns)
        assert proc.terminate() == 0, proc.output()
    assert "svcnet" not in _tables(ns)
    assert "cleaned up" in proc.output()
