"""Fault injection: fuzzed manifests and scenario files raise only svcnet's errors.

Inputs: the demo fixture manifests (tests/fixtures/demo) and scenario files (svcnet/scenarios)
with random text mutations (characters and YAML tokens inserted, deleted,
replaced, lines duplicated), deep nesting, huge maps, YAML aliases, non-UTF-8
bytes, and parsed documents with random values put at random places. The only
exceptions allowed are :class:`~svcnet.errors.SvcnetError` and its subclasses
(``ManifestError``, ``ScenarioError``...), never a ``KeyError``, ``TypeError``,
``RecursionError``, ``UnicodeDecodeError``... The worst-case times of the large
inputs are benchmark figures (bench/bench_faults.py), not asserted here.
"""

from __future__ import annotations

import contextlib
import copy
import pathlib
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import svcnet
from svcnet.errors import SvcnetError
from svcnet.scenario import load_scenario, parse_scenario, run_files

ROOT = pathlib.Path(__file__).resolve().parents[2]
MANIFESTS = [p.read_text() for p in sorted((ROOT / "tests" / "fixtures" / "demo").glob("*.yaml"))]
SCENARIOS = [p.read_text() for p in sorted((ROOT / "svcnet" / "scenarios").glob("*.yaml"))[:40]]

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOKENS = [
    ":",
    ": ",
    "- ",
    "-",
    "{",
    "}",
    "[",
    "]",
    ",",
    "&a ",
    "*a",
    "<<: *a",
    "!!python/object ",
    "!!binary ",
    "!!int ",
    "!!map ",
    "!!set ",
    "? ",
    "|",
    ">",
    "'",
    '"',
    "\t",
    "\n",
    "\n  ",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "#",
    "~",
    "null",
    "true",
    "0x1F",
    "1e999",
    "-1",
    "99999999999999999999999",
    "010",
    ".nan",
    "2001-12-14",
    "None",
    "\x00",
    "\ufeff",
    "\udcff",
    "\u2028",
    "kind: List\nitems:\n",
    "apiVersion: v1\n",
    "kind: Service\n",
    "ports: []",
    "selector: {}",
    "labels: [a]",
    "clusterIP: None",
    "port: 0",
]
fragments = st.one_of(st.sampled_from(TOKENS), st.text(max_size=8))


