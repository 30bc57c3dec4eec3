"""Sessions: tests (unit + kernel), lint, typecheck, bench, demo, wheels, docs.

Run ``nox -s tests`` as root on Debian 12 with iptables, nftables, iproute2 and
conntrack installed (``.ci/run`` installs them); kernel tests skip, saying why,
without root.
"""

from __future__ import annotations

import shlex
import shutil

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True

BACKENDS = ["backends/memory", "backends/nftables", "backends/iptables", "backends/ipvs"]
BACKEND_INSTALLS = [
    "backends/memory",
    "backends/nftables",
    "backends/iptables[iptc]",
    "backends/ipvs",
]
PYTHON = "3.11"
# Both ruff commands (check, format --check) run over these; the backends' src,
# tests and bench scripts are under backends/.
LINT_PATHS = ["svcnet", "tests", "backends", "noxfile.py", "bench"]
# Keep in step with [tool.mypy] files in pyproject.toml.
TYPED_PATHS = ["svcnet", *[f"{b}/src" for b in BACKENDS]]
DOCS_OUT = "build/docs/html"  # ignored by git (build/)


def _install(session: nox.Session) -> None:
    session.install("-e", ".[all]")
    for path in BACKEND_INSTALLS:
        session.install("-e", path)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Every test: unprivileged ones anywhere, kernel ones as root in fresh netns."""
    _install(session)
    session.install("pytest-timeout")
    paths = ["tests", *[f"{b}/tests" for b in BACKENDS]]
    session.run(
        "pytest",
        "-p",
        "no:cacheprovider",
        "--timeout=900",
        "--hypothesis-profile=ci",
        "--durations=30",
        *(session.posargs or paths),
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """``ruff check`` and ``ruff format --check`` over the same paths."""
    session.install("ruff")
    session.run("ruff", "check", *LINT_PATHS)
    session.run("ruff", "format", "--check", *LINT_PATHS)


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """``mypy --strict`` over the core and every backend's ``src`` (they ship py.typed).

    The paths are given explicitly (the same list as ``[tool.mypy] files``); mypy
    finds each backend's package root by walking up from the files to ``src``.
    """
    _install(session)
    session.install("mypy", "types-PyYAML")
    session.run("mypy", "--strict", *TYPED_PATHS)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks (never timed assertions in tests). Figures go to docs/performance.md."""
    _install(session)
    only = set(session.posargs)  # e.g. `nox -s bench -- dns nftables`
    runs = {
        "state": ["bench/bench_state.py"],
        "plan": ["bench/bench_plan.py"],
        "dns": ["bench/bench_dns.py"],
        "faults": ["bench/bench_faults.py"],
        "agent": ["bench/bench_agent.py"],
        "cli": ["bench/bench_cli.py"],
        "manifests": ["bench/bench_manifest_load.py", "--no-pyyaml"],
        "nftables": ["backends/nftables/bench_nft.py"],
        "scale100k": ["bench/bench_scale100k.py"],
        "iptables": ["backends/iptables/bench_ipt.py"],
        "dataplane": ["bench/bench_dataplane.py"],
    }
    for name, script in runs.items():
        if not only or name in only:
            session.run("python", *script)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    _install(session)
    session.run("svcnet", "demo")


@nox.session(python=PYTHON)
def wheels(session: nox.Session) -> None:
    """Build the sdists and wheels of the four distributions from a clean copy of the
    checkout, install the wheels (not editable) into a fresh venv and use them there
    (tests/test_wheels.py); the built files are left in ``dist/``."""
    session.install("build", "pytest", "hypothesis")
    shutil.rmtree("dist", ignore_errors=True)
    args = ["-p", "no:cacheprovider", "tests/test_wheels.py", *session.posargs]
    session.run("pytest", *args, env={"SVCNET_DIST_DIR": "dist"})


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """The Python API reference from the docstrings (Sphinx, docs/conf.py), warnings
    as errors, into ``DOCS_OUT``."""
    _install(session)
    session.install("sphinx>=7.2", "myst-parser>=2.0")
    strict = ["-W", "--keep-going", "-E"]  # warnings are errors; read every file
    where = ["-d", "build/docs/doctrees", "docs", DOCS_OUT]
    session.run("sphinx-build", *strict, "-b", "html", *where)


# The IPVS backend's kernel side needs a kernel with IPVS: scripts/in-ipvs-vm boots one
# (qemu, the host's / read-only). Everything is installed here first: the guest has no
# network, and runs the session's own executables (--no-install semantics).
IPVS_SCENARIOS = ["svcnet/scenarios", "svcnet/scenarios/examples"]


@nox.session(python=PYTHON)
def ipvs(session: nox.Session) -> None:
    """In one VM: the IPVS backend's tests (kernel ones included), every scenario file
    through ``svcnet scenario run --backend ipvs`` (read-back, then ``--traffic``), and
    the conformance harness with ``SVCNET_IPVS_EXAMPLES`` examples (default 200).
    ``nox -s ipvs -- CMD...`` runs CMD in the VM instead."""
    _install(session)
    session.install("pytest-timeout")
    if session.posargs:
        script = " ".join(shlex.quote(a) for a in session.posargs)
    else:
        import glob
        import os

        files = [
            f for d in IPVS_SCENARIOS if os.path.isdir(d) for f in sorted(glob.glob(f"{d}/*.yaml"))
        ]
        quoted = " ".join(shlex.quote(f) for f in files)
        script = " && ".join(
            [
                "set -e",
                "pytest -p no:cacheprovider --color=no --timeout=3000 -ra backends/ipvs/tests",
                f"svcnet scenario run --backend ipvs {quoted}",
                f"svcnet scenario run --backend ipvs --traffic {quoted}",
            ]
        )
    session.run(
        "scripts/in-ipvs-vm",
        "bash",
        "-c",
        script,
        external=True,
        # the lab's pod and DNS servers start slowly under software emulation
        env={"VIRTUAL_ENV": session.virtualenv.location, "SVCNET_LAB_START_TIMEOUT": "180"},
    )
