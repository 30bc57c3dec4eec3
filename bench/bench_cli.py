"""Benchmark: the store and the ``svcnet`` command at 10,000 services / 50,000 pods
(run by ``nox -s bench -- cli``; figures in docs/performance.md).

Builds, in a temporary directory (nothing is cached across runs), a store of
10,000 ClusterIP services with 5 ready pods each on 100 nodes: the state from
one ``Apply`` (``ClusterState.step``), written by ``Session.save`` as every
``svcnet apply`` writes it (rows, change log, materialised endpoints). Then times
each command end to end in a fresh process (process start included), median of
``--runs`` (5): ``get svc NAME``, ``describe svc NAME``, ``get svc``, ``get
pods``, ``apply -f`` of one pod, ``--help``. Targets (issue 17, goal 2): one
object <= 0.3 s, the list of all services <= 1 s.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench_state import cluster_objects

from svcnet.model import ClusterConfig
from svcnet.state import Apply, ClusterState
from svcnet.store import Store

ONE_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: extra-{n}
  labels: {{app: a17}}
spec:
  nodeName: node-3
  containers: [{{name: c, image: nginx}}]
"""


def build(path: str, services: int, pods_per_service: int, nodes: int) -> float:
    """Write the store at ``path``; returns the seconds it took."""
    t0 = time.perf_counter()
    config = ClusterConfig(service_cidrs=("10.96.0.0/16",), cluster_cidrs=("10.0.0.0/8",))
    objects = cluster_objects(services, pods_per_service, nodes)
    gc.collect()
    gc.freeze()
    state = ClusterState.empty(config).step(Apply(tuple(objects)))
    store = Store(path)
    with store.modify() as session:
        session.save(state)
    return time.perf_counter() - t0


def timed(argv: list[str], env: dict[str, str], runs: int) -> tuple[float, float, str]:
    """Median wall seconds and median CPU seconds (user + system) of ``svcnet ARGV``
    in a fresh process each run, and its output. (CPU time is what a loaded machine
    does not inflate: the bench shares its cores.)"""
    walls: list[float] = []
    cpus: list[float] = []
    out = ""
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "svcnet", *argv], env=env, capture_output=True, text=True
        )
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if done.returncode != 0:
            raise SystemExit(f"svcnet {' '.join(argv)} failed: {done.stderr.strip()}")
        out = done.stdout
    return statistics.median(walls), statistics.median(cpus), out


def _show(label: str, wall: float, cpu: float, runs: int, note: str = "") -> None:
    print(
        f"cli: svcnet {label}: {wall * 1000:.0f} ms wall, {cpu * 1000:.0f} ms CPU"
        f" (median of {runs}{note})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--pods-per-service", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", metavar="DIR", help="Build the store in DIR and keep it.")
    args = parser.parse_args()
    tmp = args.keep or tempfile.mkdtemp(prefix="svcnet-bench-cli-")
    os.makedirs(tmp, exist_ok=True)
    try:
        path = os.path.join(tmp, "store.db")
        if os.path.exists(path):
            os.remove(path)
        took = build(path, args.services, args.pods_per_service, args.nodes)
        size = os.path.getsize(path) / 2**20
        pods = args.services * args.pods_per_service
        print(
            f"cli: store of {args.services} services, {pods} pods, {args.nodes} nodes"
            f" built in {took:.1f} s ({size:.0f} MiB)"
        )
        # bytecode as an installed svcnet has it: compiled once (the warm-up run)
        # into the temporary directory, never into the tree
        env = {**os.environ, "SVCNET_STORE": path, "PYTHONPYCACHEPREFIX": f"{tmp}/pycache"}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        timed(["--help"], env, 1)
        timed(["get", "svc", "svc-0"], env, 1)
        mid = f"svc-{args.services // 2}"
        commands: list[tuple[str, list[str]]] = [
            ("--help", ["--help"]),
            (f"get svc {mid}", ["get", "svc", mid]),
            (f"describe svc {mid}", ["describe", "svc", mid]),
            ("get svc", ["get", "svc"]),
            ("get pods", ["get", "pods"]),
        ]
        for label, argv in commands:
            wall, cpu, out = timed(argv, env, args.runs)
            _show(label, wall, cpu, args.runs, f"; {out.count(chr(10))} lines")
        manifest = os.path.join(tmp, "one-pod.yaml")
        walls, cpus = [], []
        for n in range(args.runs):
            with open(manifest, "w", encoding="utf-8") as f:
                f.write(ONE_POD.format(n=n))
            wall, cpu, _ = timed(["apply", "-f", manifest], env, 1)
            walls.append(wall)
            cpus.append(cpu)
        _show(
            "apply -f one-pod.yaml",
            statistics.median(walls),
            statistics.median(cpus),
            args.runs,
            "; each a new pod",
        )
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
