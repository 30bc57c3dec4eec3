"""Tests for svcnet.manifests: parsing, validation rules, YAML, round trips, fuzzing."""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svcnet.errors import ManifestError, SvcnetError, ValidationError
from svcnet.manifests import load, parse_key, parse_object, to_manifest
from svcnet.model import (
    ContainerPort,
    EndpointSlice,
    IPFamily,
    IPFamilyPolicy,
    Kind,
    Labels,
    Node,
    ObjectKey,
    Pod,
    Protocol,
    Service,
    ServicePort,
    ServiceType,
    SessionAffinity,
    SliceEndpoint,
    SlicePort,
    TrafficDistribution,
    TrafficPolicy,
)

Doc = dict[str, Any]


def service(**spec: Any) -> Doc:
    base: Doc = {"selector": {"app": "web"}, "ports": [{"port": 80}]}
    base.update(spec)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {k: v for k, v in base.items() if v is not _DROP},
    }


_DROP = object()


def pod(**spec: Any) -> Doc:
    base: Doc = {
        "nodeName": "node-a",
        "containers": [{"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}],
    }
    base.update(spec)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"}},
        "spec": base,
        "status": {"podIP": "10.244.1.10", "conditions": [{"type": "Ready", "status": "True"}]},
    }


def node() -> Doc:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/zone": "z1"}},
        "spec": {"podCIDR": "10.244.1.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.56.11"}]},
    }


def endpoint_slice() -> Doc:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "ext-1",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "ext"},
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": ["10.0.0.5"],
                "conditions": {"ready": True},
                "nodeName": "node-a",
                "zone": "z1",
            }
        ],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def refused(doc: Any, field: str, fragment: str = "", obj: str = "") -> ValidationError:
    with pytest.raises(ValidationError) as info:
        parse_object(doc)
    err = info.value
    assert err.field == field, str(err)
    assert fragment.lower() in err.message.lower(), str(err)
    if obj:
        assert err.obj == obj
    assert str(err).startswith(err.obj)
    return err


# ------------------------------------------------------------------ happy paths


def test_service_defaults() -> None:
    svc = parse_object(service())
    assert svc == Service(
        namespace="default",
        name="web",
        selector=Labels.of({"app": "web"}),
        ports=(ServicePort(port=80),),
    )
    assert svc.affinity_timeout == 10800
    assert svc.external_traffic_policy is TrafficPolicy.CLUSTER
    assert svc.allocate_load_balancer_node_ports is True


def test_service_full() -> None:
    svc = parse_object(
        service(
            type="LoadBalancer",
            clusterIP="10.96.0.10",
            clusterIPs=["10.96.0.10", "fd00::a"],
            ipFamilies=["IPv4", "IPv6"],
            ipFamilyPolicy="RequireDualStack",
            ports=[
                {"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080},
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
            ],
            externalIPs=["198.51.100.1"],
            externalTrafficPolicy="Local",
            internalTrafficPolicy="Local",
            healthCheckNodePort=31000,
            sessionAffinity="ClientIP",
            sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}},
            loadBalancerIP="203.0.113.5",
            loadBalancerSourceRanges=["10.1.2.3/8 "],
            allocateLoadBalancerNodePorts=False,
            publishNotReadyAddresses=True,
            trafficDistribution="PreferClose",
        )
    )
    assert isinstance(svc, Service)
    assert svc.type is ServiceType.LOAD_BALANCER
    assert svc.cluster_ips == ("10.96.0.10", "fd00::a")
    assert svc.ip_families == (IPFamily.IPv4, IPFamily.IPv6)
    assert svc.ip_family_policy is IPFamilyPolicy.REQUIRE_DUAL_STACK
    assert svc.ports == (
        ServicePort(80, "http", Protocol.TCP, "http", 30080),
        ServicePort(53, "dns", Protocol.UDP, 5353, None),
    )
    assert svc.external_traffic_policy is TrafficPolicy.LOCAL
    assert svc.internal_traffic_policy is TrafficPolicy.LOCAL
    assert svc.health_check_node_port == 31000
    assert (svc.session_affinity, svc.affinity_timeout) == (SessionAffinity.CLIENT_IP, 60)
    assert svc.load_balancer_source_ranges == ("10.0.0.0/8",)
    assert not svc.allocate_load_balancer_node_ports
    assert svc.publish_not_ready_addresses and svc.traffic_distribution == "PreferClose"
    assert parse_object(to_manifest(svc)) == svc


@pytest.mark.parametrize("value", ["PreferClose", "PreferSameZone", "PreferSameNode"])
def test_traffic_distribution_values_kept_as_written(value: str) -> None:
    # Kubernetes 1.35: PreferSameZone is PreferClose's new name, PreferSameNode is GA
    svc = parse_object(service(trafficDistribution=value))
    assert isinstance(svc, Service)
    assert svc.traffic_distribution is TrafficDistribution(value)
    assert to_manifest(svc)["spec"]["trafficDistribution"] == value
    assert parse_object(to_manifest(svc)) == svc


def test_traffic_distribution_unset() -> None:
    for spec in ({}, {"trafficDistribution": ""}):
        svc = parse_object(service(**spec))
        assert isinstance(svc, Service) and svc.traffic_distribution is None
        assert "trafficDistribution" not in to_manifest(svc)["spec"]


def test_service_cluster_ip_forms() -> None:
    only_plural_none = parse_object(service(clusterIP="None", clusterIPs=["None"]))
    assert isinstance(only_plural_none, Service) and only_plural_none.headless
    headless = parse_object(service(clusterIP="None", ports=_DROP))
    assert isinstance(headless, Service)
    assert headless.headless and headless.cluster_ips == () and headless.ports == ()
    unset = parse_object(service(clusterIP=""))
    assert isinstance(unset, Service) and unset.cluster_ips == () and not unset.headless
    v6 = parse_object(service(clusterIP="FD00:0::A"))
    assert isinstance(v6, Service) and v6.cluster_ips == ("fd00::a",)


def test_selector_absent_or_empty_is_none() -> None:
    for sel in (_DROP, {}, None):
        svc = parse_object(service(selector=sel))
        assert isinstance(svc, Service) and svc.selector is None


