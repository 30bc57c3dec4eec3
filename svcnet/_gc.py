"""The cyclic garbage collector paused around a large build (private).

Building a large state, plan or document set allocates millions of acyclic
containers; with a big heap alive, the collector's passes over it cost more than
the build itself. :func:`paused` stops it for a block (only when asked, and only
if it was running) and restarts it after."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused(when: bool = True) -> Iterator[None]:
    """The collector paused for the block when ``when`` and it was running."""
    if not when or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
