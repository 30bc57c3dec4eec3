"""The node agent (I/O): one process per node that keeps the node's data plane
equal to the cluster, live -- kube-proxy's job.

* :class:`Agent` -- list, full sync, then watch: each change is folded into the
  state (``ClusterState.step``), bursts coalesce into one ``plan.advance`` ->
  ``Backend.apply``, a full resync runs every ``sync_period`` and after a failed
  sync; ``run()`` blocks, ``await run_async()`` does not block an event loop,
  ``stop()`` ends it (rules stay unless ``cleanup=True``);
* :class:`Source` / :class:`StoreSource` -- where the objects come from (list,
  watch from a version, "expired: list again");
* :mod:`svcnet.agent.status` -- the status file other tools poll, the one-agent-
  per-namespace lock, the latency window.
* :mod:`svcnet.agent.duties` -- kube-proxy's node duties around the rules: UDP
  conntrack cleanup (:mod:`~svcnet.agent.conntrack`), ``/healthz``, ``/livez`` and
  the health-check node ports (:mod:`~svcnet.agent.health`), Prometheus metrics
  (:mod:`~svcnet.agent.metrics`).

``svcnet agent`` (:mod:`svcnet.cli.agent`) runs one from the command line. Usage,
the status fields and the defaults: ``docs/reference/agent.md``.
"""

from svcnet.agent.loop import (
    LOGGER,
    MAX_BACKOFF,
    MAX_PENDING,
    MIN_SYNC_PERIOD,
    RETRY_BACKOFF,
    SYNC_PERIOD,
    Agent,
    SyncReport,
)
from svcnet.agent.source import Source, StoreSource
from svcnet.agent.status import (
    AGENT_DIR,
    AgentError,
    LatencyWindow,
    NamespaceLock,
    agent_key,
    lock_path,
    read_status,
    status_path,
    write_status,
)

__all__ = [
    "AGENT_DIR",
    "LOGGER",
    "MAX_BACKOFF",
    "MAX_PENDING",
    "MIN_SYNC_PERIOD",
    "RETRY_BACKOFF",
    "SYNC_PERIOD",
    "Agent",
    "AgentError",
    "LatencyWindow",
    "NamespaceLock",
    "Source",
    "StoreSource",
    "SyncReport",
    "agent_key",
    "lock_path",
    "read_status",
    "status_path",
    "write_status",
]
