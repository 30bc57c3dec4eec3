"""The ``svcnet`` command (I/O lives here; the work is done by the library).

One click group, one subcommand (or subgroup) per verb. User errors — anything
svcnet raises on purpose (:class:`~svcnet.errors.SvcnetError`) — print a single
line ``error: ...`` on stderr and exit 1, never a traceback; an unknown backend
exits 2 like any other usage error. Commands that judge something (``scenario
run``) exit 1 when the verdict is negative.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import IO, Any, NoReturn

import click

from svcnet.backend import Backend, BackendFactory, available_backends, load_backend
from svcnet.errors import BackendNotFound, SvcnetError


class CliError(click.ClickException):
    """A one-line ``error: ...`` on stderr and ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        # click declares exit_code a class variable; this instance's code shadows it.
        vars(self)["exit_code"] = exit_code

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", file=file or sys.stderr, err=True)


class SvcnetGroup(click.Group):
    """A group whose commands turn SvcnetError into ``error: ...`` (exit 1)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BackendNotFound as e:
            raise CliError(str(e), exit_code=2) from e
        except SvcnetError as e:
            raise CliError(str(e)) from e


@click.group(cls=SvcnetGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="svcnet", prog_name="svcnet")
def cli() -> None:
    """Kubernetes Service networking as a library: state, plans, data planes."""


def backend_class(name: str) -> type[Backend]:
    """The installed backend ``name``; unknown -> CliError (exit 2) listing the installed."""
    try:
        return load_backend(name)
    except BackendNotFound as e:
        raise CliError(str(e), exit_code=2) from e


@contextlib.contextmanager
def backend_factory(cls: type[Backend]) -> Iterator[BackendFactory]:
    """``make_backend(node)``: plain instances, or for kernel backends one fresh
    ``svcnet-sc-*`` network namespace per node (removed on exit)."""
    if cls.capabilities.kernel:
        from svcnet.kernel import SCENARIO_PREFIX, kernel_backends

        with kernel_backends(cls, SCENARIO_PREFIX) as make:
            yield make
    else:
        yield lambda node: cls(node)


# -- svcnet backends ---------------------------------------------------------------


@cli.command("backends")
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


# -- svcnet scenario ---------------------------------------------------------------


@cli.group("scenario", cls=SvcnetGroup)
def scenario_group() -> None:
    """Scenario files: backend-neutral statements of Service behaviour."""


@scenario_group.command("run")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
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
    """Run scenario FILEs on a backend; exit 1 when an expectation fails."""
    from svcnet.scenario import format_report, results_to_json, run_files, totals

    cls = backend_class(backend_name)
    if traffic:
        if not cls.capabilities.kernel:
            raise CliError(f"--traffic needs a kernel backend; {backend_name!r} is not one")
        if os.geteuid() != 0:
            raise CliError("--traffic needs root (it builds network namespaces)")
    with backend_factory(cls) as make:
        if traffic:
            from svcnet.lab.traffic import traffic_checker

            with traffic_checker(cls) as checker:
                results = run_files(files, make, checker)
        else:
            results = run_files(files, make)
    click.echo(results_to_json(results) if as_json else format_report(results))
    if totals(results)[1]:
        click.get_current_context().exit(1)


from svcnet.cli.dns import dns as _dns_cmd  # noqa: E402  (the `svcnet dns` command)

cli.add_command(_dns_cmd)

from svcnet.cli.lab import demo, lab_group, port_forward  # noqa: E402  (lab commands)

cli.add_command(lab_group)
cli.add_command(demo)
cli.add_command(port_forward)

from svcnet.cli.objects import register as _register_objects  # noqa: E402  (store commands)

_register_objects(cli)  # --store PATH, apply, delete, get, describe, config, plan, diff, ...


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the ``svcnet`` script and ``python -m svcnet``."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="svcnet")
    raise SystemExit(0)  # click exits itself; this is for type checkers


if __name__ == "__main__":
    main()
