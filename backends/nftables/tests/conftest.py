"""Fixtures: a fresh ``svcnet-nt-*`` network namespace per test (deleted in finally)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from svcnet.testing.plugin import create_netns, delete_netns


def kernel_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "kernel tests need root (network namespaces, CAP_NET_ADMIN)"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    if shutil.which("nft") is None:
        return "nft is not installed"
    return None


@pytest.fixture
def netns() -> Iterator[str]:
    reason = kernel_skip_reason()
    if reason:
        pytest.skip(reason)
    name = create_netns("svcnet-nt-")
    try:
        yield name
    finally:
        delete_netns(name)


def nft_in(ns: str, *args: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "nft", *args], check=True, capture_output=True, text=True
    ).stdout
