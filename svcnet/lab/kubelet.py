"""The lab's kubelet (I/O): a pod is ready when its server answers, as a kubelet's
readiness probe says.

A store bound to a lab (``svcnet lab up``) runs the simulated scheduler and
controllers on each change but leaves readiness to the lab
(``Store.set_kubelet("lab")``). The follower runs this kubelet beside it: for each
pod of the lab that is not terminating it probes, from the pod's node namespace, as
kubelet does --

* a pod with a ``readinessProbe``: ``tcpSocket`` (a TCP connect) or ``httpGet`` (a
  GET of ``path``, ready on 200-399) to the pod's address and port (a named port is
  looked up in the pod's container ports), first after ``initialDelaySeconds``, then
  every ``periodSeconds``, each with ``timeoutSeconds``; ``successThreshold``
  successes in a row make it ready, ``failureThreshold`` failures in a row not ready;
* a pod without one: ready as soon as it is running (its server started), as a
  kubelet reports a container without a readiness probe;

and writes each change of readiness back to the store (``svcnet.workloads.
mark_ready``), so the endpoint appears when the probe passes and goes when it fails,
and every agent follows.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs

from svcnet.errors import NotFoundError
from svcnet.kernel.setns import entered
from svcnet.lab.topology import build
from svcnet.model import Pod, ProbeHandler, Protocol, ReadinessProbe
from svcnet.state import ClusterState
from svcnet.store import Store

__all__ = ["LabKubelet", "probe_once"]

TICK = 0.1  # seconds between two looks at what is due
MAX_TIMEOUT = 2.0  # a probe never waits longer than this, whatever timeoutSeconds says


@attrs.define
class _Tracked:
    """What the kubelet remembers of one pod's probe."""

    uid: tuple[Any, ...]  # the pod's identity (a re-created pod starts afresh)
    due: float  # monotonic time of the next probe
    successes: int = 0
    failures: int = 0


def _port(pod: Pod, probe: ReadinessProbe) -> int | None:
    if isinstance(probe.port, int):
        return probe.port
    for cp in pod.ports:
        if cp.name == probe.port and cp.protocol is Protocol.TCP:
            return cp.port
    return None


def probe_once(node_netns: str, address: str, port: int, probe: ReadinessProbe) -> bool:
    """One probe of ``address:port`` from namespace ``node_netns`` (this thread goes
    there and back): did it pass?"""
    timeout = min(max(float(probe.timeout_seconds), 0.1), MAX_TIMEOUT)
    with entered(node_netns):
        try:
            if probe.handler is ProbeHandler.TCP_SOCKET:
                with socket.create_connection((address, port), timeout=timeout):
                    return True
            conn = http.client.HTTPConnection(address, port, timeout=timeout)
            try:
                conn.request("GET", probe.path or "/", headers={"User-Agent": "kube-probe/svcnet"})
                status = conn.getresponse().status
            finally:
                conn.close()
            return 200 <= status < 400
        except (OSError, http.client.HTTPException):
            return False


class LabKubelet:
    """Probes the pods of lab ``lab`` and reports their readiness to ``store``
    (see the module docstring). ``state`` returns the state the lab is at now (the
    follower's); :meth:`start` runs it in a daemon thread until :meth:`stop`."""

    def __init__(
        self,
        lab: str,
        store: Store,
        state: Callable[[], ClusterState],
        *,
        progress: Callable[[str], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lab = lab
        self.store = store
        self.state = state
        self.progress = progress or (lambda _: None)
        self.monotonic = monotonic
        self.reports = 0  # readiness changes written to the store
        self._tracked: dict[tuple[str, str], _Tracked] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="svcnet-lab-kubelet", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as e:  # a store busy or a pod gone: the next tick retries
                self.progress(f"kubelet: {e}")
            self._stop.wait(TICK)

    def tick(self) -> int:
        """Probe what is due and write the readiness that changed; how many pods
        changed."""
        state = self.state()
        topo = build(self.lab, state)
        nodes = {n.name: n.netns for n in topo.nodes}
        in_lab = {(p.namespace, p.name) for p in topo.pods}
        now = self.monotonic()
        verdicts: dict[tuple[str, str], bool] = {}
        for key, pod in state.pods.items():
            if key not in in_lab or pod.terminating or pod.node_name not in nodes:
                continue
            probe = pod.readiness_probe
            if probe is None:
                if pod.phase is None and not pod.ready and not pod.status_reported:
                    verdicts[key] = True  # running, no probe: ready
                continue
            uid = (pod.pod_ips, pod.created, probe)
            tracked = self._tracked.get(key)
            if tracked is None or tracked.uid != uid:
                tracked = _Tracked(uid, now + probe.initial_delay_seconds)
                self._tracked[key] = tracked
            if now < tracked.due or not pod.pod_ips:
                continue
            tracked.due = now + max(probe.period_seconds, 1)
            port = _port(pod, probe)
            ok = port is not None and probe_once(nodes[pod.node_name], pod.pod_ips[0], port, probe)
            if ok:
                tracked.successes, tracked.failures = tracked.successes + 1, 0
                if not pod.ready and tracked.successes >= max(probe.success_threshold, 1):
                    verdicts[key] = True
            else:
                tracked.successes, tracked.failures = 0, tracked.failures + 1
                first = pod.phase is None  # never reported: say it runs, not ready
                if (pod.ready and tracked.failures >= max(probe.failure_threshold, 1)) or first:
                    verdicts[key] = False
        for key in [k for k in self._tracked if k not in state.pods]:
            del self._tracked[key]
        if verdicts:
            self._report(verdicts)
        return len(verdicts)

    def _report(self, verdicts: dict[tuple[str, str], bool]) -> None:
        from svcnet.workloads import mark_ready

        with self.store.modify() as session:
            state = session.state
            changed = []
            for key, ready in sorted(verdicts.items()):
                pod = state.pods.get(key)
                if pod is None or (pod.ready == ready and pod.phase is not None):
                    continue  # gone, or already so
                try:
                    state = state.step(mark_ready(state, key, ready))
                except NotFoundError:
                    continue
                changed.append(f"{key[0]}/{key[1]} {'ready' if ready else 'not ready'}")
            if changed:
                session.save(state)
                self.reports += len(changed)
                self.progress("kubelet: " + ", ".join(changed))
