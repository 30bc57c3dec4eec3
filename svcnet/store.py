"""The CLI's persistent state: one SQLite file (I/O).

What is stored
--------------
* ``meta``: the format version (``format``) and the cluster configuration
  (``config``, JSON with the scenario format's keys);
* ``objects``: every object of the state as a v1 manifest (``to_manifest`` JSON),
  in the order it was first applied (``seq``), *as the state holds it*: with the
  ClusterIPs, NodePorts and LoadBalancer / pod addresses svcnet allocated, plus
  two flags the manifest cannot say (``podIPsAllocated``, ``lbFromPool``), so that
  replaying pins every allocation and gives back an identical state;
* ``snapshots`` / ``synced``: what was last synced to each (backend, target, node),
  as a snapshot of config + objects, so ``svcnet diff`` can recompile that plan.

:meth:`Store.load` replays: ``ClusterState.empty(config)`` then one ``Apply`` of
every object in stored order. :meth:`Store.modify` holds an exclusive lock
(``BEGIN IMMEDIATE`` with a busy timeout) across load -> modify -> save, and the
save is one transaction, so concurrent CLI calls are serialised and lose nothing.
Anything wrong with the file (not SQLite, not ours, a newer format, a row that no
longer parses) is a :class:`~svcnet.errors.StoreError` naming the file.

A killed writer
---------------
The file keeps SQLite's default rollback journal (``journal_mode=DELETE``). A
writer killed in the middle of its transaction leaves a *hot journal*
(``<file>-journal``) holding the pages as they were before it; the next
connection that reads must roll it back into the file first, which is a write.
Readers therefore open the file read-write (``mode=rw``: it is never created by a
read, and nothing is written unless a hot journal needs rolling back) rather than
``mode=ro``, with which every read command failed ("attempt to write a readonly
database") until some write command ran. The data read is always the last
committed transaction: the old state or the new one, never a mix.

Why not WAL (``journal_mode=WAL``), with which readers need no recovery: it adds
two files beside the store (``-wal``, ``-shm``) that must move with it, needs
shared memory that network filesystems do not give, and its read-only openings
still need a writable ``-shm``. Only a reader that cannot write the file (another
user's store) still cannot recover a hot journal; it gets a
:class:`~svcnet.errors.StoreError` saying so.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs

from svcnet import manifests
from svcnet.errors import StoreError, SvcnetError
from svcnet.model import (
    ClusterConfig,
    Kind,
    KubeObject,
    ObjectKey,
    Pod,
    Service,
    ServiceType,
)
from svcnet.state import Apply, ClusterState

FORMAT_VERSION = 1
BUSY_TIMEOUT = 60.0  # seconds a CLI call waits for another one holding the lock
ENV = "SVCNET_STORE"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    manifest TEXT NOT NULL, flags TEXT NOT NULL DEFAULT '{}',
    UNIQUE (kind, namespace, name)
);
CREATE TABLE IF NOT EXISTS snapshots (id INTEGER PRIMARY KEY AUTOINCREMENT, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS synced (
    backend TEXT NOT NULL, target TEXT NOT NULL, node TEXT NOT NULL,
    snapshot INTEGER NOT NULL,
    PRIMARY KEY (backend, target, node)
);
"""


def default_path() -> str:
    """``$SVCNET_STORE``, else ``~/.local/share/svcnet/store.db``."""
    env = os.environ.get(ENV)
    if env:
        return env
    return os.path.join(os.path.expanduser("~"), ".local", "share", "svcnet", "store.db")


# -- encoding ------------------------------------------------------------------------


def config_to_json(config: ClusterConfig) -> dict[str, Any]:
    """The configuration with the scenario format's keys."""
    lo, hi = config.node_port_range
    return {
        "serviceCIDRs": list(config.service_cidrs),
        "clusterCIDRs": list(config.cluster_cidrs),
        "nodePortRange": f"{lo}-{hi}",
        "loadBalancerPool": list(config.load_balancer_pool),
        "clusterDomain": config.cluster_domain,
        "masqueradeAll": config.masquerade_all,
    }


def config_from_json(data: Mapping[str, Any]) -> ClusterConfig:
    lo, _, hi = str(data["nodePortRange"]).partition("-")
    return ClusterConfig(
        service_cidrs=tuple(str(c) for c in data["serviceCIDRs"]),
        cluster_cidrs=tuple(str(c) for c in data["clusterCIDRs"]),
        node_port_range=(int(lo), int(hi)),
        load_balancer_pool=tuple(str(c) for c in data["loadBalancerPool"]),
        cluster_domain=str(data["clusterDomain"]),
        masquerade_all=bool(data["masqueradeAll"]),
    )


