"""Benchmark: loading a manifest file of N ClusterIP services, and refusing it.

The file exhausts the default service CIDR (10.96.0.0/16: 65,534 addresses) at
N = 70,000, so ``svcnet apply -f`` must refuse it (issue 13 asks ≤ 2 s). Timed
apart, for the same documents as YAML (``---`` documents) and as JSON (a
``kind: List``, as ``kubectl get -o json`` writes it):

- ``events``: libyaml's event stream through PyYAML alone (``yaml.parse`` with the
  C parser): the floor of any loader built on PyYAML;
- ``pyyaml``: the old path, ``yaml.load_all(text, Loader=YamlLoader)``;
- ``fastload``: :func:`svcnet.manifests.fastload.documents` (the JSON fast path,
  or the lean constructor over PyYAML's C composer);
- ``json.loads``: the C json module alone (the floor for JSON);
- ``precount``: :func:`svcnet.manifests.precount.claims`, the count ``apply`` makes
  of a large input's ClusterIP claims before validating it;
- ``objects``: :func:`svcnet.manifests.load` over the already-read documents
  (validation and the model objects);
- ``step``: ``ClusterState.step`` refusing the batch;
- ``apply``: the whole command, ``svcnet --store TMP apply -f FILE`` in a
  subprocess (interpreter start, imports, reading, the count, refusal), timed from
  outside, with its CPU time (user + system, from ``os.wait4``).

Run: ``python bench/bench_manifest_load.py [N ...] [--no-pyyaml]`` (from the
repository root; default N = 7,000 and 70,000; ``--no-pyyaml`` skips the old
path, which takes ~40 s on the JSON file alone), or
``nox -s bench -- manifests``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import yaml

import svcnet
from svcnet.errors import SvcnetError
from svcnet.manifests import fastload, precount
from svcnet.manifests.fastload import YamlLoader


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = call()
    return time.perf_counter() - t0, out


def services(n: int) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"s{i}", "namespace": "default"},
            "spec": {"selector": {"app": f"a{i}"}, "ports": [{"port": 80}]},
        }
        for i in range(n)
    ]


def refuse(objects: list[Any]) -> str:
    try:
        svcnet.ClusterState.empty().step(svcnet.Apply(objects))
    except SvcnetError as e:
        return str(e)
    return "accepted"


def _children_cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def apply_command(path: str, tmp: str) -> tuple[float, float, int, str]:
    """Wall and CPU seconds of ``svcnet apply -f path``, its exit status and last line."""
    store = os.path.join(tmp, f"store-{time.monotonic_ns()}.db")
    cmd = [sys.executable, "-m", "svcnet.cli.main", "--store", store, "apply", "-f", path]
    cpu = _children_cpu()
    t, proc = timed(lambda: subprocess.run(cmd, capture_output=True, text=True, check=False))
    cpu = _children_cpu() - cpu
    return t, cpu, proc.returncode, (proc.stderr or proc.stdout).strip().splitlines()[-1:][0]


def one(n: int, with_pyyaml: bool, tmp: str) -> None:
    docs = services(n)
    texts = {
        "yaml": yaml.safe_dump_all(docs),
        "json": json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}, indent=2),
    }
    for fmt, text in texts.items():
        row = [f"{n:>7,} services, {fmt:4} ({len(text) / 1e6:5.1f} MB):"]
        if fmt == "yaml":
            t, _ = timed(lambda: sum(1 for _ in yaml.parse(text, Loader=YamlLoader)))  # noqa: B023
            row.append(f"events {t:5.2f} s")
        else:
            t, _ = timed(lambda: json.loads(text))  # noqa: B023
            row.append(f"json.loads {t:5.2f} s")
        if with_pyyaml:
            t, old = timed(lambda: list(yaml.load_all(text, Loader=YamlLoader)))  # noqa: B023
            row.append(f"pyyaml {t:6.2f} s")
        t_count, claims = timed(lambda: precount.claims(text))  # noqa: B023
        row.append(f"precount {t_count:5.2f} s ({len(claims or ())} claims)")
        t_fast, read = timed(lambda: fastload.documents(text))  # noqa: B023
        row.append(f"fastload {t_fast:5.2f} s")
        if with_pyyaml:
            assert read == old, "fastload and PyYAML disagree"
        t_obj, objects = timed(lambda: svcnet.load(read))  # noqa: B023
        t_step, why = timed(lambda: refuse(objects))  # noqa: B023
        row.append(f"objects {t_obj:5.2f} s  step {t_step:4.2f} s")
        path = os.path.join(tmp, f"svc{n}.{fmt}")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        t_cmd, cpu, rc, last = apply_command(path, tmp)
        row.append(f"apply {t_cmd:5.2f} s, {cpu:5.2f} s CPU (rc {rc})")
        print("  ".join(row), flush=True)
        print(f"    step: {why[:90]}\n    apply: {last[:90]}", flush=True)


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    sizes = [int(a.replace(",", "").replace("_", "")) for a in args] or [7_000, 70_000]
    with tempfile.TemporaryDirectory(prefix="svcnet-bench-") as tmp:
        print(f"load average {os.getloadavg()[0]:.2f}")
        for n in sizes:
            one(n, "--no-pyyaml" not in sys.argv, tmp)


if __name__ == "__main__":
    main()
