"""The data-plane cost of service rules: median TCP connect() latency through a node.

    python bench/bench_dataplane.py [--services 10000] [--connects 500]
                                    [--layouts nftables,iptables,kube-proxy]

Three network namespaces per measurement, all named ``svcnet-dp...`` and deleted at
the end (also on failure): a client (10.244.1.2, inside the cluster CIDR), a node
(10.244.1.1 / 10.244.2.1, forwarding) programmed with one layout, and a pod
(10.244.2.2) whose listener accepts on port 8080; veth links between them. Every
service is selectorless (an EndpointSlice with the one pod address), ClusterIP
10.96.0.0/12 + i, port 80 -> 8080, compiled from a real ``ClusterState`` for the node.

Layouts:
- ``nftables``: svcnet's nftables backend;
- ``iptables``: svcnet's iptables backend, legacy variant (the nat dispatch as
  address trees, ``svcnet_iptables.tree``);
- ``iptables-flat``: the same backend with trees that never split
  (``Renderer(leaf=2**30)``): the flat, linear SVCNET-SERVICES of the layout before;
- ``kube-proxy``: kube-proxy's iptables layout as described in
  /work/shared/KUBE-PROXY-FACTS.md (a linear nat KUBE-SERVICES, one rule per
  service port -> KUBE-SVC-X -> KUBE-SEP-X DNAT, a last ``--dst-type LOCAL`` jump to
  KUBE-NODEPORTS, its filter hooks), written by this script with
  ``iptables-legacy-restore``.

Figures per layout: 10 services (first / last), 10,000 services (first / middle /
last in dispatch order: services are named svc-00000.. so that name order, which
svcnet and this script both use, is address order), 20 services drawn at random
(seed 17): the median and the maximum of their medians, and a connection straight
to the pod (no service: such a packet misses every dispatch rule), at 10 and at
10,000 services. Each figure is the median of
``--connects`` connects, each a new connection (the client closes with SO_LINGER
0: an RST, no TIME_WAIT), so every one passes nat: in 5 rounds over all the
targets, a target's figure is its best round's median (of connects/5, after 20
warm-up connects). On the shared 2-core machine single medians jumped between ~40
and ~100 µs from one batch of connects to the next whatever the rules (other
engineers' load); the best round is the figure that shows the rules' cost. Needs
root.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import socket
import statistics
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from svcnet import manifests
from svcnet.backend import Backend, load_backend
from svcnet.kernel import netns as kns
from svcnet.model import ClusterConfig
from svcnet.plan import Plan, compile
from svcnet.state import Apply, ClusterState

CONFIG = ClusterConfig(service_cidrs=("10.96.0.0/12",), cluster_cidrs=("10.244.0.0/16",))
NODE = "node-a"
POD_IP = "10.244.2.2"
POD_PORT = 8080
PORT = 80
WARM = 20
ROUNDS = 5
SEED = 17

SERVER = f"""
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {POD_PORT}))
s.listen(4096)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.close()
"""


def cluster_ip(i: int) -> str:
    j = i + 256
    return f"10.{96 + j // 65536}.{(j // 256) % 256}.{j % 256}"


def name(i: int) -> str:
    return f"svc-{i:05d}"


def state(n: int) -> ClusterState:
    """n selectorless services, each with one EndpointSlice holding the pod."""
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": NODE},
            "spec": {"podCIDRs": ["10.244.1.0/24"]},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.244.1.1"}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "node-b"},
            "spec": {"podCIDRs": ["10.244.2.0/24"]},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.244.2.1"}]},
        },
    ]
    for i in range(n):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name(i), "namespace": "bench"},
                "spec": {
                    "clusterIP": cluster_ip(i),
                    "ports": [{"name": "http", "port": PORT, "targetPort": POD_PORT}],
                },
            }
        )
        docs.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name(i)}-1",
                    "namespace": "bench",
                    "labels": {"kubernetes.io/service-name": name(i)},
                },
                "addressType": "IPv4",
                "endpoints": [
                    {"addresses": [POD_IP], "conditions": {"ready": True}, "nodeName": "node-b"}
                ],
                "ports": [{"name": "http", "port": POD_PORT, "protocol": "TCP"}],
            }
        )
    return ClusterState.empty(CONFIG).step(Apply(tuple(manifests.load(docs))))


# -- topology ------------------------------------------------------------------------


def _ip(*args: str) -> None:
    kns.run(["ip", *args])


@contextmanager
def topology() -> Iterator[tuple[str, str, str]]:
    """(client, node, pod) namespaces, linked and addressed; a listener in the pod."""
    tag = uuid.uuid4().hex[:6]
    names = [f"svcnet-dp{tag}-{role}" for role in ("c", "n", "p")]
    server: subprocess.Popen[str] | None = None
    try:
        for ns in names:
            kns.create(ns)
        cli, node, pod = names
        _ip("link", "add", "c0", "netns", cli, "type", "veth", "peer", "name", "n0", "netns", node)
        _ip("link", "add", "p0", "netns", pod, "type", "veth", "peer", "name", "n1", "netns", node)
        for ns, dev, addr in (
            (cli, "c0", "10.244.1.2/24"),
            (node, "n0", "10.244.1.1/24"),
            (node, "n1", "10.244.2.1/24"),
            (pod, "p0", "10.244.2.2/24"),
        ):
            _ip("-n", ns, "addr", "add", addr, "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        _ip("-n", cli, "route", "add", "default", "via", "10.244.1.1")
        _ip("-n", pod, "route", "add", "default", "via", "10.244.2.1")
        kns.sysctls(node, {"net.ipv4.ip_forward": "1"})
        server = subprocess.Popen(
            ["ip", "netns", "exec", pod, sys.executable, "-c", SERVER],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError("the pod's listener did not start")
        yield cli, node, pod
    finally:
        if server is not None:
            server.kill()
            server.wait()
        kns.delete_all(names)


def connect_median(client: str, ip: str, n: int, port: int = PORT) -> float:
    """The median connect() time to ip:port from ``client``, in microseconds."""
    linger = struct.pack("ii", 1, 0)
    times: list[int] = []
    with kns.entered(client):
        for k in range(WARM + n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            s.settimeout(5)
            t0 = time.perf_counter_ns()
            s.connect((ip, port))
            t1 = time.perf_counter_ns()
            s.close()
            if k >= WARM:
                times.append(t1 - t0)
    return statistics.median(times) / 1000


# -- the layouts ---------------------------------------------------------------------


def _svcnet(
    backend: str, flat: bool = False, **kw: Any
) -> Callable[[str, Plan, int], Callable[[], None]]:
    def install(node: str, plan: Plan, _n: int) -> Callable[[], None]:
        be: Backend = load_backend(backend)(NODE, netns=node, **kw)
        if flat:
            from svcnet_iptables.render import Renderer

            be._renderer = Renderer(leaf=1 << 30)  # type: ignore[attr-defined]
        be.sync(plan)

        def done() -> None:
            be.cleanup()
            be.close()

        return done

    return install


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16].upper()


def kube_proxy_text(n: int) -> str:
    """kube-proxy's iptables layout for the n services (nat and filter), from the
    description in KUBE-PROXY-FACTS.md section 2.1; one endpoint each."""
    nat: list[str] = ["*nat"]
    chains = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"]
    rules: list[str] = []
    for i in range(n):
        spn = f"bench/{name(i)}:http"
        svc, sep = "KUBE-SVC-" + _h(spn + "tcp"), "KUBE-SEP-" + _h(f"{spn}tcp{POD_IP}:{POD_PORT}")
        chains += [svc, sep]
        cip = cluster_ip(i)
        rules += [
            f'-A KUBE-SERVICES -d {cip}/32 -p tcp -m comment --comment "{spn} cluster IP" '
            f"-m tcp --dport {PORT} -j {svc}",
            f'-A {svc} ! -s 10.244.0.0/16 -d {cip}/32 -p tcp -m comment --comment "{spn} '
            f'cluster IP" -m tcp --dport {PORT} -j KUBE-MARK-MASQ',
            f'-A {svc} -m comment --comment "{spn} -> {POD_IP}:{POD_PORT}" -j {sep}',
            f'-A {sep} -s {POD_IP}/32 -m comment --comment "{spn}" -j KUBE-MARK-MASQ',
            f'-A {sep} -p tcp -m comment --comment "{spn}" -m tcp '
            f"-j DNAT --to-destination {POD_IP}:{POD_PORT}",
        ]
    rules += [
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports" '
        "-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
        "-A KUBE-POSTROUTING -j MASQUERADE --random-fully",
        "-A PREROUTING -j KUBE-SERVICES",
        "-A OUTPUT -j KUBE-SERVICES",
        "-A POSTROUTING -j KUBE-POSTROUTING",
    ]
    nat += [f":{c} - [0:0]" for c in chains] + rules + ["COMMIT"]
    new = "-m conntrack --ctstate NEW"
    flt = [
        "*filter",
        *(
            f":{c} - [0:0]"
            for c in (
                "KUBE-PROXY-FIREWALL",
                "KUBE-NODEPORTS",
                "KUBE-EXTERNAL-SERVICES",
                "KUBE-FORWARD",
                "KUBE-SERVICES",
            )
        ),
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        "-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT",
        "-A KUBE-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        f"-A INPUT {new} -j KUBE-PROXY-FIREWALL",
        "-A INPUT -j KUBE-NODEPORTS",
        f"-A INPUT {new} -j KUBE-EXTERNAL-SERVICES",
        f"-A FORWARD {new} -j KUBE-PROXY-FIREWALL",
        "-A FORWARD -j KUBE-FORWARD",
        f"-A FORWARD {new} -j KUBE-SERVICES",
        f"-A FORWARD {new} -j KUBE-EXTERNAL-SERVICES",
        f"-A OUTPUT {new} -j KUBE-PROXY-FIREWALL",
        f"-A OUTPUT {new} -j KUBE-SERVICES",
        "COMMIT",
    ]
    return "\n".join(nat + flt) + "\n"


def _kube_proxy(node: str, _plan: Plan, n: int) -> Callable[[], None]:
    kns.run(["ip", "netns", "exec", node, "iptables-legacy-restore"], input=kube_proxy_text(n))
    return lambda: None  # the namespace goes, and its tables with it


LAYOUTS: dict[str, tuple[str, Callable[[str, Plan, int], Callable[[], None]]]] = {
    "nftables": ("svcnet nftables", _svcnet("nftables")),
    "iptables": ("svcnet iptables (legacy), trees", _svcnet("iptables", variant="legacy")),
    "iptables-flat": (
        "svcnet iptables (legacy), flat (the layout before)",
        _svcnet("iptables", flat=True, variant="legacy"),
    ),
    "kube-proxy": ("kube-proxy's iptables layout (this script)", _kube_proxy),
}


def measure(
    layout: str, n: int, plan: Plan, picks: dict[str, list[int]], connects: int
) -> dict[str, list[float]]:
    """Per pick group, the connect time (µs) of each service in it; "pod":
    straight to the pod's address (no service: the packet misses every rule).
    ROUNDS rounds over all targets, each target's median of connects/ROUNDS per
    round; a target's figure is its best round (the shared machine's load comes and
    goes in bursts longer than a round: see the module doc)."""
    _label, install = LAYOUTS[layout]
    per = max(connects // ROUNDS, 10)
    targets = [(g, cluster_ip(i), PORT) for g, idx in picks.items() for i in idx]
    targets.append(("pod", POD_IP, POD_PORT))
    best = [float("inf")] * len(targets)
    with topology() as (cli, node, _pod):
        done = install(node, plan, n)
        try:
            for _round in range(ROUNDS):
                for k, (_g, ip, port) in enumerate(targets):
                    best[k] = min(best[k], connect_median(cli, ip, per, port))
        finally:
            done()
    out: dict[str, list[float]] = {}
    for (group, _ip, _port), figure in zip(targets, best, strict=True):
        out.setdefault(group, []).append(figure)
    return out


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--connects", type=int, default=500)
    ap.add_argument("--layouts", default=",".join(LAYOUTS))
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_dataplane: needs root (network namespaces); skipped", file=sys.stderr)
        return 0
    layouts = [x for x in args.layouts.split(",") if x]
    for x in layouts:
        if x not in LAYOUTS:
            ap.error(f"unknown layout {x!r} (known: {', '.join(LAYOUTS)})")
    n = args.services
    small = compile(state(10), NODE)
    t0 = time.perf_counter()
    big = compile(state(n), NODE)
    print(f"{n} services compiled in {time.perf_counter() - t0:.1f} s", flush=True)
    rand = random.Random(SEED).sample(range(n), 20)
    print(f"median connect() latency in µs, {args.connects} connects each [{load()}]")
    for layout in layouts:
        few = measure(layout, 10, small, {"first": [0], "last": [9]}, args.connects)
        many = measure(
            layout,
            n,
            big,
            {"first": [0], "middle": [n // 2], "last": [n - 1], "random": rand},
            args.connects,
        )
        r = many["random"]
        print(
            f"{LAYOUTS[layout][0]}: 10 services first {few['first'][0]:.1f} / last "
            f"{few['last'][0]:.1f}; {n}: first {many['first'][0]:.1f} / middle "
            f"{many['middle'][0]:.1f} / last {many['last'][0]:.1f}; 20 random: median "
            f"{statistics.median(r):.1f} / max {max(r):.1f}; no service (to the pod) "
            f"{few['pod'][0]:.1f} / {many['pod'][0]:.1f}; last/first "
            f"{many['last'][0] / many['first'][0]:.2f} [{load()}]",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        sys.exit(main())
