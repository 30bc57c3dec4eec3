"""``svcnet lint`` (issue 21, item 2) and the pure :func:`svcnet.lint.lint`.

Each fixture under tests/fixtures/lint/ exhibits one finding (its comment says
which); it is linted through the command (click's runner) and through the pure
function, and both must report exactly the expected findings. The repository's
examples (examples/demo, the scenario examples) lint without errors; the warnings
some scenario examples have on purpose are listed exactly. Where a finding states a
behaviour (which service wins, traffic dropped), the core is asked too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from svcnet import manifests
from svcnet.cli.main import cli
from svcnet.lint import CODES, Finding, lint
from svcnet.model import ClusterConfig, KubeObject, ObjectKey, Service, ServiceType
from svcnet.plan import FrontendKind, ServiceRef, compile
from svcnet.probe import Probe, SourceKind, Verdict
from svcnet.scenario.format import StepKind, parse_scenario
from svcnet.semantics import evaluate, frontends_of
from svcnet.state import Apply, ClusterState
from svcnet.workloads import settle

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "lint"
WIDE_CONFIG = FIXTURES / "config" / "wide.yaml"
W, E = "warning", "error"

# fixture -> the findings it must give, as (severity, code, object, field)
EXPECTED: dict[str, set[tuple[str, str, str, str]]] = {
    "frontend-conflict.yaml": {
        (W, "frontend-conflict", "Service default/web", "spec.externalIPs"),
    },
    "local-no-endpoint.yaml": {
        (W, "local-no-endpoint", "Service shop/api", "spec.externalTrafficPolicy"),
        (W, "local-no-endpoint", "Service shop/api", "spec.internalTrafficPolicy"),
    },
    "selector-no-pods.yaml": {
        (W, "selector-no-pods", "Service default/web", "spec.selector"),
    },
    "target-port-undeclared.yaml": {
        (W, "target-port-undeclared", "Service default/web", "spec.ports[0].targetPort"),
    },
    "external-name-missing.yaml": {
        (W, "external-name-missing", "Service default/db-alias", "spec.externalName"),
    },
    "out-of-range.yaml": {
        (E, "cluster-ip-range", "Service default/cip", "spec.clusterIP"),
        (E, "node-port-range", "Service default/np", "spec.ports[0].nodePort"),
        (E, "load-balancer-ip-range", "Service default/lb", "spec.loadBalancerIP"),
    },
    "refused.yaml": {
        (E, "invalid", "Service default/broken", "spec.ports[0].port"),
        (E, "conflict", "Service default/two", "spec.clusterIP"),
        (W, "selector-no-pods", "Service default/one", "spec.selector"),
    },
    "unreadable.yaml": {
        (E, "manifest", f"{FIXTURES / 'unreadable.yaml'}:4", ""),
    },
}


def brief(findings: list[Finding] | tuple[Finding, ...]) -> set[tuple[str, str, str, str]]:
    return {(f.severity, f.code, f.object, f.field) for f in findings}


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["lint", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def objects_of(name: str) -> list[KubeObject]:
    return manifests.load((FIXTURES / name).read_text(), filename=name)


def state_of(name: str) -> ClusterState:
    """The fixture's objects as ``svcnet apply`` leaves them (the kubelet reports pods)."""
    items: tuple[KubeObject, ...] = tuple(objects_of(name))
    return settle(ClusterState.empty().step(Apply(items)))


