"""Capability checks (reads /proc; no side effects).

:func:`has_net_admin` is what the kernel backends ask before touching netfilter:
is ``CAP_NET_ADMIN`` in this process's effective set? It reads the ``CapEff``
mask of ``/proc/self/status``. The one fallback: when that file cannot be read
or has no ``CapEff`` line (no /proc mounted), the answer is "am I root"
(effective uid 0) -- root holds every capability unless something took them
away, which a process without /proc cannot tell anyway.
"""

from __future__ import annotations

import os

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21  # setns and mounting namespaces need it


def effective_caps() -> int | None:
    """The effective capability mask of this process, None when /proc does not say."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        return None
    return None


def has_cap(cap: int) -> bool:
    """Is capability number ``cap`` effective (fallback: euid 0, see the module doc)?"""
    mask = effective_caps()
    if mask is None:
        return os.geteuid() == 0
    return bool(mask >> cap & 1)


def has_net_admin() -> bool:
    """Is CAP_NET_ADMIN effective here (fallback: euid 0, see the module doc)?"""
    return has_cap(CAP_NET_ADMIN)


__all__ = ["CAP_NET_ADMIN", "CAP_SYS_ADMIN", "effective_caps", "has_cap", "has_net_admin"]
