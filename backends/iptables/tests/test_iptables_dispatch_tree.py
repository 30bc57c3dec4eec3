"""The address trees of the nat dispatch (svcnet_iptables.tree): a packet meets the
same rules as in the flat list, in the same order, and few of them; rendered plans
with deep trees (small leaf and fan-out) agree with svcnet.semantics and read back
as the plan installed; and at 10,000 services with ClusterIPs packed into one /18
(four-deep trees), the kernel's rules agree with the memory backend (kernel, slow);
the shared conformance suite passes on a real kernel with trees as deep as they go
(leaf 1, binary splits: every pair of addresses is a tree)."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Mapping

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import (
    FakeKernel,
    agree_with_semantics,
    clusters,
    events,
    initial_state,
    kernel_skip_reason,
    netns,
)
from support import step as step_event
from svcnet_iptables import IptablesBackend
from svcnet_iptables.interpret import Interpreter
from svcnet_iptables.observed import observed_plan
from svcnet_iptables.readback import Rule
from svcnet_iptables.render import SERVICES, Renderer
from svcnet_iptables.sync import Existing, full_sync, partial_sync
from svcnet_iptables.tree import CLUSTER_IPS, FRONTENDS, TREE_PREFIXES, dispatch_tree, rule_host

from svcnet import manifests
from svcnet.model import ClusterConfig, IPFamily, Protocol
from svcnet.plan import compile
from svcnet.probe import Probe, SourceKind
from svcnet.scenario import same_outcome
from svcnet.state import Apply, ClusterState
from svcnet.testing import run_conformance
from svcnet.testing.plugin import NetnsFactory, kernel_unavailable

# -- the tree alone ----------------------------------------------------------------------


def _met(
    rules: list[str], chains: dict[str, list[str]], addr: int, v6: bool
) -> tuple[list[str], int]:
    """The non-jump rules a packet to ``addr`` would match walking ``rules`` (a rule
    matches when its -d holds the address), and how many rules it met."""
    hits: list[str] = []
    met = 0
    for rule in rules:
        met += 1
        net = ipaddress.ip_network(rule.split(" ", 2)[1])
        if int(net.network_address) != addr >> (net.max_prefixlen - net.prefixlen) << (
            net.max_prefixlen - net.prefixlen
        ):
            continue
        target = rule.rsplit(" ", 1)[1]
        if target.startswith(TREE_PREFIXES):
            sub, n = _met(chains[target], chains, addr, v6)
            hits += sub
            met += n
        else:
            hits.append(rule)
    return hits, met


def _flat(hosts: list[str]) -> list[tuple[str, str]]:
    return [(h, f"-d {ipaddress.ip_network(h)} -j X-{i}") for i, h in enumerate(hosts)]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    family=st.sampled_from(list(IPFamily)),
    offsets=st.lists(st.integers(0, 300), min_size=1, max_size=60),
    leaf=st.integers(1, 4),
    bits=st.integers(1, 5),
)
def test_a_packet_meets_the_same_rules_in_the_same_order(
    family: IPFamily, offsets: list[int], leaf: int, bits: int
) -> None:
    """Addresses sharing long prefixes (a few hundred apart, repeats allowed: a
    service with several ports): for every address of the list and every address
    between them, the rules a packet matches are the flat list's, in its order."""
    base = int(ipaddress.ip_address("10.96.7.0" if family is IPFamily.IPv4 else "fd00:96::700"))
    hosts = [str(ipaddress.ip_address(base + o)) for o in offsets]
    flat = _flat(hosts)
    top, chains = dispatch_tree(flat, family, FRONTENDS, leaf=leaf, bits=bits)
    v6 = family is IPFamily.IPv6
    if len(set(hosts)) > max(leaf, 2**bits):  # some part of the first split holds two
        assert chains, "more addresses than a leaf and a split hold, but no tree"
    for addr in range(base - 2, base + 303):
        want = [spec for h, spec in flat if int(ipaddress.ip_address(h)) == addr]
        got, _met_count = _met(top, chains, addr, v6)
        assert got == want, (str(ipaddress.ip_address(addr)), got, want)


