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
# the types that take a ClusterIP (not ExternalName; an unknown type is refused later)
_CLUSTER_IP_TYPES = frozenset({"ClusterIP", "NodePort", "LoadBalancer"})


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
    # One loop, the Service case inline: 70,000 documents make every call count.
    append = out.append
    for doc in documents:
        if type(doc) is dict:
            kind = doc.get("kind")
            if kind == "Service":
                meta = doc.get("metadata")
                if type(meta) is not dict:
                    return False
                names = _names(meta.get("name"), meta.get("namespace", "default"))
                spec = doc.get("spec", _NO_SPEC)
                if names is None or type(spec) is not dict:
                    return False
                dynamic = _dynamic(doc.get("apiVersion"), spec)
                append(ServiceClaim(names[1], names[0], dynamic))
            elif kind in _LISTS:
                items = doc.get("items")
                if depth >= 3 or type(items) is not list or not _walk(items, out, depth + 1):
                    return False
        elif type(doc) is list:
            if depth >= 3 or not _walk(doc, out, depth + 1):
                return False
        elif doc is not None or depth:
            return False
    return True


_NO_SPEC: dict[str, Any] = {}


def _dynamic(api_version: object, spec: dict[str, Any]) -> bool:
    """Whether a Service document plainly takes a dynamic ClusterIP of the primary
    family (see the module doc)."""
    kind = spec.get("type", "ClusterIP")
    return (
        api_version == "v1"
        and type(kind) is str  # a list or mapping here is the loader's to refuse
        and kind in _CLUSTER_IP_TYPES
        and _NOT_PLAIN.isdisjoint(spec)
    )


def _names(name: object, namespace: object) -> tuple[str, str] | None:
    """(name, namespace) when both are valid, else None (the loader refuses them)."""
    if type(name) is not str or type(namespace) is not str or not name:
        return None
    if dns1035_label_error(name) is not None:
        return None
    ok = _NAMESPACES.get(namespace)
    if ok is None:
        ok = _NAMESPACES[namespace] = dns1123_label_error(namespace) is None
    return (name, namespace) if ok else None


_NAMESPACES: dict[str, bool] = {}  # namespace -> valid (a file has few)


# -- YAML: a scan of plain block-style text --------------------------------------------

# Any of these and the text is not plain block style (quotes, flow collections,
# anchors and aliases, tags, block scalars, directives, comments, tabs, CR, complex
# keys); nor is it with a document end marker.
_SPECIAL = tuple("\"'{}[]&*!|>%@`#\t\r?")
_WORD = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
# Every key line of the text ("key:" or "key: value", any indentation), and the
# "---" separators, in order: the scan reads nothing else (list items and deeper
# lines only matter to it through their indentation, which it skips).
_KEYS = re.compile(rf"^(?:(---)[ ]*|( *)({_WORD}):(?: +(\S+))?[ ]*)$", re.MULTILINE)
# A top-level line that is neither a plain "key:"/"key: value" nor a separator.
_ODD_TOP = re.compile(rf"^(?!---[ ]*$)(?!{_WORD}:(?: +\S+)?[ ]*$)\S", re.MULTILINE)
# PyYAML's resolver reads these (lowercase) plain words as booleans or null
_NOT_STRINGS = frozenset({"yes", "no", "true", "false", "on", "off", "null"})
_BLOCKS = ("metadata", "spec")


def yaml_claims(text: str) -> tuple[ServiceClaim, ...] | None:
    """The claims of a YAML text in plain block style, None for any other text."""
    if any(c in text for c in _SPECIAL) or text.startswith("...") or "\n..." in text:
        return None
    if (text[:1] in (" ", "-") and not text.startswith("---")) or _ODD_TOP.search(text):
        return None  # a document that is not a plain mapping at the top
    out: list[ServiceClaim] = []
    top: dict[str, str] = {}
    blocks: dict[str, dict[str, str]] = {}
    block: dict[str, str] | None = None  # the entries of the top-level key we are in
    indent = 0  # its entries' indentation (0: not seen yet)
    for sep, spaces, key, value in _KEYS.findall(text):
        if sep:
            if top and not _finish(top, blocks, out):
                return None
            top, blocks, block = {}, {}, None
            continue
        if not spaces:
            if key in top:
                return None  # a duplicate key: the loader's error, not ours
            top[key] = value
            block = None
            if key in _BLOCKS:
                if value:
                    return None  # a scalar where a mapping belongs
                block = blocks[key] = {}
                indent = 0
            continue
        if block is None:
            continue
        here = len(spaces)
        if not indent:
            indent = here
        if here == indent:
            if key in block:
                return None
            block[key] = value
        elif here < indent:
            return None  # inconsistent indentation
    if top and not _finish(top, blocks, out):
        return None
    return tuple(out)


def _finish(
    top: dict[str, str], blocks: dict[str, dict[str, str]], out: list[ServiceClaim]
) -> bool:
    """Add a document's claim to ``out``; False when it cannot be read."""
    kind = top.get("kind")
    if kind is None or kind in _LISTS:
        return False
    if kind != "Service":
        return True
    meta, spec = blocks.get("metadata"), blocks.get("spec", {})
    if not meta:
        return False
    names = _names(meta.get("name"), meta.get("namespace", "default"))
    if names is None or names[0] in _NOT_STRINGS or names[1] in _NOT_STRINGS:
        return False
    name, namespace = names
    if not namespace[0].isalpha():
        return False  # "0123" or "1e5" may not read as a string
    out.append(ServiceClaim(namespace, name, _dynamic(top.get("apiVersion"), spec)))
    return True
