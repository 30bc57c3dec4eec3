"""svcnet.manifests.fastload gives what PyYAML's loader gives (values, errors, lines).

The oracle is the slow path the module replaced: ``yaml.load_all(text,
Loader=YamlLoader)``, on the same text, for YAML and for JSON.
"""

from __future__ import annotations

import gc
import json
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from svcnet import manifests
from svcnet.errors import ManifestError
from svcnet.manifests import fastload
from svcnet.manifests.fastload import YamlLoader

# Plain scalars whose YAML 1.1 meaning is not a string, or nearly so.
TRICKY = [
    "on", "Off", "yes", "NO", "y", "true", "False", "null", "~", "Null", "", "0", "010",
    "0x1F", "0o17", "0b101", "-5", "+5", "1_000", "190:20:30", "1e5", "1.0e5", "1.0e+5",
    "1.5", ".5", "-.inf", ".NaN", "NaN", "Infinity", "2024-01-01", "2024-01-01T00:00:00Z",
    "=", "<<", "00", "08", "1.", "0.0", "-0", "١٢", "²", "3",
]  # fmt: skip


def slow(text: str) -> list[Any]:
    """The old path: PyYAML's own constructor over libyaml."""
    return list(yaml.load_all(text, Loader=YamlLoader))


def outcome(call: Any, text: str) -> tuple[str, Any]:
    try:
        return "ok", call(text)
    except yaml.YAMLError as e:
        return "error", f"{type(e).__name__}: {e}"


def same(text: str) -> list[Any]:
    want = outcome(slow, text)
    got = outcome(fastload.documents, text)
    assert got == want, text[:300]
    assert repr(got) == repr(want), text[:300]  # 1 vs 1.0 vs True, key order
    return got[1] if got[0] == "ok" else []


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(TRICKY)
)
keys = st.text(max_size=8) | st.sampled_from(TRICKY)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(values, min_size=1, max_size=3), st.booleans())
def test_dumped_yaml_reads_the_same(docs: list[Any], flow: bool) -> None:
    same(yaml.safe_dump_all(docs, default_flow_style=flow, allow_unicode=True))


@settings(max_examples=300, deadline=None)
@given(values, st.booleans(), st.booleans())
def test_json_reads_as_yaml_reads_it(value: Any, ascii_only: bool, compact: bool) -> None:
    seps = (",", ":") if compact else (", ", ": ")
    text = json.dumps({"v": value}, ensure_ascii=ascii_only, separators=seps)
    got = same(text)
    assert isinstance(got, list)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(TRICKY), st.sampled_from(TRICKY)), max_size=6))
def test_plain_scalars_resolve_as_pyyaml_resolves_them(pairs: list[tuple[str, str]]) -> None:
    """Unquoted keys and values, block and flow style: the implicit resolvers."""
    block = "".join(f"k{i}{k}: {v}\n- {v}\n"[: -len(f"- {v}\n")] for i, (k, v) in enumerate(pairs))
    same(block or "{}")
    same("[" + ", ".join(v for _, v in pairs) + "]")
    same("\n".join(f"- {k}" for k, _ in pairs) or "[]")


def test_duplicate_keys_are_refused_where_pyyaml_keeps_the_last() -> None:
    # PyYAML keeps the last value; svcnet refuses, as kubectl does (the line of the
    # second key): tests/test_manifest_duplicates.py has the manifest-level cases
    for text in ("a: 1\na: 2\nb: 3\n", '{"a": 1,\n "a": 2, "b": 3}'):
        assert slow(text)[0]["a"] == 2
        with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key 'a'") as e:
            fastload.documents(text)
        assert e.value.problem_mark is not None and e.value.problem_mark.line == 1