def test_every_code_has_a_fixture_and_the_documented_table() -> None:
    shown = {code for found in EXPECTED.values() for _, code, _, _ in found}
    assert shown == set(CODES)
    page = (REPO / "docs" / "reference" / "lint.md").read_text()
    for code, (severity, _) in CODES.items():
        assert f"| `{code}` | {severity} |" in page, code


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_command_reports_exactly_the_fixture_findings(name: str) -> None:
    path = str(FIXTURES / name)
    code, out = run(path)
    lines = out.splitlines()
    assert len(lines) == len(EXPECTED[name]), out
    for severity, finding_code, obj, field in EXPECTED[name]:
        where = f"{obj}: {field}: " if field else f"{obj}: "
        assert any(
            line.startswith(f"{severity}: {where}") and line.endswith(f"[{finding_code}]")
            for line in lines
        ), (finding_code, out)
    assert code == (1 if any(s == E for s, *_ in EXPECTED[name]) else 0)
    code_json, out_json = run("-o", "json", "-f", path)
    assert code_json == code
    listed = json.loads(out_json)
    assert {(f["severity"], f["code"], f["object"], f["field"]) for f in listed} == EXPECTED[name]
    assert all(f["message"] for f in listed)


@pytest.mark.parametrize(
    "name", sorted(n for n in EXPECTED if n not in ("refused.yaml", "unreadable.yaml"))
)
def test_the_pure_function_reports_the_same(name: str) -> None:
    assert brief(lint(objects_of(name))) == EXPECTED[name]


def test_refused_objects_do_not_hide_the_others() -> None:
    # one bad document in a file: its object is an error, the others are still linted
    code, out = run(str(FIXTURES / "refused.yaml"), str(FIXTURES / "selector-no-pods.yaml"))
    assert code == 1
    assert "Service default/broken" in out and "Service default/web" in out
    assert 'Invalid value: "10.96.0.50"' in out  # the ValidationError's value


def test_the_ranges_come_from_the_config() -> None:
    code, out = run(str(FIXTURES / "out-of-range.yaml"), "--config", str(WIDE_CONFIG))
    assert (code, out) == (0, "")
    config = ClusterConfig(
        service_cidrs=("10.96.0.0/12",),
        node_port_range=(30000, 40999),
        load_balancer_pool=("198.51.100.192/26",),
    )
    assert lint(objects_of("out-of-range.yaml"), config) == ()


def test_the_conflict_winner_is_the_compilers() -> None:
    (finding,) = lint(objects_of("frontend-conflict.yaml"))
    assert "Service default/api" in finding.message and "wins" in finding.message
    plan = compile(state_of("frontend-conflict.yaml"), "node-a")

    def external(name: str) -> set[str]:
        entry = plan.services[ServiceRef("default", name)]
        kinds = (FrontendKind.EXTERNAL_IP,)
        return {f.ip for p in entry.ports for f in p.frontends if f.kind in kinds}

    assert external("api") == {"198.51.100.50"}
    assert external("web") == set()


def losers(findings: tuple[Finding, ...]) -> set[tuple[str, str, str, int]]:
    """(service, kind, address, port) of every losing frontend lint reports."""
    out = set()
    for f in findings:
        if f.code == "frontend-conflict":
            kind, rest = f.message.split(" ", 1)
            address, port = rest.split("/", 1)[0].rsplit(":", 1)
            out.add((f.object.split(" ", 1)[1], kind, address, int(port)))
    return out


def dropped_by_compiler(state: ClusterState) -> set[tuple[str, str, str, int]]:
    """The frontends the compiler leaves out of some node's plan because another
    service's claim on the same key won (a service's conflict with itself aside)."""
    out = set()
    for node_name in state.nodes:
        plan, node = compile(state, node_name), state.nodes[node_name]
        owners: dict[tuple[str, int, str], set[str]] = {}
        for entry in plan.services.values():
            for p in entry.ports:
                for f in p.frontends:
                    ref = f"{entry.ref.namespace}/{entry.ref.name}"
                    owners.setdefault((f.ip, f.port, p.protocol.value), set()).add(ref)
        for svc in state.services.values():
            ref = f"{svc.namespace}/{svc.name}"
            if svc.type is ServiceType.EXTERNAL_NAME or svc.headless or not svc.proxied:
                continue
            for port, kind, ip, number, _ in frontends_of(svc, node):
                held = owners.get((ip, number, port.protocol.value), set())
                if ref not in held and held:
                    out.add((ref, kind, ip, number))
    return out


