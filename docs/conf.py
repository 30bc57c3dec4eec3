"""Sphinx configuration: the Python API reference, generated from the docstrings.

Why Sphinx (autodoc + MyST): svcnet's docstrings are reStructuredText with Sphinx
cross-reference roles (``:class:``, ``:func:``, ``:mod:``), which autodoc reads as
they are; MyST lets the pages stay Markdown like the rest of docs/. Both are
long-lived, widely used projects. Build: ``nox -s docs`` (warnings are errors; the
HTML goes to ``build/docs/html``, ignored by git).

Only the API reference is built (``index.md`` and ``reference/python/``); the other
pages of docs/ are read on GitHub as Markdown.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # document the checkout, whatever is installed

from svcnet import __version__  # noqa: E402

project = "svcnet"
author = "the svcnet authors"
copyright = "the svcnet authors, Apache-2.0"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
root_doc = "index"
include_patterns = ["index.md", "reference/python/*.md"]
exclude_patterns: list[str] = []

myst_heading_anchors = 3

autodoc_default_options = {
    "members": True,
    "undoc-members": True,
    "member-order": "bysource",
}
autodoc_typehints = "signature"
# Annotations stay as written (``from __future__ import annotations``), so a type
# that is only imported under TYPE_CHECKING does not break the build.
autodoc_type_aliases: dict[str, str] = {}
nitpicky = False
# The builtin ``type`` in signatures (``type[Backend]``) is looked up as a Python
# object and matches every model attribute named ``type`` (Service.type,
# PodCondition.type, DeploymentStrategy.type): an ambiguity, not a broken link.
# Only that warning (``ref.python``: "more than one target found") is silenced.
suppress_warnings = ["ref.python"]

html_theme = "alabaster"
html_title = f"svcnet {release} API reference"
