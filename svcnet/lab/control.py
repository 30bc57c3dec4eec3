"""The lab: a cluster state made real in network namespaces (I/O).

:class:`Lab` reconciles the namespaces, links, routes and pod servers with a
:class:`~svcnet.state.ClusterState` (``up(state)`` builds what is missing and
removes what is no longer there, so it is idempotent and also the update path)
and, when given a kernel backend class, programs every node namespace with
``backend.update(compile(state, node))``. ``down()`` removes everything, also
what a crashed run left: it finds the lab's namespaces by their
``svcnet-<lab>-`` prefix and kills the server processes recorded in
``/run/svcnet/<lab>/lab.json`` or running in those namespaces.

A live lab (``svcnet lab up``) is bound to a store: its record names the store and
the backend, one ``svcnet agent`` per node programs the node's namespace, and a
follower (:mod:`svcnet.lab.follow`) keeps the plumbing and DNS in step with the
store; the lab itself then programs nothing (``backend`` None). ``down()`` stops
the follower and the agents first (by the PIDs in the record, checked against
their command lines), so nothing rebuilds what it removes.

Links, addresses and routes are made with iproute2 batches
(:func:`svcnet.kernel.netns.batch`, one ``ip -batch`` process per namespace and
round), not pyroute2: measured on the demo topology (2 nodes, 4 pods) the
plumbing took 260-390 ms with ``ip -batch`` and 490-690 ms with pyroute2, with
54 pods 2.0-3.1 s against 3.3-4.6 s (:mod:`svcnet.kernel.netns` has the details).

Service DNS: every node runs ``python -m svcnet.dns.server`` in its namespace,
listening on the node's address (the pods' gateway) port 53, UDP and TCP, and
answering from the state the lab pickles in ``/run/svcnet/<lab>/state.pickle``
(re-read when it changes); names outside the cluster's zones are REFUSED. Every
pod namespace gets ``/etc/netns/<pod netns>/resolv.conf`` (``ip netns exec``
shows it as /etc/resolv.conf): ``nameserver <node address>``, the search path
``<ns>.svc.<domain> svc.<domain> <domain>`` and ``options ndots:5``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from svcnet import dns as dns_mod
from svcnet import plan as plan_mod
from svcnet.backend import Backend
from svcnet.kernel import netns
from svcnet.kernel.netns import LabError
from svcnet.lab.topology import (
    ANYIP_TABLE,
    EXT_UNDERLAY_IP,
    ROUTE_PROTO,
    LabNode,
    LabPod,
    Topology,
    build,
    check_lab_name,
    ext_netns,
    prefix,
    underlay_netns,
)
from svcnet.plan import Plan
from svcnet.state import ClusterState

RUN_DIR = "/run/svcnet"
AGENTS_DIR = os.path.join(RUN_DIR, "agents")  # svcnet agent's status files, one per netns
FOLLOW_MODULE = "svcnet.lab.follow"
POD_ROUTE_PROTO = 201
SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "podserver.py")
DNS_MODULE = "svcnet.dns.server"
DNS_PORT = 53
# the folder holding the svcnet package, the DNS server's working directory
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NODE_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
}
EXT_SYSCTLS = {
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
    "net.ipv4.conf.all.accept_local": "1",
    "net.ipv4.conf.default.accept_local": "1",
}

Progress = Callable[[str], None]


def state_dir(lab: str) -> str:
    return os.path.join(RUN_DIR, lab)


def state_file(lab: str) -> str:
    return os.path.join(state_dir(lab), "lab.json")


def state_pickle(lab: str) -> str:
    """The file the lab's DNS servers serve from (the lab's current ClusterState)."""
    return os.path.join(state_dir(lab), "state.pickle")


def resolv_conf(pod: LabPod, node: LabNode, domain: str) -> str:
    """A pod's /etc/resolv.conf (dnsPolicy ClusterFirst, its node's DNS server)."""
    search = " ".join(dns_mod.search_path(pod.namespace, domain))
    return f"nameserver {node.ip}\nsearch {search}\noptions ndots:5\n"


def read_record(lab: str) -> dict[str, Any]:
    try:
        with open(state_file(lab), encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def agent_status_file(node_netns: str) -> str:
    """The status file ``svcnet agent --netns NODE_NETNS`` writes after each sync."""
    return os.path.join(AGENTS_DIR, f"{node_netns}.json")


def read_agent_status(node_netns: str) -> dict[str, Any] | None:
    """The agent's last status for ``node_netns`` (None: no agent wrote one)."""
    path = agent_status_file(node_netns)
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
        mtime = os.stat(path).st_mtime
    except (OSError, ValueError):
        return None
    if not isinstance(value, dict):
        return None
    value.setdefault("written", mtime)
    return value


