"""Fixtures: a fresh ``svcnet-iv-*`` network namespace per test (deleted in finally);
the kernel tests need a kernel with IPVS (``scripts/in-ipvs-vm`` boots one)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from svcnet.testing.plugin import create_netns, delete_netns, kernel_unavailable


def ipvs_unavailable() -> str | None:
    """Why the IPVS kernel tests cannot run here, or None."""
    reason = kernel_unavailable()
    if reason:
        return reason
    if not os.path.exists("/proc/net/ip_vs"):
        return "this kernel has no IPVS (/proc/net/ip_vs); run them with scripts/in-ipvs-vm"
    return None


@pytest.fixture
def netns() -> Iterator[str]:
    reason = kernel_unavailable()
    if reason:
        pytest.skip(reason)
    name = create_netns("svcnet-iv-")
    try:
        yield name
    finally:
        delete_netns(name)