def test_status_ingress_read() -> None:
    doc = service(type="LoadBalancer")
    doc["status"] = {
        "loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.example.com"}]}
    }
    svc = parse_object(doc)
    assert isinstance(svc, Service)
    assert svc.status_ingress == ("203.0.113.9",) and svc.load_balancer_ips == ()


def test_external_name_service() -> None:
    svc = parse_object(service(type="ExternalName", externalName="db.example.com.", ports=_DROP))
    assert isinstance(svc, Service) and svc.external_name == "db.example.com."
    assert svc.selector == Labels.of({"app": "web"})  # allowed by the API server, unused


def test_pod() -> None:
    doc = pod(
        hostNetwork=False,
        hostname="web-1",
        subdomain="web",
        containers=[
            {
                "name": "a",
                "ports": [
                    {"name": "http", "containerPort": 8080},
                    {"containerPort": 53, "protocol": "UDP"},
                ],
            },
            {"name": "b", "ports": [{"name": "http", "containerPort": 9090}]},
        ],
    )
    doc["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    doc["status"]["podIPs"] = [{"ip": "10.244.1.10"}, {"ip": "fd00:1::a"}]
    p = parse_object(doc)
    assert p == Pod(
        namespace="shop",
        name="web-1",
        labels={"app": "web"},
        node_name="node-a",
        hostname="web-1",
        subdomain="web",
        ports=(
            ContainerPort(8080, "http"),
            ContainerPort(53, "", Protocol.UDP),
            ContainerPort(9090, "http"),
        ),
        pod_ips=("10.244.1.10", "fd00:1::a"),
        ready=True,
        terminating=True,
    )
    assert parse_object(to_manifest(p)) == p


def test_pod_without_status_or_ready() -> None:
    doc = pod()
    doc["status"] = {"conditions": [{"type": "Ready", "status": "False"}]}
    p = parse_object(doc)
    assert isinstance(p, Pod) and p.pod_ips == () and not p.ready and not p.terminating


def test_node() -> None:
    doc = node()
    doc["spec"]["podCIDRs"] = ["10.244.1.0/24", "fd00:1::/64"]
    doc["status"]["addresses"] += [
        {"type": "Hostname", "address": "node-a"},
        {"type": "InternalIP", "address": "192.168.56.99"},
        {"type": "InternalIP", "address": "fd00::11"},
    ]
    n = parse_object(doc)
    assert n == Node(
        name="node-a",
        labels={"topology.kubernetes.io/zone": "z1"},
        pod_cidrs=("10.244.1.0/24", "fd00:1::/64"),
        addresses=("192.168.56.11", "fd00::11"),
    )
    assert isinstance(n, Node) and n.zone == "z1"


def test_endpoint_slice() -> None:
    es = parse_object(endpoint_slice())
    assert es == EndpointSlice(
        namespace="default",
        name="ext-1",
        service_name="ext",
        address_type=IPFamily.IPv4,
        endpoints=(SliceEndpoint(("10.0.0.5",), node_name="node-a", zone="z1"),),
        ports=(SlicePort(8080, "http"),),
        labels={"kubernetes.io/service-name": "ext"},
    )
    assert parse_object(to_manifest(es)) == es


def test_slice_condition_defaults() -> None:
    doc = endpoint_slice()
    doc["endpoints"][0]["conditions"] = {"serving": False, "terminating": True}
    es = parse_object(doc)
    assert isinstance(es, EndpointSlice)
    assert es.endpoints[0].ready and not es.endpoints[0].serving and es.endpoints[0].terminating


# ------------------------------------------------------------------ names and metadata


@pytest.mark.parametrize(
    ("mutate", "field", "fragment"),
    [
        (lambda d: d["metadata"].pop("name"), "metadata.name", "required"),
        (lambda d: d["metadata"].update(name="1web"), "metadata.name", "DNS-1035"),
        (lambda d: d["metadata"].update(name="Web"), "metadata.name", "DNS-1035"),
        (lambda d: d["metadata"].update(name="w" * 64), "metadata.name", "63"),
        (lambda d: d["metadata"].update(namespace="a.b"), "metadata.namespace", "RFC 1123 label"),
        (lambda d: d["metadata"].update(labels={"-bad": "x"}), "metadata.labels", "name part"),
        (lambda d: d["metadata"].update(labels={"a/b/c": "x"}), "metadata.labels", "prefix"),
        (
            lambda d: d["metadata"].update(labels={"Example.com/x": "x"}),
            "metadata.labels",
            "prefix",
        ),
        (lambda d: d["metadata"].update(labels={"/x": "x"}), "metadata.labels", "prefix"),
        (lambda d: d["metadata"].update(labels={"x" * 64: "x"}), "metadata.labels", "63"),
        (lambda d: d["metadata"].update(labels={"a": "x" * 64}), "metadata.labels[a]", "63"),
        (lambda d: d["metadata"].update(labels={"a": "-x"}), "metadata.labels[a]", "label"),
        (lambda d: d["metadata"].update(labels={"a": 1}), "metadata.labels[a]", "string"),
        (lambda d: d["metadata"].update(labels=["a"]), "metadata.labels", "mapping"),
        (lambda d: d.update(metadata="web"), "metadata", "mapping"),
        (lambda d: d.update(apiVersion="apps/v1"), "apiVersion", "v1"),
    ],
)
def test_metadata_rules(mutate: Callable[[Doc], object], field: str, fragment: str) -> None:
    doc = service()
    mutate(doc)
    refused(doc, field, fragment)


def test_valid_labels() -> None:
    doc = service()
    doc["metadata"]["labels"] = {
        "example.com/Name_x.y": "",
        "a": "A-b_c.9",
        "service.kubernetes.io/service-proxy-name": "other",
    }
    svc = parse_object(doc)
    assert isinstance(svc, Service) and not svc.proxied


def test_error_names_the_object() -> None:
    doc = service(ports=[{"port": 0}])
    doc["metadata"]["namespace"] = "shop"
    err = refused(doc, "spec.ports[0].port", "between 1 and 65535", obj="Service shop/web")
    assert str(err).startswith("Service shop/web: spec.ports[0].port: ")


def test_default_namespace_in_object_name() -> None:
    doc = service(type="Bogus")
    del doc["metadata"]["namespace"]
    refused(doc, "spec.type", "unsupported value", obj="Service default/web")


def test_pod_and_node_names_are_subdomains() -> None:
    doc = pod()
    doc["metadata"]["name"] = "web.1"
    assert isinstance(parse_object(doc), Pod)
    doc["metadata"]["name"] = "web_1"
    refused(doc, "metadata.name", "subdomain", obj="Pod shop/web_1")
    n = node()
    n["metadata"]["name"] = "Node-A"
    refused(n, "metadata.name", "subdomain", obj="Node Node-A")


@pytest.mark.parametrize("kind", ["StatefulSet", "", 3, None])
def test_unknown_kind(kind: object) -> None:
    doc = service()
    doc["kind"] = kind
    err = refused(doc, "kind")
    assert "Node, Pod, Service, EndpointSlice" in err.message
    if isinstance(kind, str) and kind:
        assert kind in str(err)


def test_not_a_mapping() -> None:
    docs: list[Any] = [None, [], "Service", 3]
    for doc in docs:
        with pytest.raises(ManifestError):
            parse_object(doc)


# ------------------------------------------------------------------ Service rules

SVC_RULES: list[tuple[dict[str, Any], str, str]] = [
    ({"ports": _DROP}, "spec.ports", "required"),
    ({"ports": []}, "spec.ports", "required"),
    ({"ports": [{"port": 0}]}, "spec.ports[0].port", "between 1 and 65535"),
    ({"ports": [{"port": 65536}]}, "spec.ports[0].port", "between 1 and 65535"),
    ({"ports": [{"name": "a"}]}, "spec.ports[0].port", "required"),
    ({"ports": [{"port": "80"}]}, "spec.ports[0].port", "integer"),
    ({"ports": [{"port": True}]}, "spec.ports[0].port", "integer"),
    ({"ports": [{"port": 80.0}]}, "spec.ports[0].port", "integer"),
    ({"ports": [{"port": [80]}]}, "spec.ports[0].port", "integer"),
    ({"ports": {"port": 80}}, "spec.ports", "list"),
    ({"ports": "80"}, "spec.ports", "list"),
    ({"ports": [80]}, "spec.ports[0]", "mapping"),
    ({"ports": [{"port": 80, "protocol": "ICMP"}]}, "spec.ports[0].protocol", "TCP"),
    ({"ports": [{"port": 80, "protocol": "tcp"}]}, "spec.ports[0].protocol", "unsupported"),
    ({"ports": [{"port": 80}, {"name": "b", "port": 81}]}, "spec.ports[0].name", "required"),
    ({"ports": [{"name": "a", "port": 80}, {"port": 81}]}, "spec.ports[1].name", "required"),
    (
        {"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]},
        "spec.ports[1].name",
        "duplicate",
    ),
    ({"ports": [{"name": "Http", "port": 80}]}, "spec.ports[0].name", "RFC 1123"),
    ({"ports": [{"name": "h" * 64, "port": 80}]}, "spec.ports[0].name", "63"),
    (
        {"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]},
        "spec.ports[1]",
        "duplicate port 80/TCP",
    ),
    ({"ports": [{"port": 80, "targetPort": 0}], "clusterIP": 5}, "spec.clusterIP", "string"),
    ({"ports": [{"port": 80, "targetPort": 70000}]}, "spec.ports[0].targetPort", "65535"),
    ({"ports": [{"port": 80, "targetPort": -1}]}, "spec.ports[0].targetPort", "65535"),
    ({"ports": [{"port": 80, "targetPort": "8080"}]}, "spec.ports[0].targetPort", "letter"),
    (
        {"ports": [{"port": 80, "targetPort": "my-very-long-name"}]},
        "spec.ports[0].targetPort",
        "15",
    ),
    (
        {"ports": [{"port": 80, "targetPort": "web--http"}]},
        "spec.ports[0].targetPort",
        "consecutive",
    ),
    ({"ports": [{"port": 80, "targetPort": "-http"}]}, "spec.ports[0].targetPort", "hyphen"),
    ({"ports": [{"port": 80, "targetPort": "HTTP"}]}, "spec.ports[0].targetPort", "lower"),
    ({"ports": [{"port": 80, "targetPort": True}]}, "spec.ports[0].targetPort", "number or name"),
    ({"ports": [{"port": 80, "nodePort": 30080}]}, "spec.ports[0].nodePort", "'ClusterIP'"),
    (
        {"type": "NodePort", "ports": [{"port": 80, "nodePort": -1}]},
        "spec.ports[0].nodePort",
        "65535",
    ),
    (
        {
            "type": "NodePort",
            "ports": [
                {"name": "a", "port": 80, "nodePort": 30080},
                {"name": "b", "port": 81, "nodePort": 30080},
            ],
        },
        "spec.ports[1].nodePort",
        "duplicate nodePort",
    ),
    ({"type": "LoadBalancer", "ports": [{"port": 10250}]}, "spec.ports[0].port", "kubelet"),
    ({"clusterIP": "10.96.0"}, "spec.clusterIP", "valid IP"),
    ({"clusterIP": "fe80::1%eth0"}, "spec.clusterIP", "valid IP"),
    ({"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.2"]}, "spec.clusterIPs", "must match"),
    ({"clusterIPs": ["10.96.0.2"]}, "spec.clusterIPs", "`clusterIP` is not specified"),
    ({"clusterIP": "None", "clusterIPs": ["None", "fd00::1"]}, "spec.clusterIPs", "only value"),
    (
        {"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1", "x"]},
        "spec.clusterIPs[1]",
        "valid IP",
    ),
    (
        {"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1", "10.96.0.2"]},
        "spec.clusterIPs",
        "one IP for each IP family",
    ),
    (
        {"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1", "fd00::1", "fd00::2"]},
        "spec.clusterIPs",
        "up to 2",
    ),
    ({"clusterIP": "10.96.0.1", "ipFamilies": ["IPv6"]}, "spec.clusterIPs[0]", "IPv6"),
    ({"ipFamilies": ["IPv4", "IPv4"]}, "spec.ipFamilies[1]", "duplicate"),
    ({"ipFamilies": ["IPv5"]}, "spec.ipFamilies[0]", "unsupported"),
    ({"ipFamilies": [""]}, "spec.ipFamilies[0]", "unsupported"),
    ({"ipFamilies": "IPv4"}, "spec.ipFamilies", "list"),
    ({"ipFamilyPolicy": "Dual"}, "spec.ipFamilyPolicy", "unsupported"),
    (
        {"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4", "IPv6"]},
        "spec.ipFamilyPolicy",
        "RequireDualStack",
    ),
    ({"type": "NodePort", "clusterIP": "None"}, "spec.clusterIP", "'None' for NodePort"),
    ({"type": "LoadBalancer", "clusterIP": "None"}, "spec.clusterIP", "LoadBalancer"),
    (
        {"type": "ExternalName", "externalName": "a.b", "clusterIP": "10.96.0.1"},
        "spec.clusterIP",
        "ExternalName",
    ),
    (
        {"type": "ExternalName", "externalName": "a.b", "clusterIP": "None"},
        "spec.clusterIP",
        "ExternalName",
    ),
    ({"type": "ExternalName"}, "spec.externalName", "required"),
    ({"type": "ExternalName", "externalName": "Example.COM"}, "spec.externalName", "subdomain"),
    ({"type": "ExternalName", "externalName": "a..b"}, "spec.externalName", "subdomain"),
    (
        {"type": "ExternalName", "externalName": "a.b", "ipFamilies": ["IPv4"]},
        "spec.ipFamilies",
        "ExternalName",
    ),
    (
        {"type": "ExternalName", "externalName": "a.b", "ipFamilyPolicy": "SingleStack"},
        "spec.ipFamilyPolicy",
        "ExternalName",
    ),
    (
        {"type": "ExternalName", "externalName": "a.b", "ports": [{"port": 80, "nodePort": 30001}]},
        "spec.ports[0].nodePort",
        "ExternalName",
    ),
    ({"externalTrafficPolicy": "Local"}, "spec.externalTrafficPolicy", "externally-accessible"),
    (
        {"type": "NodePort", "externalTrafficPolicy": "Global"},
        "spec.externalTrafficPolicy",
        "unsupported",
    ),
    ({"internalTrafficPolicy": "Node"}, "spec.internalTrafficPolicy", "unsupported"),
    (
        {"type": "NodePort", "externalTrafficPolicy": "Local", "healthCheckNodePort": 31000},
        "spec.healthCheckNodePort",
        "LoadBalancer",
    ),
    ({"type": "LoadBalancer", "healthCheckNodePort": 31000}, "spec.healthCheckNodePort", "'Local'"),
    (
        {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 70000},
        "spec.healthCheckNodePort",
        "65535",
    ),
    ({"sessionAffinity": "Cookie"}, "spec.sessionAffinity", "unsupported"),
    (
        {"sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10}}},
        "spec.sessionAffinityConfig",
        "must not be set",
    ),
    (
        {
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}},
        },
        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
        "greater than 0",
    ),
    (
        {
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 86401}},
        },
        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
        "86400",
    ),
    (
        {"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": 5}},
        "spec.sessionAffinityConfig.clientIP",
        "mapping",
    ),
    (
        {"type": "LoadBalancer", "loadBalancerSourceRanges": ["10.0.0.0/33"]},
        "spec.loadBalancerSourceRanges[0]",
        "CIDR",
    ),
    (
        {"type": "LoadBalancer", "loadBalancerSourceRanges": ["10.0.0.1"]},
        "spec.loadBalancerSourceRanges[0]",
        "CIDR",
    ),
    (
        {"loadBalancerSourceRanges": ["10.0.0.0/8"]},
        "spec.loadBalancerSourceRanges",
        "'LoadBalancer'",
    ),
    (
        {"allocateLoadBalancerNodePorts": False},
        "spec.allocateLoadBalancerNodePorts",
        "'LoadBalancer'",
    ),
    (
        {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": "no"},
        "spec.allocateLoadBalancerNodePorts",
        "true or false",
    ),
    ({"loadBalancerIP": "203.0.113"}, "spec.loadBalancerIP", "valid IP"),
    ({"externalIPs": ["1.2.3"]}, "spec.externalIPs[0]", "valid IP"),
    ({"externalIPs": ["127.0.0.1"]}, "spec.externalIPs[0]", "loopback"),
    ({"externalIPs": ["0.0.0.0"]}, "spec.externalIPs[0]", "unspecified"),
    ({"externalIPs": ["169.254.1.1"]}, "spec.externalIPs[0]", "link-local"),
    ({"externalIPs": ["224.0.0.1"]}, "spec.externalIPs[0]", "multicast"),
    (
        {"trafficDistribution": "PreferSameRack"},
        "spec.trafficDistribution",
        "supported values: 'PreferClose', 'PreferSameZone', 'PreferSameNode'",
    ),
    ({"publishNotReadyAddresses": "yes"}, "spec.publishNotReadyAddresses", "true or false"),
    ({"selector": {"app": 7}}, "spec.selector[app]", "string"),
    ({"selector": {"app": "a b"}}, "spec.selector[app]", "label"),
    ({"selector": "app=web"}, "spec.selector", "mapping"),
    ({"type": "clusterip"}, "spec.type", "unsupported"),
]


