"""The node agent's duties around the rules (I/O): kube-proxy's node duties.

:class:`NodeDuties` is what :class:`~svcnet.agent.loop.Agent` calls at each step
of its life, and owns everything beyond installing the plan:

* **UDP conntrack cleanup** (:mod:`svcnet.agent.conntrack`) after each sync that
  changed a UDP port (and after every full sync): flows to a UDP frontend whose
  reply source is not a serving endpoint any more are deleted, so a UDP client's
  next datagram is load-balanced afresh instead of following a dead pod;
* **the agent's health** (:class:`~svcnet.agent.health.NodeHealth`): a change
  queued and not synced within ``health_timeout`` (kube-proxy: 2 x the sync
  period) makes ``/healthz`` and ``/livez`` answer 503; a node absent from the
  state (being deleted) makes ``/healthz`` 503;
* **health-check node ports** (:class:`~svcnet.agent.health.HealthCheckPorts`)
  of LoadBalancer services with ``externalTrafficPolicy: Local``, opened and closed
  as services come and go, answering from the node's local ready endpoints;
* **metrics** (:class:`~svcnet.agent.metrics.AgentMetrics`): a per-agent
  Prometheus registry, served on ``/metrics``;
* the HTTP servers of ``/healthz``, ``/livez`` and ``/metrics``, bound inside the
  backend's network namespace.

A duty that fails (a flow that cannot be deleted, a port that cannot be bound) is
logged and never fails the sync: the rules are installed and stay so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from svcnet.agent.health import (
    HealthCheckPorts,
    HealthCheckTracker,
    HTTPEndpoint,
    NodeHealth,
    health_routes,
    parse_address,
)
from svcnet.agent.metrics import AgentMetrics
from svcnet.backend import Backend
from svcnet.model import Protocol
from svcnet.plan import Changes, Plan
from svcnet.plan.types import ServicePlan
from svcnet.state import ClusterState
from svcnet.store import Change

__all__ = ["NodeDuties", "udp_touched"]


def _has_udp(svc: ServicePlan | None) -> bool:
    return svc is not None and any(p.protocol is Protocol.UDP for p in svc.ports)


def udp_touched(old: Plan | None, changes: Changes | None) -> bool:
    """Could ``changes`` (applied to ``old``) have changed what a UDP frontend
    serves? ``None`` (a full sync) always could."""
    if old is None or changes is None or changes.settings_changed:
        return True
    before = (*(svc.ref for svc in changes.replaced), *changes.removed)
    return any(_has_udp(svc) for svc in (*changes.added, *changes.replaced)) or any(
        _has_udp(old.services.get(ref)) for ref in before
    )


class NodeDuties:
    """The duties of one agent (see the module docstring). ``conntrack``: clean UDP
    flows; ``health_check_ports``: serve healthCheckNodePorts; ``healthz_address``
    and ``metrics_address`` (``host:port``; ``None``: no server; the same address
    twice: one server with every path) are bound in the backend's namespace."""

    def __init__(
        self,
        backend: Backend,
        node: str,
        *,
        health_timeout: float,
        conntrack: bool,
        health_check_ports: bool,
        healthz_address: str | None = None,
        metrics_address: str | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        self.backend = backend
        self.node = node
        self.clock = clock
        self.log = logger or logging.getLogger("svcnet.agent")
        self.health = NodeHealth(health_timeout, monotonic=monotonic, clock=clock)
        self.metrics = AgentMetrics(backend.name, node)
        self.conntrack = conntrack
        self.conntrack_deleted = 0  # flows deleted since the start
        self.conntrack_errors = 0
        self._cleaner: Any = None  # ConntrackCleaner, opened at start()
        self._ports = (
            HealthCheckPorts(backend.netns, self.health, logger=self.log)
            if (health_check_ports)
            else None
        )
        self._checks = HealthCheckTracker(node)  # recounts only the services changed
        self._addresses = (healthz_address, metrics_address)
        self._servers: list[HTTPEndpoint] = []
        self._bound: dict[str, list[str]] = {}  # "host:port" as bound -> its paths

    # -- life ------------------------------------------------------------------------
    def start(self) -> None:
        """Open the conntrack socket and the HTTP servers (before the first list:
        ``/healthz`` answers from the start, as kube-proxy's does)."""
        netns = self.backend.netns
        if self.conntrack:
            from svcnet.agent.conntrack import ConntrackCleaner

            self._cleaner = ConntrackCleaner(netns)
        health = health_routes(self.health, on_request=self.metrics.request)
        healthz, metrics = self._addresses
        routes: dict[str, dict[str, Callable[[], tuple[int, str, bytes]]]] = {}
        if healthz:
            routes.setdefault(healthz, {}).update(health)
        if metrics:
            routes.setdefault(metrics, {})["/metrics"] = self.metrics.render
        try:
            for address, paths in routes.items():
                server = HTTPEndpoint(netns, address, paths)
                server.start()
                self._servers.append(server)
                host = parse_address(address)[0]
                bound = f"[{host}]:{server.port}" if ":" in host else f"{host}:{server.port}"
                self._bound[bound] = sorted(paths)
                self.log.info("node %s: serving %s on %s", self.node, ", ".join(paths), bound)
        except BaseException:
            self.close()
            raise
        self.health.queued()  # the first list and sync are pending until done

    def close(self) -> None:
        for server in self._servers:
            server.close()
        self._servers.clear()
        self._bound.clear()
        if self._ports is not None:
            self._ports.close()
        if self._cleaner is not None:
            self._cleaner.close()
            self._cleaner = None

    @property
    def addresses(self) -> dict[str, list[str]]:
        """``host:port`` of each HTTP server, as bound (a ``:0`` port resolved) ->
        the paths it serves."""
        return {address: list(paths) for address, paths in self._bound.items()}

    # -- the watcher's events --------------------------------------------------------
    def queued(self, change: Change) -> None:
        """A change was folded into the state (it waits for the next sync)."""
        self.health.queued()
        key = change.key
        kind = key.kind.value if key is not None else "ClusterConfig"
        self.metrics.change_queued(kind, change.time if change.time is not None else self.clock())

    def relisted(self) -> None:
        self.health.queued()

    # -- the syncer's events ---------------------------------------------------------
    def synced(
        self,
        *,
        state: ClusterState,
        old: Plan | None,
        plan: Plan,
        changes: Changes | None,
        full: bool,
        duration: float,
        latencies: Iterable[float],
        fell_back: bool,
    ) -> None:
        """A sync installed ``plan`` (``changes`` from ``old``; ``None``: in full)."""
        self.health.synced()
        self.health.set_node_eligible(self.node in state.nodes)
        self.metrics.sync_done(
            full=full,
            duration=duration,
            latencies=latencies,
            plan=plan,
            fell_back=fell_back,
            when=self.clock(),
        )
        if self._cleaner is not None and (full or udp_touched(old, changes)):
            start = time.monotonic()
            try:
                deleted = self._cleaner.clean(old, plan)
            except Exception as e:  # the rules are in; the next sync tries again
                self.conntrack_errors += 1
                self.log.error("node %s: conntrack cleanup failed: %s", self.node, e)
            else:
                self.conntrack_deleted += deleted
                self.metrics.conntrack_cleaned(deleted, time.monotonic() - start)
                if deleted:
                    self.log.info("node %s: deleted %d stale UDP flows", self.node, deleted)
        if self._ports is not None:  # every sync: a local endpoint that turned
            # terminating changes the count and may leave the plan as it was
            self._ports.update(self._checks(state))

    def failed(self) -> None:
        self.metrics.sync_failed()

    def skipped(self) -> None:
        self.metrics.resync_skipped()

    # -- status ----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The status file's ``health`` part (see docs/reference/agent.md)."""
        code, _ = self.health.healthz()
        return {
            "healthy": self.health.healthy,
            "healthz": code,
            "health_check_ports": sorted(self._ports.ports) if self._ports is not None else [],
            "health_check_ports_failed": (
                {str(port): why for port, why in self._ports.failed.items()}
                if self._ports is not None
                else {}
            ),
            "conntrack_deleted": self.conntrack_deleted,
            "conntrack_errors": self.conntrack_errors,
            "servers": {address: list(paths) for address, paths in self._bound.items()},
        }
