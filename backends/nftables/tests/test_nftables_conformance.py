"""The shared conformance suite (svcnet.testing.run_conformance) on a real kernel:
random clusters and event sequences applied incrementally, every probe read back
from the kernel and compared with svcnet.semantics.evaluate; one fresh svcnet-
network namespace per node."""

from __future__ import annotations

import pytest
from svcnet_nftables import NftablesBackend

from svcnet.testing import run_conformance
from svcnet.testing.plugin import NetnsFactory, kernel_unavailable

EXAMPLES = 500


@pytest.mark.kernel
def test_conformance_on_a_real_kernel() -> None:
    reason = kernel_unavailable()
    if reason:
        pytest.skip(reason)
    factory = NetnsFactory(NftablesBackend)
    try:
        # scenario files are run by this backend's own scenario tests
        run_conformance(factory, max_examples=EXAMPLES, scenario_paths=[], derandomize=True)
    finally:
        factory.close()
