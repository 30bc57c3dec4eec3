"""The ``svcnet`` command (I/O lives here; the work is done by the library).

One click group, one subcommand (or subgroup) per verb. This module only builds
the group and registers, in one style, the ``COMMANDS`` of each subcommand module
(:mod:`~svcnet.cli.scenario`, :mod:`~svcnet.cli.objects`, :mod:`~svcnet.cli.rollout`,
:mod:`~svcnet.cli.plans`, :mod:`~svcnet.cli.dns`, :mod:`~svcnet.cli.lab`); those share
:mod:`svcnet.cli.common` (and :mod:`svcnet.cli.views`) and never import this
module. User errors — anything svcnet raises on purpose
(:class:`~svcnet.errors.SvcnetError`) — print a single line ``error: ...`` on
stderr and exit 1, never a traceback; an unknown backend exits 2 like any other
usage error. Commands that judge something (``scenario run``) exit 1 when the
verdict is negative.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

import click

from svcnet.cli import agent, dns, forward, lab, objects, plans, rollout, scenario
from svcnet.cli.common import SvcnetGroup, global_namespace_option, store_option

__all__ = ["SvcnetGroup", "cli", "main"]

SUBCOMMAND_MODULES = (scenario, objects, rollout, plans, dns, lab, forward, agent)


@click.group(cls=SvcnetGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="svcnet", prog_name="svcnet")
@store_option
@global_namespace_option
def cli() -> None:
    """Kubernetes Service networking as a library: state, plans, data planes."""


for _module in SUBCOMMAND_MODULES:
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the ``svcnet`` script and ``python -m svcnet``."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="svcnet")
    raise SystemExit(0)  # click exits itself; this is for type checkers


if __name__ == "__main__":
    main()
