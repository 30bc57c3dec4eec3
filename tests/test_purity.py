"""The core does no I/O (docs/explanation/architecture.md, rule 1), and neither do
the backends' pure modules (rendering, reading back, interpreting).

Every module of svcnet is named here as pure or as doing I/O; a pure module may import
only other pure modules of svcnet, a short list of pure standard-library modules and
attrs, pyrsistent and yaml, and calls none of the builtins that do I/O. Imports are
read from the source (tests/importscan.py): module level, inside functions and under
``if TYPE_CHECKING:`` alike (the pure core does not name the I/O layers even for
types). A module named here that is missing fails (it was moved: update the list).
"""

from __future__ import annotations

import ast
import fnmatch
import pathlib

import pytest
from importscan import REPO, imports, module_files, under

SVCNET = module_files(REPO, "svcnet")

# The pure modules by name. Packages whose every module is pure are globbed (a new
# module in them is checked without being listed); the modules listed must exist.
PURE = [
    "svcnet",  # its __init__ runs before any svcnet module: it must stay pure too
    "svcnet._version",
    "svcnet._deprecation",  # pure modules may use it when a public name moves
    "svcnet._gc",  # pauses the garbage collector around large builds (no I/O)
    "svcnet.model",
    "svcnet.errors",
    "svcnet.lint",
    "svcnet.probe",
    "svcnet.probes",  # the probe space (svcnet audit, the harness), without Hypothesis
    "svcnet.backend",
    "svcnet.semantics",
    "svcnet.manifests",
    "svcnet.manifests.*",
    "svcnet.state",
    "svcnet.state.*",
    "svcnet.plan",
    "svcnet.plan.*",
    "svcnet.dns",  # runs before svcnet.dns.records
    "svcnet.dns.records",
    "svcnet.workloads",
    "svcnet.workloads.*",
    "svcnet.audit",  # svcnet audit: compare, the by-design table, the layouts' readers
    "svcnet.audit.*",
]
EXPECTED = [
    "svcnet.manifests.parse",
    "svcnet.manifests.write",
    "svcnet.state.cluster",
    "svcnet.state.selectors",
    "svcnet.state.endpoints",
    "svcnet.state.allocation",  # a module or a package: either way it must be there
    "svcnet.plan.types",
    "svcnet.plan.compiler",
    "svcnet.plan.text",
]
# The modules that do I/O: a pure module imports none of them.
IO = [
    "svcnet.__main__",
    "svcnet.agent",
    "svcnet.agent.*",
    "svcnet.cli",
    "svcnet.cli.*",
    "svcnet.dns.server",
    "svcnet.kernel",
    "svcnet.kernel.*",
    "svcnet.lab",
    "svcnet.lab.*",
    "svcnet.scenario",
    "svcnet.scenario.*",
    "svcnet.store",
    "svcnet.testing",
    "svcnet.testing.*",
]

