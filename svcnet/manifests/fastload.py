"""Reading manifest text into plain Python values, fast, with PyYAML's meaning.

:func:`documents` turns YAML (or JSON) text into the list of its documents, exactly
as ``yaml.load_all(text, Loader=YamlLoader)`` does (YAML 1.1 scalars, no implicit
timestamps, the same error types and line numbers), only faster:

* **JSON** (text starting with ``{`` or ``[``, as ``kubectl apply -f x.json``
  files do) is read by the C :mod:`json` module, with hooks that give every scalar
  the value PyYAML would give it (``1e5`` is a string to YAML 1.1, as are ``NaN``
  and ``Infinity``). Text that :mod:`json` refuses (YAML flow style, a syntax
  error) goes the YAML way, so YAML's error and line number are what is reported.
* **YAML**: libyaml's parser and PyYAML's C composer build the node tree (as
  before), with a leaner resolver (the same implicit table; svcnet registers no
  path resolvers); then :func:`_construct` turns the common nodes (maps,
  sequences, strings, plain ints, bools, nulls) into values directly, skipping
  PyYAML's generator-based constructor. Any node it does not know (an explicit
  tag, a merge key, a float, a non-scalar key, ...) sends the whole document to
  PyYAML's own constructor, so rare inputs keep their exact old meaning and
  error texts.

Duplicate keys keep PyYAML's rule (the last value wins) on both paths; both see
every key in order (``_json_object``, ``_construct``), where a refusal can go.

The garbage collector is paused while a large text is turned into values: the
values hold no cycles worth collecting, and full collections over a growing heap
of fresh containers cost more than the parse (a 70,000-service file: composing
nodes took 19.8 s with the collector, 6.4 s without).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from svcnet import _gc

__all__ = ["YamlLoader", "documents", "json_documents", "yaml_documents"]

# libyaml's parser when PyYAML was built with it (about 6x faster on big files);
# construction and resolution stay PyYAML's safe ones either way.
_SafeBase: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlLoader(_SafeBase):  # type: ignore[valid-type,misc]
    """A safe loader without implicit timestamps: ``2024-01-01`` stays a string."""


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"
_INT = "tag:yaml.org,2002:int"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_BOOLS = YamlLoader.bool_values
# Texts at least this long are parsed with the collector paused (a small file gains
# nothing from it).
GC_PAUSE_CHARS = 1 << 20


class _FastLoader(YamlLoader):
    """:class:`YamlLoader` with a resolver that skips the path-resolver bookkeeping
    (svcnet registers no path resolvers, so tags come out the same)."""

    _implicit: dict[str | None, list[tuple[str, re.Pattern[str]]]] = (
        YamlLoader.yaml_implicit_resolvers
    )

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None

    def resolve(self, kind: type[Node], value: Any, implicit: Any) -> str:
        if kind is ScalarNode:
            if implicit[0]:
                for tag, regexp in self._implicit.get(value[:1], ()):
                    if regexp.match(value):
                        return tag
            return _STR
        return _SEQ if kind is SequenceNode else _MAP


assert not YamlLoader.yaml_path_resolvers, "the fast resolver assumes no path resolvers"
assert not YamlLoader.yaml_implicit_resolvers.get(None), "and no wildcard resolvers"


def _refused(node: Node, what: str) -> yaml.constructor.ConstructorError:
    """The error for an explicitly tagged scalar that is not what its tag says
    (PyYAML's constructor raises KeyError or AttributeError there)."""
    return yaml.constructor.ConstructorError(
        None, None, f"{node.value!r} is not {what} ({node.tag})", node.start_mark
    )


class _Unknown(Exception):
    """A node :func:`_construct` leaves to PyYAML's constructor."""


def _duplicate(mapping: Node, key_node: Node, key: Any) -> yaml.constructor.ConstructorError:
    """The error for a key given twice in one mapping (kubectl and the API server
    refuse such a manifest; PyYAML would keep the last value silently)."""
    return yaml.constructor.ConstructorError(
        "while constructing a mapping",
        mapping.start_mark,
        f"found duplicate key {key!r}",
        key_node.start_mark,
    )


def _check_duplicates(node: Node, seen: set[int] | None = None) -> None:
    """Refuse a scalar key given twice in any mapping under ``node`` (for the
    documents PyYAML's own constructor builds; merge keys ``<<`` are PyYAML's)."""
    seen = set() if seen is None else seen
    stack = [node]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, MappingNode):
            keys: set[tuple[str, str]] = set()
            for key_node, value_node in current.value:
                if isinstance(key_node, ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    ident = (key_node.tag, key_node.value)
                    if ident in keys:
                        raise _duplicate(current, key_node, key_node.value)
                    keys.add(ident)
                stack.append(key_node)
                stack.append(value_node)
        elif isinstance(current, SequenceNode):
            stack.extend(current.value)


def _construct(node: Node, memo: dict[int, Any]) -> Any:
    """``node`` as a value, as PyYAML's safe constructor makes it, for the common tags.

    ``memo`` maps the nodes of anchors seen twice (an alias is the same node
    object) to their value, so aliases share one value as with PyYAML and an
    alias bomb costs no more than its text. Raises :class:`_Unknown` for anything
    else."""
    tag = node.tag
    if tag == _STR:
        if type(node) is ScalarNode:
            return node.value
        raise _Unknown(tag)
    if type(node) is ScalarNode:
        value = node.value
        if tag == _INT:
            if value.isascii() and value.isdigit() and (value[0] != "0" or len(value) == 1):
                return int(value)
        elif tag == _NULL:
            return None
        elif tag == _BOOL:
            found = _BOOLS.get(value.lower())
            if found is None:
                raise _refused(node, "a boolean")
            return found
        elif tag == _TIMESTAMP and not YamlLoader.timestamp_regexp.match(value):
            raise _refused(node, "a timestamp")
        raise _Unknown(tag)
    done = memo.get(id(node))
    if done is not None:
        return done
    out: Any
    if tag == _MAP and type(node) is MappingNode:
        out = {}
        memo[id(node)] = out
        for key_node, value_node in node.value:
            if type(key_node) is not ScalarNode:
                raise _Unknown("key")
            key = _construct(key_node, memo)
            if key in out:
                raise _duplicate(node, key_node, key)
            out[key] = _construct(value_node, memo)
        return out
    if tag == _SEQ and type(node) is SequenceNode:
        out = []
        memo[id(node)] = out
        out.extend([_construct(item, memo) for item in node.value])
        return out
    raise _Unknown(tag)


def _pyyaml_construct(loader: _FastLoader, node: Node) -> Any:
    """PyYAML's constructor on one document; the few Python errors it lets out on
    odd explicit tags become a ConstructorError (a YAMLError) at the document."""
    try:
        return loader.construct_document(node)
    except (KeyError, AttributeError, TypeError, IndexError) as exc:
        raise yaml.constructor.ConstructorError(
            None, None, f"cannot construct a value: {exc!r}", node.start_mark
        ) from exc


def yaml_documents(text: str) -> list[Any]:
    """Every document of YAML ``text`` as ``yaml.load_all(text, Loader=YamlLoader)``
    gives it (PyYAML's exceptions on bad YAML)."""
    loader = _FastLoader(text)
    out: list[Any] = []
    try:
        with _gc.paused(len(text) >= GC_PAUSE_CHARS):
            while loader.check_node():
                node = loader.get_node()
                try:
                    out.append(_construct(node, {}))
                except (_Unknown, RecursionError):
                    _check_duplicates(node)
                    out.append(_pyyaml_construct(loader, node))
    finally:
        loader.dispose()
    return out


# PyYAML's (YAML 1.1) implicit float: a dot is required, an exponent needs a sign.
_YAML_FLOAT = re.compile(r"[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+][0-9]+)?")


def _json_float(text: str) -> float | str:
    return float(text) if _YAML_FLOAT.fullmatch(text) else text


class _DuplicateKey(ValueError):
    """A JSON object with a key twice: read the text as YAML, whose error names
    the line."""


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _DuplicateKey(pairs)
    return out


_json = json.JSONDecoder(
    parse_float=_json_float,
    parse_constant=str,  # NaN, Infinity, -Infinity: strings to YAML 1.1
    object_pairs_hook=_json_object,
)
_json_decode: Callable[[str, int], tuple[Any, int]] = _json.raw_decode
_WS = re.compile(r"[ \t\n\r]*")
# What PyYAML's reader refuses anywhere in a stream (yaml.reader.Reader.NON_PRINTABLE).
_NON_PRINTABLE = yaml.reader.Reader.NON_PRINTABLE
# \u escapes (JSON pairs surrogates, YAML does not), tabs, and YAML 1.1's extra line
# breaks (NEL, LS, PS: a quoted scalar folds them) read differently.
_NOT_AS_YAML = re.compile(r"\\u|[\t\x85\u2028\u2029]")


def json_documents(text: str) -> list[Any] | None:
    """The one document of JSON ``text``, as PyYAML would read it; None when the
    text is not JSON that PyYAML reads the same (the caller then reads it as YAML).

    A text with ``\\u`` escapes (JSON pairs surrogates, YAML does not), tabs, NEL,
    LS or PS (YAML folds them in quoted scalars) or a character YAML refuses goes
    to YAML too; JSON's other escapes are YAML's."""
    start = _WS.match(text)
    begin = start.end() if start else 0
    if text[begin : begin + 1] not in ("{", "["):
        return None
    if _NOT_AS_YAML.search(text) or _NON_PRINTABLE.search(text):
        # Rare in a manifest: leave these texts to YAML.
        return None
    try:
        with _gc.paused(len(text) >= GC_PAUSE_CHARS):
            value, end = _json_decode(text, begin)
    except (ValueError, RecursionError):
        return None
    rest = _WS.match(text, end)
    if rest is None or rest.end() != len(text):
        return None
    return [value]


def documents(text: str) -> list[Any]:
    """Every document of manifest ``text`` (JSON or YAML), as PyYAML reads it."""
    as_json = json_documents(text)
    return as_json if as_json is not None else yaml_documents(text)
