"""Label selectors: equality-based (a Service's ``spec.selector``) and set-based
(``matchLabels`` + ``matchExpressions``), as frozen values.

A :class:`Selector` is a conjunction of :class:`Requirement` values; the empty
selector matches everything (as in Kubernetes). A Service whose selector is
empty is treated by :mod:`svcnet.state.cluster` as having no selector (Kubernetes
stores ``selector: {}`` as no selector).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs

from svcnet.errors import ValidationError
from svcnet.model import Labels


class Operator(enum.Enum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


def _frozen_values(value: Any) -> frozenset[str]:
    return frozenset(value)


@attrs.frozen
class Requirement:
    """One condition on one label key."""

    key: str
    operator: Operator
    values: frozenset[str] = attrs.field(default=frozenset(), converter=_frozen_values)

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op is Operator.EXISTS:
            return self.key in labels
        if op is Operator.DOES_NOT_EXIST:
            return self.key not in labels
        value = labels.get(self.key)
        if op is Operator.IN:
            return value is not None and value in self.values
        return value is None or value not in self.values  # NotIn

    @property
    def equality(self) -> tuple[str, str] | None:
        """``(key, value)`` when this requirement demands exactly that label."""
        if self.operator is Operator.IN and len(self.values) == 1:
            return self.key, next(iter(self.values))
        return None


def _requirements(value: Any) -> tuple[Requirement, ...]:
    return tuple(sorted(value, key=lambda r: (r.key, r.operator.value, sorted(r.values))))


@attrs.frozen
class Selector:
    """A conjunction of requirements; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = attrs.field(default=(), converter=_requirements)

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> Selector:
        """The equality-based selector of a Service: every pair must match."""
        return cls(tuple(Requirement(k, Operator.IN, frozenset([v])) for k, v in labels.items()))

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements

    def equality_pairs(self) -> tuple[tuple[str, str], ...]:
        """The ``(key, value)`` pairs a matching object must carry (for indexing)."""
        return tuple(p for r in self.requirements if (p := r.equality) is not None)


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
