"""``svcnet lint`` (I/O: reading the files): what manifests will do that people rarely
intend, before they are applied. No root, no kernel, no store: the work is
:func:`svcnet.lint.lint`'s; the codes are in docs/reference/lint.md.

Files are read as ``svcnet apply -f`` reads them (FILE, DIR or ``-``). A document that
cannot be read, or an object the parser refuses, is an error finding of its own; the
other objects are still linted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import click
import yaml

from svcnet import manifests
from svcnet.cli.objects import _config_from_file, _files, filename_option
from svcnet.errors import ManifestError, ValidationError
from svcnet.lint import Finding, lint, refusal, sort_findings
from svcnet.manifests.fastload import documents
from svcnet.model import ClusterConfig, KubeObject

__all__ = ["COMMANDS", "lint_cmd", "read_for_lint"]


def _unreadable(error: ManifestError, name: str) -> Finding:
    """The finding of a document that cannot be read: its object is the file (with the
    line or document number the error gives), the message the rest of the error."""
    text = str(error)
    where = re.match(re.escape(name) + r"(:\d+)?: ", text)
    if where is None:
        return Finding("error", "manifest", name, "", text)
    return Finding("error", "manifest", where[0][:-2], "", text[where.end() :])


def read_for_lint(
    paths: Sequence[str], config: ClusterConfig
) -> tuple[list[KubeObject], list[Finding]]:
    """The objects of ``paths`` and a finding for each document that could not be read
    or object the parser refused. A file with such a document is read again one
    document at a time, so that its other objects are kept."""
    objects: list[KubeObject] = []
    found: list[Finding] = []
    for text, name in _files(paths):
        try:
            objects += manifests.load(text, filename=name)
            continue
        except (ManifestError, ValidationError) as e:
            failed = e
        try:
            docs = [d for d in documents(text) if d is not None]
        except (yaml.YAMLError, ValueError, RecursionError) as e:  # no documents to tell apart
            unread = failed if isinstance(failed, ManifestError) else ManifestError(f"{name}: {e}")
            found.append(_unreadable(unread, name))
            continue
        for i, doc in enumerate(docs):
            where = f"{name}: document {i + 1}"
            try:
                objects += manifests.load(doc, filename=name)
            except ValidationError as e:
                found.append(refusal(e, config))
            except ManifestError as e:  # it says "document 1": the one it was given
                message = str(e).replace(f"{name}: document 1", where, 1)
                found.append(_unreadable(ManifestError(message), where))
    return objects, found


@click.command("lint")
@click.argument(
    "paths", nargs=-1, metavar="[FILES]...", type=click.Path(exists=True, allow_dash=True)
)
@filename_option
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    help="The cluster's configuration: a scenario-style `config` document (or a "
    "scenario file); default: svcnet's defaults.",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="One line per finding, or a JSON list.",
)
def lint_cmd(
    paths: Sequence[str], files: Sequence[str], config_file: str | None, output: str
) -> None:
    """Lint manifests: what FILEs' objects will do that people rarely intend.

    Run it before applying them: no root, no kernel, no store. One line per finding
    (``-o json``: a list); exit 1 when there is an error, 0 for warnings only."""
    every = [*files, *paths]
    if not every:
        raise click.UsageError("give manifests: FILE|DIR|- or -f FILE|DIR|-")
    config = ClusterConfig()
    if config_file is not None:
        config = _config_from_file(config_file, config)
    objects, found = read_for_lint(every, config)
    findings = sort_findings([*found, *lint(objects, config)])
    if output == "json":
        click.echo(json.dumps([f.to_json() for f in findings], indent=2))
    else:
        for finding in findings:
            click.echo(str(finding))
    if any(f.severity == "error" for f in findings):
        click.get_current_context().exit(1)


COMMANDS: tuple[click.Command, ...] = (lint_cmd,)
