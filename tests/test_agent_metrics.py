"""svcnet.agent.metrics (pure: no root, no kernel): each AgentMetrics method moves
exactly the samples it should by exactly the amount, read back with value() and
compared against a snapshot of every sample of the registry; the exposition
parses with prometheus_client's own parser and carries every metric that
docs/reference/metrics.md documents; histogram buckets are kube-proxy's; two
agents' metrics in one process share nothing; the plan-derived gauges count what
the compiled plan holds."""

from __future__ import annotations

import pathlib
import re
import threading
from collections.abc import Mapping

import pytest

pytest.importorskip("prometheus_client", reason="the agent extra (prometheus-client) is needed")

from prometheus_client.parser import text_string_to_metric_families

from svcnet import manifests
from svcnet.agent.metrics import AgentMetrics, plan_counts
from svcnet.errors import SvcnetError
from svcnet.plan import Plan, advance, compile
from svcnet.state import Apply, ClusterState, Delete

DOC = pathlib.Path(__file__).parent.parent / "docs" / "reference" / "metrics.md"

Key = tuple[str, tuple[tuple[str, str], ...]]


def samples(m: AgentMetrics) -> dict[Key, float]:
    """Every sample of the registry but the ``_created`` ones (their value is a
    wall-clock time, and render() leaves them out)."""
    out: dict[Key, float] = {}
    for family in m.registry.collect():
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def key(name: str, **labels: str) -> Key:
    return (name, tuple(sorted(labels.items())))


def delta(before: Mapping[Key, float], after: Mapping[Key, float]) -> dict[Key, float]:
    """The samples that changed (or appeared) and by how much."""
    out: dict[Key, float] = {}
    for k, v in after.items():
        d = v - before.get(k, 0.0)
        if d:
            out[k] = d
    for k in before:
        assert k in after, f"sample {k} disappeared"
    return out


# kube-proxy's buckets, written out: ExponentialBuckets(0.001, 2, 15) ...
SYNC_LE = [
    "0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128",
    "0.256", "0.512", "1.024", "2.048", "4.096", "8.192", "16.384", "+Inf",
]  # fmt: skip
# ... and MergeBuckets(Linear(0.25, 0.25, 2), Linear(1, 1, 59), Linear(60, 5, 12),
# Linear(120, 30, 7)), which starts with a 0 bucket
NPL_LE = (
    ["0.0", "0.25", "0.5"]
    + [f"{s}.0" for s in range(1, 60)]
    + [f"{s}.0" for s in range(60, 116, 5)]
    + [f"{s}.0" for s in (120, 150, 180, 210, 240, 270, 300)]
    + ["+Inf"]
)


def bucket_delta(name: str, value: float, les: list[str]) -> dict[Key, float]:
    """The samples one observation of ``value`` adds to histogram ``name``."""
    out = {key(name + "_bucket", le=le): 1.0 for le in les if le == "+Inf" or value <= float(le)}
    out[key(name + "_count")] = 1.0
    if value:
        out[key(name + "_sum")] = value
    return out


def approx(d: Mapping[Key, float]) -> dict[Key, object]:
    return {k: pytest.approx(v) for k, v in d.items()}


# ---------------------------------------------------------------------- plans

MANIFEST = """\
apiVersion: v1
kind: Node
metadata: {name: node-a}
status: {addresses: [{type: InternalIP, address: 192.168.56.11}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
status: {addresses: [{type: InternalIP, address: 192.168.56.12}]}
---
# Local both ways, its one pod on node-b: from node-a, both policies find no local
# endpoint while the cluster has one
apiVersion: v1
kind: Service
metadata: {name: loc, namespace: default}
spec:
  type: NodePort
  selector: {app: loc}
  clusterIP: 10.96.0.20
  externalTrafficPolicy: Local
  internalTrafficPolicy: Local
  ports:
    - {name: http, port: 80, targetPort: 8080, nodePort: 30080}
    - {name: echo, port: 53, targetPort: 8053, protocol: UDP, nodePort: 30053}
---
# internal Local only, no external frontend: counts as "internal" only
apiVersion: v1
kind: Service
metadata: {name: cip, namespace: default}
spec:
  selector: {app: loc}
  clusterIP: 10.96.0.21
  internalTrafficPolicy: Local
  ports: [{name: http, port: 80, targetPort: 8080}]
---
# no endpoint anywhere: rejected, not counted as "no local endpoints"
apiVersion: v1
kind: Service
metadata: {name: none, namespace: default}
spec:
  type: NodePort
  selector: {app: nothing}
  clusterIP: 10.96.0.22
  externalTrafficPolicy: Local
  internalTrafficPolicy: Local
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30082}]
---
apiVersion: v1
kind: Pod
metadata: {name: loc-1, namespace: default, labels: {app: loc}}
spec:
  nodeName: node-b
  containers: [{name: c}]
status: {podIP: 10.244.2.10, conditions: [{type: Ready, status: "True"}]}
"""


