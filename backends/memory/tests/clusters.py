"""What the memory backend's agreement tests and tests/test_plan.py need beyond
:mod:`svcnet.testing.strategies` (which draws every object, event and probe):

* :class:`RandomDraw` — a ``draw`` for the strategies' ``draw_*`` functions backed by a
  seeded random.Random: replays from its seed, does not shrink, and is many times
  faster than Hypothesis for long agreement runs;
* :func:`state_cluster` — a whole cluster applied through :class:`svcnet.state.ClusterState`
  (what collides is left out, so the cluster is never empty);
* :func:`events` — the strategies' events plus a :class:`~svcnet.state.Configure` now and then;
* :func:`direct_clusters` — a :class:`DirectState`: a state-built cluster whose endpoints
  are given directly (every endpoint-condition combination, cheaply) and whose services
  often claim the same externalIP or LoadBalancer IP as another service (the
  strategies draw such conflicts only now and then; compile() settles them);
* :func:`random_probes` — probes a scenario could not name (a node handling a packet for
  another node's address, pods that do not exist), for any state, DirectState included.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Mapping
from typing import Any

import attrs
from hypothesis import strategies as st

from svcnet.errors import SvcnetError
from svcnet.model import (
    ClusterConfig,
    Endpoint,
    IPFamily,
    KubeObject,
    Node,
    Pod,
    Protocol,
    Service,
    ServiceType,
)
from svcnet.probe import Probe, SourceKind
from svcnet.state import Apply, ClusterState, Configure, Event, Touched
from svcnet.testing import strategies as s
from svcnet.testing.strategies import Draw, chance, integer, pick

V4, V6 = IPFamily.IPv4, IPFamily.IPv6
SEEDS = st.integers(0, 2**32 - 1)
NODES = s.NODE_NAMES


class RandomDraw(s.Digits):
    """A ``draw`` backed by random.Random: replays from its seed, does not shrink."""

    def __init__(self, seed: int) -> None:
        super().__init__(0)
        self.rnd = random.Random(seed)

    def take(self, n: int) -> int:
        return self.rnd.randrange(n)


def pod_ip(family: IPFamily, node: int, index: int) -> str:
    return s.pinned_ip(s.pod_cidr(family, node), index + 2)


# -- clusters built through svcnet.state ----------------------------------------------


def build(config: ClusterConfig, objects: list[KubeObject]) -> ClusterState:
    """``objects`` applied in one batch; when the state refuses it (two pinned
    addresses or ports collide), one by one, leaving out what is refused."""
    state = ClusterState.empty(config)
    try:
        return state.step(Apply(tuple(objects)))
    except SvcnetError:
        pass
    for obj in objects:
        with contextlib.suppress(SvcnetError):
            state = state.step(Apply((obj,)))
    return state


def state_cluster(draw: Draw) -> ClusterState:
    config = s.draw_config(draw)
    return build(config, s.draw_cluster_objects(draw, config))


# Shrinkable clusters, and fast ones for long runs (Hypothesis draws only the seed).
state_clusters = st.composite(state_cluster)
seeded_state_clusters = SEEDS.map(lambda seed: state_cluster(RandomDraw(seed)))


def events(draw: Draw, state: ClusterState) -> Event:
    """One random change to ``state`` (valid or not: callers skip refused ones):
    :func:`svcnet.testing.strategies.draw_event`, or (one in eight) masquerade-all
    switched, which the strategies do not draw."""
    if chance(draw, 8):
        config = state.config
        return Configure(attrs.evolve(config, masquerade_all=not config.masquerade_all))
    return s.draw_event(draw, state)


# -- clusters with endpoints given directly --------------------------------------------


@attrs.frozen
class DirectState:
    """The read-only part of ClusterState that compile, semantics and the probe
    strategies use (no pods: endpoints are given, not computed)."""

    config: ClusterConfig
    nodes: Mapping[str, Node]
    services: Mapping[tuple[str, str], Service]
    endpoints: Mapping[tuple[str, str], Mapping[str, tuple[Endpoint, ...]]]
    revision: int = 0
    pods: Mapping[tuple[str, str], Pod] = attrs.field(factory=dict)

    def service_endpoints(self, namespace: str, name: str) -> Mapping[str, tuple[Endpoint, ...]]:
        return self.endpoints.get((namespace, name), {})

    def changed_since(self, revision: int) -> Touched | None:
        return None


def _endpoints(draw: Draw, state: ClusterState, svc: Service) -> tuple[Endpoint, ...]:
    eps = []
    for _ in range(integer(draw, 0, 4)):
        n = integer(draw, 0, len(NODES) - 1)
        serving = not chance(draw, 4)
        terminating = chance(draw, 4)
        node_name = "" if chance(draw, 7) else NODES[n]
        node = state.nodes.get(node_name)
        eps.append(
            Endpoint(
                ip=pod_ip(pick(draw, state.config.families), n, integer(draw, 0, 2)),
                port=pick(draw, [8080, 9090]),
                node_name=node_name,
                ready=(serving and not terminating) or svc.publish_not_ready_addresses,
                serving=serving,
                terminating=terminating,
                zone=(node.zone or "") if node is not None else "",
            )
        )
    return tuple(sorted(set(eps)))


def _claiming(draw: Draw, svc: Service, others: list[Service]) -> Service:
    """``svc``, sometimes also claiming another service's externalIPs and (both
    LoadBalancers) its LoadBalancer IPs, where the families fit."""
    claimed = [o for o in others if o.external_ips or o.load_balancer_ips]
    if not claimed or not svc.ports or not chance(draw, 3):
        return svc
    other = pick(draw, claimed)

    def fit(ips: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(ip for ip in ips if IPFamily.of(ip) in svc.ip_families)

    lb = ServiceType.LOAD_BALANCER
    shared_lb = fit(other.load_balancer_ips) if svc.type is lb and other.type is lb else ()
    return attrs.evolve(
        svc,
        external_ips=tuple(dict.fromkeys((*svc.external_ips, *fit(other.external_ips)))),
        load_balancer_ips=tuple(dict.fromkeys((*svc.load_balancer_ips, *shared_lb))),
    )


def direct_cluster(draw: Draw) -> DirectState:
    state = state_cluster(draw)
    services: dict[tuple[str, str], Service] = {}
    endpoints = {}
    for key in sorted(state.services):
        svc = _claiming(draw, state.services[key], list(services.values()))
        services[key] = svc
        if svc.type is not ServiceType.EXTERNAL_NAME:
            endpoints[key] = {p.name: _endpoints(draw, state, svc) for p in svc.ports}
    return DirectState(state.config, dict(state.nodes), services, endpoints)


direct_clusters = st.composite(direct_cluster)


# -- probes anywhere --------------------------------------------------------------------


def _endpoint_ips(state: Any) -> list[str]:
    by_service = [state.service_endpoints(*k) for k in state.services]
    return sorted({e.ip for ports in by_service for eps in ports.values() for e in eps})


def random_probes(rnd: random.Random, state: Any, count: int) -> list[Probe]:
    """``count`` probes aimed at ``state``'s frontends and their neighbours (port +- 1,
    any protocol) or elsewhere, each handled by any node, from any source kind: a pod
    (an endpoint itself, or any pod address), the handling node, an external client
    (another node, a LoadBalancer IP)."""
    fronts = s.frontends(state)
    elsewhere = [d[0] for d in s.other_places(state)] + [f[0] for f in fronts]
    ports = sorted({79, 80, 81, 53, 443, s.NODE_PORT_RANGE[0], *(f[1] for f in fronts)})
    endpoint_ips = _endpoint_ips(state)
    lb_ips = [ip for svc in state.services.values() for ip in svc.load_balancer_ips]
    out = []
    for _ in range(count):
        protocol = rnd.choice([Protocol.TCP, Protocol.TCP, Protocol.UDP, Protocol.SCTP])
        if fronts and rnd.randint(0, 3):
            dst, port, protocol = rnd.choice(fronts)
            if rnd.randint(0, 5) == 0:
                port += rnd.choice([-1, 1])
            if rnd.randint(0, 5) == 0:
                protocol = rnd.choice(list(Protocol))
        else:
            dst, port = rnd.choice(elsewhere), rnd.choice(ports)
        family = IPFamily.of(dst)
        node_name = rnd.choice(sorted(state.nodes) or [NODES[0]])
        node = state.nodes.get(node_name)
        kind = rnd.choice(list(SourceKind))
        if kind is SourceKind.POD:
            hairpin = [ip for ip in endpoint_ips if IPFamily.of(ip) is family]
            if hairpin and rnd.random() < 0.5:
                source = rnd.choice(hairpin)
            else:
                source = pod_ip(family, rnd.randint(0, 2), rnd.randint(0, 2))
        elif kind is SourceKind.NODE:
            own = node.address(family) if node is not None else None
            source = own or s.node_ip(family, 0)
        else:
            candidates = list(s.CLIENTS[family])
            candidates += [s.node_ip(family, i) for i, n in enumerate(NODES) if n != node_name]
            candidates += [ip for ip in lb_ips if IPFamily.of(ip) is family]
            source = rnd.choice(candidates)
        out.append(Probe(kind, source, node_name, dst, port, protocol))
    return out
