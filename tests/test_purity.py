"""The core does no I/O (DESIGN.md, convention 1): its modules import only the
standard library's pure parts and a few pure dependencies."""

from __future__ import annotations

import ast
import pathlib

import pytest

CORE = [
    "model", "manifests", "selectors", "allocation", "state", "endpoints",
    "plan", "probe", "semantics", "dns", "backend", "errors",
]
ALLOWED_THIRD_PARTY = {"attrs", "pyrsistent", "yaml"}
FORBIDDEN_STDLIB = {
    "os", "subprocess", "socket", "shutil", "pathlib", "io", "sqlite3", "threading",
    "asyncio", "ctypes", "tempfile", "select", "signal", "urllib", "http", "time",
}
ROOT = pathlib.Path(__file__).resolve().parent.parent / "svcnet"


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", CORE)
def test_core_module_does_no_io(module: str) -> None:
    path = ROOT / f"{module}.py"
    if not path.exists():
        pytest.skip(f"svcnet/{module}.py does not exist yet")
    imported = _imports(path)
    bad = imported & FORBIDDEN_STDLIB
    assert not bad, f"svcnet/{module}.py imports I/O modules {sorted(bad)}"
    import sys

    third = {m for m in imported if m not in sys.stdlib_module_names and m != "svcnet"}
    extra = sorted(third - ALLOWED_THIRD_PARTY)
    assert not extra, f"svcnet/{module}.py imports {extra}"