def agent_http_get(
    node_netns: str, address: str, path: str, timeout: float = 2.0
) -> tuple[int, bytes]:
    """GET ``path`` from an agent's HTTP server at ``address`` (``host:port`` as its
    status file says; a wildcard host is asked on loopback) inside ``node_netns``:
    (status code, body). The calling thread enters the namespace for the request
    and comes back (:func:`svcnet.kernel.setns.entered`)."""
    import http.client

    from svcnet.agent.httpserve import parse_address
    from svcnet.kernel.setns import entered

    host, port = parse_address(address)
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    with entered(node_netns):
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


def _cmdline(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def our_agent(pid: int, node_netns: str) -> bool:
    """``pid`` is a ``svcnet agent`` programming ``node_netns``."""
    args = _cmdline(pid)
    return b"agent" in args and node_netns.encode() in args


def our_follower(pid: int, lab: str) -> bool:
    """``pid`` is the follower of lab ``lab`` (``python -m svcnet.lab.follow --name LAB``)."""
    args = _cmdline(pid)
    return FOLLOW_MODULE.encode() in args and lab.encode() in args


def _quiet(_: str) -> None:
    pass


class Lab:
    """One lab named ``name`` (namespaces ``svcnet-<name>-*``)."""

    def __init__(
        self,
        name: str,
        backend: type[Backend] | None = None,
        *,
        progress: Progress | None = None,
    ) -> None:
        self.name = check_lab_name(name)
        self.backend_cls = backend
        self.progress = progress or _quiet
        self.topo: Topology | None = None
        self.state: ClusterState | None = None
        self.servers: dict[str, int] = {}  # pod key -> server pid
        self.dns: dict[str, int] = {}  # node name -> DNS server pid
        self.backends: dict[str, Backend] = {}
        self.plans: dict[str, Plan] = {}
        self.extra: dict[str, Any] = {}  # saved in the record (e.g. the CLI's manifests)

    def resume(self) -> ClusterState | None:
        """Take over the lab another process built: its record (servers, DNS servers,
        extra keys) and the state it was last made to match (the DNS state file).
        Returns that state, or None when there is no such lab (then ``up`` builds)."""
        record = read_record(self.name)
        try:
            with open(state_pickle(self.name), "rb") as f:
                state = pickle.load(f)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError):
            return None
        if not record or not isinstance(state, ClusterState):
            return None
        owned = {"name", "servers", "dns", "namespaces", "updated"}
        self.extra = {k: v for k, v in record.items() if k not in owned}
        self.servers = {str(k): int(v) for k, v in record.get("servers", {}).items()}
        self.dns = {str(k): int(v) for k, v in record.get("dns", {}).items()}
        self.topo = build(self.name, state)
        self.state = state
        return state

    # -- building -------------------------------------------------------------------
    def up(self, state: ClusterState) -> Topology:
        """Make the lab match ``state`` (build, update or no-op)."""
        if not netns.is_root():
            raise LabError("the lab needs root (network namespaces)")
        topo = build(self.name, state)
        old = self.topo
        try:
            if old is None:
                self._adopt()
                self._base()
            old_nodes = {n.name: n for n in old.nodes} if old else {}
            new_nodes = {n.name: n for n in topo.nodes}
            old_pods = {p.key: p for p in old.pods} if old else {}
            new_pods = {p.key: p for p in topo.pods}
            gone_nodes = {n for n, v in old_nodes.items() if new_nodes.get(n) != v}
            for key, pod in old_pods.items():
                new = new_pods.get(key)
                if pod.node in gone_nodes or new is None or new.identity != pod.identity:
                    self._remove_pod(pod)
            for name in sorted(gone_nodes):
                self._remove_node(old_nodes[name])
            for name, node in sorted(new_nodes.items()):
                if old_nodes.get(name) != node or not netns.exists(node.netns):
                    self.progress(f"node {name}: namespace {node.netns}, address {node.ip}")
                    self._add_node(node)
            for node in topo.nodes:
                netns.batch(
                    node.netns,
                    [f"route flush proto {ROUTE_PROTO}"]
                    + [f"route replace {r} proto {ROUTE_PROTO}" for r in node.routes(topo)],
                )
            netns.batch(
                ext_netns(self.name),
                [f"route flush proto {ROUTE_PROTO}"]
                + [f"route replace {r} proto {ROUTE_PROTO}" for r in topo.ext_routes()],
            )
            fresh = []
            for key, pod in sorted(new_pods.items()):
                before = old_pods.get(key)
                rebuilt = (
                    before is None
                    or before.node in gone_nodes
                    or before.identity != pod.identity
                    or (key not in self.servers and bool(pod.tcp or pod.udp))
                )
                if rebuilt:
                    self._add_pod(pod, topo)
                    fresh.append(pod)
            self._start_servers(fresh)
            self._write_state(state)
            self._resolv(topo, state.config.cluster_domain)
            self._start_dns(topo)
            self.topo = topo
            self.state = state
            self._program(state, topo)
        finally:
            self.save()
        return topo

    def _adopt(self) -> None:
        """Forget nothing: a lab of this name left by a crashed run is removed first."""
        if netns.listed(prefix(self.name)) or read_record(self.name):
            self.progress(f"lab {self.name}: removing leftovers of an earlier run")
            down(self.name)

    def _base(self) -> None:
        under, ext = underlay_netns(self.name), ext_netns(self.name)
        self.progress(f"underlay {under} (bridge br0), client {ext} ({EXT_UNDERLAY_IP})")
        os.makedirs(state_dir(self.name), exist_ok=True)
        netns.create(under)
        netns.create(ext)
        netns.batch(
            under,
            [
                "link add br0 type bridge",
                "link set br0 up",
                f"link add ext type veth peer name eth0 netns {ext}",
                "link set ext master br0",
                "link set ext up",
            ],
        )
        netns.sysctls(ext, EXT_SYSCTLS)
        netns.batch(
            ext,
            [
                f"addr add {EXT_UNDERLAY_IP}/32 dev eth0",
                "link set eth0 up",
                f"route add local 0.0.0.0/0 dev lo table {ANYIP_TABLE}",
                f"rule add pref 100 iif eth0 lookup {ANYIP_TABLE}",
            ],
        )

    def _add_node(self, node: LabNode) -> None:
        netns.delete(node.netns)
        netns.create(node.netns)
        under = underlay_netns(self.name)
        netns.batch(under, [f"link del {node.port}"], force=True)
        netns.batch(
            under,
            [
                f"link add {node.port} type veth peer name eth0 netns {node.netns}",
                f"link set {node.port} master br0",
                f"link set {node.port} up",
            ],
        )
        netns.sysctls(node.netns, NODE_SYSCTLS)
        netns.batch(
            node.netns,
            [
                f"addr add {node.ip}/32 dev eth0",
                "link set eth0 up",
                f"route add {EXT_UNDERLAY_IP}/32 dev eth0 scope link",
                f"route add default via {EXT_UNDERLAY_IP} dev eth0 onlink",
            ],
        )

    def _remove_node(self, node: LabNode) -> None:
        self.progress(f"node {node.name}: removed")
        backend = self.backends.pop(node.name, None)
        self.plans.pop(node.name, None)
        self.dns.pop(node.name, None)  # stopped with the namespace's processes
        if backend is not None:
            with contextlib.suppress(Exception):
                backend.close()
        netns.stop(netns.pids(node.netns))
        netns.delete(node.netns)
        netns.batch(underlay_netns(self.name), [f"link del {node.port}"], force=True)

    def _add_pod(self, pod: LabPod, topo: Topology) -> None:
        node = topo.node(pod.node)
        assert node is not None
        if pod.host_network:
            self.progress(f"pod {pod.key}: host network on {pod.node}")
            return
        self.progress(f"pod {pod.key}: {pod.ip} on {pod.node}")
        netns.delete(pod.netns)
        netns.create(pod.netns)
        netns.batch(node.netns, [f"link del {pod.veth}"], force=True)
        netns.batch(
            node.netns,
            [
                f"link add {pod.veth} type veth peer name eth0 netns {pod.netns}",
                f"addr add {node.ip}/32 dev {pod.veth}",
                f"link set {pod.veth} up",
                f"route replace {pod.ip}/32 dev {pod.veth} scope link proto {POD_ROUTE_PROTO}",
            ],
        )
        netns.batch(
            pod.netns,
            [
                f"addr add {pod.ip}/32 dev eth0",
                "link set eth0 up",
                f"route add {node.ip}/32 dev eth0 scope link",
                f"route add default via {node.ip} dev eth0 onlink",
            ],
        )

    def _remove_pod(self, pod: LabPod) -> None:
        pid = self.servers.pop(pod.key, None)
        if pid is not None:
            netns.stop([pid])
        if not pod.host_network:
            netns.remove_etc(pod.netns)
            netns.delete(pod.netns)  # takes the veth pair with it
            node = self.topo.node(pod.node) if self.topo else None
            if node is not None and netns.exists(node.netns):
                netns.batch(
                    node.netns,
                    [f"route del {pod.ip}/32 proto {POD_ROUTE_PROTO}"],
                    force=True,
                )

    def _start_servers(self, pods: list[LabPod]) -> None:
        procs: list[tuple[LabPod, subprocess.Popen[str]]] = []
        log = os.path.join(state_dir(self.name), "servers.log")
        with open(log, "a", encoding="utf-8") as err:
            for pod in pods:
                if not (pod.tcp or pod.udp):
                    continue
                args = ["ip", "netns", "exec", pod.netns, sys.executable, "-I", SERVER]
                args += ["--name", pod.name]
                if pod.host_network:
                    args += ["--bind", pod.ip]
                args += [f"--tcp={p}" for p in pod.tcp] + [f"--udp={p}" for p in pod.udp]
                proc = _spawn(args, err)
                self.servers[pod.key] = proc.pid
                procs.append((pod, proc))
        problems = []
        for pod, proc in procs:
            # slow machines (the IPVS VM's software emulation) may need longer
            if not _started(proc, float(os.environ.get("SVCNET_LAB_START_TIMEOUT", "10"))):
                problems.append(f"pod {pod.key}: server did not start (see {log})")
            else:
                self.progress(
                    f"pod {pod.key}: serving tcp {list(pod.tcp)} udp {list(pod.udp)}"
                    f" (pid {proc.pid})"
                )
        if problems:
            raise LabError("; ".join(problems))

    # -- Service DNS ----------------------------------------------------------------
    def _write_state(self, state: ClusterState) -> None:
        path = state_pickle(self.name)
        os.makedirs(state_dir(self.name), exist_ok=True)
        tmp = path + ".tmp"
        try:
            with open(tmp, "wb") as f:
                pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except (OSError, pickle.PicklingError) as e:
            raise LabError(f"cannot write the lab's state for DNS ({path}): {e}") from e

    def _resolv(self, topo: Topology, domain: str) -> None:
        for pod in topo.pods:
            node = topo.node(pod.node)
            if pod.host_network or node is None:
                continue
            netns.write_etc(pod.netns, "resolv.conf", resolv_conf(pod, node, domain))

    def _start_dns(self, topo: Topology) -> None:
        """A DNS server per node (kept when running: it re-reads the state file)."""
        wanted = {n.name for n in topo.nodes}
        for name in [n for n in self.dns if n not in wanted]:
            netns.stop([self.dns.pop(name)])
        if importlib.util.find_spec("dnslib") is None:
            if topo.nodes:
                self.progress("no Service DNS: dnslib is missing (pip install 'svcnet[dns]')")
            return
        procs: list[tuple[LabNode, subprocess.Popen[str]]] = []
        log = os.path.join(state_dir(self.name), "dns.log")
        with open(log, "a", encoding="utf-8") as err:
            for node in topo.nodes:
                pid = self.dns.get(node.name)
                if pid is not None and netns.alive(pid) and _our_dns(pid, self.name):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGHUP)  # re-read now (it would on the next query)
                    continue
                args = ["ip", "netns", "exec", node.netns, sys.executable, "-m", DNS_MODULE]
                args += ["--state", state_pickle(self.name), "--listen", f"{node.ip}:{DNS_PORT}"]
                proc = _spawn(args, err, cwd=PACKAGE_ROOT)
                self.dns[node.name] = proc.pid
                procs.append((node, proc))
        problems = []
        for node, proc in procs:
            if not _started(proc, float(os.environ.get("SVCNET_LAB_START_TIMEOUT", "15"))):
                problems.append(f"node {node.name}: DNS server did not start (see {log})")
            else:
                self.progress(f"node {node.name}: DNS on {node.ip}:{DNS_PORT} (pid {proc.pid})")
        if problems:
            raise LabError("; ".join(problems))

    def _program(self, state: ClusterState, topo: Topology) -> None:
        if self.backend_cls is None:
            return
        for node in topo.nodes:
            backend = self.backends.get(node.name)
            if backend is None:
                backend = self.backends[node.name] = self.backend_cls(node.name, netns=node.netns)
                self.progress(f"node {node.name}: {self.backend_cls.name} rules")
            plan = plan_mod.compile(state, node.name)
            backend.update(plan)
            self.plans[node.name] = plan

    # -- record ---------------------------------------------------------------------
    def save(self) -> None:
        with contextlib.suppress(OSError):
            os.makedirs(state_dir(self.name), exist_ok=True)
            record = dict(self.extra)
            if self.backend_cls is not None or "backend" not in record:
                record["backend"] = self.backend_cls.name if self.backend_cls else None
            record.update(
                {
                    "name": self.name,
                    "servers": self.servers,
                    "dns": self.dns,
                    "namespaces": list(self.topo.namespaces) if self.topo else [],
                    "updated": time.time(),
                }
            )
            tmp = state_file(self.name) + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(record, f, indent=1)
            os.replace(tmp, state_file(self.name))

    # -- teardown -------------------------------------------------------------------
    def down(self) -> None:
        for backend in self.backends.values():
            with contextlib.suppress(Exception):
                backend.close()
        self.backends.clear()
        self.plans.clear()
        dns_pids = [p for p in self.dns.values() if _our_dns(p, self.name)]
        down(self.name, extra_pids=[*self.servers.values(), *dns_pids])
        self.servers.clear()
        self.dns.clear()
        self.topo = None
        self.state = None

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


