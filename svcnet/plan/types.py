"""The rule plan: the public contract between the core and every data plane.

A :class:`Plan` says, for one node, everything its data plane must do, without
saying how. It is a closed set of frozen types (backends match on them
exhaustively) and is keyed by service, so that one event changes a handful of
:class:`ServicePlan` entries and :meth:`Plan.diff` yields a small
:class:`Changes`.

This module is a leaf of the contract: it imports only the model, the probe
vocabulary and the plan's text form, never the compiler (:mod:`svcnet.plan.compiler`,
:mod:`svcnet.plan.incremental`) or the cluster state. A plan is a plain value:
whatever the compiler keeps to update it incrementally, it keeps on its side.

How a data plane reads a plan, for a packet arriving at the plan's node:

1. If the destination is a frontend (``PortPlan.frontends``: address, port and
   the port's protocol) of some port, that port handles it (a frontend is listed
   once in a plan: when services claim the same one, the compiler keeps only the
   winner's, see :mod:`svcnet.plan.compiler`):
   a. a ``LOAD_BALANCER`` frontend with ``source_ranges``: a source outside
      every range is dropped, before anything else;
   b. the source is classified (``SourceKind``): POD if inside
      ``cluster_cidrs``, NODE if it is one of the node's own addresses,
      EXTERNAL otherwise;
   c. the :class:`Route` for (internal or external frontend, source kind) says
      forward to the cluster or the local endpoint set, reject or drop, and
      whether to masquerade;
   d. whatever the route says, a packet whose chosen endpoint address equals
      its source address is masqueraded (hairpin);
   e. ``affinity_timeout`` set: ClientIP session affinity per port (shared by
      all of the port's frontends).
2. Else, if the destination address is a ClusterIP of a proxied service
   (``ServicePlan.cluster_ips``): reject (a port the service does not define).
3. Else, if it is the ClusterIP of a service another proxy serves
   (``ServicePlan.proxied`` false): pass.
4. Else, if it is inside ``service_cidrs``: drop (unallocated).
5. Else: pass.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

import attrs
from pyrsistent import PMap, pmap

from svcnet.model import IPFamily, Protocol, format_endpoint
from svcnet.plan.text import render_plan
from svcnet.probe import SourceKind


class FrontendKind(enum.Enum):
    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    EXTERNAL_IP = "ExternalIP"
    LOAD_BALANCER = "LoadBalancer"

    @property
    def external(self) -> bool:
        return self is not FrontendKind.CLUSTER_IP


class Action(enum.Enum):
    FORWARD = "forward"
    REJECT = "reject"
    DROP = "drop"


class EndpointSet(enum.Enum):
    CLUSTER = "cluster"
    LOCAL = "local"


@attrs.frozen
class Route:
    """What a frontend does for one kind of source."""

    action: Action
    endpoints: EndpointSet | None = None  # FORWARD only
    masquerade: bool = False  # FORWARD only

    def __str__(self) -> str:
        if self.action is not Action.FORWARD:
            return str(self.action.value)
        assert self.endpoints is not None
        return f"{self.endpoints.value}{' masq' if self.masquerade else ''}"


REJECT = Route(Action.REJECT)
DROP = Route(Action.DROP)


@attrs.frozen(order=True)
class PlanEndpoint:
    ip: str
    port: int

    def __str__(self) -> str:
        return format_endpoint(self.ip, self.port)


@attrs.frozen(order=True)
class Frontend:
    kind: FrontendKind = attrs.field(order=lambda k: k.value)
    ip: str
    port: int

    def __str__(self) -> str:
        return f"{self.kind.value} {format_endpoint(self.ip, self.port)}"


@attrs.frozen
class PortPlan:
    """One port of one service in one IP family, on this node.

    ``frontends``, ``cluster_endpoints``, ``local_endpoints`` and ``source_ranges``
    are sorted tuples without duplicates, so that equal ports compare equal. The
    constructor stores what it is given (the compiler builds them so, and pays for
    no second sort); :meth:`build` takes any iterables and makes them so.
    """

    name: str
    family: IPFamily
    protocol: Protocol
    frontends: tuple[Frontend, ...]
    cluster_endpoints: tuple[PlanEndpoint, ...]
    local_endpoints: tuple[PlanEndpoint, ...]
    # routes[(external frontend?, source kind)]
    internal_from_pod: Route
    internal_from_node: Route
    internal_from_external: Route
    external_from_pod: Route
    external_from_node: Route
    external_from_external: Route
    source_ranges: tuple[str, ...] = ()  # LOAD_BALANCER frontends only; () = any source
    affinity_timeout: int | None = None

    @classmethod
    def build(
        cls,
        name: str,
        family: IPFamily,
        protocol: Protocol,
        frontends: Iterable[Frontend],
        cluster_endpoints: Iterable[PlanEndpoint],
        local_endpoints: Iterable[PlanEndpoint],
        internal_from_pod: Route,
        internal_from_node: Route,
        internal_from_external: Route,
        external_from_pod: Route,
        external_from_node: Route,
        external_from_external: Route,
        source_ranges: Iterable[str] = (),
        affinity_timeout: int | None = None,
    ) -> PortPlan:
        """A port plan from any iterables: sorted and made unique."""
        return cls(
            name,
            family,
            protocol,
            tuple(sorted(set(frontends))),
            tuple(sorted(set(cluster_endpoints))),
            tuple(sorted(set(local_endpoints))),
            internal_from_pod,
            internal_from_node,
            internal_from_external,
            external_from_pod,
            external_from_node,
            external_from_external,
            tuple(sorted(set(source_ranges))),
            affinity_timeout,
        )

    @property
    def routes(self) -> tuple[Route, Route, Route, Route, Route, Route]:
        """The six routes, internal then external, each from pod, node, external."""
        return (
            self.internal_from_pod,
            self.internal_from_node,
            self.internal_from_external,
            self.external_from_pod,
            self.external_from_node,
            self.external_from_external,
        )

    def route(self, frontend: FrontendKind, source: SourceKind) -> Route:
        if frontend.external:
            if source is SourceKind.POD:
                return self.external_from_pod
            if source is SourceKind.NODE:
                return self.external_from_node
            return self.external_from_external
        if source is SourceKind.POD:
            return self.internal_from_pod
        if source is SourceKind.NODE:
            return self.internal_from_node
        return self.internal_from_external

    def endpoints(self, which: EndpointSet) -> tuple[PlanEndpoint, ...]:
        return self.cluster_endpoints if which is EndpointSet.CLUSTER else self.local_endpoints


@attrs.frozen(order=True)
class ServiceRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def _ref_order(ref: ServiceRef) -> tuple[str, str]:
    """ServiceRef's order as a plain tuple key: attrs' generated comparison builds two
    tuples per comparison (sorting 10,000 references took 0.4 s)."""
    return (ref.namespace, ref.name)


@attrs.frozen
class ServicePlan:
    """Everything one service needs on this node.

    ``proxied`` false: another proxy serves it; its ``cluster_ips`` must be left
    alone (pass) and it has no ports here.
    """

    ref: ServiceRef
    cluster_ips: tuple[str, ...] = ()
    ports: tuple[PortPlan, ...] = ()
    proxied: bool = True

    def ports_of(self, family: IPFamily) -> tuple[PortPlan, ...]:
        return tuple(p for p in self.ports if p.family is family)


@attrs.frozen
class NodeSettings:
    """The parts of a plan that do not belong to one service."""

    node: str
    node_ips: tuple[str, ...]  # the node's primary InternalIP per family
    cluster_cidrs: tuple[str, ...]
    service_cidrs: tuple[str, ...]

    def node_ip(self, family: IPFamily) -> str | None:
        for a in self.node_ips:
            if IPFamily.of(a) is family:
                return a
        return None

    def cidrs(self, cidrs: tuple[str, ...], family: IPFamily) -> tuple[str, ...]:
        return tuple(c for c in cidrs if IPFamily.of_network(c) is family)


def _pmap(value: Mapping[ServiceRef, ServicePlan]) -> PMap[ServiceRef, ServicePlan]:
    return value if isinstance(value, PMap) else pmap(value)


@attrs.frozen
class Plan:
    settings: NodeSettings
    services: PMap[ServiceRef, ServicePlan] = attrs.field(factory=pmap, converter=_pmap)
    revision: int = attrs.field(default=0, eq=False)  # the state revision it reflects

    @property
    def node(self) -> str:
        return self.settings.node

    def diff(self, previous: Plan | None) -> Changes:
        """What turns ``previous`` (None: nothing installed) into this plan."""
        if previous is None:
            return Changes(
                settings=self.settings,
                settings_changed=True,
                added=tuple(self.services[k] for k in sorted(self.services, key=_ref_order)),
            )
        added: list[ServicePlan] = []
        replaced: list[ServicePlan] = []
        removed: list[ServiceRef] = []
        old = previous.services
        new = self.services
        if len(old) + len(new) > 0:
            for key, svc in new.items():
                before = old.get(key)
                if before is None:
                    added.append(svc)
                elif before is not svc and before != svc:
                    replaced.append(svc)
            removed.extend(k for k in old if k not in new)
        return self._changes(previous, added, replaced, removed)

    def _changes(
        self,
        previous: Plan,
        added: list[ServicePlan],
        replaced: list[ServicePlan],
        removed: list[ServiceRef],
    ) -> Changes:
        """The Changes from ``previous`` to this plan, each list in reference order."""
        return Changes(
            settings=self.settings,
            settings_changed=self.settings != previous.settings,
            added=tuple(sorted(added, key=lambda s: _ref_order(s.ref))),
            replaced=tuple(sorted(replaced, key=lambda s: _ref_order(s.ref))),
            removed=tuple(sorted(removed, key=_ref_order)),
        )

    def diff_keys(self, previous: Plan, keys: Iterable[ServiceRef]) -> Changes:
        """Like :meth:`diff`, when only ``keys`` can differ (the incremental path)."""
        added: list[ServicePlan] = []
        replaced: list[ServicePlan] = []
        removed: list[ServiceRef] = []
        for key in set(keys):
            before = previous.services.get(key)
            after = self.services.get(key)
            if after is None and before is not None:
                removed.append(key)
            elif after is not None and before is None:
                added.append(after)
            elif after is not None and before is not None and after != before:
                replaced.append(after)
        return self._changes(previous, added, replaced, removed)

    def __str__(self) -> str:
        return render_plan(self)


@attrs.frozen
class Changes:
    """What a backend must do to go from one plan to the next."""

    settings: NodeSettings
    settings_changed: bool = False
    added: tuple[ServicePlan, ...] = ()
    replaced: tuple[ServicePlan, ...] = ()
    removed: tuple[ServiceRef, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.settings_changed or self.added or self.replaced or self.removed)

    def apply_to(self, previous: Plan | None) -> Plan:
        services = previous.services if previous is not None else pmap()
        evolver = services.evolver()
        for ref in self.removed:
            evolver.remove(ref)
        for svc in self.added + self.replaced:
            evolver.set(svc.ref, svc)
        return Plan(self.settings, evolver.persistent())

    def __str__(self) -> str:
        lines = []
        if self.settings_changed:
            lines.append(f"~ node settings {self.settings}")
        lines += [f"+ service {s.ref}" for s in self.added]
        lines += [f"~ service {s.ref}" for s in self.replaced]
        lines += [f"- service {r}" for r in self.removed]
        return "\n".join(lines) if lines else "(no changes)"