def test_ten_thousand_addresses_cost_a_few_dozen_rules() -> None:
    """10,000 ClusterIPs packed in one /18: every one, and every gap, is reached
    after at most 70 rules (the flat list: up to 10,000)."""
    hosts = [
        str(ipaddress.ip_address(int(ipaddress.ip_address("10.96.0.0")) + i + i // 3))
        for i in range(10_000)
    ]
    top, chains = dispatch_tree(_flat(hosts), IPFamily.IPv4, CLUSTER_IPS)
    worst = 0
    for addr in range(
        int(ipaddress.ip_address("10.96.0.0")), int(ipaddress.ip_address("10.96.64.0"))
    ):
        hits, met = _met(top, chains, addr, False)
        assert len(hits) <= 1
        worst = max(worst, met)
    assert worst <= 70, worst
    assert len(top) <= 16


def test_rule_host_refuses_a_rule_without_destination() -> None:
    assert rule_host("-d 10.96.0.1/32 -p tcp -j X") == "10.96.0.1"
    with pytest.raises(ValueError, match="not a -d rule"):
        rule_host("-j SVCNET-NODEPORTS")


# -- rendered plans with deep trees ------------------------------------------------------


def _agree(kernel: FakeKernel, state: ClusterState, plan: object) -> int:
    rs = kernel.read()
    assert observed_plan(rs, "node-a") == plan
    return agree_with_semantics(rs, state)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    batches=clusters(max_services=6),
    shape=st.sampled_from([(1, 1), (1, 2), (2, 3)]),
    data=st.data(),
)
def test_deep_trees_agree_with_semantics(batches, shape, data) -> None:
    """Random clusters (ClusterIPs 10.96.1.10.. and fd00:96::110..: long shared
    prefixes) rendered with leaf/bits so small that two addresses make a tree: full
    sync, then incremental events; after each, every probe agrees with
    svcnet.semantics and the rules read back are the plan; a full resync over the
    incremental result lands on the same rules."""
    leaf, bits = shape
    state = initial_state(batches)
    kernel = FakeKernel()
    renderer = Renderer(leaf=leaf, bits=bits)
    plan = compile(state, "node-a")
    kernel.apply(full_sync(renderer, plan, {}))
    for family in IPFamily:  # the trees made are those the names pass declares
        nat = kernel.read().table(family, "nat").chains
        made = {c for c in nat if c.startswith(TREE_PREFIXES)}
        assert made == set(renderer.tree_names(plan, family))
    assert _agree(kernel, state, plan) > 0
    for event in data.draw(events(nsvc=6)):
        new_state = step_event(state, event)
        new_plan = compile(new_state, "node-a")
        kernel.apply(partial_sync(renderer, plan, new_plan.diff(plan), new_plan))
        state, plan = new_state, new_plan
        _agree(kernel, state, plan)
    before = kernel.read()
    existing = {k: Existing(t.own_chains, t.jumps) for k, t in before.tables.items()}
    kernel.apply(full_sync(Renderer(leaf=leaf, bits=bits), plan, existing))
    assert str(kernel.read()) == str(before)


# -- 10,000 services on a real kernel ----------------------------------------------------

CONFIG = ClusterConfig(service_cidrs=("10.96.0.0/16",), cluster_cidrs=("10.244.0.0/16",))
N = 10_000
BASE = int(ipaddress.ip_address("10.96.0.0"))


def _cip(i: int) -> str:
    return str(ipaddress.ip_address(BASE + 1 + i + i // 3))  # one gap in four


def _big_state() -> ClusterState:
    docs: list[dict[str, object]] = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name},
            "spec": {"podCIDRs": [cidr]},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
        }
        for name, ip, cidr in (
            ("node-a", "192.168.56.11", "10.244.1.0/24"),
            ("node-b", "192.168.56.12", "10.244.2.0/24"),
        )
    ]
    for i in range(N):
        ports = [{"name": "http", "port": 80, "targetPort": 8080}]
        if i % 7 == 0:
            ports.append({"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353})
        name = f"s{i:05d}"
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": "big"},
                "spec": {"clusterIP": _cip(i), "ports": ports},
            }
        )
        if i % 13 == 0:
            continue  # no endpoints: reject
        docs.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name}-1",
                    "namespace": "big",
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": "IPv4",
                "endpoints": [
                    {
                        "addresses": [f"10.244.{2 + i % 2}.{1 + i % 250}"],
                        "conditions": {"ready": True},
                        "nodeName": "node-a" if i % 2 else "node-b",
                    }
                ],
                "ports": [
                    {"name": "http", "port": 8080, "protocol": "TCP"},
                    {"name": "dns", "port": 5353, "protocol": "UDP"},
                ],
            }
        )
    return ClusterState.empty(CONFIG).step(Apply(tuple(manifests.load(docs))))


