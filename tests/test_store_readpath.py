"""get and describe read rows, not a replay (svcnet/cli/readpath.py, the store's
``endpoints`` table and :class:`svcnet.store.Reader`): the endpoints table is the
state's endpoints after any sequence of saves (a property test), a store written
without the table (or by a svcnet that did not keep it) is read by replay and
rewritten by its next save, and every get/describe prints what the replayed state
prints."""

from __future__ import annotations

import contextlib
import pathlib
import sqlite3
import tempfile
import time
import types
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storehelp import DEMO, demo, save

from svcnet.cli import objects
from svcnet.cli.main import cli
from svcnet.model import ClusterConfig, Labels, Node, Pod, Service, ServicePort
from svcnet.state import Apply, ClusterState, Configure, Delete
from svcnet.store import Store, model_from_json, model_json, objects_of

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples" / "demo"

OTHER = """\
apiVersion: v1
kind: Service
metadata: {name: db, namespace: other, labels: {team: data}}
spec:
  selector: {app: db}
  ports: [{name: pg, port: 5432, targetPort: pg}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: other, labels: {app: db}}
spec:
  nodeName: node-a
  containers: [{name: pg, image: postgres, ports: [{name: pg, containerPort: 5432}]}]
"""


def _table(path: str) -> dict[tuple[str, str], object]:
    store = Store(path)
    with store.reader() as reader:
        assert reader is not None, "the endpoints table is not current"
        return dict(reader.endpoints())


def _rows_are_the_state(path: str, state: ClusterState) -> None:
    """Every row's model column rebuilds the object the state holds (and what the
    Reader gives is the state's objects)."""
    held = {obj.key: obj for obj in objects_of(state)}
    with sqlite3.connect(path) as c:
        rows = c.execute("SELECT model FROM objects").fetchall()
    assert len(rows) == len(held)
    for (model,) in rows:
        assert model is not None
        obj = model_from_json(model)
        assert type(obj) is type(held[obj.key]) and obj == held[obj.key]
        assert model_json(obj) == model
    with Store(path).reader() as reader:
        assert reader is not None
        for kind in {key.kind for key in held}:
            for obj, _ in reader.objects(kind):
                assert obj == held[obj.key]


def _expected(state: ClusterState) -> dict[tuple[str, str], object]:
    return {k: dict(v) for k, v in state.endpoints.items() if v}


NODES = ("n0", "n1")


def _event(kind: str, i: int, j: int, ready: bool) -> Apply | Delete | Configure:
    if kind == "svc":
        svc = Service(
            "default",
            f"s{i}",
            selector=Labels.of({"app": f"a{j}"}),
            ports=(ServicePort(80, target_port=8080, name="http"),),
        )
        return Apply((svc,))
    if kind == "pod":
        pod = Pod(
            "default",
            f"p{i}",
            labels={"app": f"a{j}"},
            node_name=NODES[j % 2],
            ready=ready,
        )
        return Apply((pod,))
    if kind == "node":
        node = Node(
            NODES[j % 2],
            pod_cidrs=(f"10.244.{j % 2}.0/24",),
            labels={"topology.kubernetes.io/zone": f"z{i}"},
        )
        return Apply((node,))
    if kind == "delsvc":
        return Delete((Service("default", f"s{i}").key,))
    if kind == "delpod":
        return Delete((Pod("default", f"p{i}").key,))
    return Configure(ClusterConfig(masquerade_all=ready))


