"""What a Python source file imports, read from its syntax tree (never by importing
it). Shared by test_purity.py and test_imports.py.

Every ``import`` statement counts, at module level or inside a function (a lazy
import still runs, it only runs later), except those under ``if TYPE_CHECKING:``
when the caller asks to leave them out (they never run).

Names are resolved against a set of known modules:

- ``import a.b.c`` names ``a.b.c``;
- ``from a.b import c`` names ``a.b.c`` when that is a known module (``c`` is a
  submodule), otherwise the module ``a.b`` itself when it is known, otherwise
  (a module outside the scanned tree: stdlib, third party) the dotted ``a.b.c`` so
  that callers can match ``os.path`` or ``hypothesis.internal`` by prefix;
- relative imports are made absolute first.
"""

from __future__ import annotations

import ast
import dataclasses
import pathlib
from collections.abc import Iterator

REPO = pathlib.Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Imported:
    name: str  # the resolved module (or dotted name outside the known modules)
    line: int


def module_files(src: pathlib.Path, package: str) -> dict[str, pathlib.Path]:
    """Every module of ``package`` found under ``src`` (``src/package/**.py``), by
    dotted name; a package's ``__init__.py`` is the package's own name."""
    found: dict[str, pathlib.Path] = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _statements(nodes: list[ast.AST], type_checking: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            if type_checking:
                yield from _statements(list(node.body), type_checking)
            yield from _statements(list(node.orelse), type_checking)
        else:
            yield from _statements(list(ast.iter_child_nodes(node)), type_checking)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    if node.level > 1:
        parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, *([node.module] if node.module else [])])


def imports(
    path: pathlib.Path,
    module: str,
    known: set[str] | dict[str, pathlib.Path],
    *,
    type_checking: bool,
) -> list[Imported]:
    """What ``path`` (the module ``module``) imports; see the module docstring."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[Imported] = []
    for node in _statements([tree], type_checking):
        if isinstance(node, ast.Import):
            found.extend(Imported(alias.name, node.lineno) for alias in node.names)
            continue
        base = _absolute(node, module, is_package)
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            if alias.name != "*" and candidate in known:
                found.append(Imported(candidate, node.lineno))
            elif base in known or alias.name == "*":
                found.append(Imported(base, node.lineno))
            else:
                found.append(Imported(candidate, node.lineno))
    return found


def under(name: str, prefix: str) -> bool:
    """``name`` is ``prefix`` or inside it (``os.path`` is under ``os``)."""
    return name == prefix or name.startswith(prefix + ".")
