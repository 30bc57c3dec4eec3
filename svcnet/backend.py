"""The data-plane contract: :class:`Backend`, its capabilities, and plug-in loading.

A backend instance programs one node. Kernel backends are bound to a network
namespace (``netns``); the memory backend to nothing. Every backend, ours and
third parties', registers a subclass of :class:`Backend` in the entry-point
group ``svcnet.backends`` and is imported only when asked for by name.

The contract is versioned (:data:`CONTRACT_VERSION`, ``major.minor``, the version
plans carry too, see :mod:`svcnet.plan.serial`): a backend declares the version
it implements as the class attribute ``contract = "1.1"``, and :func:`load_backend`
refuses one declaring none, another major version, or a minor version newer than
svcnet's.

Life cycle: ``sync(plan)`` installs a whole plan (the first time, and for a
periodic full resync); ``apply(changes)`` moves from the plan last installed
to the next one, touching only what changed; both are atomic: on failure they
raise :class:`~svcnet.errors.BackendError` and leave what was installed before.
Drift: ``check()`` is a cheap look at the data plane (what it looks at is each
backend's choice); ``apply()`` calls it first and installs by a full ``sync()``
when it reports damage, when what is installed is unknown (an earlier sync
failed half-way), or, once, when the incremental install itself fails.
``observe()`` reads back what is installed (from the kernel, never a cache),
``observed_plan()`` expresses that read-back as a plan (contract 1.1; a backend
declaring 1.0 keeps loading and its ``observed_plan()`` raises ``UNSUPPORTED``),
``evaluate(probe)`` answers a probe from that read-back alone, ``cleanup()``
removes everything the backend owns and nothing else.
"""

from __future__ import annotations

import abc
import typing
from importlib.metadata import entry_points
from typing import ClassVar

import attrs

from svcnet._version import __version__
from svcnet.errors import BackendError, BackendErrorKind, BackendNotFound, SvcnetError
from svcnet.model import IPFamily, Protocol
from svcnet.plan import CONTRACT_VERSION, Changes, Plan, contract_mismatch
from svcnet.probe import Outcome, Probe

GROUP = "svcnet.backends"


@attrs.frozen
class Capabilities:
    """What a backend can do; the harness aims only at what is declared."""

    families: frozenset[IPFamily] = frozenset(IPFamily)
    protocols: frozenset[Protocol] = frozenset(Protocol)
    session_affinity: bool = True
    source_ranges: bool = True
    incremental: bool = True  # apply(changes) touches only what changed
    kernel: bool = False  # programs a real kernel (needs root and a netns)
    exact_probabilities: bool = True  # evaluate() reports the rules' real probabilities


