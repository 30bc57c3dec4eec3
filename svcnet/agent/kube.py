"""The agent's Kubernetes source: :class:`KubeSource` reads the API server (I/O).

It does what kube-proxy's informers do, for the three kinds a proxy reads --
Services (``v1``), EndpointSlices (``discovery.k8s.io/v1``) and Nodes (``v1``):

* :meth:`KubeSource.list` lists each kind (paged), decodes every object with
  :mod:`svcnet.manifests` and builds a :class:`~svcnet.state.ClusterState` under
  the API's authority (``ClusterConfig.authority == "api"``: endpoints from the
  EndpointSlices, addresses as given). It then starts one watcher thread per
  kind from that kind's list ``resourceVersion``.
* each watcher holds a watch open (``watch=1&allowWatchBookmarks=true``), keeps
  the ``resourceVersion`` of the last event or bookmark, reconnects from it when
  the server ends the stream, retries a dropped connection with exponential
  backoff, and reports ``410 Gone`` (an HTTP 410 or an ``ERROR`` event with code
  410) as expired;
* :meth:`KubeSource.watch` yields the watchers' events in arrival order as
  :class:`~svcnet.store.Change` objects and raises
  :class:`~svcnet.store.WatchExpired` after a 410 and every ``relist_period``
  seconds (a periodic relist): the agent then lists again.

Versions. The API's resourceVersions are opaque strings, one stream per kind; the
agent wants one increasing integer. The source counts: a list is version ``n``,
the changes after it ``n+1``, ``n+2``, ... in the order it yields them. The
resourceVersions stay inside the source (per kind, to resume its watch; per
object, to drop a stale event). A watch asked from any other version than the
last one given out raises WatchExpired, so the agent lists again.

What svcnet cannot use is skipped, with a warning naming the object and why (an
FQDN EndpointSlice, a field svcnet refuses); a Service or EndpointSlice labelled
``service.kubernetes.io/headless`` is not even listed (as kube-proxy). Unlike
kube-proxy, Services labelled ``service.kubernetes.io/service-proxy-name``
(another proxy's) are listed: the core never proxies them, and knowing their
addresses lets their ClusterIPs pass instead of being dropped as unallocated
(SEMANTICS.md: every address of such a service passes); their EndpointSlices are
not listed. An object that stops being usable is deleted from the state.

The client is the official ``kubernetes`` package (the ``kubernetes`` extra): its
configuration (kubeconfig or in-cluster service account), authentication and
HTTP; the list/watch protocol on top is this module's (raw JSON, so objects are
decoded by svcnet's own manifest parser, and 410 and reconnects are handled as
kube-proxy's reflector handles them).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import queue
import random
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from svcnet.errors import SvcnetError, ValidationError
from svcnet.model import (
    SERVICE_PROXY_NAME_LABEL,
    Authority,
    ClusterConfig,
    KubeObject,
    ObjectKey,
)
from svcnet.state import Apply, ClusterState
from svcnet.store import Change, ChangeType, Listing, WatchExpired

__all__ = ["HEADLESS_LABEL", "RESOURCES", "KubeSource", "Resource", "decode_object"]

LOG = logging.getLogger("svcnet.agent.kube")

HEADLESS_LABEL = "service.kubernetes.io/headless"
# kube-proxy's label selector is "!service-proxy-name,!headless" for both kinds;
# svcnet lists other proxies' Services (their addresses pass, SEMANTICS.md)
SERVICE_SELECTOR = f"!{HEADLESS_LABEL}"
SLICE_SELECTOR = f"!{SERVICE_PROXY_NAME_LABEL},!{HEADLESS_LABEL}"

RELIST_PERIOD = 900.0  # seconds between periodic relists
WATCH_TIMEOUT = 300  # the server ends each watch after about this long (kube: 5-10 min)
MAX_BACKOFF = 30.0
PAGE = 500


@attrs.frozen
class Resource:
    """One kind the source lists and watches: the ``apiVersion``/``kind`` its list
    items lack, the client's list-all method (``CoreV1Api``/``DiscoveryV1Api``)
    and its label selector."""

    kind: str
    api_version: str
    method: str
    selector: str = ""


RESOURCES = (
    Resource("Service", "v1", "list_service_for_all_namespaces", SERVICE_SELECTOR),
    Resource(
        "EndpointSlice",
        "discovery.k8s.io/v1",
        "list_endpoint_slice_for_all_namespaces",
        SLICE_SELECTOR,
    ),
    Resource("Node", "v1", "list_node"),
)


class _Expired(Exception):
    """A watcher's resourceVersion is gone (410)."""