@pytest.mark.parametrize(("spec", "field", "fragment"), SVC_RULES)
def test_service_rules(spec: dict[str, Any], field: str, fragment: str) -> None:
    refused(service(**spec), field, fragment, obj="Service default/web")


@pytest.mark.parametrize(
    "spec",
    [
        {"clusterIP": "None", "ports": _DROP},
        {"type": "ExternalName", "externalName": "db.example.com", "ports": _DROP},
        {"type": "ExternalName", "externalName": "db", "internalTrafficPolicy": "Local"},
        {"clusterIP": "None", "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack"},
        {"externalIPs": ["198.51.100.1"], "externalTrafficPolicy": "Local"},
        {"type": "NodePort", "ports": [{"port": 80, "nodePort": 0}]},
        {
            "type": "NodePort",
            "ports": [
                {"name": "a", "port": 53, "nodePort": 30053},
                {"name": "b", "port": 53, "protocol": "UDP", "nodePort": 30053},
            ],
        },
        {"ports": [{"port": 80, "targetPort": ""}]},
        {"ports": [{"port": 80, "targetPort": "h2c"}]},
        {"ports": [{"name": "a-very-long-port-name-is-fine", "port": 80}]},
        {"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6"]},
        {"type": "", "sessionAffinity": "", "externalTrafficPolicy": None},
        {"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {}}},
        {
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 86400}},
        },
    ],
)
def test_service_accepted(spec: dict[str, Any]) -> None:
    svc = parse_object(service(**spec))
    assert isinstance(svc, Service)
    assert parse_object(to_manifest(svc)) == svc


