"""Kernel tests: each in a fresh svcnet-nt-* namespace (see conftest)."""

from __future__ import annotations

import glob
import json
import re
import subprocess
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plans import NODE, NODE_IP, SETTINGS, sample_plan
from svcnet_memory import MemoryBackend
from svcnet_nftables import NftablesBackend
from svcnet_nftables.libnft import LibnftablesError

from conftest import kernel_skip_reason, nft_in
from svcnet.errors import BackendError, BackendErrorKind
from svcnet.model import IPFamily, Protocol
from svcnet.plan import (
    Action,
    EndpointSet,
    Frontend,
    FrontendKind,
    Plan,
    PlanEndpoint,
    PortPlan,
    Route,
    ServicePlan,
    ServiceRef,
)
from svcnet.probe import Probe, SourceKind, Verdict

# the public examples, vendored in the package's svcnet/scenarios/examples
SHARED_EXAMPLES = str(
    __import__("pathlib").Path(__file__).resolve().parents[3] / "svcnet" / "scenarios" / "examples"
)

pytestmark = pytest.mark.kernel
ROOT = Path(__file__).resolve().parents[3]


def probes_for(plan: Plan) -> list[Probe]:
    sources = {
        SourceKind.POD: ("10.244.1.10", "fd00:244:1::10"),
        SourceKind.NODE: (NODE_IP, "fd00:56::11"),
        SourceKind.EXTERNAL: ("198.51.100.7", "2001:db8::7"),
    }
    out = []
    extra = [
        ("10.96.0.10", 81, Protocol.TCP),
        ("10.96.0.99", 80, Protocol.TCP),
        ("10.96.0.40", 80, Protocol.TCP),
        ("8.8.8.8", 80, Protocol.TCP),
        ("10.96.0.10", 80, Protocol.SCTP),
        ("fd00:96::99", 80, Protocol.TCP),
    ]
    targets = [
        (fe.ip, fe.port, p.protocol)
        for s in plan.services.values()
        for p in s.ports
        for fe in p.frontends
    ]
    for ip, port, proto in targets + extra:
        for kind, (v4, v6) in sources.items():
            src = v6 if ":" in ip else v4
            out.append(Probe(kind, src, NODE, ip, port, proto))
        out.append(Probe(SourceKind.EXTERNAL, "192.0.2.1", NODE, ip, port, proto))
    return out


def same(a: object, b: object) -> bool:
    return a == b


def test_sample_plan_agrees_with_memory(netns: str) -> None:
    plan = sample_plan()
    be = NftablesBackend(NODE, netns=netns)
    mem = MemoryBackend(NODE)
    be.sync(plan)
    mem.sync(plan)
    for probe in probes_for(plan):
        assert be.evaluate(probe) == mem.evaluate(probe), (str(probe), be.trace(probe))
    out = be.evaluate(Probe(SourceKind.POD, "10.244.1.10", NODE, "10.96.0.20", 9000, Protocol.SCTP))
    assert out.affinity_timeout == 600 and len(out.targets) == 2
    hair = be.evaluate(Probe(SourceKind.POD, "10.244.2.10", NODE, "10.96.0.10", 53, Protocol.UDP))
    assert hair.masquerade() == {"10.244.2.10:5353": True}
    be.close()


def test_bound_to_its_namespace_only(netns: str) -> None:
    root_before = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    be = NftablesBackend(NODE, netns=netns)
    be.sync(sample_plan())
    assert "table ip svcnet" in nft_in(netns, "list", "tables")
    assert "table ip6 svcnet" in nft_in(netns, "list", "tables")
    root_after = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert root_after == root_before
    be.cleanup()
    be.close()


def _listing(ns: str) -> str:
    return nft_in(ns, "-j", "list", "table", "ip", "svcnet") + nft_in(
        ns, "-j", "list", "table", "ip6", "svcnet"
    )


