"""The stateless rules of Deployments and ReplicaSets, as the API server checks them.

:func:`check_workload` is called by :meth:`svcnet.state.ClusterState.step` on every
applied Deployment or ReplicaSet (objects may be built in Python, not only parsed)
and by :mod:`svcnet.manifests.workloads` when reading a manifest. Each refusal is a
:class:`~svcnet.errors.ValidationError` naming the object, the field path and the
value.
"""

from __future__ import annotations

import re

from svcnet.errors import ValidationError
from svcnet.model import Deployment, ReplicaSet, StrategyType

__all__ = ["PERCENT", "check_int_or_percent", "check_workload", "selector_text"]

PERCENT = re.compile(r"[0-9]+%")
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_DNS_LABEL = re.compile(_LABEL)


def selector_text(obj: Deployment | ReplicaSet) -> str:
    """The selector as kubectl prints one (``app=web,tier in (a,b)``)."""
    parts = []
    for r in obj.selector.requirements:
        pair = r.equality
        if pair is not None:
            parts.append(f"{pair[0]}={pair[1]}")
        elif r.operator.value == "Exists":
            parts.append(r.key)
        elif r.operator.value == "DoesNotExist":
            parts.append("!" + r.key)
        else:
            op = "in" if r.operator.value == "In" else "notin"
            parts.append(f"{r.key} {op} ({','.join(sorted(r.values))})")
    return ",".join(parts)


def check_int_or_percent(obj: str, path: str, value: int | str) -> None:
    """A count (>= 0) or a percent text such as ``25%``."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValidationError(obj, path, f"{value!r}: must be an integer or a percentage")
    if isinstance(value, int):
        if value < 0:
            raise ValidationError(obj, path, f"{value}: must be greater than or equal to 0")
        return
    if not PERCENT.fullmatch(value):
        raise ValidationError(
            obj,
            path,
            f"{value!r}: a valid percent string must be a numeric string followed "
            "by an ending '%' (e.g. '1%' or '93%')",
        )


def _is_zero(value: int | str) -> bool:
    return value == 0 or (isinstance(value, str) and int(value[:-1]) == 0)


def check_workload(obj: Deployment | ReplicaSet) -> None:
    """Refuse what the API server refuses in a Deployment or ReplicaSet spec."""
    where = str(obj.key)
    if len(obj.name) > 253 or not _SUBDOMAIN.fullmatch(obj.name):
        raise ValidationError(
            where,
            "metadata.name",
            f"invalid value {obj.name!r}: a lowercase RFC 1123 subdomain must consist of "
            "lower case alphanumeric characters, '-' or '.', and must start and end with "
            "an alphanumeric character",
        )
    if len(obj.namespace) > 63 or not _DNS_LABEL.fullmatch(obj.namespace):
        raise ValidationError(
            where, "metadata.namespace", f"invalid value {obj.namespace!r}: not a DNS-1123 label"
        )
    if isinstance(obj.replicas, bool) or not isinstance(obj.replicas, int) or obj.replicas < 0:
        raise ValidationError(
            where, "spec.replicas", f"{obj.replicas!r}: must be greater than or equal to 0"
        )
    if obj.selector.empty:
        raise ValidationError(
            where, "spec.selector", f"empty selector is invalid for {obj.key.kind.value.lower()}"
        )
    if not obj.selector.matches(obj.template.labels):
        raise ValidationError(
            where,
            "spec.template.metadata.labels",
            f"invalid value {obj.template.labels.as_dict()!r}: `selector` "
            f"({selector_text(obj)}) does not match template `labels`",
        )
    if obj.revision < 0:
        raise ValidationError(where, "metadata.annotations", f"revision {obj.revision} < 0")
    if not isinstance(obj, Deployment):
        return
    if obj.revision_history_limit < 0:
        raise ValidationError(
            where,
            "spec.revisionHistoryLimit",
            f"{obj.revision_history_limit}: must be greater than or equal to 0",
        )
    strategy = obj.strategy
    if strategy.type is StrategyType.RECREATE:
        return
    path = "spec.strategy.rollingUpdate"
    check_int_or_percent(where, path + ".maxSurge", strategy.max_surge)
    check_int_or_percent(where, path + ".maxUnavailable", strategy.max_unavailable)
    unavailable = strategy.max_unavailable
    if isinstance(unavailable, str) and int(unavailable[:-1]) > 100:
        raise ValidationError(
            where, path + ".maxUnavailable", f"{unavailable!r}: must not be greater than 100%"
        )
    if _is_zero(strategy.max_surge) and _is_zero(unavailable):
        raise ValidationError(
            where,
            path + ".maxUnavailable",
            f"{unavailable!r}: may not be 0 when `maxSurge` is 0",
        )