def test_target_port_zero_or_empty_is_unset() -> None:
    for target in (0, "", None):
        svc = parse_object(service(ports=[{"port": 80, "targetPort": target}]))
        assert isinstance(svc, Service) and svc.ports[0].target_port is None


def test_client_ip_default_timeout() -> None:
    svc = parse_object(service(sessionAffinity="ClientIP"))
    assert isinstance(svc, Service) and svc.affinity_timeout == 10800


def test_status_ingress_must_be_ip() -> None:
    doc = service(type="LoadBalancer")
    doc["status"] = {"loadBalancer": {"ingress": [{"ip": "lb.example.com"}]}}
    refused(doc, "status.loadBalancer.ingress[0].ip", "valid IP")
    doc["status"] = {"loadBalancer": {"ingress": {"ip": "203.0.113.1"}}}
    refused(doc, "status.loadBalancer.ingress", "list")


# ------------------------------------------------------------------ Pod, Node, slice rules


@pytest.mark.parametrize(
    ("mutate", "field", "fragment"),
    [
        (lambda d: d["spec"].update(nodeName="Node_A"), "spec.nodeName", "subdomain"),
        (lambda d: d["spec"].update(hostname="a.b"), "spec.hostname", "label"),
        (lambda d: d["spec"].update(subdomain="A"), "spec.subdomain", "label"),
        (lambda d: d["spec"].update(hostNetwork="true"), "spec.hostNetwork", "true or false"),
        (lambda d: d["spec"].update(containers={"name": "x"}), "spec.containers", "list"),
        (
            lambda d: d["spec"]["containers"][0]["ports"][0].update(containerPort=0),
            "spec.containers[0].ports[0].containerPort",
            "between 1 and 65535",
        ),
        (
            lambda d: d["spec"]["containers"][0]["ports"][0].pop("containerPort"),
            "spec.containers[0].ports[0].containerPort",
            "required",
        ),
        (
            lambda d: d["spec"]["containers"][0]["ports"][0].update(name="http-alternative"),
            "spec.containers[0].ports[0].name",
            "15",
        ),
        (
            lambda d: d["spec"]["containers"][0]["ports"][0].update(name="8080"),
            "spec.containers[0].ports[0].name",
            "letter",
        ),
        (
            lambda d: d["spec"]["containers"][0]["ports"][0].update(protocol="HTTP"),
            "spec.containers[0].ports[0].protocol",
            "unsupported",
        ),
        (
            lambda d: d["spec"]["containers"][0]["ports"].append(
                {"name": "http", "containerPort": 1}
            ),
            "spec.containers[0].ports[1].name",
            "duplicate",
        ),
        (lambda d: d["status"].update(podIP="10.244.1"), "status.podIP", "valid IP"),
        (lambda d: d["status"].update(podIPs=[{"ip": "10.244.1.11"}]), "status.podIPs", "match"),
        (lambda d: d["status"].update(podIPs=["10.244.1.10"]), "status.podIPs[0]", "mapping"),
        (
            lambda d: d["status"].update(
                podIP="10.244.1.10", podIPs=[{"ip": "10.244.1.10"}, {"ip": "10.244.1.11"}]
            ),
            "status.podIPs",
            "each IP family",
        ),
        (
            lambda d: d["status"].update(conditions=[{"type": "Ready", "status": True}]),
            "status.conditions[0].status",
            "string",
        ),
        (
            lambda d: d["status"].update(conditions=[{"type": "Ready", "status": "yes"}]),
            "status.conditions[0].status",
            "'True'",
        ),
        (
            lambda d: d["metadata"].update(deletionTimestamp=5),
            "metadata.deletionTimestamp",
            "timestamp",
        ),
    ],
)
def test_pod_rules(mutate: Callable[[Doc], object], field: str, fragment: str) -> None:
    doc = pod()
    mutate(doc)
    refused(doc, field, fragment, obj="Pod shop/web-1")


