"""svcnet._deprecation: an old public name keeps working, with a DeprecationWarning
that names the new path and points at the line that used the old one."""

from __future__ import annotations

import sys
import types
import warnings
from collections.abc import Iterator

import pytest

import svcnet
import svcnet.plan
from svcnet._deprecation import moved_names, resolve

OLD = "svcnet_test_old_module"


@pytest.fixture
def old_module() -> Iterator[types.ModuleType]:
    """A module that once held ``Plan``, ``compile`` and ``plan_module`` (moved)."""
    module = types.ModuleType(OLD)
    module.still_here = 1  # type: ignore[attr-defined]
    module.__getattr__, module.__dir__ = moved_names(  # type: ignore[method-assign]
        OLD,
        {
            "OldPlan": "svcnet.plan:Plan",
            "old_compile": "svcnet:compile",
            "plan_module": "svcnet.plan",
        },
        removed_in="0.3",
        globals_=vars(module),
    )
    sys.modules[OLD] = module
    try:
        yield module
    finally:
        del sys.modules[OLD]


def test_an_old_name_returns_the_new_object_and_warns(old_module: types.ModuleType) -> None:
    with pytest.warns(DeprecationWarning) as caught:
        from svcnet_test_old_module import OldPlan  # type: ignore[import-not-found]
    assert OldPlan is svcnet.plan.Plan
    message = str(caught[0].message)
    assert f"{OLD}.OldPlan is deprecated" in message
    assert "removed in svcnet 0.3" in message
    assert "use svcnet.plan.Plan" in message
    assert caught[0].filename == __file__  # the importing line, not the helper


def test_attribute_access_and_module_targets(old_module: types.ModuleType) -> None:
    with pytest.warns(DeprecationWarning, match="use svcnet.compile"):
        assert old_module.old_compile is svcnet.compile
    with pytest.warns(DeprecationWarning, match=r"use svcnet\.plan$"):
        assert old_module.plan_module is svcnet.plan


def test_current_and_unknown_names_do_not_warn(old_module: types.ModuleType) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert old_module.still_here == 1
        with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
            _ = old_module.nothing
        assert not hasattr(old_module, "nothing")


def test_dir_lists_own_and_moved_names(old_module: types.ModuleType) -> None:
    listed = dir(old_module)
    assert {"still_here", "OldPlan", "old_compile", "plan_module"} <= set(listed)
    assert listed == sorted(listed)


def test_resolve_follows_dotted_attributes() -> None:
    assert resolve("svcnet.plan:Plan.diff") is svcnet.plan.Plan.diff
    assert resolve("svcnet") is svcnet