@st.composite
def mutated(draw: st.DrawFn, corpus: list[str]) -> str:
    """One of ``corpus`` with 1 to 6 random edits."""
    text = draw(st.sampled_from(corpus))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "dup-line", "cut"]))
        if op == "insert":
            text = text[:pos] + draw(fragments) + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 20)) :]
        elif op == "replace":
            text = text[:pos] + draw(fragments) + text[pos + draw(st.integers(1, 10)) :]
        elif op == "dup-line":
            start = text.rfind("\n", 0, pos) + 1
            end = text.find("\n", pos)
            end = len(text) if end < 0 else end + 1
            text = text[:end] + text[start:end] + text[end:]
        else:
            text = text[:pos]
    return text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def poked(draw: st.DrawFn, corpus: list[str]) -> Any:
    """A parsed document of ``corpus`` with a random value put at a random place."""
    docs = [d for d in yaml.safe_load_all(draw(st.sampled_from(corpus))) if d is not None]
    doc = copy.deepcopy(draw(st.sampled_from(docs)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        value = draw(json_values)
        if not path:
            doc = value
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = value
    return doc


def nested(depth: int, flow: str) -> str:
    """A value nested ``depth`` deep: ``[[[...]]]``, ``{a: {a: ...}}`` or block maps."""
    if flow == "list":
        return "[" * depth + "]" * depth
    if flow == "map":
        return "{a: " * depth + "1" + "}" * depth
    return "".join("  " * i + "a:\n" for i in range(depth)) + "  " * depth + "b"


def alias_bomb(levels: int) -> str:
    """Each level a list of ten aliases of the one before: 10**levels leaves."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def only_svcnet_errors(call: Any, *args: Any) -> None:
    """Call; a svcnet error is a fine outcome, any other exception fails the test."""
    with contextlib.suppress(SvcnetError):
        call(*args)


# -- manifests ---------------------------------------------------------------------------


@FUZZ
@given(mutated(MANIFESTS))
def test_mutated_manifest_text(text: str) -> None:
    only_svcnet_errors(svcnet.load, text)


@FUZZ
@given(poked(MANIFESTS))
def test_manifests_with_random_values(doc: Any) -> None:
    only_svcnet_errors(svcnet.load, doc)
    assume(isinstance(doc, dict))
    only_svcnet_errors(svcnet.load, [doc, doc])


@settings(max_examples=20, deadline=None)
@given(st.binary(min_size=1, max_size=400))
def test_non_utf8_manifest_bytes(data: bytes) -> None:
    only_svcnet_errors(svcnet.load, data)  # bytes are not text: refused
    only_svcnet_errors(svcnet.load, data.decode("utf-8", "surrogateescape"))
    only_svcnet_errors(svcnet.load, data.decode("latin-1"))


LARGE = [
    *(
        f"{kind}: {nested(depth, shape)}"
        for kind in ("metadata", "spec")
        for depth in (100, 5_000, 100_000)
        for shape in ("list", "map")
    ),
    nested(2_000, "block"),
    "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n  labels: " + nested(50_000, "map"),
    "apiVersion: v1\nkind: List\nitems: " + nested(50_000, "list"),
    "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: " + alias_bomb(6),
    "apiVersion: v1\nkind: Service\nmetadata: {name: s, labels: &l {a: b}}\nspec:\n"
    "  selector: *l\n  ports: [{port: 80}]\n" + alias_bomb(7).replace("a0:", "x0:", 1),
    "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n  labels: {"
    + ", ".join(f"k{i}: v{i}" for i in range(50_000))
    + "}\nspec: {ports: [{port: 80}]}\n",
    "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n  labels: {"
    + ", ".join(f"k{i}: [{i}]" for i in range(20_000))
    + "}\n",
    "\n".join(
        f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}}}\n"
        "spec: {ports: [{port: 80}]}"
        for i in range(2_000)
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(LARGE)))
def test_deep_and_huge_manifests(index: int) -> None:
    only_svcnet_errors(svcnet.load, LARGE[index])


# -- scenario files -------------------------------------------------------------------------


@FUZZ
@given(mutated(SCENARIOS))
def test_mutated_scenario_text(text: str) -> None:
    only_svcnet_errors(parse_scenario, text, "fuzz.yaml")


@FUZZ
@given(poked(SCENARIOS))
def test_scenarios_with_random_values(doc: Any) -> None:
    only_svcnet_errors(parse_scenario, yaml.safe_dump(doc), "fuzz.yaml")


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(LARGE)))
def test_deep_and_huge_scenarios(index: int) -> None:
    only_svcnet_errors(parse_scenario, LARGE[index], "fuzz.yaml")


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe\x00",
        b"apiVersion: svcnet/v1\nname: caf\xe9\n",
        b"\x80" * 100,
        SCENARIOS[0].encode() + b"\n# \xc3\x28\n",
        b"steps: " + nested(100_000, "list").encode(),
        b"steps: " + nested(100_000, "map").encode(),
        b"",
    ],
    ids=["bom-like", "latin-1", "continuation bytes", "bad tail", "deep list", "deep map", "empty"],
)
def test_scenario_files(tmp_path: pathlib.Path, data: bytes) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    with pytest.raises(SvcnetError) as caught:
        load_scenario(path)
    assert str(path) in str(caught.value)  # the error names the file


@settings(max_examples=20, deadline=None)
@given(st.binary(max_size=300))
def test_random_scenario_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.yaml"
    path.write_bytes(data)
    only_svcnet_errors(load_scenario, path)


def test_the_runner_reports_files_that_do_not_load(tmp_path: pathlib.Path) -> None:
    """The scenario runner (``svcnet scenario run``): each such file fails its
    expectations with the reason, and no backend is made for it."""
    paths = []
    for name, data in (("latin1", b"name: caf\xe9\n"), ("deep", b"steps: " + b"[" * 5_000)):
        paths.append(tmp_path / f"{name}.yaml")
        paths[-1].write_bytes(data)
    results = run_files(paths, lambda node: pytest.fail("no backend may be made"))
    reasons = [r.reason for res in results for r in res.results]
    assert len(results) == 2 and len(reasons) == 2
    # PyYAML says "nested too deeply" (our RecursionError catch), libyaml "nesting depth"
    assert "not UTF-8" in reasons[0] and "nest" in reasons[1]
