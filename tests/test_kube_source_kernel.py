"""The Kubernetes source end to end, in the kernel: conformance scenarios served as
Services, EndpointSlices and Nodes by the API stand-in (tests/kubeapi_standin.py)
to an Agent with KubeSource and the nftables backend in a fresh ``svcnet-``
namespace give the same kernel read-back answers as an Agent with the store
source in another namespace (and as svcnet.semantics).

Each scenario's state is taken at its first ``expect`` step; its endpoints become
EndpointSlices (as the EndpointSlice controller would write them), its services
and nodes the API server's JSON (with managedFields, ownerReferences and unknown
fields).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kubernetes", reason="the kubernetes extra is not installed")

from kubeapi_standin import StandIn, api_objects
from storehelp import save

from svcnet import manifests, semantics
from svcnet.agent import Agent, StoreSource
from svcnet.agent.kube import KubeSource
from svcnet.agent.source import Source
from svcnet.backend import load_backend
from svcnet.kernel import netns
from svcnet.probe import Probe, make_probe
from svcnet.scenario.format import Scenario, StepKind
from svcnet.scenario.run import load_scenario, packaged_scenarios, probe_source
from svcnet.state import Apply, ClusterState, Configure, Delete, Event
from svcnet.store import Store

pytestmark = pytest.mark.kernel

DEADLINE = 60.0
# a dozen, one or two per area (every scenario is checked without the kernel in
# tests/test_kube_source_scenarios.py)
SCENARIOS = (
    "clusterip-forwards-per-port",
    "clusterip-rejects-when-no-pod-ready",
    "nodeport-cluster-policy-forwards",
    "external-ip-local-policy",
    "session-affinity-clientip-sticky",
    "lb-ingress-status-used",
    "lb-source-ranges-drop-outside",
    "dual-stack-clusterip",
    "endpointslice-serving-terminating-fallback",
    "prefer-close-same-zone",
    "traffic-distribution-prefer-same-node",
    "service-proxy-name-label-passes",
)


def scenario_path(name: str) -> Path:
    (path,) = [p for p in packaged_scenarios() if p.stem == name]
    return path


def state_at_first_expect(sc: Scenario) -> tuple[ClusterState, list[Event], Any]:
    """The scenario's state at its first expect step, the events that made it,
    and that step."""
    state = ClusterState.empty(sc.config)
    events: list[Event] = []
    for step in sc.steps:
        if step.kind is StepKind.EXPECT:
            return state, events, step
        if step.kind is StepKind.APPLY:
            event: Event = Apply(manifests.load(list(step.documents), filename=sc.path))
        elif step.kind is StepKind.DELETE:
            event = Delete([manifests.parse_key(d) for d in step.documents])
        else:
            continue
        state = state.step(event)
        events.append(event)
    raise AssertionError(f"{sc.path}: no expect step")


@contextlib.contextmanager
def running(source: Source, node: str, ns: str, run_dir: Path) -> Iterator[Agent]:
    backend = load_backend("nftables")(node, netns=ns)
    agent = Agent(source, node, backend, run_dir=str(run_dir), min_sync_period=0.01)
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        yield agent
    finally:
        agent.stop()
        thread.join(DEADLINE)
        backend.close()
    assert not thread.is_alive(), "the agent did not stop"


def read_back(ns: str, node: str, probes: list[Probe]) -> list[Any]:
    backend = load_backend("nftables")(node, netns=ns)
    try:
        return [backend.evaluate(p) for p in probes]
    finally:
        backend.close()


@pytest.mark.parametrize("name", SCENARIOS)
def test_kube_source_standin_scenario_in_the_kernel_as_with_the_store(
    name: str, tmp_path: Path
) -> None:
    sc = load_scenario(scenario_path(name))
    state, events, step = state_at_first_expect(sc)
    probes = [
        make_probe(state, probe_source(p.source), p.dst_ip, p.dst_port, p.protocol)
        for p in step.probes
    ]
    node = probes[0].node
    probes = [p for p in probes if p.node == node]
    store = Store(str(tmp_path / "store.db"))
    save(store, Configure(sc.config), *events)
    with (
        StandIn() as api,
        netns.scratch("svcnet-ks-") as ns_store,
        netns.scratch("svcnet-ks-") as ns_kube,
    ):
        api.put(*api_objects(state))
        kube = KubeSource(
            api.kubeconfig(str(tmp_path)),
            service_cidrs=sc.config.service_cidrs,
            cluster_cidrs=sc.config.cluster_cidrs,
            masquerade_all=sc.config.masquerade_all,
        )
        try:
            with (
                running(StoreSource(store), node, ns_store, tmp_path / "a") as by_store,
                running(kube, node, ns_kube, tmp_path / "b") as by_kube,
            ):
                assert by_store.wait_synced(store.version(), DEADLINE)
                assert by_kube.wait_synced(1, DEADLINE)
                assert not kube.skipped, kube.skipped
                from_store = read_back(ns_store, node, probes)
                from_kube = read_back(ns_kube, node, probes)
        finally:
            kube.close()
    expected = [semantics.evaluate(state, p) for p in probes]
    assert from_kube == from_store == expected
