"""The IPVS backend on a real kernel: every test reads back from the kernel.

On a kernel without IPVS (this project's CI host) only the first test runs: the
backend refuses with a clear error before changing anything. The others need IPVS:
``scripts/in-ipvs-vm pytest backends/ipvs/tests`` runs them in a VM."""

from __future__ import annotations

import os
import subprocess

import ipvs_support
import pytest
from ipvs_plans import EPS, NODE_IP, plan
from ipvs_support import ipvs_unavailable
from svcnet_ipvs import IpvsBackend, ops, render
from svcnet_ipvs.kernel import Kernel
from svcnet_ipvs.render import RealServer, VirtualServer

from svcnet.errors import BackendError, BackendErrorKind
from svcnet.model import IPFamily, Protocol
from svcnet.probe import Probe, SourceKind, Verdict

pytestmark = pytest.mark.kernel

netns = ipvs_support.netns  # the namespace fixture (this directory has no conftest.py)


def _in(ns: str, *args: str) -> str:
    done = subprocess.run(["ip", "netns", "exec", ns, *args], capture_output=True, text=True)
    return done.stdout + done.stderr


def test_a_kernel_without_ipvs_is_refused_before_any_change(netns: str) -> None:
    if os.path.exists("/proc/net/ip_vs"):
        pytest.skip("this kernel has IPVS: the refusal is tested on one without")
    with pytest.raises(BackendError, match="IPVS is not available") as err:
        IpvsBackend("node-a", netns=netns)
    assert err.value.kind is BackendErrorKind.UNSUPPORTED
    assert render.DUMMY not in _in(netns, "ip", "-o", "link")
    assert render.TABLE not in _in(netns, "nft", "list", "tables")


@pytest.fixture
def backend(netns: str) -> IpvsBackend:
    reason = ipvs_unavailable()
    if reason:
        pytest.skip(reason)
    return IpvsBackend("node-a", netns=netns)


def _servers(netns: str) -> dict[int, VirtualServer]:
    return {mark: s.server for (_, mark), s in Kernel(netns).servers().items()}


POD = Probe(SourceKind.POD, "10.244.3.3", "node-a", "10.96.0.10", 80)
EXTERNAL_NODEPORT = Probe(SourceKind.EXTERNAL, "198.51.100.7", "node-a", NODE_IP, 30080)
OUTSIDE_RANGES = Probe(SourceKind.EXTERNAL, "192.0.2.1", "node-a", "203.0.113.1", 80)


def test_sync_reads_back_servers_addresses_and_rules(backend: IpvsBackend, netns: str) -> None:
    backend.sync(plan())
    servers = _servers(netns)
    assert sorted(len(vs.dests) for vs in servers.values()) == [1, 2]
    for vs in servers.values():
        assert (vs.scheduler, vs.timeout, vs.protocol) == ("rr", 600, Protocol.TCP)
    dummy, local = Kernel(netns).addresses()
    assert dummy == {"10.96.0.10", "203.0.113.1", NODE_IP} <= local
    assert "TCP" in _in(netns, "ipvsadm", "-Ln") or "FWM" in _in(netns, "ipvsadm", "-Ln")
    out = backend.evaluate(POD)
    assert out.verdict is Verdict.FORWARD and out.endpoints == {f"{e.ip}:{e.port}" for e in EPS}
    assert out.affinity_timeout == 600 and not any(t.masquerade for t in out.targets)
    local_only = backend.evaluate(EXTERNAL_NODEPORT)
    assert local_only.endpoints == {f"{EPS[0].ip}:{EPS[0].port}"}
    assert backend.evaluate(OUTSIDE_RANGES).verdict is Verdict.DROP
    backend.cleanup()


def test_a_leaving_endpoint_keeps_weight_0_until_a_full_sync(
    backend: IpvsBackend, netns: str
) -> None:
    backend.sync(plan())
    backend.update(plan(eps=EPS[:1]))
    cluster = [vs for vs in _servers(netns).values() if len(vs.dests) == 2]
    assert [d.weight for d in cluster[0].dests] == [1, 0]
    assert backend.evaluate(POD).endpoints == {f"{EPS[0].ip}:{EPS[0].port}"}
    backend.sync(plan(eps=EPS[:1]))
    assert all(len(vs.dests) == 1 for vs in _servers(netns).values())
    backend.cleanup()


def test_the_next_sync_repairs_a_half_applied_one(backend: IpvsBackend, netns: str) -> None:
    backend.sync(plan())
    before = _servers(netns)
    victim = next(iter(before.values()))
    Kernel(netns).run([ops.Op("delete", victim)])
    assert victim.fwmark not in _servers(netns)
    backend.sync(plan())
    assert _servers(netns) == before
    backend.cleanup()


def test_cleanup_removes_only_what_svcnet_owns(backend: IpvsBackend, netns: str) -> None:
    foreign = VirtualServer(IPFamily.IPv4, 7, Protocol.TCP, None, (RealServer("10.0.0.9", 80),))
    Kernel(netns).run([ops.Op("add", foreign), ops.Op("add", foreign, foreign.dests[0])])
    backend.sync(plan())
    backend.cleanup()
    assert "FWM  7" in _in(netns, "ipvsadm", "-Ln") or "FWM 7" in _in(netns, "ipvsadm", "-Ln")
    assert _servers(netns) == {}
    assert render.DUMMY not in _in(netns, "ip", "-o", "link")
    assert render.TABLE not in _in(netns, "nft", "list", "tables")
