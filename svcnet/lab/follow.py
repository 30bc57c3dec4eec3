"""The lab follower: keeps a live lab's plumbing in step with its store (I/O).

``svcnet lab up`` builds the lab, then starts ``python -m svcnet.lab.follow --name
LAB --store STORE --backend NAME`` detached. The follower takes the lab over
(:meth:`~svcnet.lab.control.Lab.resume`), lists the store and then follows its
change log: each batch of changes (everything new since the last poll) is folded
into the in-memory state with ``ClusterState.step``, and the lab is reconciled
once per batch with :meth:`~svcnet.lab.control.Lab.up`, which only touches what
changed: a new scheduled pod gets its namespace, veth, routes and server, a
deleted pod's namespace and server go, nodes likewise, and the DNS state file the
lab's DNS servers answer from is rewritten (so a new service resolves and a
deleted one no longer does). It never reloads the whole store per change; it lists
again only when the store says the watch expired, or when a change does not fold.

Rules are not the follower's job: it runs one ``svcnet agent`` per node namespace
(started for new nodes, stopped for removed ones, started again if one died),
which lists and watches the same store and programs its node. PIDs go to the lab
record (``agents``: node namespace -> pid, ``follower``), with ``version``, the
store version the plumbing reflects, and ``error``, the last failure (None when
the last batch went through). SIGTERM or SIGINT ends it after the current batch.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from svcnet.errors import SvcnetError
from svcnet.kernel import netns
from svcnet.lab.control import (
    PACKAGE_ROOT,
    Lab,
    agent_status_file,
    our_agent,
    read_agent_status,
    state_dir,
)
from svcnet.lab.kubelet import LabKubelet
from svcnet.lab.topology import Topology, build
from svcnet.state import ClusterState
from svcnet.store import Poller, Store, WatchExpired

RETRY_AFTER = 1.0  # seconds before a failed batch is tried again
POLL_INTERVAL = 0.02  # seconds between two looks at the store (Store.poller: no lock)


def agent_command(
    store: str, node: str, backend: str, node_netns: str, extra: Sequence[str] = ()
) -> list[str]:
    """The command line of the agent programming ``node`` in ``node_netns``
    (``extra``: more ``svcnet agent`` options, from ``lab up --agent-arg``)."""
    return [
        sys.executable,
        "-m",
        "svcnet",
        "--store",
        store,
        "agent",
        "--node",
        node,
        "--backend",
        backend,
        "--netns",
        node_netns,
        *extra,
    ]


def agent_log(lab: str, node: str) -> str:
    return os.path.join(state_dir(lab), f"agent-{node}.log")


def start_agent(
    lab: str, store: str, node: str, backend: str, node_netns: str, extra: Sequence[str] = ()
) -> int:
    """Start the agent for one node, detached (its own session), output to its log;
    returns its PID. A status file left by an earlier agent is removed first so that
    what the new one writes is the only status there is."""
    os.makedirs(state_dir(lab), exist_ok=True)
    with contextlib.suppress(OSError):
        os.unlink(agent_status_file(node_netns))
    with open(agent_log(lab, node), "a", encoding="utf-8") as log:
        proc = subprocess.Popen(
            agent_command(store, node, backend, node_netns, extra),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            cwd=PACKAGE_ROOT,
        )
    return proc.pid


def agents_in_step(topo: Topology, agents: dict[str, int], version: int) -> tuple[bool, str]:
    """Has every node's agent (``agents``: node namespace -> pid) reported store
    version ``version`` or later? Returns (yes, what is missing or failing)."""
    waiting = []
    for node in topo.nodes:
        pid = agents.get(node.netns)
        status = read_agent_status(node.netns)
        if pid is None:
            waiting.append(f"node {node.name}: no agent")
        elif not our_agent(pid, node.netns):
            waiting.append(f"node {node.name}: agent pid {pid} is not running")
        elif status is None or status.get("pid") != pid:
            waiting.append(f"node {node.name}: agent pid {pid} has not synced yet")
        elif status.get("error"):
            waiting.append(f"node {node.name}: agent error: {status['error']}")
        elif not isinstance(status.get("version"), int) or status["version"] < version:
            waiting.append(
                f"node {node.name}: agent at version {status.get('version')}, store at {version}"
            )
    return not waiting, "; ".join(waiting)


class Follower:
    """Follows store ``store_path`` into lab ``name`` (agents of ``backend``; None
    starts none: the plumbing and DNS only)."""

    def __init__(
        self,
        name: str,
        store_path: str,
        backend: str | None,
        *,
        progress: Any = None,
    ) -> None:
        self.lab = Lab(name, None, progress=progress)
        self.store = Store(store_path)
        self.store_path = os.path.abspath(store_path)
        self.backend = backend
        self.state = ClusterState.empty()
        self.version = -1  # nothing listed yet
        self.failed = False
        self.agents: dict[str, int] = {}
        self._poller: Poller | None = None  # the store's changes after the last listing

    def start(self) -> None:
        """Take the lab over, list the store and make the lab match it."""
        self.lab.resume()
        agents = self.lab.extra.get("agents", {})
        if isinstance(agents, dict):
            self.agents = {str(k): int(v) for k, v in agents.items()}
        self.lab.extra.update(
            store=self.store_path, follower=os.getpid(), agents=self.agents, error=None
        )
        if self.backend is not None:
            self.lab.extra["backend"] = self.backend
        self._relist()

    def _relist(self) -> None:
        listing = self.store.list()
        if self._poller is not None:
            self._poller.close()
        self._poller = self.store.poller(listing.version)
        self._apply(listing.state, listing.version)

    def poll(self) -> bool:
        """One round: fold the changes made since the last one and reconcile the lab
        once (a failed round is retried, with no new changes needed). Returns
        whether anything was done."""
        assert self._poller is not None, "start() first"
        try:
            changes = self._poller.poll()
        except WatchExpired as e:
            self.lab.progress(f"{e}: listing again")
            self._relist()
            return True
        if not changes:
            if self.failed:
                self._apply(self.state, self.version)
                return True
            return False
        state = self.state
        try:
            for change in changes:
                state = state.step(change.step)
        except SvcnetError as e:  # a change that does not fold on its own: list again
            self.lab.progress(f"change {change.version} does not fold ({e}): listing again")
            self._relist()
            return True
        self._apply(state, changes[-1].version)
        return True

    def _apply(self, state: ClusterState, version: int) -> None:
        self.state, self.version = state, version
        try:
            topo = build(self.lab.name, state)
            wanted = {n.netns for n in topo.nodes}
            self._stop_agents([ns for ns in self.agents if ns not in wanted])
            self.lab.up(state)
            self._start_agents(topo)
        except (SvcnetError, OSError) as e:
            self.failed = True
            self.lab.extra["error"] = f"version {version}: {e}"
            self.lab.progress(f"version {version}: {e} (trying again in {RETRY_AFTER:g} s)")
            self.lab.save()
            raise
        self.failed = False
        self.lab.extra.update(version=version, error=None, agents=self.agents)
        self.lab.save()
        self.lab.progress(f"at store version {version}: {len(topo.pods)} pods")

    def _stop_agents(self, node_netns: Sequence[str]) -> None:
        pids = []
        for ns in node_netns:
            pid = self.agents.pop(ns)
            if our_agent(pid, ns):
                pids.append(pid)
            with contextlib.suppress(OSError):
                os.unlink(agent_status_file(ns))
        netns.stop(pids, timeout=5.0)

    def _start_agents(self, topo: Topology) -> None:
        if self.backend is None:
            return
        for node in topo.nodes:
            pid = self.agents.get(node.netns)
            if pid is not None and our_agent(pid, node.netns):
                continue
            extra = self.lab.extra.get("agent_args") or []
            pid = start_agent(
                self.lab.name,
                self.store_path,
                node.name,
                self.backend,
                node.netns,
                [str(arg) for arg in extra],
            )
            self.agents[node.netns] = pid
            self.lab.progress(f"node {node.name}: agent pid {pid} ({self.backend})")

    def run(self, ready: Any = None) -> None:
        """Start, call ``ready()``, then follow the store until SIGTERM or SIGINT."""
        stopping: list[int] = []

        def stop(signum: int, _frame: object) -> None:
            stopping.append(signum)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.start()
        # the lab's kubelet: probes the pods and reports their readiness to the store
        kubelet = LabKubelet(
            self.lab.name, self.store, lambda: self.state, progress=self.lab.progress
        )
        kubelet.start()
        if ready is not None:
            ready()
        try:
            while not stopping:
                try:
                    busy = self.poll()
                except (SvcnetError, OSError):
                    busy = False
                    _pause(RETRY_AFTER, stopping)
                if not busy:
                    _pause(POLL_INTERVAL, stopping)
        finally:
            kubelet.stop()


def _pause(seconds: float, stopping: list[int]) -> None:
    deadline = time.monotonic() + seconds
    while not stopping and time.monotonic() < deadline:
        time.sleep(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--name", required=True, help="the lab")
    ap.add_argument("--store", required=True, help="the store the lab is bound to")
    ap.add_argument("--backend", default=None, help="the agents' backend (none: no agents)")
    args = ap.parse_args(argv)

    def ready() -> None:
        print("ready", flush=True)
        sys.stdout.close()

    try:
        Follower(args.name, args.store, args.backend, progress=_log).run(ready)
    except (SvcnetError, OSError) as e:
        _log(f"follower of lab {args.name}: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
