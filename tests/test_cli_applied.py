"""``svcnet get -o yaml|json`` shows what was applied (containers, images, fields
svcnet does not model) with what the control plane decided over it, and ``svcnet
apply`` of the same file again leaves what the scheduler and kubelet reported."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import yaml

APP = """
apiVersion: v1
kind: Node
metadata: {name: node-a}
spec: {podCIDR: 10.244.1.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.56.11}]}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: my-nginx
spec:
  selector:
    matchLabels:
      run: my-nginx
  replicas: 1
  template:
    metadata:
      labels:
        run: my-nginx
    spec:
      containers:
      - name: my-nginx
        image: nginx:1.27
        args: ["-g", "daemon off;"]
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: my-nginx
  labels: {run: my-nginx}
spec:
  type: NodePort
  ports:
  - port: 80
    protocol: TCP
    appProtocol: http
  selector:
    run: my-nginx
---
apiVersion: v1
kind: Pod
metadata: {name: solo}
spec:
  containers: [{name: box, image: busybox, command: [sleep, "3600"]}]
"""


def svcnet(store: pathlib.Path, *args: str) -> str:
    p = subprocess.run(
        [sys.executable, "-m", "svcnet", "--store", str(store), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_get_yaml_shows_what_was_applied_plus_status(tmp_path: pathlib.Path) -> None:
    store, app = tmp_path / "s.db", tmp_path / "app.yaml"
    app.write_text(APP)
    svcnet(store, "apply", "-f", str(app))

    solo = yaml.safe_load(svcnet(store, "get", "pod", "solo", "-o", "yaml"))
    assert solo["spec"]["containers"] == [
        {"name": "box", "image": "busybox", "command": ["sleep", "3600"]}
    ]
    assert solo["spec"]["nodeName"] == "node-a"  # the scheduler's
    assert solo["status"]["phase"] == "Running"  # the kubelet's
    assert {"type": "Ready", "status": "True"} in solo["status"]["conditions"]
    assert solo["status"]["podIP"].startswith("10.244.1.")

    svc = json.loads(svcnet(store, "get", "svc", "my-nginx", "-o", "json"))
    (port,) = svc["spec"]["ports"]
    assert port["appProtocol"] == "http"  # not modelled, kept
    assert 30000 <= port["nodePort"] <= 32767  # allocated
    assert svc["spec"]["clusterIP"].startswith("10.96.")

    # a Deployment's pod carries its template's containers and images
    (name,) = svcnet(store, "get", "pods", "-l", "run=my-nginx", "-o", "name").split()
    pod = yaml.safe_load(svcnet(store, "get", name, "-o", "yaml"))
    (container,) = pod["spec"]["containers"]
    assert (container["name"], container["image"]) == ("my-nginx", "nginx:1.27")
    assert container["args"] == ["-g", "daemon off;"]
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
    deploy = yaml.safe_load(svcnet(store, "get", "deployment", "my-nginx", "-o", "yaml"))
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"


def test_apply_again_leaves_the_reported_status(tmp_path: pathlib.Path) -> None:
    store, app = tmp_path / "s.db", tmp_path / "app.yaml"
    app.write_text(APP)
    svcnet(store, "apply", "-f", str(app))

    def pods() -> list[list[str]]:  # NAME READY STATUS RESTARTS IP NODE (not AGE)
        rows = svcnet(store, "get", "pods", "-o", "wide").splitlines()[1:]
        return [r.split()[:4] + r.split()[5:7] for r in rows]

    first = pods()
    again = svcnet(store, "apply", "-f", str(app)).splitlines()
    assert again and all(line.endswith(" unchanged") for line in again), again
    assert pods() == first
    assert all(row[1:3] == ["1/1", "Running"] for row in first), first

    # a field svcnet does not model changed: configured, and shown
    app.write_text(APP.replace("busybox", "busybox:1.36"))
    assert "pod/solo configured" in svcnet(store, "apply", "-f", str(app))
    solo = yaml.safe_load(svcnet(store, "get", "pod", "solo", "-o", "yaml"))
    assert solo["spec"]["containers"][0]["image"] == "busybox:1.36"
    assert solo["status"]["phase"] == "Running"

    # a dump of get -o yaml applied again is the same objects
    dump = tmp_path / "dump.yaml"
    dump.write_text(svcnet(store, "get", "svc", "my-nginx", "-o", "yaml"))
    assert svcnet(store, "apply", "-f", str(dump)) == "service/my-nginx unchanged\n"
