"""Fixtures: a fresh ``svcnet-iv-*`` network namespace per test (deleted in finally);
the kernel tests need a kernel with IPVS (``scripts/in-ipvs-vm`` boots one)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from svcnet.testing.plugin import create_netns, delete_netns, kernel_unavailable


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
