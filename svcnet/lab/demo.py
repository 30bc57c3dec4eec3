"""``svcnet demo``: who answers a Service, from a pod, a node and outside (I/O).

As root it builds a two-node lab from ``examples/demo`` (a Deployment, a client
pod and three Services; :func:`load_state` runs the controllers, scheduler and
kubelet so the Deployment's pods exist with their generated names and IPs),
programs it with the nftables backend when that is installed and passes a quick
self-check (else iptables), makes ``count`` real connections per row and tabulates
which pod answered, then removes the lab (always). Without root it tells the same story
on the memory backend: each row's distribution is sampled from the outcome's
probabilities and no packet is sent.
"""

from __future__ import annotations

import glob
import os
import random
import sys
from collections.abc import Callable
from typing import Any

import attrs

from svcnet import manifests, semantics, workloads
from svcnet import plan as plan_mod
from svcnet.backend import Backend, available_backends, load_backend
from svcnet.model import IPFamily, Protocol, format_endpoint
from svcnet.probe import Probe, SourceKind, Verdict
from svcnet.state import Apply, ClusterState

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.normpath(os.path.join(HERE, "..", "..", "examples", "demo"))
LAB = "demo"
EXTERNAL_CLIENT = "198.51.100.7"

Say = Callable[[str], None]


@attrs.frozen
class Row:
    source: str  # "pod default/client", "node node-b", "external 198.51.100.7"
    target: str  # "ClusterIP 10.96.0.10:80"
    counts: tuple[tuple[str, int], ...]  # (pod or fate, connections)
    seen: str  # the client address(es) the pods saw, or what the rules would show


@attrs.frozen
class DemoResult:
    mode: str  # "kernel" or "memory"
    backend: str
    rows: tuple[Row, ...]
    pods: tuple[str, ...]
    count: int


def load_state(directory: str = EXAMPLES) -> ClusterState:
    """The manifests of ``directory`` (``*.yaml``, in name order) applied to an empty
    state and settled (:func:`svcnet.workloads.settle`): Deployments have their
    ReplicaSets and pods, every pod is scheduled, running, ready and has an IP.
    Raises :class:`~svcnet.errors.ManifestError` when there is no manifest."""
    objects: Any = []  # Any: attrs types Apply's converter=tuple parameter loosely
    files = sorted(glob.glob(os.path.join(directory, "*.yaml")))
    if not files:
        from svcnet.errors import ManifestError

        raise ManifestError(f"{directory}: no *.yaml manifests")
    for path in files:
        with open(path, encoding="utf-8") as f:
            objects += manifests.load(f.read(), filename=path)
    return workloads.settle(ClusterState.empty().step(Apply(objects)))


@attrs.frozen
class _Case:
    source: str
    kind: SourceKind
    netns_key: str  # pod key, node name, or "ext"
    src_ip: str
    node: str  # the node that handles it
    label: str
    dst: str
    port: int


def _cases(state: ClusterState) -> list[_Case]:
    client = state.pods[("default", "client")]
    node_a = state.nodes[client.node_name]
    other = next(n for n in sorted(state.nodes) if n != node_a.name)
    node_b = state.nodes[other]
    web = state.services[("default", "web")]
    np_svc = state.services[("default", "web-nodeport")]
    lb = state.services[("default", "web-lb")]
    a_ip = node_a.address(IPFamily.IPv4) or ""
    b_ip = node_b.address(IPFamily.IPv4) or ""
    node_port = next(p.node_port for p in np_svc.ports if p.protocol is Protocol.TCP) or 0
    lb_port = next(p.port for p in lb.ports if p.protocol is Protocol.TCP)
    web_port = next(p.port for p in web.ports if p.protocol is Protocol.TCP)
    targets = [
        ("ClusterIP", web.cluster_ips[0], web_port),
        ("LoadBalancer", lb.load_balancer_ips[0], lb_port),
    ]
    sources = [
        (
            f"pod default/client ({node_a.name})",
            SourceKind.POD,
            "default/client",
            client.pod_ips[0],
            node_a.name,
            a_ip,
        ),
        (f"node {node_b.name}", SourceKind.NODE, node_b.name, b_ip, node_b.name, b_ip),
        (
            f"external {EXTERNAL_CLIENT}",
            SourceKind.EXTERNAL,
            "ext",
            EXTERNAL_CLIENT,
            node_a.name,
            a_ip,
        ),
    ]
    out = []
    for source, kind, key, ip, node, node_ip in sources:
        rows = [targets[0], ("NodePort", node_ip, node_port), targets[1]]
        for label, dst, port in rows:
            out.append(_Case(source, kind, key, ip, node, label, dst, port))
    return out


