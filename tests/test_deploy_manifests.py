"""deploy/: the manifests pass a schema check with the kubernetes client's models
(every field known, every value of its type), the ClusterRole grants only get, list
and watch on what a proxy reads, and the DaemonSet runs the agent as documented."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

models = pytest.importorskip(
    "kubernetes.client.models", reason="the kubernetes extra is not installed"
)

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
KINDS = {
    "ServiceAccount": "V1ServiceAccount",
    "ClusterRole": "V1ClusterRole",
    "ClusterRoleBinding": "V1ClusterRoleBinding",
    "ConfigMap": "V1ConfigMap",
    "DaemonSet": "V1DaemonSet",
}
READ = {"get", "list", "watch"}


def documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def unknown_fields(value: Any, type_name: str, where: str) -> list[str]:
    """The fields of ``value`` that the model ``type_name`` does not have (the
    models themselves ignore unknown fields), recursively."""
    list_of = re.fullmatch(r"(?:list|List)\[(.+)\]", type_name)
    if list_of:
        return [
            p
            for i, v in enumerate(value or [])
            for p in unknown_fields(v, list_of[1], f"{where}[{i}]")
        ]
    model = getattr(models, type_name, None)
    if model is None or not isinstance(value, dict):
        return []  # a primitive, a map of primitives, or a free-form object
    by_json = {j: p for p, j in model.attribute_map.items()}
    problems = []
    for key, item in value.items():
        if key not in by_json:
            problems.append(f"{where}.{key}")
        else:
            problems += unknown_fields(item, model.openapi_types[by_json[key]], f"{where}.{key}")
    return problems


def test_deploy_has_each_kind_once() -> None:
    assert sorted(d["kind"] for d in documents()) == sorted(KINDS)


@pytest.mark.parametrize("doc", documents(), ids=lambda d: d["kind"])
def test_deploy_manifest_passes_the_client_schema(doc: dict[str, Any]) -> None:
    name = KINDS[doc["kind"]]
    assert unknown_fields(doc, name, doc["kind"]) == []
    model = getattr(models, name)
    if hasattr(model, "from_dict"):  # the pydantic models check every value's type
        built = model.from_dict(doc)
        assert built.metadata.name == doc["metadata"]["name"]


def test_deploy_cluster_role_only_reads_what_a_proxy_reads() -> None:
    (role,) = [d for d in documents() if d["kind"] == "ClusterRole"]
    granted = set()
    for rule in role["rules"]:
        assert set(rule["verbs"]) <= READ, rule
        assert "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        granted |= {(g, r) for g in rule["apiGroups"] for r in rule["resources"]}
    assert granted == {("", "services"), ("", "nodes"), ("discovery.k8s.io", "endpointslices")}
    (binding,) = [d for d in documents() if d["kind"] == "ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_deploy_daemonset_runs_the_agent_on_the_host_network() -> None:
    (ds,) = [d for d in documents() if d["kind"] == "DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    (container,) = pod["containers"]
    command = container["command"]
    assert command[:2] == ["svcnet", "agent"]
    assert {"--source=kubernetes", "--backend=nftables", "--host"} <= set(command)
    assert "NET_ADMIN" in container["securityContext"]["capabilities"]["add"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"healthz": 10256, "metrics": 10249}
    assert container["livenessProbe"]["httpGet"]["port"] == 10256
    (sa,) = [d for d in documents() if d["kind"] == "ServiceAccount"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]


def test_deploy_agent_command_is_one_the_cli_accepts() -> None:
    """Every option the DaemonSet gives ``svcnet agent`` exists."""
    from svcnet.cli.agent import agent_cmd

    (ds,) = [d for d in documents() if d["kind"] == "DaemonSet"]
    command = ds["spec"]["template"]["spec"]["containers"][0]["command"]
    known = {opt for p in agent_cmd.params for opt in p.opts}
    given = {arg.split("=", 1)[0] for arg in command[2:]}
    assert given <= known, given - known


def test_deploy_containerfile_pins_its_base_image() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert re.search(r"@sha256:[0-9a-f]{64}$|:\d+\.\d+\.\d+[\w.-]*$", base), base
    assert "no container engine" in text.lower()
