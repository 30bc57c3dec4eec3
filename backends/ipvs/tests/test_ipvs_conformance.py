"""The shared conformance suite (svcnet.testing.run_conformance) on a kernel with IPVS:
random clusters and event sequences applied incrementally, every probe read back from
the kernel and compared with svcnet.semantics.evaluate (the endpoint set, not the
probabilities: Capabilities.exact_probabilities is False). SVCNET_IPVS_EXAMPLES
(default 200) sets the number of examples."""

from __future__ import annotations

import os

import pytest
from ipvs_support import ipvs_unavailable
from svcnet_ipvs import IpvsBackend

from svcnet.testing import run_conformance
from svcnet.testing.plugin import NetnsFactory


@pytest.mark.kernel
def test_conformance_on_a_kernel_with_ipvs() -> None:
    reason = ipvs_unavailable()
    if reason:
        pytest.skip(reason)
    factory = NetnsFactory(IpvsBackend)
    try:
        examples = int(os.environ.get("SVCNET_IPVS_EXAMPLES", "200"))
        run_conformance(factory, max_examples=examples, scenario_paths=[], derandomize=True)
    finally:
        factory.close()