@pytest.mark.parametrize(
    ("mutate", "field", "fragment"),
    [
        (lambda d: d["spec"].update(podCIDR="10.244.1.0/33"), "spec.podCIDR", "CIDR"),
        (lambda d: d["spec"].update(podCIDRs=["10.244.2.0/24"]), "spec.podCIDRs", "match"),
        (
            lambda d: d["spec"].update(podCIDRs=["10.244.1.0/24", "10.244.2.0/24"]),
            "spec.podCIDRs",
            "each IP family",
        ),
        (
            lambda d: d["status"].update(addresses=[{"type": "InternalIP", "address": "x"}]),
            "status.addresses[0].address",
            "valid IP",
        ),
        (
            lambda d: d["status"].update(addresses=[{"type": "InternalIP", "address": None}]),
            "status.addresses[0].address",
            "valid IP",
        ),
        (
            lambda d: d["status"].update(addresses={"InternalIP": "1.2.3.4"}),
            "status.addresses",
            "list",
        ),
    ],
)
def test_node_rules(mutate: Callable[[Doc], object], field: str, fragment: str) -> None:
    doc = node()
    mutate(doc)
    refused(doc, field, fragment, obj="Node node-a")


def test_node_cidr_normalised() -> None:
    doc = node()
    doc["spec"]["podCIDR"] = "10.244.1.7/24"
    n = parse_object(doc)
    assert isinstance(n, Node) and n.pod_cidrs == ("10.244.1.0/24",)