def state() -> ClusterState:
    return ClusterState.empty().step(Apply(tuple(manifests.load(MANIFEST))))


@pytest.fixture
def metrics() -> AgentMetrics:
    return AgentMetrics("nftables", "node-a")


# ------------------------------------------------------------------- changes


@pytest.mark.parametrize(
    ("kind", "counter"),
    [
        ("Service", "kubeproxy_sync_proxy_rules_service_changes_total"),
        ("Pod", "kubeproxy_sync_proxy_rules_endpoint_changes_total"),
        ("EndpointSlice", "kubeproxy_sync_proxy_rules_endpoint_changes_total"),
        ("Node", None),
    ],
)
def test_change_queued(metrics: AgentMetrics, kind: str, counter: str | None) -> None:
    before = samples(metrics)
    metrics.change_queued(kind, 1_700_000_000.5)
    want = {
        key("svcnet_changes_total", kind=kind): 1.0,
        key("kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds"): 1_700_000_000.5,
    }
    if counter is not None:
        want[key(counter)] = 1.0
    assert delta(before, samples(metrics)) == want
    assert metrics.value("kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds") == (
        1_700_000_000.5
    )


def test_change_queued_other_kind_and_last_time(metrics: AgentMetrics) -> None:
    metrics.change_queued("Service", 100.0)
    before = samples(metrics)
    metrics.change_queued("", 200.0)  # a configuration change: no object kind
    assert delta(before, samples(metrics)) == {
        key("svcnet_changes_total", kind="other"): 1.0,
        key("kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds"): 100.0,
    }
    assert metrics.value("kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds") == 200.0
    assert metrics.value("kubeproxy_sync_proxy_rules_service_changes_total") == 1.0


# --------------------------------------------------------------------- syncs


def test_sync_done_partial(metrics: AgentMetrics) -> None:
    plan = compile(state(), "node-a")
    before = samples(metrics)
    metrics.sync_done(
        full=False, duration=0.003, latencies=[0.1, 0.7, -0.2], plan=plan, fell_back=False,
        when=1_700_000_100.0,
    )  # fmt: skip
    want = bucket_delta("kubeproxy_sync_proxy_rules_duration_seconds", 0.003, SYNC_LE)
    want |= bucket_delta("kubeproxy_sync_partial_proxy_rules_duration_seconds", 0.003, SYNC_LE)
    npl = "kubeproxy_network_programming_duration_seconds"
    want |= {
        key(npl + "_bucket", le="0.0"): 1.0,  # -0.2 s (a clock ahead of ours) counts as 0
        key(npl + "_bucket", le="0.25"): 2.0,
        key(npl + "_bucket", le="0.5"): 2.0,
        key(npl + "_count"): 3.0,
        key(npl + "_sum"): 0.8,
    }
    want |= {key(npl + "_bucket", le=le): 3.0 for le in NPL_LE[3:]}
    want[key("kubeproxy_sync_proxy_rules_last_timestamp_seconds")] = 1_700_000_100.0
    # the plan's gauges (their values: test_plan_gauges)
    counts = plan_counts(plan)
    for kind in ("services", "service_ports", "frontends", "endpoints"):
        want[key("svcnet_programmed_objects", kind=kind)] = counts[kind]
    want[key("kubeproxy_sync_proxy_rules_no_local_endpoints_total", traffic_policy="internal")] = (
        counts["no_local_internal"]
    )
    want[key("kubeproxy_sync_proxy_rules_no_local_endpoints_total", traffic_policy="external")] = (
        counts["no_local_external"]
    )
    assert delta(before, samples(metrics)) == approx(want)
    assert metrics.value("kubeproxy_sync_partial_proxy_rules_duration_seconds_count") == 1.0
    assert metrics.value("kubeproxy_sync_full_proxy_rules_duration_seconds_count") == 0.0
    assert metrics.value("svcnet_drift_resyncs_total") == 0.0


