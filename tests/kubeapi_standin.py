"""A stand-in for a Kubernetes API server: list and watch over HTTP, for tests.

No API server can run here, so :class:`StandIn` speaks the part of the protocol a
proxy uses, for Services, EndpointSlices and Nodes, on 127.0.0.1 (an ephemeral
port, a thread per connection):

* ``GET <collection>[?labelSelector=&limit=&continue=]``: a list, ``metadata.
  resourceVersion`` the server's current one, items without ``kind``/``apiVersion``
  (as the API server sends them), paged when ``limit`` is given;
* ``GET <collection>?watch=1&resourceVersion=RV[&allowWatchBookmarks=true]
  [&timeoutSeconds=N]``: a chunked stream of JSON lines (``{"type": ...,
  "object": ...}``), every change after RV, then changes as they are made; an
  object that stops matching the label selector comes as DELETED.

And what a real server does to clients: BOOKMARK events (:meth:`StandIn.bookmark`),
compaction (:meth:`StandIn.compact`: a watch from before it gets an ``ERROR`` event
with code 410, or an HTTP 410 when ``gone_as_http``), an HTTP 410 on the next list
(:meth:`StandIn.expire_next_list`), dropped connections (:meth:`StandIn.drop`) and
events out of order (:meth:`StandIn.inject`). Objects are stored as the API
server returns them (:func:`realistic`: uid, resourceVersion, creationTimestamp,
managedFields, ownerReferences and fields svcnet does not know).
"""

from __future__ import annotations

import copy
import http.server
import json
import socket
import threading
import urllib.parse
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from svcnet.manifests import to_manifest
from svcnet.model import IPFamily, TrafficDistribution, ip_family
from svcnet.state import ClusterState

COLLECTIONS = {
    "/api/v1/services": ("Service", "v1"),
    "/apis/discovery.k8s.io/v1/endpointslices": ("EndpointSlice", "discovery.k8s.io/v1"),
    "/api/v1/nodes": ("Node", "v1"),
}
_PATH_OF = {kind: path for path, (kind, _) in COLLECTIONS.items()}
CREATED = "2026-12-01T10:00:00Z"


