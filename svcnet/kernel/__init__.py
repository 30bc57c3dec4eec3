"""Kernel plumbing: the one home of network namespaces, ``setns`` and capability
checks (I/O). Part of the backend contract: a backend may import it (beside
backend, errors, model, plan, probe).

* :mod:`~svcnet.kernel.setns` -- :func:`entered` (run a block inside a namespace,
  this thread only) and :func:`enter` (move a worker thread for good);
* :mod:`~svcnet.kernel.caps` -- :func:`has_net_admin`;
* :mod:`~svcnet.kernel.netns` -- create, delete, list and reap ``svcnet-``
  namespaces, iproute2 batches, sysctls and process helpers for the lab;
* :mod:`~svcnet.kernel.factory` -- :func:`kernel_backends`, the backend factory
  giving each instance a fresh namespace (tests, scenario runs);
* :mod:`~svcnet.kernel.nftgen` -- :func:`nf_tables_generation`, the namespace's
  nf_tables ruleset generation (a cheap "did anyone else commit?" for ``check()``).

Importing it needs no privilege and no optional package; the functions check
what they need when called.
"""

from svcnet.kernel.caps import has_net_admin
from svcnet.kernel.factory import SCENARIO_PREFIX, TEST_PREFIX, NetnsFactory, kernel_backends
from svcnet.kernel.nftgen import nf_tables_generation
from svcnet.kernel.setns import NamespaceError, enter, entered

__all__ = [
    "SCENARIO_PREFIX",
    "TEST_PREFIX",
    "NamespaceError",
    "NetnsFactory",
    "enter",
    "entered",
    "has_net_admin",
    "kernel_backends",
    "nf_tables_generation",
]
