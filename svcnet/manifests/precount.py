"""What a manifest text asks of the ClusterIP allocator, read before it is validated.

``svcnet apply -f`` of a file that needs more ClusterIPs than the service CIDR has
free must be refused quickly: validating 70,000 Services takes seconds (~80 µs
each), YAML parsing more. :func:`claims` reads, per Service of a text, only its key
and whether it takes a dynamic ClusterIP (a :class:`~svcnet.state.room.ServiceClaim`),
and :func:`svcnet.state.room.refuse_exhausting` then refuses the batch with the
step's own error before anything is built.

* JSON text goes through the C ``json`` reader (without the loader's hooks, which
  give numbers and special floats their YAML meaning and change nothing counted).
* YAML text is scanned line by line, not parsed, and only when it is in the plain
  block style ``yaml.safe_dump`` and people write: every line a ``key:``,
  ``key: value`` or ``- item`` with plain names and values (no quotes, flow
  collections, anchors, tags, block scalars, comments or tabs). Anything else and
  the text is not counted (None): the step's own check, after validation, still
  refuses it.

The counts are lower bounds: a Service is counted only when its document says
plainly that it takes a dynamic ClusterIP of the cluster's primary family (no
``clusterIP``, ``clusterIPs``, ``ipFamilies`` or ``ipFamilyPolicy``, not
``ExternalName``). A file refused here would be refused by the step too; when it
has other faults as well, the exhaustion is the one reported.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from svcnet.manifests.fields import dns1035_label_error, dns1123_label_error
from svcnet.state.room import ServiceClaim

__all__ = ["claims", "json_claims", "yaml_claims"]

_LISTS = frozenset({"List", "ServiceList"})
# a Service field that may change what the allocator gives: the service is not counted
_NOT_PLAIN = frozenset({"clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"})
_TYPES = {"ClusterIP": True, "NodePort": True, "LoadBalancer": True, "ExternalName": False}


def claims(text: str) -> tuple[ServiceClaim, ...] | None:
    """The Services ``text`` (JSON or YAML) claims, in order; None when the quick
    reading cannot tell (the text is then left to the loader and the step)."""
    if text.lstrip()[:1] in ("{", "["):
        try:
            # the C reader without the loader's YAML-meaning hooks: they change
            # numbers and special floats, never the strings and keys counted here
            documents = json.loads(text)
        except (ValueError, RecursionError):
            return None
        return json_claims([documents])
    return yaml_claims(text)


# -- JSON: parsed documents ------------------------------------------------------------


def json_claims(documents: Iterable[Any]) -> tuple[ServiceClaim, ...] | None:
    """The claims of parsed documents (lists and ``kind: List`` items included);
    None when a Service document's name or namespace cannot be read (the loader
    refuses it with its own message)."""
    out: list[ServiceClaim] = []
    return tuple(out) if _walk(documents, out, 0) else None


def _walk(documents: Iterable[Any], out: list[ServiceClaim], depth: int) -> bool:
    for doc in documents:
        if doc is None and depth == 0:
            continue
        if isinstance(doc, list):
            if depth >= 3 or not _walk(doc, out, depth + 1):
                return False
            continue
        if not isinstance(doc, dict):
            return False
        kind = doc.get("kind")
        if kind in _LISTS:
            items = doc.get("items")
            if depth >= 3 or not isinstance(items, list) or not _walk(items, out, depth + 1):
                return False
        elif kind == "Service":
            claim = _json_service(doc)
            if claim is None:
                return False
            out.append(claim)
    return True


def _json_service(doc: dict[str, Any]) -> ServiceClaim | None:
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        return None
    names = _names(meta.get("name"), meta.get("namespace", "default"))
    if names is None:
        return None
    spec = doc.get("spec", {})
    if not isinstance(spec, dict):
        return None
    kind = spec.get("type", "ClusterIP")
    dynamic = (
        doc.get("apiVersion") == "v1"
        and _TYPES.get(kind, False) is True
        and _NOT_PLAIN.isdisjoint(spec)
    )
    return ServiceClaim(names[1], names[0], dynamic)


def _names(name: object, namespace: object) -> tuple[str, str] | None:
    """(name, namespace) when both are valid, else None (the loader refuses them)."""
    if not (isinstance(name, str) and isinstance(namespace, str) and name):
        return None
    ok = _NAMESPACES.get(namespace)
    if ok is None:
        ok = _NAMESPACES[namespace] = dns1123_label_error(namespace) is None
    return (name, namespace) if ok and dns1035_label_error(name) is None else None


_NAMESPACES: dict[str, bool] = {}  # namespace -> valid (a file has few)


# -- YAML: a scan of plain block-style text --------------------------------------------

# Any of these and the text is not plain block style (quotes, flow collections,
# anchors and aliases, tags, block scalars, directives, comments, tabs, CR, complex
# keys); nor is it with a document end marker.
_SPECIAL = tuple("\"'{}[]&*!|>%@`#\t\r?")
_WORD = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_SEPARATOR = re.compile(r"^---[ ]*\n", re.MULTILINE)
# the usual shape of a Service document (yaml.safe_dump's order, and people's)
_SHAPE = re.compile(
    rf"apiVersion: ({_WORD})\nkind: ({_WORD})\nmetadata:\n((?: +\S[^\n]*\n)+)"
    rf"spec:\n((?: +\S[^\n]*\n|-[^\n]*\n)+)"
)
_TOP = re.compile(r"^(\S[^\n]*)$", re.MULTILINE)
_TOP_ENTRY = re.compile(rf"({_WORD}):(?: +({_WORD}))? *")
_ENTRIES: dict[int, re.Pattern[str]] = {}  # by indentation: the entries of a block
# PyYAML's resolver reads these (lowercase) plain words as booleans or null
_NOT_STRINGS = frozenset({"yes", "no", "true", "false", "on", "off", "null"})


def yaml_claims(text: str) -> tuple[ServiceClaim, ...] | None:
    """The claims of a YAML text in plain block style, None for any other text."""
    if not text.endswith("\n"):
        text += "\n"
    if any(c in text for c in _SPECIAL) or text.startswith("...") or "\n..." in text:
        return None
    out: list[ServiceClaim] = []
    for doc in _SEPARATOR.split(text):
        if not doc.strip():
            continue
        found = _yaml_doc(doc)
        if found is False:
            return None
        if found is not True:
            out.append(found)
    return tuple(out)


def _yaml_doc(doc: str) -> ServiceClaim | bool:
    """A document's claim; True: not a Service (claims nothing); False: unreadable."""
    m = _SHAPE.fullmatch(doc)
    top: dict[str, str] | None
    if m is not None:
        top = {"apiVersion": m.group(1), "kind": m.group(2)}
        meta, spec = _block(m.group(3)), _block(m.group(4))
    else:
        top, blocks = _top(doc)
        if top is None:
            return False
        meta, spec = blocks.get("metadata", {}), blocks.get("spec", {})
    kind = top.get("kind")
    if kind in _LISTS or kind is None:
        return False
    if kind != "Service":
        return True
    if meta is None or spec is None:
        return False
    names = _names(meta.get("name"), meta.get("namespace", "default"))
    if names is None or names[0] in _NOT_STRINGS or names[1] in _NOT_STRINGS:
        return False
    name, namespace = names
    if not namespace[0].isalpha():
        return False  # "0123" or "1e5" may not read as a string
    dynamic = (
        top.get("apiVersion") == "v1"
        and _TYPES.get(spec.get("type", "ClusterIP"), False) is True
        and _NOT_PLAIN.isdisjoint(spec)
    )
    return ServiceClaim(namespace, name, dynamic)


