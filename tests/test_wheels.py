"""svcnet as a user gets it: built wheels installed (not editable) into a fresh venv.

The four distributions (svcnet and the memory, nftables and iptables backends) are
built as sdists and wheels with ``python -m build`` from a clean copy of the
checkout (the files git tracks plus new, not ignored ones) in a temporary folder,
so nothing lands in the tree; each wheel is built from its sdist, which proves the
sdist complete. The wheels then go into a fresh venv, where the tests run the
``svcnet`` command, the README's library example and the conformance suite from an
empty folder.

``nox -s wheels`` runs this module with ``SVCNET_DIST_DIR=dist``: the built files
are copied there. Building needs the package index (setuptools for the isolated
builds, the dependencies for the install); without it the tests skip, saying so.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# distribution name -> folder (relative to the checkout)
DISTRIBUTIONS = {
    "svcnet": ".",
    "svcnet_memory": "backends/memory",
    "svcnet_nftables": "backends/nftables",
    "svcnet_iptables": "backends/iptables",
}
# pip's words when the index cannot be reached or lacks a release (offline)
OFFLINE_SIGNS = (
    "No matching distribution found",
    "Could not find a version that satisfies",
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Max retries exceeded",
)
# variables of the calling environment that would leak into the fresh venv
LEAKY_ENV = ("PYTHONPATH", "VIRTUAL_ENV", "PYTEST_ADDOPTS", "PYTHONHOME", "HYPOTHESIS_PROFILE")


def _run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [os.fspath(c) for c in cmd], capture_output=True, text=True, check=False, cwd=cwd, env=env
    )


def _must(done: subprocess.CompletedProcess[str], what: str) -> str:
    """stdout of a command that must succeed; skips (printing why) when it failed
    because the package index is out of reach."""
    if done.returncode == 0:
        return done.stdout
    output = done.stdout + done.stderr
    if any(sign in output for sign in OFFLINE_SIGNS):
        pytest.skip(f"{what}: the package index is out of reach (offline?):\n{output[-1500:]}")
    pytest.fail(f"{what} failed (exit {done.returncode}):\n{output[-4000:]}")


def _clean_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_ENV}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _clean_copy(dest: Path) -> None:
    """Copy the checkout as a fresh clone would see it (with uncommitted edits)."""
    if (ROOT / ".git").exists() and shutil.which("git"):
        listed = _run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT
        )
        files = _must(listed, "git ls-files").split("\0")
        for name in filter(None, files):
            source = ROOT / name
            if source.is_file():  # a tracked file deleted in the work tree is skipped
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
        return
    junk = shutil.ignore_patterns(
        ".git", ".nox", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
    )
    shutil.copytree(ROOT, dest, ignore=junk)


def _venv(path: Path) -> Path:
    _must(_run([sys.executable, "-m", "venv", path]), f"python -m venv {path}")
    return path


def _version(name: str) -> str:
    if name == "svcnet":
        text = (ROOT / "svcnet" / "_version.py").read_text()
        found = re.search(r'^__version__ = "([^"]+)"', text, re.M)
        assert found, "svcnet/_version.py has no __version__ line"
        return found.group(1)
    pyproject = tomllib.loads((ROOT / DISTRIBUTIONS[name] / "pyproject.toml").read_text())
    return str(pyproject["project"]["version"])


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the built sdists and wheels."""
    work = tmp_path_factory.mktemp("wheels")
    # `nox -s wheels` installs the `build` distribution; a find_spec("build") would
    # also find the checkout's build/ folder (the docs output) as a namespace package
    if _installed("build"):
        python = Path(sys.executable)
    else:
        env = _venv(work / "build-env")
        _must(_run([env / "bin" / "python", "-m", "pip", "install", "build"]), "pip install build")
        python = env / "bin" / "python"
    source = work / "src"
    _clean_copy(source)
    out = work / "dist"
    for name, folder in DISTRIBUTIONS.items():
        done = _run([python, "-m", "build", "--outdir", out, source / folder], cwd=source)
        _must(done, f"python -m build {folder} ({name})")
    keep = os.environ.get("SVCNET_DIST_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for built in out.iterdir():
            shutil.copy2(built, Path(keep) / built.name)
    return out


def _wheel(dists: Path, name: str) -> Path:
    found = sorted(dists.glob(f"{name}-*.whl"))
    assert len(found) == 1, f"expected one {name} wheel in {sorted(dists.iterdir())}"
    return found[0]


@pytest.fixture(scope="module")
def user_env(dists: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the four wheels (svcnet with its ``testing`` extra)."""
    venv = _venv(tmp_path_factory.mktemp("user") / "venv")
    wheels = [f"{_wheel(dists, 'svcnet')}[testing]"]
    wheels += [os.fspath(_wheel(dists, name)) for name in DISTRIBUTIONS if name != "svcnet"]
    install = _run([venv / "bin" / "python", "-m", "pip", "install", *wheels])
    _must(install, "pip install of the built wheels")
    return venv


def test_every_distribution_builds_an_sdist_and_a_wheel_with_its_licence(dists: Path) -> None:
    for name in DISTRIBUTIONS:
        version = _version(name)
        wheel = dists / f"{name}-{version}-py3-none-any.whl"
        sdist = dists / f"{name}-{version}.tar.gz"
        assert wheel.is_file(), f"no {wheel.name} among {sorted(p.name for p in dists.iterdir())}"
        assert sdist.is_file(), f"no {sdist.name}"
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
            metadata = zf.read(f"{name}-{version}.dist-info/METADATA").decode()
        assert f"{name}-{version}.dist-info/licenses/LICENSE" in names, names
        assert "License-Expression: Apache-2.0" in metadata
        assert f"{name}/py.typed" in names
        with tarfile.open(sdist) as tf:
            assert f"{name}-{version}/LICENSE" in tf.getnames()


def test_backends_require_this_minor_release_of_svcnet(dists: Path) -> None:
    major, minor, _ = _version("svcnet").split(".")
    wanted = f"Requires-Dist: svcnet<{major}.{int(minor) + 1},>={major}.{minor}"
    for name in DISTRIBUTIONS:
        if name == "svcnet":
            continue
        version = _version(name)
        with zipfile.ZipFile(_wheel(dists, name)) as zf:
            metadata = zf.read(f"{name}-{version}.dist-info/METADATA").decode()
        assert wanted in metadata.splitlines(), metadata


def test_installed_version_is_the_single_sourced_one(user_env: Path, tmp_path: Path) -> None:
    code = "import importlib.metadata as m, svcnet; print(svcnet.__version__, m.version('svcnet'))"
    python = user_env / "bin" / "python"
    done = _run([python, "-I", "-c", code], cwd=tmp_path, env=_clean_env(user_env))
    attribute, metadata = _must(done, "import svcnet").split()
    assert attribute == metadata == _version("svcnet")


def test_svcnet_command_works_on_a_plain_install(user_env: Path, tmp_path: Path) -> None:
    done = _run([user_env / "bin" / "svcnet", "--help"], cwd=tmp_path, env=_clean_env(user_env))
    out = _must(done, "svcnet --help")
    assert out.startswith("Usage: svcnet"), out
    assert "Commands:" in out
    assert "backends" in out


def _readme_library_example() -> tuple[str, str]:
    """The README's "As a library" code block and the output its last comment shows."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## As a library", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block, "README: no python block under '## As a library'"
    code = block.group(1)
    comments = [line[2:] for line in code.splitlines() if line.startswith("# ")]
    assert comments, "README: the library example shows no output comment"
    return code, comments[-1].strip()


def test_readme_library_example_prints_what_the_readme_says(user_env: Path, tmp_path: Path) -> None:
    code, expected = _readme_library_example()
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    script = tmp_path / "example.py"
    script.write_text(code)
    done = _run([user_env / "bin" / "python", "-I", script], cwd=tmp_path, env=_clean_env(user_env))
    out = _must(done, "the README's library example")
    assert out.strip() == expected


def test_conformance_from_an_empty_folder_runs_every_packaged_scenario(
    user_env: Path, tmp_path: Path
) -> None:
    env = _clean_env(user_env)
    code = "import os, svcnet; print(os.path.dirname(svcnet.__file__))"
    where = _run([user_env / "bin" / "python", "-I", "-c", code], cwd=tmp_path, env=env)
    package = Path(_must(where, "locate the installed svcnet").strip())
    assert package.is_relative_to(user_env), f"svcnet imported from {package}, not the venv"
    shipped = sorted((package / "scenarios").glob("**/*.yaml"))
    empty = tmp_path / "empty"
    empty.mkdir()
    options = ["-p", "no:cacheprovider", "--svcnet-backend=memory", "--svcnet-max-examples=10"]
    done = _run([user_env / "bin" / "pytest", *options], cwd=empty, env=env)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert re.search(r"\b1 passed\b", out), out[-2000:]
    counts = [int(n) for n in re.findall(r"\b(\d+) scenario files?\b", out)]
    assert counts, f"the plugin printed no scenario count:\n{out[-2000:]}"
    assert shipped, f"no scenario file under {package / 'scenarios'}"
    assert counts[-1] == len(shipped), (counts, len(shipped))
