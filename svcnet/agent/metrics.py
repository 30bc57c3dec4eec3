"""The node agent's Prometheus metrics (I/O layer): what ``/metrics`` serves.

One :class:`AgentMetrics` per agent, with its own
:class:`~prometheus_client.CollectorRegistry` (never the process-wide default one:
several agents may live in one process, a test or an embedding program, and each
must count only its own). Every method is thread-safe: the agent's watcher thread
calls :meth:`AgentMetrics.change_queued`, its syncer the sync methods, an HTTP
server thread :meth:`AgentMetrics.request` and :meth:`AgentMetrics.render`.

The metrics are named after kube-proxy's (``pkg/proxy/metrics/metrics.go``,
Kubernetes 1.31-1.33) wherever kube-proxy has one, with its type and its
histogram buckets, so that dashboards and alerts written for kube-proxy read an
svcnet agent too. Two differences, both deliberate:

* no ``ip_family`` label (kube-proxy 1.33 added one because it runs one proxier
  per IP family; an svcnet sync installs both families in one transaction, so
  there is one duration, not one per family);
* no ``_created`` series in the exposition (kube-proxy's Go client has none).

What svcnet has and kube-proxy does not is prefixed ``svcnet_``. The plan-derived
gauges (``svcnet_programmed_objects``,
``kubeproxy_sync_proxy_rules_no_local_endpoints_total``) are computed when the
registry is collected (a scrape), not in the syncing thread: a sync only hands
over its plan. docs/reference/metrics.md lists every metric.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from svcnet.errors import SvcnetError
from svcnet.model import Kind
from svcnet.plan.types import Action, EndpointSet, Plan, PortPlan, Route, ServicePlan, ServiceRef

__all__ = [
    "BACKEND_FAILURES",
    "CONTENT_TYPE",
    "NETWORK_PROGRAMMING_BUCKETS",
    "OBJECT_KINDS",
    "SYNC_BUCKETS",
    "AgentMetrics",
    "plan_counts",
]

# What generate_latest() writes: the classic text format, names escaped to the
# legacy character set. (prometheus_client 0.26's CONTENT_TYPE_LATEST names
# version 1.0.0, the UTF-8 names variant; its own HTTP exposition serves
# generate_latest() as 0.0.4, as here.)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# kube-proxy's buckets. Sync and conntrack durations: ExponentialBuckets(0.001, 2,
# 15), 1 ms to 16.384 s. Network programming: MergeBuckets(...) of 0.25 s, 0.5 s;
# 1..59 s by 1; 60..115 s by 5; 120..300 s by 30 -- with the leading 0 that
# component-base's MergeBuckets puts first.
SYNC_BUCKETS: tuple[float, ...] = tuple(0.001 * 2**i for i in range(15))
NETWORK_PROGRAMMING_BUCKETS: tuple[float, ...] = (
    0.0,
    0.25,
    0.5,
    *(float(s) for s in range(1, 60)),
    *(float(s) for s in range(60, 120, 5)),
    *(float(s) for s in range(120, 301, 30)),
)

# The backend's own sync-failure counter in kube-proxy, by backend name; any
# backend has svcnet_sync_failures_total as well.
BACKEND_FAILURES: Mapping[str, tuple[str, str]] = {
    "iptables": (
        "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
        "Cumulative proxy iptables restore failures",
    ),
    "nftables": (
        "kubeproxy_sync_proxy_rules_nftables_sync_failures_total",
        "Cumulative proxy nftables sync failures",
    ),
}

# svcnet_programmed_objects{kind}: what the installed plan holds
OBJECT_KINDS = ("services", "service_ports", "frontends", "endpoints")

# store object kinds -> which kube-proxy change counter they move
_SERVICE_KINDS = frozenset({Kind.SERVICE.value})
_ENDPOINT_KINDS = frozenset({Kind.POD.value, Kind.ENDPOINT_SLICE.value})
_KNOWN_KINDS = frozenset(k.value for k in Kind)
_PROBES = ("/healthz", "/livez")
_CODES = ("200", "503")  # children made at start, so the series exist before a probe


def _lacks_local(route: Route) -> bool:
    """On a port with no local endpoint: the route needed one. The compiler writes
    DROP for a Local policy whose endpoints are all on other nodes (no endpoint
    at all is REJECT); a FORWARD to the (empty) local set means the same."""
    action = route.action
    return action is Action.DROP or (
        action is Action.FORWARD and route.endpoints is EndpointSet.LOCAL
    )


def _port_counts(port: PortPlan) -> tuple[int, int, int, int]:
    """(frontends, endpoints, no local internal, no local external) of one port."""
    cluster, local = port.cluster_endpoints, port.local_endpoints
    if local:
        same = local is cluster
        endpoints = len(cluster) if same else len(set(cluster).union(local))
        return len(port.frontends), endpoints, 0, 0
    internal = (
        _lacks_local(port.internal_from_pod)
        or _lacks_local(port.internal_from_node)
        or _lacks_local(port.internal_from_external)
    )
    external = _lacks_local(port.external_from_external) and any(
        f.kind.external for f in port.frontends
    )
    return len(port.frontends), len(cluster), int(internal), int(external)


def _service_counts(svc: ServicePlan) -> tuple[int, int, int, int, int]:
    """(ports, frontends, endpoints, no local internal, no local external)."""
    ports = frontends = endpoints = internal = external = 0
    for port in svc.ports:
        f, e, i, x = _port_counts(port)
        ports += 1
        frontends += f
        endpoints += e
        internal += i
        external += x
    return ports, frontends, endpoints, internal, external


def plan_counts(plan: Plan | None) -> dict[str, int]:
    """The plan-derived gauge values of ``plan`` (None: nothing installed, all 0):
    ``services``, ``service_ports``, ``frontends``, ``endpoints`` (plan objects,
    not kernel rules) and ``no_local_internal`` / ``no_local_external``
    (kube-proxy's ``sync_proxy_rules_no_local_endpoints_total``: service ports
    whose Local traffic policy leaves them no endpoint on this node while other
    nodes have some; external only for ports with an external frontend)."""
    totals = [0, 0, 0, 0, 0]
    services = 0
    if plan is not None:
        for svc in plan.services.values():
            services += 1
            for i, n in enumerate(_service_counts(svc)):
                totals[i] += n
    ports, frontends, endpoints, internal, external = totals
    return {
        "services": services,
        "service_ports": ports,
        "frontends": frontends,
        "endpoints": endpoints,
        "no_local_internal": internal,
        "no_local_external": external,
    }


class _PlanCollector(Collector):
    """The gauges computed from the installed plan, at collection time.

    Per-service counts are memoised by the :class:`ServicePlan` object: a plan
    advanced by a few services is recounted for those only (plans share the
    untouched entries), so a scrape after a sync costs one pass over the plan's
    map comparing identities, and the syncing thread pays nothing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plan: Plan | None = None
        self._memo: dict[ServiceRef, tuple[ServicePlan, tuple[int, int, int, int, int]]] = {}
        self._totals = [0, 0, 0, 0, 0]  # the sums of the memo's counts
        self._counted: Plan | None = None
        self._counts = plan_counts(None)

    def set_plan(self, plan: Plan) -> None:
        with self._lock:
            self._plan = plan

    def counts(self) -> dict[str, int]:
        with self._lock:
            plan = self._plan
            if plan is not None and plan is not self._counted:
                self._recount(plan)
            return dict(self._counts)

    def _recount(self, plan: Plan) -> None:
        """Bring the totals to ``plan``: only the entries that are not the very
        objects counted before are counted (and the old counts taken off)."""
        services, memo, totals = plan.services, self._memo, self._totals
        for ref, svc in services.items():
            hit = memo.get(ref)
            if hit is not None:
                if hit[0] is svc:
                    continue
                for i, n in enumerate(hit[1]):
                    totals[i] -= n
            counts = _service_counts(svc)
            for i, n in enumerate(counts):
                totals[i] += n
            memo[ref] = (svc, counts)
        if len(memo) > len(services):  # services gone since
            for ref in [r for r in memo if r not in services]:
                for i, n in enumerate(memo.pop(ref)[1]):
                    totals[i] -= n
        self._counted = plan
        self._counts = {
            "services": len(services),
            "service_ports": totals[0],
            "frontends": totals[1],
            "endpoints": totals[2],
            "no_local_internal": totals[3],
            "no_local_external": totals[4],
        }

    def collect(self) -> Iterator[Metric]:
        counts = self.counts()
        objects = GaugeMetricFamily(
            "svcnet_programmed_objects",
            "Objects of the installed plan by kind (plan objects, not kernel rules)",
            labels=["kind"],
        )
        for kind in OBJECT_KINDS:
            objects.add_metric([kind], counts[kind])
        yield objects
        no_local = GaugeMetricFamily(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            labels=["traffic_policy"],
        )
        no_local.add_metric(["internal"], counts["no_local_internal"])
        no_local.add_metric(["external"], counts["no_local_external"])
        yield no_local


