"""Label selectors: equality-based (a Service's ``spec.selector``) and set-based
(``matchLabels`` + ``matchExpressions``), as frozen values.

:class:`Selector`, :class:`Requirement` and :class:`Operator` live in
:mod:`svcnet.model` (a Deployment holds a Selector) and are re-exported here.

A :class:`Selector` is a conjunction of :class:`Requirement` values; the empty
selector matches everything (as in Kubernetes). A Service whose selector is
empty is treated by :mod:`svcnet.state.cluster` as having no selector (Kubernetes
stores ``selector: {}`` as no selector).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from svcnet.errors import ValidationError
from svcnet.model import Labels, Operator, Requirement, Selector

__all__ = [
    "Operator",
    "Requirement",
    "Selector",
    "matches",
    "parse_equality",
    "parse_selector",
]


def matches(selector: Labels | Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Equality-based match: every pair of ``selector`` is in ``labels``."""
    return all(labels.get(k) == v for k, v in selector.items())


def _check_label_value(obj: str, field: str, key: Any, value: Any) -> None:
    if not isinstance(key, str) or not key:
        raise ValidationError(obj, field, f"label key must be a non-empty string, got {key!r}")
    if not isinstance(value, str):
        raise ValidationError(obj, f"{field}.{key}", f"label value must be a string, got {value!r}")


def parse_equality(data: Any, obj: str = "", field: str = "spec.selector") -> Selector:
    """Parse a Service-style selector ``{key: value}``."""
    if data is None:
        return Selector()
    if not isinstance(data, Mapping):
        raise ValidationError(obj, field, f"must be a map of labels, got {type(data).__name__}")
    for k, v in data.items():
        _check_label_value(obj, field, k, v)
    return Selector.from_labels(data)


def parse_selector(data: Any, obj: str = "", field: str = "selector") -> Selector:
    """Parse a set-based selector ``{matchLabels: {...}, matchExpressions: [...]}``."""
    if data is None:
        return Selector()
    if not isinstance(data, Mapping):
        raise ValidationError(obj, field, f"must be a map, got {type(data).__name__}")
    unknown = set(data) - {"matchLabels", "matchExpressions"}
    if unknown:
        raise ValidationError(obj, field, f"unknown field(s): {', '.join(sorted(unknown))}")
    reqs = list(parse_equality(data.get("matchLabels"), obj, f"{field}.matchLabels").requirements)
    exprs = data.get("matchExpressions") or []
    if not isinstance(exprs, list):
        raise ValidationError(obj, f"{field}.matchExpressions", "must be a list")
    for i, expr in enumerate(exprs):
        where = f"{field}.matchExpressions[{i}]"
        if not isinstance(expr, Mapping):
            raise ValidationError(obj, where, "must be a map")
        key = expr.get("key")
        if not isinstance(key, str) or not key:
            raise ValidationError(obj, f"{where}.key", "must be a non-empty string")
        try:
            op = Operator(expr.get("operator"))
        except ValueError:
            raise ValidationError(
                obj,
                f"{where}.operator",
                f"unknown operator {expr.get('operator')!r} (In, NotIn, Exists, DoesNotExist)",
            ) from None
        values = expr.get("values") or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValidationError(obj, f"{where}.values", "must be a list of strings")
        if op in (Operator.IN, Operator.NOT_IN) and not values:
            raise ValidationError(obj, f"{where}.values", f"must be non-empty for {op.value}")
        if op in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and values:
            raise ValidationError(obj, f"{where}.values", f"must be empty for {op.value}")
        reqs.append(Requirement(key, op, frozenset(values)))
    return Selector(tuple(reqs))
