"""kubectl habits of the svcnet CLI (issue 16): -l, --show-labels, -o name, -n/-A,
AGE, EndpointSlices and Endpoints as the API server returns them, describe pod and
node, delete as kubectl deletes, a missing store directory. Through click's runner
on a store in tmp_path, and the pure helpers directly."""

from __future__ import annotations

import importlib
import os
import pathlib
import re
import select
import sqlite3
import subprocess
import sys
import time
import types
from typing import Any

import pytest
import yaml
from attrs import evolve as dataclasses_replace
from click.testing import CliRunner, Result

from svcnet import manifests
from svcnet.cli.kubectl_views import (
    derived_slices,
    describe_pod,
    human_duration,
    parse_label_selector,
    timestamp,
)
from svcnet.cli.main import cli
from svcnet.cli.views import describe_deployment, rollout_status, workload_rows
from svcnet.errors import ValidationError
from svcnet.state import Apply
from svcnet.store import Store

DEMO = str(pathlib.Path(__file__).parent.parent / "tests" / "fixtures" / "demo")

OTHER = """\
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: other, labels: {app: db, tier: back}}
spec:
  nodeName: node-a
  containers: [{name: db, ports: [{name: pg, containerPort: 5432}]}]
status: {podIP: 10.244.1.30, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-2, namespace: other, labels: {app: db}}
spec:
  nodeName: node-b
  containers: [{name: db, ports: [{name: pg, containerPort: 5432}]}]
status: {podIP: 10.244.2.30, conditions: [{type: Ready, status: "False"}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: other, labels: {team: data}}
spec:
  selector: {app: db}
  ports: [{name: pg, port: 5432, targetPort: pg}]
"""