@pytest.mark.parametrize(("full", "fell_back"), [(True, False), (False, True)])
def test_sync_done_full(metrics: AgentMetrics, full: bool, fell_back: bool) -> None:
    """A full sync, or an incremental one the backend installed in full because it
    found damage (that one also counts a drift resync)."""
    plan = compile(state(), "node-a")
    metrics.sync_done(full=True, duration=0.5, latencies=[], plan=plan, fell_back=False, when=1.0)
    before = samples(metrics)
    metrics.sync_done(
        full=full, duration=20.0, latencies=(), plan=plan, fell_back=fell_back, when=2.0
    )
    want = bucket_delta("kubeproxy_sync_proxy_rules_duration_seconds", 20.0, SYNC_LE)
    want |= bucket_delta("kubeproxy_sync_full_proxy_rules_duration_seconds", 20.0, SYNC_LE)
    want[key("kubeproxy_sync_proxy_rules_last_timestamp_seconds")] = 1.0
    if fell_back:
        want[key("svcnet_drift_resyncs_total")] = 1.0
    assert delta(before, samples(metrics)) == approx(want)
    assert want[key("kubeproxy_sync_full_proxy_rules_duration_seconds_bucket", le="+Inf")] == 1.0
    assert key("kubeproxy_sync_full_proxy_rules_duration_seconds_bucket", le="16.384") not in want


@pytest.mark.parametrize(
    ("backend", "own"),
    [
        ("nftables", "kubeproxy_sync_proxy_rules_nftables_sync_failures_total"),
        ("iptables", "kubeproxy_sync_proxy_rules_iptables_restore_failures_total"),
        ("memory", None),
    ],
)
def test_sync_failed(backend: str, own: str | None) -> None:
    m = AgentMetrics(backend, "node-a")
    before = samples(m)
    m.sync_failed()
    m.sync_failed()
    want = {key("svcnet_sync_failures_total"): 2.0}
    if own is not None:
        want[key(own)] = 2.0
    assert delta(before, samples(m)) == want
    others = {
        "kubeproxy_sync_proxy_rules_nftables_sync_failures_total",
        "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
    } - {own}
    for name in others:  # the other backend's counter is not there at all
        assert all(k[0] != name for k in samples(m))
        with pytest.raises(SvcnetError, match=name):
            m.value(name)


def test_resync_skipped(metrics: AgentMetrics) -> None:
    before = samples(metrics)
    metrics.resync_skipped()
    assert delta(before, samples(metrics)) == {key("svcnet_resyncs_skipped_total"): 1.0}


def test_conntrack_cleaned(metrics: AgentMetrics) -> None:
    name = "kubeproxy_conntrack_reconciler_sync_duration_seconds"
    before = samples(metrics)
    metrics.conntrack_cleaned(3, 0.0015)
    want = bucket_delta(name, 0.0015, SYNC_LE)
    want[key("kubeproxy_conntrack_reconciler_deleted_entries_total")] = 3.0
    assert delta(before, samples(metrics)) == approx(want)
    before = samples(metrics)
    metrics.conntrack_cleaned(0, 0.0)  # a pass that found nothing still counts as a pass
    assert delta(before, samples(metrics)) == bucket_delta(name, 0.0, SYNC_LE)
    assert metrics.value("kubeproxy_conntrack_reconciler_deleted_entries_total") == 3.0