class _ApiError(SvcnetError):
    """The API server answered an error (not 410)."""


def decode_object(resource: Resource, raw: Mapping[str, Any]) -> KubeObject:
    """An API object (as a list item or a watch event carries it) as a model
    object; ValidationError when svcnet cannot use it."""
    from svcnet.manifests import parse_object

    doc = dict(raw)
    doc.setdefault("apiVersion", resource.api_version)
    doc.setdefault("kind", resource.kind)
    labels = (doc.get("metadata") or {}).get("labels") or {}
    if HEADLESS_LABEL in labels or (
        resource.kind == "EndpointSlice" and SERVICE_PROXY_NAME_LABEL in labels
    ):
        name = _name_of(doc)
        raise ValidationError(f"{resource.kind} {name}", "metadata.labels", "not for this proxy")
    return parse_object(doc)


def _name_of(raw: Mapping[str, Any]) -> str:
    meta = raw.get("metadata") or {}
    ns = meta.get("namespace") or ""
    return f"{ns}/{meta.get('name', '?')}" if ns else str(meta.get("name", "?"))


def _rv(raw: Mapping[str, Any]) -> str:
    return str((raw.get("metadata") or {}).get("resourceVersion") or "")


def _older(a: str, b: str) -> bool:
    """resourceVersion ``a`` is older than ``b`` (only when both are integers, as
    etcd's are; opaque ones are never compared)."""
    return a.isdigit() and b.isdigit() and int(a) < int(b)


class _Client:
    """The HTTP calls, through the official client's generated list methods with
    ``_preload_content=False`` (the raw JSON response; its configuration,
    authentication, TLS and connection pool)."""

    def __init__(self, kubeconfig: str | None, context: str | None = None) -> None:
        try:  # imported as Any: the client's typing is partial, and it is optional
            client: Any = importlib.import_module("kubernetes.client")
            config: Any = importlib.import_module("kubernetes.config")
        except ImportError:  # pragma: no cover - the extra is not installed
            raise SvcnetError(
                "the kubernetes source needs the 'kubernetes' package: "
                "pip install 'svcnet[kubernetes]'"
            ) from None
        cfg = client.Configuration()
        try:
            if kubeconfig is None:
                config.load_incluster_config(client_configuration=cfg)
            else:
                config.load_kube_config(
                    config_file=kubeconfig, context=context, client_configuration=cfg
                )
        except Exception as e:  # the client's own ConfigException and file errors
            where = kubeconfig or "the in-cluster service account"
            raise SvcnetError(
                f"cannot load the Kubernetes configuration from {where}: {e}"
            ) from None
        self.host = str(cfg.host)
        self.api = client.ApiClient(cfg)
        self._apis = {
            "v1": client.CoreV1Api(self.api),
            "discovery.k8s.io/v1": client.DiscoveryV1Api(self.api),
        }
        self._exception = client.exceptions.ApiException

    def get(self, resource: Resource, read_timeout: float, **query: Any) -> Any:
        """List (or, with ``watch=True``, watch) ``resource`` with ``query``; the
        raw urllib3 response, not read. Raises _Expired on 410, _ApiError on
        other errors."""
        method = getattr(self._apis[resource.api_version], resource.method)
        if resource.selector:
            query["label_selector"] = resource.selector
        try:
            return method(_preload_content=False, _request_timeout=(10.0, read_timeout), **query)
        except self._exception as e:
            if e.status == 410:
                raise _Expired(f"{resource.kind}: 410 Gone") from None
            raise _ApiError(f"list {resource.kind}: {e.status} {e.reason}") from None

    def close(self) -> None:
        self.api.close()


