"""The shared conformance suite (svcnet.testing.run_conformance) on a real kernel:
random clusters and event sequences applied incrementally, every probe read back
from the kernel and compared with svcnet.semantics.evaluate; one fresh svcnet-
network namespace per node."""

from __future__ import annotations

import pytest
from svcnet_iptables import IptablesBackend

from svcnet.testing import run_conformance
from svcnet.testing.plugin import NetnsFactory, kernel_unavailable

# The restore driver forks iptables-restore per sync and iptables-save per probe
# (about 1.7 s per example here), so it gets fewer examples than nftables to keep
# CI under its budget; the fake-kernel agreement test covers more cases cheaply.
EXAMPLES = 150


@pytest.mark.kernel
def test_conformance_on_a_real_kernel() -> None:
    reason = kernel_unavailable()
    if reason:
        pytest.skip(reason)
    factory = NetnsFactory(IptablesBackend)
    try:
        # scenario files are run by this backend's own scenario tests
        run_conformance(factory, max_examples=EXAMPLES, scenario_paths=[], derandomize=True)
    finally:
        factory.close()