def run(store: pathlib.Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--store", str(store), *args], catch_exceptions=False)


def ok(store: pathlib.Path, *args: str) -> str:
    result = run(store, *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def table(text: str) -> list[list[str]]:
    """A kubectl table as cells (columns split at two or more spaces)."""
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines()]


@pytest.fixture
def store(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "store.db"
    ok(path, "apply", "-f", DEMO)
    other = tmp_path / "other.yaml"
    other.write_text(OTHER)
    ok(path, "apply", "-f", str(other))
    return path


# -- pure helpers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5, "<invalid>"), (-0.5, "0s"), (0, "0s"), (45, "45s"), (119, "119s"),
        (120, "2m"), (200, "3m20s"), (599, "9m59s"), (600, "10m"), (179 * 60, "179m"),
        (3 * 3600, "3h"), (5 * 3600 + 180, "5h3m"), (8 * 3600 + 59, "8h"), (47 * 3600, "47h"),
        (2 * 86400, "2d"), (3 * 86400 + 4 * 3600, "3d4h"), (30 * 86400, "30d"),
        (730 * 86400, "2y"), (750 * 86400, "2y20d"), (3000 * 86400, "8y"),
    ],
)  # fmt: skip
def test_ages_read_as_kubectl_prints_them(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown


def test_creation_times_read_as_kubectl_describe_prints_them() -> None:
    assert timestamp(0) == "Thu, 01 Jan 1970 00:00:00 +0000"
    assert timestamp(1_800_000_000.7) == "Fri, 15 Jan 2027 08:00:00 +0000"
    assert timestamp(None) == "<unknown>"


def test_label_selectors_as_kubectl_spells_them() -> None:
    web = {"app": "web", "tier": "front"}
    db = {"app": "db"}
    bare: dict[str, str] = {}
    cases = {
        "app=web": (True, False, False),
        "app==web": (True, False, False),
        "app!=web": (False, True, True),  # no label at all also matches !=, as in kubectl
        "app in (web, db)": (True, True, False),
        "app notin (web)": (False, True, True),
        "tier": (True, False, False),
        "!tier": (False, True, True),
        "app in (web,db),!tier": (False, True, False),
        "app=web,tier=front": (True, False, False),
        "": (True, True, True),
    }
    for text, expected in cases.items():
        sel = parse_label_selector(text)
        assert tuple(sel.matches(x) for x in (web, db, bare)) == expected, text
    for bad in ("app in ()", "a b c", "app=web,,x", "-bad=1"):
        with pytest.raises(ValidationError, match="label selector"):
            parse_label_selector(bad)


def test_derived_slice_names_are_stable_and_labelled(store: pathlib.Path) -> None:
    state = Store(str(store)).load()
    web = state.services[("default", "web")]
    first, again = derived_slices(state, web), derived_slices(state, web)
    assert first == again and len(first) == 1
    meta = first[0]["metadata"]
    assert re.fullmatch(r"web-[bcdfghjklmnpqrstvwxz2456789]{5}", meta["name"])
    assert meta["labels"]["kubernetes.io/service-name"] == "web"
    assert meta["labels"]["endpointslice.kubernetes.io/managed-by"] == (
        "endpointslice-controller.k8s.io"
    )
    # another service of the same pods gets its own name
    other = derived_slices(state, state.services[("default", "web-lb")])
    assert other[0]["metadata"]["name"] != meta["name"]
    # a pod serving another port set gets a slice of its own; the first keeps its name
    http_only = WEB_4.replace(", {name: echo, containerPort: 8053, protocol: UDP}", "")
    grown = state.step(Apply(tuple(manifests.load(http_only))))
    after = derived_slices(grown, grown.services[("default", "web")])
    assert len(after) == 2 and meta["name"] in [d["metadata"]["name"] for d in after]
    (new,) = [d for d in after if d["metadata"]["name"] != meta["name"]]
    assert new["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    assert [e["targetRef"]["name"] for e in new["endpoints"]] == ["web-4"]


# -- get -----------------------------------------------------------------------------------


def test_get_has_kubectl_columns_and_age(store: pathlib.Path) -> None:
    pods = table(ok(store, "get", "pods"))
    assert pods[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    row = dict(zip(pods[0], pods[1], strict=True))
    assert row["NAME"] == "client" and row["STATUS"] == "Running" and row["RESTARTS"] == "0"
    assert re.fullmatch(r"\d+s", row["AGE"]), row  # created just now (a store that records it)
    wide = table(ok(store, "get", "pods", "-o", "wide"))
    assert wide[0][5:] == ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]
    assert table(ok(store, "get", "svc"))[0][-1] == "AGE"
    assert table(ok(store, "get", "nodes"))[0] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert table(ok(store, "get", "endpoints"))[0] == ["NAME", "ENDPOINTS", "AGE"]


def test_age_is_unknown_for_objects_saved_without_a_creation_time(store: pathlib.Path) -> None:
    with sqlite3.connect(store) as conn:
        if "created" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}:
            pytest.skip("this store does not record creation times yet")
        conn.execute("DELETE FROM created")
    pods = table(ok(store, "get", "pods"))
    assert {r[4] for r in pods[1:]} == {"<unknown>"}


def test_namespaces_selectors_labels_and_names(store: pathlib.Path) -> None:
    assert [r[0] for r in table(ok(store, "get", "pods", "-n", "other"))[1:]] == ["db-1", "db-2"]
    everything = table(ok(store, "get", "pods", "-A"))
    assert everything[0][:2] == ["NAMESPACE", "NAME"]
    assert ["other", "db-1"] in [r[:2] for r in everything[1:]]
    assert ["default", "web-1"] in [r[:2] for r in everything[1:]]
    assert ok(store, "get", "pods", "-A", "-l", "app=db", "-o", "name") == "pod/db-1\npod/db-2\n"
    # -n before the verb, as kubectl takes it; after the verb it wins
    assert ok(store, "-n", "other", "get", "pods", "-o", "name") == "pod/db-1\npod/db-2\n"
    assert ok(store, "-n", "other", "get", "svc", "-n", "default", "-o", "name").startswith(
        "service/web\n"
    )
    assert "Namespace:   other" in ok(store, "-n", "other", "describe", "pod", "db-1")
    assert ok(store, "get", "pods", "-A", "-l", "app=db,!tier", "-o", "name") == "pod/db-2\n"
    assert ok(store, "get", "pods", "-l", "app in (web,client),app!=client", "-o", "name") == (
        "pod/web-1\npod/web-2\npod/web-3\n"
    )
    labelled = table(ok(store, "get", "pods", "-n", "other", "--show-labels"))
    assert labelled[0][-1] == "LABELS" and labelled[1][-1] == "app=db,tier=back"
    assert ok(store, "get", "svc", "-o", "name") == (
        "service/web\nservice/web-lb\nservice/web-nodeport\n"
    )
    assert ok(store, "get", "nodes", "-o", "name") == "node/node-a\nnode/node-b\n"
    assert ok(store, "get", "endpoints", "-n", "other", "-o", "name") == "endpoints/db\n"
    result = run(store, "get", "pods", "-l", "app=nothing")
    assert result.exit_code == 0 and result.stdout == ""
    assert result.stderr == "No resources found in default namespace.\n"
    bad = run(store, "get", "pods", "-l", "app in ()")
    assert bad.exit_code == 1 and "label selector" in bad.stderr


def test_endpointslices_as_the_api_server_returns_them(store: pathlib.Path) -> None:
    rows = table(ok(store, "get", "endpointslices"))
    assert rows[0] == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    names = [r[0] for r in rows[1:]]
    assert len(names) == 3 and all(re.fullmatch(r"web(-lb|-nodeport)?-\w{5}", n) for n in names)
    web = next(r for r in rows[1:] if re.fullmatch(r"web-\w{5}", r[0]))
    assert web[1] == "IPv4" and set(web[3].split(",")) == {
        "10.244.1.10", "10.244.2.10", "10.244.2.11"
    }  # fmt: skip
    doc = yaml.safe_load(ok(store, "get", "endpointslices", web[0], "-o", "yaml"))
    assert doc["apiVersion"] == "discovery.k8s.io/v1" and doc["kind"] == "EndpointSlice"
    assert doc["addressType"] == "IPv4"
    assert doc["metadata"]["labels"]["kubernetes.io/service-name"] == "web"
    assert {(p["name"], p["port"], p["protocol"]) for p in doc["ports"]} == {
        ("http", 8080, "TCP"), ("echo", 8053, "UDP")
    }  # fmt: skip
    by_pod = {e["targetRef"]["name"]: e for e in doc["endpoints"]}
    assert by_pod["web-1"]["addresses"] == ["10.244.1.10"]
    assert by_pod["web-1"]["conditions"] == {"ready": True, "serving": True, "terminating": False}
    assert by_pod["web-1"]["nodeName"] == "node-a" and by_pod["web-1"]["zone"] == "zone-1"
    # the other namespace: its not-ready pod is in the slice, not ready
    other = yaml.safe_load(ok(store, "get", "endpointslices", "-n", "other", "-o", "yaml"))
    (slice_,) = other["items"]
    ready = {e["targetRef"]["name"]: e["conditions"]["ready"] for e in slice_["endpoints"]}
    assert ready == {"db-1": True, "db-2": False}
    selected = ok(store, "get", "endpointslices", "-l", "kubernetes.io/service-name=web-lb",
                  "-o", "name")  # fmt: skip
    assert re.fullmatch(r"endpointslice\.discovery\.k8s\.io/web-lb-\w{5}\n", selected)


def test_endpoints_as_the_api_server_returns_them(store: pathlib.Path) -> None:
    doc = yaml.safe_load(ok(store, "get", "endpoints", "db", "-n", "other", "-o", "yaml"))
    assert doc["apiVersion"] == "v1" and doc["kind"] == "Endpoints"
    assert doc["metadata"]["name"] == "db" and doc["metadata"]["labels"] == {"team": "data"}
    (subset,) = doc["subsets"]
    assert subset["addresses"] == [
        {"ip": "10.244.1.30", "nodeName": "node-a",
         "targetRef": {"kind": "Pod", "name": "db-1", "namespace": "other"}}
    ]  # fmt: skip
    assert [a["ip"] for a in subset["notReadyAddresses"]] == ["10.244.2.30"]
    assert subset["ports"] == [{"name": "pg", "port": 5432, "protocol": "TCP"}]


# -- describe ------------------------------------------------------------------------------


def test_describe_pod_and_node(store: pathlib.Path) -> None:
    text = ok(store, "describe", "pod", "db-1", "-n", "other")
    fields = dict(
        (k.strip(), v.strip())
        for k, _, v in (line.partition(":") for line in text.splitlines() if ":" in line)
    )
    assert fields["Name"] == "db-1" and fields["Namespace"] == "other"
    assert fields["Node"] == "node-a/192.168.56.11" and fields["Status"] == "Running"
    assert fields["IP"] == "10.244.1.30" and fields["Labels"] == "app=db"
    assert re.search(r"^Start Time:\s+\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000$", text, re.M)
    assert "Containers:" in text and "5432/TCP (pg)" in text and "Ready:" in text
    conditions = text.split("Conditions:\n")[1].splitlines()
    assert conditions[0].split() == ["Type", "Status"] and conditions[1].split() == [
        "Ready",
        "True",
    ]
    node = ok(store, "describe", "node", "node-b")
    assert "InternalIP:  192.168.56.12" in node and "PodCIDR:  10.244.2.0/24" in node
    assert "(3 in total)" in node and "db-2" in node
    assert "Annotations:" in ok(store, "describe", "svc/web")
    missing = run(store, "describe", "pod", "ghost")
    assert missing.exit_code == 1 and "Pod default/ghost not found" in missing.stderr


# -- delete ---------------------------------------------------------------------------------


def test_delete_deletes_what_exists_and_names_what_does_not(store: pathlib.Path) -> None:
    result = run(store, "delete", "svc", "web-lb", "ghost", "web-nodeport")
    assert result.exit_code == 1
    assert result.stdout == 'service "web-lb" deleted\nservice "web-nodeport" deleted\n'
    assert result.stderr == 'Error from server (NotFound): services "ghost" not found\n'
    assert ok(store, "get", "svc", "-o", "name") == "service/web\n"
    quiet = run(store, "delete", "pod", "ghost", "web-3", "--ignore-not-found")
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, 'pod "web-3" deleted\n', "")
    # -n, and -f with a missing object
    assert ok(store, "delete", "pod", "db-2", "-n", "other") == 'pod "db-2" deleted\n'
    result = run(store, "delete", "-f", DEMO)
    assert result.exit_code == 1
    assert 'Error from server (NotFound): pods "web-3" not found' in result.stderr
    assert 'services "web-lb" not found' in result.stderr
    assert result.stdout.count(" deleted\n") == 6  # 2 nodes, web, web-1, web-2, client
    assert ok(store, "get", "pods", "-A", "-o", "name") == "pod/db-1\n"
    assert run(store, "delete", "-f", DEMO, "--ignore-not-found").exit_code == 0