@pytest.mark.parametrize(
    ("mutate", "field", "fragment"),
    [
        (
            lambda d: d["metadata"].update(labels={}),
            "metadata.labels",
            "kubernetes.io/service-name",
        ),
        (lambda d: d.update(addressType="FQDN"), "addressType", "FQDN"),
        (lambda d: d.pop("addressType"), "addressType", "required"),
        (lambda d: d.update(addressType="IPv7"), "addressType", "unsupported"),
        (
            lambda d: d["endpoints"][0].update(addresses=["fd00::1"]),
            "endpoints[0].addresses[0]",
            "IPv4",
        ),
        (lambda d: d["endpoints"][0].update(addresses=[]), "endpoints[0].addresses", "between 1"),
        (
            lambda d: d["endpoints"][0].update(addresses="10.0.0.5"),
            "endpoints[0].addresses",
            "list",
        ),
        (
            lambda d: d["endpoints"][0].update(conditions={"ready": "true"}),
            "endpoints[0].conditions.ready",
            "true or false",
        ),
        (
            lambda d: d["endpoints"][0].update(nodeName="Node A"),
            "endpoints[0].nodeName",
            "subdomain",
        ),
        (lambda d: d["endpoints"][0].update(hostname="a.b"), "endpoints[0].hostname", "label"),
        (lambda d: d["ports"][0].update(port=None), "ports[0].port", "required"),
        (lambda d: d["ports"][0].update(port=0), "ports[0].port", "65535"),
        (lambda d: d["ports"][0].update(protocol="ICMP"), "ports[0].protocol", "unsupported"),
        (lambda d: d["ports"].append({"name": "http", "port": 1}), "ports[1].name", "duplicate"),
        (lambda d: d.update(apiVersion="discovery.k8s.io/v1beta1"), "apiVersion", "v1"),
    ],
)
def test_slice_rules(mutate: Callable[[Doc], object], field: str, fragment: str) -> None:
    doc = endpoint_slice()
    mutate(doc)
    refused(doc, field, fragment, obj="EndpointSlice default/ext-1")


# ------------------------------------------------------------------ load, parse_key


def test_load_yaml_documents_and_lists() -> None:
    text = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
---
apiVersion: v1
kind: List
items:
  - {apiVersion: v1, kind: Node, metadata: {name: node-a}}
  - {apiVersion: v1, kind: Pod, metadata: {name: p, labels: {day: 2024-01-01}}}