ALLOWED_THIRD_PARTY = ["attrs", "pyrsistent", "yaml"]
# Standard-library modules known to do no I/O. Anything else a pure module imports
# fails: if it is pure, add it here.
PURE_STDLIB = [
    "__future__",
    "abc",
    "base64",
    "binascii",
    "bisect",
    "collections",
    "contextlib",
    "copy",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "enum",
    "fractions",
    "functools",
    "graphlib",
    "hashlib",
    "heapq",
    "ipaddress",
    "itertools",
    "json",
    "math",
    "numbers",
    "operator",
    "re",
    "reprlib",
    "shlex",
    "statistics",
    "string",
    "struct",
    "textwrap",
    "types",
    "typing",
    "unicodedata",
    "weakref",
    "gc",  # the compiler pauses the collector while it builds big plans: no I/O
]
# Standard-library modules that do I/O (named to make the failure plain).
IO_STDLIB = [
    "asyncio",
    "atexit",
    "ctypes",
    "fcntl",
    "glob",
    "http",
    "importlib",
    "io",
    "logging",
    "mmap",
    "multiprocessing",
    "os",
    "pathlib",
    "queue",
    "select",
    "selectors",
    "shutil",
    "signal",
    "socket",
    "socketserver",
    "sqlite3",
    "ssl",
    "subprocess",
    "sys",
    "tempfile",
    "threading",
    "time",
    "urllib",
    "warnings",
]
# A pure module's stated exceptions: (module, import) -> why.
EXEMPT = {
    ("svcnet.backend", "importlib.metadata"): (
        "plug-in loading: load_backend/available_backends read the installed "
        "distributions' svcnet.backends entry points, and only when called"
    ),
    ("svcnet._deprecation", "importlib"): (
        "an old public name resolves its new path (a svcnet module) only when used"
    ),
    ("svcnet._deprecation", "warnings"): "the DeprecationWarning an old name raises",
    ("svcnet.audit.readers", "svcnet_iptables"): "audit walks rules with its pure interpret",
    ("svcnet.audit.readers", "svcnet_nftables"): "audit walks rules with its pure interpret",
    ("svcnet.audit.kubenft", "svcnet_nftables"): "audit walks rules with its pure interpret",
}
IO_BUILTINS = {"open", "print", "input", "breakpoint", "exec", "eval", "__import__"}


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


PURE_MODULES = sorted(name for name in SVCNET if _matches(name, PURE))


def _external_problems(imported: str, module: str, *, allowed: list[str]) -> str | None:
    if (module, imported) in EXEMPT or any(m == module and under(imported, i) for (m, i) in EXEMPT):
        return None
    if any(under(imported, a) for a in [*PURE_STDLIB, *allowed]):
        return None
    if any(under(imported, m) for m in IO_STDLIB):
        return f"the I/O module {imported}"
    return f"{imported}, which is not on the pure list (tests/test_purity.py)"


