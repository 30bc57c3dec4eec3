"""The rule plan: the public contract between the core and every backend.

The types (:mod:`svcnet.plan.types`) are a leaf: they import nothing from the
compiler or the state. The module :mod:`svcnet.plan.compiler` builds a plan from a
cluster state; :mod:`svcnet.plan.incremental` brings one to a newer state;
:mod:`svcnet.plan.text` prints one. This package exports the types and the
functions ``compile``, ``update`` and ``advance``. (The compiler module is not named
``compile``: a submodule of that name would shadow the function on the package.)
:mod:`svcnet.plan.serial` writes plans and changes as JSON and reads them back
(``to_json``, ``from_json``, ...), with the contract version they follow,
``CONTRACT_VERSION``.
"""

from __future__ import annotations

from svcnet.plan.compiler import compile
from svcnet.plan.incremental import advance, update
from svcnet.plan.serial import (
    API_VERSION,
    CONTRACT_VERSION,
    changes_from_json,
    contract_mismatch,
    from_data,
    from_json,
    plan_from_json,
    to_data,
    to_json,
)
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
)

__all__ = [
    "API_VERSION",
    "CONTRACT_VERSION",
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
    "changes_from_json",
    "compile",
    "contract_mismatch",
    "from_data",
    "from_json",
    "plan_from_json",
    "to_data",
    "to_json",
    "update",
]
