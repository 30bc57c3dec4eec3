"""Benchmark (issue 17 goal 4): 100,000 services x 5 endpoints on nftables.

    python bench/bench_scale100k.py [--services 100000] [--libnftables]
    nox -s bench -- scale100k

Run as root; works in its own ``svcnet-s100k*`` network namespace (deleted after).
The plan is compiled from a real ``ClusterState`` (``bench_state.cluster_objects``:
ClusterIP services with 5 ready pods each; one node per 900 pods, so every node's
/22 pod CIDR has room). Prints one line per figure with wall time, this process's
CPU time and its RSS (``VmRSS`` now; the peak at the end):

1. the objects, the state (one ``Apply``) and ``compile(state, node)``;
2. the full sync (``NftablesBackend.sync``: one netlink batch written by
   ``svcnet_nftables.nlwrite``), split into its parts: encoding the elements, the
   structure template (libnftables in a scratch namespace; cached, so the second
   sync skips it), building the batch, the kernel's handling of it; then a second
   full sync over the installed table;
3. with ``--libnftables``: the same plan through render's text and libnftables (the
   path before nlwrite), for comparison;
4. three endpoint changes (a pod turns unready -> ``ClusterState.step`` ->
   ``plan.advance`` -> ``apply``): the first needs new shared chains (4-endpoint
   forwarding), the others change elements only.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import attrs
from bench_state import cluster_objects
from svcnet_nftables import NftablesBackend, nlwrite, render
from svcnet_nftables.libnft import nla, nla_str

from svcnet import plan as plans
from svcnet.kernel import netns
from svcnet.model import ClusterConfig, Kind, ObjectKey
from svcnet.state import Apply, ClusterState, Delete

T = TypeVar("T")
NODE = "node-0"
CONFIG = ClusterConfig(service_cidrs=("10.96.0.0/12",), cluster_cidrs=("10.0.0.0/8",))


def rss_mb() -> float:
    """This process's resident set now (VmRSS), in MB."""
    with open("/proc/self/status") as f:
        for row in f:
            if row.startswith("VmRSS:"):
                return int(row.split()[1]) / 1024
    return -1.0


