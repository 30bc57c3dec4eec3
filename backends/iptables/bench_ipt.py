"""Benchmark of svcnet's iptables backend, inside network namespaces it creates.

    python backends/iptables/bench_ipt.py [--services 10000] [--nft-services 10000]
                                          [--endpoints 5] [--iptc 1000] [--variant nft|legacy]
                                          [--no-probes]

Plans come from svcnet.plan.compile on a real ClusterState (N ClusterIP services,
E ready pods each, on another node). Prints one line per figure, per variant
(iptables-legacy and iptables-nft):
- the restore driver's full sync, and a plain ``*-restore --noflush`` of exactly the
  texts it wrote, into a fresh namespace (svcnet's overhead; for legacy, the medians
  of 5 alternating pairs);
- a one-service change as a node agent makes it: one endpoint of one service
  replaced (two pod events), ``svcnet.plan.advance`` (incremental compile + Changes),
  ``Backend.apply``; median and best of 5; and the same through a full ``compile`` +
  ``Backend.update`` for comparison;
- the python-iptables (iptc) driver's full sync at --iptc services;
- ``evaluate()`` (what ``svcnet trace`` runs) per call, for the first, middle and
  last service and an unused address: "cold" after ``refresh()`` (the nft variant
  reads each chain the walk reaches; legacy reads the family's tables whole every
  call) and "warm" (the nft variant reuses what it read while the namespace's
  nf_tables generation is unchanged); then the full read-back (``observe()`` and
  ``observed_plan()``) with its floors: ``*-save -t nat`` alone, and for legacy the
  kernel's table copy (``getsockopt(IPT_SO_GET_ENTRIES)``, which every legacy read
  of the nat table pays).
Before each timed operation the benchmark runs ``gc.collect()``: building the
10,000-service state leaves the cyclic collector a full pass of about 1 s due, which
otherwise lands inside whichever operation allocates next (a node agent pays it once,
at start-up, or never with ``gc.freeze()``). Needs root; every namespace is deleted at
the end, also on failure. The default run
takes about 9 minutes on the 2-core machine (the nft variant's full load of 10,000
services alone takes 2.5 minutes, and the plain restore as long again).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from svcnet_iptables import IptablesBackend

from svcnet import manifests
from svcnet.kernel import entered
from svcnet.model import ClusterConfig, IPFamily, Kind, ObjectKey
from svcnet.plan import Plan, advance, compile
from svcnet.probe import Probe, SourceKind
from svcnet.state import Apply, ClusterState, Delete

CONFIG = ClusterConfig(service_cidrs=("10.96.0.0/12",), cluster_cidrs=("10.244.0.0/14",))
NODE = "node-a"
ROUNDS = 5
PROBES = True  # evaluate/read-back figures (--no-probes: skip)
PAIRS = 5  # full sync / plain restore pairs (legacy; the nft variant's take minutes)


def _node(name: str, ip: str, cidr: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"podCIDRs": [cidr]},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    }


def _pod(k: int, app: str) -> dict[str, Any]:
    ip = f"10.{244 + (k + 1) // 65536}.{((k + 1) // 256) % 256}.{(k + 1) % 256}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"p{k}", "namespace": "bench", "labels": {"app": app}},
        "spec": {"nodeName": "node-b", "containers": [{"name": "c"}]},
        "status": {
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def cluster(n: int, endpoints: int) -> ClusterState:
    docs = [
        _node(NODE, "192.168.56.11", "10.244.0.0/24"),
        _node("node-b", "192.168.56.12", "10.245.0.0/16"),
    ]
    for i in range(n):
        j = i + 256
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"svc-{i}", "namespace": "bench"},
                "spec": {
                    "selector": {"app": f"a{i}"},
                    "clusterIP": f"10.{96 + j // 65536}.{(j // 256) % 256}.{j % 256}",
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
                },
            }
        )
        docs += [_pod(i * endpoints + e, f"a{i}") for e in range(endpoints)]
    return ClusterState.empty(CONFIG).step(Apply(tuple(manifests.load(docs))))


@contextmanager
def netns() -> Iterator[str]:
    name = f"svcnet-bench-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def restore_figures(variant: str, n: int, e: int) -> None:
    t0 = time.perf_counter()
    state = cluster(n, e)
    plan = first_plan = compile(state, NODE)
    built = time.perf_counter() - t0
    with netns() as ns:
        be = IptablesBackend(NODE, netns=ns, variant=variant)
        be._check()
        gc.collect()  # the cluster build's debt, not the operation's (see docstring)
        t0 = time.perf_counter()
        be.sync(plan)
        full = time.perf_counter() - t0
        texts = dict(be.last_texts)  # exactly what the sync wrote
        if PROBES:
            probe_figures(be, ns, variant, n)
        rules = sum(t.count("\n-A ") for t in texts.values())
        print(
            f"restore driver ({variant}): full sync {n} services x {e} endpoints "
            f"({rules} rules): {full:.2f} s  [state+compile {built:.1f} s; {load()}]",
            flush=True,
        )
        # One endpoint of one service replaced, as a node agent sees it: the pod
        # events applied to the state, the plan advanced incrementally (only the
        # changed service is recompiled and compared), the Changes applied.
        times = []
        for k in range(ROUNDS):
            pod = _pod(n * e + 7 + k, "a1")
            gone = ObjectKey(Kind.POD, "bench", f"p{e + k}")
            gc.collect()  # the cluster build's debt, not the operation's (see docstring)
            t0 = time.perf_counter()
            new_state = state.step(Delete((gone,))).step(Apply(tuple(manifests.load([pod]))))
            plan, changes = advance(plan, state, new_state)
            be.apply(changes)
            times.append(time.perf_counter() - t0)
            state = new_state
        times.sort()
        print(
            f"restore driver ({variant}): one-service change at {n} services, end to end "
            f"(2 pod events + advance + apply): median {times[len(times) // 2] * 1000:.0f} ms, "
            f"best {times[0] * 1000:.0f} ms over {ROUNDS} (target < 200 ms) [{load()}]",
            flush=True,
        )
        # the same through a full compile and Backend.update (diffs every service)
        gone = ObjectKey(Kind.POD, "bench", f"p{e + ROUNDS}")
        state2 = state.step(Delete((gone,)))
        gc.collect()  # the cluster build's debt, not the operation's (see docstring)
        t0 = time.perf_counter()
        be.update(compile(state2, NODE))
        print(
            f"restore driver ({variant}): the same via compile() + update(): "
            f"{(time.perf_counter() - t0) * 1000:.0f} ms [{load()}]",
            flush=True,
        )
    fulls, plains = [full], [plain_restore(variant, texts)]
    # more pairs where they are cheap; the pairs alternate, so a passing disturbance
    # on the shared machine hits both sides alike
    for _ in range(PAIRS - 1 if n * e <= 50_000 and variant == "legacy" else 0):
        with netns() as ns:
            be = IptablesBackend(NODE, netns=ns, variant=variant)
            be._check()
            gc.collect()
            t0 = time.perf_counter()
            be.sync(first_plan)
            fulls.append(time.perf_counter() - t0)
        plains.append(plain_restore(variant, texts))
    full, plain = sorted(fulls)[len(fulls) // 2], sorted(plains)[len(plains) // 2]
    print(
        f"plain iptables-{variant}-restore of the same text: {plain:.2f} s (median of "
        f"{len(plains)}; full syncs {', '.join(f'{f:.2f}' for f in fulls)} s, median "
        f"{full:.2f} s); svcnet overhead {100 * (full - plain) / plain:+.0f}% "
        f"(target <= 30%) [{load()}]",
        flush=True,
    )


def cluster_ip(i: int) -> str:
    """The ClusterIP :func:`cluster` gives service ``i``."""
    j = i + 256
    return f"10.{96 + j // 65536}.{(j // 256) % 256}.{j % 256}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def probe_figures(
    be: IptablesBackend, ns: str, variant: str, n: int, *, readback: bool = True
) -> None:
    """evaluate() per call, cold and warm, and (``readback``) the full read-back (see
    docstring)."""
    cases = {
        "first": cluster_ip(0),
        "middle": cluster_ip(n // 2),
        "last": cluster_ip(n - 1),
        "miss": "10.111.250.250",
    }
    warm_rounds = 5 if variant == "nft" else 3
    for name, dst in cases.items():
        probe = Probe(SourceKind.POD, "10.244.0.5", NODE, dst, 80)
        be.refresh()
        gc.collect()
        t0 = time.perf_counter()
        outcome = be.evaluate(probe)
        cold = time.perf_counter() - t0
        warm = []
        for _ in range(warm_rounds):
            t0 = time.perf_counter()
            be.evaluate(probe)
            warm.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        lines = len(be.trace(probe))
        trace = time.perf_counter() - t0
        warm.sort()
        print(
            f"evaluate ({variant}) {name} of {n} ({outcome.verdict.value}): cold {_ms(cold)}, "
            f"then median {_ms(warm[len(warm) // 2])} over {warm_rounds}; trace "
            f"({lines} lines) {_ms(trace)} [{load()}]",
            flush=True,
        )
    if not readback:
        return
    gc.collect()
    t0 = time.perf_counter()
    be.observe()
    observed = time.perf_counter() - t0
    t0 = time.perf_counter()
    be.observed_plan()
    decoded = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run(
        ["ip", "netns", "exec", ns, f"iptables-{variant}-save", "-t", "nat"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    save = time.perf_counter() - t0
    floor = f"; kernel table copy {_ms(legacy_copy_seconds(ns))}" if variant == "legacy" else ""
    print(
        f"full read-back ({variant}) at {n}: observe() {observed:.2f} s, observed_plan() "
        f"{decoded:.2f} s; floor: iptables-{variant}-save -t nat alone {save:.2f} s{floor} "
        f"[{load()}]",
        flush=True,
    )


def legacy_copy_seconds(ns: str) -> float:
    """One IPT_SO_GET_INFO + IPT_SO_GET_ENTRIES of the legacy nat table in ``ns``:
    what every read of a legacy table costs at least (the kernel copies every rule;
    there is no partial read)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    with entered(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        t0 = time.perf_counter()
        info = ctypes.create_string_buffer(b"nat", 84)
        size = ctypes.c_uint32(84)
        if libc.getsockopt(sock.fileno(), socket.IPPROTO_IP, 64, info, ctypes.byref(size)):
            raise OSError(ctypes.get_errno(), "IPT_SO_GET_INFO")
        total = struct.unpack_from("=I", info.raw, 80)[0]
        entries = ctypes.create_string_buffer(40 + total)
        entries[:3] = b"nat"
        struct.pack_into("=I", entries, 32, total)
        size = ctypes.c_uint32(40 + total)
        if libc.getsockopt(sock.fileno(), socket.IPPROTO_IP, 65, entries, ctypes.byref(size)):
            raise OSError(ctypes.get_errno(), "IPT_SO_GET_ENTRIES")
        return time.perf_counter() - t0
    finally:
        sock.close()


def plain_restore(variant: str, texts: dict[tuple[IPFamily, str], str]) -> float:
    with netns() as ns:
        t0 = time.perf_counter()
        for (family, _table), text in texts.items():
            tool = "ip6tables" if family is IPFamily.IPv6 else "iptables"
            subprocess.run(
                ["ip", "netns", "exec", ns, f"{tool}-{variant}-restore", "--noflush"],
                input=text,
                text=True,
                check=True,
                capture_output=True,
            )
        return time.perf_counter() - t0


def iptc_figure(n: int, e: int) -> None:
    plan: Plan = compile(cluster(n, e), NODE)
    with netns() as ns:
        be = IptablesBackend(NODE, netns=ns, driver="iptc")
        gc.collect()  # the cluster build's debt, not the operation's (see docstring)
        t0 = time.perf_counter()
        be.sync(plan)
        took = time.perf_counter() - t0
        rules = sum(t.count("\n-A ") for t in be.last_texts.values())
        print(
            f"iptc driver (legacy): full sync {n} services x {e} endpoints ({rules} rules): "
            f"{took:.2f} s (incl. IPv6 worker start) [{load()}]",
            flush=True,
        )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=10000, help="legacy variant size")
    ap.add_argument("--nft-services", type=int, default=10000, help="nft variant size")
    ap.add_argument("--endpoints", type=int, default=5)
    ap.add_argument("--iptc", type=int, default=1000)
    ap.add_argument("--variant", choices=["nft", "legacy"], default=None, help="only this one")
    ap.add_argument("--no-probes", action="store_true", help="skip the evaluate/read-back figures")
    args = ap.parse_args()
    global PROBES
    PROBES = not args.no_probes
    sizes = {"legacy": args.services, "nft": args.nft_services}
    for variant in (args.variant,) if args.variant else ("legacy", "nft"):
        restore_figures(variant, sizes[variant], args.endpoints)
    if args.iptc:
        iptc_figure(args.iptc, args.endpoints)
    return 0


if __name__ == "__main__":
    sys.exit(main())
