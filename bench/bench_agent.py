"""Benchmark: network programming latency of the node agent (issue "Live cluster").

Kubernetes defines the SLI as the time from the change of an object to the rules
being in the data plane of a node. Here: one long-lived process writes through the
Store API (``Store.modify(known=...)``, no reload per write); one ``svcnet agent``
per node (separate processes, nftables, each in its own ``svcnet-`` network
namespace) lists the store, programs its node, then watches. For each of
``--changes`` changes (a ready pod that backs a random service, added then
deleted, alternately) the writer commits, then polls every agent's status file
until each reports the new store version; the latency of a change is the time
from just before the commit to the last node's report. Printed: p50, p99 and max
of those, per size, plus the p50/p99 the agents themselves measured (from each
change's commit time to the end of their install).

Run as root: ``python bench/bench_agent.py [--services 100 1000 10000]
[--changes 200] [--nodes 3] [--pods 2]`` (``nox -s bench -- agent``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pathlib
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from svcnet.kernel import netns
from svcnet.model import ClusterConfig, Labels, Node, Pod, Service, ServicePort
from svcnet.state import Apply, ClusterState, Delete
from svcnet.store import Store

CONFIG = ClusterConfig(service_cidrs=("10.96.0.0/12",), cluster_cidrs=("10.0.0.0/8",))
DEADLINE = 600.0  # seconds an agent may take to come up or to program one change
POLL = 0.0005  # seconds between two reads of the status files


def cluster(services: int, nodes: int, pods: int) -> ClusterState:
    objs: list[Node | Service | Pod] = [
        Node(f"node-{k}", pod_cidrs=(f"10.{k + 1}.0.0/16",), addresses=(f"192.168.0.{k + 1}",))
        for k in range(nodes)
    ]
    for i in range(services):
        objs.append(
            Service(
                "default",
                f"svc-{i}",
                selector=Labels.of({"app": f"a{i}"}),
                ports=(ServicePort(80, target_port=8080),),
            )
        )
        objs.extend(ready_pod(f"p-{i}-{j}", i, f"node-{(i + j) % nodes}") for j in range(pods))
    return ClusterState.empty(CONFIG).step(Apply(tuple(objs)))


def ready_pod(name: str, service: int, node: str) -> Pod:
    return Pod(
        "default",
        name,
        labels=Labels.of({"app": f"a{service}"}),
        node_name=node,
        ready=True,
    )


def status_version(path: pathlib.Path) -> int:
    try:
        return int(json.loads(path.read_text())["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def wait_for(
    paths: list[pathlib.Path], version: int, agents: list[subprocess.Popen[bytes]]
) -> None:
    deadline = time.monotonic() + DEADLINE
    pending = list(paths)
    while pending:
        pending = [p for p in pending if status_version(p) < version]
        if not pending:
            return
        for proc in agents:
            if proc.poll() is not None:
                raise SystemExit(f"an agent exited with {proc.returncode}; see its log")
        if time.monotonic() > deadline:
            raise SystemExit(f"no agent reached version {version} within {DEADLINE}s: {pending}")
        time.sleep(POLL)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(
    services: int, changes: int, nodes: int, pods: int, seed: int, keep_logs: str | None
) -> None:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="svcnet-bench-agent-") as tmp:
        work = pathlib.Path(tmp)
        store = Store(str(work / "store.db"))
        t0 = time.perf_counter()
        state = cluster(services, nodes, pods)
        with store.modify() as s:
            s.save(state)
            known = (s.state, s.version)
        setup = time.perf_counter() - t0
        gc.collect()
        gc.freeze()  # the writer's big state: no collector pass walks it during the run
        names = [netns.fresh("svcnet-bench-agent-") for _ in range(nodes)]
        agents: list[subprocess.Popen[bytes]] = []
        statuses = [work / f"agent-{k}.json" for k in range(nodes)]
        logs = []
        try:
            for k, ns in enumerate(names):
                log = open(work / f"agent-{k}.log", "wb")  # noqa: SIM115 - closed below
                logs.append(log)
                agents.append(
                    subprocess.Popen(
                        [
                            sys.executable, "-m", "svcnet", "--store", store.path, "agent",
                            "--node", f"node-{k}", "--backend", "nftables", "--netns", ns,
                            "--status-file", str(statuses[k]),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                    )
                )  # fmt: skip
            t1 = time.perf_counter()
            wait_for(statuses, known[1], agents)
            startup = time.perf_counter() - t1
            latencies: list[float] = []
            extra: Pod | None = None
            for _ in range(changes):
                with store.modify(known=known) as s:
                    if extra is None:
                        i = rng.randrange(services)
                        extra = ready_pod(f"bench-{i}", i, f"node-{rng.randrange(nodes)}")
                        event: Apply | Delete = Apply((extra,))
                    else:
                        event, extra = Delete((extra.key,)), None
                    s.save(s.state.step(event))
                    known = (s.state, s.version)
                    start = time.perf_counter()  # the commit follows when the block ends
                wait_for(statuses, known[1], agents)
                latencies.append(time.perf_counter() - start)
            reported = [json.loads(p.read_text()).get("latency_ms", {}) for p in statuses]
        finally:
            for proc in agents:
                proc.terminate()
            for proc in agents:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for log in logs:
                log.close()
            netns.delete_all(names)
            if keep_logs:
                os.makedirs(keep_logs, exist_ok=True)
                for k in range(len(logs)):
                    shutil.copy(work / f"agent-{k}.log", f"{keep_logs}/agent-{services}-{k}.log")
        ms = [x * 1000 for x in latencies]
        own = ", ".join(
            f"node-{k} p50 {r.get('p50', float('nan')):.1f} p99 {r.get('p99', float('nan')):.1f}"
            for k, r in enumerate(reported)
        )
        print(
            f"agent latency {services:>6} services x {pods} pods, {nodes} nodes, nftables, "
            f"{changes} changes: p50 {statistics.median(ms):.1f} ms, p99 {pct(ms, 0.99):.1f} ms, "
            f"max {max(ms):.1f} ms, worst five {[round(x) for x in sorted(ms)[-5:]]} "
            f"(store written in {setup:.1f} s, agents up in "
            f"{startup:.1f} s; as the agents measured it, ms: {own})",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--pods", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--logs", help="copy the agents' logs into this folder")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_agent: needs root (network namespaces, nftables)")
    for n in args.services:
        run(n, args.changes, args.nodes, args.pods, args.seed, args.logs)


if __name__ == "__main__":
    main()