def _top(doc: str) -> tuple[dict[str, str] | None, dict[str, dict[str, str] | None]]:
    """The top-level entries of a document in another order, and the blocks under
    ``metadata`` and ``spec``; (None, {}) when it is not a plain mapping."""
    top: dict[str, str] = {}
    blocks: dict[str, dict[str, str] | None] = {}
    lines = list(_TOP.finditer(doc))
    for i, line in enumerate(lines):
        entry = _TOP_ENTRY.fullmatch(line.group(1))
        if entry is None:
            if line.group(1).startswith("- ") and i:
                continue  # items of the entry above, at its own indentation
            return None, {}
        key, value = entry.group(1), entry.group(2) or ""
        if key in top:
            return None, {}  # a duplicate key: the loader's error, not ours
        top[key] = value
        if key in ("metadata", "spec"):
            end = lines[i + 1].start() if i + 1 < len(lines) else len(doc)
            body = doc[line.end() + 1 : end]
            blocks[key] = None if value or not body.strip() else _block(body)
    return top, blocks


def _block(body: str) -> dict[str, str] | None:
    """The ``key: value`` entries of an indented block mapping (its lines, at least
    one); None when it is not one."""
    indent = len(body) - len(body.lstrip(" "))
    if not indent or body[indent] == "-":
        return None
    pattern = _ENTRIES.get(indent)
    if pattern is None:
        pattern = _ENTRIES[indent] = re.compile(
            rf"^ {{{indent}}}({_WORD}):(?: +(\S*))?", re.MULTILINE
        )
    entries = pattern.findall(body)  # not the "- " items of a list under an entry
    out = dict(entries)
    return out if len(out) == len(entries) else None  # else a duplicate key
