"""Benchmark of svcnet's iptables backend, inside network namespaces it creates.

    python backends/iptables/bench_ipt.py [--services 10000] [--nft-services 2000]
                                          [--endpoints 5] [--iptc 1000]

Plans come from svcnet.plan.compile on a real ClusterState (N ClusterIP services,
E ready pods each, on another node). Prints one line per figure:
- per variant (legacy at N services; nft at --nft-services, because iptables-nft-restore
  plus the kernel's nf_tables checks grow super-linearly: 10,000 services took 538 s):
  the restore driver's full sync, a plain ``*-restore --noflush`` of the same rendered
  text into a fresh namespace (svcnet's overhead), and a one-service change (one
  endpoint replaced) end to end: diff + render + restore (``Backend.update``);
- the python-iptables (iptc) driver's full sync at --iptc services.
Needs root; every namespace is deleted at the end, also on failure. Default run: under
4 minutes on a loaded 2-core box.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from svcnet_iptables import IptablesBackend
from svcnet_iptables.render import Renderer, full_sync

from svcnet import manifests
from svcnet.model import ClusterConfig, IPFamily, Kind, ObjectKey
from svcnet.plan import Plan, compile
from svcnet.state import Apply, ClusterState, Delete

CONFIG = ClusterConfig(service_cidrs=("10.96.0.0/12",), cluster_cidrs=("10.244.0.0/14",))
NODE = "node-a"


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
    plan = compile(state, NODE)
    built = time.perf_counter() - t0
    with netns() as ns:
        be = IptablesBackend(NODE, netns=ns, variant=variant)
        be._check()
        t0 = time.perf_counter()
        be.sync(plan)
        full = time.perf_counter() - t0
        rules = sum(t.count("\n-A ") for t in be.last_texts.values())
        print(
            f"restore driver ({variant}): full sync {n} services x {e} endpoints "
            f"({rules} rules): {full:.2f} s  [state+compile {built:.1f} s; {load()}]",
            flush=True,
        )
        # one endpoint of one service replaced: the event, compiled, then update()
        t0 = time.perf_counter()
        state2 = state.step(Delete((ObjectKey(Kind.POD, "bench", f"p{e}"),)))
        state2 = state2.step(Apply(tuple(manifests.load([_pod(n * e + 7, "a1")]))))
        plan2 = compile(state2, NODE)
        compiled = time.perf_counter() - t0
        t0 = time.perf_counter()
        be.update(plan2)
        one = time.perf_counter() - t0
        print(
            f"restore driver ({variant}): one-service change at {n} services, "
            f"update (diff+render+restore): {one * 1000:.0f} ms (target < 200 ms) "
            f"[state step+compile {compiled * 1000:.0f} ms; {load()}]",
            flush=True,
        )
    texts = full_sync(Renderer(), plan, {})
    plain = plain_restore(variant, texts)
    print(
        f"plain iptables-{variant}-restore of the same text: {plain:.2f} s; "
        f"svcnet overhead {100 * (full - plain) / plain:+.0f}% (target <= 30%) [{load()}]",
        flush=True,
    )


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
    ap.add_argument("--nft-services", type=int, default=2000, help="nft variant size")
    ap.add_argument("--endpoints", type=int, default=5)
    ap.add_argument("--iptc", type=int, default=1000)
    ap.add_argument("--variant", choices=["nft", "legacy"], default=None, help="only this one")
    args = ap.parse_args()
    sizes = {"legacy": args.services, "nft": args.nft_services}
    for variant in (args.variant,) if args.variant else ("legacy", "nft"):
        restore_figures(variant, sizes[variant], args.endpoints)
    if args.iptc:
        iptc_figure(args.iptc, args.endpoints)
    return 0


if __name__ == "__main__":
    sys.exit(main())
