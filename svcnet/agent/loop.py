"""The node agent (I/O): keeps one node's data plane equal to the cluster, live.

Theory of operation
-------------------
Two threads share one folded :class:`~svcnet.state.ClusterState`:

* the **watcher** (a daemon thread) reads the :class:`~svcnet.agent.source.Source`
  from the version last listed and folds each change into the state at once
  (``state = state.step(change.step)``), counting it and noting when it was
  made (``Change.time``). Folding *is* the queue, and it is bounded by
  construction: however many changes arrive while a sync runs, what waits is
  one state (plus at most ``max_pending`` change times for the latency figures),
  never a list of changes to replay. On :class:`~svcnet.store.WatchExpired` (the
  source compacted the changes it needs), or a change that does not apply, it
  lists again and asks for a full sync.
* the **syncer** (the thread calling :meth:`Agent.run`) lists and does a full sync
  first, then waits for work: changes pending (at most one sync per
  ``min_sync_period``, like kube-proxy's ``--min-sync-period``; the first change
  after a quiet spell goes at once), a full resync every ``sync_period`` (like
  ``--sync-period``: it repairs what ``check()`` cannot see, a hand-deleted set
  element say; the plan is advanced, which equals a full compile, and installed
  whole), or a retry after a failed sync (with a doubling backoff). An
  incremental sync takes the folded state, ``svcnet.plan.advance``\\ s the plan
  from the state last synced and calls ``Backend.apply`` with the changes (the
  backend itself falls back to a full sync when ``check()`` finds damage); a
  full sync compiles the state and calls ``Backend.sync``. A failed sync never
  ends the agent: the error is logged and kept in the status, and a full sync of
  the latest state follows after the backoff.

After each sync (and each failure) the status file is rewritten; the latency of
each change (its commit to the end of the sync that installed it -- Kubernetes'
network programming latency) is recorded. :meth:`Agent.stop` may be called from
any thread or a signal handler; ``run()`` returns after the current sync, leaving
the rules (``cleanup=True`` removes them).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from svcnet.agent.source import Source
from svcnet.agent.status import (
    AGENT_DIR,
    LatencyWindow,
    NamespaceLock,
    lock_path,
    status_path,
    write_status,
)
from svcnet.backend import Backend
from svcnet.errors import SvcnetError
from svcnet.plan import Plan, advance, compile
from svcnet.state import ClusterState
from svcnet.store import Change, WatchExpired

__all__ = [
    "LOGGER",
    "MAX_BACKOFF",
    "MAX_PENDING",
    "MIN_SYNC_PERIOD",
    "RETRY_BACKOFF",
    "SYNC_PERIOD",
    "Agent",
    "SyncReport",
]

LOGGER = "svcnet.agent"
MIN_SYNC_PERIOD = 0.02  # s between two syncs at most (kube-proxy: 1 s); see docs/reference/agent.md
SYNC_PERIOD = 30.0  # s between full resyncs (kube-proxy's --sync-period default)
MAX_PENDING = 10_000  # change times kept for the latency of one sync (the state is folded)
RETRY_BACKOFF = 0.2  # s before the first retry after a failed sync or read; doubles
MAX_BACKOFF = 10.0  # s: the longest wait between two retries
LATENCY_WINDOW = 1000  # latencies kept for p50/p99
WATCH_CHUNK = 0.1  # s a quiet watch call lasts before the watcher looks at stop() again
STOP_POLL = 0.1  # s: the longest wait before a stop() that could not notify is seen


@attrs.frozen
class SyncReport:
    """One sync that succeeded: what it installed and what it cost."""

    version: int  # the source version the data plane now reflects
    full: bool  # a full sync (Backend.sync), else incremental (Backend.apply)
    services: int  # services in the plan now
    added: int
    replaced: int
    removed: int
    changes: int  # source changes folded into this sync
    duration: float  # seconds the sync took (plan + backend)
    time: float  # when it ended (the agent's clock, epoch seconds)
    latency: float | None  # seconds from the oldest change's commit to the end
    fell_back: bool = False  # Backend.apply installed it by a full sync (damage found)
    why: str = ""  # why a full sync: "start", "relist", "period", "retry"

    def as_json(self) -> dict[str, Any]:
        """The status file's ``last_sync``."""
        return {
            "time": self.time,
            "version": self.version,
            "full": self.full,
            "why": self.why or None,
            "fallback": self.fell_back,
            "services": self.services,
            "added": self.added,
            "replaced": self.replaced,
            "removed": self.removed,
            "changes": self.changes,
            "duration_ms": round(self.duration * 1000, 3),
            "latency_ms": None if self.latency is None else round(self.latency * 1000, 3),
        }

    def line(self, node: str) -> str:
        """The log line of this sync."""
        kind = f"full ({self.why})" if self.full else "incremental"
        if self.fell_back:
            kind += ", fell back to a full sync"
        text = (
            f"node {node}: synced version {self.version} ({kind}: +{self.added} "
            f"~{self.replaced} -{self.removed} of {self.services} services, "
            f"{self.changes} changes) in {self.duration * 1000:.1f} ms"
        )
        if self.latency is not None:
            text += f", latency {self.latency * 1000:.1f} ms"
        return text


