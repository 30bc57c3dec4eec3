"""Helpers shared by the store and agent tests (not a test module): the demo's
objects, one locked save of some events, a comparison of two states, polling with a
deadline, the ``svcnet`` command against a store, and the fourth web pod they apply."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time
from collections.abc import Callable

from svcnet import manifests
from svcnet.model import KubeObject
from svcnet.state import Apply, ClusterState, Configure, Delete
from svcnet.store import Store

DEMO = pathlib.Path(__file__).parent.parent / "tests" / "fixtures" / "demo"

# web-4: a fourth `app: web` pod of the demo, on node-b, ready, with both named ports
WEB4_POD = """\
apiVersion: v1
kind: Pod
metadata: {name: web-4, labels: {app: web}}
spec:
  nodeName: node-b
  containers:
    - name: web
      ports: [{name: http, containerPort: 8080}, {name: echo, containerPort: 8053, protocol: UDP}]
status: {podIP: 10.244.2.12, conditions: [{type: Ready, status: "True"}]}
"""


def demo() -> Apply:
    """The demo's objects (tests/fixtures/demo/*.yaml, in file order) as one Apply."""
    objs: list[KubeObject] = []
    for f in sorted(DEMO.glob("*.yaml")):
        objs += manifests.load(f.read_text(), filename=str(f))
    return Apply(tuple(objs))


def save(store: Store, *events: Apply | Delete | Configure) -> ClusterState:
    """Step the stored state through ``events`` and save it, in one locked session;
    the state saved (after the store's control plane settled it)."""
    with store.modify() as s:
        state = s.state
        for e in events:
            state = state.step(e)
        s.save(state)
        return s.state


def same(a: ClusterState, b: ClusterState) -> None:
    """Assert two states hold the same configuration, objects and endpoints."""
    for field in (
        "config",
        "nodes",
        "pods",
        "services",
        "slices",
        "endpoints",
        "deployments",
        "replica_sets",
    ):
        assert getattr(a, field) == getattr(b, field), field


def wait(what: str, cond: Callable[[], bool], deadline: float, interval: float = 0.01) -> None:
    """Poll ``cond`` until it holds; fail naming ``what`` after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"not within {deadline} s: {what}")
        time.sleep(interval)


def svcnet(store: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m svcnet --store STORE ARGS...``, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "svcnet", "--store", store, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