def _pod_names(state: ClusterState) -> dict[str, str]:
    return {
        ip: pod.name for pod in state.pods.values() for ip in pod.pod_ips if not pod.host_network
    }


def run_memory(state: ClusterState, count: int, say: Say, seed: int = 1) -> DemoResult:
    """The demo without packets: the memory backend's outcomes, sampled."""
    cls = load_backend("memory")
    backends: dict[str, Backend] = {}
    for node in sorted(state.nodes):
        say(f"node {node}: memory backend, plan compiled")
        backends[node] = cls(node)
        backends[node].update(plan_mod.compile(state, node))
    names = _pod_names(state)
    rng = random.Random(seed)
    rows = []
    for case in _cases(state):
        probe = Probe(case.kind, case.src_ip, case.node, case.dst, case.port, Protocol.TCP)
        outcome = backends[case.node].evaluate(probe)
        reference = semantics.evaluate(state, probe)
        if outcome != reference:
            say(f"warning: memory backend and reference disagree on {probe}")
        if outcome.verdict is Verdict.FORWARD:
            targets = sorted(outcome.targets)
            picks = rng.choices(targets, weights=[float(t.probability) for t in targets], k=count)
            tally: dict[str, int] = {}
            for t in picks:
                name = names.get(t.ip, t.address)
                tally[name] = tally.get(name, 0) + 1
            masq = {t.masquerade for t in targets}
            if masq == {True}:
                seen = "node address (masquerade)"
            elif masq == {False}:
                seen = f"{case.src_ip} (kept)"
            else:
                seen = "depends on the endpoint"
            counts = tuple(sorted(tally.items()))
        else:
            counts = ((outcome.verdict.value, count),)
            seen = "-"
        rows.append(
            Row(case.source, f"{case.label} {format_endpoint(case.dst, case.port)}", counts, seen)
        )
    pods = tuple(sorted({n for n in names.values() if n.startswith("web")}))
    return DemoResult("memory", "memory", tuple(rows), pods, count)


def pick_backend(state: ClusterState, say: Say) -> type[Backend]:
    """nftables when installed and its self-check passes, else iptables."""
    installed = available_backends()
    if "nftables" in installed:
        problem = _self_check("nftables", state)
        if problem is None:
            say("backend: nftables (installed, self-check passed)")
            return load_backend("nftables")
        say(f"backend: iptables (nftables failed its self-check: {problem})")
    else:
        say("backend: iptables (nftables is not installed)")
    return load_backend("iptables")


def _self_check(name: str, state: ClusterState) -> str | None:
    """Install the demo plan in a scratch namespace and compare a few probes with
    the reference semantics; the first problem, or None."""
    from svcnet.kernel import kernel_backends

    try:
        cls = load_backend(name)
        node = sorted(state.nodes)[0]
        with kernel_backends(cls, f"svcnet-{LAB}chk-") as make:
            backend = make(node)
            try:
                backend.sync(plan_mod.compile(state, node))
                for case in _cases(state):
                    if case.node != node:
                        continue
                    probe = Probe(case.kind, case.src_ip, node, case.dst, case.port)
                    got, want = backend.evaluate(probe), semantics.evaluate(state, probe)
                    if got.verdict is not want.verdict or got.endpoints != want.endpoints:
                        return f"{probe}: {got} instead of {want}"
            finally:
                backend.close()
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None


