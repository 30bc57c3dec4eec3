"""svcnet.store as the cluster's API: resourceVersions, the change log, list then
watch, compaction (WatchExpired), and ``svcnet get -w`` following another process."""

from __future__ import annotations

import os
import pathlib
import select
import sqlite3
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from storehelp import DEMO, demo, same, save

from svcnet import manifests
from svcnet.errors import StoreError, SvcnetError, ValidationError
from svcnet.model import ClusterConfig, Kind, KubeObject
from svcnet.state import Apply, ClusterState, Configure, Delete
from svcnet.store import FORMAT_VERSION, Change, Store, WatchExpired
from svcnet.testing.strategies import draw_cluster_objects, draw_config, draw_event

DEADLINE = 60.0  # seconds any wait below may take at most (it normally takes far less)


def _pod(name: str, node: str = "node-a") -> str:
    return (
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: web}}}}\n"
        f"spec: {{nodeName: {node}}}\n"
        "status: {conditions: [{type: Ready, status: 'True'}]}\n"
    )


def _apply(text: str) -> Apply:
    objs: tuple[KubeObject, ...] = tuple(manifests.load(text))
    return Apply(objs)


def _summary(changes: tuple[Change, ...] | list[Change]) -> list[tuple[str, str]]:
    return [(c.type.value, c.key.name if c.key is not None else "<config>") for c in changes]


