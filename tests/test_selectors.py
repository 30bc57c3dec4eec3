import pytest

from svcnet.errors import ValidationError
from svcnet.model import Labels
from svcnet.state.selectors import (
    Operator,
    Requirement,
    Selector,
    matches,
    parse_equality,
    parse_selector,
)

LABELS = Labels.of({"app": "web", "tier": "front"})


def test_equality_selector_matches_all_pairs() -> None:
    assert Selector.from_labels({"app": "web"}).matches(LABELS)
    assert not Selector.from_labels({"app": "web", "tier": "back"}).matches(LABELS)
    assert matches(Labels.of({"app": "web"}), LABELS)
    assert not matches({"app": "db"}, LABELS)


def test_empty_selector_matches_everything() -> None:
    assert Selector().matches(Labels())
    assert Selector().empty


@pytest.mark.parametrize(
    ("op", "values", "expected"),
    [
        (Operator.IN, {"web", "api"}, True),
        (Operator.IN, {"api"}, False),
        (Operator.NOT_IN, {"api"}, True),
        (Operator.NOT_IN, {"web"}, False),
        (Operator.EXISTS, set(), True),
        (Operator.DOES_NOT_EXIST, set(), False),
    ],
)
def test_requirement_operators(op: Operator, values: set[str], expected: bool) -> None:
    assert Requirement("app", op, frozenset(values)).matches(LABELS) is expected


def test_missing_key() -> None:
    assert Requirement("x", Operator.NOT_IN, frozenset({"a"})).matches(LABELS)
    assert not Requirement("x", Operator.IN, frozenset({"a"})).matches(LABELS)
    assert Requirement("x", Operator.DOES_NOT_EXIST).matches(LABELS)


def test_parse_set_based() -> None:
    sel = parse_selector(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front", "edge"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        }
    )
    assert sel.matches(LABELS)
    assert not sel.matches(Labels.of({"app": "web", "tier": "front", "canary": "1"}))
    assert sel.equality_pairs() == (("app", "web"),)
    assert sel == parse_selector(
        {
            "matchExpressions": [
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "tier", "operator": "In", "values": ["edge", "front"]},
            ],
            "matchLabels": {"app": "web"},
        }
    )


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ("app=web", "sel"),
        ({"matchLabels": {"app": 3}}, "sel.matchLabels.app"),
        (
            {"matchExpressions": [{"key": "a", "operator": "Like"}]},
            "sel.matchExpressions[0].operator",
        ),
        ({"matchExpressions": [{"key": "a", "operator": "In"}]}, "sel.matchExpressions[0].values"),
        (
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
            "sel.matchExpressions[0].values",
        ),
        ({"matchExpressions": [{"operator": "Exists"}]}, "sel.matchExpressions[0].key"),
        ({"matchFoo": {}}, "sel"),
    ],
)
def test_parse_errors(data: object, field: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_selector(data, "Thing default/x", "sel")
    assert e.value.field == field
    assert e.value.obj == "Thing default/x"


def test_parse_equality() -> None:
    assert parse_equality({"app": "web"}).matches(LABELS)
    assert parse_equality(None).empty
    with pytest.raises(ValidationError):
        parse_equality(["app"], "Service default/web")
