"""Whether the IPVS kernel tests can run here, and their namespace fixture
(imported by the tests: this directory has no conftest.py, because the conftest
modules of the backends' test directories share one module name, and another
directory's ``from conftest import ...`` would find this one)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from svcnet.testing.plugin import create_netns, delete_netns, kernel_unavailable


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh ``svcnet-iv-*`` network namespace per test (deleted in finally)."""
    reason = kernel_unavailable()
    if reason:
        pytest.skip(reason)
    name = create_netns("svcnet-iv-")
    try:
        yield name
    finally:
        delete_netns(name)


def ipvs_unavailable() -> str | None:
    """Why the IPVS kernel tests cannot run here, or None."""
    reason = kernel_unavailable()
    if reason:
        return reason
    if not os.path.exists("/proc/net/ip_vs"):
        return "this kernel has no IPVS (/proc/net/ip_vs); run them with scripts/in-ipvs-vm"
    return None
