"""The ``svcnet`` command: one package, explicit registration.

:mod:`~svcnet.cli.main` builds the click group and registers the ``COMMANDS`` of
each subcommand module; those import :mod:`~svcnet.cli.common` (errors, backends,
the store option), never :mod:`~svcnet.cli.main`.
"""