def test_requests(metrics: AgentMetrics) -> None:
    before = samples(metrics)
    metrics.request("/healthz", 200)
    metrics.request("/healthz", 503)
    metrics.request("/healthz?verbose=1", 503)
    metrics.request("/livez/", 200)
    metrics.request("/metrics", 200)  # not a probe: not counted
    metrics.request("/", 404)
    assert delta(before, samples(metrics)) == {
        key("kubeproxy_proxy_healthz_total", code="200"): 1.0,
        key("kubeproxy_proxy_healthz_total", code="503"): 2.0,
        key("kubeproxy_proxy_livez_total", code="200"): 1.0,
    }
    assert metrics.value("kubeproxy_proxy_healthz_total", {"code": "503"}) == 2.0
    # a code never answered reads 0 (the series is made when first counted)
    assert metrics.value("kubeproxy_proxy_livez_total", {"code": "500"}) == 0.0


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda m: m.conntrack_cleaned(-1, 0.1), "deleted"),
        (lambda m: m.conntrack_cleaned(1, -0.1), "duration"),
        (lambda m: m.change_queued("Pod", float("nan")), "when"),
        (lambda m: m.request("/healthz", 42), "code"),
        (
            lambda m: m.sync_done(
                full=False,
                duration=0.1,
                latencies=[0.1, float("inf")],
                plan=compile(state(), "node-a"),
                fell_back=False,
                when=1.0,
            ),
            "latency",
        ),
        (
            lambda m: m.sync_done(
                full=True,
                duration=-1.0,
                latencies=[],
                plan=compile(state(), "node-a"),
                fell_back=False,
                when=1.0,
            ),
            "duration",
        ),
    ],
)
def test_bad_values_move_nothing(metrics: AgentMetrics, call: object, field: str) -> None:
    before = samples(metrics)
    with pytest.raises(SvcnetError, match=field):
        call(metrics)  # type: ignore[operator]
    assert delta(before, samples(metrics)) == {}


def test_value_unknown_name(metrics: AgentMetrics) -> None:
    with pytest.raises(SvcnetError, match="no_such_metric"):
        metrics.value("no_such_metric")
    # a counter is read by its exposed name
    with pytest.raises(SvcnetError):
        metrics.value("svcnet_sync_failures")
    assert metrics.value("svcnet_sync_failures_total") == 0.0


# --------------------------------------------------------------- exposition


def documented() -> dict[str, str]:
    """Metric name -> type, from the tables of docs/reference/metrics.md (rows
    ``| `name` | type | ...``)."""
    rows = re.findall(r"^\| `((?:kubeproxy|svcnet)_[a-z_]+)` \| (\w+) \|", DOC.read_text(), re.M)
    assert rows, f"no metric rows in {DOC}"
    return dict(rows)


@pytest.mark.parametrize("backend", ["nftables", "iptables", "memory"])
def test_render_parses_with_every_documented_metric(backend: str) -> None:
    m = AgentMetrics(backend, "node-a")
    m.sync_done(
        full=True, duration=0.01, latencies=[0.02], plan=compile(state(), "node-a"),
        fell_back=False, when=5.0,
    )  # fmt: skip
    m.request("/healthz", 200)
    status, content_type, body = m.render()
    assert status == 200
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    text = body.decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # the parser names counters without _total; the docs name what is exposed
    exposed = {
        (f.name + "_total" if f.type == "counter" else f.name): f.type for f in families.values()
    }
    failures = {
        "nftables": "kubeproxy_sync_proxy_rules_nftables_sync_failures_total",
        "iptables": "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
    }
    want = {
        name: kind
        for name, kind in documented().items()
        if name not in failures.values() or failures.get(backend) == name
    }
    assert exposed == want
    assert "_created" not in text
    assert families["svcnet_agent_info"].samples[0].labels == {
        "node": "node-a",
        "backend": backend,
    }
    # every sample parsed is the registry's, with its value
    for family in families.values():
        for s in family.samples:
            assert m.value(s.name, s.labels) == s.value, s


def test_buckets_are_kube_proxys(metrics: AgentMetrics) -> None:
    les: dict[str, list[str]] = {}
    for family in metrics.registry.collect():
        if family.type == "histogram":
            buckets = [s for s in family.samples if s.name.endswith("_bucket")]
            les[family.name] = [s.labels["le"] for s in buckets]
    assert les == {
        "kubeproxy_sync_proxy_rules_duration_seconds": SYNC_LE,
        "kubeproxy_sync_full_proxy_rules_duration_seconds": SYNC_LE,
        "kubeproxy_sync_partial_proxy_rules_duration_seconds": SYNC_LE,
        "kubeproxy_conntrack_reconciler_sync_duration_seconds": SYNC_LE,
        "kubeproxy_network_programming_duration_seconds": NPL_LE,
    }
    assert len(NPL_LE) == 1 + 2 + 59 + 12 + 7 + 1