def encode(obj: KubeObject) -> tuple[str, str]:
    """(manifest JSON, flags JSON) of an object as the state holds it."""
    flags: dict[str, bool] = {}
    if isinstance(obj, Pod) and obj.pod_ips_allocated:
        flags["podIPsAllocated"] = True
    if (
        isinstance(obj, Service)
        and obj.type is ServiceType.LOAD_BALANCER
        and obj.load_balancer_ips
        and not obj.status_ingress
    ):
        flags["lbFromPool"] = True
    manifest = manifests.to_manifest(obj)
    return json.dumps(manifest, sort_keys=True), json.dumps(flags, sort_keys=True)


def decode(manifest: Mapping[str, Any], flags: Mapping[str, Any]) -> KubeObject:
    """The inverse of :func:`encode` (the manifest already parsed from JSON)."""
    obj = manifests.parse_object(manifest)
    if isinstance(obj, Pod) and flags.get("podIPsAllocated"):
        obj = attrs.evolve(obj, pod_ips_allocated=True)
    if isinstance(obj, Service) and flags.get("lbFromPool"):
        obj = attrs.evolve(obj, load_balancer_ips=obj.status_ingress, status_ingress=())
    return obj


def _row_key(obj: KubeObject) -> tuple[str, str, str]:
    key = obj.key
    return key.kind.value, key.namespace, key.name


def objects_of(state: ClusterState) -> Iterator[KubeObject]:
    """Every object of ``state`` (nodes, pods, services, slices)."""
    yield from state.nodes.values()
    yield from state.pods.values()
    yield from state.services.values()
    yield from state.slices.values()


def replay(config: ClusterConfig, objects: Iterable[KubeObject]) -> ClusterState:
    """``empty(config)`` then one Apply of ``objects`` in order."""
    state = ClusterState.empty(config)
    items: Any = tuple(objects)  # attrs types Apply's converter parameter loosely
    return state.step(Apply(items)) if items else state


def _snapshot(state: ClusterState) -> str:
    objs = []
    for obj in objects_of(state):
        manifest, flags = encode(obj)
        objs.append({"manifest": json.loads(manifest), "flags": json.loads(flags)})
    return json.dumps({"config": config_to_json(state.config), "objects": objs})


# -- the store -----------------------------------------------------------------------


