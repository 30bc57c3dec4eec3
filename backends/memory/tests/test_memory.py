"""The memory backend against the reference semantics, and its kernel-like strictness."""

from __future__ import annotations

import random
from typing import Any

import pytest
from clusters import SEEDS, RandomDraw, direct_clusters, random_probes, seeded_state_clusters
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from svcnet_memory import MemoryBackend

from svcnet.backend import load_backend
from svcnet.errors import BackendError, BackendErrorKind
from svcnet.model import IPFamily, Protocol
from svcnet.plan import (
    DROP,
    REJECT,
    Action,
    Changes,
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
    compile,
)
from svcnet.probe import Outcome, Probe, SourceKind, Verdict
from svcnet.semantics import evaluate, explain
from svcnet.testing import strategies

AGREEMENT = settings(
    derandomize=True,
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _check(state: Any, data: st.DataObject, count: int = 8, aimed: int = 4) -> None:
    """``count`` probes anywhere (:func:`clusters.random_probes`) and ``aimed`` where
    a scenario could send them (:func:`svcnet.testing.strategies.draw_probe`)."""
    backends: dict[str, MemoryBackend] = {}
    seed = data.draw(SEEDS, label="probe seed")
    probes = random_probes(random.Random(seed), state, count)
    if state.nodes:
        draw = RandomDraw(seed)
        probes += [strategies.draw_probe(draw, state) for _ in range(aimed)]
    for probe in probes:
        backend = backends.get(probe.node)
        if backend is None:
            backend = backends[probe.node] = MemoryBackend(probe.node)
            backend.sync(compile(state, probe.node))
        expected = evaluate(state, probe)
        got = backend.evaluate(probe)
        assert got == expected, (
            f"{probe}\nsemantics: {expected}\n  "
            + "\n  ".join(explain(state, probe))
            + f"\nmemory:    {got}\n  "
            + "\n  ".join(backend.trace(probe))
            + f"\nplan:\n{backend.installed}"
        )


@AGREEMENT
@given(st.data())
def test_agrees_with_semantics(data: st.DataObject) -> None:
    """Clusters built through svcnet.state, probes from every source kind."""
    _check(data.draw(seeded_state_clusters), data)


@settings(AGREEMENT, max_examples=300)
@given(st.data())
def test_agrees_with_semantics_direct_endpoints(data: st.DataObject) -> None:
    """Services and endpoint conditions given directly (every combination)."""
    _check(data.draw(direct_clusters()), data)


# -- hand-built plans ------------------------------------------------------------------

FWD = Route(Action.FORWARD, EndpointSet.CLUSTER, False)
FWD_MASQ = Route(Action.FORWARD, EndpointSet.CLUSTER, True)
LOCAL = Route(Action.FORWARD, EndpointSet.LOCAL, False)
SETTINGS = NodeSettings("n1", ("192.168.0.1",), ("10.244.0.0/16",), ("10.96.0.0/16",))
WEB = ServiceRef("default", "web")


def _port(**kw: Any) -> PortPlan:
    args: dict[str, Any] = dict(
        name="",
        family=IPFamily.IPv4,
        protocol=Protocol.TCP,
        frontends=(
            Frontend(FrontendKind.CLUSTER_IP, "10.96.0.10", 80),
            Frontend(FrontendKind.NODE_PORT, "192.168.0.1", 30080),
            Frontend(FrontendKind.LOAD_BALANCER, "203.0.113.1", 80),
        ),
        cluster_endpoints=(PlanEndpoint("10.244.1.2", 8080), PlanEndpoint("10.244.2.2", 8080)),
        local_endpoints=(PlanEndpoint("10.244.1.2", 8080),),
        internal_from_pod=FWD,
        internal_from_node=FWD_MASQ,
        internal_from_external=FWD_MASQ,
        external_from_pod=FWD,
        external_from_node=FWD_MASQ,
        external_from_external=LOCAL,
        source_ranges=("198.51.100.0/24",),
    )
    args.update(kw)
    return PortPlan.build(**args)


def _plan(*services: ServicePlan) -> Plan:
    return Plan(SETTINGS, {s.ref: s for s in services})


def _probe(
    dst: str, port: int, kind: SourceKind = SourceKind.POD, src: str = "10.244.1.9"
) -> Probe:
    return Probe(kind, src, "n1", dst, port)


def test_interprets_hand_built_plan() -> None:
    other = ServicePlan(ServiceRef("default", "other"), ("10.96.0.11",), proxied=False)
    b = MemoryBackend("n1")
    b.sync(_plan(ServicePlan(WEB, ("10.96.0.10",), (_port(),)), other))
    both = Outcome.forward([("10.244.1.2", 8080, False), ("10.244.2.2", 8080, False)])
    assert b.evaluate(_probe("10.96.0.10", 80)) == both
    assert b.evaluate(_probe("10.96.0.10", 81)) == Outcome(Verdict.REJECT)
    assert b.evaluate(_probe("10.96.0.11", 80)).verdict is Verdict.PASS
    assert b.evaluate(_probe("10.96.0.99", 80)).verdict is Verdict.DROP
    assert b.evaluate(_probe("8.8.8.8", 80)).verdict is Verdict.PASS
    # hairpin: the chosen endpoint is the sender
    hairpin = b.evaluate(_probe("10.96.0.10", 80, src="10.244.1.2"))
    assert hairpin.masquerade() == {"10.244.1.2:8080": True, "10.244.2.2:8080": False}
    # LoadBalancer source ranges come first; NodePort ignores them
    ext = SourceKind.EXTERNAL
    assert b.evaluate(_probe("203.0.113.1", 80, ext, "192.0.2.1")) == Outcome(Verdict.DROP)
    local = Outcome.forward([("10.244.1.2", 8080, False)])
    assert b.evaluate(_probe("203.0.113.1", 80, ext, "198.51.100.7")) == local
    assert b.evaluate(_probe("192.168.0.1", 30080, ext, "192.0.2.1")) == local
    assert b.trace(_probe("192.168.0.1", 30080, ext, "192.0.2.1"))
    assert "frontend 10.96.0.10:80/TCP" in str(b.observe())


def test_reject_and_drop_routes_and_affinity() -> None:
    b = MemoryBackend("n1")
    port = _port(internal_from_pod=REJECT, internal_from_node=DROP, affinity_timeout=60)
    b.sync(_plan(ServicePlan(WEB, ("10.96.0.10",), (port,))))
    assert b.evaluate(_probe("10.96.0.10", 80)) == Outcome(Verdict.REJECT)
    assert b.evaluate(_probe("10.96.0.10", 80, SourceKind.NODE, "192.168.0.1")) == Outcome(
        Verdict.DROP
    )
    assert (
        b.evaluate(_probe("10.96.0.10", 80, SourceKind.EXTERNAL, "1.2.3.4")).affinity_timeout == 60
    )


def test_apply_moves_between_plans() -> None:
    b = MemoryBackend("n1")
    first = _plan(ServicePlan(WEB, ("10.96.0.10",), (_port(),)))
    b.sync(first)
    second = _plan(ServicePlan(ServiceRef("default", "api"), ("10.96.0.12",), (_port(),)))
    b.apply(second.diff(first))
    assert b.evaluate(_probe("10.96.0.12", 81)) == Outcome(Verdict.REJECT)
    assert b.evaluate(_probe("10.96.0.10", 81)) == Outcome(Verdict.DROP)  # gone: unallocated
    b.cleanup()
    assert b.installed is None
    assert b.evaluate(_probe("10.96.0.12", 81)) == Outcome(Verdict.PASS)


def test_refuses_changes_that_do_not_fit() -> None:
    b = MemoryBackend("n1")
    plan = _plan(ServicePlan(WEB, ("10.96.0.10",), (_port(),)))
    b.sync(plan)
    before = str(b.observe())
    with pytest.raises(BackendError) as err:
        b.apply(Changes(SETTINGS, removed=(ServiceRef("default", "nope"),)))
    assert err.value.kind is BackendErrorKind.NOT_FOUND
    with pytest.raises(BackendError) as err:
        b.apply(Changes(SETTINGS, added=(plan.services[WEB],)))
    assert err.value.kind is BackendErrorKind.EXISTS
    with pytest.raises(BackendError) as err:
        b.apply(
            Changes(
                SETTINGS,
                replaced=(ServicePlan(ServiceRef("x", "y")),),
                removed=(WEB,),
            )
        )
    assert err.value.kind is BackendErrorKind.NOT_FOUND
    assert str(b.observe()) == before  # all or nothing
    with pytest.raises(BackendError):
        b.sync(Plan(NodeSettings("n2", (), (), ())))


def test_apply_before_sync_is_refused() -> None:
    with pytest.raises(BackendError) as err:
        MemoryBackend("n1").apply(Changes(SETTINGS))
    assert err.value.kind is BackendErrorKind.STATE


def test_registered_as_entry_point() -> None:
    assert load_backend("memory") is MemoryBackend
    assert MemoryBackend.capabilities.kernel is False
