"""svcnet.store: replay fidelity, atomic saves, locking, corrupt and newer files."""

from __future__ import annotations

import multiprocessing
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from storehelp import demo, same, save

from svcnet import manifests
from svcnet.errors import StoreError, ValidationError
from svcnet.model import ClusterConfig, KubeObject
from svcnet.state import Apply, ClusterState, Configure, Delete
from svcnet.store import FORMAT_VERSION, Store, default_path

EXTRA = """
apiVersion: v1
kind: Service
metadata: {name: lb2}
spec: {type: LoadBalancer, selector: {app: web}, ports: [{port: 81}]}
---
apiVersion: v1
kind: Service
metadata: {name: np}
spec: {type: NodePort, selector: {app: web}, ports: [{port: 82, targetPort: http}]}
---
apiVersion: v1
kind: Pod
metadata: {name: dyn, labels: {app: web}}
spec: {nodeName: node-a, containers: [{name: a, ports: [{containerPort: 8080, name: http}]}]}
status: {conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: waiting, labels: {app: web}}
spec: {nodeName: node-z}
"""


def _objects(text: str) -> Apply:
    objs: tuple[KubeObject, ...] = tuple(manifests.load(text))
    return Apply(objs)


def test_default_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SVCNET_STORE", "/x/y.db")
    assert default_path() == "/x/y.db"
    monkeypatch.delenv("SVCNET_STORE")
    assert default_path().endswith(".local/share/svcnet/store.db")


def test_missing_file_is_empty_and_not_created(tmp_path: pathlib.Path) -> None:
    store = Store(str(tmp_path / "sub" / "s.db"))
    assert store.load() == ClusterState.empty()
    assert not (tmp_path / "sub").exists()


def test_replay_gives_identical_state_and_allocations(tmp_path: pathlib.Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    save(store, demo())
    new = save(store, _objects(EXTRA))
    assert new.services[("default", "lb2")].load_balancer_ips  # from the pool
    assert new.pods[("default", "dyn")].pod_ips_allocated
    back = store.load()
    same(back, new)
    # The allocators come back too: the next allocation is the same either way.
    more = _objects(
        "apiVersion: v1\nkind: Service\nmetadata: {name: lb3}\n"
        "spec: {type: LoadBalancer, ports: [{port: 1}]}\n---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: dyn2}\nspec: {nodeName: node-a}\n"
    )
    same(back.step(more), new.step(more))
    # Deleting a pool-allocated LB frees its address for another service.
    freed = Delete((new.services[("default", "lb2")].key,))
    same(back.step(freed).step(more), new.step(freed).step(more))


def test_saves_only_changes_and_keeps_order(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "s.db"
    store = Store(str(path))
    save(store, demo())
    save(store, _objects(EXTRA))
    key = new_key = None
    with sqlite3.connect(path) as c:
        before = c.execute("SELECT seq, kind, name FROM objects ORDER BY seq").fetchall()
        key = before[0]
    state = store.load()
    svc = state.services[("default", "web")]
    save(store, Delete((svc.key,)))
    save(
        store,
        _objects(
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 1}]}\n"
        ),
    )
    with sqlite3.connect(path) as c:
        after = c.execute("SELECT seq, kind, name FROM objects ORDER BY seq").fetchall()
        new_key = after[0]
    assert key == new_key  # untouched rows keep their place
    assert after[-1][1:] == ("Service", "web")  # re-created: last
    assert len(after) == len(before)