class _Exposed(Collector):
    """The registry as served: without the ``_created`` samples prometheus_client
    adds to counters and histograms (kube-proxy has none), without touching the
    library's process-wide switch for them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            created = family.name + "_created"
            if any(s.name == created for s in family.samples):
                family.samples = [s for s in family.samples if s.name != created]
            yield family


class AgentMetrics:
    """The Prometheus metrics of one agent (``backend``: its backend's name, which
    picks the backend's own failure counter; ``node``: its node).

    ``registry`` holds them all; :meth:`render` is the ``/metrics`` response and
    :meth:`value` reads one sample. docs/reference/metrics.md says what each
    metric counts and when it moves."""

    def __init__(self, backend: str, node: str) -> None:
        self.backend = backend
        self.node = node
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, buckets=buckets, registry=reg)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labelnames=labels, registry=reg)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labelnames=labels, registry=reg)

        # -- kube-proxy's
        self.sync_duration = histogram(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            SYNC_BUCKETS,
        )
        self.full_sync_duration = histogram(
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            SYNC_BUCKETS,
        )
        self.partial_sync_duration = histogram(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            SYNC_BUCKETS,
        )
        self.network_programming = histogram(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            NETWORK_PROGRAMMING_BUCKETS,
        )
        self.last_sync = gauge(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
        )
        self.last_queued = gauge(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
        )
        self.service_changes = counter(
            "kubeproxy_sync_proxy_rules_service_changes_total",
            "Cumulative proxy rules Service changes",
        )
        self.endpoint_changes = counter(
            "kubeproxy_sync_proxy_rules_endpoint_changes_total",
            "Cumulative proxy rules Endpoint changes",
        )
        self.backend_failures: Counter | None = None
        if backend in BACKEND_FAILURES:
            self.backend_failures = counter(*BACKEND_FAILURES[backend])
        self.healthz = counter(
            "kubeproxy_proxy_healthz_total", "Cumulative proxy healthz HTTP status", ("code",)
        )
        self.livez = counter(
            "kubeproxy_proxy_livez_total", "Cumulative proxy livez HTTP status", ("code",)
        )
        for code in _CODES:
            self.healthz.labels(code=code)
            self.livez.labels(code=code)
        self.conntrack_deleted = counter(
            "kubeproxy_conntrack_reconciler_deleted_entries_total",
            "Cumulative conntrack flows deleted by conntrack reconciler",
        )
        self.conntrack_duration = histogram(
            "kubeproxy_conntrack_reconciler_sync_duration_seconds",
            "ReconcileConntrackFlowsLatency latency in seconds",
            SYNC_BUCKETS,
        )
        # -- svcnet's
        self.sync_failures = counter(
            "svcnet_sync_failures_total",
            "Syncs that failed (any backend); the previous rules stay in place",
        )
        self.drift_resyncs = counter(
            "svcnet_drift_resyncs_total",
            "Incremental syncs the backend installed in full because it found its tables damaged",
        )
        self.resyncs_skipped = counter(
            "svcnet_resyncs_skipped_total",
            "Periodic full resyncs skipped because the data plane was untouched",
        )
        self.changes = counter(
            "svcnet_changes_total",
            "Store changes the agent read, by object kind",
            ("kind",),
        )
        for kind in (*sorted(_KNOWN_KINDS), "other"):
            self.changes.labels(kind=kind)
        self.info = gauge(
            "svcnet_agent_info", "The agent's node and backend (always 1)", ("node", "backend")
        )
        self.info.labels(node=node, backend=backend).set(1)
        self._plan = _PlanCollector()
        reg.register(self._plan)
        self._exposed = _Exposed(reg)
        self._names = self._sample_names()

    def _sample_names(self) -> frozenset[str]:
        """Every sample name the registry can hold (a child not made yet included)."""
        names: set[str] = set()
        for family in self.registry.collect():
            base = family.name
            if family.type == "counter":
                names.update((base + "_total", base + "_created"))
            elif family.type == "histogram":
                names.update(base + s for s in ("_bucket", "_count", "_sum", "_created"))
            else:
                names.add(base)
        return frozenset(names)

    # -- what the agent reports ------------------------------------------------------
    def change_queued(self, kind: str | Kind, when: float) -> None:
        """The watcher folded one store change of an object of ``kind`` ("Service",
        "Pod", "EndpointSlice", "Node"; anything else, a configuration change say,
        counts as "other"), committed or read at ``when`` (epoch seconds)."""
        name = kind.value if isinstance(kind, Kind) else kind
        when = _finite("when", when)
        if name in _SERVICE_KINDS:
            self.service_changes.inc()
        elif name in _ENDPOINT_KINDS:
            self.endpoint_changes.inc()
        self.changes.labels(kind=name if name in _KNOWN_KINDS else "other").inc()
        self.last_queued.set(when)

    def sync_done(
        self,
        *,
        full: bool,
        duration: float,
        latencies: Iterable[float],
        plan: Plan,
        fell_back: bool,
        when: float,
    ) -> None:
        """A sync succeeded: ``full`` (Backend.sync) or not (Backend.apply), taking
        ``duration`` seconds; ``latencies``: per change it installed, seconds from
        the change's commit to the end of this sync; ``plan``: the plan installed
        now; ``fell_back``: Backend.apply found damage and installed in full (the
        sync counts as a full one); ``when``: its end (epoch seconds)."""
        duration = _seconds("duration", duration)
        when = _finite("when", when)
        values = [_finite("latency", x) for x in latencies]  # all checked before any moves
        self.sync_duration.observe(duration)
        if full or fell_back:
            self.full_sync_duration.observe(duration)
        else:
            self.partial_sync_duration.observe(duration)
        for latency in values:
            # a change committed on a clock ahead of ours: no negative latency
            self.network_programming.observe(max(0.0, latency))
        if fell_back:
            self.drift_resyncs.inc()
        self._plan.set_plan(plan)
        self.last_sync.set(when)

    def sync_failed(self) -> None:
        """A sync failed (the previous rules stay; a full sync follows)."""
        self.sync_failures.inc()
        if self.backend_failures is not None:
            self.backend_failures.inc()

    def resync_skipped(self) -> None:
        """A periodic full resync was skipped: the backend proved its data plane
        untouched since its last install (Backend.untouched)."""
        self.resyncs_skipped.inc()

    def conntrack_cleaned(self, deleted: int, duration: float) -> None:
        """One conntrack cleanup pass deleted ``deleted`` entries in ``duration`` s."""
        if isinstance(deleted, bool) or not isinstance(deleted, int) or deleted < 0:
            raise SvcnetError(
                f"metrics: conntrack_cleaned: deleted must be an integer >= 0, got {deleted!r}"
            )
        duration = _seconds("duration", duration)
        self.conntrack_duration.observe(duration)
        if deleted:
            self.conntrack_deleted.inc(deleted)

    def request(self, path: str, code: int) -> None:
        """The health server answered ``path`` with HTTP ``code``: /healthz and
        /livez are counted (a query string or trailing slash ignored), others not."""
        route = path.split("?", 1)[0]
        if len(route) > 1:
            route = route.rstrip("/")
        if route not in _PROBES:
            return
        if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
            raise SvcnetError(
                f"metrics: request {path!r}: code must be an HTTP status, got {code!r}"
            )
        counter = self.healthz if route == "/healthz" else self.livez
        counter.labels(code=str(code)).inc()

    # -- what is read ----------------------------------------------------------------
    def render(self) -> tuple[int, str, bytes]:
        """The ``/metrics`` response: (status, content type, body in the Prometheus
        text format 0.0.4)."""
        return 200, CONTENT_TYPE, generate_latest(self._exposed)

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """One sample's value, by its exposed name (``..._total`` for counters,
        ``..._bucket`` with ``le``, ``..._count``, ``..._sum`` for histograms) and
        labels. A labelled series not made yet reads 0; a name that is none of this
        registry's raises :class:`~svcnet.errors.SvcnetError`."""
        found = self.registry.get_sample_value(name, dict(labels or {}))
        if found is not None:
            return found
        if name not in self._names:
            raise SvcnetError(f"metrics: no metric sample named {name!r} (node {self.node})")
        return 0.0

    def plan_counts(self) -> dict[str, int]:
        """The plan-derived gauges now (see :func:`plan_counts`)."""
        return self._plan.counts()


def _finite(field: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SvcnetError(f"metrics: {field} must be a finite number, got {value!r}")
    return float(value)


def _seconds(field: str, value: float) -> float:
    value = _finite(field, value)
    if value < 0:
        raise SvcnetError(f"metrics: {field} must be >= 0 seconds, got {value!r}")
    return value
