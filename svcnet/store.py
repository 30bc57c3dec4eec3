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
  as a snapshot of config + objects, so ``svcnet diff`` can recompile that plan;
* ``changes``: the change log (below), and in ``meta`` the store's current
  ``resourceVersion`` and the version the log is ``compacted`` through.

Versions and the change log (list, then watch)
----------------------------------------------
As in Kubernetes, the store has one ``resourceVersion``: an integer that every
change of the state increments, never reused, never decreasing. Each stored object
carries the version of its last change (``metadata.resourceVersion`` in
``svcnet get -o yaml``). Every change -- an object ``ADDED``, ``MODIFIED`` or
``DELETED`` (with its last state), or the cluster configuration ``CONFIGURED`` --
gets the next version and one row in ``changes``, written in the same transaction
as the change itself: a step that fails, or a writer killed midway, records nothing.
One command that changes several objects makes several changes, in the order
saved (deletions, then additions and modifications; nodes, pods, services, slices).

A client reads like a Kubernetes reflector: :meth:`Store.list` gives the objects
and the version they are current at; :meth:`Store.changes_since` (non-blocking) or
:meth:`Store.watch` (blocking, polling a single ``meta`` row between reads) give
every change after a version, in order, exactly once. ``Change.step`` is the
:class:`~svcnet.state.ClusterState` step that applies one change, so a long-lived
process keeps the listed state in memory and moves it on per change, never
reloading the store.

The log is bounded like etcd's compaction: a save keeps the last ``log_limit``
changes (:data:`LOG_LIMIT` by default) and forgets older ones. A watcher asking for
changes after a version older than that (or newer than the store's, a store that
was recreated) gets :class:`WatchExpired`: it must list again and watch from the
new version. A store written by a svcnet without versions (format 1) is upgraded by
its next write: each object's version is its position, and the log starts empty.

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
import enum
import json
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, BinaryIO

import attrs

from svcnet import _gc, manifests
from svcnet.errors import StoreError, SvcnetError
from svcnet.model import (
    ClusterConfig,
    Endpoint,
    Kind,
    KubeObject,
    ObjectKey,
    Pod,
    Service,
    ServiceType,
)
from svcnet.state import Apply, ClusterState, Configure, Delete, Event

