"""svcnet.scenario: loading (strict shape), comparing, running, reporting."""

from __future__ import annotations

import glob
import json
import pathlib
import textwrap
from fractions import Fraction

import pytest

from svcnet import scenario as sc
from svcnet.backend import Backend, BackendFactory
from svcnet.errors import ScenarioError
from svcnet.model import ClusterConfig, Protocol
from svcnet.probe import Outcome, Probe, SourceKind, Target, Verdict

SHARED_EXAMPLES = str(
    __import__("pathlib").Path(__file__).resolve().parents[1] / "svcnet" / "scenarios" / "examples"
)

EXAMPLES = sorted(glob.glob(SHARED_EXAMPLES + "/*.yaml"))
HERE = pathlib.Path(__file__).resolve().parent

NODE_A = (
    "{apiVersion: v1, kind: Node, metadata: {name: node-a}, spec: {podCIDR: 10.244.1.0/24},"
    " status: {addresses: [{type: InternalIP, address: 192.168.56.11}]}}"
)
HEADER = "apiVersion: svcnet/v1alpha1\nkind: Scenario\nname: t\n"


def scenario_text(steps: str, header: str = HEADER) -> str:
    return header + "steps:\n" + textwrap.indent(textwrap.dedent(steps), "  ")


def web_cluster(extra_steps: str = "") -> str:
    return scenario_text(f"""\
        - apply:
            - {NODE_A}
            - apiVersion: v1
              kind: Pod
              metadata: {{name: web-1, namespace: default, labels: {{app: web}}}}
              spec:
                nodeName: node-a
                containers: [{{name: w, ports: [{{containerPort: 8080}}]}}]
              status: {{podIP: 10.244.1.10, conditions: [{{type: Ready, status: "True"}}]}}
            - apiVersion: v1
              kind: Pod
              metadata: {{name: client, namespace: default}}
              spec: {{nodeName: node-a, containers: [{{name: c}}]}}
              status: {{podIP: 10.244.1.20, conditions: [{{type: Ready, status: "True"}}]}}
            - apiVersion: v1
              kind: Service
              metadata: {{name: web, namespace: default}}
              spec:
                selector: {{app: web}}
                clusterIP: 10.96.0.10
                ports: [{{port: 80, targetPort: 8080, nodePort: 30080}}]
                type: NodePort
        """) + textwrap.indent(textwrap.dedent(extra_steps), "  ")