def realistic(doc: Mapping[str, Any], owner: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``doc`` as ``kubectl get -o json`` shows it: uid, creationTimestamp,
    generation, managedFields (and ``ownerReferences`` to ``owner``, as the
    EndpointSlice controller sets them), an annotation and fields svcnet does
    not model (in metadata, spec and status)."""
    out = copy.deepcopy(dict(doc))
    meta = out.setdefault("metadata", {})
    meta.setdefault("uid", str(uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(doc, sort_keys=True))))
    meta.setdefault("creationTimestamp", CREATED)
    meta.setdefault("generation", 1)
    meta.setdefault("annotations", {})["kubectl.kubernetes.io/last-applied-configuration"] = "{}"
    meta["managedFields"] = [
        {
            "manager": "kube-controller-manager" if owner else "kubectl-client-side-apply",
            "operation": "Update",
            "apiVersion": out.get("apiVersion", "v1"),
            "time": CREATED,
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}},
        }
    ]
    if owner is not None:
        om = owner["metadata"]
        meta["ownerReferences"] = [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "name": om["name"],
                "uid": om.get("uid", ""),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        meta.setdefault("generateName", om["name"] + "-")
    if out.get("kind") == "Service":
        out.setdefault("spec", {})["futureField"] = {"enabled": True}
        out.setdefault("status", {}).setdefault("conditions", [])
    if out.get("kind") == "Node":
        out.setdefault("status", {})["nodeInfo"] = {"kubeletVersion": "v1.34.0"}
        out["status"].setdefault("conditions", [{"type": "Ready", "status": "True"}])
    return out


def _selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """``key``, ``!key``, ``key=value``, ``key!=value`` terms, comma-joined."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if term.startswith("!"):
            if term[1:] in labels:
                return False
        elif "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.split("=", 1)
            if labels.get(k.rstrip("=")) != v:
                return False
        elif term not in labels:
            return False
    return True


def _labels(obj: Mapping[str, Any] | None) -> Mapping[str, str]:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


@attrs.define
class _Event:
    rv: int
    path: str
    type: str
    object: dict[str, Any]
    old: dict[str, Any] | None = None  # the object before (MODIFIED), for selectors


class StandIn:
    """The stand-in server. ``with StandIn() as api:`` starts it; ``api.url`` is
    its address, ``api.kubeconfig(dir)`` writes a kubeconfig pointing at it."""

    def __init__(self, first_rv: int = 1000) -> None:
        self.cond = threading.Condition()
        self.rv = first_rv
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {
            p: {} for p in COLLECTIONS
        }
        self.events: list[_Event] = []
        self.compacted = 0  # watches from before this resourceVersion are gone
        self.gone_as_http = False  # 410 as an HTTP status, not an ERROR event
        self.list_gone = 0  # how many next lists answer 410
        self.generation = 0  # bumped by drop(): streams of older ones end abruptly
        self.requests: list[str] = []  # every request line (path?query)
        self.watching = 0  # watch streams open now
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- life ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> StandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self.cond:
            self.generation += 1
            self.cond.notify_all()
        self._server.shutdown()
        self._server.server_close()

    def kubeconfig(self, directory: str) -> str:
        """A kubeconfig file for this server (plain HTTP, a token), its path."""
        path = f"{directory}/kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "svcnet", "user": {"token": "standin-token"}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "svcnet"}}],
            "current-context": "standin",
        }
        with open(path, "w") as f:
            json.dump(config, f)
        return path

    # -- changes -------------------------------------------------------------------
    def put(self, *docs: Mapping[str, Any]) -> int:
        """Create or replace objects (whole API JSON with ``kind``); the new
        resourceVersion."""
        with self.cond:
            for doc in docs:
                path = _PATH_OF[doc["kind"]]
                obj = copy.deepcopy(dict(doc))
                self.rv += 1
                obj["metadata"]["resourceVersion"] = str(self.rv)
                key = _key(obj)
                old = self.objects[path].get(key)
                self.objects[path][key] = obj
                kind = "MODIFIED" if old is not None else "ADDED"
                self.events.append(_Event(self.rv, path, kind, obj, old))
            self.cond.notify_all()
            return self.rv

    def delete(self, kind: str, namespace: str, name: str) -> int:
        """Delete one object; the new resourceVersion."""
        path = _PATH_OF[kind]
        with self.cond:
            obj = self.objects[path].pop((namespace, name))
            self.rv += 1
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self.events.append(_Event(self.rv, path, "DELETED", obj))
            self.cond.notify_all()
            return self.rv

    def inject(self, type_: str, doc: Mapping[str, Any], rv: int | None = None) -> None:
        """Send an event as given, out of order: ``doc`` keeps the resourceVersion
        ``rv`` (an older one, say) and the stored objects do not change."""
        with self.cond:
            self.rv += 1
            obj = copy.deepcopy(dict(doc))
            obj["metadata"]["resourceVersion"] = str(rv if rv is not None else self.rv)
            self.events.append(_Event(self.rv, _PATH_OF[doc["kind"]], type_, obj))
            self.cond.notify_all()

    def bookmark(self) -> None:
        """A BOOKMARK on every open watch that asked for them."""
        with self.cond:
            self.rv += 1
            for path, (kind, version) in COLLECTIONS.items():
                meta = {"resourceVersion": str(self.rv)}
                obj: dict[str, Any] = {"kind": kind, "apiVersion": version, "metadata": meta}
                self.events.append(_Event(self.rv, path, "BOOKMARK", obj))
            self.cond.notify_all()

    def compact(self) -> None:
        """Forget the history: a watch from before now gets 410 Gone."""
        with self.cond:
            self.compacted = self.rv
            self.events = []

    def expire_next_list(self, count: int = 1) -> None:
        with self.cond:
            self.list_gone = count

    def drop(self) -> None:
        """Cut every open watch connection (no final chunk: a dropped connection)."""
        with self.cond:
            self.generation += 1
            self.cond.notify_all()

    def wait_watching(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until ``count`` watch streams are open (False on timeout)."""
        with self.cond:
            return self.cond.wait_for(lambda: self.watching >= count, timeout)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _handler(api: StandIn) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _json(self, code: int, body: Mapping[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            api.requests.append(self.path)
            if url.path not in COLLECTIONS:
                self._json(404, _status(404, "NotFound", f"the server could not find {url.path}"))
                return
            if query.get("watch") in ("1", "true"):
                self._watch(url.path, query)
            else:
                self._list(url.path, query)

        def _list(self, path: str, query: Mapping[str, str]) -> None:
            kind, version = COLLECTIONS[path]
            with api.cond:
                if api.list_gone:
                    api.list_gone -= 1
                    self._json(
                        410, _status(410, "Expired", "The provided continue parameter is too old")
                    )
                    return
                selector = query.get("labelSelector", "")
                items = [
                    copy.deepcopy(o)
                    for _, o in sorted(api.objects[path].items())
                    if _selector_matches(selector, _labels(o))
                ]
                rv = api.rv
            for item in items:  # a list's items carry no kind or apiVersion
                item.pop("kind", None)
                item.pop("apiVersion", None)
            start = int(query.get("continue") or 0)
            limit = int(query.get("limit") or 0) or len(items) or 1
            page = items[start : start + limit]
            meta: dict[str, Any] = {"resourceVersion": str(rv)}
            if start + limit < len(items):
                meta["continue"] = str(start + limit)
            self._json(
                200, {"kind": kind + "List", "apiVersion": version, "metadata": meta, "items": page}
            )

        def _watch(self, path: str, query: Mapping[str, str]) -> None:
            since = int(query.get("resourceVersion") or 0)
            selector = query.get("labelSelector", "")
            bookmarks = query.get("allowWatchBookmarks") == "true"
            with api.cond:
                gone = since < api.compacted
                generation = api.generation
            if gone and api.gone_as_http:
                self._json(410, _status(410, "Expired", f"too old resource version: {since}"))
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if gone:
                error = _status(
                    410, "Expired", f"too old resource version: {since} ({api.compacted})"
                )
                self._chunk({"type": "ERROR", "object": error})
                self._end()
                return
            timeout = float(query.get("timeoutSeconds") or 3600)
            with api.cond:
                api.watching += 1
                api.cond.notify_all()
            try:
                self._follow(path, since, selector, bookmarks, generation, timeout)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                with api.cond:
                    api.watching -= 1

        def _follow(
            self,
            path: str,
            since: int,
            selector: str,
            bookmarks: bool,
            generation: int,
            timeout: float,
        ) -> None:
            sent = since
            deadline = threading.Event()
            timer = threading.Timer(timeout, deadline.set)
            timer.start()
            try:
                while True:
                    with api.cond:
                        api.cond.wait_for(
                            lambda sent=sent: (  # type: ignore[misc]
                                api.generation != generation
                                or deadline.is_set()
                                or any(e.rv > sent for e in api.events)
                            ),
                            0.2,
                        )
                        if api.generation != generation:
                            self.connection.shutdown(socket.SHUT_RDWR)  # dropped mid-stream
                            return
                        if deadline.is_set():
                            break
                        new = [e for e in api.events if e.rv > sent]
                    for e in new:
                        sent = e.rv
                        line = self._event(e, path, selector, bookmarks)
                        if line is not None:
                            self._chunk(line)
                self._end()
            finally:
                timer.cancel()

        def _event(
            self, e: _Event, path: str, selector: str, bookmarks: bool
        ) -> dict[str, Any] | None:
            if e.path != path:
                return None
            if e.type == "BOOKMARK":
                return {"type": "BOOKMARK", "object": e.object} if bookmarks else None
            now = _selector_matches(selector, _labels(e.object))
            before = e.old is not None and _selector_matches(selector, _labels(e.old))
            kind = e.type
            if kind == "MODIFIED" and now and not before:
                kind = "ADDED"
            elif kind == "MODIFIED" and before and not now:
                kind = "DELETED"
            elif not now:
                return None
            return {"type": kind, "object": e.object}

        def _chunk(self, event: Mapping[str, Any]) -> None:
            data = json.dumps(event).encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _end(self) -> None:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler


def service_json(
    name: str,
    cluster_ip: str,
    ports: Iterable[Mapping[str, Any]],
    namespace: str = "default",
    labels: Mapping[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A Service as the API server returns it."""
    doc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
        "spec": {
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "ipFamilies": ["IPv6" if ":" in cluster_ip else "IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster",
            "sessionAffinity": "None",
            "type": "ClusterIP",
            "ports": [dict(p) for p in ports],
            **spec,
        },
        "status": {"loadBalancer": {}},
    }
    return realistic(doc)


def slice_json(
    service: Mapping[str, Any],
    suffix: str,
    endpoints: Iterable[Mapping[str, Any]],
    ports: Iterable[Mapping[str, Any]],
    address_type: str = "IPv4",
) -> dict[str, Any]:
    """An EndpointSlice of ``service`` as the EndpointSlice controller writes it."""
    name = service["metadata"]["name"]
    doc = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-{suffix}",
            "namespace": service["metadata"].get("namespace", "default"),
            "labels": {
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": address_type,
        "endpoints": [dict(e) for e in endpoints],
        "ports": [dict(p) for p in ports],
    }
    return realistic(doc, owner=service)


def node_json(name: str, address: str, pod_cidr: str, zone: str = "") -> dict[str, Any]:
    """A Node as the API server returns it."""
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    if zone:
        labels["topology.kubernetes.io/zone"] = zone
    doc = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": address},
                {"type": "Hostname", "address": name},
            ]
        },
    }
    return realistic(doc)


