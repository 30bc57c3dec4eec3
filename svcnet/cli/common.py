"""What every subcommand module of the ``svcnet`` command shares (I/O): the
one-line error (:class:`CliError`), the group class that turns svcnet's own
errors into it, backend lookup, the ``--store`` option and the store it names.

Subcommand modules import this module and nothing of :mod:`svcnet.cli.main`,
which builds the command from them.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

import click

from svcnet.errors import BackendNotFound, StoreError, SvcnetError

if TYPE_CHECKING:  # imported where used: every command imports this module
    from svcnet.backend import Backend, BackendFactory
    from svcnet.store import Store

__all__ = [
    "CliError",
    "SvcnetGroup",
    "backend_class",
    "backend_factory",
    "current_store",
    "existing_store",
    "global_namespace_option",
    "namespace_option",
    "store_option",
]


class CliError(click.ClickException):
    """A one-line ``error: ...`` on stderr and ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        # click declares exit_code a class variable; this instance's code shadows it.
        vars(self)["exit_code"] = exit_code

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", file=file or sys.stderr, err=True)


class SvcnetGroup(click.Group):
    """A group whose commands turn SvcnetError into ``error: ...`` (exit 1; an
    unknown backend exits 2 like any other usage error)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BackendNotFound as e:
            raise CliError(str(e), exit_code=2) from e
        except SvcnetError as e:
            raise CliError(str(e)) from e


def backend_class(name: str) -> type[Backend]:
    """The installed backend ``name``; unknown -> CliError (exit 2) listing the installed."""
    from svcnet.backend import load_backend

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
        yield cls


# -- the store ---------------------------------------------------------------------------

META_KEY = "svcnet.store"


def _set_store(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
    ctx.meta[META_KEY] = value


store_option = click.option(
    "--store",
    metavar="PATH",
    envvar="SVCNET_STORE",
    expose_value=False,
    callback=_set_store,
    help="The state file (default: $SVCNET_STORE or ~/.local/share/svcnet/store.db).",
)


def current_store() -> Store:
    """The store chosen by the group's ``--store`` option (or the default)."""
    from svcnet.store import Store

    ctx = click.get_current_context(silent=True)
    path = ctx.meta.get(META_KEY) if ctx is not None else None
    return Store(path)


def existing_store() -> Store:
    """The store to read: as :func:`current_store`, but a store named by ``--store``
    or ``$SVCNET_STORE`` whose directory does not exist is an error naming the path
    (a missing file in an existing directory is an empty store, as a new cluster)."""
    store = current_store()
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.meta.get(META_KEY) is None:
        return store  # the default path: nothing stored yet is an empty cluster
    parent = os.path.dirname(os.path.abspath(store.path))
    if not os.path.isdir(parent):
        raise StoreError(f"store {store.path}: no such directory {parent}")
    return store


# -- the namespace (kubectl's -n, before or after the verb) ------------------------------

NAMESPACE_KEY = "svcnet.namespace"
DEFAULT_NAMESPACE = "default"


def _set_namespace(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.meta[NAMESPACE_KEY] = value


global_namespace_option = click.option(
    "-n",
    "--namespace",
    metavar="NS",
    expose_value=False,
    callback=_set_namespace,
    help="The namespace of the commands that take one (as `kubectl -n NS get ...`).",
)


def _namespace(ctx: click.Context, _: click.Parameter, value: str | None) -> str:
    if value is not None:
        return value
    chosen = ctx.meta.get(NAMESPACE_KEY)
    return chosen if isinstance(chosen, str) else DEFAULT_NAMESPACE


namespace_option = click.option(
    "-n",
    "--namespace",
    metavar="NS",
    default=None,
    callback=_namespace,
    help="The namespace (default: the one given before the verb, else default).",
)
