"""Refusals carry the value (issue 16): every refusal of the cluster state names the
object, the field path and the offending value, as the API server's do
(``Service default/web: spec.ports[0].nodePort: Invalid value: 30080: ...``), and
keeps the phrase scenario files match on (``nodePort 30080 is already allocated``).
"""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from svcnet import manifests
from svcnet.errors import ConflictError, ValidationError, shown_value
from svcnet.model import (
    ClusterConfig,
    IPFamily,
    IPFamilyPolicy,
    Service,
    ServicePort,
    ServiceType,
)
from svcnet.state import Apply, ClusterState, Configure

DUAL = ClusterConfig(service_cidrs=("10.96.0.0/16", "fd00:96::/112"))


def svc(name: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("ports", [{"name": "http", "port": 80}])
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def state_of(*docs: dict[str, Any], config: ClusterConfig | None = None) -> ClusterState:
    s = ClusterState.empty(config or ClusterConfig())
    return s.step(Apply(manifests.load(list(docs)))) if docs else s


def refusal(state: ClusterState, *docs: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        state.step(Apply(manifests.load(list(docs))))
    return info.value


def check(err: ValidationError, field: str, value: object, phrase: str) -> None:
    """``err`` names the object, ``field`` and ``value`` in the API server's form,
    and still holds ``phrase``."""
    assert err.obj.startswith("Service default/") or err.obj == "ClusterConfig", err
    assert (err.field, err.value) == (field, value), str(err)
    assert str(err).startswith(f"{err.obj}: {field}: Invalid value: {shown_value(value)}: ")
    assert phrase in err.message and str(err).endswith(err.message)


BASE = state_of(
    svc("web", clusterIP="10.96.0.10", type="NodePort",
        ports=[{"name": "http", "port": 80, "nodePort": 30080}]),
    svc("hl", clusterIP="None"),
)  # fmt: skip


# -- ClusterIPs -----------------------------------------------------------------------


def test_changed_cluster_ip() -> None:
    err = refusal(
        BASE,
        svc("web", clusterIP="10.96.0.99", type="NodePort",
            ports=[{"name": "http", "port": 80, "nodePort": 30080}]),
    )  # fmt: skip
    check(err, "spec.clusterIP", "10.96.0.99", "field is immutable")
    assert str(err) == (
        'Service default/web: spec.clusterIP: Invalid value: "10.96.0.99": field is immutable'
    )  # SEMANTICS.md's example, word for word


def test_cluster_ip_service_made_headless() -> None:
    err = refusal(state_of(svc("a", clusterIP="10.96.0.20")), svc("a", clusterIP="None"))
    check(err, "spec.clusterIP", "None", "field is immutable")


def test_changed_dual_stack_cluster_ips() -> None:
    def dual(*ips: str) -> dict[str, Any]:
        return svc("d", clusterIP=ips[0], clusterIPs=list(ips), ipFamilyPolicy="RequireDualStack")

    s = state_of(dual("10.96.0.30", "fd00:96::30"), config=DUAL)
    err = refusal(s, dual("10.96.0.30", "fd00:96::31"))
    check(err, "spec.clusterIPs", ("10.96.0.30", "fd00:96::31"), "field is immutable")
    assert 'Invalid value: ["10.96.0.30", "fd00:96::31"]' in str(err)


# The manifest parser refuses some of these first (with its own messages); objects
# built in code reach the state's checks, which must name the value as well.


def model_refusal(state: ClusterState, service: Service) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        state.step(Apply((service,)))
    return info.value


def test_two_addresses_of_one_family() -> None:
    d = Service(
        "default",
        "d",
        cluster_ips=("10.96.0.30", "10.96.0.31"),
        ip_family_policy=IPFamilyPolicy.REQUIRE_DUAL_STACK,
        ports=(ServicePort(80),),
    )
    err = model_refusal(state_of(config=DUAL), d)
    check(err, "spec.clusterIPs", ("10.96.0.30", "10.96.0.31"), "at most one address per")


def test_cluster_ip_outside_the_service_cidr() -> None:
    err = refusal(BASE, svc("x", clusterIP="10.97.0.1"))
    check(err, "spec.clusterIP", "10.97.0.1", "not in the valid range of service CIDR 10.96.0.0/16")


def test_cluster_ip_already_allocated() -> None:
    err = refusal(BASE, svc("x", clusterIP="10.96.0.10"))
    assert isinstance(err, ConflictError)
    check(err, "spec.clusterIP", "10.96.0.10", "clusterIP 10.96.0.10 is already allocated")
    assert err.message.endswith("to Service default/web")


def test_ip_families_and_policies() -> None:
    err = refusal(BASE, svc("x", ipFamilies=["IPv6"]))
    check(err, "spec.ipFamilies", "IPv6", "IPv6 is not configured on this cluster")
    err = refusal(BASE, svc("x", ipFamilyPolicy="RequireDualStack"))
    check(err, "spec.ipFamilyPolicy", "RequireDualStack", "on a single-stack cluster")
    single = Service(
        "default",
        "x",
        ip_families=(IPFamily.IPv4, IPFamily.IPv6),
        ip_family_policy=IPFamilyPolicy.SINGLE_STACK,
        ports=(ServicePort(80),),
    )
    err = model_refusal(state_of(config=DUAL), single)
    check(err, "spec.ipFamilyPolicy", "SingleStack", "exactly one IP family")
    assert "(ipFamilies IPv4, IPv6)" in err.message


# -- node ports -------------------------------------------------------------------------


def node_port_svc(name: str, *node_ports: int, **spec: Any) -> dict[str, Any]:
    ports = [{"name": f"p{i}", "port": 80 + i, "nodePort": n} for i, n in enumerate(node_ports)]
    return svc(name, type=spec.pop("type", "NodePort"), ports=ports, **spec)


def node_port_model(*node_ports: int, **fields: Any) -> Service:
    ports = tuple(ServicePort(80 + i, f"p{i}", node_port=n) for i, n in enumerate(node_ports))
    return Service("default", "other", **{"type": ServiceType.NODE_PORT, **fields}, ports=ports)


def test_node_port_already_allocated() -> None:
    err = refusal(BASE, node_port_svc("other", 30081, 30080))
    assert isinstance(err, ConflictError)
    check(err, "spec.ports[1].nodePort", 30080, "nodePort 30080 is already allocated")
    assert "Invalid value: 30080: nodePort 30080 is already allocated to Service default/web" in (
        str(err)
    )


def test_node_port_out_of_range_and_duplicate() -> None:
    err = refusal(BASE, node_port_svc("other", 20000))
    check(err, "spec.ports[0].nodePort", 20000, "provided port is not in the valid range")
    err = model_refusal(BASE, node_port_model(30090, 30090))
    check(err, "spec.ports[1].nodePort", 30090, "nodePort 30090: duplicate value")


def test_node_port_on_a_cluster_ip_service() -> None:
    err = model_refusal(BASE, node_port_model(30090, type=ServiceType.CLUSTER_IP))
    check(err, "spec.ports[0].nodePort", 30090, "may not be used when `type` is 'ClusterIP'")


def test_health_check_node_port() -> None:
    lb = node_port_model(type=ServiceType.LOAD_BALANCER, health_check_node_port=30900)
    err = model_refusal(BASE, lb)
    check(err, "spec.healthCheckNodePort", 30900, "may only be set when `type` is 'LoadBalancer'")
    local = {"type": "LoadBalancer", "externalTrafficPolicy": "Local"}
    err = refusal(BASE, svc("lb", healthCheckNodePort=30080, **local))
    check(err, "spec.healthCheckNodePort", 30080, "healthCheckNodePort 30080 is already allocated")


# -- a new configuration ---------------------------------------------------------------


def reconfigure(state: ClusterState, **config: Any) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        state.step(Configure(ClusterConfig(**config)))
    return info.value


def test_new_configuration_refusals_name_the_service_and_value() -> None:
    err = reconfigure(BASE, service_cidrs=("10.100.0.0/16",))
    check(err, "spec.clusterIP", "10.96.0.10", "clusterIP 10.96.0.10 is outside the new")
    err = reconfigure(BASE, node_port_range=(31000, 31100))
    check(err, "spec.ports[0].nodePort", 30080, "nodePort 30080 is outside the new range")
    lb = state_of(svc("lb", type="LoadBalancer", loadBalancerIP="203.0.113.5"))
    err = reconfigure(lb, load_balancer_pool=("198.51.100.0/24",))
    check(err, "status.loadBalancer.ingress", ("203.0.113.5",), "outside the new loadBalancerPool")
    err = reconfigure(BASE, node_port_range=(32000, 31000))
    check(err, "nodePortRange", (32000, 31000), "invalid range 32000-31000")
    assert str(err).startswith("ClusterConfig: nodePortRange: Invalid value: [32000, 31000]: ")


# -- exhaustion: no offending value, the range is named ----------------------------------


def test_exhaustion_names_the_range_instead() -> None:
    small = ClusterConfig(service_cidrs=("10.96.0.0/30",), node_port_range=(30000, 30000))
    s = state_of(node_port_svc("a", 30000), config=small)
    with pytest.raises(ValidationError) as info:
        s.step(Apply(manifests.load([svc("b", type="NodePort")])))
    err = info.value
    assert (err.obj, err.field, err.has_value) == (
        "Service default/b",
        "spec.ports[0].nodePort",
        False,
    )
    assert str(err) == "Service default/b: spec.ports[0].nodePort: no nodePort left in 30000-30000"
    s = s.step(Apply(manifests.load([svc("c")])))  # the second and last ClusterIP
    with pytest.raises(ValidationError) as info:
        s.step(Apply(manifests.load([svc("d")])))
    assert not info.value.has_value
    assert "no IPv4 ClusterIP left in service CIDR 10.96.0.0/30" in str(info.value)


# -- the value's form and the CLI ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (30080, "30080"),
        ("10.96.0.99", '"10.96.0.99"'),
        (("a", "b"), '["a", "b"]'),
        ([1, 2], "[1, 2]"),
        (None, "null"),
        (True, "true"),
        ("", '""'),
    ],
)
def test_values_are_shown_as_the_api_server_shows_them(value: object, shown: str) -> None:
    assert shown_value(value) == shown
    err = ValidationError("Service a/b", "spec.x", "bad", value=value)
    assert str(err) == f"Service a/b: spec.x: Invalid value: {shown}: bad"
    assert err.has_value and err.value == value
    assert not ValidationError("Service a/b", "spec.x", "bad").has_value


