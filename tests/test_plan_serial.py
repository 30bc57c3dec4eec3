"""Plans and Changes as JSON (svcnet.plan.serial): round trips over compiled random
clusters, the documented shape, stability, and refusals that name the field."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import svcnet
import svcnet.backend
import svcnet.plan
from svcnet.backend import Backend, available_backends, load_backend
from svcnet.errors import BackendNotFound, ValidationError
from svcnet.model import (
    ClusterConfig,
    ContainerPort,
    Labels,
    Node,
    Pod,
    Service,
    ServicePort,
    ServiceType,
    TrafficPolicy,
)
from svcnet.plan import (
    API_VERSION,
    CONTRACT_VERSION,
    Changes,
    Plan,
    changes_from_json,
    compile,
    contract_mismatch,
    from_json,
    plan_from_json,
    to_data,
    to_json,
)
from svcnet.state import Apply, ClusterState
from svcnet.testing.strategies import NODE_NAMES as NODES

# Whole clusters drawn with svcnet.testing.strategies, built through the state (the
# helpers live with the memory backend's tests, as for tests/test_plan.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backends" / "memory" / "tests"))
from clusters import state_clusters

FAST = settings(
    deadline=None,
    derandomize=True,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _state() -> ClusterState:
    nodes = (
        Node("node-a", addresses=("192.168.56.11", "fd00::11")),
        Node("node-b", addresses=("192.168.56.12",)),
    )
    pod = Pod(
        "default",
        "web-a",
        labels={"app": "web"},
        node_name="node-a",
        pod_ips=("10.244.1.2",),
        ready=True,
        ports=(ContainerPort(8080),),
    )
    web = Service(
        "default",
        "web",
        selector=Labels.of({"app": "web"}),
        type=ServiceType.LOAD_BALANCER,
        ports=(ServicePort(80, target_port=8080, node_port=30080),),
        cluster_ips=("10.96.0.10",),
        status_ingress=("203.0.113.5",),
        external_traffic_policy=TrafficPolicy.LOCAL,
        load_balancer_source_ranges=("192.168.56.0/24",),
    )
    return ClusterState.empty(ClusterConfig()).step(Apply((*nodes, pod, web)))


@FAST
@given(state_clusters(), st.sampled_from(NODES))
def test_plan_round_trips(state: ClusterState, node: str) -> None:
    plan = compile(state, node)
    text = to_json(plan)
    back = svcnet.plan.from_json(text)
    assert back == plan
    assert isinstance(back, Plan) and back.revision == plan.revision
    assert to_json(back) == text  # stable: the same plan, the same text
    assert plan_from_json(to_json(plan, indent=2)) == plan


@FAST
@given(state_clusters(), state_clusters(), st.sampled_from(NODES))
def test_changes_round_trip(a: ClusterState, b: ClusterState, node: str) -> None:
    old, new = compile(a, node), compile(b, node)
    for changes, base in ((new.diff(old), old), (new.diff(None), None), (new.diff(new), new)):
        back = changes_from_json(to_json(changes))
        assert back == changes
        # what a backend out of process makes of them: the new plan
        assert back.apply_to(base) == new


def test_the_documented_shape() -> None:
    plan = compile(_state(), "node-a")
    data = to_data(plan)
    assert (data["apiVersion"], data["kind"], data["contract"]) == (
        API_VERSION,
        "Plan",
        CONTRACT_VERSION,
    )
    assert data["revision"] == plan.revision
    assert data["settings"] == {
        "node": "node-a",
        "nodeIPs": ["192.168.56.11", "fd00::11"],
        "clusterCIDRs": list(plan.settings.cluster_cidrs),
        "serviceCIDRs": list(plan.settings.service_cidrs),
    }
    (web,) = data["services"]
    assert (web["namespace"], web["name"], web["clusterIPs"], web["proxied"]) == (
        "default",
        "web",
        ["10.96.0.10"],
        True,
    )
    (port,) = web["ports"]
    assert (port["family"], port["protocol"]) == ("IPv4", "TCP")
    assert port["frontends"] == [
        {"kind": "ClusterIP", "ip": "10.96.0.10", "port": 80},
        {"kind": "LoadBalancer", "ip": "203.0.113.5", "port": 80},
        {"kind": "NodePort", "ip": "192.168.56.11", "port": 30080},
    ]
    assert port["clusterEndpoints"] == [{"ip": "10.244.1.2", "port": 8080}]
    assert port["localEndpoints"] == [{"ip": "10.244.1.2", "port": 8080}]
    # externalTrafficPolicy Local: external sources at external frontends, local set
    assert port["routes"]["external"]["external"] == {
        "action": "forward",
        "endpoints": "local",
        "masquerade": False,
    }
    # the range holds the node's address: the LoadBalancer IP may send too
    assert port["sourceRanges"] == ["192.168.56.0/24", "203.0.113.5/32"]
    assert port["affinityTimeout"] is None
    # the text is compact JSON with sorted keys
    text = to_json(plan)
    assert json.loads(text) == data
    assert text == json.dumps(data, sort_keys=True, separators=(",", ":"))
    assert text.startswith('{"apiVersion":')


def test_the_documented_example_reads() -> None:
    doc = Path(__file__).resolve().parents[1] / "docs" / "reference" / "plan-json.md"
    text = doc.read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```json\n")[1:]]
    assert blocks, "docs/reference/plan-json.md has no ```json example"
    for block in blocks:
        value = from_json(block)
        assert json.loads(to_json(value)) == json.loads(block)


def _plan_data() -> dict[str, Any]:
    return to_data(compile(_state(), "node-a"))


@pytest.mark.parametrize(
    ("mutate", "field", "fragment"),
    [
        (lambda d: d.update(apiVersion="svcnet/v2"), "apiVersion", "must be 'svcnet/v1'"),
        (lambda d: d.update(kind="Service"), "kind", "'Plan' or 'Changes'"),
        (lambda d: d.update(contract="2.0"), "contract", "another major version"),
        (lambda d: d.update(contract="1.99"), "contract", "newer than svcnet's"),
        (lambda d: d.update(contract=1), "contract", "major.minor"),
        (lambda d: d.pop("settings"), "", "missing 'settings'"),
        (lambda d: d["services"][0].update(proxied="yes"), "services[0].proxied", "true or false"),
        (
            lambda d: d["services"][0]["ports"][0].update(protocol="ICMP"),
            "services[0].ports[0].protocol",
            "'TCP'",
        ),
        (
            lambda d: d["services"][0]["ports"][0]["routes"]["internal"]["pod"].update(
                action="accept"
            ),
            "services[0].ports[0].routes.internal.pod.action",
            "'forward'",
        ),
        (
            lambda d: d["services"][0]["ports"][0]["clusterEndpoints"][0].update(port="8080"),
            "services[0].ports[0].clusterEndpoints[0].port",
            "integer",
        ),
        (lambda d: d["services"].append(d["services"][0]), "services", "twice"),
    ],
)
def test_refusals_name_the_field(mutate: Any, field: str, fragment: str) -> None:
    data = _plan_data()
    mutate(data)
    with pytest.raises(ValidationError) as e:
        from_json(json.dumps(data))
    assert e.value.field == field and fragment in e.value.message, str(e.value)


def test_not_json_and_the_wrong_kind_are_refused() -> None:
    with pytest.raises(ValidationError, match="not JSON"):
        from_json("{nope")
    plan = compile(_state(), "node-a")
    with pytest.raises(ValidationError, match="expected 'Changes'"):
        changes_from_json(to_json(plan))
    with pytest.raises(ValidationError, match="expected 'Plan'"):
        plan_from_json(to_json(plan.diff(None)))


@pytest.mark.parametrize(
    ("theirs", "ok"),
    [
        ("1.0", True),
        ("1.1", False),
        ("2.0", False),
        ("0.9", False),
        ("1", False),
        ("1.0.0", False),
        ("01.0", False),
        (None, False),
    ],
)
def test_contract_mismatch(theirs: object, ok: bool) -> None:
    assert (contract_mismatch(theirs, "1.0") is None) is ok
    assert contract_mismatch("1.0", "1.3") is None  # an older minor is fine


def test_changes_shape() -> None:
    plan = compile(_state(), "node-a")
    changes: Changes = Plan(plan.settings).diff(plan)
    data = to_data(changes)
    assert data["kind"] == "Changes" and data["removed"] == [
        {"namespace": "default", "name": "web"}
    ]
    assert data["added"] == [] and data["replaced"] == [] and data["settingsChanged"] is False


# -- the versioned backend contract ------------------------------------------------


class _FakeEntryPoint:
    """What load_backend reads of an entry point: name, dist.version, load()."""

    def __init__(self, name: str, cls: type, version: str | None = "9.9.9") -> None:
        self.name, self._cls = name, cls
        self.dist = types.SimpleNamespace(version=version) if version else None

    def load(self) -> type:
        return self._cls


def _backend_declaring(version: str | None) -> type[Backend]:
    base = load_backend("memory")
    attrs_ = {} if version is None else {"contract": version}
    return type("Declaring", (base,), attrs_)


def _load_fake(monkeypatch: pytest.MonkeyPatch, cls: type) -> type[Backend]:
    fake = _FakeEntryPoint("fake", cls)
    monkeypatch.setattr(svcnet.backend, "entry_points", lambda group: [fake])
    return load_backend("fake")


def test_our_backends_declare_the_contract() -> None:
    for name in available_backends():
        if name in ("memory", "nftables", "iptables"):
            assert load_backend(name).contract == CONTRACT_VERSION
    assert svcnet.backend.CONTRACT_VERSION == CONTRACT_VERSION


def test_load_backend_accepts_the_same_major_and_an_older_minor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(svcnet.backend, "CONTRACT_VERSION", "1.2")
    monkeypatch.setattr(svcnet.backend, "contract_mismatch", lambda v: contract_mismatch(v, "1.2"))
    for cls in [_backend_declaring(version) for version in ("1.0", "1.2")]:
        assert _load_fake(monkeypatch, cls) is cls


@pytest.mark.parametrize(
    ("declared", "fragment"),
    [
        ("2.0", "another major version"),
        ("0.1", "another major version"),
        ("1.2", "newer than svcnet's"),
        ("one", "not of the form"),
    ],
)
def test_load_backend_refuses_a_contract_mismatch(
    monkeypatch: pytest.MonkeyPatch, declared: str, fragment: str
) -> None:
    with pytest.raises(BackendNotFound) as e:
        _load_fake(monkeypatch, _backend_declaring(declared))
    message = str(e.value)
    # names the backend, its version and contract, and svcnet's
    assert "backend 'fake'" in message and "version 9.9.9" in message
    assert f"contract {declared!r}" in message and fragment in message
    assert f"svcnet {svcnet.__version__} implements backend contract {CONTRACT_VERSION}" in (
        message
    )


def test_load_backend_refuses_a_backend_declaring_no_contract(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Undeclared(Backend):  # what a backend written before the contract had
        name = "fake"

        def _install(self, changes: Changes, target: Plan, *, full: bool) -> None: ...
        def observe(self) -> object: ...
        def evaluate(self, probe: Any) -> Any: ...
        def cleanup(self) -> None: ...

    with pytest.raises(BackendNotFound, match="declares no backend contract version"):
        _load_fake(monkeypatch, Undeclared)


# -- svcnet plan -o json -------------------------------------------------------------


def _svcnet(store: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "svcnet", "--store", str(store), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_cli_plan_output_json(tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    demo = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "demo"
    _svcnet(store, "apply", "-f", str(demo))
    one = plan_from_json(_svcnet(store, "plan", "--node", "node-a", "-o", "json"))
    assert one.node == "node-a" and one.services
    # the same plan the text form shows
    text = _svcnet(store, "plan", "--node", "node-a")
    assert text.strip() == str(one).strip()
    every = json.loads(_svcnet(store, "plan", "--output", "json"))
    plans = [svcnet.plan.from_data(d) for d in every]
    assert [p.node for p in plans if isinstance(p, Plan)] == sorted(
        {p.node for p in plans if isinstance(p, Plan)}
    )
    assert one in plans and len(plans) >= 2
