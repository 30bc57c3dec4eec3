"""Where the agent reads the cluster from: the :class:`Source` protocol (I/O).

A source answers the two questions a Kubernetes client (a reflector) asks:

* :meth:`Source.list` -- every object now, and the version they are current at
  (a :class:`~svcnet.store.Listing`);
* :meth:`Source.watch` -- every change after a version, in order, as it is made
  (:class:`~svcnet.store.Change`, whose ``step`` is the
  :class:`~svcnet.state.ClusterState` event that makes it); it raises
  :class:`~svcnet.store.WatchExpired` when the changes after that version are
  gone (compacted) and the watcher must list again.

:class:`StoreSource` is the one source today, over :class:`svcnet.store.Store`.
A source reading the Kubernetes API (list + watch with resourceVersions,
``410 Gone`` as :class:`~svcnet.store.WatchExpired`) is a later issue's; it needs
nothing more than these three members.
"""

from __future__ import annotations

import os
import threading
import typing
from collections.abc import Iterator

from svcnet.store import Change, Listing, Poller, Store

__all__ = ["Source", "StoreSource"]


@typing.runtime_checkable
class Source(typing.Protocol):
    """What the agent needs of the cluster's API.

    ``location`` names the source for logs and the agent's status (a store path,
    an API server URL). ``list()`` gives the state and its version. ``watch(since,
    timeout)`` yields every change after version ``since`` in order, blocking
    between them, and returns when ``timeout`` seconds pass without one (None:
    never); it raises :class:`~svcnet.store.WatchExpired` (at the start or later)
    when the watcher must list again. Both may raise any
    :class:`~svcnet.errors.SvcnetError` on a source that cannot be read now; the
    agent logs it and tries again.
    """

    @property
    def location(self) -> str: ...

    def list(self) -> Listing: ...

    def watch(self, since: int, timeout: float | None) -> Iterator[Change]: ...


class StoreSource:
    """A :class:`Source` over a :class:`~svcnet.store.Store` (the SQLite file the
    ``svcnet`` command writes): ``list`` is :meth:`Store.list`, ``watch`` follows a
    :class:`~svcnet.store.Poller` (as :meth:`Store.watch` does). The poller is
    kept between watch calls that go on from where the last one stopped (the
    agent watches in short calls, to notice ``stop()``), so its connection and
    its last look at the file are not made again at each call."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._poller: Poller | None = None
        self._thread = 0  # the thread that opened it (SQLite connections stay in theirs)

    @property
    def location(self) -> str:
        """The store's path (absolute)."""
        return os.path.abspath(self.store.path)

    def list(self) -> Listing:
        """:meth:`Store.list`."""
        return self.store.list()

    def watch(self, since: int, timeout: float | None) -> Iterator[Change]:
        """Every change after ``since``, as :meth:`Store.watch` (its default
        polling interval)."""
        poller = self._poller
        here = threading.get_ident()
        if poller is None or poller.version != since or self._thread != here:
            if poller is not None and self._thread == here:
                poller.close()
            poller = self._poller = self.store.poller(since)
            self._thread = here
        return poller.follow(timeout)

    def __repr__(self) -> str:
        return f"StoreSource({self.store.path!r})"
