"""svcnet's pytest plugin stays out of the way of other projects (issue 20, item 4).

A throwaway project in a temporary folder, beside svcnet rather than inside it, has
its own ``kernel`` marker and a test marked with it. Run with ``pytest`` in this
environment (where svcnet is installed and its ``pytest11`` entry point loads the
plugin into every run) but without ``--svcnet-backend``, the test runs as the
project means it to, and nothing of svcnet's shows: no marker, no fixture, no skip.
With ``--svcnet-backend memory`` the plugin acts. Each run is done as root and, when
this test runs as root, again as the unprivileged user ``nobody`` (the skip the
plugin used to impose only showed without root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

SCENARIOS = Path(__file__).resolve().parents[1] / "svcnet" / "scenarios"
SCENARIO = SCENARIOS / "clusterip-forwards-per-port.yaml"
NOBODY = 65534
PROJECT_MARKER = "kernel: this project's own meaning: talks to the kernel"
SVCNET_MARKER = "needs root and network namespaces"  # svcnet's description of `kernel`

TEST_FILE = """\
import os

import pytest


@pytest.mark.kernel
def test_marked_kernel_runs():
    # a real check: the test runs as the user the caller says it runs as
    assert os.geteuid() == int(os.environ["EXPECTED_EUID"])


def test_unmarked():
    assert sorted({3, 1, 2}) == [1, 2, 3]
"""


def _plugin_installed() -> bool:
    return any(ep.value == "svcnet.testing.plugin" for ep in entry_points(group="pytest11"))


pytestmark = pytest.mark.skipif(
    not _plugin_installed(),
    reason="svcnet's pytest11 entry point is not installed in this environment "
    "(install svcnet, e.g. pip install -e .)",
)


def _users() -> list[str]:
    return ["self", "nobody"]


@pytest.fixture
def project() -> Iterator[Path]:
    """A project of its own in a fresh temporary folder (readable and writable by
    ``nobody`` too: it owns the folder when we are root)."""
    path = Path(tempfile.mkdtemp(prefix="svcnet-plugin-isolation-"))
    try:
        (path / "pytest.ini").write_text(f"[pytest]\nmarkers =\n    {PROJECT_MARKER}\n")
        (path / "test_project.py").write_text(TEST_FILE)
        # inside the project: a path given on the command line may move pytest's rootdir
        shutil.copy(SCENARIO, path / "scenario.yaml")
        if os.geteuid() == 0:
            for p in (path, *path.iterdir()):
                os.chown(p, NOBODY, NOBODY)
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _run(project: Path, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``pytest ARGS`` in ``project`` as ``user`` ("self" or "nobody"), with plugin
    autoloading on (as in any environment where svcnet is installed)."""
    if not os.access(sys.executable, os.X_OK):
        pytest.skip(
            f"this user cannot start {sys.executable} again (it resolves to "
            f"{os.path.realpath(sys.executable)}), so it cannot run pytest in a subprocess"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HYPOTHESIS"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args]
    if user == "nobody":
        if os.geteuid() != 0:
            pytest.skip("running as nobody needs root (setpriv changes the user)")
        if shutil.which("setpriv") is None:
            pytest.skip("running as nobody needs setpriv (util-linux)")
        env["HOME"] = str(project)
        env["EXPECTED_EUID"] = str(NOBODY)
        command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command]
    else:
        env["EXPECTED_EUID"] = str(os.geteuid())
    done = subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, timeout=600
    )
    print(done.stdout[-4000:], done.stderr[-2000:], sep="\n")
    return done


@pytest.mark.parametrize("user", _users())
def test_kernel_marked_test_runs_normally_without_svcnet_backend(project: Path, user: str) -> None:
    done = _run(project, user, "-W", "error::pytest.PytestUnknownMarkWarning")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"rootdir: {project}" in done.stdout
    assert "PASSED test_project.py::test_marked_kernel_runs" in done.stdout
    assert "2 passed" in done.stdout
    assert "skipped" not in done.stdout and "warning" not in done.stdout.lower()
    assert "svcnet_conformance" not in done.stdout


@pytest.mark.parametrize("user", _users())
def test_nothing_of_svcnet_shows_without_svcnet_backend(project: Path, user: str) -> None:
    markers = _run(project, user, "--markers")
    assert markers.returncode == 0, markers.stderr
    assert PROJECT_MARKER in markers.stdout
    assert SVCNET_MARKER not in markers.stdout
    fixtures = _run(project, user, "--fixtures")
    assert fixtures.returncode == 0, fixtures.stderr
    assert "svcnet_netns" not in fixtures.stdout
    assert "svcnet_backend_factory" not in fixtures.stdout
    # its options stay available: that is how a run asks for it
    helped = _run(project, user, "--help")
    assert "--svcnet-backend" in helped.stdout


@pytest.mark.parametrize("user", _users())
def test_the_plugin_acts_with_svcnet_backend(project: Path, user: str) -> None:
    done = _run(
        project,
        user,
        "--svcnet-backend",
        "memory",
        "--svcnet-max-examples",
        "3",
        "--svcnet-scenarios",
        "scenario.yaml",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"rootdir: {project}" in done.stdout
    passed = [line for line in done.stdout.splitlines() if line.startswith("PASSED")]
    assert any("svcnet_conformance[memory]" in line for line in passed), passed
    if user == "nobody" or os.geteuid() != 0:
        # svcnet's kernel marker applies: skipped, saying why
        assert "SKIPPED" in done.stdout and "kernel test: needs root" in done.stdout
        assert "2 passed, 1 skipped" in done.stdout
    else:
        assert "PASSED test_project.py::test_marked_kernel_runs" in done.stdout
        assert "3 passed" in done.stdout
    markers = _run(project, user, "--svcnet-backend", "memory", "--markers")
    assert SVCNET_MARKER in markers.stdout
    fixtures = _run(project, user, "--svcnet-backend", "memory", "--fixtures")
    assert "svcnet_netns" in fixtures.stdout and "svcnet_backend_factory" in fixtures.stdout


def test_a_project_opts_in_with_the_ini_option(project: Path) -> None:
    ini = project / "pytest.ini"
    ini.write_text(ini.read_text() + "svcnet = true\n")
    fixtures = _run(project, "self", "--fixtures")
    assert fixtures.returncode == 0, fixtures.stderr
    assert "svcnet_netns" in fixtures.stdout
    assert "svcnet_conformance" not in fixtures.stdout