def test_refused_transaction_changes_nothing(netns: str) -> None:
    be = NftablesBackend(NODE, netns=netns)
    plan = sample_plan()
    be.sync(plan)
    before = _listing(netns)
    bad = (
        "add element ip svcnet cluster-ips { 10.96.7.7 }\n"
        "add element ip svcnet no-such-map { 10.96.7.8 }\n"
    )
    with pytest.raises(BackendError) as err:
        be._run(bad)
    assert err.value.kind is BackendErrorKind.REFUSED
    assert isinstance(err.value.__cause__, LibnftablesError)
    jump = "add rule ip svcnet services jump missing-chain\n"
    with pytest.raises(BackendError):
        be._run(jump)
    assert _listing(netns) == before
    # the next sync still works
    web = plan.services[ServiceRef("default", "web")]
    smaller = attrs.evolve(web, ports=web.ports[:1])
    be.update(Plan(plan.settings, plan.services.set(web.ref, smaller)))
    probe = Probe(SourceKind.POD, "10.244.1.10", NODE, "10.96.0.10", 53, Protocol.UDP)
    assert be.evaluate(probe).verdict is Verdict.REJECT
    be.close()


def test_cleanup_removes_only_our_tables(netns: str) -> None:
    nft_in(netns, "add", "table", "inet", "filter")
    nft_in(
        netns, "add", "chain", "inet", "filter", "input", "{ type filter hook input priority 0; }"
    )
    nft_in(netns, "add", "rule", "inet", "filter", "input", "tcp", "dport", "22", "accept")
    nft_in(netns, "add", "table", "ip", "nat")
    nft_in(
        netns, "add", "chain", "ip", "nat", "post", "{ type nat hook postrouting priority 100; }"
    )
    nft_in(netns, "add", "rule", "ip", "nat", "post", "oifname", "eth9", "masquerade")
    others = nft_in(netns, "list", "table", "inet", "filter") + nft_in(
        netns, "list", "table", "ip", "nat"
    )
    be = NftablesBackend(NODE, netns=netns)
    be.sync(sample_plan())
    be.cleanup()
    tables = nft_in(netns, "list", "tables")
    assert "svcnet" not in tables
    assert (
        nft_in(netns, "list", "table", "inet", "filter")
        + nft_in(netns, "list", "table", "ip", "nat")
        == others
    )
    assert be.observe().empty
    be.close()


def test_permission_error_without_cap_net_admin(monkeypatch: pytest.MonkeyPatch) -> None:
    import svcnet_nftables

    monkeypatch.setattr(svcnet_nftables, "has_net_admin", lambda: False)
    with pytest.raises(BackendError) as err:
        NftablesBackend(NODE, netns="svcnet-nt-never-created")
    assert err.value.kind is BackendErrorKind.PERMISSION


def test_missing_namespace_is_a_clear_error() -> None:
    if kernel_skip_reason():
        pytest.skip(kernel_skip_reason() or "")
    with pytest.raises(BackendError) as err:
        NftablesBackend(NODE, netns="svcnet-nt-does-not-exist")
    assert err.value.kind is BackendErrorKind.NOT_FOUND