# -- the store -------------------------------------------------------------------------------


def test_a_missing_store_directory_is_an_error(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nonexistent" / "dir" / "x.db"
    for args in (("get", "svc"), ("describe", "svc", "web"), ("delete", "svc", "web")):
        result = run(missing, *args)
        assert result.exit_code == 1, args
        assert result.stderr == (f"error: store {missing}: no such directory {missing.parent}\n"), (
            args
        )
        assert "No resources found" not in result.output
    assert not missing.parent.exists()
    # a missing file in an existing directory is an empty cluster
    empty = run(tmp_path / "new.db", "get", "svc")
    assert empty.exit_code == 0 and empty.stderr == "No resources found in default namespace.\n"


# -- Deployments and ReplicaSets -----------------------------------------------------------


def _workload_state() -> Any:
    """A state-like value with one Deployment, its old and new ReplicaSets and three
    pods of the new one (two ready): what the views read, without the controller."""
    model = importlib.import_module("svcnet.model")
    if not hasattr(model, "Deployment"):
        pytest.skip("svcnet.model has no Deployment in this tree")
    from svcnet.state.selectors import Selector

    owner = model.OwnerReference
    template = model.PodTemplate(labels={"app": "web"}, ports=(model.ContainerPort(80, "http"),))
    selector = Selector.from_labels({"app": "web"})
    dep = model.Deployment("default", "web", selector, template, replicas=3, revision=2)
    old = model.ReplicaSet("default", "web-7c5ddbdf54", selector, template, replicas=0,
                           owner=owner("Deployment", "web"), revision=1)  # fmt: skip
    new = model.ReplicaSet("default", "web-5d4f8b7c9", selector, template, replicas=3,
                           owner=owner("Deployment", "web"), revision=2)  # fmt: skip
    pods = {
        ("default", f"{new.name}-{i}"): model.Pod(
            "default", f"{new.name}-{i}", labels={"app": "web"}, ready=i < 2,
            owner=owner("ReplicaSet", new.name),
        )
        for i in range(3)
    }  # fmt: skip
    return types.SimpleNamespace(
        pods=pods,
        nodes={},
        deployments={("default", "web"): dep},
        replica_sets={("default", old.name): old, ("default", new.name): new},
    )


def test_deployment_and_replicaset_views() -> None:
    state = _workload_state()
    (dep,) = state.deployments.values()
    rows = workload_rows(state, "Deployment", [dep], True, lambda _: "5s")
    assert rows[0] == [
        "NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"
    ]  # fmt: skip
    assert rows[1][:5] == ["web", "2/3", "3", "2", "5s"] and rows[1][-1] == "app=web"
    rs = sorted(state.replica_sets.values(), key=lambda r: r.name)
    assert workload_rows(state, "ReplicaSet", rs, False, lambda _: "1m") == [
        ["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        ["web-5d4f8b7c9", "3", "3", "2", "1m"],
        ["web-7c5ddbdf54", "0", "0", "0", "1m"],
    ]
    text = "\n".join(describe_deployment(state, dep, lambda _: "5s"))
    assert re.search(r"Replicas:\s+3 desired \| 3 updated \| 3 total \| 2 available \| "
                     r"1 unavailable", text)  # fmt: skip
    assert re.search(r"NewReplicaSet:\s+web-5d4f8b7c9 \(3/3 replicas created\)", text)
    assert re.search(r"OldReplicaSets:\s+web-7c5ddbdf54 \(0/0 replicas created\)", text)
    assert re.search(r"RollingUpdateStrategy:\s+25% max unavailable, 25% max surge", text)
    assert "80/TCP (http)" in text
    pod = state.pods[("default", "web-5d4f8b7c9-0")]
    described = "\n".join(describe_pod(state, pod, lambda _: "5s"))
    assert re.search(r"Controlled By:\s+ReplicaSet/web-5d4f8b7c9", described)


# -- watching EndpointSlices ----------------------------------------------------------------

WEB_4 = """\
apiVersion: v1
kind: Pod
metadata: {name: web-4, namespace: default, labels: {app: web}}
spec:
  nodeName: node-a
  containers:
    - name: web
      ports: [{name: http, containerPort: 8080}, {name: echo, containerPort: 8053, protocol: UDP}]
status: {podIP: 10.244.1.44, conditions: [{type: Ready, status: "True"}]}
"""


def _read_until(proc: subprocess.Popen[bytes], text: str, seen: bytearray) -> str:
    """``proc``'s stdout read into ``seen`` until it holds ``text`` (60 s at most)."""
    assert proc.stdout is not None
    fd, deadline = proc.stdout.fileno(), time.monotonic() + 60.0
    while text not in seen.decode():
        left = deadline - time.monotonic()
        assert left > 0, f"no {text!r} within 60 s; got {seen.decode()!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, f"exited ({proc.wait()}) before {text!r}: {seen.decode()!r}"
            seen += chunk
    return seen.decode()


def test_get_endpointslices_watch_follows_the_controllers_slices(
    store: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    cmd = [sys.executable, "-m", "svcnet", "--store", str(store)]
    proc = subprocess.Popen(
        [*cmd, "get", "endpointslices", "-w", "--output-watch-events",
         "-l", "kubernetes.io/service-name=web"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        seen = bytearray()
        listed = _read_until(proc, "10.244.2.11", seen)  # the list first
        assert listed.startswith("NAME") and len(listed.splitlines()) == 2
        pod = tmp_path / "web4.yaml"
        pod.write_text(WEB_4)
        applied = subprocess.run([*cmd, "apply", "-f", str(pod)], capture_output=True, text=True,
                                 timeout=60, check=False)  # fmt: skip
        assert applied.returncode == 0, applied.stderr
        line = _read_until(proc, "10.244.1.44", seen).splitlines()[-1].split()
        assert line[0] == "MODIFIED" and re.fullmatch(r"web-\w{5}", line[1]), line
        assert "10.244.1.44" in line[4] or line[4].endswith("more..."), line
        assert proc.poll() is None  # still following
    finally:
        proc.kill()
        proc.wait()


def test_rollout_status_lines_as_kubectl_words_them() -> None:
    state = _workload_state()
    (dep,) = state.deployments.values()
    assert rollout_status(state, dep) == (
        False,
        'Waiting for deployment "web" rollout to finish: 2 of 3 updated replicas are available...',
    )
    for pod in state.pods.values():
        state.pods[(pod.namespace, pod.name)] = dataclasses_replace(pod, ready=True)
    assert rollout_status(state, dep) == (True, 'deployment "web" successfully rolled out')
    scaled = dataclasses_replace(dep, replicas=5)
    assert rollout_status(state, scaled)[1] == (
        'Waiting for deployment "web" rollout to finish: 3 out of 5 new replicas have been '
        "updated..."
    )
    # a pod of the old ReplicaSet still there
    old_name = next(rs.name for rs in state.replica_sets.values() if rs.revision == 1)
    pod = next(iter(state.pods.values()))
    old_pod = dataclasses_replace(pod, name=f"{old_name}-x", owner=pod.owner.__class__(
        "ReplicaSet", old_name))  # fmt: skip
    state.pods[("default", old_pod.name)] = old_pod
    assert rollout_status(state, dep)[1] == (
        'Waiting for deployment "web" rollout to finish: 1 old replicas are pending termination...'
    )


DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: my-nginx, labels: {app: nginx}}
spec:
  replicas: 3
  selector: {matchLabels: {app: nginx}}
  template:
    metadata: {labels: {app: nginx}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.14.2
        ports: [{containerPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: my-nginx, labels: {run: my-nginx}}
spec:
  ports: [{port: 80, protocol: TCP}]
  selector: {app: nginx}
"""


def _running(store: pathlib.Path) -> list[str]:
    rows = table(ok(store, "get", "pods", "-l", "app=nginx"))
    return [r[0] for r in rows[1:] if r[1:3] == ["1/1", "Running"]]


def test_scale_and_rollout_a_deployment(tmp_path: pathlib.Path) -> None:
    store = tmp_path / "s.db"
    ok(store, "apply", "-f", DEMO)
    manifest = tmp_path / "deploy.yaml"
    manifest.write_text(DEPLOYMENT)
    out = ok(store, "apply", "-f", str(manifest))
    assert "deployment.apps/my-nginx created" in out.splitlines()
    if ok(store, "get", "deployments", "-o", "name") == "":
        pytest.skip("this tree's store does not keep Deployments yet (svcnet.store)")
    first = _running(store)
    if len(first) != 3:
        pytest.skip(f"this tree's store runs no controllers yet (pods: {first})")
    assert all(re.fullmatch(r"my-nginx-\w+-\w{5}", n) for n in first)
    deploy = table(ok(store, "get", "deploy"))
    assert deploy[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert deploy[1][:4] == ["my-nginx", "3/3", "3", "3"]
    eps = table(ok(store, "get", "endpoints", "my-nginx"))[1][1]
    assert len(eps.split(",")) == 3

    assert ok(store, "scale", "deployment/my-nginx", "--replicas", "5") == (
        "deployment.apps/my-nginx scaled\n"
    )
    assert len(_running(store)) == 5
    assert ok(store, "scale", "deploy", "my-nginx", "--replicas=1") == (
        "deployment.apps/my-nginx scaled\n"
    )
    (left,) = _running(store)
    assert left in first or len(first) == 3
    done = ok(store, "rollout", "status", "deployment/my-nginx", "--timeout", "30")
    assert done.splitlines()[-1] == 'deployment "my-nginx" successfully rolled out'

    ok(store, "scale", "deployment/my-nginx", "--replicas", "3")
    before = set(_running(store))
    assert ok(store, "rollout", "restart", "deployment/my-nginx") == (
        "deployment.apps/my-nginx restarted\n"
    )
    ok(store, "rollout", "status", "deployment/my-nginx", "--timeout", "30")
    after = set(_running(store))
    assert len(after) == 3 and not (after & before)  # every pod replaced
    rs = table(ok(store, "get", "rs"))
    assert rs[0] == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"] and len(rs) == 3
    text = ok(store, "describe", "deployment", "my-nginx")
    assert re.search(r"Replicas:\s+3 desired \| 3 updated \| 3 total \| 3 available", text)

    missing = run(store, "scale", "deployment/ghost", "--replicas", "2")
    assert missing.exit_code == 1
    assert missing.stderr == 'Error from server (NotFound): deployments.apps "ghost" not found\n'
