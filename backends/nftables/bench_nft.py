"""Benchmark of the nftables backend (run as root; works in its own netns).

    python backends/nftables/bench_nft.py [--services 10000] [--big 50000]
        [--kp-services 10000] [--kp-time-cap 60]

Prints one line per figure:

1. compile: ``svcnet.plan.compile`` of a real ClusterState (N ClusterIP services,
   5 ready pods each, 20 nodes; the state is built once with one Apply, not timed);
2. full sync N x 5: compile + render + one libnftables transaction;
3. the kube-proxy-style layout of the same services (a chain per service with an
   anonymous ``numgen`` vmap to a chain per endpoint), loaded with libnftables at
   1,000, 2,000, 4,000, ... services; when the next size would exceed
   ``--kp-time-cap`` seconds, the N figure is an extrapolation (power law fitted to
   those runs) and says so;
4. one endpoint change at N: a pod turns unready -> ``ClusterState.step`` ->
   ``plan.advance`` (update + diff) -> ``apply`` (render + transaction);
5. read-back of the N table: ``observe()`` (a netlink dump decoded by
   ``svcnet_nftables.nlread``), ``observed_plan()`` on top of it, and libnftables'
   JSON listing + parse of the same table for comparison (``observe_libnftables()``);
6. ``evaluate()`` and ``trace()`` at N, each call reading the kernel (only what the
   probe's walk reaches): median / max of ``--calls`` calls for the first, middle and
   last service (by name) and for a miss (a service-CIDR address no service has);
7. full sync of ``--big`` x 5 (a synthetic plan of the same shape as compile's:
   building a 50k ClusterState takes too long for this benchmark).
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import attrs
from svcnet_nftables import NftablesBackend, nlread, observed
from svcnet_nftables import _Source as nft_source
from svcnet_nftables.libnft import Nft

from svcnet import plan as plans
from svcnet.model import ClusterConfig, IPFamily, Labels, Node, Pod, Protocol, Service, ServicePort
from svcnet.plan import (
    Action,
    EndpointSet,
    Frontend,
    FrontendKind,
    NodeSettings,
    Plan,
    PlanEndpoint,
    PortPlan,
    Route,
    ServicePlan,
    ServiceRef,
)
from svcnet.probe import Probe, SourceKind
from svcnet.state import Apply, ClusterState

NODES = 20
NODE = "node-0"
CONFIG = ClusterConfig(service_cidrs=("10.96.0.0/12",), cluster_cidrs=("10.0.0.0/8",))
SVC_NET = ipaddress.ip_network("10.96.0.0/12")
POD_NET = ipaddress.ip_network("10.128.0.0/10")
FWD = Route(Action.FORWARD, EndpointSet.CLUSTER, False)
FWD_MASQ = Route(Action.FORWARD, EndpointSet.CLUSTER, True)


def cluster(n: int) -> ClusterState:
    objs: list[Node | Service | Pod] = [
        Node(f"node-{k}", pod_cidrs=(f"10.{k + 1}.0.0/16",), addresses=(f"192.168.0.{k + 1}",))
        for k in range(NODES)
    ]
    for i in range(n):
        objs.append(
            Service(
                "default",
                f"svc-{i}",
                selector=Labels.of({"app": f"a{i}"}),
                ports=(ServicePort(80, target_port=8080),),
            )
        )
        objs += [
            Pod(
                "default",
                f"p-{i}-{j}",
                labels={"app": f"a{i}"},
                node_name=f"node-{(i * 5 + j) % NODES}",
                ready=True,
            )
            for j in range(5)
        ]
    gc.disable()  # one big Apply of immutable data: the cyclic GC only thrashes
    try:
        return ClusterState.empty(CONFIG).step(Apply(tuple(objs)))
    finally:
        gc.enable()
        gc.freeze()


def synthetic_service(i: int) -> ServicePlan:
    cip = str(SVC_NET[i + 10])
    eps = [PlanEndpoint(str(POD_NET[i * 5 + k + 10]), 8080) for k in range(5)]
    port = PortPlan.build(
        "",
        IPFamily.IPv4,
        Protocol.TCP,
        [Frontend(FrontendKind.CLUSTER_IP, cip, 80)],
        eps,
        [],
        FWD,
        FWD_MASQ,
        FWD_MASQ,
        FWD_MASQ,
        FWD_MASQ,
        FWD_MASQ,
    )
    return ServicePlan(ServiceRef("bench", f"svc-{i}"), (cip,), (port,))


def synthetic_plan(n: int) -> Plan:
    settings = NodeSettings(NODE, ("192.168.0.1",), ("10.0.0.0/8",), (str(SVC_NET),))
    return Plan(settings, {s.ref: s for s in (synthetic_service(i) for i in range(n))})


def kube_proxy_text(plan: Plan, limit: int) -> str:
    """kube-proxy's nftables layout: a chain per service with an anonymous numgen
    vmap to a chain per endpoint (which marks hairpin traffic and DNATs)."""
    out = [
        "add table ip kp",
        "add map ip kp svcs { type ipv4_addr . inet_proto . inet_service : verdict; }",
        "add chain ip kp nat-prerouting { type nat hook prerouting priority -100; }",
        "add rule ip kp nat-prerouting ip daddr . meta l4proto . th dport vmap @svcs",
    ]
    elems = []
    for k, svc in enumerate(sorted(plan.services.values(), key=lambda s: s.ref)):
        if k >= limit:
            break
        port = svc.ports[0]
        name = f"svc-{svc.ref.name}"
        out.append(f"add chain ip kp {name}")
        picks = []
        for j, ep in enumerate(port.cluster_endpoints):
            ep_chain = f"ep-{svc.ref.name}-{j}"
            out.append(f"add chain ip kp {ep_chain}")
            out.append(
                f"add rule ip kp {ep_chain} ip saddr {ep.ip} meta mark set meta mark | 0x4000"
            )
            out.append(f"add rule ip kp {ep_chain} meta l4proto tcp dnat ip to {ep.ip}:{ep.port}")
            picks.append(f"{j} : goto {ep_chain}")
        out.append(
            f"add rule ip kp {name} numgen random mod {len(picks)} vmap {{ {', '.join(picks)} }}"
        )
        fe = port.frontends[0]
        elems.append(f"{fe.ip} . tcp . {fe.port} : goto {name}")
    out.append("add element ip kp svcs { " + ", ".join(elems) + " }")
    return "\n".join(out) + "\n"


_CPU: list[float] = [0.0]  # CPU seconds (user + sys, this process) of the last timed()


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t, c = time.perf_counter(), time.process_time()
    value = fn()
    _CPU[0] = time.process_time() - c
    return time.perf_counter() - t, value


def line(label: str, seconds: float, note: str = "") -> None:
    """One figure: wall time, and this process's CPU time (libnftables and the kernel's
    netlink work run in it) which says more than wall time on a loaded machine."""
    cpu = f"cpu {_CPU[0] * 1000:.0f} ms" if _CPU[0] >= 0 else "cpu n/a"
    print(f"{label}: {seconds * 1000:.0f} ms ({cpu}{f'; {note}' if note else ''})", flush=True)


def _exponent(runs: list[tuple[int, float]]) -> float:
    """k of ``t ~ n^k``, least squares in log-log over every run (1 with one run)."""
    if len(runs) < 2:
        return 1.0
    xs = [math.log(n) for n, _ in runs]
    ys = [math.log(t) for _, t in runs]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    k = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return min(max(k, 1.0), 3.0)


def kube_proxy(ns: str, plan: Plan, n: int, cap: float) -> None:
    """Load the kube-proxy-style layout of ``n`` services, or extrapolate. Its cost grows
    faster than linearly, so it is measured at 1,000, 2,000, 4,000, ... services while
    ``t ~ size^k`` fitted to the runs so far predicts the next one within ``cap``
    seconds; if ``n`` is not reached, the figure is the extrapolation to ``n``."""
    nft = Nft(ns)

    def load(k: int) -> float:
        text = kube_proxy_text(plan, k)
        dt, _ = timed(lambda: nft.run(text))
        nft.run("delete table ip kp\n")
        return dt

    label = f"kube-proxy-style layout {n} x 5 (chain per service + numgen vmap)"
    try:
        done: list[tuple[int, float]] = []
        size = min(n, 1000)
        while True:
            done.append((size, load(size)))
            if size == n:
                line(label, done[-1][1])
                return
            nxt = min(2 * size, n)
            k = _exponent(done)
            if done[-1][1] * (nxt / size) ** k > cap:
                estimate = done[-1][1] * (n / size) ** k
                runs = ", ".join(f"{m}: {t * 1000:.0f} ms" for m, t in done)
                _CPU[0] = -1.0
                line(
                    label,
                    estimate,
                    f"EXTRAPOLATED, not measured: t ~ n^{k:.2f} fitted to runs at {runs}; "
                    f"the next run would exceed --kp-time-cap {cap:.0f} s",
                )
                return
            size = nxt
    finally:
        nft.close()


def read_back(be: NftablesBackend, n: int) -> None:
    """Full read-back: the netlink reader, the plan on top, libnftables' listing; and
    the floor under the first, the kernel's dump of every element, undecoded."""
    src = nft_source(be._nft.netlink, "ip")
    infos = [nlread.set_info(r) for r in src.sets()]
    gc.collect()
    raw: list[list[bytes]] = []
    dt, _ = timed(lambda: raw.extend(src.elements(i.name) for i in infos))
    size = sum(len(b) for replies in raw for b in replies)
    line(
        f"floor: netlink dump of every element of the {n}-service table, undecoded",
        dt,
        f"{size / 1e6:.1f} MB",
    )
    gc.collect()
    dt, ruleset = timed(be.observe)
    line(f"read-back of the {n}-service table (observe(): netlink dump + decode)", dt)
    gc.collect()
    dt, _ = timed(lambda: observed.observed_plan(ruleset, NODE))  # type: ignore[arg-type]
    line(f"observed_plan() on that read-back at {n} (pure)", dt)
    gc.collect()
    dt, _ = timed(be.observed_plan)
    line(f"observed_plan() at {n}, end to end (what svcnet diff reads)", dt)
    gc.collect()
    dt, _ = timed(be.observe_libnftables)
    line(f"read-back of the {n}-service table through libnftables (JSON list + parse)", dt)


