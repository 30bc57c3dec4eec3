"""Test support: random clusters (Hypothesis), probes, a fake --noflush kernel, netns."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import strategies as st
from svcnet_iptables.readback import Ruleset, parse_save

from svcnet import manifests
from svcnet.model import ClusterConfig, IPFamily, Kind, ObjectKey, Protocol
from svcnet.probe import Probe, SourceKind
from svcnet.semantics import frontends_of
from svcnet.state import Apply, ClusterState, Delete
from svcnet.testing.plugin import create_netns, delete_netns

CONFIG = ClusterConfig(
    service_cidrs=("10.96.0.0/16", "fd00:96::/112"),
    cluster_cidrs=("10.244.0.0/16", "fd00:244::/56"),
    load_balancer_pool=("203.0.113.0/28", "2001:db8:113::/124"),
)
NODES = {
    "node-a": ("192.168.56.11", "fd00:56::11", "10.244.1.0/24", "fd00:244:0:1::/64"),
    "node-b": ("192.168.56.12", "fd00:56::12", "10.244.2.0/24", "fd00:244:0:2::/64"),
}
EXTERNAL = {IPFamily.IPv4: "198.51.100.7", IPFamily.IPv6: "2001:db8:7::7"}


# -- root / tools ----------------------------------------------------------------------


def kernel_skip_reason(driver: str = "restore") -> str | None:
    if os.geteuid() != 0:
        return "kernel tests need root (CAP_NET_ADMIN) to create network namespaces"
    need = ["ip", "iptables-restore", "ip6tables-restore", "iptables-save", "ip6tables-save"]
    missing = [b for b in need if shutil.which(b) is None]
    if missing:
        return f"missing binaries: {', '.join(missing)}"
    if driver == "iptc":
        try:
            import iptc  # type: ignore[import-untyped]  # noqa: F401
        except Exception as e:  # ImportError or XTablesError
            return f"python-iptables unusable: {e}"
    return None


@contextmanager
def netns() -> Iterator[str]:
    name = create_netns("svcnet-ipt-")
    try:
        yield name
    finally:
        delete_netns(name)


def sh(ns: str, cmd: str, stdin: str | None = None) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *shlex.split(cmd)],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def strip_save(text: str) -> str:
    """iptables-save output without its comment lines and counters."""
    return "\n".join(ln for ln in text.splitlines() if not ln.startswith("#"))


# -- a fake kernel with iptables-restore --noflush semantics -------------------------------


class FakeKernel:
    """Applies restore texts like ``iptables-restore --noflush`` (strictly: -D of a
    missing rule and -X of a non-empty or referenced chain fail the transaction)."""

    BUILTIN = {
        "nat": ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        "filter": ["INPUT", "FORWARD", "OUTPUT"],
    }

    def __init__(self) -> None:
        self.tables: dict[tuple[IPFamily, str], dict[str, list[str]]] = {
            (f, t): {c: [] for c in cs} for f in IPFamily for t, cs in self.BUILTIN.items()
        }

    def restore(self, family: IPFamily, text: str) -> None:
        table_name = text.splitlines()[0][1:]
        work = {c: list(r) for c, r in self.tables[(family, table_name)].items()}
        for line in text.splitlines()[1:]:
            if not line or line == "COMMIT":
                continue
            if line.startswith(":"):
                work[line[1:].split()[0]] = []
                continue
            op, chain, rest = line.split(" ", 2) if line.count(" ") >= 2 else (*line.split(" "), "")
            if op == "-A":
                work[chain].append(rest)
            elif op == "-I":
                pos, spec = rest.split(" ", 1)
                work[chain].insert(int(pos) - 1, spec)
            elif op == "-D":
                work[chain].remove(rest)  # ValueError when missing
            elif op == "-X":
                if work[chain]:
                    raise ValueError(f"chain {chain} not empty")
                if any(r.endswith(f"-j {chain}") for rs in work.values() for r in rs):
                    raise ValueError(f"chain {chain} referenced")
                del work[chain]
            else:
                raise ValueError(line)
        self.tables[(family, table_name)] = work

    def apply(self, texts: dict[tuple[IPFamily, str], str]) -> None:
        for (family, _t), text in texts.items():
            self.restore(family, text)

    def save(self, family: IPFamily) -> str:
        lines = []
        for (f, t), chains in self.tables.items():
            if f is not family:
                continue
            lines.append(f"*{t}")
            lines += [f":{c} - [0:0]" for c in chains]
            for c, rules in chains.items():
                lines += [f"-A {c} {r}" for r in rules]
            lines.append("COMMIT")
        return "\n".join(lines)

    def read(self) -> Ruleset:
        tables = {}
        for family in IPFamily:
            for name, t in parse_save(self.save(family), family).items():
                tables[(family, name)] = t
        return Ruleset(tables)


# -- random clusters ----------------------------------------------------------------------


def node_docs() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": n, "labels": {"topology.kubernetes.io/zone": f"z-{n}"}},
            "spec": {"podCIDRs": [c4, c6]},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": a4},
                    {"type": "InternalIP", "address": a6},
                ]
            },
        }
        for n, (a4, a6, c4, c6) in NODES.items()
    ]


@st.composite
def pod_doc(draw: Any, index: int, apps: int) -> dict[str, Any]:
    node = draw(st.sampled_from(sorted(NODES)))
    n = 1 if node == "node-a" else 2
    ready = draw(st.booleans())
    meta: dict[str, Any] = {
        "name": f"p{index}",
        "namespace": "default",
        "labels": {"app": f"s{draw(st.integers(0, apps - 1))}"},
    }
    if draw(st.integers(0, 5)) == 0:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "nodeName": node,
            "containers": [
                {
                    "name": "c",
                    "ports": [
                        {"name": "web", "containerPort": 8080},
                        {"name": "dns", "containerPort": 5353, "protocol": "UDP"},
                    ],
                }
            ],
        },
        "status": {
            "podIPs": [
                {"ip": f"10.244.{n}.{10 + index}"},
                {"ip": f"fd00:244:0:{n}::{10 + index:x}"},
            ],
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


@st.composite
def service_doc(draw: Any, index: int) -> dict[str, Any]:
    stype = draw(st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer"]))
    fam = draw(st.sampled_from([["IPv4"], ["IPv6"], ["IPv4", "IPv6"]]))
    spec: dict[str, Any] = {
        "type": stype,
        "selector": {"app": f"s{index}"},
        "ipFamilies": fam,
        "ipFamilyPolicy": "RequireDualStack" if len(fam) == 2 else "SingleStack",
    }
    ips = {"IPv4": f"10.96.1.{10 + index}", "IPv6": f"fd00:96::1{10 + index:02x}"}
    spec["clusterIPs"] = [ips[f] for f in fam]
    spec["clusterIP"] = spec["clusterIPs"][0]
    ports = []
    nports = draw(st.integers(1, 2))
    protos = draw(
        st.lists(st.sampled_from(["TCP", "UDP", "SCTP"]), min_size=nports, max_size=nports)
    )
    for i, proto in enumerate(protos):
        p: dict[str, Any] = {"name": f"p{i}", "port": 80 + i, "protocol": proto}
        p["targetPort"] = draw(st.sampled_from([8080, "web", "dns", 9090]))
        if stype != "ClusterIP":
            p["nodePort"] = 30000 + index * 10 + i
        ports.append(p)
    spec["ports"] = ports
    if stype != "ClusterIP":
        spec["externalTrafficPolicy"] = draw(st.sampled_from(["Cluster", "Local"]))
    spec["internalTrafficPolicy"] = draw(st.sampled_from(["Cluster", "Local"]))
    if draw(st.booleans()):
        spec["sessionAffinity"] = "ClientIP"
        spec["sessionAffinityConfig"] = {
            "clientIP": {"timeoutSeconds": draw(st.sampled_from([30, 10800]))}
        }
    if draw(st.integers(0, 3)) == 0:
        spec["externalIPs"] = [
            {"IPv4": f"192.0.2.{10 + index}", "IPv6": f"2001:db8:2::{10 + index:x}"}[fam[0]]
        ]
    if stype == "LoadBalancer" and draw(st.booleans()):
        spec["loadBalancerSourceRanges"] = draw(
            st.sampled_from(
                [["198.51.100.0/24"], ["10.244.0.0/16"], ["192.168.56.0/24", "2001:db8:7::/48"]]
            )
        )
    labels = {}
    if draw(st.integers(0, 7)) == 0:
        labels["service.kubernetes.io/service-proxy-name"] = "other"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"s{index}", "namespace": "default", "labels": labels},
        "spec": spec,
    }


@st.composite
def clusters(draw: Any, max_services: int = 3, max_pods: int = 5) -> list[list[dict[str, Any]]]:
    """A list of apply batches (the first one holds nodes)."""
    nsvc = draw(st.integers(1, max_services))
    npod = draw(st.integers(0, max_pods))
    services = [draw(service_doc(i)) for i in range(nsvc)]
    pods = [draw(pod_doc(i, nsvc)) for i in range(npod)]
    return [node_docs() + services + pods]


@st.composite
def events(draw: Any, nsvc: int, npod_max: int = 6) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["pod", "service", "delete-pod", "delete-service"]))
        if kind == "pod":
            out.append(("apply", draw(pod_doc(draw(st.integers(0, npod_max)), nsvc))))
        elif kind == "service":
            out.append(("apply", draw(service_doc(draw(st.integers(0, nsvc))))))
        elif kind == "delete-pod":
            out.append(
                ("delete", ObjectKey(Kind.POD, "default", f"p{draw(st.integers(0, npod_max))}"))
            )
        else:
            out.append(
                ("delete", ObjectKey(Kind.SERVICE, "default", f"s{draw(st.integers(0, nsvc))}"))
            )
    return out


def initial_state(batches: list[list[dict[str, Any]]]) -> ClusterState:
    state = ClusterState.empty(CONFIG)
    for batch in batches:
        state = state.step(Apply(tuple(manifests.load(batch))))
    return state


def step(state: ClusterState, event: tuple[str, Any]) -> ClusterState:
    """One event; an event the core refuses leaves the state as it was."""
    op, arg = event
    try:
        if op == "apply":
            return state.step(Apply(tuple(manifests.load(arg))))
        return state.step(Delete((arg,)))
    except ValueError:
        return state


def agree_with_semantics(rs: Ruleset, state: ClusterState, node: str = "node-a") -> int:
    """Every probe of :func:`probes` interpreted over the read-back ``rs`` gives what
    svcnet.semantics gives; returns how many were compared."""
    from svcnet_iptables.interpret import Interpreter

    from svcnet import semantics
    from svcnet.scenario import same_outcome

    interp = Interpreter(rs)
    n = 0
    for probe in probes(state, node):
        want = semantics.evaluate(state, probe)
        got = interp.evaluate(probe)
        assert same_outcome(got, want), f"{probe}: iptables {got} != semantics {want}"
        n += 1
    return n


def probes(state: ClusterState, node: str = "node-a") -> list[Probe]:
    """Probes at ``node`` covering every frontend, undefined ports and odd addresses."""
    nodeobj = state.nodes[node]
    out: list[Probe] = []
    pod_src = {IPFamily.IPv4: "10.244.2.200", IPFamily.IPv6: "fd00:244:0:2::c8"}
    dests: list[tuple[str, int, Protocol]] = []
    hairpins: list[tuple[str, str, int, Protocol]] = []
    for svc in state.services.values():
        for port, _kind, ip, number, _family in frontends_of(svc, nodeobj):
            dests.append((ip, number, port.protocol))
            dests.append((ip, number + 1000, port.protocol))
        for ip in svc.cluster_ips:
            dests.append((ip, 81, Protocol.UDP))
        for eps in state.service_endpoints(svc.key.namespace, svc.key.name).values():
            for ep in eps[:1]:
                for port, _kind, ip, number, _family in frontends_of(svc, nodeobj):
                    if IPFamily.of(ip) is IPFamily.of(ep.ip):
                        hairpins.append((ep.ip, ip, number, port.protocol))
    dests += [("10.96.200.1", 80, Protocol.TCP), ("fd00:96::ffff", 80, Protocol.TCP)]
    dests += [("192.168.56.11", 30000, Protocol.TCP), ("8.8.8.8", 53, Protocol.UDP)]
    for ip, number, proto in dict.fromkeys(dests):
        fam = IPFamily.of(ip)
        node_ip = nodeobj.address(fam) or "192.168.56.11"
        for kind, src in (
            (SourceKind.POD, pod_src[fam]),
            (SourceKind.NODE, node_ip),
            (SourceKind.EXTERNAL, EXTERNAL[fam]),
        ):
            out.append(Probe(kind, src, node, ip, number, proto))
    for src, ip, number, proto in hairpins[:4]:
        out.append(Probe(SourceKind.POD, src, node, ip, number, proto))
    return out