def test_every_change_gets_the_next_version(tmp_path: pathlib.Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    assert store.version() == 0 and store.list().version == 0  # no file yet
    state = save(store, demo())
    listing = store.list()
    count = sum(1 for _ in (*state.nodes, *state.pods, *state.services, *state.slices))
    assert listing.version == count  # one version per object added
    assert sorted(listing.versions.values()) == list(range(1, count + 1))
    web1 = listing.state.pods[("default", "web-1")]
    save(store, Delete((web1.key,)))
    assert store.version() == count + 1
    save(store, _apply(_pod("web-1")))  # re-created: a new version, not the old one
    again = store.list()
    assert again.version == count + 2
    assert again.versions[web1.key] == count + 2
    others = {k: v for k, v in again.versions.items() if k != web1.key}
    assert others == {k: v for k, v in listing.versions.items() if k != web1.key}
    save(store, demo())  # the demo's web-1 differs from _pod's: one change
    assert store.version() == count + 3
    save(store, demo())  # the same objects again: no change, no version
    assert store.version() == count + 3


def test_changes_since_yields_exactly_the_later_changes_in_order(tmp_path: pathlib.Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    save(store, demo())
    start = store.list()
    save(store, _apply(_pod("web-4")))
    save(store, Delete((start.state.pods[("default", "web-2")].key,)))
    config = ClusterConfig(cluster_domain="example.test")
    save(store, Configure(config))
    save(store, _apply(_pod("web-4", node="node-b")))
    changes = store.changes_since(start.version)
    assert _summary(changes) == [
        ("ADDED", "web-4"), ("DELETED", "web-2"), ("CONFIGURED", "<config>"),
        ("MODIFIED", "web-4"),
    ]  # fmt: skip
    assert [c.version for c in changes] == list(range(start.version + 1, start.version + 5))
    assert changes[2].config == config
    deleted = changes[1].object
    assert deleted is not None and deleted.key.kind is Kind.POD  # its last state
    assert store.changes_since(changes[1].version) == changes[2:]
    assert store.changes_since(store.version()) == ()
    # a watcher that listed then applies each change has the stored state
    state = start.state
    for change in changes:
        state = state.step(change.step)
    same(state, store.load())


def test_watch_follows_a_writer_in_another_process(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "s.db")
    store = Store(path)
    save(store, demo())
    listing = store.list()
    names = [f"w-{i}" for i in range(20)]
    writer = (
        "import sys\n"
        "from svcnet import manifests\n"
        "from svcnet.state import Apply\n"
        "from svcnet.store import Store\n"
        "store = Store(sys.argv[1])\n"
        "for name in sys.argv[2:]:\n"
        "    doc = {'apiVersion': 'v1', 'kind': 'Pod', 'metadata': {'name': name},\n"
        "           'spec': {'nodeName': 'node-a'}}\n"
        "    with store.modify() as s:\n"
        "        s.save(s.state.step(Apply(tuple(manifests.load(doc)))))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", writer, path, *names])
    try:
        seen: list[Change] = []
        state = listing.state
        for change in store.watch(listing.version, timeout=DEADLINE):
            seen.append(change)
            state = state.step(change.step)
            if len(seen) == len(names):
                break
        assert proc.wait(DEADLINE) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _summary(seen) == [("ADDED", n) for n in names]  # in the writer's order
    assert [c.version for c in seen] == list(
        range(listing.version + 1, listing.version + len(names) + 1)
    )
    same(state, store.load())
    assert list(store.watch(store.version(), timeout=0.0)) == []  # nothing more: ends


def test_a_compacted_log_tells_the_watcher_to_list_again(tmp_path: pathlib.Path) -> None:
    store = Store(str(tmp_path / "s.db"), log_limit=3)
    save(store, _apply(_pod("a")))
    first = store.version()
    for name in ("b", "c", "d", "e"):
        save(store, _apply(_pod(name)))
    top = store.version()
    with sqlite3.connect(tmp_path / "s.db") as c:
        assert c.execute("SELECT COUNT(*) FROM changes").fetchone()[0] == 3  # bounded
    with pytest.raises(WatchExpired, match="compacted"):
        store.changes_since(first)
    with pytest.raises(WatchExpired, match="compacted"):
        next(store.watch(first, timeout=0.0))
    assert _summary(store.changes_since(top - 3)) == [("ADDED", n) for n in "cde"]
    with pytest.raises(WatchExpired, match="newer than the store"):
        store.changes_since(top + 1)  # e.g. a recreated store
    assert issubclass(WatchExpired, StoreError) and issubclass(WatchExpired, SvcnetError)
    # listing again gives a version to watch from
    listing = store.list()
    assert listing.version == top and store.changes_since(listing.version) == ()


def test_a_failed_apply_records_no_change(tmp_path: pathlib.Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    save(store, demo())
    before = store.version()
    bad = _apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n"
        "spec: {type: NodePort, ports: [{port: 1, nodePort: 30080}]}\n"
    )
    with pytest.raises(ValidationError), store.modify() as s:
        s.save(s.state.step(_apply(_pod("web-9"))))  # saved and logged inside ...
        s.state.step(bad)  # ... then a conflict: all rolled back, the log too
    assert store.version() == before
    assert store.changes_since(before) == ()
    assert ("default", "web-9") not in store.load().pods


def test_a_format_1_store_is_read_and_upgraded(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "s.db"
    store = Store(str(path))
    state = save(store, demo())
    with sqlite3.connect(path) as c:  # make it as svcnet 0.1 wrote it
        c.execute("DROP TABLE changes")
        c.execute("ALTER TABLE objects DROP COLUMN rv")
        c.execute("DELETE FROM meta WHERE key IN ('resourceVersion', 'compacted')")
        c.execute("UPDATE meta SET value = '1' WHERE key = 'format'")
    listing = store.list()
    same(listing.state, state)
    assert listing.version == max(listing.versions.values())
    with pytest.raises(WatchExpired):
        store.changes_since(0)  # the old objects have no log
    save(store, _apply(_pod("web-4")))  # the first write upgrades
    with sqlite3.connect(path) as c:
        fmt = c.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()[0]
    assert int(fmt) == FORMAT_VERSION
    assert _summary(store.changes_since(listing.version)) == [("ADDED", "web-4")]
    after = store.list().versions
    web4 = next(k for k in after if k.name == "web-4")
    assert after[web4] == listing.version + 1
    assert {k: v for k, v in after.items() if k != web4} == listing.versions


# -- svcnet get -w -------------------------------------------------------------------


def _svcnet(store: pathlib.Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "svcnet", "--store", str(store), *args]


def _read_until(
    proc: subprocess.Popen[bytes], text: str, seen: bytearray, wait: float | None = None
) -> str:
    """Read ``proc``'s stdout into ``seen`` until it holds ``text``.

    Fails after DEADLINE seconds; with ``wait``, raises TimeoutError after that many.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + (wait or DEADLINE)
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            if wait is not None:
                raise TimeoutError(text)
            raise AssertionError(f"no {text!r} within {DEADLINE}s; got {seen.decode()!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"exited ({proc.wait()}) before {text!r}: {seen.decode()!r}")
            seen += chunk
    return seen.decode()


def test_get_watch_prints_a_change_made_by_another_apply(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "s.db"
    subprocess.run(_svcnet(db, "apply", "-f", str(DEMO)), check=True, capture_output=True)
    yaml_out = subprocess.run(
        _svcnet(db, "get", "pod", "web-1", "-o", "yaml"), check=True, capture_output=True, text=True
    ).stdout
    assert "resourceVersion: '" in yaml_out
    proc = subprocess.Popen(
        _svcnet(db, "get", "pods", "-w", "--output-watch-events"), stdout=subprocess.PIPE
    )
    try:
        seen = bytearray()
        _read_until(proc, "web-3", seen)  # the list first
        assert seen.decode().startswith("NAME")
        (tmp_path / "web4.yaml").write_text(_pod("web-4"))
        applied = subprocess.run(
            _svcnet(db, "apply", "-f", str(tmp_path / "web4.yaml")),
            capture_output=True, text=True, timeout=DEADLINE, check=False,
        )  # fmt: skip
        assert applied.returncode == 0, applied.stderr
        out = _read_until(proc, "web-4", seen)
        line = next(x for x in out.splitlines() if "web-4" in x)
        assert line.split()[:3] == ["ADDED", "web-4", "1/1"]
        subprocess.run(_svcnet(db, "delete", "pod", "web-4"), check=True, capture_output=True)
        out = _read_until(proc, "DELETED", seen)
        assert any(x.split()[:2] == ["DELETED", "web-4"] for x in out.splitlines())
        assert proc.poll() is None  # still following
    finally:
        proc.kill()
        proc.wait()


def test_get_endpoints_watch_prints_a_service_whose_endpoints_changed(
    tmp_path: pathlib.Path,
) -> None:
    db = tmp_path / "s.db"
    subprocess.run(_svcnet(db, "apply", "-f", str(DEMO)), check=True, capture_output=True)
    proc = subprocess.Popen(
        _svcnet(db, "get", "endpoints", "web", "--watch-only", "-o", "wide"),
        stdout=subprocess.PIPE,
    )
    try:
        # --watch-only starts at the version the watcher reads when it is up, which
        # may come after an apply made right away; so add pods one by one until the
        # watcher prints one (it needs no more than one when it is up in time).
        out, added, deadline = "", [], time.monotonic() + DEADLINE
        while not out:
            assert time.monotonic() < deadline, f"no line from the watcher; added {added}"
            name = f"web-{4 + len(added)}"
            (tmp_path / "pod.yaml").write_text(
                _pod(name).replace("spec: {", "spec: {containers: [{name: a, ports: "
                                   "[{containerPort: 8080, name: http}]}], ")
            )  # fmt: skip
            subprocess.run(
                _svcnet(db, "apply", "-f", str(tmp_path / "pod.yaml")),
                check=True, capture_output=True,
            )  # fmt: skip
            added.append(name)
            try:
                out = _read_until(proc, "\n", bytearray(), wait=3.0)
            except TimeoutError:
                continue
        line = out.splitlines()[0].split()
        assert line[0] == "web"  # only the watched service, no header (--watch-only)
        pods = subprocess.run(
            _svcnet(db, "get", "pod", added[-1], "-o", "wide"),
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        ip = pods.splitlines()[1].split()[5]  # the last added pod's IP (-o wide's IP column)
        assert f"{ip}:8080" in line[1].split(",")
    finally:
        proc.kill()
        proc.wait()


# -- change times, a long-lived writer, a replaced file -----------------------------


def test_each_change_records_when_it_was_committed(tmp_path: pathlib.Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    before = time.time()
    save(store, _apply(_pod("a")), _apply(_pod("b")))
    after = time.time()
    changes = store.changes_since(0)
    assert sorted(c.key.name for c in changes if c.key is not None) == ["a", "b"]
    assert all(c.time is not None and before <= c.time <= after for c in changes)
    watched = next(store.watch(0, timeout=0.0))
    assert watched.time == changes[0].time


def test_a_format_2_store_is_read_and_upgraded(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "s.db"
    store = Store(str(path))
    save(store, _apply(_pod("a")))
    with sqlite3.connect(path) as c:  # make it as svcnet 0.2 wrote it
        c.execute("ALTER TABLE changes DROP COLUMN at")
        c.execute("UPDATE meta SET value = '2' WHERE key = 'format'")
    (old,) = store.changes_since(0)
    assert old.key is not None and old.key.name == "a" and old.time is None
    assert next(store.watch(0, timeout=0.0)).time is None
    save(store, _apply(_pod("b")))  # the first write upgrades
    with sqlite3.connect(path) as c:
        fmt = c.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()[0]
    assert int(fmt) == FORMAT_VERSION == 3
    first, second = store.changes_since(0)
    assert first.time is None and second.time is not None


def test_a_long_lived_writer_skips_the_load_only_while_the_store_is_unchanged(
    tmp_path: pathlib.Path,
) -> None:
    store = Store(str(tmp_path / "s.db"))
    save(store, demo())
    listing = store.list()
    marked = listing.state.step(_apply(_pod("only-in-memory")))  # never saved
    with store.modify(known=(marked, listing.version)) as s:
        assert s.state is marked  # current: used as it is, not loaded
        s.save(s.state.step(_apply(_pod("w"))))
        known = (s.state, s.version)
    assert known[1] == store.version()
    save(store, _apply(_pod("x")))  # another writer: the known state is stale
    with store.modify(known=known) as s:
        assert s.state is not known[0]
        assert ("default", "x") in s.state.pods
        assert ("default", "only-in-memory") not in s.state.pods


def test_a_watch_notices_that_the_file_was_replaced(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "s.db"
    store = Store(str(path))
    save(store, _apply(_pod("a")), _apply(_pod("b")), _apply(_pod("c")))
    watch = store.watch(store.version() - 1, timeout=DEADLINE, interval=0.001)
    last = next(watch)  # the watch now holds a connection to the file
    assert last.version == store.version()
    path.unlink()
    save(store, _apply(_pod("z")))  # a new store: version 1, below the watcher's
    with pytest.raises(WatchExpired, match="newer than the store"):
        next(watch)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_saving_only_what_the_steps_touched_stores_the_same_state(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    draw = data.draw
    store = Store(str(tmp_path_factory.mktemp("keyed") / "s.db"))
    config = draw_config(draw)
    try:
        start = ClusterState.empty(config).step(Apply(draw_cluster_objects(draw, config)))
    except SvcnetError:
        assume(False)  # a batch the state refuses: nothing to save
    with store.modify() as s:
        s.save(start)
        known = (s.state, s.version)
    for _ in range(draw(st.integers(1, 6))):
        with store.modify(known=known) as s:
            assert s.state is known[0]
            try:
                s.save(s.state.step(draw_event(draw, s.state)))
            except SvcnetError:
                continue  # refused: nothing saved
            known = (s.state, s.version)
    same(store.load(), known[0])
    replayed = ClusterState.empty(config)
    for change in store.changes_since(0):
        replayed = replayed.step(change.step)
    same(replayed, known[0])


def test_a_poller_returns_each_change_once_without_blocking(tmp_path: pathlib.Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    with store.poller(0) as poller:
        assert poller.poll() == ()  # no file yet: nothing, at once
        save(store, _apply(_pod("a")))
        first = poller.poll()
        assert [c.key.name for c in first if c.key is not None] == ["a"]
        assert poller.poll() == ()  # nothing new
        save(store, _apply(_pod("b")))
        second = poller.poll()
        assert [c.key.name for c in second if c.key is not None] == ["b"]
        assert poller.version == store.version() == second[-1].version