def _io_builtin_calls(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [
        f"{node.func.id}() on line {node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in IO_BUILTINS
    ]


@pytest.mark.parametrize("name", sorted({p for p in PURE if "*" not in p} | set(EXPECTED)))
def test_named_pure_module_exists(name: str) -> None:
    assert name in SVCNET, (
        f"{name} is named pure but no svcnet/{name[len('svcnet.') :].replace('.', '/')}"
        "(.py|/__init__.py) exists: if it moved, update tests/test_purity.py"
    )


def test_every_svcnet_module_is_classified() -> None:
    unclassified = sorted(n for n in SVCNET if not _matches(n, PURE) and not _matches(n, IO))
    assert not unclassified, (
        f"{unclassified}: name each as pure (PURE) or doing I/O (IO) in tests/test_purity.py"
    )
    both = sorted(n for n in SVCNET if _matches(n, PURE) and _matches(n, IO))
    assert not both, f"{both} are named both pure and I/O"


@pytest.mark.parametrize("name", PURE_MODULES)
def test_core_module_does_no_io(name: str) -> None:
    path = SVCNET[name]
    problems = []
    for imp in imports(path, name, SVCNET, type_checking=True):
        if under(imp.name, "svcnet"):
            if imp.name not in SVCNET:
                problems.append(f"line {imp.line}: {imp.name}, which is not a svcnet module")
            elif imp.name not in PURE_MODULES:
                problems.append(f"line {imp.line}: {imp.name}, which does I/O")
        else:
            problem = _external_problems(imp.name, name, allowed=ALLOWED_THIRD_PARTY)
            if problem:
                problems.append(f"line {imp.line}: {problem}")
    problems += [f"calls {call}" for call in _io_builtin_calls(path)]
    rel = path.relative_to(REPO)
    assert not problems, f"{rel} is pure but imports:\n  " + "\n  ".join(problems)


# --- backends ------------------------------------------------------------------------

# The backend contract: the svcnet modules a backend may import
# (docs/explanation/architecture.md); the kernel module only from a backend's I/O modules.
CONTRACT = ["svcnet.backend", "svcnet.errors", "svcnet.model", "svcnet.plan", "svcnet.probe"]
CONTRACT_IO = ["svcnet.kernel", "svcnet.kernel.*"]
BACKENDS = {
    "svcnet_memory": REPO / "backends/memory/src",
    "svcnet_nftables": REPO / "backends/nftables/src",
    "svcnet_iptables": REPO / "backends/iptables/src",
}
# Each backend's pure modules (the memory backend is pure through and through); the
# rest of a package (its Backend class, its kernel I/O modules) may do I/O.
BACKEND_PURE = {
    "svcnet_memory": ["svcnet_memory", "svcnet_memory.*"],
    "svcnet_nftables": [
        "svcnet_nftables.render",
        "svcnet_nftables.readback",
        "svcnet_nftables.interpret",
        "svcnet_nftables.observed",
        "svcnet_nftables.nlread",
        "svcnet_nftables.nlrules",
    ],
    "svcnet_iptables": [
        "svcnet_iptables.render",
        "svcnet_iptables.sync",
        "svcnet_iptables.readback",
        "svcnet_iptables.interpret",
        "svcnet_iptables.observed",
        "svcnet_iptables.tree",
    ],
}
BACKEND_MODULES = {pkg: module_files(src, pkg) for pkg, src in BACKENDS.items()}


def _backend_pure(pkg: str) -> list[str]:
    return sorted(n for n in BACKEND_MODULES[pkg] if _matches(n, BACKEND_PURE[pkg]))


@pytest.mark.parametrize("name", [n for pkg in BACKENDS for n in BACKEND_PURE[pkg] if "*" not in n])
def test_named_backend_pure_module_exists(name: str) -> None:
    pkg = name.split(".")[0]
    assert name in BACKEND_MODULES[pkg], (
        f"{name} is named pure but is not in {BACKENDS[pkg].relative_to(REPO)}: "
        "if it moved, update tests/test_purity.py"
    )


@pytest.mark.parametrize("name", [n for pkg in BACKENDS for n in _backend_pure(pkg)])
def test_backend_pure_module_does_no_io(name: str) -> None:
    pkg = name.split(".")[0]
    path = BACKEND_MODULES[pkg][name]
    pure_siblings = _backend_pure(pkg)
    problems = []
    for imp in imports(path, name, {**SVCNET, **BACKEND_MODULES[pkg]}, type_checking=True):
        if under(imp.name, pkg):
            if imp.name not in pure_siblings:
                problems.append(f"line {imp.line}: {imp.name}, which does I/O")
        elif under(imp.name, "svcnet"):
            if imp.name not in CONTRACT:
                problems.append(
                    f"line {imp.line}: {imp.name} (a pure backend module uses only "
                    f"{', '.join(CONTRACT)})"
                )
        else:
            problem = _external_problems(imp.name, name, allowed=["attrs", "pyrsistent"])
            if problem:
                problems.append(f"line {imp.line}: {problem}")
    problems += [f"calls {call}" for call in _io_builtin_calls(path)]
    rel = path.relative_to(REPO)
    assert not problems, f"{rel} is pure but imports:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("name", [n for mods in BACKEND_MODULES.values() for n in mods])
def test_backend_imports_only_the_contract(name: str) -> None:
    pkg = name.split(".")[0]
    path = BACKEND_MODULES[pkg][name]
    outside = sorted(
        f"line {imp.line}: {imp.name}"
        for imp in imports(path, name, {**SVCNET, **BACKEND_MODULES[pkg]}, type_checking=True)
        if under(imp.name, "svcnet") and not _matches(imp.name, [*CONTRACT, *CONTRACT_IO])
    )
    assert not outside, (
        f"{path.relative_to(REPO)} reaches past the backend contract "
        f"({', '.join(CONTRACT)}, svcnet.kernel):\n  " + "\n  ".join(outside)
    )


def test_backend_packages_found() -> None:
    for pkg, src in BACKENDS.items():
        assert pkg in BACKEND_MODULES[pkg], f"{src / pkg}/__init__.py is missing"
