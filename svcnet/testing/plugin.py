"""The svcnet pytest plugin (entry point ``pytest11: svcnet``).

It loads into every pytest run of an environment where svcnet is installed, so it
stays out of the way: it only adds its command-line options and the ini option
``svcnet``, and does nothing else — no marker, no skip, no fixture, no test item —
unless it is asked for, by any of:

* ``--svcnet-backend NAME`` on the command line;
* ``svcnet = true`` in the project's pytest configuration (``[tool.pytest.ini_options]``,
  ``pytest.ini``, ...), as svcnet and its backends have;
* loading it explicitly with plugin autoloading off (``PYTEST_DISABLE_PLUGIN_AUTOLOAD``
  or ``--disable-plugin-autoload``, then ``-p svcnet.testing.plugin``, ``PYTEST_PLUGINS``
  or ``pytest_plugins``).

Asked for, it:

* with ``--svcnet-backend NAME``, adds one test item, ``svcnet_conformance[NAME]``,
  that runs :func:`svcnet.testing.run_conformance` against the installed backend
  NAME (kernel backends get a fresh ``svcnet-t-*`` network namespace per node);
  ``--svcnet-max-examples N`` and ``--svcnet-scenarios PATH`` tune it.
* Fixtures: ``svcnet_netns`` (a fresh ``svcnet-t-*`` namespace, deleted after) and
  ``svcnet_backend_factory`` (``make_backend(node)`` for ``--svcnet-backend``, the
  memory backend without it).
* Marker ``kernel``: the test is skipped, with the reason, unless running as root
  with a working ``ip netns``.

Importing this module is cheap: Hypothesis and the harness load only when used.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from svcnet.backend import load_backend
from svcnet.kernel.factory import TEST_PREFIX, NetnsFactory, kernel_backends

__all__ = [
    "ConformanceItem",
    "NetnsFactory",
    "asked_for",
    "create_netns",
    "delete_netns",
    "kernel_unavailable",
]

NETNS_PREFIX = TEST_PREFIX
DEFAULT_MAX_EXAMPLES = 200
INI_ENABLE = "svcnet"  # the ini option a project opts in with
ACTIVE_NAME = "svcnet-active"  # the acting half's name in the plugin manager
KERNEL_MARKER = "kernel: needs root and network namespaces (skipped, with the reason, otherwise)"


# -- network namespaces ------------------------------------------------------------


def kernel_unavailable() -> str | None:
    """Why kernel tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "kernel test: needs root (network namespaces and netfilter tables)"
    if shutil.which("ip") is None:
        return "kernel test: the `ip` command (iproute2) is not installed"
    try:
        done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        return f"kernel test: `ip netns list` failed: {e}"
    if done.returncode != 0:
        return f"kernel test: `ip netns` is unavailable: {done.stderr.strip()}"
    return None


def create_netns(prefix: str = NETNS_PREFIX) -> str:
    """Create a fresh namespace ``<prefix><pid>-<n>`` with loopback up (``prefix``
    starts with ``svcnet-``; see :func:`svcnet.kernel.netns.fresh`)."""
    from svcnet.kernel import netns

    return netns.fresh(prefix)


def delete_netns(name: str) -> None:
    """Delete a namespace :func:`create_netns` made (only ``svcnet-`` names; one
    already gone is no error)."""
    from svcnet.kernel import netns

    netns.delete(name)


@contextlib.contextmanager
def backend_factory(name: str) -> Iterator[Any]:
    """The factory for backend ``name``: the class itself, or for a kernel backend
    :func:`svcnet.kernel.kernel_backends` (a fresh namespace per instance; the
    test is skipped when kernel work is impossible)."""
    cls = load_backend(name)
    if not cls.capabilities.kernel:
        yield cls
        return
    reason = kernel_unavailable()
    if reason is not None:
        pytest.skip(f"backend {name!r}: {reason}")
    with kernel_backends(cls, NETNS_PREFIX) as factory:
        yield factory


