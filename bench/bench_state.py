"""Benchmark: ClusterState event cost as the cluster grows (run by `nox -s bench`).

Applies 10,000 ClusterIP services and 50,000 pods (5 per service) one event at a
time, and prints the per-event cost of applying a service (and a pod) at 1,000
and at 10,000 services; then changes one pod and prints how many services'
endpoints were recomputed. Target: ratio <= 1.5 (one event is O(log n)).
"""

from __future__ import annotations

import gc
import statistics
import time

import attrs

from svcnet.model import ClusterConfig, Labels, Node, Pod, Service, ServicePort
from svcnet.state import Apply, ClusterState

SERVICES = 10_000
PODS_PER_SERVICE = 5
NODES = 100
WINDOW = 200  # events timed around each mark


def main() -> None:
    config = ClusterConfig(service_cidrs=("10.96.0.0/16",), cluster_cidrs=("10.0.0.0/8",))
    state = ClusterState.empty(config)
    for n in range(NODES):
        node = Node(
            f"node-{n}",
            pod_cidrs=(f"10.{n // 64 + 1}.{(n % 64) * 4}.0/22",),
            addresses=(f"192.168.{n // 250}.{n % 250 + 1}",),
        )
        state = state.step(Apply((node,)))
    svc_times: dict[int, list[float]] = {1_000: [], 10_000: []}
    pod_times: dict[int, list[float]] = {1_000: [], 10_000: []}
    start = time.perf_counter()
    for i in range(SERVICES):
        if i % 500 == 0:
            gc.collect()
            gc.freeze()  # old generations are immutable persistent data: keep GC off them
        svc = Service(
            "default",
            f"svc-{i}",
            selector=Labels.of({"app": f"a{i}"}),
            ports=(ServicePort(80, target_port=8080),),
        )
        t0 = time.perf_counter()
        state = state.step(Apply((svc,)))
        dt = time.perf_counter() - t0
        mark = next((m for m in svc_times if m - WINDOW <= i + 1 <= m), None)
        if mark is not None:
            svc_times[mark].append(dt)
        for j in range(PODS_PER_SERVICE):
            pod = Pod(
                "default",
                f"p-{i}-{j}",
                labels={"app": f"a{i}"},
                node_name=f"node-{(i * PODS_PER_SERVICE + j) % NODES}",
                ready=True,
            )
            t0 = time.perf_counter()
            state = state.step(Apply((pod,)))
            dt = time.perf_counter() - t0
            if mark is not None:
                pod_times[mark].append(dt)
    total = time.perf_counter() - start
    events = SERVICES * (1 + PODS_PER_SERVICE)
    print(
        f"state: {events} events ({SERVICES} services, {SERVICES * PODS_PER_SERVICE} pods)"
        f" in {total:.1f} s"
    )
    for label, times in (("apply service", svc_times), ("apply pod", pod_times)):
        small = statistics.median(times[1_000]) * 1e6
        large = statistics.median(times[10_000]) * 1e6
        print(
            f"state: {label} at 1k: {small:.0f} us/event; at 10k: {large:.0f} us/event;"
            f" ratio {large / small:.2f}"
        )
    key = ("default", "p-1234-0")
    pod = state.pods[key]
    state = state.step(Apply((attrs.evolve(pod, ready=False),)))
    touched = state.changed_since(state.revision - 1)
    assert touched is not None
    print(
        f"state: one pod change recomputed {len(state.last_recomputed)} service(s)'"
        f" endpoints (of {len(state.services)}); changed: {sorted(touched.services)}"
    )
    eps = state.service_endpoints("default", "svc-1234")[""]
    assert len(eps) == PODS_PER_SERVICE and sum(e.ready for e in eps) == PODS_PER_SERVICE - 1
    one_apply()


def cluster_objects(services: int, pods_per_service: int, nodes: int) -> list[Node | Service | Pod]:
    """``nodes`` nodes (a /22 podCIDR each), then each ClusterIP service followed by
    its ready pods, spread over the nodes (also bench_cli.py's store)."""
    objects: list[Node | Service | Pod] = [
        Node(
            f"node-{n}",
            pod_cidrs=(f"10.{n // 64 + 1}.{(n % 64) * 4}.0/22",),
            addresses=(f"192.168.{n // 250}.{n % 250 + 1}",),
        )
        for n in range(nodes)
    ]
    for i in range(services):
        objects.append(
            Service(
                "default",
                f"svc-{i}",
                selector=Labels.of({"app": f"a{i}"}),
                ports=(ServicePort(80, target_port=8080),),
            )
        )
        objects += [
            Pod(
                "default",
                f"p-{i}-{j}",
                labels={"app": f"a{i}"},
                node_name=f"node-{(i * pods_per_service + j) % nodes}",
                ready=True,
            )
            for j in range(pods_per_service)
        ]
    return objects


def one_apply() -> None:
    """Goal (issue 17): 10,000 services + 50,000 pods in one Apply <= 2 s, and the
    replay of a store of that size (the same objects carrying their allocations, as
    the store keeps them) <= 2 s. Median of 3; the collector is left as a caller
    would have it (the step pauses it itself)."""
    config = ClusterConfig(service_cidrs=("10.96.0.0/16",), cluster_cidrs=("10.0.0.0/8",))
    objects = cluster_objects(SERVICES, PODS_PER_SERVICE, 50)
    event = Apply(tuple(objects))
    fresh, built = [], ClusterState.empty(config)
    for _ in range(3):
        gc.collect()
        t0 = time.perf_counter()
        built = ClusterState.empty(config).step(event)
        fresh.append(time.perf_counter() - t0)
    stored = Apply((*built.nodes.values(), *built.services.values(), *built.pods.values()))
    replays = []
    for _ in range(3):
        gc.collect()
        t0 = time.perf_counter()
        again = ClusterState.empty(config).step(stored)
        replays.append(time.perf_counter() - t0)
    assert again.endpoints == built.endpoints and again.services == built.services
    print(
        f"state: one Apply of {SERVICES} services + {SERVICES * PODS_PER_SERVICE} pods"
        f" (50 nodes): {statistics.median(fresh):.2f} s allocating,"
        f" {statistics.median(replays):.2f} s replaying their stored form (target <= 2 s)"
    )


if __name__ == "__main__":
    main()
