"""Whether the IPVS kernel tests can run here (imported by the tests; conftest
modules of several test directories share one name, so nothing is imported from one)."""

from __future__ import annotations

import os

from svcnet.testing.plugin import kernel_unavailable


def ipvs_unavailable() -> str | None:
    """Why the IPVS kernel tests cannot run here, or None."""
    reason = kernel_unavailable()
    if reason:
        return reason
    if not os.path.exists("/proc/net/ip_vs"):
        return "this kernel has no IPVS (/proc/net/ip_vs); run them with scripts/in-ipvs-vm"
    return None