def write(tmp_path: pathlib.Path, text: str, name: str = "s.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# -- loading ---------------------------------------------------------------------------


def test_load_example_files() -> None:
    assert EXAMPLES, "the shared examples are missing"
    for path in EXAMPLES:
        s = sc.load_scenario(path)
        assert s.path == path
        assert s.steps and s.steps[0].index == 1


def test_load_reads_probe_and_defaults() -> None:
    s = sc.parse_scenario(
        scenario_text("""\
        - expect:
            - name: n
              from: {pod: default/client, via: node-b}
              to: {ip: "fd00::0a", port: 80}
              result:
                verdict: forward
                endpoints: ["[fd00:0:0::1]:8080", 10.1.2.3:80]
                masquerade: {"[fd00::1]:8080": true, 10.1.2.3:80: false}
                sticky: true
        """),
        "f.yaml",
    )
    assert s.config == ClusterConfig()
    (probe,) = s.steps[0].probes
    assert probe.source == sc.Source(pod="default/client", via="node-b")
    assert probe.dst_ip == "fd00::a" and probe.protocol is Protocol.TCP
    assert probe.expected.endpoints == {"[fd00::1]:8080", "10.1.2.3:80"}
    assert probe.expected.masquerade_of("[fd00::1]:8080") is True
    assert probe.expected.masquerade_of("10.1.2.3:80") is False
    assert probe.expected.sticky is True


def test_load_config() -> None:
    s = sc.parse_scenario(
        HEADER
        + textwrap.dedent("""\
        config:
          serviceCIDRs: [10.96.0.0/16, "fd00:96::/108"]
          nodePortRange: 30000-30010
          masqueradeAll: true
          clusterDomain: example.org
        steps:
          - delete: [{kind: Pod, namespace: default, name: x}]
        """)
    )
    assert s.config.service_cidrs == ("10.96.0.0/16", "fd00:96::/108")
    assert s.config.node_port_range == (30000, 30010)
    assert s.config.masquerade_all is True
    assert s.config.cluster_domain == "example.org"
    assert s.config.cluster_cidrs == ClusterConfig().cluster_cidrs


BAD = [
    (
        "apiVersion: v1\nkind: Scenario\nname: t\nsteps: [{dns: []}]",
        "apiVersion must be svcnet/v1alpha1",
    ),
    ("apiVersion: svcnet/v1alpha1\nkind: Test\nname: t\nsteps: []", "kind must be Scenario"),
    ("apiVersion: svcnet/v1alpha1\nkind: Scenario\nname: Not_Kebab\nsteps: []", "kebab-case"),
    ("apiVersion: svcnet/v1alpha1\nkind: Scenario\nsteps: []", "missing required key 'name'"),
    (HEADER + "steps: []", "steps must be a non-empty list"),
    (HEADER + "bogus: 1\nsteps: [{dns: []}]", "unknown key(s) bogus"),
    (HEADER + "config: {nodePortRange: 30000}\nsteps: [{delete: [{}]}]", "nodePortRange"),
    (HEADER + "config: {serviceCIDRs: [nope]}\nsteps: [{delete: [{}]}]", "not a CIDR"),
    (HEADER + "steps: [{apply: [{}], delete: [{}]}]", "step 1: a step needs exactly one of"),
    (HEADER + "steps: [{}]", "step 1: a step needs exactly one of"),
    (HEADER + "steps: [{delete: [{}], error: x}]", "step 1: error: is only allowed on an apply"),
    (HEADER + "steps: [{apply: [], error: x}]", "must be a non-empty list"),
    (HEADER + "steps: [{apply: [1]}]", "expected a manifest"),
    ("steps: [\n", "not valid YAML"),
    ("[1, 2]", "expected a mapping"),
]

PROBE = "{from: %s, to: %s, result: %s}"
BAD_PROBES = [
    (PROBE % ("{pod: client}", "{ip: 10.0.0.1, port: 80}", "{verdict: pass}"), "NAMESPACE/NAME"),
    (
        PROBE % ("{node: a, pod: b/c}", "{ip: 10.0.0.1, port: 80}", "{verdict: pass}"),
        "exactly one of",
    ),
    (PROBE % ("{external: 1.2.3.4}", "{ip: 10.0.0.1, port: 80}", "{verdict: pass}"), "needs via"),
    (
        PROBE % ("{external: nope, via: a}", "{ip: 10.0.0.1, port: 80}", "{verdict: pass}"),
        "not an IP address",
    ),
    (
        PROBE % ("{node: a, via: b}", "{ip: 10.0.0.1, port: 80}", "{verdict: pass}"),
        "via is not allowed",
    ),
    (PROBE % ("{node: a}", "{ip: 10.0.0.1, port: 0}", "{verdict: pass}"), "port must be"),
    (
        PROBE % ("{node: a}", "{ip: 10.0.0.1, port: 80, protocol: ICMP}", "{verdict: pass}"),
        "protocol",
    ),
    (PROBE % ("{node: a}", "{ip: 10.0.0.1, port: 80}", "{verdict: accept}"), "verdict must be"),
    (
        PROBE % ("{node: a}", "{ip: 10.0.0.1, port: 80}", "{verdict: forward, masquerade: false}"),
        "needs endpoints",
    ),
    (
        PROBE
        % ("{node: a}", "{ip: 10.0.0.1, port: 80}", "{verdict: forward, endpoints: [1.2.3.4:80]}"),
        "needs masquerade",
    ),
    (
        PROBE
        % (
            "{node: a}",
            "{ip: 10.0.0.1, port: 80}",
            "{verdict: forward, endpoints: [1.2.3.4], masquerade: false}",
        ),
        "is not IP:PORT",
    ),
    (
        PROBE
        % (
            "{node: a}",
            "{ip: 10.0.0.1, port: 80}",
            "{verdict: forward, endpoints: [1.2.3.4:80], masquerade: {1.2.3.5:80: true}}",
        ),
        "exactly the listed endpoints",
    ),
    (
        PROBE % ("{node: a}", "{ip: 10.0.0.1, port: 80}", "{verdict: drop, endpoints: []}"),
        "only go with verdict forward",
    ),
    ("{from: {node: a}, to: {ip: 10.0.0.1, port: 80}}", "missing required key 'result'"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_load_rejects_bad_shape(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        sc.parse_scenario(text, "bad.yaml")
    assert str(info.value).startswith("bad.yaml: ")
    assert message in str(info.value)


@pytest.mark.parametrize(("probe", "message"), BAD_PROBES)
def test_load_rejects_bad_probe(probe: str, message: str) -> None:
    text = scenario_text(f"- delete: [{{kind: Pod, namespace: d, name: x}}]\n- expect: [{probe}]\n")
    with pytest.raises(ScenarioError) as info:
        sc.parse_scenario(text, "bad.yaml")
    assert "bad.yaml: step 2: expect[0]" in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("{query: a, type: MX, answer: []}", "type must be one of"),
        ("{query: a, type: A}", "answer is required"),
        ("{query: a, type: A, rcode: NOPE}", "rcode must be one of"),
        ("{from: {node: a}, query: a, type: A, answer: []}", "unknown key(s) node"),
    ],
)
def test_load_rejects_bad_dns(query: str, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        sc.parse_scenario(scenario_text(f"- dns: [{query}]\n"), "bad.yaml")
    assert "step 1: dns[0]" in str(info.value) and message in str(info.value)


def test_load_missing_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        sc.load_scenario(tmp_path / "nope.yaml")


# -- comparing -------------------------------------------------------------------------


def expected(**kw: object) -> sc.Expected:
    return sc.Expected(**kw)  # type: ignore[arg-type]


def test_compare_forward() -> None:
    exp = expected(
        verdict=Verdict.FORWARD,
        endpoints=frozenset({"10.0.0.1:80", "10.0.0.2:80"}),
        masquerade=False,
    )
    good = Outcome.forward([("10.0.0.1", 80, False), ("10.0.0.2", 80, False)])
    assert sc.compare(exp, good) == []
    assert sc.compare(exp, Outcome(Verdict.REJECT)) == [
        "verdict: expected forward, observed reject"
    ]
    masq = Outcome.forward([("10.0.0.1", 80, True), ("10.0.0.2", 80, False)])
    assert sc.compare(exp, masq) == [
        "masquerade towards 10.0.0.1:80: expected false, observed true"
    ]
    (problem,) = sc.compare(
        exp, Outcome.forward([("10.0.0.1", 80, False), ("10.0.0.3", 80, False)])
    )
    assert problem == "endpoints: missing 10.0.0.2:80; unexpected 10.0.0.3:80"
    skewed = Outcome(
        Verdict.FORWARD,
        [
            Target("10.0.0.1", 80, False, Fraction(3, 4)),
            Target("10.0.0.2", 80, False, Fraction(1, 4)),
        ],
    )
    assert "not equally likely" in sc.compare(exp, skewed)[0]
    assert sc.compare(exp, skewed, exact_probabilities=False) == []


def test_compare_masquerade_map_and_sticky() -> None:
    exp = expected(
        verdict=Verdict.FORWARD,
        endpoints=frozenset({"10.0.0.1:80", "10.0.0.2:80"}),
        masquerade=(("10.0.0.1:80", True), ("10.0.0.2:80", False)),
        sticky=True,
    )
    out = Outcome.forward([("10.0.0.1", 80, True), ("10.0.0.2", 80, False)], affinity_timeout=10)
    assert sc.compare(exp, out) == []
    out = Outcome.forward([("10.0.0.1", 80, True), ("10.0.0.2", 80, False)])
    assert sc.compare(exp, out) == ["sticky: expected true, observed false"]


def test_compare_normalises_ipv6() -> None:
    exp = expected(verdict=Verdict.FORWARD, endpoints=frozenset({"[fd00::1]:80"}), masquerade=False)
    assert sc.compare(exp, Outcome.forward([("fd00:0::1", 80, False)])) == []


# -- reporting -------------------------------------------------------------------------


def result(status: sc.Status, **kw: str) -> sc.ExpectationResult:
    return sc.ExpectationResult("f.yaml", 2, 1, "probe", "a probe", status, **kw)


def test_report_counts_and_last_line() -> None:
    results = [
        sc.ScenarioResult(
            "f.yaml",
            "t",
            (
                result(sc.Status.PASSED),
                result(
                    sc.Status.FAILED,
                    probe="from node a to 10.0.0.1:80/TCP",
                    expected="reject",
                    observed="drop",
                    reason="verdict differs",
                ),
                result(sc.Status.SKIPPED, reason="why not"),
            ),
        )
    ]
    text = sc.format_report(results)
    lines = text.splitlines()
    assert lines[-1] == "1 passed, 1 failed, 1 skipped"
    assert "FAILED f.yaml step 2, probe 1: a probe" in lines
    assert "  probe:    from node a to 10.0.0.1:80/TCP" in lines
    assert "  expected: reject" in lines and "  observed: drop" in lines
    assert "SKIPPED f.yaml step 2, probe 1: a probe: why not" in lines
    only_passed = [sc.ScenarioResult("f.yaml", "t", (result(sc.Status.PASSED),))]
    assert sc.format_report(only_passed) == "1 passed, 0 failed"
    doc = json.loads(sc.results_to_json(results))
    assert doc["totals"] == {"passed": 1, "failed": 1, "skipped": 1}
    assert [r["status"] for r in doc["results"]] == ["passed", "failed", "skipped"]


def test_unloadable_file_fails_its_expectations(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, HEADER + "steps:\n  - expect: [{}, {}]\n  - dns: [{}]\n")
    (res,) = sc.run_files([path], lambda node: pytest.fail("no backend may be made"))
    assert res.failed == 4 and res.passed == 0  # the file, then its three expectations
    assert "step 1: expect[0]" in res.results[0].reason
    assert sc.format_report([res]).splitlines()[-1] == "0 passed, 4 failed"


# -- running (needs svcnet.state and the memory backend) -----------------------------------------


@pytest.fixture()
def memory() -> BackendFactory:
    from svcnet.backend import load_backend

    cls = load_backend("memory")
    return lambda node: cls(node)


class Recording:
    """A factory that records backend life cycles (wraps the memory backend)."""

    def __init__(self) -> None:
        from svcnet.backend import load_backend

        self.cls = load_backend("memory")
        self.made: list[str] = []
        self.cleaned: list[str] = []

    def __call__(self, node: str) -> Backend:
        backend = self.cls(node)
        self.made.append(node)
        original = backend.cleanup

        def cleanup() -> None:
            self.cleaned.append(node)
            original()

        backend.cleanup = cleanup  # type: ignore[method-assign]
        return backend


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: pathlib.Path(p).name)
def test_scenario_files_pass_on_memory(path: str, memory: BackendFactory) -> None:
    res = sc.run_scenario(sc.load_scenario(path), memory)
    assert res.failed == 0, sc.format_report([res])
    assert res.passed > 0
    assert all(r.status is sc.Status.PASSED for r in res.results if r.kind == "dns")


def test_examples_counted_together(memory: BackendFactory) -> None:
    results = sc.run_files(EXAMPLES, memory)
    passed, failed, skipped = sc.totals(results)
    probes = sum(
        len(s.probes) + (s.error is not None) for p in EXAMPLES for s in sc.load_scenario(p).steps
    )
    queries = sum(len(s.queries) for p in EXAMPLES for s in sc.load_scenario(p).steps)
    assert failed == 0
    assert passed + skipped == probes + queries
    assert sc.format_report(results).splitlines()[-1].startswith(f"{passed} passed, 0 failed")


def test_wrong_expectation_is_reported(tmp_path: pathlib.Path, memory: BackendFactory) -> None:
    path = write(
        tmp_path,
        web_cluster("""\
        - expect:
            - name: wrong on purpose
              from: {pod: default/client}
              to: {ip: 10.96.0.10, port: 80}
              result: {verdict: forward, endpoints: [10.244.1.99:8080], masquerade: false}
            - name: right
              from: {pod: default/client}
              to: {ip: 10.96.0.10, port: 80}
              result: {verdict: forward, endpoints: [10.244.1.10:8080], masquerade: false}
        """),
    )
    (res,) = sc.run_files([path], memory)
    assert (res.passed, res.failed) == (1, 1)
    bad = res.results[0]
    assert bad.status is sc.Status.FAILED and bad.step == 2 and bad.item == 1
    assert "missing 10.244.1.99:8080" in bad.reason and "unexpected 10.244.1.10:8080" in bad.reason
    assert "10.244.1.20" in bad.probe and "on node-a" in bad.probe
    assert bad.observed.startswith("forward to {10.244.1.10:8080")
    report = sc.format_report([res])
    assert f"FAILED {path} step 2, probe 1: wrong on purpose" in report


def test_unexpected_apply_failure_fails_the_rest(
    tmp_path: pathlib.Path, memory: BackendFactory
) -> None:
    path = write(
        tmp_path,
        web_cluster("""\
        - apply:
            - {apiVersion: v1, kind: Service, metadata: {name: other, namespace: default},
               spec: {type: NodePort, selector: {a: b}, ports: [{port: 80, nodePort: 30080}]}}
        - expect:
            - {from: {node: node-a}, to: {ip: 10.96.0.10, port: 80}, result: {verdict: reject}}
        - dns:
            - {query: web.default.svc.cluster.local, type: A, answer: [10.96.0.10]}
        """),
    )
    (res,) = sc.run_files([path], memory)
    assert res.failed == 3 and res.passed == 0
    assert res.results[0].kind == "apply" and "30080" in res.results[0].reason
    assert all(r.reason == "not run: step 2 failed" for r in res.results[1:])


def test_expected_error(tmp_path: pathlib.Path, memory: BackendFactory) -> None:
    other = (
        "{apiVersion: v1, kind: Service, metadata: {name: other, namespace: default},"
        " spec: {type: NodePort, selector: {a: b}, ports: [{port: 80, nodePort: %d}]}}"
    )
    path = write(
        tmp_path,
        web_cluster(f"""\
        - apply: [{other % 30080}]
          error: ALREADY ALLOCATED
        - apply: [{other % 30080}]
          error: some other words
        - apply: [{other % 30081}]
          error: "30081"
        - expect:
            - from: {{node: node-a}}
              to: {{ip: 192.168.56.11, port: 30081}}
              result: {{verdict: pass}}
        """),
    )
    (res,) = sc.run_files([path], memory)
    kinds = [(r.kind, r.status) for r in res.results]
    assert kinds == [
        ("error", sc.Status.PASSED),
        ("error", sc.Status.FAILED),
        ("error", sc.Status.FAILED),
        ("probe", sc.Status.PASSED),
    ], sc.format_report([res])
    assert res.results[1].reason == "the error message differs"
    assert res.results[2].observed == "accepted"


def test_backends_follow_nodes(tmp_path: pathlib.Path) -> None:
    node_b = NODE_A.replace("node-a", "node-b").replace(".1.0/24", ".2.0/24").replace(".11", ".12")
    path = write(
        tmp_path,
        scenario_text(f"""\
        - apply: [{NODE_A}]
        - apply: [{node_b}]
        - delete: [{{kind: Node, name: node-a}}]
        - expect:
            - {{from: {{external: 1.2.3.4, via: node-a}}, to: {{ip: 10.96.0.1, port: 1}},
               result: {{verdict: drop}}}}
            - {{from: {{external: 1.2.3.4, via: node-b}}, to: {{ip: 10.96.0.1, port: 1}},
               result: {{verdict: drop}}}}
        """),
    )
    factory = Recording()
    (res,) = sc.run_files([path], factory)
    assert factory.made == ["node-a", "node-b"]
    assert factory.cleaned == ["node-a", "node-b"]
    assert [r.status for r in res.results] == [sc.Status.FAILED, sc.Status.PASSED]
    assert res.results[0].reason == "Node node-a not found"


def test_backends_cleaned_up_on_crash(tmp_path: pathlib.Path) -> None:
    path = write(
        tmp_path,
        web_cluster("""\
        - expect:
            - {from: {node: node-a}, to: {ip: 10.96.0.10, port: 80}, result: {verdict: reject}}
        """),
    )
    factory = Recording()

    class Boom(Exception):
        pass

    def make(node: str) -> Backend:
        backend = factory(node)

        def evaluate(probe: object) -> Outcome:
            raise Boom("kaboom")

        backend.evaluate = evaluate  # type: ignore[assignment, method-assign]
        return backend

    (res,) = sc.run_files([path], make)
    assert factory.cleaned == ["node-a"]
    assert res.failed == 1 and "Boom: kaboom" in res.results[0].reason


def test_backend_disagreeing_with_semantics_fails(tmp_path: pathlib.Path) -> None:
    path = write(
        tmp_path,
        web_cluster("""\
        - expect:
            - {from: {node: node-a}, to: {ip: 10.96.0.10, port: 80}, result: {verdict: reject}}
        """),
    )
    factory = Recording()

    def make(node: str) -> Backend:
        backend = factory(node)
        backend.evaluate = lambda probe: Outcome(Verdict.REJECT)  # type: ignore[method-assign]
        return backend

    (res,) = sc.run_files([path], make)
    assert res.failed == 1
    assert res.results[0].reason.startswith(sc.DISAGREES)


def test_probe_sources(tmp_path: pathlib.Path, memory: BackendFactory) -> None:
    """Pod, hostNetwork pod, node and external sources become the right Probes; a
    hostNetwork pod's packet handled by another node is external (docs/reference/semantics.md)."""
    seen: list[object] = []
    factory = Recording()

    def make(node: str) -> Backend:
        backend = factory(node)
        original = backend.evaluate

        def evaluate(probe: Probe) -> Outcome:
            seen.append(probe)
            return original(probe)

        backend.evaluate = evaluate  # type: ignore[method-assign]
        return backend

    path = write(
        tmp_path,
        web_cluster("""\
        - apply:
            - apiVersion: v1
              kind: Pod
              metadata: {name: host, namespace: default}
              spec: {nodeName: node-a, hostNetwork: true, containers: [{name: h}]}
              status: {podIP: 192.168.56.11}
            - {apiVersion: v1, kind: Node, metadata: {name: node-b},
               status: {addresses: [{type: InternalIP, address: 192.168.56.12}]}}
        - expect:
            - {from: {pod: default/client}, to: {ip: 10.96.0.10, port: 80},
               result: {verdict: reject}}
            - {from: {pod: default/host}, to: {ip: 10.96.0.10, port: 80},
               result: {verdict: reject}}
            - {from: {node: node-a}, to: {ip: 10.96.0.10, port: 80},
               result: {verdict: reject}}
            - {from: {external: 1.2.3.4, via: node-a}, to: {ip: 10.96.0.10, port: 80},
               result: {verdict: reject}}
            - {from: {pod: default/host, via: node-b}, to: {ip: 192.168.56.12, port: 30080},
               result: {verdict: reject}}
            - {from: {pod: default/client, via: node-b}, to: {ip: 192.168.56.12, port: 30080},
               result: {verdict: reject}}
        """),
    )
    sc.run_files([path], make)
    kinds = [(p.source_kind, p.source_ip, p.node) for p in seen]  # type: ignore[attr-defined]
    assert kinds == [
        (SourceKind.POD, "10.244.1.20", "node-a"),
        (SourceKind.NODE, "192.168.56.11", "node-a"),
        (SourceKind.NODE, "192.168.56.11", "node-a"),
        (SourceKind.EXTERNAL, "1.2.3.4", "node-a"),
        (SourceKind.EXTERNAL, "192.168.56.11", "node-b"),
        (SourceKind.POD, "10.244.1.20", "node-b"),
    ]


# -- kernel namespaces ---------------------------------------------------------------------


def test_dns_queries_are_answered_by_svcnet_dns(
    tmp_path: pathlib.Path, memory: BackendFactory
) -> None:
    """Queries are compared with svcnet.dns's answer: rcode and the answer set."""
    path = write(
        tmp_path,
        web_cluster("""\
        - dns:
            - {from: {pod: default/client}, query: web, type: A, answer: [10.96.0.10]}
            - {query: nothing.default.svc.cluster.local, type: A, rcode: NXDOMAIN}
            - {query: nothing.default.svc.cluster.local, type: A, answer: [10.96.0.10]}
            - {from: {pod: default/ghost}, query: web, type: A, answer: [10.96.0.10]}
        """),
    )
    (res,) = sc.run_files([path], memory)
    assert [r.status for r in res.results] == [sc.Status.PASSED] * 2 + [sc.Status.FAILED] * 2
    assert res.results[2].reason == (
        "rcode: expected NOERROR, observed NXDOMAIN; answer: missing 10.96.0.10"
    )
    assert res.results[3].reason == "pod default/ghost does not exist"
