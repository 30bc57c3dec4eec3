"""Fixtures: a fresh ``svcnet-nt-*`` network namespace per test (deleted in finally)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest


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
    name = f"svcnet-nt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=False)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def nft_in(ns: str, *args: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "nft", *args], check=True, capture_output=True, text=True
    ).stdout