def _lines(response: Any) -> Iterator[str]:
    """The newline-separated JSON lines of a streamed (chunked) response."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=True):
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                yield line.decode()
    if pending.strip():
        yield pending.decode()


@attrs.define
class _Watcher:
    """One kind's watch, on its own daemon thread, feeding ``events``."""

    client: _Client
    resource: Resource
    rv: str
    events: queue.Queue[tuple[Resource, str, dict[str, Any]] | _Expired | None]
    stop: threading.Event = attrs.field(factory=threading.Event)
    response: Any = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(
            target=self.run, name=f"svcnet-kube-{self.resource.kind}", daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        response = self.response
        if response is not None:
            # Another thread reads the stream: closing the response would wait for
            # its lock, so end the connection under it (the read then fails).
            sock = getattr(getattr(response, "connection", None), "sock", None)
            with contextlib.suppress(OSError):
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)

    def run(self) -> None:
        backoff = 0.5
        while not self.stop.is_set():
            try:
                self._watch_once()
                backoff = 0.5
            except _Expired as e:
                self.events.put(e)
                return
            except Exception as e:  # a dropped connection, an API error: retry
                if self.stop.is_set():
                    return
                LOG.warning("watch %s: %s (again in %.1fs)", self.resource.kind, e, backoff)
                self.stop.wait(backoff * (1 + random.random() / 2))
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _watch_once(self) -> None:
        timeout = int(WATCH_TIMEOUT * (1 + random.random()))
        self.response = self.client.get(
            self.resource,
            timeout + 30.0,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=self.rv,
            timeout_seconds=timeout,
        )
        try:
            for line in _lines(self.response):
                if self.stop.is_set():
                    return
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Expired(f"{self.resource.kind}: {obj.get('message', '410 Gone')}")
                    raise _ApiError(f"watch {self.resource.kind}: {obj.get('message', obj)}")
                rv = _rv(obj)
                if rv:
                    self.rv = rv
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.events.put((self.resource, kind, obj))
        finally:
            self.response.release_conn()
            self.response = None