def test_scenarios_pass_on_nftables() -> None:
    if kernel_skip_reason():
        pytest.skip(kernel_skip_reason() or "")
    files = sorted(glob.glob(SHARED_EXAMPLES + "/*.yaml")) + sorted(
        glob.glob(str(ROOT / "svcnet" / "scenarios" / "*.yaml"))
    )
    res = subprocess.run(
        ["svcnet", "scenario", "run", *files, "--backend", "nftables"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    last = res.stdout.strip().splitlines()[-1]
    m = re.match(r"(\d+) passed, (\d+) failed", last)
    assert m and int(m.group(1)) > 100 and m.group(2) == "0", (
        res.stdout[-3000:] + res.stderr[-2000:]
    )


# -- property: random plans applied incrementally agree with the memory backend ----------
POOL = [f"10.244.{n}.{h}" for n in (1, 2) for h in (10, 11, 12)]


@st.composite
def routes(draw: st.DrawFn, has_cluster: bool, has_local: bool) -> Route:
    options = [Route(Action.REJECT), Route(Action.DROP)]
    for which, ok in ((EndpointSet.CLUSTER, has_cluster), (EndpointSet.LOCAL, has_local)):
        if ok:
            options += [Route(Action.FORWARD, which, False), Route(Action.FORWARD, which, True)]
    return draw(st.sampled_from(options))


@st.composite
def service_plans(draw: st.DrawFn, i: int) -> ServicePlan:
    cip = f"10.96.0.{10 + i}"
    proto = draw(st.sampled_from(list(Protocol)))
    frontends = [Frontend(FrontendKind.CLUSTER_IP, cip, 80)]
    if draw(st.booleans()):
        frontends.append(Frontend(FrontendKind.NODE_PORT, NODE_IP, 30000 + i))
    lb = draw(st.booleans())
    if lb:
        frontends.append(Frontend(FrontendKind.LOAD_BALANCER, f"203.0.113.{i + 1}", 80))
    cluster = draw(st.lists(st.sampled_from(POOL), unique=True, max_size=4))
    eps = [PlanEndpoint(ip, 8080) for ip in cluster]
    local = [e for e in eps if e.ip.startswith("10.244.1.")]
    rs = [draw(routes(bool(eps), bool(local))) for _ in range(6)]
    port = PortPlan.build(
        "p",
        IPFamily.IPv4,
        proto,
        frontends,
        eps,
        local,
        *rs,
        source_ranges=("198.51.100.0/25",) if lb and draw(st.booleans()) else (),
        affinity_timeout=draw(st.sampled_from([None, None, 300])),
    )
    return ServicePlan(ServiceRef("default", f"s{i}"), (cip,), (port,), proxied=True)


@st.composite
def plan_sequences(draw: st.DrawFn) -> list[Plan]:
    plans = []
    for _ in range(draw(st.integers(1, 4))):
        n = draw(st.integers(0, 4))
        svcs = [draw(service_plans(i)) for i in range(n) if draw(st.booleans()) or i == 0]
        plans.append(Plan(SETTINGS, {s.ref: s for s in svcs}))
    return plans


def _probes(plan: Plan) -> list[Probe]:
    out = []
    for s in plan.services.values():
        for p in s.ports:
            for fe in p.frontends:
                for kind, src in (
                    (SourceKind.POD, "10.244.2.11"),
                    (SourceKind.NODE, NODE_IP),
                    (SourceKind.EXTERNAL, "198.51.100.7"),
                    (SourceKind.EXTERNAL, "198.51.100.200"),
                ):
                    out.append(Probe(kind, src, NODE, fe.ip, fe.port, p.protocol))
    out.append(Probe(SourceKind.POD, "10.244.1.10", NODE, "10.96.0.10", 81))
    out.append(Probe(SourceKind.POD, "10.244.1.10", NODE, "10.96.0.77", 80))
    return out


def _normalised(listing: str) -> list[object]:
    doc = json.loads(listing)["nftables"]
    out = []
    for obj in doc:
        ((kind, body),) = obj.items()
        if kind == "metainfo":
            continue
        body = {k: v for k, v in body.items() if k != "handle"}
        if "elem" in body:
            body["elem"] = sorted(json.dumps(e, sort_keys=True) for e in body["elem"])
        text = json.dumps(body, sort_keys=True)
        # libnftables prints the same transport-header load as "th dport" or, when a
        # typeof map was cached in the listing process, "tcp dport": same bytecode
        text = re.sub(
            r'"field": "dport", "protocol": "(tcp|udp|sctp)"',
            '"field": "dport", "protocol": "th"',
            text,
        )
        out.append((kind, text))
    return sorted(out, key=str)


@pytest.mark.slow
@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seq=plan_sequences())
def test_incremental_agrees_with_memory_and_full_sync(netns: str, seq: list[Plan]) -> None:
    be = NftablesBackend(NODE, netns=netns)
    mem = MemoryBackend(NODE)
    try:
        for plan in seq:
            be.update(plan)
            mem.update(plan)
            for probe in _probes(plan):
                assert be.evaluate(probe) == mem.evaluate(probe), (str(probe), be.trace(probe))
        incremental = _normalised(nft_in(netns, "-j", "list", "table", "ip", "svcnet"))
        be.sync(seq[-1])
        assert _normalised(nft_in(netns, "-j", "list", "table", "ip", "svcnet")) == incremental
    finally:
        be.cleanup()
        be.close()
