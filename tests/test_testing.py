"""svcnet.testing: the harness catches broken backends, passes the real one, and
reports failures a person can act on."""

from __future__ import annotations

import contextlib
import random
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mutants import (
    ALL_MUTANTS,
    IgnoresSourceRanges,
    KeepsDeletedEndpoints,
    NoHairpinMasquerade,
    RejectsInsteadOfDropping,
    UnevenChoice,
)
from svcnet_memory import MemoryBackend

from svcnet import manifests
from svcnet.backend import Backend, Capabilities, available_backends, load_backend
from svcnet.errors import BackendError, BackendErrorKind, SvcnetError
from svcnet.model import IPFamily, Protocol, ServiceType
from svcnet.plan import Changes
from svcnet.probe import Outcome, SourceKind, Target, Verdict
from svcnet.scenario import run_files
from svcnet.state import Apply, ClusterState
from svcnet.testing import (
    check_error_kinds,
    default_scenario_paths,
    differences,
    make_agreement_machine,
    run_conformance,
    strategies,
)
from svcnet.testing.agreement import ShrinkBudget
from svcnet.testing.plugin import NetnsFactory, kernel_unavailable

pytest_plugins = ["pytester"]

MEMORY_EXAMPLES = 2000  # derandomised, as the harness issue asks (about 2 minutes)
MUTANT_EXAMPLES = 300


def _conformance_error(backend: type[Backend], **kw: object) -> str:
    with pytest.raises(AssertionError) as err:
        run_conformance(
            backend,
            scenario_paths=[],
            max_examples=MUTANT_EXAMPLES,
            shrink_seconds=10,  # a readable report, not the smallest one: keeps CI short
            check_observed=False,  # the probes' report (observed_plan() catches most, too)
            **kw,  # type: ignore[arg-type]
        )
    return str(err.value)


def _assert_actionable(report: str, backend: type[Backend]) -> None:
    assert f"backend {backend.name!r} FAILED" in report
    assert "probe:" in report and " -> " in report  # the probe, as str(Probe)
    assert "expected:" in report and "observed:" in report
    assert "why the reference says so" in report and "=> " in report  # semantics.explain
    assert f"({backend.name} trace)" in report
    assert "apiVersion: v1\nkind: Node" in report  # the cluster as Kubernetes YAML
    assert "kind: Service" in report
    assert f"svcnet scenario run repro.yaml --backend {backend.name}" in report


def _replay(report: str, tmp_path: Path) -> str:
    """The report's replay scenario, saved to a file."""
    text = report.split("--backend", 1)[1].split("\n---\n", 1)[1]
    path = tmp_path / "repro.yaml"
    path.write_text(text)
    return str(path)


# What each mutant's report must say differs.
DIFFERS = {
    NoHairpinMasquerade: "differs:   masquerade towards",
    RejectsInsteadOfDropping: "differs:   verdict: expected drop, observed reject",
    IgnoresSourceRanges: "differs:   verdict: expected drop, observed ",
    KeepsDeletedEndpoints: "differs:   endpoints unexpected",
    UnevenChoice: "differs:   probability of",
}


@pytest.mark.parametrize("mutant", ALL_MUTANTS, ids=lambda m: m.name)
def test_each_mutant_fails_with_an_actionable_report(mutant: type[Backend], tmp_path: Path) -> None:
    report = _conformance_error(mutant)
    _assert_actionable(report, mutant)
    assert DIFFERS[mutant] in report
    # The replay scenario reproduces the failure on the mutant and passes on memory.
    repro = _replay(report, tmp_path)
    assert not all(r.ok for r in run_files([repro], mutant))
    assert all(r.ok for r in run_files([repro], MemoryBackend)), report


def test_uneven_choice_passes_when_probabilities_are_not_exact() -> None:
    run_conformance(
        UnevenChoice,
        max_examples=50,
        scenario_paths=[],
        capabilities=Capabilities(exact_probabilities=False),
    )


def test_scenario_files_catch_a_mutant() -> None:
    with pytest.raises(AssertionError) as err:
        run_conformance(NoHairpinMasquerade, max_examples=1)
    assert "scenario files: backend 'mutant-no-hairpin' fails some" in str(err.value)
    assert "hairpin" in str(err.value)


def test_memory_backend_passes() -> None:
    run_conformance(MemoryBackend, max_examples=MEMORY_EXAMPLES, derandomize=True)


def test_default_scenarios_are_the_checkouts() -> None:
    paths = default_scenario_paths()
    assert paths and all(p.suffix == ".yaml" for p in paths)
    assert any(p.name == "hairpin-clusterip-masquerades-self.yaml" for p in paths)


