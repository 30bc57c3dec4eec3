"""The agent's health and the health-check node ports (I/O), as kube-proxy keeps them.

SEMANTICS.md "Around the rules"; the answers, word for word, are in
``docs/reference/health.md``.

* :class:`NodeHealth` -- the agent's health, kept like kube-proxy's
  ``ProxyHealthServer``: the watcher calls :meth:`~NodeHealth.queued` when a change
  arrives (it notes the *oldest* change waiting), the syncer
  :meth:`~NodeHealth.synced` after each successful sync (nothing waits any more).
  The agent is healthy while no change has waited ``timeout`` seconds or longer
  (kube-proxy: twice ``--sync-period``), whether or not a sync ever succeeded: a
  first sync that keeps failing turns it unhealthy too. ``/healthz`` also answers
  503 while the node is not eligible (svcnet: its Node object is absent from the
  state -- kube-proxy: deleted, or tainted ``ToBeDeletedByClusterAutoscaler``);
  ``/livez`` ignores that.
* :func:`health_checks` (pure) -- the health-check node ports this node serves: one
  per proxied LoadBalancer service with ``externalTrafficPolicy: Local`` and a
  ``healthCheckNodePort``, with its count of local *ready* endpoints;
  :class:`HealthCheckTracker` keeps the same answer from state to state, looking
  only at the services that changed.
* :class:`HealthCheckPorts` -- one HTTP listener per such port in the node's
  namespace: 200 when the service has local ready endpoints **and** the agent is
  healthy, else 503; any path; ``update()`` opens, closes and recounts.
* :class:`HTTPEndpoint`, :func:`health_routes`, :func:`parse_address` -- the agent's
  own ``/healthz`` and ``/livez`` (and whatever else the agent routes there, its
  ``/metrics``) on its health address (kube-proxy: ``0.0.0.0:10256``).
"""

from __future__ import annotations

import datetime
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from svcnet.agent.httpserve import (
    AddressError,
    HTTPEndpoint,
    Listeners,
    Response,
    Route,
    bind,
    parse_address,
)
from svcnet.model import IPFamily, Service, ServiceType, TrafficPolicy, ip_family
from svcnet.plan.types import ServiceRef
from svcnet.state import ClusterState

__all__ = [
    "HEALTH_ADDRESS",
    "JSON",
    "AddressError",
    "HTTPEndpoint",
    "HealthCheck",
    "HealthCheckPorts",
    "HealthCheckTracker",
    "NodeHealth",
    "Route",
    "health_checks",
    "health_routes",
    "parse_address",
]

LOGGER = "svcnet.agent.health"
HEALTH_ADDRESS = "0.0.0.0:10256"  # kube-proxy's --healthz-bind-address default
JSON = "application/json"
WEIGHT_HEADER = "X-Load-Balancing-Endpoint-Weight"


def _timestamp(t: float) -> str:
    """A wall-clock time as RFC 3339 UTC with microseconds (``...T20:16:28.123456Z``)."""
    return (
        datetime.datetime.fromtimestamp(t, datetime.UTC)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z")
    )


class NodeHealth:
    """The agent's health (thread-safe): kube-proxy's ``ProxyHealthServer`` state.

    ``timeout`` is kube-proxy's health timeout, twice the sync period. ``monotonic``
    measures how long a change has waited; ``clock`` (wall time) only stamps the
    JSON answers."""

    def __init__(
        self,
        timeout: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"NodeHealth timeout must be > 0 s, got {timeout!r}")
        self.timeout = timeout
        self._monotonic = monotonic
        self._clock = clock
        self._lock = threading.Lock()
        self._oldest_pending: float | None = None  # monotonic time of the oldest change waiting
        self._last_updated: float | None = None  # wall time of the last successful sync
        self._node_eligible = True  # eligible while starting up, as kube-proxy

    def queued(self) -> None:
        """A change was queued: it is the oldest waiting unless one already waits."""
        with self._lock:
            if self._oldest_pending is None:
                self._oldest_pending = self._monotonic()

    def synced(self) -> None:
        """A sync succeeded: nothing waits; it is the last update."""
        with self._lock:
            self._oldest_pending = None
            self._last_updated = self._clock()

    def set_node_eligible(self, eligible: bool) -> None:
        """False while the node is being deleted (its Node object is absent)."""
        with self._lock:
            self._node_eligible = bool(eligible)

    @property
    def node_eligible(self) -> bool:
        with self._lock:
            return self._node_eligible

    @property
    def last_updated(self) -> float | None:
        """Wall time of the last successful sync (None before the first)."""
        with self._lock:
            return self._last_updated

    @property
    def pending_for(self) -> float | None:
        """Seconds the oldest waiting change has waited (None: nothing waits)."""
        with self._lock:
            if self._oldest_pending is None:
                return None
            return max(0.0, self._monotonic() - self._oldest_pending)

    def _healthy(self) -> bool:
        if self._oldest_pending is None:
            return True  # starting up, or fully synced
        return self._monotonic() - self._oldest_pending < self.timeout

    @property
    def healthy(self) -> bool:
        """No change has waited ``timeout`` or longer (node eligibility ignored)."""
        with self._lock:
            return self._healthy()

    def _answer(self, with_node: bool) -> tuple[int, dict[str, Any]]:
        with self._lock:
            healthy = self._healthy()
            eligible = self._node_eligible
            last = self._last_updated
        now = self._clock()
        if with_node:
            healthy = healthy and eligible
        # as kube-proxy: a healthy answer says lastUpdated = now (older releases
        # updated it on every sync loop); an unhealthy one the last real update
        body: dict[str, Any] = {
            "lastUpdated": _timestamp(now) if healthy else (_timestamp(last) if last else None),
            "currentTime": _timestamp(now),
        }
        if with_node:
            body["nodeEligible"] = eligible
        return (200 if healthy else 503), body

    def healthz(self) -> tuple[int, dict[str, Any]]:
        """``/healthz``: 200 when healthy and the node eligible, else 503; body
        ``{"lastUpdated", "currentTime", "nodeEligible"}``."""
        return self._answer(True)

    def livez(self) -> tuple[int, dict[str, Any]]:
        """``/livez``: 200 when healthy (node eligibility ignored), else 503; body
        ``{"lastUpdated", "currentTime"}``."""
        return self._answer(False)


