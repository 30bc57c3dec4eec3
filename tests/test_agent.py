"""svcnet.agent without privileges: an Agent over a real Store file with the memory
backend, run in a thread (or an asyncio task) while this test writes the store:
it follows applies and deletes, coalesces bursts, lists again when its watch
expired, survives failed syncs, stops, holds its namespace alone, and writes a
status file other processes can poll."""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import pathlib
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from storehelp import demo, save, wait

from svcnet import manifests
from svcnet.agent import (
    Agent,
    AgentError,
    LatencyWindow,
    NamespaceLock,
    StoreSource,
    read_status,
    write_status,
)
from svcnet.backend import Backend, load_backend
from svcnet.errors import BackendError, BackendErrorKind
from svcnet.plan import Changes, Plan, compile
from svcnet.state import Apply, Delete
from svcnet.store import Change, Listing, Store

DEADLINE = 30.0  # seconds any wait below may take at most (it normally takes far less)
NODE = "node-a"
Memory = load_backend("memory")


def _pod(name: str, node: str = "node-b", ip: str | None = None) -> Apply:
    status = f"podIP: {ip}, " if ip else ""
    text = (
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: web}}}}\n"
        f"spec: {{nodeName: {node}, containers: [{{name: web, ports: "
        f"[{{name: http, containerPort: 8080}}, "
        f"{{name: echo, containerPort: 8053, protocol: UDP}}]}}]}}\n"
        f"status: {{{status}conditions: [{{type: Ready, status: 'True'}}]}}\n"
    )
    return Apply(tuple(manifests.load(text)))


def _wait(what: str, cond: Callable[[], bool], deadline: float = DEADLINE) -> None:
    wait(what, cond, deadline)


def _installed(backend: Backend) -> Plan:
    plan = backend.installed
    assert plan is not None
    return plan


def _programmed(backend: object, store: Store) -> bool:
    """The backend holds exactly the plan of the store's current state."""
    installed = getattr(backend, "installed", None)
    return installed is not None and installed == compile(store.load(), NODE)


@pytest.fixture
def store(tmp_path: pathlib.Path) -> Store:
    s = Store(str(tmp_path / "store.db"))
    save(s, demo())
    return s


@pytest.fixture
def run_dir(tmp_path: pathlib.Path) -> str:
    return str(tmp_path / "run")