# -- pytest hooks ------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("svcnet", "svcnet backend conformance")
    group.addoption(
        "--svcnet-backend",
        metavar="NAME",
        default=None,
        help="run svcnet's conformance suite against the installed backend NAME "
        "(entry point group svcnet.backends)",
    )
    group.addoption(
        "--svcnet-max-examples",
        metavar="N",
        type=int,
        default=DEFAULT_MAX_EXAMPLES,
        help=f"random clusters the conformance suite tries (default {DEFAULT_MAX_EXAMPLES})",
    )
    group.addoption(
        "--svcnet-scenarios",
        metavar="PATH",
        action="append",
        default=None,
        help="scenario file or directory for the conformance suite (repeatable; "
        "default: svcnet's own scenarios)",
    )

    parser.addini(
        INI_ENABLE,
        type="bool",
        default=False,
        help="let the svcnet plugin act in this project without --svcnet-backend: "
        "the `kernel` marker (skipped unless root) and the svcnet_* fixtures",
    )


def asked_for(config: pytest.Config) -> str | None:
    """Why the plugin acts in this run (see the module docstring), or None: it stays
    out of the way."""
    if config.getoption("--svcnet-backend"):
        return "--svcnet-backend"
    if config.getini(INI_ENABLE):
        return f"the ini option {INI_ENABLE} = true"
    autoload_off = bool(os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")) or bool(
        getattr(config.option, "disable_plugin_autoload", False)
    )
    if autoload_off:  # then only an explicit request loads this module
        return "loaded explicitly with plugin autoloading off"
    return None


def pytest_configure(config: pytest.Config) -> None:
    if asked_for(config) is None:
        return
    config.addinivalue_line("markers", KERNEL_MARKER)
    config.pluginmanager.register(ActivePlugin(), ACTIVE_NAME)


def pytest_unconfigure(config: pytest.Config) -> None:
    active = config.pluginmanager.get_plugin(ACTIVE_NAME)
    if active is not None:
        config.pluginmanager.unregister(active)


def _scenario_paths(config: pytest.Config) -> list[Path]:
    """The files ``--svcnet-scenarios`` names (directories searched recursively), else
    the scenario files shipped with svcnet."""
    given: list[str] | None = config.getoption("--svcnet-scenarios")
    if not given:
        from svcnet.scenario import packaged_scenarios

        return packaged_scenarios()
    out: list[Path] = []
    for p in map(Path, given):
        out += sorted(p.rglob("*.yaml")) if p.is_dir() else [p]
    return out


#: how many scenario files each conformance item ran, for the terminal summary
_RAN = pytest.StashKey[dict[str, int]]()


class ConformanceItem(pytest.Item):
    """One test: the whole conformance suite against one installed backend."""

    def __init__(self, *, backend: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backend = backend

    def runtest(self) -> None:
        from svcnet.testing.agreement import run_conformance

        config = self.config
        paths = _scenario_paths(config)
        with backend_factory(self.backend) as factory:
            run_conformance(
                factory,
                max_examples=config.getoption("--svcnet-max-examples"),
                scenario_paths=paths,
                backend_name=self.backend,
            )
        config.stash.setdefault(_RAN, {})[self.backend] = len(paths)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, AssertionError):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"svcnet conformance of backend {self.backend!r}"


# -- the acting half: registered only when asked for --------------------------------


class ActivePlugin:
    """The hooks and fixtures that act; :func:`pytest_configure` registers an instance
    only when the run asks for svcnet (:func:`asked_for`)."""

    def pytest_terminal_summary(self, terminalreporter: Any, config: pytest.Config) -> None:
        for backend, count in sorted(config.stash.get(_RAN, {}).items()):
            terminalreporter.write_line(
                f"svcnet: {count} scenario files run against backend {backend!r}"
            )

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if item.get_closest_marker("kernel") is not None:
            reason = kernel_unavailable()
            if reason is not None:
                pytest.skip(reason)

    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        name = config.getoption("--svcnet-backend")
        if name:
            items.append(
                ConformanceItem.from_parent(
                    session, name=f"svcnet_conformance[{name}]", backend=name
                )
            )

    @pytest.fixture
    def svcnet_netns(self) -> Iterator[str]:
        """A fresh ``svcnet-t-*`` network namespace, deleted after the test (skips
        when kernel work is impossible here)."""
        reason = kernel_unavailable()
        if reason is not None:
            pytest.skip(reason)
        from svcnet.kernel import netns

        with netns.scratch(NETNS_PREFIX) as name:
            yield name

    @pytest.fixture
    def svcnet_backend_factory(self, request: pytest.FixtureRequest) -> Iterator[Any]:
        """``make_backend(node)`` for ``--svcnet-backend`` (default: memory); kernel
        backends get a fresh namespace per instance, deleted after the test."""
        name = request.config.getoption("--svcnet-backend") or "memory"
        with backend_factory(name) as factory:
            yield factory
