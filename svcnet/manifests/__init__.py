"""Kubernetes manifests to model objects and back; errors name object, field and value.

:mod:`svcnet.manifests.parse` reads and validates documents (with the field rules of
:mod:`svcnet.manifests.fields`); :mod:`svcnet.manifests.write` writes values back.
"""

from __future__ import annotations

from svcnet.manifests.parse import load, load_documents, parse_key, parse_object
from svcnet.manifests.write import API_VERSIONS, as_applied, to_manifest

__all__ = [
    "API_VERSIONS",
    "as_applied",
    "load",
    "load_documents",
    "parse_key",
    "parse_object",
    "to_manifest",
]