def timed(label: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` and print its wall and CPU time and the RSS after it."""
    t, c = time.perf_counter(), time.process_time()
    value = fn()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    print(f"{label}: {wall:.3f} s (cpu {cpu:.3f} s; rss {rss_mb():.0f} MB)", flush=True)
    return value


def kernel_floor(be: NftablesBackend, plan: plans.Plan) -> None:
    """The kernel's cost of a one-element transaction on the installed table, sent by
    nlwrite (no libnftables): an ``fe`` element (a ``goto`` verdict: the kernel then
    validates the whole table at commit, every verdict element included) and an
    endpoint map element (plain data); each re-added (a no-op add) and deleted and
    added back in one transaction; median of 20."""
    svc = plan.services[next(iter(plan.services))]
    elements = nlwrite.encode(plans.Plan(plan.settings, {svc.ref: svc}))
    assert elements is not None
    sock = be._nft.call(nlwrite.open_socket)
    try:
        for (fam, name), elems in sorted(elements.sets.items()):
            if name not in (render.FE_MAP, "eps-cluster-tcp"):
                continue
            key, elem = next(iter(elems.items()))
            readd = nlwrite.elements_batch({(fam, name): [elem]})
            replace = nlwrite.Batch()  # delete the element, add it back: one transaction
            head = nla_str(1, render.TABLE) + nla_str(2, name)
            for msg, item in (
                (nlwrite.MSG_DELSETELEM, nlwrite._elem(key, b"")),
                (nlwrite.MSG_NEWSETELEM, elem),
            ):
                replace.nft(msg, fam, head + nla(3, item, nested=True))
            for what, batch in (
                ("re-added (a no-op)", readd),
                ("deleted and added back", replace.end()),
            ):
                walls, cpus = [], []
                for _ in range(20):
                    t, c = time.perf_counter(), time.process_time()
                    nlwrite.send(sock, batch)
                    walls.append(time.perf_counter() - t)
                    cpus.append(time.process_time() - c)
                print(
                    f"floor: one {name} element {what}, a netlink transaction of its own"
                    f" (no libnftables): median {statistics.median(walls) * 1000:.2f} ms"
                    f" (cpu {statistics.median(cpus) * 1000:.2f} ms)",
                    flush=True,
                )
    finally:
        sock.close()


def change(
    be: NftablesBackend,
    state: ClusterState,
    plan: plans.Plan,
    label: str,
    events: list[Apply | Delete],
) -> tuple[ClusterState, plans.Plan]:
    """One endpoint change end to end: ``ClusterState.step`` of ``events``, then
    ``plan.advance``, then ``apply``; each part's wall and CPU time."""
    parts = []
    t, c = time.perf_counter(), time.process_time()
    after = state
    for event in events:
        after = after.step(event)
    parts.append((time.perf_counter() - t, time.process_time() - c))
    t, c = time.perf_counter(), time.process_time()
    new_plan, changes = plans.advance(plan, state, after)
    parts.append((time.perf_counter() - t, time.process_time() - c))
    t, c = time.perf_counter(), time.process_time()
    be.apply(changes)
    parts.append((time.perf_counter() - t, time.process_time() - c))
    wall, cpu = sum(p[0] for p in parts), sum(p[1] for p in parts)
    split = "; ".join(
        f"{name} {w * 1000:.1f} ms (cpu {c_ * 1000:.1f})"
        for name, (w, c_) in zip(("state step", "advance", "apply"), parts, strict=True)
    )
    print(
        f"one endpoint change ({label}): {wall * 1000:.1f} ms (cpu {cpu * 1000:.1f} ms):"
        f" {split}; {len(changes.replaced)} service(s) replaced; full-sync fallbacks so far"
        f" {be.fallbacks}",
        flush=True,
    )
    return after, new_plan


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=100_000)
    ap.add_argument("--libnftables", action="store_true", help="also time the libnftables path")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_scale100k: needs root (a network namespace, nftables)", file=sys.stderr)
        return 2
    n = args.services
    nodes = max(50, n * 5 // 900 + 1)
    print(f"load average {os.getloadavg()[0]:.1f}; {n} services x 5, {nodes} nodes", flush=True)
    objects = timed(f"objects ({n} services, {n * 5} pods)", lambda: cluster_objects(n, 5, nodes))
    event = Apply(tuple(objects))
    del objects
    state = timed("state: one Apply", partial(ClusterState.empty(CONFIG).step, event))
    del event
    gc.collect()
    gc.freeze()
    plan = timed(f"compile(state, {NODE})", lambda: plans.compile(state, NODE))
    elements = timed("  encode the elements (nlwrite.encode)", lambda: nlwrite.encode(plan))
    assert elements is not None
    count = sum(len(v) for v in elements.sets.values())
    text = nlwrite.Template.text(plan.settings, list(elements.refs))
    tpl = timed(
        "  structure template (libnftables in a scratch namespace)",
        lambda: nlwrite.template(text, nlwrite.build_template),
    )
    batch = timed("  build the batch", partial(nlwrite.full_batch, elements, tpl))
    print(f"  batch: {len(batch) / 1e6:.1f} MB, {count} elements of the big sets", flush=True)
    del elements
    with netns.scratch("svcnet-s100k") as ns:
        be = NftablesBackend(NODE, netns=ns)
        try:
            sock = be._nft.call(nlwrite.open_socket)
            timed("  the kernel takes the batch (send)", partial(nlwrite.send, sock, batch))
            sock.close()
            del batch
            timed(
                f"full sync {n} x 5 (NftablesBackend.sync: encode + batch + send)",
                lambda: be.sync(plan),
            )
            timed("the same full sync again (over the installed table)", lambda: be.sync(plan))
            if args.libnftables:
                cmds = timed(
                    "  libnftables path: render_full (text)", lambda: render.render_full(plan)[0]
                )
                timed("  libnftables path: nft_run_cmd_from_buffer", lambda: be._run(cmds))
                del cmds
                be.sync(plan)
            kernel_floor(be, plan)
            gc.collect()
            gc.freeze()  # the plan is long-lived too: keep the collector off it
            for pod_name in ("p-17-2", "p-18-2", "p-19-2"):
                pod = state.pods[("default", pod_name)]
                event = Apply((attrs.evolve(pod, ready=False),))
                state, plan = change(be, state, plan, f"{pod_name} unready", [event])
            # an endpoint replaced by another (the count stays 5: no verdict changes)
            old = state.pods[("default", "p-20-2")]
            events = [  # added first: it gets an address of its own
                Apply((attrs.evolve(old, name="p-20-new", pod_ips=(), pod_ips_allocated=False),)),
                Delete((ObjectKey(Kind.POD, "default", "p-20-2"),)),
            ]
            state, plan = change(be, state, plan, "p-20-2 replaced by p-20-new", events)
            be.cleanup()
        finally:
            be.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB; load average {os.getloadavg()[0]:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