def _spawn(args: list[str], err: IO[str], cwd: str | None = None) -> subprocess.Popen[str]:
    """Start a lab server process in its own session; it prints "ready" when serving."""
    return subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        start_new_session=True,
        cwd=cwd,
    )


def _started(proc: subprocess.Popen[str], timeout: float) -> bool:
    """Did ``proc`` print "ready" within ``timeout`` seconds?"""
    assert proc.stdout is not None
    ready = _readline(proc.stdout, timeout)
    proc.stdout.close()
    return ready.strip() == "ready"


def _readline(stream: IO[str], timeout: float) -> str:
    import select

    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else ""


def _our_server(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"podserver.py" in f.read()
    except OSError:
        return False


def _our_dns(pid: int, lab: str) -> bool:
    """``pid`` is a DNS server of lab ``lab`` (its command line names the lab's state file)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return False
    return DNS_MODULE.encode() in args and state_pickle(lab).encode() in args


def down(name: str, extra_pids: Any = ()) -> list[str]:
    """Remove lab ``name`` entirely: its server processes (pod servers and DNS
    servers), every ``svcnet-<name>-*`` namespace, the ``/etc/netns/svcnet-<name>-*``
    folders and its record. Returns the namespaces removed. Idempotent."""
    check_lab_name(name)
    record = read_record(name)
    _stop_live(name, record)
    spaces = netns.listed(prefix(name))
    pids = {int(p) for p in extra_pids}
    pids |= {int(p) for p in record.get("servers", {}).values() if _our_server(int(p))}
    pids |= {int(p) for p in record.get("dns", {}).values() if _our_dns(int(p), name)}
    for ns in spaces:
        pids.update(netns.pids(ns))
    netns.stop(sorted(pids))
    # pods first, then nodes, then ext and the underlay
    order = sorted(spaces, key=lambda s: (not s.startswith(prefix(name) + "p-"), s))
    for ns in order:
        netns.delete(ns)
    for folder in netns.etc_listed(prefix(name)):
        netns.remove_etc(folder)
    left = netns.listed(prefix(name))
    if left:
        raise LabError(f"could not remove namespaces {', '.join(left)}")
    shutil.rmtree(state_dir(name), ignore_errors=True)
    return spaces


def _stop_live(name: str, record: dict[str, Any]) -> None:
    """Stop a live lab's follower, then its agents (each checked to be ours), and
    remove the agents' status and lock files of the lab's node namespaces (their
    holders are stopped and the namespaces they name are about to go)."""
    follower = record.get("follower")
    if isinstance(follower, int) and our_follower(follower, name):
        netns.stop([follower], timeout=15.0)  # it may be in the middle of a batch
    agents = record.get("agents", {})
    pids = (
        [
            int(pid)
            for node_ns, pid in agents.items()
            if isinstance(pid, int) and our_agent(pid, str(node_ns))
        ]
        if isinstance(agents, dict)
        else []
    )
    netns.stop(pids, timeout=5.0)
    with contextlib.suppress(OSError):
        for entry in os.listdir(AGENTS_DIR):
            if entry.startswith(prefix(name)) and entry.endswith((".json", ".lock")):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(AGENTS_DIR, entry))


def labs() -> list[str]:
    """Names of the labs with a record or namespaces on this machine."""
    names: set[str] = set()
    with contextlib.suppress(OSError):
        names.update(
            n
            for n in os.listdir(RUN_DIR)
            if os.path.isdir(os.path.join(RUN_DIR, n)) and os.path.join(RUN_DIR, n) != AGENTS_DIR
        )
    return sorted(names)
