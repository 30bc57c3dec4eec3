"""Benchmark: plan compile, incremental update + diff, memory-backend probes.

Builds 10,000 ClusterIP services x 5 ready endpoints on 100 nodes (one Apply),
then prints: compile from scratch; incremental update + diff after one endpoint
change; memory backend sync and probe evaluations per second. Targets (issue
"Rule plan"): compile < 1 s, update + diff < 5 ms. Run by ``nox -s bench``.
"""

from __future__ import annotations

import gc
import statistics
import time

import attrs

from svcnet.backend import load_backend
from svcnet.model import ClusterConfig, Labels, Node, Pod, Service, ServicePort
from svcnet.plan import advance, compile
from svcnet.probe import Probe, SourceKind
from svcnet.state import Apply, ClusterState

SERVICES = 10_000
ENDPOINTS = 5
NODES = 100


def build() -> tuple[ClusterState, list[Pod]]:
    config = ClusterConfig(service_cidrs=("10.96.0.0/16",), cluster_cidrs=("10.0.0.0/8",))
    nodes = [
        Node(
            f"node-{n}",
            pod_cidrs=(f"10.{n // 64 + 1}.{(n % 64) * 4}.0/22",),
            addresses=(f"192.168.{n // 250}.{n % 250 + 1}",),
        )
        for n in range(NODES)
    ]
    services = [
        Service(
            "default",
            f"svc-{i}",
            selector=Labels.of({"app": f"a{i}"}),
            ports=(ServicePort(80, target_port=8080),),
        )
        for i in range(SERVICES)
    ]
    pods = [
        Pod(
            "default",
            f"p-{i}-{j}",
            labels={"app": f"a{i}"},
            node_name=f"node-{(i * ENDPOINTS + j) % NODES}",
            ready=True,
        )
        for i in range(SERVICES)
        for j in range(ENDPOINTS)
    ]
    state = ClusterState.empty(config).step(Apply((*nodes, *services, *pods)))
    return state, pods


def main() -> None:
    t0 = time.perf_counter()
    state, pods = build()
    print(
        f"plan: build state {SERVICES} services x {ENDPOINTS} endpoints (one Apply): "
        f"{time.perf_counter() - t0:.1f} s"
    )
    gc.collect()
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        plan = compile(state, "node-0")
        runs.append(time.perf_counter() - t0)
    print(
        f"plan: compile {SERVICES} x {ENDPOINTS} from scratch: best {min(runs):.3f} s, "
        f"median {statistics.median(runs):.3f} s (target < 1 s)"
    )

    # one endpoint change: a pod stops being ready, then becomes ready again
    times = []
    current = state
    for k in range(50):
        pod = pods[k * 7]
        stored = current.pods[(pod.namespace, pod.name)]
        new_state = current.step(Apply((attrs.evolve(stored, ready=not stored.ready),)))
        t0 = time.perf_counter()
        new_plan, changes = advance(plan, current, new_state)
        times.append(time.perf_counter() - t0)
        assert len(changes.replaced) == 1, changes
        plan, current = new_plan, new_state
    print(
        f"plan: one endpoint change at {SERVICES}: update + diff median "
        f"{statistics.median(times) * 1e3:.2f} ms, max {max(times) * 1e3:.2f} ms (target < 5 ms)"
    )

    memory = load_backend("memory")("node-0")
    t0 = time.perf_counter()
    memory.sync(plan)
    dt = time.perf_counter() - t0
    print(f"plan: memory backend full sync of {SERVICES} services: {dt:.3f} s")
    svcs = list(current.services.values())
    probes = [
        Probe(SourceKind.POD, "10.1.0.9", "node-0", s.cluster_ips[0], 80 + (i % 2))
        for i, s in enumerate(svcs[:5000])
    ]
    t0 = time.perf_counter()
    for p in probes:
        memory.evaluate(p)
    dt = time.perf_counter() - t0
    print(f"plan: memory backend evaluate: {len(probes) / dt:,.0f} probes/s")


if __name__ == "__main__":
    main()