def test_agreement_machine_as_a_test_case() -> None:
    machine = make_agreement_machine(MemoryBackend, probes_per_step=2)
    assert machine.__name__ == "AgreementMachine[memory]"
    machine.TestCase.settings = settings(max_examples=5, deadline=None, database=None)
    machine.TestCase().runTest()


# -- strategies -------------------------------------------------------------------


def test_digits_zero_decodes_to_first_choices() -> None:
    config = strategies.draw_config(strategies.Digits(0))
    assert config.families == (IPFamily.IPv4,)
    svc = strategies.draw_service(strategies.Digits(0), config)
    assert svc.type is ServiceType.CLUSTER_IP and svc.ports[0].protocol is Protocol.TCP
    objects = strategies.draw_cluster_objects(strategies.Digits(0), config)
    assert [o.name for o in objects] == ["node-a", "p0", "web"]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_generated_objects_survive_their_manifests(data: st.DataObject) -> None:
    config = data.draw(strategies.configs())
    for obj in data.draw(strategies.cluster_objects(config)):
        try:
            (parsed,) = manifests.load(manifests.to_manifest(obj))
        except SvcnetError:
            continue  # refused like Kubernetes would: fine, the harness goes on
        assert parsed.name == obj.name


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_events_are_mostly_accepted_and_probes_aim_at_frontends(data: st.DataObject) -> None:
    config = data.draw(strategies.configs())
    state = ClusterState.empty(config)
    with contextlib.suppress(SvcnetError):
        state = state.step(Apply(tuple(data.draw(strategies.cluster_objects(config)))))
    accepted = 0
    for _ in range(10):
        try:
            state = state.step(data.draw(strategies.events(state)))
            accepted += 1
        except SvcnetError:
            pass
    assert accepted >= 3
    if state.nodes:
        probe = data.draw(strategies.probes(state))
        assert probe.node in state.nodes


def test_probe_space_covers_every_frontend_and_source_kind() -> None:
    config = strategies.draw_config(strategies.Digits(1))  # IPv4 + IPv6
    rng = random.Random(7)
    for _ in range(100):  # the first accepted cluster with frontends
        seed = strategies.Digits(rng.getrandbits(640))
        try:
            state = ClusterState.empty(config).step(
                Apply(tuple(strategies.draw_cluster_objects(seed, config)))
            )
        except SvcnetError:
            continue
        if strategies.frontends(state):
            break
    space = strategies.probe_space(state)
    fronts = strategies.frontends(state)
    assert fronts and space.kinds[0] == tuple(fronts)
    sources = {s for dst in fronts for s in space.sources(dst)}
    assert {s[2] for s in sources} == set(state.nodes)  # every node handles some
    kinds = {s[0] for s in sources}
    assert {SourceKind.NODE, SourceKind.EXTERNAL} <= kinds
    if any(p.pod_ips and not p.host_network for p in state.pods.values()):
        assert SourceKind.POD in kinds


def test_differences_itemise() -> None:
    a = Outcome.forward([("10.0.0.1", 80, False), ("10.0.0.2", 80, False)], 60)
    half = next(iter(a.targets)).probability
    b = Outcome(Verdict.FORWARD, {Target("10.0.0.1", 80, True, half)})
    found = differences(a, b, exact_probabilities=True)
    assert "endpoints missing: 10.0.0.2:80" in found
    assert any(d.startswith("session affinity") for d in found)
    drop, reject = Outcome(Verdict.DROP), Outcome(Verdict.REJECT)
    assert differences(drop, reject, exact_probabilities=True) == [
        "verdict: expected drop, observed reject"
    ]


# -- the pytest plugin ------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def plugin_args(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Run sub-pytests with exactly our plugin (autoload off: no double registration,
    and independent of whether this checkout's entry points are installed)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("PYTHONPATH", f"{REPO}:{REPO / 'tests'}")
    return ["-p", "svcnet.testing.plugin", "-p", "no:cacheprovider"]


def test_plugin_adds_a_conformance_item(pytester: pytest.Pytester, plugin_args: list[str]) -> None:
    pytester.makepyfile("def test_nothing():\n    assert True\n")
    scenarios = Path(__file__).resolve().parents[1] / "svcnet" / "scenarios"
    scenario = scenarios / "clusterip-forwards-per-port.yaml"
    result = pytester.runpytest_subprocess(
        "--svcnet-backend",
        "memory",
        "--svcnet-max-examples",
        "5",
        "--svcnet-scenarios",
        str(scenario),
        "-v",
        *plugin_args,
    )
    result.stdout.fnmatch_lines(["*svcnet_conformance?memory? PASSED*"])
    assert result.ret == 0