def endpoint_json(ip: str, node: str = "", ready: bool = True, **more: Any) -> dict[str, Any]:
    """One endpoint of a slice, with its conditions and a targetRef."""
    out: dict[str, Any] = {
        "addresses": [ip],
        "conditions": {"ready": ready, "serving": ready, "terminating": False},
        "targetRef": {"kind": "Pod", "namespace": "default", "name": f"pod-{ip.replace('.', '-')}"},
    }
    if node:
        out["nodeName"] = node
    out.update(more)
    return out


def api_objects(state: ClusterState) -> list[dict[str, Any]]:
    """The state as an API server holds it: nodes, services (with svcnet's
    allocations as the API server's) and, per service and family, EndpointSlices
    grouping the endpoints that share their port numbers."""
    out = [realistic(to_manifest(node)) for node in state.nodes.values()]
    for (ns, name), svc in sorted(state.services.items()):
        service = realistic(to_manifest(svc))
        out.append(service)
        # per address: its endpoint and its port numbers by port name
        by_ip: dict[str, tuple[Any, dict[str, int]]] = {}
        for port_name, eps in state.service_endpoints(ns, name).items():
            for e in eps:
                by_ip.setdefault(e.ip, (e, {}))[1][port_name] = e.port
        groups: dict[tuple[IPFamily, tuple[tuple[str, int], ...]], list[Any]] = defaultdict(list)
        for ip, (e, numbers) in sorted(by_ip.items()):
            groups[(ip_family(ip), tuple(sorted(numbers.items())))].append(e)
        protocols = {p.name: p.protocol.value for p in svc.ports}
        # topology hints as the EndpointSlice controller writes them for a
        # trafficDistribution: each endpoint's own zone when every ready one has a
        # zone; PreferSameNode adds each endpoint's own node
        ready = [e for e, _ in by_ip.values() if e.ready]
        dist = svc.traffic_distribution
        zone_hints = dist is not None and bool(ready) and all(e.zone for e in ready)
        node_hints = dist is TrafficDistribution.PREFER_SAME_NODE
        for i, ((family, ports), members) in enumerate(sorted(groups.items(), key=str)):
            endpoints = []
            for e in members:
                ep: dict[str, Any] = {
                    "addresses": [e.ip],
                    "conditions": {
                        "ready": e.ready,
                        "serving": e.serving,
                        "terminating": e.terminating,
                    },
                }
                if e.node_name:
                    ep["nodeName"] = e.node_name
                if e.zone:
                    ep["zone"] = e.zone
                if e.pod:
                    ep["targetRef"] = {"kind": "Pod", "namespace": ns, "name": e.pod}
                hints: dict[str, Any] = {}
                if zone_hints and e.zone:
                    hints["forZones"] = [{"name": e.zone}]
                if node_hints and e.node_name:
                    hints["forNodes"] = [{"name": e.node_name}]
                if hints:
                    ep["hints"] = hints
                endpoints.append(ep)
            doc = {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name}-{family.value.lower()}{i}",
                    "namespace": ns,
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": family.value,
                "endpoints": endpoints,
                "ports": [
                    {"name": p, "port": n, "protocol": protocols.get(p, "TCP")} for p, n in ports
                ],
            }
            out.append(realistic(doc, owner=service))
    return out