def _big_probes() -> list[Probe]:
    rng = random.Random(17)
    picks = [0, 1, 2, 3, N // 2, N - 2, N - 1, *rng.sample(range(N), 60)]
    dests: list[tuple[str, int, Protocol]] = []
    for i in picks:
        ip = _cip(i)
        dests += [(ip, 80, Protocol.TCP), (ip, 53, Protocol.UDP), (ip, 81, Protocol.TCP)]
        dests += [(ip, 80, Protocol.UDP)]
        gap = str(ipaddress.ip_address(BASE + 1 + i + i // 3 + 1))
        dests.append((gap, 80, Protocol.TCP))  # the next address: a service or a gap
    dests += [("10.96.0.0", 80, Protocol.TCP), ("10.96.200.1", 80, Protocol.TCP)]
    dests += [("10.97.0.1", 80, Protocol.TCP), ("192.168.56.11", 30000, Protocol.TCP)]
    sources = (
        (SourceKind.POD, "10.244.1.9"),
        (SourceKind.NODE, "192.168.56.11"),
        (SourceKind.EXTERNAL, "198.51.100.7"),
    )
    return [
        Probe(kind, src, "node-a", ip, port, proto)
        for ip, port, proto in dict.fromkeys(dests)
        for kind, src in sources
    ]


def _depth(nat: Mapping[str, tuple[Rule, ...]], ip: str) -> int:
    """How many ClusterIP tree chains a packet to ``ip`` passes through."""
    depth, chain = 0, SERVICES
    while True:
        hit = [
            r
            for r in nat[chain]
            if r.target.startswith(CLUSTER_IPS) and r.dst is not None and r.dst.matches(ip)
        ]
        if not hit:
            return depth
        chain, depth = hit[0].target, depth + 1


@pytest.mark.kernel
@pytest.mark.slow
def test_ten_thousand_packed_services_agree_with_the_memory_backend() -> None:
    """10,000 services, ClusterIPs in one /18 three in every four addresses (trees
    four levels deep), some with a UDP port, some without endpoints: installed by
    the legacy restore driver into a fresh namespace, read back; ~1,000 probes (first,
    last, middle and random services, undefined ports and protocols, the gaps,
    outside the CIDR, each from a pod, the node and outside) give the memory
    backend's outcome; the read-back decodes to the plan installed."""
    reason = kernel_skip_reason()
    if reason:
        pytest.skip(reason)
    from svcnet.backend import load_backend

    state = _big_state()
    plan = compile(state, "node-a")
    memory = load_backend("memory")("node-a")
    memory.sync(plan)
    with netns() as ns:
        be = IptablesBackend("node-a", netns=ns, variant="legacy")
        try:
            be.sync(plan)
            rs = be.observe()
            nat = rs.table(IPFamily.IPv4, "nat").chains
            depths = [_depth(nat, _cip(i)) for i in (0, N // 2)]
            assert min(depths) >= 3, depths  # the probes reach deep leaves
            assert observed_plan(rs, "node-a") == plan
            interp = Interpreter(rs)
            checked = 0
            for probe in _big_probes():
                want = memory.evaluate(probe)
                got = interp.evaluate(probe)
                assert same_outcome(got, want), f"{probe}: iptables {got} != memory {want}"
                checked += 1
            for probe in _big_probes()[:12]:  # the backend's own evaluate(), as trace uses
                assert same_outcome(be.evaluate(probe), memory.evaluate(probe)), probe
            assert checked > 1000
        finally:
            be.cleanup()
            be.close()


# -- the conformance suite with the deepest trees ----------------------------------------


class _DeepTrees(IptablesBackend):
    """The iptables backend (legacy) with trees split at every bit down to single
    addresses: the random clusters of the conformance suite (a few services) all
    go through tree chains."""

    def __init__(self, node: str, *, netns: str | None = None) -> None:
        super().__init__(node, netns=netns, variant="legacy")
        self._renderer = Renderer(leaf=1, bits=1)


@pytest.mark.kernel
def test_conformance_with_the_deepest_trees() -> None:
    reason = kernel_unavailable()
    if reason:
        pytest.skip(reason)
    factory = NetnsFactory(_DeepTrees)
    try:
        run_conformance(factory, max_examples=150, scenario_paths=[], derandomize=True)
    finally:
        factory.close()