class Running:
    """An agent running in a thread for a test; stopped (and joined) on exit."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.agent.run()
        except BaseException as e:
            self.error = e

    def __enter__(self) -> Agent:
        self.thread.start()
        return self.agent

    def __exit__(self, *exc: object) -> None:
        self.agent.stop()
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive(), "the agent did not stop"
        if self.error is not None and exc[0] is None:
            raise self.error


def test_agent_follows_applies_and_deletes(store: Store, run_dir: str) -> None:
    backend = Memory(NODE)
    agent = Agent(StoreSource(store), NODE, backend, run_dir=run_dir)
    with Running(agent):
        assert agent.wait_synced(store.version(), DEADLINE)
        assert _programmed(backend, store)
        assert agent.full_syncs == 1 and agent.last_sync is not None
        assert agent.last_sync.why == "start"
        # a new pod behind `web`: its endpoint appears in node-a's plan
        save(store, _pod("web-4", ip="10.244.2.12"))
        _wait("web-4 programmed", lambda: _programmed(backend, store))
        assert any(
            ep.ip == "10.244.2.12"
            for svc in _installed(backend).services.values()
            for port in svc.ports
            for ep in port.cluster_endpoints
        )
        assert agent.last_sync.full is False and agent.last_sync.replaced >= 1
        # a deleted service goes
        web = store.load().services[("default", "web")]
        save(store, Delete((web.key,)))
        _wait("web removed", lambda: _programmed(backend, store))
        assert all(ref.name != "web" for ref in _installed(backend).services)
        assert agent.version == store.version()
        assert agent.full_syncs == 1  # everything after the start was incremental
        path = os.path.join(run_dir, f"memory-{NODE}.json")  # no namespace: no lock either
        _wait("the status names the version", lambda: _status_version(path) == store.version())
        status = read_status(path)
        assert status is not None
        assert status["node"] == NODE and status["backend"] == "memory"
        assert status["pid"] == os.getpid() and status["running"] is True
        assert status["store"] == store.path and status["error"] is None
        assert status["services"] == len(_installed(backend).services)
        assert status["syncs"] == agent.syncs >= 3 and status["full_syncs"] == 1
        assert status["last_sync"]["removed"] == 1 and status["last_sync"]["full"] is False
        # the store records when each change was made: two changes measured
        assert status["latency_ms"]["count"] == 2
        assert status["latency_ms"]["p99"] >= status["latency_ms"]["p50"] >= 0
    status = read_status(path)
    assert status is not None and status["running"] is False
    assert backend.installed is not None  # stopping leaves the rules


def _status_version(path: str) -> int | None:
    status = read_status(path)
    return None if status is None else status.get("version")


class Gated(Memory):  # type: ignore[misc, valid-type]
    """The memory backend whose apply() waits for the test to open a gate, and
    that counts the calls it got (a slow kernel, under the test's control)."""

    def __init__(self, node: str, *, netns: str | None = None) -> None:
        super().__init__(node, netns=netns)
        self.gate = threading.Event()
        self.gate.set()
        self.blocked = threading.Event()
        self.applies = 0

    def apply(self, changes: Changes) -> None:
        self.applies += 1
        if not self.gate.is_set():
            self.blocked.set()
            assert self.gate.wait(DEADLINE)
        super().apply(changes)


def test_a_burst_coalesces_into_one_sync(store: Store, run_dir: str) -> None:
    backend = Gated(NODE)
    agent = Agent(StoreSource(store), NODE, backend, run_dir=run_dir)
    with Running(agent):
        assert agent.wait_synced(store.version(), DEADLINE)
        backend.gate.clear()
        save(store, _pod("burst-0", ip="10.244.2.100"))
        assert backend.blocked.wait(DEADLINE)  # the first sync holds the kernel
        for i in range(1, 30):  # 29 more changes, one write (one version) each
            save(store, _pod(f"burst-{i}", ip=f"10.244.2.{100 + i}"))
        final = store.version()
        _wait("every change folded", lambda: agent.status()["seen_version"] == final)
        backend.gate.set()
        assert agent.wait_synced(final, DEADLINE)
        assert _programmed(backend, store)
    # the start, the one sync that was held, one sync for everything else
    assert backend.applies == 2 and agent.syncs == 3
    assert agent.last_sync is not None and agent.last_sync.changes == 29


class GatedSource(StoreSource):
    """A store source whose watch waits for the test (a watcher that fell behind)."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.open = threading.Event()
        self.open.set()
        self.parked = threading.Event()  # the watcher waits at the closed gate
        self.lists = 0

    def list(self) -> Listing:
        self.lists += 1
        return super().list()

    def watch(self, since: int, timeout: float | None) -> Iterator[Change]:
        if not self.open.is_set():
            self.parked.set()
            assert self.open.wait(DEADLINE)
        yield from super().watch(since, timeout)


def test_an_expired_watch_lists_again_and_syncs_in_full(tmp_path: pathlib.Path) -> None:
    store = Store(str(tmp_path / "store.db"), log_limit=3)
    save(store, demo())
    source = GatedSource(store)
    backend = Memory(NODE)
    agent = Agent(source, NODE, backend, run_dir=None)
    with Running(agent):
        assert agent.wait_synced(store.version(), DEADLINE)
        source.open.clear()
        assert source.parked.wait(DEADLINE)  # its last watch call ended: it reads no more
        for i in range(6):  # more than the log keeps: the watcher's version is compacted
            save(store, _pod(f"late-{i}", ip=f"10.244.2.{50 + i}"))
        source.open.set()
        assert agent.wait_synced(store.version(), DEADLINE)
        assert _programmed(backend, store)
    assert source.lists == 2
    assert agent.full_syncs == 2 and agent.last_sync is not None
    assert agent.last_sync.why == "relist"


class Failing(Memory):  # type: ignore[misc, valid-type]
    """A fake kernel that refuses every install while ``failing`` is set."""

    def __init__(self, node: str, *, netns: str | None = None) -> None:
        super().__init__(node, netns=netns)
        self.failing = False
        self.refused = 0

    def _install(self, changes: Changes, target: Plan, *, full: bool) -> None:
        if self.failing:
            self.refused += 1
            raise BackendError(BackendErrorKind.REFUSED, "the fake kernel refuses (test)")
        super()._install(changes, target, full=full)


def test_a_failed_sync_is_retried_in_full_fake_failing_backend(
    store: Store, run_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    backend = Failing(NODE)
    backend.failing = True  # even the first sync fails: the agent keeps going
    path = str(pathlib.Path(run_dir) / "status.json")
    agent = Agent(
        StoreSource(store), NODE, backend, run_dir=None, status_file=path, retry_backoff=0.01
    )
    caplog.set_level(logging.INFO, logger="svcnet.agent")
    with Running(agent):
        _wait("a failure in the status", lambda: (read_status(path) or {}).get("error") is not None)
        status = read_status(path)
        assert status is not None and status["version"] is None
        assert "the fake kernel refuses" in status["error"] and status["failed_syncs"] >= 1
        backend.failing = False
        assert agent.wait_synced(store.version(), DEADLINE)
        assert _programmed(backend, store)
        # an incremental install fails (apply's own fallback too): a full retry follows
        backend.failing = True
        save(store, _pod("web-9", ip="10.244.2.99"))
        _wait("the apply failed", lambda: agent.failed_syncs >= 2 and agent.error is not None)
        backend.failing = False
        assert agent.wait_synced(store.version(), DEADLINE)
        assert _programmed(backend, store)
        assert agent.last_sync is not None and agent.last_sync.why == "retry"
        assert agent.error is None
    assert backend.refused >= 3
    assert any("failed" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    assert any("synced version" in r.getMessage() for r in caplog.records)


def test_a_full_resync_runs_every_sync_period(store: Store) -> None:
    backend = Memory(NODE)
    agent = Agent(StoreSource(store), NODE, backend, run_dir=None, sync_period=0.05)
    with Running(agent):
        _wait("three full syncs", lambda: agent.full_syncs >= 3)
        assert agent.last_sync is not None and agent.last_sync.why == "period"
        assert _programmed(backend, store)


def test_stop_leaves_the_rules_and_cleanup_removes_them(store: Store) -> None:
    kept, cleaned = Memory(NODE), Memory(NODE)
    for backend, cleanup in ((kept, False), (cleaned, True)):
        agent = Agent(StoreSource(store), NODE, backend, run_dir=None, cleanup=cleanup)
        with Running(agent):
            assert agent.wait_synced(store.version(), DEADLINE)
        assert not agent.running
    assert _programmed(kept, store)
    assert cleaned.installed is None
    assert str(cleaned.observe()) == str(Memory(NODE).observe())  # empty tables


def test_one_agent_per_network_namespace(store: Store, run_dir: str) -> None:
    first = Agent(StoreSource(store), NODE, Memory(NODE, netns="svcnet-ag-x"), run_dir=run_dir)
    with Running(first):
        assert first.wait_synced(store.version(), DEADLINE)
        second = Agent(StoreSource(store), NODE, Memory(NODE, netns="svcnet-ag-x"), run_dir=run_dir)
        with pytest.raises(AgentError) as e:
            second.run()
        message = str(e.value)
        assert f"an agent (pid {os.getpid()}) already programs network namespace svcnet-ag-x" in (
            message
        )
        assert second.syncs == 0 and second.backend.installed is None
        # another namespace is another agent's
        other = Agent(StoreSource(store), NODE, Memory(NODE, netns="svcnet-ag-y"), run_dir=run_dir)
        with Running(other):
            assert other.wait_synced(store.version(), DEADLINE)
    # the first one gone, the namespace is free again
    again = Agent(StoreSource(store), NODE, Memory(NODE, netns="svcnet-ag-x"), run_dir=run_dir)
    with Running(again):
        assert again.wait_synced(store.version(), DEADLINE)


def test_run_async_leaves_the_event_loop_free(store: Store) -> None:
    backend = Memory(NODE)
    agent = Agent(StoreSource(store), NODE, backend, run_dir=None)

    async def main() -> tuple[int, int]:
        task = asyncio.create_task(agent.run_async())
        ticks = 0
        ticks_while_synced = 0
        end = time.monotonic() + DEADLINE
        target: int | None = None
        while time.monotonic() < end:
            await asyncio.sleep(0.005)  # the loop runs other coroutines meanwhile
            ticks += 1
            if agent.version is not None and target is None:
                # write from a thread: store I/O must not block the loop either
                await asyncio.to_thread(save, store, _pod("async-1", ip="10.244.2.77"))
                target = store.version()
            if target is not None and agent.version == target:
                ticks_while_synced += 1
                if ticks_while_synced >= 3:
                    break
        task.cancel()  # cancelling the task stops the agent and waits for it
        with pytest.raises(asyncio.CancelledError):
            await task
        return ticks, ticks_while_synced

    ticks, synced_ticks = asyncio.run(main())
    assert synced_ticks >= 3 and ticks > synced_ticks
    assert not agent.running and _programmed(backend, store)


def test_latency_window_percentiles_and_status_file(tmp_path: pathlib.Path) -> None:
    window = LatencyWindow(size=100)
    assert window.summary_ms() == {"last": None, "p50": None, "p99": None, "count": 0}
    window.add([i / 1000 for i in range(1, 201)])  # 1..200 ms; the window keeps 101..200
    summary = window.summary_ms()
    assert summary == {"last": 200.0, "p50": 150.0, "p99": 199.0, "count": 200}
    window.add([0.005], last=0.007)
    assert window.summary_ms()["last"] == 7.0 and window.count == 201
    path = str(tmp_path / "d" / "s.json")
    write_status(path, {"version": 7})
    assert read_status(path) == {"version": 7}
    assert json.loads(pathlib.Path(path).read_text()) == {"version": 7}
    assert [p.name for p in pathlib.Path(path).parent.iterdir()] == ["s.json"]  # no temp left
    assert read_status(str(tmp_path / "missing.json")) is None


def test_namespace_lock_names_its_holder(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "x.lock")
    with NamespaceLock(path, "svcnet-l"):
        assert pathlib.Path(path).read_text().strip() == str(os.getpid())
        with pytest.raises(AgentError, match=r"an agent \(pid \d+\) already programs network"):
            NamespaceLock(path, "svcnet-l").acquire()
    assert not pathlib.Path(path).exists()  # removed by its holder on release
    with NamespaceLock(path, None) as lock:  # released: free again
        assert lock.held
    assert not lock.held


def test_a_lock_removed_by_its_holder_is_not_taken_by_a_waiter(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "x.lock")
    holder = NamespaceLock(path, "svcnet-l")
    holder.acquire()
    stale = os.open(path, os.O_RDWR)  # a waiter that opened the file the holder has
    try:
        holder.release()  # unlinks it, then unlocks
        fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the old file is free now ...
        lock = NamespaceLock(path, "svcnet-l")
        lock.acquire()  # ... but a new acquirer locks the file at the path
        try:
            assert os.stat(path).st_ino != os.fstat(stale).st_ino
            with pytest.raises(AgentError, match="already programs"):
                NamespaceLock(path, "svcnet-l").acquire()
        finally:
            lock.release()
    finally:
        os.close(stale)


def test_store_source_goes_on_with_one_poller_between_watch_calls(store: Store) -> None:
    source = StoreSource(store)
    start = store.version()
    assert list(source.watch(start, 0.0)) == []
    poller = source._poller
    save(store, _pod("w-1"))
    got = list(source.watch(start, 0.0))  # goes on from where the last call stopped
    assert [c.key.name for c in got if c.key is not None] == ["w-1"]
    assert source._poller is poller
    again = list(source.watch(start, 0.0))  # from an older version: a new reader
    assert [c.version for c in again] == [c.version for c in got]
    assert source._poller is not poller
