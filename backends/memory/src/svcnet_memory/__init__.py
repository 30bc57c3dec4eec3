"""svcnet's in-memory data plane: the smallest complete backend.

Copy this package to start a backend of your own. It has the three parts every
backend has, without a kernel:

* ``tables.py``   — the "kernel": dicts keyed like packet matches, filled from
                    the plan's services (a real backend renders rules instead);
* ``interpret.py``— Probe -> Outcome from those tables alone, step by step as the
                    :mod:`svcnet.plan` docstring says;
* this module     — :class:`MemoryBackend`, gluing them to :class:`svcnet.backend.Backend`.

It behaves like a kernel on bad input: ``apply()`` of changes that do not fit
what is installed raises :class:`~svcnet.errors.BackendError` and changes nothing.
"""

from __future__ import annotations

import attrs

from svcnet.backend import Backend, Capabilities
from svcnet.plan import Changes, Plan
from svcnet.probe import Outcome, Probe
from svcnet_memory.interpret import interpret
from svcnet_memory.tables import Tables

__all__ = ["MemoryBackend", "Snapshot"]


@attrs.frozen
class Snapshot:
    """What :meth:`MemoryBackend.observe` reads back: one line per table entry."""

    lines: tuple[str, ...]

    def __str__(self) -> str:
        return "\n".join(self.lines)


class MemoryBackend(Backend):
    name = "memory"
    capabilities = Capabilities(kernel=False)
    contract = "1.1"  # the backend contract version implemented (svcnet.backend)

    def __init__(self, node: str, *, netns: str | None = None) -> None:
        super().__init__(node, netns=netns)
        self._tables = Tables()

    def apply(self, changes: Changes) -> None:
        # Check before Backend.apply computes the target plan: a kernel refuses
        # deleting what is not there with its own error, not a KeyError.
        if self.installed is not None:
            self._tables.check(changes)
        super().apply(changes)

    def _install(self, changes: Changes, target: Plan, *, full: bool) -> None:
        if full:  # a full sync replaces everything this backend owns
            tables = Tables()
        else:
            tables = self._tables
            tables.check(changes)  # raises before any change: all or nothing
            for ref in changes.removed:
                tables.remove(ref)
            for svc in changes.replaced:
                tables.remove(svc.ref)
        tables.set_settings(changes.settings)
        for svc in changes.added + changes.replaced:
            tables.add(svc)
        self._tables = tables

    def check(self) -> tuple[str, ...]:
        """Nothing but this object writes its tables, so nothing can drift: no damage."""
        return ()

    def observe(self) -> Snapshot:
        return Snapshot(tuple(self._tables.dump()))

    def observed_plan(self) -> Plan:
        """The plan the tables hold now (:meth:`Tables.as_plan`), rebuilt from their
        entries on each call."""
        return self._tables.as_plan(self.node)

    def evaluate(self, probe: Probe) -> Outcome:
        return interpret(self._tables, probe)[0]

    def trace(self, probe: Probe) -> tuple[str, ...]:
        return tuple(interpret(self._tables, probe)[1])

    def cleanup(self) -> None:
        self._tables = Tables()
        self.installed = None