class Backend(abc.ABC):
    """Base class of every data plane.

    Subclasses implement :meth:`_install` (or override :meth:`sync` and
    :meth:`apply`), :meth:`observe`, :meth:`evaluate` and :meth:`cleanup`.
    """

    name: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()
    # The backend contract version this backend implements ("major.minor"); each
    # backend declares it: load_backend() refuses one without (see the module doc).
    contract: ClassVar[str] = ""

    def __init__(self, node: str, *, netns: str | None = None) -> None:
        self.node = node
        self.netns = netns
        self._installed: Plan | None = None
        # the plan the next apply()'s changes start from: the last one installed
        # successfully, kept when an install failed half-way (installed unknown)
        self._basis: Plan | None = None
        self.fallbacks = 0  # full syncs apply() did instead of an incremental install
        self.last_fallback = ""  # why the last one was done

    @property
    def installed(self) -> Plan | None:
        """The plan the data plane holds; None when nothing is installed or when it is
        unknown (a failed install may have changed part of it)."""
        return self._installed

    @installed.setter
    def installed(self, plan: Plan | None) -> None:
        self._installed = plan
        self._basis = plan

    def _mark_unknown(self) -> None:
        """What is installed is no longer known (an install failed after changing part
        of the data plane): the next ``apply()`` does a full sync."""
        self._installed = None

    def check(self) -> tuple[str, ...]:
        """Damage a cheap look at the data plane finds in what this backend installed
        (empty: none found). The default finds none; kernel backends override it."""
        return ()

    def untouched(self) -> bool:
        """True only when the backend can tell, cheaply, that nothing at all has
        changed its data plane since its own last install (then a full resync
        would rewrite exactly what is there, and a periodic one may be skipped).
        The default cannot tell (False); the nftables backend compares the
        namespace's nf_tables generation, which every committed change bumps."""
        return False

    # -- programming -------------------------------------------------------
    def sync(self, plan: Plan) -> None:
        """Install ``plan`` whole, replacing whatever this backend installed."""
        self._check_node(plan.node)
        self._install(plan.diff(None), plan, full=True)
        self.installed = plan

    def apply(self, changes: Changes) -> None:
        """Move from the installed plan to the next one by ``changes``: incrementally
        when :meth:`check` finds no damage, else (and, once, when the incremental
        install fails) by a full :meth:`sync` of the target."""
        basis = self._installed if self._installed is not None else self._basis
        if basis is None:
            raise BackendError(BackendErrorKind.STATE, f"{self.name}: apply() before sync()")
        self._check_node(changes.settings.node)
        self._check_changes(changes, basis)
        target = changes.apply_to(basis)
        if self._installed is None:
            self._fall_back(target, "what is installed is unknown (an install failed)")
            return
        damage = self.check()
        if damage:
            self._fall_back(target, "damage: " + "; ".join(damage))
            return
        try:
            self._install(changes, target, full=False)
        except SvcnetError as e:
            self._fall_back(target, f"the incremental install failed: {e}")
            return
        self.installed = target

    def _fall_back(self, target: Plan, why: str) -> None:
        self.fallbacks += 1
        self.last_fallback = why
        self.sync(target)

    def update(self, plan: Plan) -> None:
        """``sync`` the first time, ``apply(plan.diff(installed))`` after."""
        if self.installed is None:
            self.sync(plan)
        else:
            changes = plan.diff(self.installed)
            if not changes.empty:
                self.apply(changes)

    @abc.abstractmethod
    def _install(self, changes: Changes, target: Plan, *, full: bool) -> None:
        """Make ``target`` installed, atomically. ``full``: ``changes`` lists every
        service (a full sync: anything else this backend owns must go)."""

    # -- reading back ------------------------------------------------------
    @abc.abstractmethod
    def observe(self) -> object:
        """What is installed, read back from the data plane."""

    @abc.abstractmethod
    def evaluate(self, probe: Probe) -> Outcome:
        """What the installed rules do to ``probe``, from :meth:`observe` alone."""

    def observed_plan(self) -> Plan:
        """What the data plane holds now, read back (never from a cache) and expressed
        as a plan for this node; equal (``==``) to the installed plan when nothing
        drifted (contract 1.1).

        - Read from the data plane on every call (:meth:`observe`'s read-back, not
          :attr:`installed` or any other copy kept by the backend).
        - Every behavioural field (settings, cluster IPs, frontends, endpoints, the
          six routes, source ranges, affinity) comes from what the data plane does;
          a field it does not carry (a port's name, a service with no ports, one not
          proxied, a route no frontend reaches) may come from a comment or other
          annotation the backend writes beside its rules for this purpose.
        - A data plane holding nothing of this backend's gives
          ``Plan(NodeSettings(node, (), (), ()))``: no settings, no services.
        - Damage shows as a difference: a deleted element or rule gives a plan that
          differs (``!=``) in the service it belonged to. A read-back that cannot be
          expressed as a plan at all raises :class:`~svcnet.errors.BackendError`
          (``STATE``), naming what was found.
        - The plan's ``revision`` (not compared) is 0.

        The default raises ``BackendError(UNSUPPORTED)``: backends written for
        contract 1.0 do not implement it (the harness skips its check for them)."""
        raise BackendError(
            BackendErrorKind.UNSUPPORTED,
            f"{self.name or type(self).__name__} backend (contract {self.contract or '?'}) "
            "does not implement observed_plan()",
        )

    def trace(self, probe: Probe) -> tuple[str, ...]:
        """The rules or entries that decided ``probe``, for humans."""
        return ()

    # -- teardown ----------------------------------------------------------
    @abc.abstractmethod
    def cleanup(self) -> None:
        """Remove everything this backend created, and nothing else."""

    def close(self) -> None:  # noqa: B027 - an optional hook; most backends hold nothing
        """Release handles (sockets, libraries); installed rules stay."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_changes(self, changes: Changes, installed: Plan) -> None:
        """Refuse, before any change, a diff that does not start from what is installed
        (a kernel would refuse to delete what is not there or add what is)."""
        have = installed.services
        missing = BackendErrorKind.NOT_FOUND
        for svc in changes.added:
            if svc.ref in have:
                raise BackendError(BackendErrorKind.EXISTS, f"service {svc.ref} is installed")
        for ref in [s.ref for s in changes.replaced] + list(changes.removed):
            if ref not in have:
                raise BackendError(missing, f"service {ref} is not installed")

    def _check_node(self, node: str) -> None:
        if node != self.node:
            raise BackendError(
                BackendErrorKind.STATE,
                f"{self.name} backend programs node {self.node!r}, got a plan for {node!r}",
            )


class BackendFactory(typing.Protocol):
    """Makes the backend that programs one node: ``factory(node)``. A
    :class:`Backend` subclass is one; so is any function of the node's name."""

    def __call__(self, node: str, /) -> Backend: ...


@typing.runtime_checkable
class ManagedBackendFactory(BackendFactory, typing.Protocol):
    """A factory that names its backend, declares what it can do, and releases
    what it made for a backend (its network namespace, say) once that backend has
    been cleaned up and closed. The test harness and the scenario runner use all
    three when a factory has them."""

    name: str
    capabilities: Capabilities

    def release(self, backend: Backend, /) -> None: ...


def available_backends() -> list[str]:
    """Names of the installed backends (entry points; nothing is imported)."""
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def load_backend(name: str) -> type[Backend]:
    """The backend class registered under ``name``, imported now."""
    for ep in entry_points(group=GROUP):
        if ep.name == name:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Backend)):
                raise BackendNotFound(f"entry point {name!r} in {GROUP} is not a Backend subclass")
            _check_contract(name, cls, ep.dist.version if ep.dist is not None else None)
            return cls
    installed = ", ".join(available_backends()) or "none"
    raise BackendNotFound(f"no backend named {name!r} is installed (installed: {installed})")


def _check_contract(name: str, cls: type[Backend], dist_version: str | None) -> None:
    """Refuse a backend whose declared contract version this svcnet cannot drive."""
    declared = cls.contract
    who = f"backend {name!r} ({cls.__module__}.{cls.__qualname__}"
    who += f", version {dist_version})" if dist_version else ")"
    ours = f"svcnet {__version__} implements backend contract {CONTRACT_VERSION}"
    if not declared:
        raise BackendNotFound(
            f"{who} declares no backend contract version; {ours} "
            f"(a backend declares the one it implements: contract = {CONTRACT_VERSION!r})"
        )
    mismatch = contract_mismatch(declared)
    if mismatch is not None:
        raise BackendNotFound(
            f"{who} implements backend contract {declared!r}, but {ours}: {mismatch}; "
            f"install a version of the backend for contract {CONTRACT_VERSION.split('.')[0]}.x "
            f"(at most {CONTRACT_VERSION})"
        )