@pytest.mark.parametrize(
    "text",
    [
        "a: &x {b: 1}\nc: *x\nd: [*x, *x]\n",  # aliases share one value
        "base: &b {x: 1, y: 2}\nder:\n  <<: *b\n  y: 3\n",  # merge key
        "a: !!str 5\nb: !!float 1\nc: !!binary aGk=\nd: !!set {a, b}\n",  # explicit tags
        "a: !!timestamp 2024-01-01\nb: 2024-01-01\n",
        "? [1, 2]\n: x\n",  # a non-scalar key (PyYAML: unhashable)
        "? {a: 1}\n: x\n",
        "a: =\n",  # the value tag
        "a: b: c\n",  # syntax errors: same text, same line
        "a: 1\n  b: 2\n",
        "a: [1, 2\n",
        "x: *nope\n",
        "a: !!python/object:os.system x\n",
        '{"a": 1} trailing',
        '{"a": "\\ud83d\\ude00"}',  # JSON pairs surrogates, YAML does not
        '{"a": "\x7f"}',  # a character YAML refuses
        '{\t"a": 1}',
        "\ufeff{}",
        "---\n---\nkind: x\n...\n",
        '{"a": NaN, "b": Infinity, "c": -Infinity, "d": 1E400, "e": 1.5e+3}',
        "a: 0\nb: 00\nc: 0019\nd: 1234567890123456789012345\n",
    ],
)
def test_odd_inputs(text: str) -> None:
    got = same(text)
    if text.startswith("a: &x"):
        assert got[0]["c"] is got[0]["d"][0] is got[0]["d"][1]


def test_a_recursive_alias_is_the_value_itself() -> None:
    (want,) = slow("&a [x, *a]\n")
    (got,) = fastload.documents("&a [x, *a]\n")
    assert got[0] == want[0] == "x"
    assert got[1] is got and want[1] is want


def test_alias_bomb_is_shared_not_copied() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    text = "\n".join(lines) + "\n"
    (doc,) = fastload.documents(text)  # 10**9 leaves if copied: not compared whole
    (want,) = slow(text)
    assert list(doc) == list(want) == [f"a{i}" for i in range(9)]
    assert doc["a0"] == want["a0"] == ["x"] * 10
    for i in range(1, 9):
        assert len(doc[f"a{i}"]) == 10
        assert all(item is doc[f"a{i - 1}"] for item in doc[f"a{i}"])


def test_deep_nesting_is_a_manifest_error() -> None:
    for text in ("[" * 100_000, "a:\n" + "".join(" " * i + "- \n" for i in range(1, 3000))):
        with pytest.raises(ManifestError):
            manifests.load(text)


def test_errors_keep_file_and_line() -> None:
    with pytest.raises(ManifestError, match=r"^f\.yaml:3: "):
        manifests.load("kind: Service\nmetadata: {}\n  bad: [\n", filename="f.yaml")
    with pytest.raises(ManifestError, match=r"^f\.json:2: "):
        manifests.load('{"kind": "Service",\n "x": [1, 2}', filename="f.json")


def test_collector_is_running_again_after_a_large_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastload, "GC_PAUSE_CHARS", 10_000)
    assert gc.isenabled()
    big = [{"kind": "Service", "metadata": {"name": f"s{i}"}} for i in range(2_000)]
    for text in (json.dumps(big), yaml.safe_dump_all(big)):
        assert len(text) >= fastload.GC_PAUSE_CHARS
        assert fastload.documents(text) == (slow(text) if text[0] != "[" else [big])
        assert gc.isenabled()
        with pytest.raises(yaml.YAMLError):
            fastload.yaml_documents(text + "\n: : [\n")
        assert gc.isenabled()


def _services(n: int) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"s{i}", "namespace": "default", "labels": {"app": f"a{i}"}},
            "spec": {
                "selector": {"app": f"a{i}"},
                "ports": [{"port": 80 + i % 3, "name": "web"}],
                "type": ["ClusterIP", "NodePort"][i % 2],
                "sessionAffinity": "ClientIP" if i % 5 == 0 else None,
            },
        }
        for i in range(n)
    ]


def test_load_gives_the_same_objects_from_yaml_json_and_dicts() -> None:
    docs = _services(300)
    want = manifests.load(docs)
    as_list = {"apiVersion": "v1", "kind": "List", "items": docs}
    assert manifests.load(json.dumps(as_list, indent=2)) == want
    assert manifests.load(yaml.safe_dump_all(docs)) == want
    assert manifests.load(yaml.safe_dump(as_list)) == want


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a: !!bool foo\n", 1),  # PyYAML's constructor: KeyError
        ("kind: Service\na: [1, !!timestamp junk]\n", 2),  # AttributeError
        ("a: !!set {x: 1}\nb: !!bool maybe\n", 1),  # PyYAML's path: the document
    ],
)
def test_bad_explicit_tags_are_manifest_errors(text: str, line: int) -> None:
    """PyYAML's constructor lets Python errors out on these (a traceback before)."""
    with pytest.raises(ManifestError, match=rf"^f\.yaml:{line}: "):
        manifests.load(text, filename="f.yaml")