EVENTS = st.lists(
    st.lists(
        st.tuples(
            st.sampled_from(["svc", "pod", "pod", "node", "delsvc", "delpod", "config"]),
            st.integers(0, 3),
            st.integers(0, 2),
            st.booleans(),
        ),
        min_size=1,
        max_size=3,
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EVENTS)
def test_the_endpoints_table_is_the_states_endpoints_after_any_saves(
    saves: list[list[tuple[str, int, int, bool]]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/s.db"
        store = Store(path)
        save(store, *(_event("node", 0, n, True) for n in range(2)))
        for events in saves:
            with store.modify() as session:
                state = session.state
                for event in events:
                    with contextlib.suppress(Exception):  # refused steps change nothing
                        state = state.step(_event(*event))
                session.save(state)
                saved = session.state
            assert _table(path) == _expected(saved)
            assert _table(path) == _expected(store.load())
            _rows_are_the_state(path, saved)


def test_a_store_without_the_table_is_read_by_replay_and_rewritten_by_its_next_save(
    tmp_path: pathlib.Path,
) -> None:
    path = str(tmp_path / "s.db")
    store = Store(path)
    save(store, demo())
    with sqlite3.connect(path) as c:  # as a svcnet without the table wrote it
        c.execute("DROP TABLE endpoints")
        c.execute("DELETE FROM meta WHERE key = 'endpoints'")
    with store.reader() as reader:
        assert reader is None
    before = _cli(path, "describe", "svc", "web")
    assert "Endpoints:" in before and "10.244." in before
    save(store, Apply((Pod("default", "x", labels={"app": "none"}),)))
    assert _table(path) == _expected(store.load())
    assert _cli(path, "describe", "svc", "web") == before


def test_a_save_by_a_svcnet_that_did_not_keep_the_table_makes_it_stale(
    tmp_path: pathlib.Path,
) -> None:
    path = str(tmp_path / "s.db")
    store = Store(path)
    save(store, demo())
    with sqlite3.connect(path) as c:  # an older svcnet's save moves the version only
        c.execute("UPDATE meta SET value = value + 1 WHERE key = 'resourceVersion'")
        c.execute("DELETE FROM endpoints")
    with store.reader() as reader:
        assert reader is None  # not current: get and describe replay
    assert "10.244." in _cli(path, "get", "ep", "web")
    with store.modify() as session:  # any save, even one changing nothing, rewrites it
        session.save(session.state)
    assert _table(path) == _expected(store.load())


def _cli(path: str, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--store", path, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@contextlib.contextmanager
def _replaying() -> Iterator[None]:
    """Every get/describe lists the whole state (the path before rows)."""

    @contextlib.contextmanager
    def no_reader(self: Store) -> Iterator[None]:
        yield None

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Store, "reader", no_reader)
        yield


COMMANDS = [
    ("get", "svc"),
    ("get", "svc", "web"),
    ("get", "svc", "web", "dns", "-o", "wide"),
    ("get", "svc", "-A", "--show-labels"),
    ("get", "svc", "-l", "app!=x", "-o", "name"),
    ("get", "svc", "web", "-o", "yaml"),
    ("get", "svc", "-o", "json"),
    ("get", "pods"),
    ("get", "pods", "-o", "wide", "-A"),
    ("get", "pods", "-o", "yaml"),
    ("get", "po", "db-0", "-n", "other", "-o", "json"),
    ("get", "nodes", "-o", "wide"),
    ("get", "node", "node-a", "-o", "yaml"),
    ("get", "ep"),
    ("get", "endpoints", "web", "-o", "yaml"),
    ("get", "ep", "-A", "-o", "wide"),
    ("get", "svc/web"),
    ("-n", "other", "get", "svc"),
    ("get", "svc", "-n", "empty"),
    ("get", "endpointslices"),
    ("describe", "svc", "web"),
    ("describe", "svc", "db", "-n", "other"),
    ("describe", "pod/db-0", "-n", "other"),
    ("describe", "node", "node-a"),
    ("describe", "node", "node-b"),
]


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("readpath") / "s.db")
    _cli(path, "apply", "-f", str(DEMO))
    other = tmp_path_factory.mktemp("other") / "other.yaml"
    other.write_text(OTHER)
    _cli(path, "apply", "-f", str(other))
    return path


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_get_and_describe_print_what_the_replayed_state_prints(
    demo_store: str, args: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store(demo_store).reader() as reader:
        assert reader is not None
    now = time.time()  # one clock for both: AGE columns show the same
    clock = types.SimpleNamespace(time=lambda: now, monotonic=time.monotonic, sleep=time.sleep)
    monkeypatch.setattr(objects, "time", clock)
    fast = CliRunner().invoke(cli, ["--store", demo_store, *args])
    with _replaying():
        slow = CliRunner().invoke(cli, ["--store", demo_store, *args])
    assert (fast.exit_code, fast.output) == (slow.exit_code, slow.output)
    assert fast.output.strip()


@pytest.mark.parametrize(
    "args", [("get", "svc", "nope"), ("describe", "pod", "nope"), ("get", "no", "x", "-o", "yaml")]
)
def test_a_missing_object_is_the_same_error(demo_store: str, args: tuple[str, ...]) -> None:
    fast = CliRunner().invoke(cli, ["--store", demo_store, *args])
    with _replaying():
        slow = CliRunner().invoke(cli, ["--store", demo_store, *args])
    assert fast.exit_code == slow.exit_code == 1
    assert fast.output == slow.output and "not found" in fast.output.lower()


def test_no_file_is_no_reader_and_creates_nothing(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "none.db"
    with Store(str(path)).reader() as reader:
        assert reader is None
    assert not path.exists()
    result = CliRunner().invoke(cli, ["--store", str(path), "get", "svc"])
    assert result.exit_code == 0 and result.stdout == ""
    assert result.stderr == "No resources found in default namespace.\n"
    assert not path.exists()


def test_the_model_column_rebuilds_workloads_probes_and_templates(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "s.db")
    _cli(path, "apply", "-f", str(EXAMPLES))
    _cli(path, "scale", "deployment/web", "--replicas", "4")
    state = Store(path).load()
    assert state.deployments and state.replica_sets
    _rows_are_the_state(path, state)


def test_a_store_written_for_another_model_is_read_from_manifests_until_saved(
    tmp_path: pathlib.Path,
) -> None:
    path = str(tmp_path / "s.db")
    store = Store(path)
    state = save(store, demo())
    with sqlite3.connect(path) as c:  # as a svcnet with another model wrote it
        c.execute("UPDATE meta SET value = 'other' WHERE key = 'model'")
        c.execute('UPDATE objects SET model = \'{"@": "Nothing"}\'')
    with store.reader() as reader:
        assert reader is not None
        services = [obj for obj, _ in reader.objects(Service("default", "x").key.kind)]
    assert services == [state.services[k] for k in sorted(state.services)]
    with store.modify() as session:  # the next save writes the column for this model
        session.save(session.state)
    _rows_are_the_state(path, store.load())