class KubeSource:
    """A :class:`~svcnet.agent.source.Source` over the Kubernetes API.

    ``kubeconfig`` None: the in-cluster configuration (the pod's service account).
    ``service_cidrs``/``cluster_cidrs`` are kube-proxy's flags (the state's
    configuration). ``client``: the HTTP client (tests give one built elsewhere)."""

    def __init__(
        self,
        kubeconfig: str | None = None,
        *,
        context: str | None = None,
        service_cidrs: tuple[str, ...] = ClusterConfig().service_cidrs,
        cluster_cidrs: tuple[str, ...] = ClusterConfig().cluster_cidrs,
        masquerade_all: bool = False,
        relist_period: float = RELIST_PERIOD,
        log: logging.Logger = LOG,
    ) -> None:
        self.config = ClusterConfig(
            service_cidrs=tuple(service_cidrs),
            cluster_cidrs=tuple(cluster_cidrs),
            masquerade_all=masquerade_all,
            authority=Authority.API,
        )
        ClusterState.empty(self.config)  # refuses a bad CIDR now, not at the first list
        self.client = _Client(kubeconfig, context)
        self.relist_period = relist_period
        self.log = log
        self.version = 0
        self.skipped: dict[ObjectKey | str, str] = {}  # what was skipped and why (now)
        self._known: dict[tuple[str, str], tuple[str, KubeObject]] = {}
        self._watchers: list[_Watcher] = []
        self._events: queue.Queue[tuple[Resource, str, dict[str, Any]] | _Expired | None] = (
            queue.Queue()
        )
        self._listed_at = 0.0

    @property
    def location(self) -> str:
        """The API server's URL."""
        return self.client.host

    # -- list ----------------------------------------------------------------------
    def _list_kind(self, resource: Resource) -> tuple[list[dict[str, Any]], str]:
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            query: dict[str, Any] = {"limit": PAGE}
            if token:
                query["_continue"] = token
            try:
                response = self.client.get(resource, 60.0, **query)
            except _Expired:
                if not token:
                    raise WatchExpired(f"list {resource.kind}: 410 Gone") from None
                items, token = [], ""  # the continue token expired: start again
                continue
            try:
                body = json.loads(response.read())
            finally:
                response.release_conn()
            items += body.get("items") or []
            meta = body.get("metadata") or {}
            token = meta.get("continue") or ""
            if not token:
                return items, str(meta.get("resourceVersion") or "")

    def _decode(self, resource: Resource, raw: Mapping[str, Any]) -> KubeObject | None:
        """The model object, or None (logged, remembered in ``skipped``)."""
        try:
            obj = decode_object(resource, raw)
        except (SvcnetError, ValueError) as e:
            where = f"{resource.kind} {_name_of(raw)}"
            if self.skipped.get(where) != str(e):
                self.log.warning("skipping %s: %s", where, e)
            self.skipped[where] = str(e)
            return None
        self.skipped.pop(f"{resource.kind} {_name_of(raw)}", None)
        return obj

    def list(self) -> Listing:
        """Every Service, EndpointSlice and Node now, as a state under the API's
        authority; (re)starts the watches from the listed resourceVersions."""
        self._stop_watchers()
        known: dict[tuple[str, str], tuple[str, KubeObject]] = {}
        rvs: list[tuple[Resource, str]] = []
        for resource in RESOURCES:
            items, rv = self._list_kind(resource)
            rvs.append((resource, rv))
            for raw in items:
                obj = self._decode(resource, raw)
                if obj is not None:
                    known[(resource.kind, _name_of(raw))] = (_rv(raw), obj)
        state = _build(self.config, [obj for _, obj in known.values()], self.log)
        self._known = known
        self.version += 1
        self._listed_at = time.monotonic()
        self._events = queue.Queue()
        self._watchers = [_Watcher(self.client, r, rv, self._events) for r, rv in rvs]
        for w in self._watchers:
            w.start()
        versions = {obj.key: self.version for _, obj in known.values()}
        return Listing(state, self.version, versions)

    # -- watch ---------------------------------------------------------------------
    def watch(self, since: int, timeout: float | None) -> Iterator[Change]:
        """The changes after version ``since`` (the last one this source gave
        out), as they arrive; returns after ``timeout`` quiet seconds."""
        if since != self.version or not self._watchers:
            raise WatchExpired(f"version {since} is not this source's latest ({self.version})")
        quiet_until = None if timeout is None else time.monotonic() + timeout
        while True:
            if time.monotonic() - self._listed_at > self.relist_period:
                raise WatchExpired(f"periodic relist (every {self.relist_period:g}s)")
            wait = 1.0 if quiet_until is None else min(1.0, quiet_until - time.monotonic())
            if wait <= 0:
                return
            try:
                item = self._events.get(timeout=wait)
            except queue.Empty:
                continue
            if isinstance(item, _Expired):
                raise WatchExpired(str(item))
            if item is None:
                return
            change = self._change(*item)
            if change is not None:
                self.version += 1
                yield attrs.evolve(change, version=self.version)
                if timeout is not None:
                    quiet_until = time.monotonic() + timeout

    def _change(self, resource: Resource, kind: str, raw: dict[str, Any]) -> Change | None:
        """One watch event as a change of the state, or None (nothing changes)."""
        key = (resource.kind, _name_of(raw))
        rv = _rv(raw)
        old = self._known.get(key)
        if old is not None and _older(rv, old[0]):
            self.log.debug("dropping a stale %s of %s %s (%s < %s)", kind, *key, rv, old[0])
            return None
        obj = None if kind == "DELETED" else self._decode(resource, raw)
        now = time.time()
        if obj is None:  # deleted, or no longer usable: gone from the state
            if old is None:
                return None  # a delete of what this source never had (out of order)
            del self._known[key]
            return Change(0, ChangeType.DELETED, old[1], time=now)
        self._known[key] = (rv, obj)
        if old is not None and old[1] == obj:
            return None
        return Change(0, ChangeType.MODIFIED if old else ChangeType.ADDED, obj, time=now)

    # -- the end -------------------------------------------------------------------
    def _stop_watchers(self) -> None:
        for w in self._watchers:
            w.close()
        self._events.put(None)
        self._watchers = []

    def close(self) -> None:
        """Stop the watches and close the connections."""
        self._stop_watchers()
        self.client.close()

    def __repr__(self) -> str:
        return f"KubeSource({self.location!r})"


def _build(config: ClusterConfig, objects: list[KubeObject], log: logging.Logger) -> ClusterState:
    """The state of ``objects``: one step, or (when that fails) one per object,
    skipping those that do not apply (logged), never failing the others."""
    state = ClusterState.empty(config)
    try:
        return state.step(Apply(objects))
    except SvcnetError:
        pass
    for obj in objects:
        try:
            state = state.step(Apply((obj,)))
        except SvcnetError as e:
            log.warning("skipping %s: %s", obj.key, e)
    return state
