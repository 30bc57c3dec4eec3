"""docs/reference/cli.md keeps up with the ``svcnet`` command.

The click tree of :data:`svcnet.cli.main.cli` is walked: every command path
(``svcnet``, ``svcnet lab up``, ...) must have a section (a heading naming it in
backticks) and every long option of the command (``--store``, ``--no-watch``, ...)
must appear in that command's own section (``--help`` in the ``svcnet`` one). A
section for a command that no longer exists fails too. Each failure lists
everything missing, so one run says what to write.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from svcnet.cli.main import cli

PAGE = Path(__file__).resolve().parent.parent / "docs" / "reference" / "cli.md"
HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
COMMAND_IN_HEADING = re.compile(r"`(svcnet(?: [a-z][a-z0-9-]*)*)`")


def command_tree() -> dict[str, click.Command]:
    """Every command of the ``svcnet`` tree by its path (``svcnet lab up``)."""
    found: dict[str, click.Command] = {}

    def walk(command: click.Command, path: str) -> None:
        found[path] = command
        if isinstance(command, click.Group):
            ctx = click.Context(command, info_name=path)
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None, f"{path} lists {name!r} but has no such command"
                walk(sub, f"{path} {name}")

    walk(cli, "svcnet")
    return found


def long_options(command: click.Command, path: str) -> list[str]:
    """Every ``--long`` spelling of the command's options (both halves of a
    ``--x/--no-x`` flag). ``--help``, which every command has, is asked of the
    ``svcnet`` section only (the page says there that every command takes it)."""
    ctx = click.Context(command, info_name="svcnet")
    names: list[str] = []
    for param in command.get_params(ctx):
        if isinstance(param, click.Option):
            names += [o for o in (*param.opts, *param.secondary_opts) if o.startswith("--")]
    return [n for n in names if n != "--help" or path == "svcnet"]


def sections(text: str) -> dict[str, str]:
    """The text of each command's section: from the heading naming ``svcnet ...`` in
    backticks to the next heading of any level."""
    out: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    in_fence = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        match = None if in_fence else HEADING.match(line)
        if match is None:
            lines.append(line)
            continue
        if current is not None:
            out[current] = out.get(current, "") + "\n".join(lines)
        named = COMMAND_IN_HEADING.search(match.group(2))
        current = named.group(1) if named else None
        lines = []
    if current is not None:
        out[current] = out.get(current, "") + "\n".join(lines)
    return out


def mentions(text: str, option: str) -> bool:
    """``option`` appears as a whole option name (``--name`` is not ``--namespace``)."""
    return re.search(re.escape(option) + r"(?![A-Za-z0-9-])", text) is not None


def test_the_page_exists() -> None:
    assert PAGE.is_file(), f"{PAGE} is missing: the CLI reference page"


def test_every_command_has_a_section() -> None:
    documented = sections(PAGE.read_text(encoding="utf-8"))
    tree = command_tree()
    assert {"svcnet", "svcnet get", "svcnet lab up"} <= set(tree)  # the walk reached subgroups
    missing = sorted(path for path in tree if path not in documented)
    assert not missing, (
        f"{PAGE.name} has no section (a heading with the command in backticks) for: "
        + ", ".join(missing)
    )


def test_no_section_for_a_command_that_is_gone() -> None:
    stale = sorted(set(sections(PAGE.read_text(encoding="utf-8"))) - set(command_tree()))
    assert not stale, f"{PAGE.name} documents commands svcnet no longer has: " + ", ".join(stale)


def test_every_long_option_is_in_its_commands_section() -> None:
    documented = sections(PAGE.read_text(encoding="utf-8"))
    missing: list[str] = []
    checked = 0
    for path, command in sorted(command_tree().items()):
        text = documented.get(path, "")
        for option in long_options(command, path):
            checked += 1
            if not mentions(text, option):
                missing.append(f"{path} {option}")
    assert checked > 50, f"only {checked} options found: the walk is broken"
    assert not missing, (
        f"{PAGE.name} does not mention these options in their command's section:\n  "
        + "\n  ".join(missing)
    )


def test_sections_read_from_headings_only() -> None:
    """The section splitter itself: headings inside code fences do not start one,
    and an option is matched as a whole name."""
    text = "# `svcnet a`\n--name x\n```\n# `svcnet b`\n```\n## `svcnet c`\n--namespace\n"
    got = sections(text)
    assert set(got) == {"svcnet a", "svcnet c"}
    assert mentions(got["svcnet a"], "--name")
    assert not mentions(got["svcnet c"], "--name")