---
- {kind: Node, metadata: {name: node-b}}
"""
    objs = load(text, filename="x.yaml")
    assert [o.key for o in objs] == [
        ObjectKey(Kind.SERVICE, "default", "web"),
        ObjectKey(Kind.NODE, "", "node-a"),
        ObjectKey(Kind.POD, "default", "p"),
        ObjectKey(Kind.NODE, "", "node-b"),
    ]
    assert objs[2].labels["day"] == "2024-01-01"  # no implicit timestamps


def test_load_dicts() -> None:
    assert len(load(service())) == 1
    assert len(load([service(), node(), {"kind": "List", "items": [pod()]}])) == 3
    assert load("") == []


def test_load_yaml_syntax_error_names_file_and_line() -> None:
    text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n   bad: [\n"
    with pytest.raises(ManifestError, match=r"^web\.yaml:5: "):
        load(text, filename="web.yaml")
    with pytest.raises(ManifestError, match=r"^web\.yaml:\d+: "):
        load("a: [1, 2\nb: c\n", filename="web.yaml")
    with pytest.raises(ManifestError, match=r"web\.yaml:2: "):
        load("a: 1\nb: !!python/object:os.system x\n", filename="web.yaml")


def test_load_bad_shapes() -> None:
    with pytest.raises(ManifestError, match="document 1"):
        load("just a string", filename="f.yaml")
    with pytest.raises(ManifestError, match="items"):
        load({"kind": "List", "items": "nope"})
    with pytest.raises(ManifestError):
        load(42)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"^Service default/web: spec\.ports: "):
        load("kind: Service\nmetadata: {name: web}\n")


def test_parse_key() -> None:
    assert parse_key({"kind": "Pod", "namespace": "shop", "name": "web-1"}) == ObjectKey(
        Kind.POD, "shop", "web-1"
    )
    assert parse_key({"kind": "Service", "name": "web"}) == ObjectKey(
        Kind.SERVICE, "default", "web"
    )
    assert parse_key({"kind": "Node", "name": "node-a", "namespace": "x"}) == ObjectKey(
        Kind.NODE, "", "node-a"
    )
    assert parse_key(pod()) == ObjectKey(Kind.POD, "shop", "web-1")
    assert parse_key(node()) == ObjectKey(Kind.NODE, "", "node-a")
    with pytest.raises(ValidationError, match="kind"):
        parse_key({"kind": "Secret", "name": "x"})
    with pytest.raises(ValidationError, match="name is required"):
        parse_key({"kind": "Pod", "namespace": "default"})
    with pytest.raises(ValidationError, match="DNS-1035"):
        parse_key({"kind": "Service", "name": "Web"})
    with pytest.raises(ManifestError):
        parse_key(["Pod"])  # type: ignore[arg-type]


# ------------------------------------------------------------------ to_manifest


def test_to_manifest_writes_allocations() -> None:
    svc = Service(
        namespace="default",
        name="web",
        type=ServiceType.LOAD_BALANCER,
        ports=(ServicePort(80, node_port=30080),),
        cluster_ips=("10.96.0.5",),
        health_check_node_port=31000,
        external_traffic_policy=TrafficPolicy.LOCAL,
        load_balancer_ips=("203.0.113.1",),
    )
    doc = to_manifest(svc)
    assert doc["spec"]["clusterIP"] == "10.96.0.5"
    assert doc["spec"]["clusterIPs"] == ["10.96.0.5"]
    assert doc["spec"]["ports"][0]["nodePort"] == 30080
    assert doc["spec"]["healthCheckNodePort"] == 31000
    assert doc["status"]["loadBalancer"]["ingress"] == [{"ip": "203.0.113.1"}]
    back = parse_object(doc)
    assert back == svc.__class__(
        **{**_fields(svc), "load_balancer_ips": (), "status_ingress": ("203.0.113.1",)}
    )


def test_to_manifest_prefers_status_ingress() -> None:
    svc = Service(
        namespace="default",
        name="web",
        type=ServiceType.LOAD_BALANCER,
        ports=(ServicePort(80),),
        status_ingress=("198.51.100.1",),
        load_balancer_ips=("198.51.100.1",),
    )
    assert to_manifest(svc)["status"]["loadBalancer"]["ingress"] == [{"ip": "198.51.100.1"}]


def test_to_manifest_allocated_pod_ips() -> None:
    p = Pod(namespace="default", name="p", pod_ips=("10.244.1.2",), pod_ips_allocated=True)
    back = parse_object(to_manifest(p))
    assert isinstance(back, Pod) and back.pod_ips == ("10.244.1.2",)
    assert not back.pod_ips_allocated


def _fields(obj: Any) -> dict[str, Any]:
    import attrs

    return attrs.asdict(obj, recurse=False)


# ------------------------------------------------------------------ properties

names = st.sampled_from(["web", "a", "db-1", "x9", "node-a", "shop", "default", "a-b-c"])
label_values = st.sampled_from(["", "web", "A.b_c-9", "x" * 63, "1"])
labels = st.dictionaries(
    st.sampled_from(["app", "tier", "example.com/x", "a_b"]), label_values, max_size=3
)
v4 = st.integers(1, 2**32 - 2).map(
    lambda n: f"{n >> 24 & 255}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
)
v6 = st.integers(1, 2**64).map(lambda n: str(ipaddress.IPv6Address((0xFD00 << 112) + n)))
external_v4 = st.sampled_from(["198.51.100.1", "203.0.113.7", "192.0.2.200"])


@st.composite
def service_docs(draw: st.DrawFn) -> Doc:
    stype = draw(st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer", "ExternalName", None]))
    external = stype in ("NodePort", "LoadBalancer")
    spec: Doc = {}
    if stype:
        spec["type"] = stype
    if draw(st.booleans()):
        spec["selector"] = draw(labels)
    n = draw(st.integers(0 if stype == "ExternalName" else 1, 3))
    used: set[int] = set()
    ports = []
    for i in range(n):
        port = draw(st.integers(1, 65535).filter(lambda p: p not in used and p != 10250))
        used.add(port)
        entry: Doc = {"port": port}
        if n > 1 or draw(st.booleans()):
            entry["name"] = f"p{i}-{draw(names)}"[:63]
        if draw(st.booleans()):
            entry["protocol"] = draw(st.sampled_from(["TCP", "UDP", "SCTP"]))
        entry["targetPort"] = draw(
            st.one_of(st.none(), st.integers(0, 65535), st.sampled_from(["http", "dns-tcp", ""]))
        )
        if external:
            entry["nodePort"] = draw(
                st.one_of(
                    st.none(), st.just(0), st.integers(30000, 32767).filter(lambda p: p not in used)
                )
            )
            used.add(entry["nodePort"] or 0)
        ports.append(entry)
    if ports:
        spec["ports"] = ports
    if stype == "ExternalName":
        spec["externalName"] = draw(st.sampled_from(["db.example.com", "x.", "svc"]))
    else:
        ips = draw(st.sampled_from(["none", "v4", "v6", "dual", "headless"]))
        if ips == "headless" and not external:
            spec["clusterIP"] = "None"
        elif ips in ("v4", "v6", "dual"):
            chosen = [draw(v4)] if ips != "v6" else [draw(v6)]
            if ips == "dual":
                chosen.append(draw(v6))
            spec["clusterIP"] = chosen[0]
            if len(chosen) > 1 or draw(st.booleans()):
                spec["clusterIPs"] = chosen
            if draw(st.booleans()):
                spec["ipFamilies"] = [IPFamily.of(a).value for a in chosen]
            if len(chosen) > 1:
                spec["ipFamilyPolicy"] = draw(
                    st.sampled_from(["RequireDualStack", "PreferDualStack"])
                )
        elif draw(st.booleans()):
            spec["ipFamilyPolicy"] = draw(st.sampled_from(["SingleStack", "PreferDualStack"]))
    if draw(st.booleans()):
        spec["externalIPs"] = draw(st.lists(external_v4, max_size=2, unique=True))
    if external or spec.get("externalIPs"):
        spec["externalTrafficPolicy"] = draw(st.sampled_from(["Cluster", "Local"]))
        if stype == "LoadBalancer" and spec["externalTrafficPolicy"] == "Local":
            spec["healthCheckNodePort"] = draw(st.one_of(st.none(), st.integers(30000, 32767)))
    spec["internalTrafficPolicy"] = draw(st.sampled_from(["Cluster", "Local", None]))
    if draw(st.booleans()):
        spec["sessionAffinity"] = "ClientIP"
        if draw(st.booleans()):
            spec["sessionAffinityConfig"] = {
                "clientIP": {"timeoutSeconds": draw(st.integers(1, 86400))}
            }
    if stype == "LoadBalancer":
        spec["allocateLoadBalancerNodePorts"] = draw(st.booleans())
        spec["loadBalancerSourceRanges"] = draw(
            st.lists(st.sampled_from(["10.0.0.0/8", "192.168.1.7/24", "2001:db8::/32"]), max_size=2)
        )
        if draw(st.booleans()):
            spec["loadBalancerIP"] = "203.0.113.3"
    spec["publishNotReadyAddresses"] = draw(st.booleans())
    spec["trafficDistribution"] = draw(
        st.sampled_from(["PreferClose", "PreferSameZone", "PreferSameNode", None, ""])
    )
    doc: Doc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": draw(names), "namespace": draw(names), "labels": draw(labels)},
        "spec": spec,
    }
    if draw(st.booleans()):
        doc["status"] = {"loadBalancer": {"ingress": [{"ip": draw(external_v4)}]}}
    return doc


@st.composite
def pod_docs(draw: st.DrawFn) -> Doc:
    containers = []
    for c in range(draw(st.integers(0, 3))):
        ports = []
        seen: set[str] = set()
        for _ in range(draw(st.integers(0, 3))):
            name = draw(st.sampled_from(["", "http", "dns", "metrics"]))
            if name in seen:
                continue
            seen.add(name) if name else None
            entry: Doc = {"containerPort": draw(st.integers(1, 65535))}
            if name:
                entry["name"] = name
            if draw(st.booleans()):
                entry["protocol"] = draw(st.sampled_from(["TCP", "UDP", "SCTP"]))
            ports.append(entry)
        containers.append({"name": f"c{c}", "ports": ports})
    ips = draw(st.sampled_from([[], ["v4"], ["v6"], ["v4", "v6"]]))
    pod_ips = [draw(v4) if f == "v4" else draw(v6) for f in ips]
    status: Doc = {
        "conditions": [
            {"type": "Ready", "status": draw(st.sampled_from(["True", "False", "Unknown"]))}
        ]
    }
    if pod_ips:
        status["podIP"] = pod_ips[0]
        if len(pod_ips) > 1 or draw(st.booleans()):
            status["podIPs"] = [{"ip": a} for a in pod_ips]
    meta: Doc = {"name": draw(names), "namespace": draw(names), "labels": draw(labels)}
    if draw(st.booleans()):
        meta["deletionTimestamp"] = "2024-05-01T10:00:00Z"
    spec: Doc = {
        "containers": containers,
        "nodeName": draw(names),
        "hostNetwork": draw(st.booleans()),
    }
    if draw(st.booleans()):
        spec["hostname"], spec["subdomain"] = draw(names), draw(names)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


@st.composite
def node_docs(draw: st.DrawFn) -> Doc:
    cidrs = draw(st.sampled_from([[], ["10.244.1.0/24"], ["10.244.2.0/24", "fd00:2::/64"]]))
    doc: Doc = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": draw(names), "labels": draw(labels)},
        "spec": {"podCIDRs": cidrs},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": draw(v4)},
                {"type": "Hostname", "address": "host"},
            ]
        },
    }
    if cidrs:
        doc["spec"]["podCIDR"] = cidrs[0]
    return doc


@st.composite
def slice_docs(draw: st.DrawFn) -> Doc:
    family = draw(st.sampled_from(["IPv4", "IPv6"]))
    ip = v4 if family == "IPv4" else v6
    endpoints = []
    for _ in range(draw(st.integers(0, 3))):
        cond = {
            k: draw(st.booleans())
            for k in ("ready", "serving", "terminating")
            if draw(st.booleans())
        }
        endpoints.append(
            {
                "addresses": draw(st.lists(ip, min_size=1, max_size=2)),
                "conditions": cond,
                "nodeName": draw(names),
                "zone": draw(st.sampled_from(["", "z1"])),
                "hostname": draw(st.sampled_from(["", "h1"])),
            }
        )
    ports = [
        {
            "name": name,
            "port": draw(st.integers(1, 65535)),
            "protocol": draw(st.sampled_from(["TCP", "UDP"])),
        }
        for name in draw(st.lists(st.sampled_from(["", "http", "dns"]), unique=True))
    ]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": draw(names),
            "namespace": draw(names),
            "labels": {**draw(labels), "kubernetes.io/service-name": draw(names)},
        },
        "addressType": family,
        "endpoints": endpoints,
        "ports": ports,
    }


manifests = st.one_of(service_docs(), pod_docs(), node_docs(), slice_docs())


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(manifests)
def test_round_trip(doc: Doc) -> None:
    obj = parse_object(doc)
    again = to_manifest(obj)
    assert parse_object(again) == obj
    assert to_manifest(parse_object(again)) == again


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(
        [
            "None",
            "",
            "IPv4",
            "10.0.0.1",
            "http",
            "TCP",
            "LoadBalancer",
            "Local",
            "fd00::1",
            "1.2.3.0/24",
        ]
    ),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.text(max_size=6) | st.sampled_from(["ip", "port", "name"]), children, max_size=3
        )
    ),
    max_leaves=8,
)


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    doc = copy.deepcopy(draw(manifests))
    if draw(st.integers(0, 20)) == 0:
        return draw(json_values)
    for _ in range(draw(st.integers(1, 3))):
        target: Any = doc
        while True:
            keys = (
                list(target)
                if isinstance(target, dict)
                else list(range(len(target)))
                if isinstance(target, list)
                else []
            )
            if not keys:
                break
            key = draw(st.sampled_from(keys))
            child = target[key]
            if isinstance(child, dict | list) and child and draw(st.integers(0, 3)) > 0:
                target = child
                continue
            if isinstance(target, dict) and draw(st.integers(0, 4)) == 0:
                key = draw(
                    st.text(max_size=6)
                    | st.sampled_from(
                        ["clusterIP", "type", "ports", "selector", "status", "podIPs"]
                    )
                )
            if isinstance(target, dict) and draw(st.integers(0, 6)) == 0:
                target.pop(key, None)
            else:
                target[key] = draw(json_values)
            break
    return doc


@settings(
    max_examples=500, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(mutated())
def test_fuzz_only_project_errors(doc: Any) -> None:
    try:
        obj = parse_object(doc)
    except (ValidationError, ManifestError) as exc:
        assert str(exc)
        return
    assert parse_object(to_manifest(obj)) == obj
    try:
        parse_key(doc)
    except SvcnetError:  # pragma: no cover - parse_object accepted the same header
        raise AssertionError("parse_key refused what parse_object accepted") from None


@settings(max_examples=300)
@given(st.text(max_size=60) | st.sampled_from(["a: [\n", "- 1\n- [", "kind: Pod\n\t x", "{"]))
def test_fuzz_yaml_text(text: str) -> None:
    try:
        load(text, filename="f.yaml")
    except (ValidationError, ManifestError) as exc:
        assert str(exc)