FORMAT_VERSION = 3  # 2: resourceVersions and the change log; 3: the time of each change
BUSY_TIMEOUT = 60.0  # seconds a CLI call waits for another one holding the lock
ENV = "SVCNET_STORE"
KUBELET_STORE = "store"  # Store.kubelet(): the store marks scheduled pods ready at once
KUBELET_LAB = "lab"  # a lab probes its pods and reports their readiness
LOG_LIMIT = 10_000  # changes kept in the log (older ones are compacted away)
POLL_INTERVAL = 0.005  # seconds between two looks at the file while watching
REREAD = 1.0  # seconds after which a watch reads the store even if nothing seems changed

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    manifest TEXT NOT NULL, flags TEXT NOT NULL DEFAULT '{}',
    rv INTEGER NOT NULL DEFAULT 0, model TEXT,
    UNIQUE (kind, namespace, name)
);
CREATE TABLE IF NOT EXISTS changes (
    rv INTEGER PRIMARY KEY, type TEXT NOT NULL,
    kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    manifest TEXT NOT NULL, flags TEXT NOT NULL, at REAL
);
CREATE TABLE IF NOT EXISTS snapshots (id INTEGER PRIMARY KEY AUTOINCREMENT, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS created (
    kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);
CREATE TABLE IF NOT EXISTS applied (
    kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);
CREATE TABLE IF NOT EXISTS endpoints (
    namespace TEXT NOT NULL, name TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (namespace, name)
);
CREATE TABLE IF NOT EXISTS synced (
    backend TEXT NOT NULL, target TEXT NOT NULL, node TEXT NOT NULL,
    snapshot INTEGER NOT NULL,
    PRIMARY KEY (backend, target, node)
);
"""

# format 1 -> 2: every object's version is its position; the log starts empty
_UPGRADE_1 = """
ALTER TABLE objects ADD COLUMN rv INTEGER NOT NULL DEFAULT 0;
UPDATE objects SET rv = seq;
CREATE TABLE IF NOT EXISTS changes (
    rv INTEGER PRIMARY KEY, type TEXT NOT NULL,
    kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    manifest TEXT NOT NULL, flags TEXT NOT NULL, at REAL
);
INSERT OR REPLACE INTO meta SELECT 'resourceVersion', COALESCE(MAX(seq), 0) FROM objects;
INSERT OR REPLACE INTO meta SELECT 'compacted', COALESCE(MAX(seq), 0) FROM objects;
UPDATE meta SET value = '3' WHERE key = 'format'
"""

# when each object was created (kubectl's AGE); a store older than this table has
# none for the objects it held before (their age is unknown)
_CREATED = """
CREATE TABLE IF NOT EXISTS created (
    kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (kind, namespace, name)
)
"""
# the document each object was last applied with, as written (svcnet get -o yaml)
_APPLIED = """
CREATE TABLE IF NOT EXISTS applied (
    kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (kind, namespace, name)
)
"""

# each service's endpoints as the state computed them (per port name, in order), so
# that get/describe read them without replaying the store; meta 'endpoints' is the
# store version the table is current at (a store written by a svcnet without the
# table, or last written by one, is rewritten whole by the next save)
_ENDPOINTS = """
CREATE TABLE IF NOT EXISTS endpoints (
    namespace TEXT NOT NULL, name TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (namespace, name)
)
"""

# format 2 -> 3: changes record when they were made (older rows: unknown)
_UPGRADE_2 = """
ALTER TABLE changes ADD COLUMN at REAL;
UPDATE meta SET value = '3' WHERE key = 'format'
"""


class WatchExpired(StoreError):
    """The changes after the version asked for are no longer in the log (compacted),
    or the version is newer than the store's: list again, then watch from there."""


class ChangeType(enum.Enum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    CONFIGURED = "CONFIGURED"  # the cluster configuration (no object)


@attrs.frozen
class Change:
    """One change of the store, at ``version``: the object as stored after it
    (``ADDED``/``MODIFIED``), its last state (``DELETED``), or the new
    configuration (``CONFIGURED``: ``object`` is None)."""

    version: int
    type: ChangeType
    object: KubeObject | None = None
    config: ClusterConfig | None = None
    time: float | None = None  # when it was committed (epoch seconds; None: not recorded)

    @property
    def key(self) -> ObjectKey | None:
        return self.object.key if self.object is not None else None

    @property
    def step(self) -> Event:
        """The :class:`~svcnet.state.ClusterState` step that makes this change."""
        if self.type is ChangeType.CONFIGURED:
            assert self.config is not None
            return Configure(self.config)
        assert self.object is not None
        if self.type is ChangeType.DELETED:
            return Delete((self.object.key,))
        return Apply((self.object,))


@attrs.frozen
class Listing:
    """What :meth:`Store.list` read: the state at store version ``version``, and
    each object's own version (the change that last touched it)."""

    state: ClusterState
    version: int
    versions: Mapping[ObjectKey, int]


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


def encode_endpoints(endpoints: Mapping[str, Iterable[Endpoint]]) -> str:
    """A service's endpoints per port name (``ClusterState.service_endpoints``) as
    JSON, in order: per port name, one list of the :class:`Endpoint` fields each."""
    return json.dumps(
        {
            port: [[getattr(e, f) for f in _ENDPOINT_FIELDS] for e in eps]
            for port, eps in endpoints.items()
        },
        separators=(",", ":"),
    )


def decode_endpoints(data: Mapping[str, Any]) -> dict[str, tuple[Endpoint, ...]]:
    """The inverse of :func:`encode_endpoints` (already parsed from JSON)."""
    return {
        str(port): tuple(Endpoint(**dict(zip(_ENDPOINT_FIELDS, e, strict=False))) for e in eps)
        for port, eps in data.items()
    }


_ENDPOINT_FIELDS = tuple(f.name for f in attrs.fields(Endpoint))


# -- the model as stored for reading (objects.model) ----------------------------------
#
# get/describe decode the rows they show; parse_object validates every field again
# (150-250 us an object: seconds for a list of 10,000). Each row therefore also keeps
# the object as the model holds it, field by field (model_json); model_from_json
# rebuilds it with the classes' own constructors, no manifest parsing. It is valid
# only for the model it was written with (MODEL_SIGNATURE in meta 'model': a save by a
# svcnet with another model clears the column); a row without it, or whose model does
# not decode to the row's object, is decoded from its manifest. The replay reads it
# too (Store._read).


def _model_types() -> dict[str, type]:
    from svcnet import model

    return {
        name: obj
        for name, obj in vars(model).items()
        if isinstance(obj, type)
        and obj.__module__ == model.__name__
        and (attrs.has(obj) or issubclass(obj, enum.Enum))
    }


_MODEL_TYPES = _model_types()


def _signature() -> str:
    import hashlib

    parts = []
    for name, cls in sorted(_MODEL_TYPES.items()):
        if attrs.has(cls):
            parts.append(f"{name}({','.join(f'{f.name}:{f.type}' for f in attrs.fields(cls))})")
        else:
            parts.append(f"{name}[{','.join(f'{m.name}={m.value!r}' for m in cls)}]")  # type: ignore[attr-defined]
    return hashlib.sha256(";".join(parts).encode()).hexdigest()[:16]


MODEL_SIGNATURE = _signature()


def _plain(value: Any) -> Any:
    # every container is a tagged object, so that json's object_hook rebuilds it
    # bottom-up (_hook); a mapping is its pairs, never an object of its own keys
    if value is None or isinstance(value, (bool, int, str, float)):
        return value
    cls = type(value)
    if attrs.has(cls):
        if _MODEL_TYPES.get(cls.__name__) is not cls:
            raise TypeError(f"not a model class: {cls.__name__}")
        out = {"@": cls.__name__}
        for f, default in _init_fields(cls):
            field = getattr(value, f.name)
            if default is attrs.NOTHING or field != default:  # (defaults left out)
                out[f.alias or f.name] = _plain(field)
        return out
    if isinstance(value, enum.Enum):
        if _MODEL_TYPES.get(cls.__name__) is not cls:
            raise TypeError(f"not a model enum: {cls.__name__}")
        return {"%": cls.__name__, "v": value.value}
    if isinstance(value, tuple):
        return {"(": [_plain(v) for v in value]}
    if isinstance(value, frozenset):
        return {"&": sorted(_plain(v) for v in value)}
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {"{": [[k, _plain(v)] for k, v in value.items()]}
    raise TypeError(f"cannot keep {cls.__name__} in objects.model")


_INIT_FIELDS: dict[type, tuple[tuple[Any, Any], ...]] = {}


def _init_fields(cls: type) -> tuple[tuple[Any, Any], ...]:
    """(field, its default or NOTHING) of each field ``cls.__init__`` takes."""
    found = _INIT_FIELDS.get(cls)
    if found is None:
        pairs = []
        for f in attrs.fields(cls):
            if not f.init:
                continue
            default = f.default
            if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                default = attrs.NOTHING if default.takes_self else default.factory()
            pairs.append((f, default))
        found = _INIT_FIELDS[cls] = tuple(pairs)
    return found


def model_json(obj: KubeObject) -> str | None:
    """``obj`` field by field as JSON (:func:`model_from_json`), or None when it
    holds a value this encoding does not know (the row is read from its manifest)."""
    try:
        return json.dumps(_plain(obj), separators=(",", ":"))
    except TypeError:
        return None


_ENUM_VALUES = {
    name: {m.value: m for m in cls}
    for name, cls in _MODEL_TYPES.items()
    if issubclass(cls, enum.Enum)
}


def _hook(d: dict[str, Any]) -> Any:
    name = d.pop("@", None)
    if name is not None:
        return _MODEL_TYPES[name](**d)
    if "(" in d:
        return tuple(d["("])
    if "%" in d:
        return _ENUM_VALUES[d["%"]][d["v"]]
    if "&" in d:
        return frozenset(d["&"])
    if "{" in d:
        return dict(d["{"])
    raise ValueError(f"not a model value: {sorted(d)}")


def model_from_json(text: str) -> KubeObject:
    """The inverse of :func:`model_json` (same :data:`MODEL_SIGNATURE` only)."""
    obj: KubeObject = json.loads(text, object_hook=_hook)
    return obj


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _model_column(conn: sqlite3.Connection) -> str:
    """What to select for a row's model: the column when it was written for this
    model (meta 'model' is :data:`MODEL_SIGNATURE`), else NULL."""
    if "model" not in _columns(conn, "objects"):
        return "NULL"
    row = conn.execute("SELECT value FROM meta WHERE key = 'model'").fetchone()
    return "model" if row is not None and row[0] == MODEL_SIGNATURE else "NULL"


def _endpoints_at(conn: sqlite3.Connection) -> int | None:
    """The store version the endpoints table is current at (None: never made)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'endpoints'").fetchone()
    try:
        return int(row[0]) if row is not None else None
    except ValueError:
        return None


def _row_key(obj: KubeObject) -> tuple[str, str, str]:
    key = obj.key
    return key.kind.value, key.namespace, key.name


def objects_of(state: ClusterState) -> Iterator[KubeObject]:
    """Every object of ``state`` (nodes, pods, services, slices, deployments,
    replica sets)."""
    yield from state.nodes.values()
    yield from state.pods.values()
    yield from state.services.values()
    yield from state.slices.values()
    yield from state.deployments.values()
    yield from state.replica_sets.values()


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

    def __init__(self, path: str | None = None, log_limit: int = LOG_LIMIT) -> None:
        self.path = path or default_path()
        self.log_limit = log_limit  # changes kept in the log (see the module docstring)

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
        if write and version < FORMAT_VERSION:
            for statement in (_UPGRADE_1 if version == 1 else _UPGRADE_2).split(";"):
                conn.execute(statement)
        if write and "created" not in tables:  # added within format 3: no upgrade needed
            conn.execute(_CREATED)
        if write and "applied" not in tables:  # the same
            conn.execute(_APPLIED)
        if write and "endpoints" not in tables:  # the same (meta 'endpoints' says current)
            conn.execute(_ENDPOINTS)
        if write and "model" not in _columns(conn, "objects"):  # the same (meta 'model')
            conn.execute("ALTER TABLE objects ADD COLUMN model TEXT")

    def _load(self, conn: sqlite3.Connection) -> ClusterState:
        return self._read(conn).state

    def _read(self, conn: sqlite3.Connection) -> Listing:
        # decoding every row allocates a container per field: the collector's full
        # passes over the growing heap cost ~10% of a 60,000-object read; it waits
        with _gc.paused():
            return self._read_all(conn)

    def _read_all(self, conn: sqlite3.Connection) -> Listing:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables:
            return Listing(ClusterState.empty(), 0, {})
        # a format-1 store (read, not yet upgraded): each object's version is its position
        rv = "rv" if "changes" in tables else "seq"
        row = conn.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
        try:
            config = config_from_json(json.loads(row[0])) if row else ClusterConfig()
        except (ValueError, KeyError, TypeError) as e:
            raise self._error(f"corrupt configuration: {e}") from e
        objects: list[KubeObject] = []
        versions: dict[ObjectKey, int] = {}
        # the model column when it was written for this model (as Reader reads it):
        # 30-40 us an object against 150-250 us for parsing the manifest again; the
        # objects were validated when they were applied, and the replay's step still
        # checks every allocation; a row whose model does not decode is parsed
        model = _model_column(conn)
        for kind, ns, name, manifest, flags, version, stored in conn.execute(
            f"SELECT kind, namespace, name, manifest, flags, {rv}, {model} FROM objects"
            " ORDER BY seq"
        ):
            obj = None
            if stored is not None:
                try:
                    obj = model_from_json(stored)
                except (ValueError, TypeError, AttributeError, KeyError):
                    obj = None
                if obj is not None and _row_key(obj) != (kind, ns, name):
                    obj = None
            if obj is None:
                try:
                    obj = decode(json.loads(manifest), json.loads(flags))
                except (ValueError, TypeError, AttributeError) as e:
                    where = f"{kind} {ns}/{name}" if ns else f"{kind} {name}"
                    raise self._error(f"corrupt object {where}: {e}") from e
            objects.append(obj)
            versions[obj.key] = int(version)
        try:
            state = replay(config, objects)
        except SvcnetError as e:
            raise self._error(f"stored objects no longer replay: {e}") from e
        return Listing(state, self._versions(conn)[0], versions)

    def _versions(self, conn: sqlite3.Connection) -> tuple[int, int]:
        """(the store's resourceVersion, the version the log is compacted through)."""
        got = dict(
            conn.execute(
                "SELECT key, value FROM meta WHERE key IN ('resourceVersion', 'compacted')"
            )
        )
        if "resourceVersion" not in got:  # a new store, or format 1 (read, not upgraded)
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "objects" not in tables or "changes" in tables:
                return 0, 0
            top = int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM objects").fetchone()[0])
            return top, top
        try:
            return int(got["resourceVersion"]), int(got.get("compacted", 0))
        except ValueError as e:
            raise self._error(f"corrupt version: {e}") from e

    def load(self) -> ClusterState:
        """The stored state (empty when there is no file yet)."""
        try:
            with self._connect(write=False) as conn:
                return self._load(conn)
        except FileNotFoundError:
            return ClusterState.empty()

    def list(self) -> Listing:
        """The stored state, the store's version it is current at and each object's
        version: where a watcher starts (then :meth:`watch` from ``version``)."""
        try:
            with self._connect(write=False) as conn:
                return self._read(conn)
        except FileNotFoundError:
            return Listing(ClusterState.empty(), 0, {})

    @contextlib.contextmanager
    def reader(self) -> Iterator[Reader | None]:
        """A read transaction that answers ``get``/``describe`` from the rows, without
        replaying the store (:class:`Reader`); None when the store cannot (no file
        yet, or its endpoints table is not current: written by a svcnet without it),
        and then :meth:`list` is the way."""
        with contextlib.ExitStack() as stack:
            try:
                conn = stack.enter_context(self._connect(write=False))
            except FileNotFoundError:  # no file yet: list() says so without a replay
                yield None
                return
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            current = {"meta", "objects", "changes", "endpoints"} <= tables
            version = self._versions(conn)[0]
            if current and _endpoints_at(conn) == version:
                yield Reader(self, conn, version)
            else:
                yield None

    def version(self) -> int:
        """The store's current resourceVersion (0 for a new store)."""
        try:
            with self._connect(write=False) as conn:
                return self._versions(conn)[0]
        except FileNotFoundError:
            return 0

    def kubelet(self) -> str:
        """Who reports pod readiness: ``"store"`` (the default: each save marks the
        scheduled pods no kubelet reported on Running and Ready at once) or ``"lab"``
        (a lab bound to the store probes them and reports; :mod:`svcnet.lab.kubelet`)."""
        try:
            with self._connect(write=False) as conn:
                row = conn.execute("SELECT value FROM meta WHERE key = 'kubelet'").fetchone()
        except FileNotFoundError:
            return KUBELET_STORE
        return KUBELET_STORE if row is None else str(row[0])

    def set_kubelet(self, mode: str) -> None:
        """Set :meth:`kubelet` (``"store"`` or ``"lab"``)."""
        if mode not in (KUBELET_STORE, KUBELET_LAB):
            raise StoreError(f"store {self.path}: kubelet mode {mode!r}: 'store' or 'lab'")
        with self._connect(write=True) as conn:
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('kubelet', ?)", (mode,))

    def applied(self, key: ObjectKey | None = None) -> dict[ObjectKey, dict[str, Any]]:
        """The document each object was last applied with, as written
        (:meth:`Session.save_applied`): every object's, or only ``key``'s. Objects
        the controllers made, or saved without one, have none."""
        return {k: json.loads(doc) for k, doc in self._per_object("applied", "doc", key)}

    def created(self, key: ObjectKey | None = None) -> dict[ObjectKey, float]:
        """When objects were created (epoch seconds; kubectl's AGE): every object's,
        or only ``key``'s (an empty dict if it has none). Objects saved by a
        svcnet that did not record it, and objects of a missing store, have none."""
        return {k: float(at) for k, at in self._per_object("created", "at", key)}

    def created_of(self, keys: Iterable[ObjectKey]) -> dict[ObjectKey, float]:
        """As :meth:`created`, for ``keys`` only (one read of the store: each key
        looked up by its index, or, for many, the rows of their kinds)."""
        wanted = set(keys)
        out: dict[ObjectKey, float] = {}
        try:
            with self._connect(write=False) as conn:
                query = "SELECT at FROM created WHERE kind = ? AND namespace = ? AND name = ?"
                try:
                    if len(wanted) > 64:  # many: read their kinds' rows at once
                        for kind in {key.kind for key in wanted}:
                            for ns, name, at in conn.execute(
                                "SELECT namespace, name, at FROM created WHERE kind = ?",
                                (kind.value,),
                            ):
                                key = ObjectKey(kind, ns, name)
                                if key in wanted:
                                    out[key] = float(at)
                        return out
                    for key in wanted:
                        row = conn.execute(query, (key.kind.value, key.namespace, key.name))
                        found = row.fetchone()
                        if found is not None:
                            out[key] = float(found[0])
                except sqlite3.OperationalError:  # written before the table existed
                    return {}
        except FileNotFoundError:
            return {}
        return out

    def _per_object(
        self, table: str, column: str, key: ObjectKey | None
    ) -> tuple[tuple[ObjectKey, Any], ...]:
        """(key, value) of ``column`` in a per-object side table (``created``,
        ``applied``): every row, or ``key``'s; none in a missing store or one written
        before the table existed."""
        query = f"SELECT kind, namespace, name, {column} FROM {table}"
        args: tuple[str, ...] = ()
        if key is not None:
            query += " WHERE kind = ? AND namespace = ? AND name = ?"
            args = (key.kind.value, key.namespace, key.name)
        try:
            with self._connect(write=False) as conn:
                try:
                    rows = conn.execute(query, args).fetchall()
                except sqlite3.OperationalError:  # written before the table existed
                    rows = []
        except FileNotFoundError:
            return ()
        kinds = {k.value: k for k in Kind}
        return tuple(
            (ObjectKey(kinds[kind], ns, name), value)
            for kind, ns, name, value in rows
            if kind in kinds
        )

    def changes_since(self, since: int) -> tuple[Change, ...]:
        """Every change after version ``since``, in order (empty if none yet);
        :class:`WatchExpired` if the log no longer holds them all or ``since`` is
        newer than the store (list again)."""
        try:
            with self._connect(write=False) as conn:
                return self._changes_after(conn, since)
        except FileNotFoundError:
            self._check_since(since, 0, 0)
            return ()

    def _changes_after(self, conn: sqlite3.Connection, since: int) -> tuple[Change, ...]:
        current, compacted = self._versions(conn)
        self._check_since(since, current, compacted)
        if since == current:
            return ()
        query = "SELECT rv, type, kind, namespace, name, manifest, flags, {} FROM changes "
        query += "WHERE rv > ? ORDER BY rv"
        try:
            rows = conn.execute(query.format("at"), (since,)).fetchall()
        except sqlite3.OperationalError:  # format 2, read before its first write upgrades it
            rows = conn.execute(query.format("NULL"), (since,)).fetchall()
        return tuple(self._change(*row) for row in rows)

    def _check_since(self, since: int, current: int, compacted: int) -> None:
        if since < compacted:
            raise WatchExpired(
                f"store {self.path}: the changes after version {since} are compacted "
                f"(the log starts after {compacted}); list again"
            )
        if since > current:
            raise WatchExpired(
                f"store {self.path}: version {since} is newer than the store's ({current}; "
                "was the store recreated?); list again"
            )

    def _change(
        self,
        rv: int,
        type_: str,
        kind: str,
        ns: str,
        name: str,
        manifest: str,
        flags: str,
        at: float | None = None,
    ) -> Change:
        try:
            kind_of = ChangeType(type_)
            if kind_of is ChangeType.CONFIGURED:
                config = config_from_json(json.loads(manifest))
                return Change(rv, kind_of, config=config, time=at)
            return Change(rv, kind_of, decode(json.loads(manifest), json.loads(flags)), time=at)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            where = f"{kind} {ns}/{name}" if ns else f"{kind} {name}"
            raise self._error(f"corrupt change {rv} ({type_} {where}): {e}") from e

    def watch(
        self, since: int, timeout: float | None = None, interval: float = POLL_INTERVAL
    ) -> Iterator[Change]:
        """Every change after version ``since``, in order, as they are made: blocks
        between them, polling the store every ``interval`` seconds (a
        :class:`Poller`: no lock taken while nothing changes); ends when ``timeout``
        seconds pass without a change (None: never). :class:`WatchExpired` as
        :meth:`changes_since` (at the start or later, if the watcher falls
        ``log_limit`` changes behind, or the file is replaced)."""
        with self.poller(since) as poller:
            yield from poller.follow(timeout, interval)

    def poller(self, since: int) -> Poller:
        """A non-blocking reader of the changes after version ``since``: each
        ``poll()`` returns those made since the previous one (see :class:`Poller`)."""
        return Poller(self, since)

    def _hold(self) -> _Held | None:
        try:
            file = open(self.path, "rb", buffering=0)  # noqa: SIM115 - _Held closes it
        except FileNotFoundError:
            return None
        except OSError as e:
            raise self._error(f"cannot open: {e.strerror}") from e
        uri = "file:" + os.path.abspath(self.path) + "?mode=rw"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT, isolation_level=None)
        except sqlite3.Error as e:
            file.close()
            raise self._error(f"cannot open: {e}") from e
        return _Held(self, conn, file, os.fstat(file.fileno()).st_ino)

    @contextlib.contextmanager
    def modify(self, known: tuple[ClusterState, int] | None = None) -> Iterator[Session]:
        """Load under an exclusive lock; ``session.save(state)`` is committed when
        the block ends without an exception, rolled back otherwise.

        ``known``: a state and the store version it is current at (a
        :class:`Listing`'s, or a session's ``state`` and ``version`` after its
        save) that a long-lived writer holds; when the store is still at that
        version the session starts from it instead of loading every object."""
        with self._connect(write=True) as conn:
            if known is not None and self._versions(conn)[0] == known[1]:
                state = known[0]
            else:
                state = self._load(conn)
            yield Session(self, conn, state)

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


# what Reader reads of a row: the manifest only when there is no model to decode
_READ_COLUMNS = "kind, namespace, name, CASE WHEN {0} IS NULL THEN manifest END, flags, rv, {0}"


class Reader:
    """Objects and endpoints read from the store's rows in one read transaction
    (:meth:`Store.reader`): each object decoded alone (:func:`decode`), never the
    whole store replayed. ``version`` is the store's version they are current at."""

    def __init__(self, store: Store, conn: sqlite3.Connection, version: int) -> None:
        self.store, self._conn, self.version = store, conn, version
        self._model = _model_column(conn)

    def config(self) -> ClusterConfig:
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
        try:
            return config_from_json(json.loads(row[0])) if row else ClusterConfig()
        except (ValueError, KeyError, TypeError) as e:
            raise self.store._error(f"corrupt configuration: {e}") from e

    def objects(
        self, kind: Kind, namespace: str | None = None, name: str | None = None
    ) -> list[tuple[KubeObject, int]]:
        """(object, its version) of ``kind``: all, those of ``namespace``, or the one
        named (namespace ignored for nodes), by namespace and name."""
        query = f"SELECT {_READ_COLUMNS} FROM objects WHERE kind = ?"
        args: list[str] = [kind.value]
        if namespace is not None and kind is not Kind.NODE:
            query += " AND namespace = ?"
            args.append(namespace)
        if name is not None:
            query += " AND name = ?"
            args.append(name)
        return self._decoded(query + " ORDER BY namespace, name", args)

    def pods_on(self, node: str) -> list[tuple[KubeObject, int]]:
        """(pod, its version) of the pods bound to ``node`` (``spec.nodeName``)."""
        query = (
            f"SELECT {_READ_COLUMNS} FROM objects WHERE kind = ? "
            "AND json_extract(manifest, '$.spec.nodeName') = ? ORDER BY namespace, name"
        )
        return self._decoded(query, [Kind.POD.value, node])

    def _decoded(self, query: str, args: list[str]) -> list[tuple[KubeObject, int]]:
        out: list[tuple[KubeObject, int]] = []
        rows = self._conn.execute(query.format(self._model), args)
        for kind, ns, name, manifest, flags, version, model in rows:
            try:
                if model is not None:
                    out.append((model_from_json(model), int(version)))
                    continue
                out.append((decode(json.loads(manifest), json.loads(flags)), int(version)))
            except (ValueError, TypeError, AttributeError, KeyError, SvcnetError) as e:
                where = f"{kind} {ns}/{name}" if ns else f"{kind} {name}"
                raise self.store._error(f"corrupt object {where}: {e}") from e
        return out

    def endpoints(
        self, namespace: str | None = None, name: str | None = None
    ) -> dict[tuple[str, str], dict[str, tuple[Endpoint, ...]]]:
        """Per service (namespace, name), its endpoints per port name as the state
        computed them (``ClusterState.service_endpoints``): every service's, those
        of ``namespace``, or one service's. Services without endpoints have none."""
        query, args = "SELECT namespace, name, data FROM endpoints", []
        if namespace is not None:
            query += " WHERE namespace = ?"
            args.append(namespace)
            if name is not None:
                query += " AND name = ?"
                args.append(name)
        out: dict[tuple[str, str], dict[str, tuple[Endpoint, ...]]] = {}
        for ns, svc, data in self._conn.execute(query, args):
            try:
                out[(ns, svc)] = decode_endpoints(json.loads(data))
            except (ValueError, TypeError) as e:
                raise self.store._error(f"corrupt endpoints of service {ns}/{svc}: {e}") from e
        return out


class Poller:
    """Reads the changes of a store after a version without blocking: each
    :meth:`poll` returns, in order, the changes committed since the last one it
    returned (possibly none), or raises :class:`WatchExpired` (list again).

    It keeps one connection to the file between polls and opens it again when the
    file at the store's path is replaced. A poll takes no lock: it reads SQLite's
    file change counter (bytes 24-27 of the header, bumped by every commit) and
    reads the log, in one short read transaction, only when the counter moved (or
    :data:`REREAD` seconds passed). Polls that each took SQLite's shared lock
    (three agents every 5 ms) kept a writer's commit waiting and backing off in its
    busy handler for up to seconds."""

    def __init__(self, store: Store, since: int) -> None:
        self.store = store
        self.version = since  # the last change returned (or ``since``)
        self._held: _Held | None = None

    def poll(self) -> tuple[Change, ...]:
        held = self._held
        if held is None or held.stale():
            if held is not None:
                held.close()
            held = self._held = self.store._hold()
        if held is None:  # no file yet
            self.store._check_since(self.version, 0, 0)
            return ()
        changes = held.read(self.version) if held.changed() else ()
        if changes:
            self.version = changes[-1].version
        return changes

    def follow(
        self, timeout: float | None = None, interval: float = POLL_INTERVAL
    ) -> Iterator[Change]:
        """:meth:`poll` every ``interval`` seconds, yielding each change, until
        ``timeout`` seconds pass without one (None: never); the poller stays open,
        so a later ``follow()`` goes on from where this one stopped."""
        idle_since = time.monotonic()
        while True:
            changes = self.poll()
            yield from changes
            if changes:
                idle_since = time.monotonic()
                continue
            if timeout is not None and time.monotonic() - idle_since >= timeout:
                return
            time.sleep(interval)

    def close(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None

    def __enter__(self) -> Poller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Held:
    """The connection a :class:`Poller` keeps between its polls, and a plain
    descriptor of the same file for :meth:`changed`."""

    def __init__(self, store: Store, conn: sqlite3.Connection, file: BinaryIO, ino: int) -> None:
        # a file object, not a bare descriptor: one left unclosed (a poller
        # dropped without close()) is closed when it is collected
        self.store, self.conn, self.file, self.ino = store, conn, file, ino
        self.checked = False  # the format is checked once per connection
        self.counter: bytes | None = None  # the file change counter at the last read
        self.read_at = -math.inf  # when (monotonic)

    def _counter(self) -> bytes | None:
        try:
            return os.pread(self.file.fileno(), 4, 24)
        except OSError:
            return None

    def changed(self) -> bool:
        """Whether a commit may have come since the last :meth:`read`, without
        taking a lock: the file change counter differs from the one read then
        (rollback-journal mode bumps it at every commit), or :data:`REREAD`
        seconds passed."""
        counter = self._counter()
        return (
            counter is None or counter != self.counter or time.monotonic() - self.read_at >= REREAD
        )

    def stale(self) -> bool:
        """Whether the file at the store's path is no longer the one held."""
        try:
            return os.stat(self.store.path).st_ino != self.ino
        except OSError:
            return True

    def read(self, since: int) -> tuple[Change, ...]:
        # the counter before the transaction: a commit in between is read now and
        # makes the next changed() true once more, never missed
        counter = self._counter()
        conn = self.conn
        try:
            conn.execute("BEGIN")
            try:
                if not self.checked:
                    self.store._check(conn, write=False)
                    self.checked = True
                changes = self.store._changes_after(conn, since)
            finally:
                conn.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            raise self.store._error(f"not a readable svcnet store ({e})") from e
        self.counter, self.read_at = counter, time.monotonic()
        return changes

    def close(self) -> None:
        self.conn.close()
        self.file.close()


class Session:
    """One locked load -> modify -> save (see :meth:`Store.modify`)."""

    def __init__(self, store: Store, conn: sqlite3.Connection, state: ClusterState) -> None:
        self.store = store
        self._conn = conn
        self.state = state  # as loaded; save() moves it on

    @property
    def version(self) -> int:
        """The store's version as this session sees it (after its saves)."""
        return self.store._versions(self._conn)[0]

    def applied(self, keys: Iterable[ObjectKey]) -> dict[ObjectKey, dict[str, Any]]:
        """The applied documents (:meth:`Store.applied`) of ``keys`` as this session
        sees them."""
        out: dict[ObjectKey, dict[str, Any]] = {}
        for key in keys:
            row = self._conn.execute(
                "SELECT doc FROM applied WHERE kind = ? AND namespace = ? AND name = ?",
                (key.kind.value, key.namespace, key.name),
            ).fetchone()
            if row is not None:
                out[key] = json.loads(row[0])
        return out

    def save_applied(self, docs: Mapping[ObjectKey, Mapping[str, Any]]) -> None:
        """Keep the documents these objects were applied with, as written (after
        :meth:`save` of the state they are in; ``svcnet apply`` calls it), for
        :meth:`Store.applied`."""
        self._conn.executemany(
            "INSERT OR REPLACE INTO applied VALUES (?, ?, ?, ?)",
            [
                (key.kind.value, key.namespace, key.name, json.dumps(doc, sort_keys=False))
                for key, doc in docs.items()
                if _holds(self.state, key)
            ],
        )

    def save(self, new: ClusterState) -> None:
        """Write what differs between the loaded (or last saved) state and ``new``,
        after the simulated control plane has acted on it (:func:`svcnet.workloads.
        settle`: Deployments and ReplicaSets make their pods, pods without a node are
        scheduled, the kubelet marks scheduled pods without a status Running and
        Ready), as an API server's controllers would right after the change. The
        session's ``state`` is then the settled one."""
        from svcnet.workloads import settle

        row = self._conn.execute("SELECT value FROM meta WHERE key = 'kubelet'").fetchone()
        new = settle(new, kubelet=(row is None or row[0] != KUBELET_LAB))
        old = self.state
        c = self._conn
        try:
            version, compacted = self.store._versions(c)
            start = version
            now = time.time()  # the time of every change of this save

            def log(type_: ChangeType, row: tuple[str, str, str], manifest: str, flags: str) -> int:
                nonlocal version
                version += 1
                c.execute(
                    "INSERT INTO changes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (version, type_.value, *row, manifest, flags, now),
                )
                return version

            row = c.execute("SELECT value FROM meta WHERE key = 'model'").fetchone()
            if row is None or row[0] != MODEL_SIGNATURE:  # written for another model
                c.executemany(
                    "UPDATE objects SET model = ? WHERE kind = ? AND namespace = ? AND name = ?",
                    [(model_json(obj), *_row_key(obj)) for obj in objects_of(old)],
                )
                c.execute("INSERT OR REPLACE INTO meta VALUES ('model', ?)", (MODEL_SIGNATURE,))
            if new.config != old.config:
                config = json.dumps(config_to_json(new.config))
                c.execute("UPDATE meta SET value = ? WHERE key = 'config'", (config,))
                log(ChangeType.CONFIGURED, ("", "", ""), config, "{}")
            for before, after in _differing(old, new):
                for key in before:
                    if key not in after:
                        row = _row_key(before[key])
                        c.execute(
                            "DELETE FROM objects WHERE kind = ? AND namespace = ? AND name = ?",
                            row,
                        )
                        log(ChangeType.DELETED, row, *encode(before[key]))
                        for table in ("created", "applied"):
                            c.execute(
                                f"DELETE FROM {table} "
                                "WHERE kind = ? AND namespace = ? AND name = ?",
                                row,
                            )
                for key, obj in after.items():
                    prev = before.get(key)
                    if prev is obj or prev == obj:
                        continue
                    manifest, flags = encode(obj)
                    type_ = ChangeType.ADDED if prev is None else ChangeType.MODIFIED
                    rv = log(type_, _row_key(obj), manifest, flags)
                    if prev is None:
                        c.execute(
                            "INSERT OR REPLACE INTO created VALUES (?, ?, ?, ?)",
                            (*_row_key(obj), now),
                        )
                    c.execute(
                        "INSERT INTO objects (kind, namespace, name, manifest, flags, rv, model) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (kind, namespace, name) "
                        "DO UPDATE SET manifest = excluded.manifest, flags = excluded.flags, "
                        "rv = excluded.rv, model = excluded.model",
                        (*_row_key(obj), manifest, flags, rv, model_json(obj)),
                    )
            _save_endpoints(c, old, new, start, version)
            if version != start:
                # compaction (etcd's): keep the last log_limit changes
                compacted = max(compacted, version - max(self.store.log_limit, 0))
                c.execute("DELETE FROM changes WHERE rv <= ?", (compacted,))
                c.executemany(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    [("resourceVersion", str(version)), ("compacted", str(compacted))],
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


# the order saved
_KINDS = (
    Kind.NODE,
    Kind.POD,
    Kind.SERVICE,
    Kind.ENDPOINT_SLICE,
    Kind.DEPLOYMENT,
    Kind.REPLICA_SET,
)


def _maps(state: ClusterState) -> tuple[Mapping[Any, KubeObject], ...]:
    return (
        state.nodes,
        state.pods,
        state.services,
        state.slices,
        state.deployments,
        state.replica_sets,
    )


def _holds(state: ClusterState, key: ObjectKey) -> bool:
    """Does ``state`` hold the object ``key`` names?"""
    i = _KINDS.index(key.kind)
    return (key.name if key.kind is Kind.NODE else (key.namespace, key.name)) in _maps(state)[i]


def _differing(
    old: ClusterState, new: ClusterState
) -> list[tuple[Mapping[Any, KubeObject], Mapping[Any, KubeObject]]]:
    """Per kind (nodes, pods, services, slices), the objects of ``old`` and ``new``
    to compare: only those the steps from ``old`` to ``new`` touched when the state
    can tell (:meth:`ClusterState.objects_changed_since`: the cost of one save is
    then that of what changed, not of the store's size), else all of them."""
    keys = new.objects_changed_since(old)
    if keys is None:
        return list(zip(_maps(old), _maps(new), strict=True))
    pairs: list[tuple[Mapping[Any, KubeObject], Mapping[Any, KubeObject]]] = []
    for kind, before, after in zip(_KINDS, _maps(old), _maps(new), strict=True):
        mine = [
            k.name if kind is Kind.NODE else (k.namespace, k.name) for k in keys if k.kind is kind
        ]
        pairs.append(
            (
                {k: before[k] for k in mine if k in before},
                {k: after[k] for k in mine if k in after},
            )
        )
    return pairs


def _save_endpoints(
    c: sqlite3.Connection, old: ClusterState, new: ClusterState, start: int, version: int
) -> None:
    """Bring the endpoints table from version ``start`` (the state ``old``) to
    ``version`` (``new``): the rows of the services whose endpoints the steps in
    between changed (:meth:`ClusterState.changed_since`), or every row when the
    state cannot tell (``new`` not stepped from ``old``, a configuration change)
    or the table was not current at ``start``."""
    current = _endpoints_at(c) == start
    services: Iterable[tuple[str, str]] | None = None
    if current and new.objects_changed_since(old) is not None:
        touched = new.changed_since(old.revision)
        if touched is not None and not touched.config:
            services = touched.services
    if services is None:
        c.execute("DELETE FROM endpoints")
        services = new.endpoints.keys()
    rows, gone = [], []
    for ns, name in services:
        eps = new.service_endpoints(ns, name) if (ns, name) in new.services else None
        if eps:
            rows.append((ns, name, encode_endpoints(eps)))
        else:
            gone.append((ns, name))
    c.executemany("DELETE FROM endpoints WHERE namespace = ? AND name = ?", gone)
    c.executemany("INSERT OR REPLACE INTO endpoints VALUES (?, ?, ?)", rows)
    c.execute("INSERT OR REPLACE INTO meta VALUES ('endpoints', ?)", (str(version),))


def object_key(kind: Kind, namespace: str, name: str) -> ObjectKey:
    """The key of an object (namespace ignored for nodes)."""
    return ObjectKey(kind, "" if kind is Kind.NODE else namespace, name)


__all__ = [
    "ENV",
    "FORMAT_VERSION",
    "LOG_LIMIT",
    "POLL_INTERVAL",
    "Change",
    "ChangeType",
    "Listing",
    "Poller",
    "Reader",
    "Session",
    "Store",
    "WatchExpired",
    "config_from_json",
    "config_to_json",
    "decode",
    "decode_endpoints",
    "default_path",
    "encode",
    "encode_endpoints",
    "model_from_json",
    "model_json",
    "object_key",
    "objects_of",
    "replay",
]