def run_kernel(state: ClusterState, count: int, say: Say) -> DemoResult:
    """The demo with real packets in a lab (always torn down)."""
    from svcnet.lab import prober
    from svcnet.lab.control import Lab
    from svcnet.lab.topology import ext_netns

    backend = pick_backend(state, say)
    lab = Lab(LAB, backend, progress=say)
    try:
        topo = lab.up(state)
        names = {p.ip: p.name for p in topo.pods if not p.host_network}
        rows = []
        ext = ext_netns(topo.lab)
        with prober.ext_source(topo, EXTERNAL_CLIENT):
            for case in _cases(state):
                say(f"{count} connections: {case.source} -> {case.label}")
                if case.netns_key == "ext":
                    where, bind = ext, EXTERNAL_CLIENT
                elif "/" in case.netns_key:
                    pod = topo.pod(case.netns_key)
                    assert pod is not None
                    where, bind = pod.netns, None
                else:
                    node = topo.node(case.netns_key)
                    assert node is not None
                    where, bind = node.netns, None
                via = topo.node(case.node)
                assert via is not None
                tally: dict[str, int] = {}
                seen: dict[str, int] = {}
                route = prober.ext_route(topo, case.dst, via.ip) if bind else _nothing()
                with route:
                    for _ in range(count):
                        obs = prober.send(where, case.dst, case.port, source=bind)
                        if obs.fate is prober.Fate.ANSWERED:
                            ip = obs.endpoint.rpartition(":")[0]
                            key = names.get(ip, obs.endpoint)
                            seen[obs.seen] = seen.get(obs.seen, 0) + 1
                        else:
                            key = obs.fate.value
                        tally[key] = tally.get(key, 0) + 1
                rows.append(
                    Row(
                        case.source,
                        f"{case.label} {format_endpoint(case.dst, case.port)}",
                        tuple(sorted(tally.items())),
                        _seen_text(seen, case.src_ip, case.kind is SourceKind.NODE),
                    )
                )
        pods = tuple(sorted({n for n in names.values() if n.startswith("web")}))
        return DemoResult("kernel", backend.name, tuple(rows), pods, count)
    finally:
        say(f"removing lab {LAB}")
        lab.down()


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _seen_text(seen: dict[str, int], sender: str, node: bool = False) -> str:
    if not seen:
        return "-"
    parts = []
    for ip in sorted(seen):
        if ip == sender:
            parts.append(f"{ip} (the node's own)" if node else f"{ip} (kept)")
        else:
            parts.append(f"{ip} (masquerade)")
    return ", ".join(parts)


def format_table(result: DemoResult) -> str:
    pods = list(result.pods)
    extra = sorted({k for r in result.rows for k, _ in r.counts if k not in pods})
    columns = pods + extra
    head = ["from", "to", *columns, "client address the pod saw"]
    body = []
    for r in result.rows:
        counts = dict(r.counts)
        body.append([r.source, r.target, *(str(counts.get(c, 0)) for c in columns), r.seen])
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = []
    for row in [head, *body]:
        cells = []
        for i, cell in enumerate(row):
            numeric = 2 <= i < 2 + len(columns)
            cells.append(cell.rjust(widths[i]) if numeric else cell.ljust(widths[i]))
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(
    count: int = 100,
    *,
    directory: str = EXAMPLES,
    say: Say | None = None,
    force_memory: bool = False,
) -> DemoResult:
    from svcnet.kernel.netns import is_root

    say = say or (lambda m: print(m, file=sys.stderr))
    state = load_state(directory)
    if is_root() and not force_memory:
        return run_kernel(state, count, say)
    return run_memory(state, count, say)