def _counts(old: Plan | None, new: Plan) -> tuple[int, int, int]:
    """(added, replaced, removed) services from ``old`` to ``new`` (no sorting)."""
    if old is None:
        return len(new.services), 0, 0
    before, after = old.services, new.services
    added = replaced = 0
    for key, svc in after.items():
        prev = before.get(key)
        if prev is None:
            added += 1
        elif prev is not svc and prev != svc:
            replaced += 1
    removed = sum(1 for key in before if key not in after)
    return added, replaced, removed


class Agent:
    """Keeps ``backend`` (one node's data plane) equal to ``compile(state, node)``
    for the cluster ``source`` holds, as it changes (see the module docstring).

    Files: with ``run_dir`` (default :data:`~svcnet.agent.status.AGENT_DIR`) the
    agent holds ``<run_dir>/<netns or host>.lock`` while it runs (a second agent
    for the namespace is refused) and writes its status to
    ``<run_dir>/<netns or host>.json``, or to ``status_file`` when given. A
    backend bound to no namespace that programs no kernel (memory) takes no lock
    and writes ``<run_dir>/<backend>-<node>.json``. ``run_dir=None``: no lock, and
    a status file only if ``status_file`` names one.
    Hooks: ``clock`` (epoch seconds; latencies are measured against the source's
    change times with it), ``monotonic`` (scheduling), ``logger``, and ``on_sync``
    (called in the syncing thread with each :class:`SyncReport`).
    """

    def __init__(
        self,
        source: Source,
        node: str,
        backend: Backend,
        *,
        min_sync_period: float = MIN_SYNC_PERIOD,
        sync_period: float = SYNC_PERIOD,
        max_pending: int = MAX_PENDING,
        retry_backoff: float = RETRY_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
        run_dir: str | None = AGENT_DIR,
        status_file: str | None = None,
        cleanup: bool = False,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
        on_sync: Callable[[SyncReport], None] | None = None,
        latency_window: int = LATENCY_WINDOW,
        watch_chunk: float = WATCH_CHUNK,
        freeze_heap: bool = False,
        conntrack_cleanup: bool | None = None,
        health_check_ports: bool | None = None,
        healthz_address: str | None = None,
        metrics_address: str | None = None,
        health_timeout: float | None = None,
    ) -> None:
        if backend.node != node:
            raise SvcnetError(f"agent: node {node!r}: the backend programs node {backend.node!r}")
        for name, value in (
            ("min_sync_period", min_sync_period),
            ("sync_period", sync_period),
            ("retry_backoff", retry_backoff),
            ("max_backoff", max_backoff),
        ):
            if not (value >= 0 and math.isfinite(value)):
                raise SvcnetError(f"agent: {name} must be a finite number >= 0, got {value!r}")
        if sync_period <= 0:
            raise SvcnetError(f"agent: sync_period must be > 0, got {sync_period!r}")
        if health_timeout is not None and not (
            health_timeout > 0 and math.isfinite(health_timeout)
        ):
            raise SvcnetError(
                f"agent: health_timeout must be a finite number > 0, got {health_timeout!r}"
            )
        if max_pending < 1:
            raise SvcnetError(f"agent: max_pending must be >= 1, got {max_pending!r}")
        self.source = source
        self.node = node
        self.backend = backend
        # after a sync from scratch, move every object alive into the collector's
        # permanent generation (gc.freeze): the big state and plan are never walked
        # again by a full collection, which at 10,000 services stalled one
        # incremental sync per ~100 by 0.6 s. Process-wide: for a process that is
        # only an agent (the CLI), not for an agent embedded in another program.
        self.freeze_heap = freeze_heap
        self.min_sync_period = min_sync_period
        self.sync_period = sync_period
        self.max_pending = max_pending
        self.retry_backoff = retry_backoff
        self.max_backoff = max(max_backoff, retry_backoff)
        self.cleanup = cleanup
        self.clock = clock
        self.monotonic = monotonic
        self.log = logger or logging.getLogger(LOGGER)
        self.on_sync = on_sync
        self.watch_chunk = watch_chunk
        netns = backend.netns
        self.lock: NamespaceLock | None = None
        if run_dir is not None:
            if netns is not None or backend.capabilities.kernel:
                # one agent per network namespace (the root one: "host")
                self.lock = NamespaceLock(lock_path(netns, run_dir), netns)
                status_file = status_file or status_path(netns, run_dir)
            else:  # a backend programming no namespace (memory): no lock to hold
                name = f"{backend.name}-{node}.json"
                status_file = status_file or os.path.join(run_dir, name)
        self.status_file = status_file
        self.latencies = LatencyWindow(latency_window)
        # kube-proxy's node duties (svcnet.agent.duties); a backend that programs
        # no kernel has no flows to clean and no namespace to serve ports in
        from svcnet.agent.duties import NodeDuties  # prometheus_client, http.server

        kernel = backend.capabilities.kernel
        self.duties = NodeDuties(
            backend,
            node,
            health_timeout=2 * sync_period if health_timeout is None else health_timeout,
            conntrack=kernel if conntrack_cleanup is None else conntrack_cleanup,
            health_check_ports=kernel if health_check_ports is None else health_check_ports,
            healthz_address=healthz_address,
            metrics_address=metrics_address,
            clock=clock,
            monotonic=monotonic,
            logger=self.log,
        )
        # -- the syncer's own (only the syncing thread writes these)
        self.plan: Plan | None = None  # the plan installed (from compile/advance)
        self._synced: ClusterState | None = None  # the state `plan` was made from
        self.version: int | None = None  # the source version the data plane reflects
        self.syncs = 0
        self.full_syncs = 0
        self.resyncs_skipped = 0  # periodic resyncs found needless (Backend.untouched)
        self.failed_syncs = 0
        self.last_sync: SyncReport | None = None
        self.error: str | None = None
        self.started = clock()
        self.running = False
        self._failed = False  # the last sync failed: a full one follows at _retry_at
        self._retry_at = 0.0
        self._backoff = retry_backoff
        self._last_start = -math.inf  # monotonic start of the last sync attempt
        self._last_full = -math.inf  # monotonic start of the last full sync
        # -- shared with the watcher (under _cond)
        self._cond = threading.Condition(threading.RLock())
        self._stop = False  # a plain flag: stop() must be safe in a signal handler
        self._state = ClusterState.empty()
        self._seen = 0  # the source version folded into _state
        self._pending = 0  # changes folded since the syncer last took the state
        self._times: deque[float] = deque(maxlen=max_pending)
        self._oldest: float | None = None
        self._relisted = False  # _state was listed afresh: the next sync is full
        self._watcher: threading.Thread | None = None

    # -- control -------------------------------------------------------------------
    def stop(self) -> None:
        """Make :meth:`run` return after the current sync. Safe from any thread and
        from a signal handler (it never blocks)."""
        self._stop = True
        if self._cond.acquire(blocking=False):  # else: seen within STOP_POLL
            try:
                self._cond.notify_all()
            finally:
                self._cond.release()

    @property
    def stopping(self) -> bool:
        return self._stop

    def run(self) -> None:
        """List, sync in full, then follow the source until :meth:`stop`. Raises
        :class:`~svcnet.agent.status.AgentError` if another agent holds this
        namespace; any other failure is logged, kept in the status and retried."""
        with self.lock if self.lock is not None else contextlib.nullcontext():
            self.running = True
            try:
                self.duties.start()
                if self._list_first():
                    self._watcher = threading.Thread(
                        target=self._watch, name=f"svcnet-agent-watch-{self.node}", daemon=True
                    )
                    self._watcher.start()
                    self._loop()
            finally:
                self.stop()
                if self._watcher is not None:
                    self._watcher.join(timeout=max(5.0, 10 * self.watch_chunk))
                self.running = False
                self.duties.close()
                try:
                    if self.cleanup:
                        self.backend.cleanup()
                        self.log.info("node %s: cleaned up the rules", self.node)
                finally:
                    self._write_status()

    async def run_async(self) -> None:
        """:meth:`run` in a worker thread (``asyncio.to_thread``): the event loop is
        never blocked. Cancelling the awaiting task stops the agent and waits for it."""
        task = asyncio.ensure_future(asyncio.to_thread(self.run))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            self.stop()
            await task
            raise

    def wait_synced(self, version: int, timeout: float) -> bool:
        """Block until the data plane reflects source version ``version`` or later
        (True), or ``timeout`` seconds pass (False)."""
        deadline = self.monotonic() + timeout
        with self._cond:
            while self.version is None or self.version < version:
                left = deadline - self.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, STOP_POLL))
        return True

    # -- status --------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The status file's content (see docs/reference/agent.md)."""
        plan = self.plan
        return {
            "pid": os.getpid(),
            "node": self.node,
            "backend": self.backend.name,
            "netns": self.backend.netns,
            "store": self.source.location,
            "running": self.running,
            "started": self.started,
            "updated": self.clock(),
            "version": self.version,
            "seen_version": self._seen,
            "services": None if plan is None else len(plan.services),
            "syncs": self.syncs,
            "full_syncs": self.full_syncs,
            "resyncs_skipped": self.resyncs_skipped,
            "failed_syncs": self.failed_syncs,
            "fallbacks": self.backend.fallbacks,
            "last_sync": None if self.last_sync is None else self.last_sync.as_json(),
            "latency_ms": self.latencies.summary_ms(),
            "error": self.error,
            "health": self.duties.status(),
        }

    def _write_status(self) -> None:
        if self.status_file is None:
            return
        try:
            write_status(self.status_file, self.status())
        except OSError as e:
            self.log.warning("node %s: cannot write %s: %s", self.node, self.status_file, e)

    # -- the watcher thread --------------------------------------------------------
    def _list(self) -> None:
        """List the source and make the listed state the folded one."""
        listing = self.source.list()
        with self._cond:
            self._state = listing.state
            self._seen = listing.version
            self._relisted = True
            self._cond.notify_all()
        self.duties.relisted()
        self.log.debug("node %s: listed version %d", self.node, listing.version)

    def _list_first(self) -> bool:
        """The first list, retried with backoff until it works (True) or stop()."""
        backoff = self.retry_backoff
        while not self._stop:
            try:
                self._list()
                return True
            except Exception as e:  # a source that cannot be read now: retry
                self._note_error(f"cannot list {self.source.location}: {e}", e)
                self._write_status()
                self._pause(backoff)
                backoff = min(backoff * 2, self.max_backoff)
        return False

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` or until stop()."""
        deadline = self.monotonic() + seconds
        with self._cond:
            while not self._stop:
                left = deadline - self.monotonic()
                if left <= 0:
                    return
                self._cond.wait(min(left, STOP_POLL))

    def _watch(self) -> None:
        backoff = self.retry_backoff
        while not self._stop:
            try:
                if self._watch_once():
                    backoff = self.retry_backoff
            except WatchExpired as e:
                self.log.warning("node %s: %s", self.node, e)
                try:
                    self._list()
                except Exception as e2:
                    self._note_error(f"cannot list {self.source.location}: {e2}", e2)
                    self._pause(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
            except Exception as e:  # the source cannot be read now: retry
                self._note_error(f"cannot watch {self.source.location}: {e}", e)
                self._pause(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    def _watch_once(self) -> bool:
        """One watch call from the version folded: fold what it yields until it ends
        quietly (True), stop() or a change that does not apply (relisted)."""
        changes: Iterator[Change] = self.source.watch(self._seen, self.watch_chunk)
        try:
            for change in changes:
                if not self._fold(change):
                    return False
                if self._stop:
                    break
        finally:
            close = getattr(changes, "close", None)
            if close is not None:
                close()
        return True

    def _fold(self, change: Change) -> bool:
        """Fold one change into the state (only this thread writes ``_state``)."""
        try:
            state = self._state.step(change.step)
        except SvcnetError as e:
            self.log.error(
                "node %s: change %d (%s %s) does not apply to the state (%s); listing again",
                self.node, change.version, change.type.value, change.key, e,
            )  # fmt: skip
            self._list()
            return False
        made = change.time
        with self._cond:
            self._state = state
            self._seen = change.version
            self._pending += 1
            if made is not None:
                self._times.append(made)
                self._oldest = made if self._oldest is None else min(self._oldest, made)
            self._cond.notify_all()
        self.duties.queued(change)
        self.log.debug(
            "node %s: change %d %s %s", self.node, change.version, change.type.value, change.key
        )
        return True

    def _note_error(self, text: str, e: BaseException) -> None:
        self.error = text
        if isinstance(e, SvcnetError):
            self.log.error("node %s: %s", self.node, text)
        else:
            self.log.exception("node %s: %s", self.node, text)

    # -- the syncer ----------------------------------------------------------------
    def _deadline(self) -> float:
        """When the next sync is due (monotonic; under _cond)."""
        if self._failed:
            return self._retry_at
        if self.plan is None:
            return -math.inf
        if self._pending or self._relisted:
            return self._last_start + self.min_sync_period
        return self._last_full + self.sync_period

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stop:
                    left = self._deadline() - self.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(min(left, STOP_POLL))
                if self._stop:
                    return
                state, version = self._state, self._seen
                count, times, oldest = self._pending, list(self._times), self._oldest
                relisted = self._relisted
                self._pending, self._oldest, self._relisted = 0, None, False
                self._times.clear()
            try:
                self._sync(state, version, count, times, oldest, relisted)
            except Exception as e:  # a failed sync never ends the agent
                with self._cond:  # its changes are still to install: count them again
                    self._pending += count
                    self._times.extendleft(reversed(times))
                    if oldest is not None:
                        self._oldest = oldest if self._oldest is None else min(self._oldest, oldest)
                    self._relisted = self._relisted or relisted
                self.failed_syncs += 1
                self.duties.failed()
                self._failed = True
                self._retry_at = self.monotonic() + self._backoff
                self._note_error(
                    f"sync of version {version} failed (full sync again in {self._backoff:g} s): "
                    f"{e}",
                    e,
                )
                self._backoff = min(self._backoff * 2, self.max_backoff)
                self._write_status()

    def _sync(
        self,
        state: ClusterState,
        version: int,
        count: int,
        times: list[float],
        oldest: float | None,
        relisted: bool,
    ) -> None:
        start = self.monotonic()
        self._last_start = start
        why = ""
        if self.plan is None or self._synced is None:
            why = "start"
        elif self._failed:
            why = "retry"
        elif relisted:
            why = "relist"
        elif start - self._last_full >= self.sync_period:
            if self.backend.untouched():
                # nothing changed the data plane since our last install (the
                # backend can tell: nftables' generation): a full resync would
                # rewrite it as it is, and hold every change behind it meanwhile
                self._last_full = start
                self.resyncs_skipped += 1
                self.duties.skipped()
                self.log.debug("node %s: periodic resync skipped: data plane untouched", self.node)
            else:
                why = "period"
        fallbacks = self.backend.fallbacks
        old = self.plan
        incremental = None  # the Changes installed by Backend.apply; None: in full
        if why in ("", "period"):
            # advance() equals compile(state, node) (its contract) at the cost of what
            # changed: the periodic resync reinstalls in full without a full compile
            assert self.plan is not None and self._synced is not None
            plan, changes = advance(self.plan, self._synced, state)
            added, replaced = len(changes.added), len(changes.replaced)
            removed = len(changes.removed)
            if why:
                self.backend.sync(plan)
            elif not changes.empty:
                self.backend.apply(changes)
                incremental = changes
            else:
                incremental = changes
        else:  # start, relist, retry: from scratch
            plan = compile(state, self.node)
            added, replaced, removed = _counts(self.plan, plan)
            self.backend.sync(plan)
        end = self.monotonic()
        now = self.clock()
        latency = None if oldest is None else now - oldest
        latencies = [now - t for t in times]
        self.latencies.add(latencies, last=latency)
        report = SyncReport(
            version=version,
            full=bool(why),
            services=len(plan.services),
            added=added,
            replaced=replaced,
            removed=removed,
            changes=count,
            duration=end - start,
            time=now,
            latency=latency,
            fell_back=self.backend.fallbacks > fallbacks,
            why=why,
        )
        # the node's duties for this sync (stale UDP flows, health-check ports,
        # metrics) are done before the version is published: wait_synced(V) means
        # the node as a whole reflects V
        try:
            self.duties.synced(
                state=state,
                old=old,
                plan=plan,
                changes=incremental,
                full=bool(why),
                duration=report.duration,
                latencies=latencies,
                fell_back=report.fell_back,
            )
        except Exception:  # the rules are in: a duty's failure is not the sync's
            self.log.exception("node %s: a node duty failed after the sync", self.node)
        with self._cond:
            self.plan, self._synced, self.version = plan, state, version
            self._cond.notify_all()  # wait_synced()
        self.syncs += 1
        if why:
            self.full_syncs += 1
            self._last_full = start
            if self.freeze_heap and why != "period":
                gc.collect()
                gc.freeze()
        self._failed = False
        self._backoff = self.retry_backoff
        self.error = None
        self.last_sync = report
        self.log.info("%s", report.line(self.node))
        self._write_status()
        if self.on_sync is not None:
            try:
                self.on_sync(report)
            except Exception:  # the hook's failure is not the sync's
                self.log.exception("node %s: the on_sync hook failed", self.node)