def health_routes(
    health: NodeHealth, on_request: Callable[[str, int], None] | None = None
) -> dict[str, Route]:
    """``/healthz`` and ``/livez`` for :class:`HTTPEndpoint` (JSON bodies);
    ``on_request(path, status)`` is called for each answer (the agent's metrics)."""

    def route(path: str, answer: Callable[[], tuple[int, dict[str, Any]]]) -> Route:
        def serve() -> tuple[int, str, bytes]:
            status, body = answer()
            if on_request is not None:
                on_request(path, status)
            return status, JSON, json.dumps(body).encode()

        return serve

    return {"/healthz": route("/healthz", health.healthz), "/livez": route("/livez", health.livez)}


# -- health-check node ports ---------------------------------------------------------


@attrs.frozen
class HealthCheck:
    """One health-check node port: the service, the port, and how many local ready
    endpoints the service has on this node."""

    ref: ServiceRef
    port: int
    local_endpoints: int


def _check(state: ClusterState, svc: Service, node: str) -> HealthCheck | None:
    """The health check of one service on ``node`` (None: it has none)."""
    port = svc.health_check_node_port
    if (
        not port
        or svc.type is not ServiceType.LOAD_BALANCER
        or svc.external_traffic_policy is not TrafficPolicy.LOCAL
        or not svc.proxied
    ):
        return None
    local: dict[IPFamily, set[str]] = {}
    for endpoints in state.service_endpoints(svc.namespace, svc.name).values():
        for ep in endpoints:
            if ep.ready and ep.node_name == node:
                local.setdefault(ip_family(ep.ip), set()).add(ep.ip)
    count = max((len(ips) for ips in local.values()), default=0)
    return HealthCheck(ServiceRef(svc.namespace, svc.name), port, count)


def _sorted(checks: Iterable[HealthCheck]) -> tuple[HealthCheck, ...]:
    return tuple(sorted(checks, key=lambda c: (c.port, c.ref.namespace, c.ref.name)))


def health_checks(state: ClusterState, node: str) -> tuple[HealthCheck, ...]:
    """The health-check node ports of ``node`` (pure), sorted by port: every proxied
    LoadBalancer service with ``externalTrafficPolicy: Local`` and a
    ``healthCheckNodePort``. ``local_endpoints`` counts the distinct addresses of the
    service's endpoints on ``node`` that are *ready* (terminating and not-ready ones
    do not count; ``publishNotReadyAddresses`` makes them ready, as for the rules),
    over all its ports, per IP family, the larger family's count (kube-proxy counts
    per family's proxier: a dual-stack pod counts once).

    It looks at every service (about 10 ms at 10,000 services, most of it walking
    the state's map); :class:`HealthCheckTracker` gives the same answer from state
    to state looking only at the services that changed."""
    found = (_check(state, svc, node) for svc in state.services.values())
    return _sorted(c for c in found if c is not None)


class HealthCheckTracker:
    """``health_checks(state, node)`` kept from one state to the next (pure, not
    thread-safe): called with each state the agent syncs, it recounts only the
    services ``state.changed_since`` names when ``state`` descends from the last
    one, and everything otherwise (a new listing, a configuration change, the log
    too short)."""

    def __init__(self, node: str) -> None:
        self.node = node
        self._state: ClusterState | None = None
        self._by_key: dict[tuple[str, str], HealthCheck] = {}
        self._result: tuple[HealthCheck, ...] = ()
        self.full_recounts = 0  # how many calls looked at every service

    def __call__(self, state: ClusterState) -> tuple[HealthCheck, ...]:
        old, self._state = self._state, state
        if old is state:
            return self._result
        touched = None
        if old is not None and state.objects_changed_since(old) is not None:
            touched = state.changed_since(old.revision)
        if touched is None or touched.config:
            self.full_recounts += 1
            self._by_key = {
                (c.ref.namespace, c.ref.name): c for c in health_checks(state, self.node)
            }
            self._result = _sorted(self._by_key.values())
            return self._result
        changed = False
        for key in touched.services:
            svc = state.services.get(key)
            check = _check(state, svc, self.node) if svc is not None else None
            if check is None:
                changed = self._by_key.pop(key, None) is not None or changed
            elif self._by_key.get(key) != check:
                self._by_key[key] = check
                changed = True
        if changed:
            self._result = _sorted(self._by_key.values())
        return self._result