def test_failed_step_saves_nothing(tmp_path: pathlib.Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    old = save(store, demo())
    bad = _objects(
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n"
        "spec: {type: NodePort, ports: [{port: 1, nodePort: 30080}]}\n"
    )
    with pytest.raises(ValidationError), store.modify() as s:
        s.save(s.state.step(_objects(EXTRA)))  # saved inside the transaction ...
        s.state.step(bad)  # ... then a conflict: all rolled back
    same(store.load(), old)


def test_config_round_trip_and_conflict(tmp_path: pathlib.Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    cfg = ClusterConfig(
        node_port_range=(30000, 30100), masquerade_all=True, cluster_domain="example.org"
    )
    save(store, Configure(cfg), demo())
    assert store.load().config == cfg
    with pytest.raises(ValidationError, match="outside"), store.modify() as s:
        s.save(s.state.step(Configure(ClusterConfig(node_port_range=(31000, 31001)))))
    assert store.load().config == cfg


def test_sync_record(tmp_path: pathlib.Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    assert store.synced("memory", "", "node-a") is None
    state = save(store, demo())
    with store.modify() as s:
        s.record_sync("memory", "", ["node-a"])
    save(store, _objects(EXTRA))
    synced = store.synced("memory", "", "node-a")
    assert synced is not None
    same(synced, state)
    assert store.synced("memory", "", "node-b") is None


def test_corrupt_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match=f"store {path}: not a readable svcnet store"):
        Store(str(path)).load()
    with pytest.raises(StoreError, match=str(path)), Store(str(path)).modify():
        pass


def test_foreign_database(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="not a svcnet store"):
        Store(str(path)).load()


def test_newer_format(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "s.db"
    store = Store(str(path))
    save(store, demo())
    with sqlite3.connect(path) as c:
        c.execute("UPDATE meta SET value = ? WHERE key = 'format'", (str(FORMAT_VERSION + 1),))
    with pytest.raises(StoreError, match=f"{path}: format version {FORMAT_VERSION + 1} is newer"):
        store.load()


def test_corrupt_row_names_object(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "s.db"
    store = Store(str(path))
    save(store, demo())
    before = store.load()
    with sqlite3.connect(path) as c:  # the model column alone: read from the manifest
        c.execute("UPDATE objects SET model = '{\"@\": \"Pod\"}' WHERE name = 'web-1'")
    assert store.load() == before
    with sqlite3.connect(path) as c:  # a model of another object: the same
        c.execute(
            "UPDATE objects SET model = (SELECT model FROM objects WHERE name = 'web-2')"
            " WHERE name = 'web-1'"
        )
    assert store.load() == before
    with sqlite3.connect(path) as c:  # both: named
        c.execute("UPDATE objects SET manifest = '{', model = NULL WHERE name = 'web-1'")
    with pytest.raises(StoreError, match="corrupt object Pod default/web-1"):
        store.load()


def _writer(path: str, prefix: str, n: int) -> None:
    store = Store(path)
    for i in range(n):
        with store.modify() as s:
            doc = {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"{prefix}-{i}"},
                "spec": {"ports": [{"port": 80}]},
            }
            s.save(s.state.step(Apply(tuple(manifests.load(doc)))))


def test_concurrent_writers_lose_nothing(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "s.db")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, p, 25)) for p in ("a", "b", "c")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    state = Store(path).load()
    assert len(state.services) == 75
    assert len({s.cluster_ips for s in state.services.values()}) == 75  # no IP handed out twice


def test_thousands_of_objects_replay_quickly(tmp_path: pathlib.Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    docs: list[dict[str, object]] = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n1"},
            "spec": {"podCIDR": "10.244.0.0/20"},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.1"}]},
        }
    ]
    for i in range(1000):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"p{i}", "labels": {"app": f"a{i % 100}"}},
                "spec": {"nodeName": "n1"},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            }
        )
    for i in range(1000):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"s{i}"},
                "spec": {"selector": {"app": f"a{i % 100}"}, "ports": [{"port": 80}]},
            }
        )
    state = save(store, Apply(tuple(manifests.load(docs))))
    start = time.monotonic()
    back = store.load()
    elapsed = time.monotonic() - start
    same(back, state)
    assert elapsed < 20, elapsed


JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")  # a rollback journal's synced header
_HOLD_WRITE = """
import sys, time
from svcnet import manifests
from svcnet.state import Apply
from svcnet.store import Store
with Store(sys.argv[1]).modify() as s:
    docs = [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"new-{i}"},
             "spec": {"ports": [{"port": 80}]}} for i in range(500)]
    s.save(s.state.step(Apply(tuple(manifests.load(docs)))))
    # more changed pages than the cache holds: SQLite syncs the journal and writes
    # pages into the file before the commit, so that only the journal can undo them
    s._conn.execute("PRAGMA cache_size = 10")
    s._conn.execute("UPDATE objects SET manifest = manifest || printf('%4000s', '')")
    print("written", flush=True)
    time.sleep(600)
"""


def test_a_killed_writers_hot_journal_is_rolled_back_by_a_reader(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "s.db")
    store = Store(path)
    before = save(store, _objects(EXTRA))
    size_before = os.path.getsize(path)
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD_WRITE, path], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "written\n"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    with open(path + "-journal", "rb") as f:  # a hot journal: a synced header, pages in
        assert f.read(8) == JOURNAL_MAGIC  # the file that only it can undo
    assert os.path.getsize(path) > size_before
    same(store.load(), before)  # read-only commands work, and see the old state
    assert store.synced("memory", "t", "node-a") is None
    assert not os.path.exists(path + "-journal")  # the reader rolled it back
    same(save(store, Configure(ClusterConfig())), store.load())  # and writes work
