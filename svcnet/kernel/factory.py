"""Kernel backends for tests and scenario runs: one fresh network namespace per
backend instance (I/O).

:func:`kernel_backends` is the one backend factory for kernel work, used by the
scenario runner's callers (``svcnet scenario run``), the pytest plugin
(``--svcnet-backend``, the ``svcnet_backend_factory`` fixture) and the backends'
own kernel tests::

    with kernel_backends(NftablesBackend, prefix=SCENARIO_PREFIX) as make_backend:
        backend = make_backend("node-a")   # in a new svcnet-sc-<pid>-<n>
        ...
        make_backend.release(backend)      # optional: delete its namespace now

Every namespace it made is deleted when the block ends, also on failure; one
whose backend could not be constructed is deleted at once. Namespaces left by
runs that died (SIGKILL) are reaped when the block starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from svcnet.backend import Backend, Capabilities
from svcnet.kernel import netns

TEST_PREFIX = "svcnet-t-"  # the pytest plugin and the harness
SCENARIO_PREFIX = "svcnet-sc-"  # svcnet scenario run


class NetnsFactory:
    """``make_backend(node)`` for a kernel backend class: each instance gets a
    fresh ``<prefix><pid>-<n>`` namespace, deleted again by :meth:`release` (the
    harness calls it after ``cleanup()``/``close()``) or at the latest by
    :meth:`close` (leaving the ``with`` block). It names its backend and carries
    its capabilities (a :class:`svcnet.backend.ManagedBackendFactory`)."""

    def __init__(self, backend: type[Backend], prefix: str = TEST_PREFIX) -> None:
        self.backend = backend
        self.name: str = backend.name
        self.capabilities: Capabilities = backend.capabilities
        self.prefix = prefix
        self._spaces = netns.Namespaces(prefix)
        self._netns: dict[int, str] = {}

    def __call__(self, node: str, /) -> Backend:
        space = self._spaces.new()
        try:
            instance = self.backend(node, netns=space)
        except BaseException:
            self._spaces.release(space)
            raise
        self._netns[id(instance)] = space
        return instance

    def netns_of(self, backend: Backend) -> str | None:
        """The namespace this factory made for ``backend`` (None: not one of ours)."""
        return self._netns.get(id(backend))

    def release(self, backend: Backend, /) -> None:
        """Delete ``backend``'s namespace (call it after the backend's cleanup/close)."""
        space = self._netns.pop(id(backend), None)
        if space is not None:
            self._spaces.release(space)

    def close(self) -> None:
        """Delete every namespace still held (each tried; the first failure raised)."""
        self._netns = {}
        self._spaces.close()

    def __enter__(self) -> NetnsFactory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def kernel_backends(backend: type[Backend], prefix: str = TEST_PREFIX) -> Iterator[NetnsFactory]:
    """A :class:`NetnsFactory` for the block; orphans of ``prefix`` are reaped
    first and everything made is deleted at the end (also on failure)."""
    netns.reap_orphans(prefix)
    with NetnsFactory(backend, prefix) as factory:
        yield factory


__all__ = ["SCENARIO_PREFIX", "TEST_PREFIX", "NetnsFactory", "kernel_backends"]