class HealthCheckPorts:
    """One HTTP listener per health-check node port, on every address of ``netns``
    (IPv4 and IPv6). Thread-safe.

    Each answers any path: 200 when its service has local ready endpoints and
    ``health.healthy``, else 503; a JSON body ``{"service": {"namespace", "name"},
    "localEndpoints": N, "serviceProxyHealthy": bool}`` and the header
    ``X-Load-Balancing-Endpoint-Weight: N``. :meth:`update` opens the new ports,
    closes those gone and takes the new counts; a port that cannot be bound is
    logged (see :attr:`failed`) and tried again at the next update, never raised."""

    def __init__(
        self, netns: str | None, health: NodeHealth, *, logger: logging.Logger | None = None
    ) -> None:
        self.netns = netns
        self.health = health
        self.logger = logger or logging.getLogger(LOGGER)
        self._lock = threading.Lock()  # the tables below
        self._update_lock = threading.Lock()  # one update at a time
        self._wanted: dict[int, HealthCheck] = {}
        self._open: dict[int, socket.socket] = {}
        self._failed: dict[int, str] = {}
        self._listeners = Listeners("svcnet-hc", logger=self.logger)
        self._closed = False

    @property
    def ports(self) -> dict[int, HealthCheck]:
        """The ports being served now, with their checks."""
        with self._lock:
            return {p: self._wanted[p] for p in sorted(self._open) if p in self._wanted}

    @property
    def failed(self) -> dict[int, str]:
        """The ports wanted but not bound at the last update, with why."""
        with self._lock:
            return dict(self._failed)

    def update(self, checks: Iterable[HealthCheck]) -> None:
        """Serve exactly ``checks``: open new ports, close ports gone, new counts."""
        wanted: dict[int, HealthCheck] = {}
        for check in checks:
            if check.port in wanted:  # the allocator prevents it; keep the first
                self.logger.warning(
                    "healthCheckNodePort %d of %s already serves %s; ignored",
                    check.port,
                    check.ref,
                    wanted[check.port].ref,
                )
                continue
            wanted[check.port] = check
        with self._update_lock:
            if self._closed:
                return
            with self._lock:
                gone = [p for p in self._open if p not in wanted]
                closing = [self._open.pop(p) for p in gone]
                self._wanted = wanted
                self._failed = {p: why for p, why in self._failed.items() if p in wanted}
                todo = sorted(p for p in wanted if p not in self._open)
            for port, sock in zip(gone, closing, strict=True):
                self._listeners.remove(sock)
                self.logger.info("closed health check port %d", port)
            if todo:
                self._open_ports(todo)

    def _open_ports(self, todo: list[int]) -> None:
        try:
            got = bind(self.netns, [("", p) for p in todo])
        except Exception as e:  # the namespace is gone: every port fails this time
            got = [OSError(str(e))] * len(todo)
        for port, result in zip(todo, got, strict=True):
            if isinstance(result, OSError):
                why = result.strerror or str(result)
                with self._lock:
                    seen = self._failed.get(port)
                    self._failed[port] = why
                    ref = self._wanted[port].ref if port in self._wanted else None
                log = self.logger.debug if seen == why else self.logger.warning
                log("cannot open health check port %d for %s: %s (retried)", port, ref, why)
                continue
            with self._lock:
                self._open[port] = result
                self._failed.pop(port, None)
            self._listeners.add(result, self._handler(port))
            self.logger.info("opened health check port %d", port)

    def _handler(self, port: int) -> Callable[[str], Response]:
        def answer(path: str) -> Response:
            with self._lock:
                check = self._wanted.get(port)
            if check is None:  # closing
                return Response(503, JSON, b"{}")
            return self.answer(check)

        return answer

    def answer(self, check: HealthCheck) -> Response:
        """The answer of ``check``'s port now."""
        healthy = self.health.healthy
        count = check.local_endpoints
        body = {
            "service": {"namespace": check.ref.namespace, "name": check.ref.name},
            "localEndpoints": count,
            "serviceProxyHealthy": healthy,
        }
        return Response(
            200 if count > 0 and healthy else 503,
            JSON,
            json.dumps(body).encode(),
            ((WEIGHT_HEADER, str(count)),),
        )

    def close(self) -> None:
        """Close every port."""
        with self._update_lock:
            self._closed = True
            with self._lock:
                self._open.clear()
                self._wanted = {}
                self._failed.clear()
            self._listeners.close()
