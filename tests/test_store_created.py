"""``Store.created``: when each object was created (kubectl's AGE column)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from storehelp import DEMO

from svcnet import manifests
from svcnet.state import Apply, Delete
from svcnet.store import Store


def _objects() -> list[object]:
    return list(manifests.load((DEMO / "web.yaml").read_text(), filename="web.yaml"))


def test_created_is_recorded_on_add_kept_on_change_and_dropped_on_delete(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    assert store.created() == {}  # no store yet
    objs = _objects()
    with store.modify() as session:
        session.save(session.state.step(Apply(tuple(objs))))  # type: ignore[arg-type]
    first = store.created()
    assert set(first) == {o.key for o in objs}  # type: ignore[attr-defined]
    when = next(iter(first.values()))
    assert all(at == when for at in first.values())  # one save: one time
    at = {c.key: c.time for c in store.changes_since(0)}
    assert set(at.values()) == {when}  # the commit time of the change that added them

    # a change keeps the creation time; a delete drops it; a re-create is new
    web1 = objs[0]
    relabelled = manifests.load(
        (DEMO / "web.yaml").read_text().replace("app: web}", "app: web, tier: x}", 1),
        filename="web.yaml",
    )[0]
    with store.modify() as session:
        session.save(session.state.step(Apply((relabelled,))))
    assert store.created(web1.key) == {web1.key: when}  # type: ignore[attr-defined]
    with store.modify() as session:
        session.save(session.state.step(Delete((web1.key,))))  # type: ignore[attr-defined]
    assert store.created(web1.key) == {}  # type: ignore[attr-defined]
    with store.modify() as session:
        session.save(session.state.step(Apply((web1,))))  # type: ignore[arg-type]
    again = store.created(web1.key)[web1.key]  # type: ignore[attr-defined]
    assert again >= when
    assert store.version() == len(objs) + 3  # one change per object, then three


def test_a_store_written_before_the_table_gets_it_on_its_next_write(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = Store(str(path))
    objs = _objects()
    with store.modify() as session:
        session.save(session.state.step(Apply(tuple(objs[:1]))))  # type: ignore[arg-type]
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE created")
    assert store.created() == {}  # readable without it
    with store.modify() as session:
        session.save(session.state.step(Apply(tuple(objs[1:2]))))  # type: ignore[arg-type]
    assert set(store.created()) == {objs[1].key}  # type: ignore[attr-defined]