def test_plugin_reports_a_failing_backend(
    pytester: pytest.Pytester, plugin_args: list[str]
) -> None:
    pytester.makeconftest(
        "from mutants import NoHairpinMasquerade\n"
        "import svcnet.testing.plugin as p\n"
        "import contextlib\n"
        "@contextlib.contextmanager\n"
        "def factory(name):\n"
        "    yield NoHairpinMasquerade\n"
        "p.backend_factory = factory\n"
    )
    result = pytester.runpytest_subprocess(
        "--svcnet-backend",
        "memory",
        "--svcnet-max-examples",
        "200",
        "--svcnet-scenarios",
        str(pytester.path),
        *plugin_args,
    )
    result.stdout.fnmatch_lines(["*masquerade towards*", "*apiVersion: v1*"])
    assert result.ret == 1


def test_kernel_marker_skips_with_a_reason(
    pytester: pytest.Pytester, plugin_args: list[str]
) -> None:
    pytester.makepyfile("import pytest\n@pytest.mark.kernel\ndef test_k():\n    pass\n")
    result = pytester.runpytest_subprocess("-ra", *plugin_args)
    if kernel_unavailable() is None:
        result.assert_outcomes(passed=1)
    else:
        result.assert_outcomes(skipped=1)
        result.stdout.fnmatch_lines(["*kernel test: *"])


@pytest.mark.kernel
def test_svcnet_netns_fixture(svcnet_netns: str) -> None:
    assert svcnet_netns.startswith("svcnet-t-")
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert svcnet_netns in listed


@pytest.mark.kernel
def test_netns_factory_gives_each_backend_its_own_namespace() -> None:
    with NetnsFactory(MemoryBackend) as factory:
        a, b = factory("node-a"), factory("node-b")
        assert a.netns and b.netns and a.netns != b.netns
        assert a.netns.startswith("svcnet-t-")
        factory.release(a)
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert a.netns not in listed and b.netns in listed
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert b.netns not in listed


def test_backend_factory_fixture_defaults_to_memory(svcnet_backend_factory: object) -> None:
    assert svcnet_backend_factory is MemoryBackend


# -- error kinds ---------------------------------------------------------------------


class StateForMissing(MemoryBackend):
    """Refuses removing a missing service with the wrong kind (as memory once did)."""

    name = "mutant-state-for-missing"

    def apply(self, changes: Changes) -> None:
        installed = self.installed.services if self.installed is not None else {}
        if any(ref not in installed for ref in changes.removed):
            raise BackendError(BackendErrorKind.STATE, "remove: not installed")
        super().apply(changes)


def test_memory_refuses_mistakes_with_the_common_error_kinds() -> None:
    assert check_error_kinds(MemoryBackend) == []


def test_a_wrong_error_kind_is_reported() -> None:
    problems = check_error_kinds(StateForMissing)
    assert problems == [
        "remove a service that is not installed: expected NOT_FOUND, raised STATE "
        "(state: remove: not installed)"
    ]
    with pytest.raises(AssertionError) as err:
        run_conformance(StateForMissing, max_examples=1, scenario_paths=[])
    assert "error kinds: backend 'mutant-state-for-missing' answers mistakes differently" in str(
        err.value
    )


@pytest.mark.kernel
@pytest.mark.parametrize("name", ["nftables", "iptables"])
def test_kernel_backends_refuse_mistakes_with_the_common_error_kinds(name: str) -> None:
    if name not in available_backends():
        pytest.skip(f"backend {name!r} is not installed")
    with NetnsFactory(load_backend(name)) as factory:
        assert check_error_kinds(factory) == []


# -- the shrink budget -----------------------------------------------------------------


def test_shrink_budget_lets_only_failing_runs_go_on_once_spent() -> None:
    unbounded = ShrinkBudget(None)
    unbounded.failure(["a", "b"])
    assert unbounded.allows(["x"])
    spent = ShrinkBudget(0)
    assert spent.allows(["x"])  # no failure yet: the budget has not started
    spent.failure(["a", "b"])
    assert spent.allows(["a"]) and spent.allows(["a", "b"])
    assert not spent.allows(["x"]) and not spent.allows(["a", "c"])
    assert not spent.allows(["a", "b", "c"])


def test_a_mutant_with_no_shrink_budget_left_still_fails_with_a_report() -> None:
    with pytest.raises(AssertionError) as err:
        run_conformance(
            RejectsInsteadOfDropping,
            scenario_paths=[],
            max_examples=MUTANT_EXAMPLES,
            shrink_seconds=0,
            check_observed=False,  # the probes' report
        )
    _assert_actionable(str(err.value), RejectsInsteadOfDropping)
    assert DIFFERS[RejectsInsteadOfDropping] in str(err.value)
