"""The `svcnet` command, through the real command line (python -m svcnet)."""

from __future__ import annotations

import glob
import json
import pathlib
import subprocess
import sys

SHARED_EXAMPLES = str(
    __import__("pathlib").Path(__file__).resolve().parents[1] / "svcnet" / "scenarios" / "examples"
)

EXAMPLES = sorted(glob.glob(SHARED_EXAMPLES + "/*.yaml"))

FAILING = """\
apiVersion: svcnet/v1alpha1
kind: Scenario
name: fails-on-purpose
steps:
  - apply:
      - {apiVersion: v1, kind: Node, metadata: {name: node-a}, spec: {podCIDR: 10.244.1.0/24},
         status: {addresses: [{type: InternalIP, address: 192.168.56.11}]}}
      - apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: default}
        spec: {selector: {app: web}, clusterIP: 10.96.0.10, ports: [{port: 80}]}
  - expect:
      - name: no endpoints, so this is a reject, not a drop
        from: {node: node-a}
        to: {ip: 10.96.0.10, port: 80}
        result: {verdict: drop}
      - name: an unallocated service address is dropped
        from: {node: node-a}
        to: {ip: 10.96.0.11, port: 80}
        result: {verdict: drop}
"""


def svcnet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "svcnet", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_examples_pass_on_memory() -> None:
    proc = svcnet("scenario", "run", *EXAMPLES, "--backend", "memory")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.splitlines()[-1]
    assert last == "25 passed, 0 failed"  # 18 probes/errors + dns-basics' 7 queries
    assert proc.stderr == ""


def test_failing_scenario(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "fails.yaml"
    path.write_text(FAILING)
    proc = svcnet("scenario", "run", str(path), "--backend", "memory")
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[-1] == "1 passed, 1 failed"
    assert f"FAILED {path} step 2, probe 1: no endpoints, so this is a reject, not a drop" in lines
    assert "  expected: drop" in lines
    assert "  observed: reject" in lines
    assert any(
        line.startswith("  probe:    from node node-a to 10.96.0.10:80/TCP") for line in lines
    )
    assert "Traceback" not in proc.stderr


def test_json_output(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "fails.yaml"
    path.write_text(FAILING)
    proc = svcnet("scenario", "run", str(path), EXAMPLES[0], "--json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["totals"]["failed"] == 1
    assert doc["totals"]["passed"] >= 1
    failed = [r for r in doc["results"] if r["status"] == "failed"]
    assert [(r["file"], r["step"], r["item"], r["observed"]) for r in failed] == [
        (str(path), 2, 1, "reject")
    ]


def test_unparsable_file_fails(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("apiVersion: svcnet/v1alpha1\nkind: Scenario\nname: x\nsteps: [{expect: [}\n")
    proc = svcnet("scenario", "run", str(path), str(tmp_path / "missing.yaml"))
    assert proc.returncode == 1
    assert "not valid YAML" in proc.stdout and "cannot read" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "0 passed, 2 failed"


def test_unknown_backend() -> None:
    proc = svcnet("scenario", "run", EXAMPLES[0], "--backend", "no-such-backend")
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: no backend named 'no-such-backend' is installed")
    assert "memory" in lines[0]


def test_backends_lists_memory() -> None:
    proc = svcnet("backends")
    assert proc.returncode == 0
    assert any(
        line.split()[:1] == ["memory"] and "no root needed" in line
        for line in proc.stdout.splitlines()
    )


def test_usage() -> None:
    proc = svcnet("--help")
    assert proc.returncode == 0 and "scenario" in proc.stdout and "backends" in proc.stdout
    proc = svcnet("scenario", "run", "--backend", "no-such-backend")
    assert proc.returncode != 0 and "no-such-backend" in proc.stderr


def test_scenario_run_without_files_runs_every_shipped_file() -> None:
    from svcnet.scenario import packaged_scenarios

    proc = svcnet("scenario", "run", "--backend", "memory", "--json")
    assert proc.returncode == 0, proc.stderr
    ran = {r["file"] for r in __import__("json").loads(proc.stdout)["results"]}
    assert ran == {str(p) for p in packaged_scenarios()}


def test_console_script_entry_point() -> None:
    from importlib.metadata import entry_points

    (ep,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "svcnet"]
    assert ep.value == "svcnet.cli.main:main"


def test_user_errors_are_one_line() -> None:
    """SvcnetError from any command: `error: ...` on stderr, exit 1, no traceback."""
    import click
    from click.testing import CliRunner

    from svcnet.cli.common import SvcnetGroup
    from svcnet.errors import ValidationError

    @click.group(cls=SvcnetGroup)
    def group() -> None:
        pass

    @group.command()
    def bad() -> None:
        raise ValidationError("Service default/web", "spec.ports[0].port", "must be 1-65535")

    result = CliRunner().invoke(group, ["bad"])
    assert result.exit_code == 1
    assert result.output == "error: Service default/web: spec.ports[0].port: must be 1-65535\n"
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_subcommand_modules_never_import_the_app() -> None:
    """svcnet.cli.main registers the subcommand modules; none of them imports it back
    (no import circle), and each offers its commands as COMMANDS."""
    import ast
    import importlib

    from svcnet.cli import main

    cli_dir = pathlib.Path(main.__file__).parent
    for path in sorted(cli_dir.glob("*.py")):
        if path.name in ("main.py", "__init__.py"):
            continue
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
                imported.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                imported.update(a.name for a in node.names)
        assert "svcnet.cli.main" not in imported, path.name
    registered = {c.name for m in main.SUBCOMMAND_MODULES for c in m.COMMANDS}
    assert registered == set(main.cli.commands)
    for module in main.SUBCOMMAND_MODULES:
        assert importlib.import_module(module.__name__).COMMANDS