class Store:
    """The SQLite file at ``path`` (created on the first write)."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or default_path()

    def _error(self, message: str) -> StoreError:
        return StoreError(f"store {self.path}: {message}")

    @contextlib.contextmanager
    def _connect(self, write: bool) -> Iterator[sqlite3.Connection]:
        if write:
            parent = os.path.dirname(os.path.abspath(self.path))
            try:
                os.makedirs(parent, exist_ok=True)
            except OSError as e:
                raise self._error(f"cannot create {parent}: {e.strerror}") from e
        elif not os.path.exists(self.path):
            raise FileNotFoundError(self.path)
        try:
            # readers: read-write so that they can roll back a hot journal (see above)
            uri = "file:" + os.path.abspath(self.path) + ("" if write else "?mode=rw")
            conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT, isolation_level=None)
        except sqlite3.Error as e:
            raise self._error(f"cannot open: {e}") from e
        try:
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                self._check(conn, write)
            except sqlite3.DatabaseError as e:
                if not write and os.path.exists(self.path + "-journal"):
                    raise self._error(
                        f"an interrupted write left {self.path}-journal, which only a user "
                        f"who can write the store can roll back ({e})"
                    ) from e
                raise self._error(f"not a readable svcnet store ({e})") from e
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                raise self._error(f"cannot save: {e}") from e
        finally:
            conn.close()

    def _check(self, conn: sqlite3.Connection, write: bool) -> None:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables:
            if tables - {"sqlite_sequence"}:
                raise self._error("not a svcnet store (no meta table)")
            if write:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO meta VALUES ('format', ?), ('config', ?)",
                    (str(FORMAT_VERSION), json.dumps(config_to_json(ClusterConfig()))),
                )
            return
        row = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        try:
            version = int(row[0]) if row else -1
        except ValueError:
            version = -1
        if version < 1:
            raise self._error("not a svcnet store (no valid format version)")
        if version > FORMAT_VERSION:
            raise self._error(
                f"format version {version} is newer than this svcnet reads "
                f"({FORMAT_VERSION}); upgrade svcnet"
            )

    def _load(self, conn: sqlite3.Connection) -> ClusterState:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables:
            return ClusterState.empty()
        row = conn.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
        try:
            config = config_from_json(json.loads(row[0])) if row else ClusterConfig()
        except (ValueError, KeyError, TypeError) as e:
            raise self._error(f"corrupt configuration: {e}") from e
        objects: list[KubeObject] = []
        for kind, ns, name, manifest, flags in conn.execute(
            "SELECT kind, namespace, name, manifest, flags FROM objects ORDER BY seq"
        ):
            try:
                objects.append(decode(json.loads(manifest), json.loads(flags)))
            except (ValueError, TypeError, AttributeError) as e:
                where = f"{kind} {ns}/{name}" if ns else f"{kind} {name}"
                raise self._error(f"corrupt object {where}: {e}") from e
        try:
            return replay(config, objects)
        except SvcnetError as e:
            raise self._error(f"stored objects no longer replay: {e}") from e

    def load(self) -> ClusterState:
        """The stored state (empty when there is no file yet)."""
        try:
            with self._connect(write=False) as conn:
                return self._load(conn)
        except FileNotFoundError:
            return ClusterState.empty()

    @contextlib.contextmanager
    def modify(self) -> Iterator[Session]:
        """Load under an exclusive lock; ``session.save(state)`` is committed when
        the block ends without an exception, rolled back otherwise."""
        with self._connect(write=True) as conn:
            yield Session(self, conn, self._load(conn))

    def synced(self, backend: str, target: str, node: str) -> ClusterState | None:
        """The state last synced to (backend, target, node), if any."""
        try:
            with self._connect(write=False) as conn:
                if "synced" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}:
                    return None
                row = conn.execute(
                    "SELECT s.data FROM synced y JOIN snapshots s ON s.id = y.snapshot "
                    "WHERE y.backend = ? AND y.target = ? AND y.node = ?",
                    (backend, target, node),
                ).fetchone()
        except FileNotFoundError:
            return None
        if row is None:
            return None
        try:
            data = json.loads(row[0])
            config = config_from_json(data["config"])
            objs = [decode(o["manifest"], o["flags"]) for o in data["objects"]]
            return replay(config, objs)
        except (ValueError, KeyError, TypeError, SvcnetError) as e:
            raise self._error(f"corrupt sync record for {backend}/{node}: {e}") from e


class Session:
    """One locked load -> modify -> save (see :meth:`Store.modify`)."""

    def __init__(self, store: Store, conn: sqlite3.Connection, state: ClusterState) -> None:
        self.store = store
        self._conn = conn
        self.state = state  # as loaded; save() moves it on

    def save(self, new: ClusterState) -> None:
        """Write what differs between the loaded (or last saved) state and ``new``."""
        old = self.state
        c = self._conn
        try:
            if new.config != old.config:
                c.execute(
                    "UPDATE meta SET value = ? WHERE key = 'config'",
                    (json.dumps(config_to_json(new.config)),),
                )
            pairs: list[tuple[Mapping[Any, Any], Mapping[Any, Any]]] = [
                (old.nodes, new.nodes),
                (old.pods, new.pods),
                (old.services, new.services),
                (old.slices, new.slices),
            ]
            for before, after in pairs:
                for key in before:
                    if key not in after:
                        c.execute(
                            "DELETE FROM objects WHERE kind = ? AND namespace = ? AND name = ?",
                            _row_key(before[key]),
                        )
                for key, obj in after.items():
                    prev = before.get(key)
                    if prev is obj or prev == obj:
                        continue
                    manifest, flags = encode(obj)
                    c.execute(
                        "INSERT INTO objects (kind, namespace, name, manifest, flags) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, namespace, name) "
                        "DO UPDATE SET manifest = excluded.manifest, flags = excluded.flags",
                        (*_row_key(obj), manifest, flags),
                    )
        except sqlite3.Error as e:
            raise self.store._error(f"cannot save: {e}") from e
        self.state = new

    def record_sync(self, backend: str, target: str, nodes: Iterable[str]) -> None:
        """Remember that ``self.state`` was synced to these nodes."""
        c = self._conn
        try:
            cur = c.execute("INSERT INTO snapshots (data) VALUES (?)", (_snapshot(self.state),))
            sid = cur.lastrowid
            for node in nodes:
                c.execute(
                    "INSERT OR REPLACE INTO synced VALUES (?, ?, ?, ?)",
                    (backend, target, node, sid),
                )
            c.execute("DELETE FROM snapshots WHERE id NOT IN (SELECT snapshot FROM synced)")
        except sqlite3.Error as e:
            raise self.store._error(f"cannot save: {e}") from e


def object_key(kind: Kind, namespace: str, name: str) -> ObjectKey:
    """The key of an object (namespace ignored for nodes)."""
    return ObjectKey(kind, "" if kind is Kind.NODE else namespace, name)


__all__ = [
    "ENV",
    "FORMAT_VERSION",
    "Session",
    "Store",
    "config_from_json",
    "config_to_json",
    "decode",
    "default_path",
    "encode",
    "object_key",
    "objects_of",
    "replay",
]