CONFLICT_SCENARIOS = sorted((REPO / "svcnet" / "scenarios").glob("conflict-*.yaml"))


@pytest.mark.parametrize("path", CONFLICT_SCENARIOS, ids=lambda p: p.stem)
def test_conflict_losers_are_the_frontends_the_compiler_leaves_out(path: Path) -> None:
    checked = 0
    for _, config, objects in scenario_clusters(path):
        found = lint(objects, config)
        state = settle(ClusterState.empty(config).step(Apply(tuple(objects))))
        assert losers(found) == dropped_by_compiler(state)
        checked += len(losers(found))
    assert checked, f"{path.name} shows no conflict"


def test_local_policy_drops_where_lint_says() -> None:
    state = state_of("local-no-endpoint.yaml")
    svc = state.services[("shop", "api")]
    assert isinstance(svc, Service) and svc.ports[0].node_port is not None
    verdicts = {
        node: evaluate(
            state,
            Probe(SourceKind.EXTERNAL, "198.51.100.7", node, ip, svc.ports[0].node_port),
        ).verdict
        for node, ip in (("node-a", "192.168.56.11"), ("node-b", "192.168.56.12"))
    }
    assert verdicts == {"node-a": Verdict.FORWARD, "node-b": Verdict.DROP}


def test_a_numeric_target_port_need_not_be_declared() -> None:
    findings = lint(objects_of("target-port-undeclared.yaml"))
    assert [f.field for f in findings] == ["spec.ports[0].targetPort"]


def test_stdin_and_usage() -> None:
    text = (FIXTURES / "selector-no-pods.yaml").read_text()
    result = CliRunner().invoke(cli, ["lint", "-"], input=text)
    assert result.exit_code == 0
    assert result.output.endswith("[selector-no-pods]\n")
    code, out = run()
    assert code == 2 and "give manifests" in out


# -- the examples -----------------------------------------------------------------------


def test_the_demo_example_lints_clean() -> None:
    assert run(str(REPO / "examples" / "demo")) == (0, "")


def scenario_clusters(path: Path) -> Iterator[tuple[int, ClusterConfig, list[KubeObject]]]:
    """The objects of a scenario after each apply or delete step that succeeds."""
    scenario = parse_scenario(path.read_text(), str(path))
    objects: dict[ObjectKey, KubeObject] = {}
    for step in scenario.steps:
        if step.error is not None or step.kind not in (StepKind.APPLY, StepKind.DELETE):
            continue
        if step.kind is StepKind.APPLY:
            objects.update((o.key, o) for o in manifests.load(list(step.documents)))
        else:
            for doc in step.documents:
                objects.pop(manifests.parse_key(doc), None)
        yield step.index, scenario.config, list(objects.values())


# (scenario, step) -> its warnings, there on purpose: a service before its pods, a
# DNS example of a service with none, Local policy with a node left without one
SCENARIO_WARNINGS = {
    ("dns-basics.yaml", 1): {(W, "selector-no-pods", "Service data/cache", "spec.selector")},
    ("endpoints-come-and-go.yaml", 1): {
        (W, "selector-no-pods", "Service default/queue", "spec.selector")
    },
    ("endpoints-come-and-go.yaml", 6): {
        (W, "selector-no-pods", "Service default/queue", "spec.selector")
    },
    ("nodeport-local-policy.yaml", 1): {
        (W, "local-no-endpoint", "Service shop/api", "spec.externalTrafficPolicy")
    },
}


def test_the_scenario_examples_lint_without_errors() -> None:
    examples = sorted((REPO / "svcnet" / "scenarios" / "examples").glob("*.yaml"))
    assert examples
    seen: set[tuple[str, int]] = set()
    for path in examples:
        for index, config, objects in scenario_clusters(path):
            found = brief(lint(objects, config))
            assert found == SCENARIO_WARNINGS.get((path.name, index), set()), (path, index)
            seen.add((path.name, index))
    assert set(SCENARIO_WARNINGS) <= seen