def test_cli_apply_prints_the_refusal_with_its_value(tmp_path: Any) -> None:
    from svcnet.cli.main import cli

    store = str(tmp_path / "s.db")
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
        "spec: {type: NodePort, ports: [{port: 80, nodePort: 30080}]}\n"
    )
    second.write_text(first.read_text().replace("name: web", "name: other"))
    run = CliRunner().invoke
    assert run(cli, ["--store", store, "apply", "-f", str(first)]).exit_code == 0
    r = run(cli, ["--store", store, "apply", "-f", str(second)])
    assert r.exit_code != 0
    assert (
        "Service default/other: spec.ports[0].nodePort: Invalid value: 30080: "
        "nodePort 30080 is already allocated to Service default/web"
    ) in r.output


# -- the same refusals from a manifest (the parser refuses first) ------------------------


def parse_refusal(doc: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        manifests.load([doc])
    return info.value


def test_manifest_refusals_carry_the_value_too() -> None:
    ports = [{"name": "a", "port": 80, "nodePort": 30090}, {"name": "b", "port": 81}]
    err = parse_refusal(svc("np", type="ClusterIP", ports=ports))
    check(err, "spec.ports[0].nodePort", 30090, "may not be used when `type` is 'ClusterIP'")
    ports = [
        {"name": "a", "port": 80, "nodePort": 30090},
        {"name": "b", "port": 81, "nodePort": 30090},
    ]
    err = parse_refusal(svc("np", type="NodePort", ports=ports))
    check(err, "spec.ports[1].nodePort", 30090, "duplicate nodePort 30090/TCP")
    err = parse_refusal(svc("np", ports=[{"name": "a", "port": 80}, {"name": "a", "port": 81}]))
    check(err, "spec.ports[1].name", "a", "duplicate port name 'a'")
    err = parse_refusal(svc("np", ports=[{"name": "a", "port": 80}, {"name": "b", "port": 80}]))
    check(err, "spec.ports[1]", 80, "duplicate port 80/TCP")
    err = parse_refusal(svc("hc", healthCheckNodePort=30900))
    check(err, "spec.healthCheckNodePort", 30900, "may only be set when `type` is 'LoadBalancer'")
    two = {"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4", "IPv6"]}
    err = parse_refusal(svc("ds", **two))
    check(err, "spec.ipFamilyPolicy", "SingleStack", "must be 'RequireDualStack'")
    err = parse_refusal(svc("ds", ipFamilyPolicy="PreferDualStack", ipFamilies=["IPv4", "IPv4"]))
    check(err, "spec.ipFamilies[1]", "IPv4", "duplicate value 'IPv4'")
