"""Every conformance scenario, read through the Kubernetes source: at each ``expect``
step the scenario's cluster is served by the API stand-in (tests/kubeapi_standin.py)
as the API server would hold it (Services with their allocated addresses, the
EndpointSlice controller's slices, Nodes, in ``kubectl get -o json`` shapes), listed
by :class:`~svcnet.agent.kube.KubeSource`, and the state it builds (authority
``api``: endpoints from the slices, addresses as given) answers every probe of the
step as the scenario's own state does, in svcnet.semantics and in the memory
backend's interpretation of the compiled plan.

The kernel half (the agent with this source programming nftables, read back) is
tests/test_kube_source_kernel.py, on a handful of these scenarios.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kubernetes", reason="the kubernetes extra is not installed")

from kubeapi_standin import StandIn, api_objects

from svcnet import compile as compile_plan
from svcnet import manifests, semantics
from svcnet.agent.kube import KubeSource
from svcnet.backend import load_backend
from svcnet.errors import SvcnetError
from svcnet.probe import make_probe
from svcnet.scenario.format import Scenario, StepKind
from svcnet.scenario.run import load_scenario, packaged_scenarios, probe_source
from svcnet.state import Apply, ClusterState, Delete, Event

SCENARIOS = sorted(packaged_scenarios(), key=lambda p: p.stem)


def expect_steps(sc: Scenario) -> Iterator[tuple[ClusterState, Any]]:
    """The scenario's state at each of its expect steps, with the step."""
    state = ClusterState.empty(sc.config)
    for step in sc.steps:
        if step.kind is StepKind.EXPECT:
            yield state, step
        elif step.kind in (StepKind.APPLY, StepKind.DELETE):
            try:
                if step.kind is StepKind.APPLY:
                    event: Event = Apply(manifests.load(list(step.documents), filename=sc.path))
                else:
                    event = Delete([manifests.parse_key(d) for d in step.documents])
                state = state.step(event)
            except SvcnetError:
                assert step.error is not None, f"{sc.path}: step {step.index} refused"
                # refused as the scenario expects: the state stays


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_kube_source_standin_every_scenario_answers_as_the_store_state(
    path: Path, tmp_path: Path
) -> None:
    sc = load_scenario(path)
    checked = 0
    for i, (state, step) in enumerate(expect_steps(sc)):
        probes = [
            make_probe(state, probe_source(p.source), p.dst_ip, p.dst_port, p.protocol)
            for p in step.probes
        ]
        with StandIn() as api:
            api.put(*api_objects(state))
            kube = KubeSource(
                api.kubeconfig(str(tmp_path)),
                service_cidrs=sc.config.service_cidrs,
                cluster_cidrs=sc.config.cluster_cidrs,
                masquerade_all=sc.config.masquerade_all,
            )
            try:
                listed = kube.list().state
            finally:
                kube.close()
        assert not kube.skipped, kube.skipped
        plans = {}
        for probe in probes:
            expected = semantics.evaluate(state, probe)
            assert semantics.evaluate(listed, probe) == expected, (path.stem, i, probe)
            if probe.node not in plans:
                backend = load_backend("memory")(probe.node)
                backend.sync(compile_plan(listed, probe.node))
                plans[probe.node] = backend
            assert plans[probe.node].evaluate(probe) == expected, (path.stem, i, probe)
            checked += 1
    if not checked:
        pytest.skip(f"{path.stem}: no packet probe (DNS or refusals only)")
