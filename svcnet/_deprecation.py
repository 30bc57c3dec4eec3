"""Keeping old public import paths alive for one minor release.

The policy (docs/reference/api.md): a public name that moves or is renamed keeps
working at its old path, with a :class:`DeprecationWarning` naming the new one, for
one minor release (moved in 0.2, still importable through 0.2.x, gone in 0.3).

A module whose public names moved declares, at its end::

    from svcnet._deprecation import moved_names

    __getattr__, __dir__ = moved_names(
        __name__, {"OldName": "svcnet.plan:NewName"}, removed_in="0.3", globals_=globals()
    )

``from svcnet.old import OldName`` and ``svcnet.old.OldName`` then warn once per
call site and return ``svcnet.plan.NewName``; a target without ``:attr`` is a whole
module (``"svcnet.plan"``). The target is imported only when the old name is used.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["moved_names", "resolve"]


def resolve(target: str) -> Any:
    """The object at ``"package.module:attr"``, or the module ``"package.module"``."""
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


def moved_names(
    module: str,
    moved: Mapping[str, str],
    *,
    removed_in: str,
    globals_: Mapping[str, Any] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module's ``__getattr__`` and ``__dir__`` for the names in ``moved``
    (old name -> ``"new.module:attr"`` or ``"new.module"``).

    ``__getattr__`` warns with :class:`DeprecationWarning` (pointing at the
    importing line) and returns the object at the new path; any other unknown name
    raises :class:`AttributeError` as usual. ``__dir__`` lists the module's own
    names (``globals_``) and the moved ones.
    """
    table = dict(moved)

    def __getattr__(name: str) -> Any:
        target = table.get(name)
        if target is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        new_path = target.replace(":", ".")
        warnings.warn(
            f"{module}.{name} is deprecated and will be removed in svcnet {removed_in}; "
            f"use {new_path}",
            DeprecationWarning,
            stacklevel=2,
        )
        return resolve(target)

    def __dir__() -> list[str]:
        return sorted({*(globals_ or {}), *table})

    return __getattr__, __dir__
