"""The ``svcnet`` command loads its subcommands lazily (svcnet/cli/main.py): the
help lists every command with the one-line help of the command itself, a call
imports only the module of the command it runs, and ``import svcnet`` imports
none of the heavy modules until a public name is used."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import click

from svcnet.cli import main


def _eager_group() -> click.Group:
    """The group as it was built before lazy loading: every module's COMMANDS."""

    @click.group(cls=main.SvcnetGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(package_name="svcnet", prog_name="svcnet")
    @main.store_option
    @main.global_namespace_option
    def cli() -> None:
        """Kubernetes Service networking as a library: state, plans, data planes."""

    for module in main.SUBCOMMAND_MODULES:
        for command in module.COMMANDS:
            cli.add_command(command)
    return cli


def test_the_help_table_names_every_command_with_its_own_one_line_help() -> None:
    modules = main.SUBCOMMAND_MODULES
    commands = {c.name: (m.__name__.rsplit(".", 1)[1], c) for m in modules for c in m.COMMANDS}
    assert set(commands) == set(main.COMMAND_HELP)
    for name, (module, command) in commands.items():
        assert main.COMMAND_HELP[name][0] == module, name
        for limit in (20, 45, 80, 10_000):
            expected = command.get_short_help_str(limit)
            stub = click.Command(name, help=main.COMMAND_HELP[name][1])
            assert stub.get_short_help_str(limit) == expected, (name, limit)


def test_the_lazy_help_is_the_eager_help() -> None:
    lazy_code = "from svcnet.cli.main import cli; cli.main(['--help'], prog_name='svcnet')"
    eager_code = (
        f"import sys; sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r}); "
        "from test_cli_startup import _eager_group; "
        "_eager_group().main(['--help'], prog_name='svcnet')"
    )
    lazy, eager = (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        for code in (lazy_code, eager_code)
    )
    assert "Commands:" in lazy and "port-forward" in lazy
    assert lazy == eager


def _modules_after(code: str) -> set[str]:
    probe = code + "\nimport sys; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


HEAVY = {"svcnet.backend", "svcnet.plan", "svcnet.semantics", "svcnet.lab", "svcnet.dns", "yaml"}


def test_help_and_import_svcnet_import_none_of_the_heavy_modules() -> None:
    help_code = (
        "from svcnet.cli.main import cli\n"
        "try:\n    cli.main(['--help'], prog_name='svcnet')\nexcept SystemExit:\n    pass"
    )
    for code in (help_code, "import svcnet.errors", "import svcnet"):
        loaded = _modules_after(code)
        assert "svcnet" in loaded
        assert not loaded & HEAVY, (code, loaded & HEAVY)


def test_get_imports_neither_backends_nor_lab_nor_dns(tmp_path: object) -> None:
    code = (
        "from svcnet.cli.main import cli\n"
        f"try:\n    cli.main(['--store', '{tmp_path}/s.db', 'get', 'svc'], prog_name='svcnet')\n"
        "except SystemExit:\n    pass"
    )
    loaded = _modules_after(code)
    assert "svcnet.cli.objects" in loaded
    assert not loaded & {"svcnet.backend", "svcnet.lab", "svcnet.dns", "svcnet.cli.agent"}


def test_public_names_still_resolve() -> None:
    import svcnet

    for name in svcnet.__all__:
        assert getattr(svcnet, name) is not None, name
    assert set(svcnet.__all__) <= set(dir(svcnet))
