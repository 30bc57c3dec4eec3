"""svcnet's iptables data plane.

``IptablesBackend(node, netns=..., driver="restore")`` programs one node's network
namespace with kube-proxy's iptables layout (see :mod:`svcnet_iptables.render`),
through ``iptables-restore`` (``driver="restore"``, nft or legacy, the default)
or python-iptables (``driver="iptc"``, legacy tables only). It reads the rules
back from the kernel and answers probes from that read-back alone.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import ClassVar, Protocol

from svcnet.backend import Backend, Capabilities
from svcnet.errors import BackendError, BackendErrorKind
from svcnet.model import IPFamily
from svcnet.plan import Changes, Plan
from svcnet.probe import Outcome, Probe

from .interpret import Interpreter, InterpretError
from .readback import Ruleset
from .render import (
    FAMILIES,
    TABLES,
    Existing,
    Renderer,
    cleanup_text,
    full_sync,
    full_sync_stream,
    partial_sync,
)

__all__ = ["InterpretError", "IptablesBackend", "Ruleset"]


class Driver(Protocol):
    name: str

    def check(self) -> None: ...
    def read(self, families: Iterable[IPFamily] = ...) -> Ruleset: ...
    def apply(self, texts: dict[tuple[IPFamily, str], str]) -> None: ...
    def save_text(self, family: IPFamily, table: str | None = None) -> str: ...
    def close(self) -> None: ...


def _existing(rs: Ruleset) -> dict[tuple[IPFamily, str], Existing]:
    out = {}
    for family in FAMILIES:
        for table in TABLES:
            t = rs.table(family, table)
            out[(family, table)] = Existing(t.own_chains, t.jumps)
    return out


@contextmanager
def gc_paused() -> Iterator[None]:
    """Rendering builds hundreds of thousands of acyclic strings and lists; with a
    big cluster state alive, the cyclic collector's full passes over it cost 2-3x
    the rendering itself. It is paused for the block (and only if it was on)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class IptablesBackend(Backend):
    """kube-proxy's iptables layout, installed with iptables-restore or libiptc."""

    name: ClassVar[str] = "iptables"
    capabilities: ClassVar[Capabilities] = Capabilities(kernel=True)
    contract: ClassVar[str] = "1.0"  # the backend contract version implemented

    def __init__(
        self,
        node: str,
        *,
        netns: str | None = None,
        driver: str = "restore",
        variant: str | None = None,
    ) -> None:
        super().__init__(node, netns=netns)
        self.driver: Driver
        if driver == "restore":
            from .restore import RestoreDriver

            self.driver = RestoreDriver(netns, variant)
        elif driver == "iptc":
            if variant not in (None, "legacy"):
                raise BackendError(
                    BackendErrorKind.UNSUPPORTED, "the iptc driver programs legacy tables only"
                )
            from .libiptc import LibiptcDriver

            self.driver = LibiptcDriver(netns)
        else:
            raise BackendError(
                BackendErrorKind.UNSUPPORTED, f"unknown iptables driver {driver!r} (restore, iptc)"
            )
        self._renderer = Renderer()
        self._checked = False
        self.last_texts: dict[tuple[IPFamily, str], str] = {}
        # Interpreters over what the kernel returned, per family, since this backend
        # last changed the tables; any install or cleanup (also a failed one) drops them.
        self._readback: dict[IPFamily, Interpreter] = {}

    def _check(self) -> None:
        if not self._checked:
            self.driver.check()
            self._checked = True

    def _install(self, changes: Changes, target: Plan, *, full: bool) -> None:
        self._check()
        self._readback.clear()
        if full or self.installed is None:
            existing = _existing(self.driver.read())
            stream = getattr(self.driver, "apply_stream", None)
            if stream is not None:
                # the restore process parses while the rest is joined and written
                streams = full_sync_stream(self._renderer, target, existing)
                with gc_paused():
                    written = stream(streams)
                self.last_texts = dict(zip(streams, written, strict=True))
                return
            with gc_paused():
                texts = full_sync(self._renderer, target, existing)
        else:
            with gc_paused():
                texts = partial_sync(self._renderer, self.installed, changes, target)
        self.driver.apply(texts)
        self.last_texts = texts

    def observe(self) -> Ruleset:
        self._check()
        return self.driver.read()

    def _interpreter_for(self, probe: Probe) -> Interpreter:
        """An interpreter over the read-back of the probe's family: read from the
        kernel once after each change this backend makes, then reused by the probes
        that follow (``refresh()`` forces a new read, e.g. after someone else changed
        the tables)."""
        self._check()
        family = IPFamily.of(probe.dst_ip)
        interp = self._readback.get(family)
        if interp is None:
            interp = Interpreter(self.driver.read((family,)))
            self._readback[family] = interp
        return interp

    def refresh(self) -> None:
        """Forget the cached read-back; the next probe reads the kernel again."""
        self._readback.clear()

    def evaluate(self, probe: Probe) -> Outcome:
        return self._interpreter_for(probe).evaluate(probe)

    def trace(self, probe: Probe) -> tuple[str, ...]:
        return self._interpreter_for(probe).trace(probe)

    def cleanup(self) -> None:
        self._check()
        self._readback.clear()
        existing = _existing(self.driver.read())
        texts = {
            key: cleanup_text(key[1], ex) for key, ex in existing.items() if ex.chains or ex.jumps
        }
        if texts:
            self.driver.apply(texts)
        self.installed = None

    def close(self) -> None:
        self.driver.close()
