"""Fault injection on the kernel backends (nftables, iptables nft and legacy variants).

- kill -9 at random moments during full syncs of ~2,000 dual-stack services, the
  sync running in a child process: afterwards each family's rules answer a sample
  of probes exactly as the old plan or exactly as the new one (compared with
  svcnet.semantics for both cluster states), never a mix; IPv4 and IPv6 may differ
  from each other (separate transactions; counted), and the next full sync repairs
  that;
- every damage kind of issue 13 (deleted element or rule, flushed map, chain or
  table, deleted jump, foreign rule inserted into an svcnet chain, ``nft flush
  ruleset``, ``iptables -F/-X``), each caught where the backend's docs say: by
  ``check()`` / the incremental restore's ``-C`` lines (the next ``apply()`` falls
  back to a full sync) or only by the periodic full ``sync()``; repaired either way;
- a rule of another tool jumping to an svcnet chain the sync would delete: the sync
  (and an apply) fails with an SvcnetError and changes nothing.

Counts: ``SVCNET_FAULT_KILLS`` kills per backend on 300 services (default 3), and in
the slow test ``SVCNET_FAULT_SLOW_KILLS`` (default 3) on ``SVCNET_FAULT_SERVICES``
(default 2,000). Results are printed (``-s``); docs/reliability.md has the figures
of longer runs.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from svcnet import manifests, semantics
from svcnet.backend import Backend
from svcnet.errors import SvcnetError
from svcnet.model import ClusterConfig, IPFamily, Protocol
from svcnet.plan import Plan, compile
from svcnet.probe import Outcome, Probe, SourceKind
from svcnet.scenario import same_outcome
from svcnet.state import Apply, ClusterState
from svcnet.testing.plugin import create_netns, delete_netns, kernel_unavailable

svcnet_memory = pytest.importorskip("svcnet_memory")
MemoryBackend = svcnet_memory.MemoryBackend

pytestmark = pytest.mark.kernel

NODE = "node-a"
CONFIG = ClusterConfig(
    service_cidrs=("10.96.0.0/16", "fd00:96::/112"),
    cluster_cidrs=("10.244.0.0/16", "fd00:244::/56"),
)
POD_SRC = {IPFamily.IPv4: "10.244.1.200", IPFamily.IPv6: "fd00:244:0:1::c8"}
SERVICES = int(os.environ.get("SVCNET_FAULT_SERVICES", "2000"))  # the slow test's
QUICK_SERVICES = 300
KILLS = int(os.environ.get("SVCNET_FAULT_KILLS", "3"))
SLOW_KILLS = int(os.environ.get("SVCNET_FAULT_SLOW_KILLS", "3"))


# -- clusters -------------------------------------------------------------------------


def _node(name: str, n: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"podCIDRs": [f"10.244.{n}.0/24", f"fd00:244:0:{n}::/64"]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": f"192.168.56.{10 + n}"},
                {"type": "InternalIP", "address": f"fd00:56::{10 + n:x}"},
            ]
        },
    }


def cluster(n: int, generation: int) -> ClusterState:
    """``n`` dual-stack services, one pod each on node-b. Each generation moves every
    pod to new addresses, and every 5th service alternates between no ready pod
    (reject) and one: every service answers differently in two generations."""
    docs: list[dict[str, Any]] = [_node(NODE, 1), _node("node-b", 2)]
    for i in range(n):
        j = i + 256
        ready = not (i % 5 == 0 and generation % 2 == 1)
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"s{i}", "namespace": "f"},
                "spec": {
                    "selector": {"app": f"a{i}"},
                    "ipFamilyPolicy": "RequireDualStack",
                    "ipFamilies": ["IPv4", "IPv6"],
                    "clusterIPs": [f"10.96.{j // 256}.{j % 256}", f"fd00:96::{j:x}"],
                    "clusterIP": f"10.96.{j // 256}.{j % 256}",
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
                },
            }
        )
        k = i + 1
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"p{i}", "namespace": "f", "labels": {"app": f"a{i}"}},
                "spec": {"nodeName": "node-b", "containers": [{"name": "c"}]},
                "status": {
                    "podIPs": [
                        {"ip": f"10.244.{16 + 16 * (generation % 4) + k // 256}.{k % 256}"},
                        {"ip": f"fd00:244:0:2::{generation:x}:{k:x}"},
                    ],
                    "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                },
            }
        )
    return ClusterState.empty(CONFIG).step(Apply(tuple(manifests.load(docs))))


def sample_probes(n: int, family: IPFamily, count: int, seed: int) -> list[Probe]:
    """Pod-sourced probes to ``count`` services' ClusterIPs (the defined port, an
    undefined one) and to a free address of the service range."""
    rnd = random.Random(seed)
    out = []
    for i in rnd.sample(range(n), min(count, n)):
        j = i + 256
        ip = f"10.96.{j // 256}.{j % 256}" if family is IPFamily.IPv4 else f"fd00:96::{j:x}"
        for port in (80, 81):
            out.append(Probe(SourceKind.POD, POD_SRC[family], NODE, ip, port, Protocol.TCP))
    free = "10.96.250.1" if family is IPFamily.IPv4 else "fd00:96::ff01"
    out.append(Probe(SourceKind.POD, POD_SRC[family], NODE, free, 80, Protocol.TCP))
    return out


def agrees(backend: Backend, state: ClusterState, probes: list[Probe]) -> bool:
    """The read-back answers every probe as svcnet.semantics does for ``state``."""
    for probe in probes:
        if not same_outcome(backend.evaluate(probe), semantics.evaluate(state, probe)):
            return False
    return True


def reference(plan: Plan, probes: list[Probe]) -> list[Outcome]:
    """The outcomes ``plan`` gives ``probes`` on the memory backend. semantics.evaluate
    takes ~0.4 s a probe on 2,000 services here, too slow for a campaign; the
    memory backend agrees with it (the conformance suite), and the damage tests
    compare with semantics itself."""
    memory = MemoryBackend(NODE)
    memory.sync(plan)
    return [memory.evaluate(p) for p in probes]


def holds(backend: Backend, expected: dict[str, list[Outcome]], probes: list[Probe]) -> str:
    """Which of the ``expected`` outcome lists (by name) the read-back gives for
    every probe, or ``mixed``. Probes are chosen so that no two lists are alike."""
    refresh = getattr(backend, "refresh", None)
    if refresh is not None:
        refresh()
    got = [backend.evaluate(p) for p in probes]
    names = [
        name
        for name, want in expected.items()
        if all(same_outcome(g, w) for g, w in zip(got, want, strict=True))
    ]
    assert len(names) <= 1, f"probes do not tell {names} apart"
    return names[0] if names else "mixed"


# -- backends -------------------------------------------------------------------------


def _nftables(netns: str) -> Backend:
    svcnet_nftables = pytest.importorskip("svcnet_nftables")
    backend: Backend = svcnet_nftables.NftablesBackend(NODE, netns=netns)
    return backend


def _iptables(variant: str) -> Callable[[str], Backend]:
    def make(netns: str) -> Backend:
        svcnet_iptables = pytest.importorskip("svcnet_iptables")
        backend: Backend = svcnet_iptables.IptablesBackend(NODE, netns=netns, variant=variant)
        return backend

    return make


BACKENDS: dict[str, Callable[[str], Backend]] = {
    "nftables": _nftables,
    "iptables-nft": _iptables("nft"),
    "iptables-legacy": _iptables("legacy"),
}
IPT = {"iptables-nft": "iptables-nft", "iptables-legacy": "iptables-legacy"}


def _skip() -> None:
    reason = kernel_unavailable()
    if reason:
        pytest.skip(reason)


@contextmanager
def netns() -> Iterator[str]:
    name = create_netns("svcnet-flt-")
    try:
        yield name
    finally:
        delete_netns(name)


def sh(ns: str, cmd: str, stdin: str | None = None) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "sh", "-c", cmd],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def saved(ns: str, kind: str) -> str:
    """Every table of both families as the tools list them (comments dropped)."""
    if kind == "nftables":
        text = sh(ns, "nft list ruleset")
    else:
        v = kind.split("-")[1]
        text = sh(ns, f"iptables-{v}-save; ip6tables-{v}-save")
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


# -- kill -9 during full syncs ----------------------------------------------------------


_PLANS: dict[tuple[int, int], tuple[ClusterState, Plan]] = {}


def generation(n: int, gen: int) -> tuple[ClusterState, Plan]:
    if (n, gen) not in _PLANS:
        state = cluster(n, gen)
        _PLANS[(n, gen)] = (state, compile(state, NODE))
    return _PLANS[(n, gen)]


def _child_sync(kind: str, ns: str, plan: Plan) -> None:
    os.setpgid(0, 0)  # its own group: the restore tools it starts can be waited for
    gc.disable()  # a collection would touch (and copy) the whole inherited heap
    BACKENDS[kind](ns).sync(plan)


def _wait_group(pgid: int) -> None:
    """Wait until no process of group ``pgid`` is left (a restore tool orphaned by
    the kill finishes or fails on its own)."""
    for _ in range(6000):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)
    raise AssertionError(f"processes of group {pgid} still running after 60 s")


def sync_in_child(kind: str, ns: str, plan: Plan, kill_after: float | None) -> bool:
    """Run a full sync in a forked child; kill -9 it after ``kill_after`` seconds
    (None: let it finish). True when the child finished before the kill."""
    ctx = multiprocessing.get_context("fork")
    gc.collect()
    gc.freeze()  # the child shares the parent's objects copy-on-write
    child = ctx.Process(target=_child_sync, args=(kind, ns, plan))
    child.start()
    assert child.pid is not None
    if kill_after is not None:
        child.join(kill_after)
        finished = not child.is_alive()
        if not finished:
            os.kill(child.pid, signal.SIGKILL)
    child.join()
    _wait_group(child.pid)
    if kill_after is None:
        assert child.exitcode == 0, f"the child's sync failed ({child.exitcode})"
        return True
    return finished


def kill_campaign(kind: str, n: int, kills: int, seed: int) -> Counter[str]:
    """``kills`` kill -9s during full syncs between two generations of ``n``
    services; returns the outcomes counted (IPv4/IPv6: old or new each)."""
    rnd = random.Random(seed)
    plans = {g: generation(n, g)[1] for g in (0, 1)}
    probes = {f: sample_probes(n, f, 10, seed) for f in IPFamily}
    want = {(g, f): reference(plans[g], probes[f]) for g in (0, 1) for f in IPFamily}
    outcomes: Counter[str] = Counter()
    with netns() as ns:
        be = BACKENDS[kind](ns)
        try:
            be.sync(plans[0])
            for f in IPFamily:
                assert holds(be, {"0": want[0, f], "1": want[1, f]}, probes[f]) == "0"
            start = time.perf_counter()
            sync_in_child(kind, ns, plans[1], None)
            span = time.perf_counter() - start  # a whole sync in a child, fork to exit
            for f in IPFamily:
                assert holds(be, {"0": want[0, f], "1": want[1, f]}, probes[f]) == "1"
            current = 1
            for _ in range(kills):
                target = 1 - current
                finished = sync_in_child(kind, ns, plans[target], rnd.uniform(0, span * 1.1))
                got = {
                    f: holds(be, {"old": want[current, f], "new": want[target, f]}, probes[f])
                    for f in IPFamily
                }
                assert "mixed" not in got.values(), f"{kind}: a family holds a mix: {got}"
                v4, v6 = got[IPFamily.IPv4], got[IPFamily.IPv6]
                outcomes["finished" if finished else "killed"] += 1
                outcomes[f"IPv4 {v4}, IPv6 {v6}"] += 1
                if v4 == v6 == "new":
                    current = target
                elif v4 != v6:
                    # one family old, the other new: the next full sync repairs it
                    be.sync(plans[target])
                    for f in IPFamily:
                        named = {"old": want[current, f], "new": want[target, f]}
                        assert holds(be, named, probes[f]) == "new"
                    outcomes["repaired by the next sync"] += 1
                    current = target
        finally:
            be.cleanup()
            be.close()
    print(f"\n{kind}: {n} services, {kills} kills: {dict(sorted(outcomes.items()))}")
    return outcomes


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_kill_during_full_sync(kind: str) -> None:
    _skip()
    outcomes = kill_campaign(kind, QUICK_SERVICES, KILLS, seed=13)
    assert sum(v for k, v in outcomes.items() if k.startswith("IPv4")) == KILLS


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_kill_during_full_sync_more(kind: str) -> None:
    _skip()
    outcomes = kill_campaign(kind, SERVICES, SLOW_KILLS, seed=1313)
    assert sum(v for k, v in outcomes.items() if k.startswith("IPv4")) == SLOW_KILLS


# -- damage ---------------------------------------------------------------------------

DAMAGE_N = 12  # services installed before the damage; the next change adds one


def _handle(ns: str, chain: str, pick: str) -> str:
    """The handle of the first rule of ``chain`` (ip svcnet) whose text has ``pick``."""
    for line in sh(ns, f"nft -a list chain ip svcnet {chain}").splitlines():
        if pick in line and "# handle" in line and "chain" not in line.split()[0]:
            return line.rsplit("# handle", 1)[1].strip()
    raise AssertionError(f"no rule with {pick!r} in {chain}")


def _fe_key(ns: str) -> str:
    for line in sh(ns, "nft list map ip svcnet fe").splitlines():
        if " : " in line and "type " not in line:
            return line.split("{")[-1].split(" : ")[0].strip()
    raise AssertionError("the fe map is empty")


def _ipt_chain(be: Backend, prefix: str) -> str:
    """The first IPv4 nat chain of svcnet whose name starts with ``prefix``."""
    nat = be.observe().table(IPFamily.IPv4, "nat")  # type: ignore[attr-defined]
    return str(sorted(c for c in nat.chains if c.startswith(prefix))[0])


# (name, backend kinds, shell command (format fields: ipt, ns-specific lookups), caught by)
# caught by: "check" - Backend.check() reports it, the next apply() does a full sync;
# "restore" - the next incremental nat restore's -C lines fail, the apply falls back to
# a full sync; "periodic" - neither sees it: the periodic full sync() repairs it.
NFT = ("nftables",)
IPTS = ("iptables-nft", "iptables-legacy")
DAMAGE: list[tuple[str, tuple[str, ...], Callable[[str, Backend, str], str], str]] = [
    ("nft flush ruleset", NFT, lambda ns, be, k: "nft flush ruleset", "check"),
    ("flushed table", NFT, lambda ns, be, k: "nft flush table ip svcnet", "check"),
    (
        "deleted jump",
        NFT,
        lambda ns, be, k: (
            "nft delete rule ip svcnet nat-prerouting handle "
            + _handle(ns, "nat-prerouting", "jump services")
        ),
        "check",
    ),
    (
        "deleted rule",
        NFT,
        lambda ns, be, k: (
            "nft delete rule ip svcnet services handle " + _handle(ns, "services", "@cluster-ips")
        ),
        "check",
    ),
    (
        "foreign rule inserted into an svcnet chain",
        NFT,
        lambda ns, be, k: "nft insert rule ip svcnet services ip daddr 10.96.1.3 return",
        "check",
    ),
    ("flushed map", NFT, lambda ns, be, k: "nft flush map ip svcnet fe", "periodic"),
    (
        "deleted element",
        NFT,
        lambda ns, be, k: f"nft delete element ip svcnet fe '{{ {_fe_key(ns)} }}'",
        "periodic",
    ),
    ("iptables -F", IPTS, lambda ns, be, k: f"{k} -F", "check"),
    ("iptables -F; iptables -X", IPTS, lambda ns, be, k: f"{k} -F && {k} -X", "check"),
    ("deleted jump (filter)", IPTS, lambda ns, be, k: f"{k} -D INPUT 1", "check"),
    (
        "foreign rule inserted into an svcnet chain (filter)",
        IPTS,
        lambda ns, be, k: f"{k} -I SVCNET-FILTER 1 -j ACCEPT",
        "check",
    ),
    ("flushed table (nat)", IPTS, lambda ns, be, k: f"{k} -t nat -F", "restore"),
    (
        "iptables -t nat -F; -X",
        IPTS,
        lambda ns, be, k: f"{k} -t nat -F && {k} -t nat -X",
        "restore",
    ),
    (
        "flushed chain",
        IPTS,
        lambda ns, be, k: f"{k} -t nat -F SVCNET-SERVICES",
        "restore",
    ),
    ("deleted jump (nat)", IPTS, lambda ns, be, k: f"{k} -t nat -D PREROUTING 1", "restore"),
    (
        "deleted rule",
        IPTS,
        lambda ns, be, k: f"{k} -t nat -D {_ipt_chain(be, 'SVCNET-SEP-')} 2",
        "periodic",
    ),
    (
        "foreign rule inserted into an svcnet chain (nat)",
        IPTS,
        lambda ns, be, k: f"{k} -t nat -I {_ipt_chain(be, 'SVCNET-SVC-')} 1 -j RETURN",
        "periodic",
    ),
]
CASES = [(kind, name, cmd, by) for name, kinds, cmd, by in DAMAGE for kind in kinds]


def _all_probes(n: int) -> list[Probe]:
    return [p for f in IPFamily for p in sample_probes(n, f, n, seed=0)]


@pytest.mark.parametrize(
    ("kind", "name", "cmd", "caught_by"), CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES]
)
def test_damage_is_detected_and_repaired(
    kind: str, name: str, cmd: Callable[[str, Backend, str], str], caught_by: str
) -> None:
    _skip()
    _state, plan = generation(DAMAGE_N, 0)
    state2, plan2 = generation(DAMAGE_N + 1, 0)  # one service more, nothing else changed
    with netns() as ns:
        be = BACKENDS[kind](ns)
        try:
            be.sync(plan)
            assert be.check() == ()
            tool = f"iptables-{kind.split('-')[1]}" if kind in IPTS else ""
            sh(ns, cmd(ns, be, tool))
            found = be.check()
            assert bool(found) == (caught_by == "check"), found
            be.apply(plan2.diff(plan))
            refresh = getattr(be, "refresh", None)
            if refresh is not None:
                refresh()
            if caught_by == "periodic":
                assert be.fallbacks == 0
                be.sync(plan2)  # the periodic full sync
                if refresh is not None:
                    refresh()
            else:
                assert be.fallbacks == 1, "the apply did not fall back to a full sync"
                want = "damage" if caught_by == "check" else "the incremental install failed"
                assert be.last_fallback.startswith(want), be.last_fallback
            assert be.installed == plan2
            assert be.check() == ()
            assert agrees(be, state2, _all_probes(DAMAGE_N + 1)), "not repaired"
        finally:
            be.cleanup()
            be.close()


# -- another tool's rule referring to svcnet's chains ---------------------------------------


@pytest.mark.parametrize("kind", IPTS)
def test_foreign_reference_fails_cleanly(kind: str) -> None:
    """Another tool's IPv6 nat chain jumps to the chain of a service the next plan
    removes: the full sync (and an apply) raise an SvcnetError before changing
    anything - IPv4's tables stay as they were too - and ``installed`` stays.
    (nftables: rules cannot jump across tables, and svcnet's tables are its own.)"""
    _skip()
    v = kind.split("-")[1]
    _state, plan = generation(DAMAGE_N, 0)
    _state2, smaller = generation(DAMAGE_N - 1, 0)  # the last service removed
    with netns() as ns:
        be = BACKENDS[kind](ns)
        try:
            be.sync(plan)
            nat6 = be.observe().table(IPFamily.IPv6, "nat")  # type: ignore[attr-defined]
            last = f"f/s{DAMAGE_N - 1}:http"
            chain = next(
                r.target for r in nat6.chains["SVCNET-SERVICES"] if last in (r.comment or "")
            )
            tool = f"ip6tables-{v} -t nat"
            sh(ns, f"{tool} -N OTHER-TOOL && {tool} -A OTHER-TOOL -j {chain}")
            before = saved(ns, kind)
            with pytest.raises(SvcnetError):
                be.sync(smaller)
            assert saved(ns, kind) == before
            assert be.installed == plan
            with pytest.raises(SvcnetError):
                be.apply(smaller.diff(plan))
            assert saved(ns, kind) == before
            assert be.installed == plan
            sh(ns, f"{tool} -F OTHER-TOOL && {tool} -X OTHER-TOOL")
            be.apply(smaller.diff(plan))
            assert be.installed == smaller
        finally:
            sh(ns, f"ip6tables-{v} -t nat -F OTHER-TOOL; ip6tables-{v} -t nat -X OTHER-TOOL; true")
            be.cleanup()
            be.close()


@pytest.mark.parametrize("kind", IPTS)
def test_sync_failing_between_families_is_repaired(kind: str) -> None:
    """The window a kill -9 rarely hits: IPv4's nat restore committed, IPv6's fails.
    Each family is exact (IPv4 new, IPv6 old), ``installed`` becomes unknown, and
    the next apply() is a full sync that makes both new."""
    _skip()
    from svcnet.errors import BackendError, BackendErrorKind

    plans = {g: generation(DAMAGE_N, g)[1] for g in (0, 1, 2)}
    probes = {f: sample_probes(DAMAGE_N, f, DAMAGE_N, seed=0) for f in IPFamily}
    want = {(g, f): reference(plans[g], probes[f]) for g in plans for f in IPFamily}
    with netns() as ns:
        be = BACKENDS[kind](ns)
        try:
            be.sync(plans[0])
            driver = be.driver  # type: ignore[attr-defined]
            restore = driver.restore

            def failing(family: IPFamily, text: str) -> None:
                if family is IPFamily.IPv6 and text.startswith("*nat"):
                    raise BackendError(BackendErrorKind.REFUSED, "injected: IPv6 nat refused")
                restore(family, text)

            driver.restore = failing
            with pytest.raises(SvcnetError, match="injected"):
                be.sync(plans[1])
            del driver.restore
            named = {f: {"old": want[0, f], "new": want[1, f]} for f in IPFamily}
            assert holds(be, named[IPFamily.IPv4], probes[IPFamily.IPv4]) == "new"
            assert holds(be, named[IPFamily.IPv6], probes[IPFamily.IPv6]) == "old"
            assert be.installed is None
            be.apply(plans[2].diff(plans[0]))  # the caller's view: plan 0 is installed
            assert be.fallbacks == 1 and "unknown" in be.last_fallback
            assert be.installed == plans[2]
            for f in IPFamily:
                assert holds(be, {"1": want[1, f], "2": want[2, f]}, probes[f]) == "2"
        finally:
            be.cleanup()
            be.close()
