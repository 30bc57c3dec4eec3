"""svcnet's modules import one another without a circle, and none uses
``hypothesis.internal``.

The import graph is read from the source (tests/importscan.py): imports at module
level and inside functions (a lazy import hides a circle, it does not remove it);
imports under ``if TYPE_CHECKING:`` never run and are left out. ``from pkg import sub``
where ``sub`` is a submodule is an edge to ``pkg.sub``, not to ``pkg``: a package
``__init__`` re-exporting its submodules is not a circle by itself, while a submodule
importing names from its own package's ``__init__`` (which imports it) is one.
"""

from __future__ import annotations

import ast
import itertools
import pathlib

import pytest
from importscan import REPO, imports, module_files, under

Graph = dict[str, dict[str, int]]  # module -> imported module -> first line


def import_graph(src: pathlib.Path, package: str) -> tuple[Graph, dict[str, pathlib.Path]]:
    """The runtime import edges among the modules of ``package`` under ``src``."""
    modules = module_files(src, package)
    graph: Graph = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        for imp in imports(path, name, modules, type_checking=False):
            if imp.name in modules and imp.name != name:
                edges.setdefault(imp.name, imp.line)
        graph[name] = edges
    return graph, modules


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's components of more than one module, each sorted, in sorted order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def a_cycle(graph: Graph, component: list[str]) -> list[str]:
    """One shortest circle through the component's first module: [m, ..., m]."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v]):
            if w == start:
                return [*paths[v], start]
            if w in members and w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    raise AssertionError(f"{component} is not a circle")  # Tarjan says it is


def describe(
    graph: Graph, modules: dict[str, pathlib.Path], src: pathlib.Path, cycle: list[str]
) -> str:
    steps = [
        f"  {a} -> {b}  ({modules[a].relative_to(src)}:{graph[a][b]})"
        for a, b in itertools.pairwise(cycle)
    ]
    return " -> ".join(cycle) + "\n" + "\n".join(steps)


def circles(src: pathlib.Path, package: str) -> list[str]:
    graph, modules = import_graph(src, package)
    return [
        f"[{', '.join(c)}] reach one another, e.g. "
        + describe(graph, modules, src, a_cycle(graph, c))
        for c in strongly_connected(graph)
    ]


def test_svcnet_has_no_import_circle() -> None:
    found = circles(REPO, "svcnet")
    assert not found, f"{len(found)} import circle(s) among svcnet's modules:\n" + "\n".join(found)


def test_the_graph_sees_svcnet() -> None:
    """The scan finds the edges everyone knows are there (the circle test is not
    passing on an empty graph)."""
    graph, _ = import_graph(REPO, "svcnet")
    assert "svcnet._deprecation" in graph["svcnet"]  # its public names load lazily
    assert "svcnet.model" in graph["svcnet.state.cluster"]
    assert "svcnet.model" in graph["svcnet.probe"]
    assert "svcnet.plan" in graph["svcnet.backend"]


# --- the scanner on made-up packages ---------------------------------------------


def _package(tmp_path: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
    for rel, text in files.items():
        path = tmp_path / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_reexporting_init_is_not_a_circle(tmp_path: pathlib.Path) -> None:
    src = _package(
        tmp_path,
        {
            "__init__.py": "from pkg.sub import a\nfrom pkg.sub.types import T\n",
            "sub/__init__.py": "from pkg.sub.types import T\nfrom .impl import a\n",
            "sub/types.py": "import enum\nfrom pkg.base import B\n",
            "sub/impl.py": "from pkg.sub import types\nfrom pkg.base import B\n",
            "base.py": "X = 1\n",
        },
    )
    graph, _ = import_graph(src, "pkg")
    assert graph["pkg.sub.impl"] == {"pkg.sub.types": 1, "pkg.base": 2}
    assert graph["pkg.sub"] == {"pkg.sub.types": 1, "pkg.sub.impl": 2}
    assert circles(src, "pkg") == []


def test_submodule_importing_its_package_init_is_a_circle(tmp_path: pathlib.Path) -> None:
    src = _package(
        tmp_path,
        {
            "__init__.py": "",
            "sub/__init__.py": "from pkg.sub.impl import a\n",
            "sub/impl.py": "from pkg.sub import helper\n",
            "sub/other.py": "def helper(): pass\n",
        },
    )
    (found,) = circles(src, "pkg")
    assert found.startswith("[pkg.sub, pkg.sub.impl] reach one another, e.g. pkg.sub -> ")


def test_lazy_import_is_a_circle_but_type_checking_is_not(tmp_path: pathlib.Path) -> None:
    src = _package(
        tmp_path,
        {
            "__init__.py": "",
            "types.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from pkg.compiler import Index\n"
                "def compile():\n    from pkg.compiler import run\n    return run()\n"
            ),
            "compiler.py": "from pkg.types import Plan\n",
            "text.py": "import typing\nif typing.TYPE_CHECKING:\n    from pkg import types\n",
            "view.py": "from . import text\n",
        },
    )
    graph, _ = import_graph(src, "pkg")
    assert graph["pkg.text"] == {}
    assert graph["pkg.view"] == {"pkg.text": 1}
    (found,) = circles(src, "pkg")
    assert "pkg.compiler -> pkg.types -> pkg.compiler" in found
    assert "types.py:5" in found


# --- hypothesis.internal -------------------------------------------------------------


def _docstrings(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def internal_uses(path: pathlib.Path, module: str, known: dict[str, pathlib.Path]) -> list[str]:
    """Where ``path`` reaches into ``hypothesis.internal``: an import, a dotted
    attribute, or a string naming it (``monkeypatch.setattr("hypothesis.internal...")``)."""
    uses = [
        f"line {imp.line}: imports {imp.name}"
        for imp in imports(path, module, known, type_checking=True)
        if under(imp.name, "hypothesis.internal")
    ]
    tree = ast.parse(path.read_text())
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "internal"
            and isinstance(node.value, ast.Name)
            and node.value.id == "hypothesis"
        ):
            uses.append(f"line {node.lineno}: hypothesis.internal")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and "hypothesis.internal" in node.value
            and id(node) not in docstrings
        ):
            uses.append(f"line {node.lineno}: the string {node.value!r}")
    return uses


SVCNET = module_files(REPO, "svcnet")


@pytest.mark.parametrize("name", sorted(SVCNET))
def test_no_hypothesis_internal(name: str) -> None:
    uses = internal_uses(SVCNET[name], name, SVCNET)
    assert not uses, (
        f"{SVCNET[name].relative_to(REPO)} uses hypothesis' private API:\n  " + "\n  ".join(uses)
    )


def test_hypothesis_internal_is_found(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "m.py"
    path.write_text(
        '"""Not hypothesis.internal here."""\n'
        "import hypothesis\n"
        "from hypothesis.internal.conjecture import engine\n"
        "from hypothesis import internal\n"
        "x = hypothesis.internal\n"
        'patch = "hypothesis.internal.conjecture.engine.MAX_SHRINKING_SECONDS"\n'
    )
    assert [u.split(":")[0] for u in internal_uses(path, "m", {})] == [
        "line 3",
        "line 4",
        "line 5",
        "line 6",
    ]
