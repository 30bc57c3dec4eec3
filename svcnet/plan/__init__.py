"""The rule plan: the public contract between the core and every backend.

The types (:mod:`svcnet.plan.types`) are a leaf: they import nothing from the
compiler. :mod:`svcnet.plan.compile` builds a plan from a cluster state and updates it
incrementally; :mod:`svcnet.plan.text` prints one.
"""

from __future__ import annotations

from svcnet.plan.types import (
    DROP,
    REJECT,
    Action,
    Changes,
    EndpointSet,
    Frontend,
    FrontendKind,
    NodeSettings,
    Plan,
    PlanEndpoint,
    PortPlan,
    Route,
    ServicePlan,
    ServiceRef,
    advance,
    compile,
    update,
)

__all__ = [
    "DROP",
    "REJECT",
    "Action",
    "Changes",
    "EndpointSet",
    "Frontend",
    "FrontendKind",
    "NodeSettings",
    "Plan",
    "PlanEndpoint",
    "PortPlan",
    "Route",
    "ServicePlan",
    "ServiceRef",
    "advance",
    "compile",
    "update",
]