def test_two_agents_share_nothing() -> None:
    a = AgentMetrics("nftables", "node-a")
    b = AgentMetrics("nftables", "node-b")
    assert a.registry is not b.registry
    b_before = samples(b)
    a.sync_failed()
    a.change_queued("Pod", 9.0)
    a.conntrack_cleaned(5, 0.1)
    a.request("/livez", 200)
    a.sync_done(
        full=True, duration=0.2, latencies=[0.3], plan=compile(state(), "node-a"),
        fell_back=True, when=10.0,
    )  # fmt: skip
    assert samples(b) == b_before
    assert a.value("svcnet_sync_failures_total") == 1.0
    assert b.value("svcnet_sync_failures_total") == 0.0
    assert b.value("svcnet_programmed_objects", {"kind": "services"}) == 0.0
    assert a.value("svcnet_programmed_objects", {"kind": "services"}) == 3.0


def test_concurrent_calls_all_count(metrics: AgentMetrics) -> None:
    per_thread, threads = 500, 4

    def work() -> None:
        for i in range(per_thread):
            metrics.change_queued("Pod", float(i))
            metrics.request("/healthz", 200)
            metrics.render()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    total = per_thread * threads
    assert metrics.value("kubeproxy_sync_proxy_rules_endpoint_changes_total") == total
    assert metrics.value("svcnet_changes_total", {"kind": "Pod"}) == total
    assert metrics.value("kubeproxy_proxy_healthz_total", {"code": "200"}) == total


# --------------------------------------------------------------- plan gauges


def gauges(m: AgentMetrics) -> dict[str, float]:
    out = {
        kind: m.value("svcnet_programmed_objects", {"kind": kind})
        for kind in ("services", "service_ports", "frontends", "endpoints")
    }
    for policy in ("internal", "external"):
        out[policy] = m.value(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total", {"traffic_policy": policy}
        )
    return out


def install(m: AgentMetrics, plan: Plan) -> dict[str, float]:
    m.sync_done(full=True, duration=0.0, latencies=[], plan=plan, fell_back=False, when=1.0)
    return gauges(m)


def test_plan_gauges_before_any_sync(metrics: AgentMetrics) -> None:
    assert gauges(metrics) == dict.fromkeys(
        ("services", "service_ports", "frontends", "endpoints", "internal", "external"), 0.0
    )


def test_plan_gauges_node_without_local_endpoints(metrics: AgentMetrics) -> None:
    # node-a: loc (2 ports: ClusterIP + NodePort each, 1 endpoint each), cip (1 port,
    # ClusterIP, 1 endpoint), none (1 port: ClusterIP + NodePort, no endpoint)
    assert install(metrics, compile(state(), "node-a")) == {
        "services": 3,
        "service_ports": 4,
        "frontends": 2 + 2 + 1 + 2,
        "endpoints": 1 + 1 + 1 + 0,
        # loc's 2 ports and cip's 1 have endpoints, on node-b only; none has none
        "internal": 3,
        # loc's 2 ports (cip has no external frontend)
        "external": 2,
    }


def test_plan_gauges_node_with_local_endpoints(metrics: AgentMetrics) -> None:
    got = install(metrics, compile(state(), "node-b"))
    assert (got["internal"], got["external"]) == (0, 0)
    assert got["endpoints"] == 3


def test_plan_gauges_follow_advanced_plans(metrics: AgentMetrics) -> None:
    """The collector recounts only the services an advanced plan replaced; its
    totals equal a recount of the whole plan at every step."""
    old = state()
    plan = compile(old, "node-a")
    assert install(metrics, plan)["internal"] == 3
    pod_a = manifests.load(
        MANIFEST.split("---")[-1].replace("loc-1", "loc-2").replace("node-b", "node-a")
        .replace("10.244.2.10", "10.244.1.10")
    )  # fmt: skip
    steps = [
        Apply(tuple(pod_a)),  # a local endpoint on node-a: nothing lacks one now
        Delete(tuple(o.key for o in manifests.load(MANIFEST) if o.name == "cip")),
        Delete(tuple(o.key for o in pod_a)),
    ]
    seen = []
    for step in steps:
        new = old.step(step)
        plan, _ = advance(plan, old, new)
        old = new
        got = install(metrics, plan)
        full = plan_counts(compile(new, "node-a"))
        assert got == {
            "services": full["services"],
            "service_ports": full["service_ports"],
            "frontends": full["frontends"],
            "endpoints": full["endpoints"],
            "internal": full["no_local_internal"],
            "external": full["no_local_external"],
        }
        seen.append((got["internal"], got["external"], got["services"]))
    assert seen == [(0, 0, 3), (0, 0, 2), (2, 2, 2)]
    assert metrics.plan_counts()["services"] == 2