def _spread(times: list[float]) -> str:
    med, top = statistics.median(times) * 1000, max(times) * 1000
    return f"median {med:.2f} ms / max {top:.2f} ms"


def evaluations(be: NftablesBackend, plan: Plan, n: int, calls: int) -> None:
    """evaluate() and trace() per call for the first, middle and last service and a miss."""
    names = sorted(plan.services, key=lambda r: (len(r.name), r.name))
    taken = {ip for s in plan.services.values() for ip in s.cluster_ips}
    miss = next(str(a) for a in SVC_NET.hosts() if str(a) not in taken)
    picks = [
        ("first service", plan.services[names[0]].cluster_ips[0]),
        ("middle service", plan.services[names[len(names) // 2]].cluster_ips[0]),
        ("last service", plan.services[names[-1]].cluster_ips[0]),
        ("no service at", miss),
    ]
    for label, ip in picks:
        probe = Probe(SourceKind.POD, "10.1.0.99", NODE, ip, 80)
        for what, fn in (("evaluate", be.evaluate), ("trace", be.trace)):
            times: list[float] = []
            cpu: list[float] = []
            outcome: object = None
            for _ in range(calls):
                dt, outcome = timed(lambda fn=fn, p=probe: fn(p))  # type: ignore[misc]
                times.append(dt)
                cpu.append(_CPU[0])
            _CPU[0] = statistics.median(cpu)
            note = f"{_spread(times)} over {calls} calls"
            if what == "evaluate":
                note += f"; {outcome}"
            line(f"one {what}() at {n}, {label} ({ip})", statistics.median(times), note)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--big", type=int, default=50000, help="0 skips the big full sync")
    ap.add_argument("--kp-services", type=int, default=10000, help="0 skips kube-proxy style")
    ap.add_argument("--kp-time-cap", type=float, default=60.0)
    ap.add_argument("--calls", type=int, default=50, help="evaluate/trace calls per probe")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_nft: needs root", file=sys.stderr)
        return 2
    n = args.services
    state = cluster(n)
    ns = f"svcnet-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        be = NftablesBackend(NODE, netns=ns)
        dt, value = timed(lambda: plans.compile(state, NODE))
        plan = value
        assert isinstance(plan, Plan)
        line(f"compile {n} services x 5 endpoints", dt)

        def full() -> None:
            be.sync(plans.compile(state, NODE))

        dt, _ = timed(full)
        line(f"full sync {n} x 5 (compile + render + apply)", dt)
        if args.kp_services:
            kube_proxy(ns, plan, min(args.kp_services, n), args.kp_time_cap)

        # 1. a pod of svc-17 turns unready: the first service with 4 endpoints, so the
        #    shared chains fwd-cluster-4[-masq] and rt_c4_c4m_c4m are created (and the
        #    kernel re-validates the verdict maps' jumps);
        # 2. a pod of svc-18 turns unready: element updates only (the usual case).
        def change(st: ClusterState, pl: Plan, pod_name: str) -> tuple[ClusterState, Plan]:
            pod = st.pods[("default", pod_name)]
            t_step, value = timed(lambda: st.step(Apply((attrs.evolve(pod, ready=False),))))
            assert isinstance(value, ClusterState)
            times.append(t_step)
            pl2, changes = plans.advance(pl, st, value)
            be.apply(changes)
            return value, pl2

        times: list[float] = []
        after: list[tuple[ClusterState, Plan]] = []
        dt_new, _ = timed(lambda: after.append(change(state, plan, "p-17-2")))
        cpu_new = _CPU[0]
        dt, _ = timed(lambda: change(*after[0], "p-18-2"))
        line(
            f"one endpoint change at {n} (state step + update + diff + apply)",
            dt,
            f"state step {times[1] * 1000:.0f} ms; the first change that needs new shared "
            f"chains: {dt_new * 1000:.0f} ms, cpu {cpu_new * 1000:.0f} ms",
        )
        read_back(be, n)
        evaluations(be, plan, n, args.calls)
        be.cleanup()
        if args.big:
            big = synthetic_plan(args.big)
            dt, _ = timed(lambda: be.sync(big))
            line(f"full sync {args.big} x 5 (render + apply; synthetic plan)", dt)
            be.cleanup()
        be.close()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
