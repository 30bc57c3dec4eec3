"""``svcnet backends`` and ``svcnet scenario run`` (I/O): which data planes are
installed, and scenario files run on one of them."""

from __future__ import annotations

import os
from collections.abc import Sequence

import click

from svcnet.backend import available_backends, load_backend
from svcnet.cli.common import CliError, SvcnetGroup, backend_class, backend_factory
from svcnet.scenario import (
    format_report,
    packaged_scenarios,
    results_to_json,
    run_files,
    totals,
)

__all__ = ["COMMANDS", "backends_cmd", "scenario_group"]


@click.command("backends")
def backends_cmd() -> None:
    """List the installed backends and whether each needs root."""
    names = available_backends()
    if not names:
        click.echo("no backends installed (pip install svcnet-memory)")
        return
    width = max(len(n) for n in names)
    for name in names:
        try:
            cls = load_backend(name)
        except Exception as e:  # a broken plug-in must not hide the others
            click.echo(f"{name:<{width}}  cannot be loaded: {type(e).__name__}: {e}")
            continue
        root = "needs root (kernel)" if cls.capabilities.kernel else "no root needed"
        click.echo(f"{name:<{width}}  {root}")


@click.group("scenario", cls=SvcnetGroup)
def scenario_group() -> None:
    """Scenario files: backend-neutral statements of Service behaviour."""


@scenario_group.command("run")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option(
    "--backend",
    "backend_name",
    default="memory",
    show_default=True,
    metavar="NAME",
    help="Installed backend to run on (see `svcnet backends`).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of text.")
@click.option(
    "--traffic",
    is_flag=True,
    help="Also send every probe as real packets in a lab (root, kernel backend).",
)
def scenario_run(files: Sequence[str], backend_name: str, as_json: bool, traffic: bool) -> None:
    """Run scenario FILEs on a backend (no FILE: every scenario file shipped with
    svcnet); exit 1 when an expectation fails."""
    cls = backend_class(backend_name)
    if not files:
        files = [str(p) for p in packaged_scenarios()]
    if traffic:
        if not cls.capabilities.kernel:
            raise CliError(f"--traffic needs a kernel backend; {backend_name!r} is not one")
        if os.geteuid() != 0:
            raise CliError("--traffic needs root (it builds network namespaces)")
    with backend_factory(cls) as make:
        if traffic:
            # The lab is the scenario runner's traffic hook; the runner never imports it.
            from svcnet.lab.traffic import traffic_checker

            with traffic_checker(cls) as checker:
                results = run_files(files, make, checker)
        else:
            results = run_files(files, make)
    click.echo(results_to_json(results) if as_json else format_report(results))
    if totals(results)[1]:
        click.get_current_context().exit(1)


COMMANDS: tuple[click.Command, ...] = (backends_cmd, scenario_group)
