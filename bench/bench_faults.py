"""Benchmark: the figures of the fault-injection issue that are times, not tests.

- Labels: a Service with N labels and an N-key selector, loaded, written back
  (``to_manifest``, the writer that was quadratic) and loaded again, at 20,000
  and 200,000 labels;
- a file of N ClusterIP services that exhausts the default service CIDR
  (10.96.0.0/16: 65,534 addresses), at N = 70,000: YAML parsed (libyaml), then
  the step refuses it; parse and refusal timed apart;
- the worst case of the fuzzed inputs: the large inputs of
  tests/faults/test_fuzz_inputs.py (deep nesting, huge maps, aliases), each
  through ``svcnet.load`` and through ``parse_scenario``; the slowest is printed.

Run: ``python bench/bench_faults.py`` (from the repository root).
"""

from __future__ import annotations

import contextlib
import pathlib
import sys
import time
from collections.abc import Callable
from typing import Any

import svcnet
from svcnet.errors import SvcnetError
from svcnet.manifests import to_manifest
from svcnet.scenario import parse_scenario


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = call()
    return time.perf_counter() - t0, out


def labels_round_trip(n: int) -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "big", "labels": {f"k{i}": f"v{i}" for i in range(n)}},
        "spec": {"selector": {f"s{i}": "x" for i in range(n)}, "ports": [{"port": 80}]},
    }
    t_load, (svc,) = timed(lambda: svcnet.load([doc]))
    t_write, manifest = timed(lambda: to_manifest(svc))
    t_back, (back,) = timed(lambda: svcnet.load([manifest]))
    assert back == svc
    t_get, _ = timed(lambda: [svc.labels[f"k{i}"] for i in range(n)])
    print(
        f"labels {n:>7,}: load {t_load:6.2f} s  write {t_write:6.2f} s  "
        f"load again {t_back:6.2f} s  round trip {t_load + t_write + t_back:6.2f} s  "
        f"{n:,} lookups {t_get:5.2f} s"
    )


def exhausting_file(n: int) -> None:
    import yaml

    docs = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"s{i}", "namespace": "default"},
            "spec": {"selector": {"app": f"a{i}"}, "ports": [{"port": 80}]},
        }
        for i in range(n)
    ]
    text = yaml.safe_dump_all(docs)
    t_load, objects = timed(lambda: svcnet.load(text))

    def refuse() -> str:
        try:
            svcnet.ClusterState.empty().step(svcnet.Apply(objects))
        except SvcnetError as e:
            return str(e)
        raise AssertionError("the file was accepted")

    t_step, why = timed(refuse)
    print(
        f"exhausting file, {n:,} services: parse {t_load:6.2f} s  refused by the step in "
        f"{t_step:5.2f} s  total {t_load + t_step:6.2f} s ({why[:60]}...)"
    )


def fuzz_worst_case() -> None:
    here = pathlib.Path(__file__).resolve().parent
    sys.path.insert(0, str(here.parent / "tests" / "faults"))
    from test_fuzz_inputs import LARGE

    for what, call in (
        ("svcnet.load", svcnet.load),
        ("parse_scenario", lambda text: parse_scenario(text, "bench.yaml")),
    ):
        times = []
        for i, text in enumerate(LARGE):

            def run(text: str = text, call: Callable[[str], Any] = call) -> None:
                with contextlib.suppress(SvcnetError):
                    call(text)

            t, _ = timed(run)
            times.append((t, i, len(text)))
        t, i, size = max(times)
        total = sum(t for t, _, _ in times)
        print(
            f"fuzz worst case, {what}: {t:.2f} s (large input {i}, {size:,} characters); "
            f"all {len(LARGE)} large inputs {total:.2f} s"
        )


def main() -> None:
    for n in (20_000, 200_000):
        labels_round_trip(n)
    exhausting_file(70_000)
    fuzz_worst_case()


if __name__ == "__main__":
    main()
