"""The kubectl-like commands, through the real command line (python -m svcnet --store)."""

from __future__ import annotations

import pathlib
import sqlite3
import subprocess
import sys

import pytest

from svcnet.store import FORMAT_VERSION

DEMO = str(pathlib.Path(__file__).parent.parent / "tests" / "fixtures" / "demo")

NODEPORT = """\
apiVersion: v1
kind: Service
metadata: {name: np, namespace: default}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 8080, targetPort: http, nodePort: 30500}]
"""


def run(
    store: pathlib.Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "svcnet", "--store", str(store), *args],
        capture_output=True, text=True, timeout=120, check=False, input=stdin,
    )  # fmt: skip


def ok(store: pathlib.Path, *args: str, stdin: str | None = None) -> str:
    proc = run(store, *args, stdin=stdin)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def fails(store: pathlib.Path, *args: str) -> str:
    """The single error line of a failing command (exit 1, no traceback)."""
    proc = run(store, *args)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.fixture
def store(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "store.db"
    out = ok(path, "apply", "-f", DEMO)
    assert "service/web created" in out.splitlines()
    return path


def test_apply_get_describe_delete(store: pathlib.Path, tmp_path: pathlib.Path) -> None:
    lines = ok(store, "get", "svc").splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert lines[2].split()[:5] == [
        "web-lb", "LoadBalancer", "10.96.0.12", "203.0.113.10", "80:30081/TCP,53:30054/UDP"
    ]  # fmt: skip
    row = ok(store, "get", "pods", "-o", "wide").splitlines()[1].split()
    assert row[:4] + row[5:7] == ["client", "1/1", "Running", "0", "10.244.1.20", "node-a"]
    assert ok(store, "get", "nodes", "-o", "wide").splitlines()[2].split()[5] == "192.168.56.12"
    ep = ok(store, "get", "endpoints", "web", "-o", "wide").splitlines()
    assert ep[1].split()[0] == "web" and "10.244.2.11:8053" in ep[1]
    assert ok(store, "get", "svc", "-A").splitlines()[1].split()[:2] == ["default", "web"]
    assert ok(store, "get", "svc", "-n", "other") == ""

    path = tmp_path / "np.yaml"
    path.write_text(NODEPORT)
    assert ok(store, "apply", "-f", str(path)) == "service/np created\n"
    assert ok(store, "apply", "-f", str(path)) == "service/np unchanged\n"
    path.write_text(NODEPORT.replace("nodePort: 30500", "nodePort: 30501"))
    assert ok(store, "apply", "-f", str(path)) == "service/np configured\n"
    text = ok(store, "describe", "svc", "np")
    assert "Type:                    NodePort" in text
    assert "NodePort:                http  30501/TCP" in text
    assert "TargetPort:              http/TCP" in text
    assert "10.244.1.10:8080 (ready,serving) pod web-1 on node-a" in text
    assert "External Traffic Policy: Cluster" in text
    cluster_ip = next(x.split()[1] for x in text.splitlines() if x.startswith("IPs:"))
    # The allocated ClusterIP survives later calls (replay pins it).
    assert ok(store, "get", "svc", "np").split()[-4] == cluster_ip

    assert ok(store, "delete", "svc", "np") == 'service "np" deleted\n'
    assert fails(store, "get", "svc", "np") == "error: Service default/np not found"
    gone = run(store, "delete", "svc", "np")
    assert (gone.returncode, gone.stdout) == (1, "")
    assert gone.stderr == 'Error from server (NotFound): services "np" not found\n'

    assert ok(store, "delete", "-f", DEMO).count("deleted") == 9
    assert ok(store, "get", "nodes") == ""


def test_stdin_and_json(tmp_path: pathlib.Path) -> None:
    store = tmp_path / "s.db"
    assert ok(store, "apply", "-f", "-", stdin=NODEPORT) == "service/np created\n"
    import json

    doc = json.loads(ok(store, "get", "svc", "np", "-o", "json"))
    assert doc["spec"]["ports"][0]["nodePort"] == 30500
    assert doc["spec"]["clusterIP"].startswith("10.96.")


def test_get_yaml_reapplies_cleanly(store: pathlib.Path, tmp_path: pathlib.Path) -> None:
    before = ok(store, "get", "svc", "-o", "yaml")
    dump = tmp_path / "all.yaml"
    dump.write_text(before + "\n---\n" + ok(store, "get", "nodes", "-o", "yaml"))
    out = ok(store, "apply", "-f", str(dump)).splitlines()
    assert out and all(line.endswith(" unchanged") for line in out), out

    def unversioned(text: str) -> list[str]:
        # A pool-allocated LB re-applied with its status.loadBalancer becomes one whose
        # address comes from its status: the same manifest, a new resourceVersion.
        # Versions are also each store's own.
        return [line for line in text.splitlines() if "resourceVersion:" not in line]

    assert unversioned(ok(store, "get", "svc", "-o", "yaml")) == unversioned(before)
    # ... and into a fresh store it gives the same services.
    fresh = tmp_path / "fresh.db"
    ok(fresh, "apply", "-f", str(dump))
    assert unversioned(ok(fresh, "get", "svc", "-o", "yaml")) == unversioned(before)


def test_bad_yaml_names_file_and_line(store: pathlib.Path, tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: x\n  spec: [\n")
    line = fails(store, "apply", "-f", str(bad))
    assert line.startswith(f"error: {bad}:4:"), line


def test_validation_error_changes_nothing(store: pathlib.Path, tmp_path: pathlib.Path) -> None:
    before = ok(store, "get", "svc", "-o", "yaml")
    bad = tmp_path / "bad.yaml"
    # One good document, one invalid: all or nothing.
    bad.write_text(
        NODEPORT
        + "---\n"
        + NODEPORT.replace("name: np", "name: np2").replace("nodePort: 30500", "nodePort: 99999")
    )
    line = fails(store, "apply", "-f", str(bad))
    assert "Service default/np2" in line and "spec.ports[0].nodePort" in line
    conflict = tmp_path / "conflict.yaml"
    conflict.write_text(NODEPORT.replace("nodePort: 30500", "nodePort: 30080"))
    assert "30080" in fails(store, "apply", "-f", str(conflict))
    assert ok(store, "get", "svc", "-o", "yaml") == before


def test_concurrent_applies_lose_nothing(tmp_path: pathlib.Path) -> None:
    store = tmp_path / "s.db"
    for p in ("a", "b"):
        for i in range(20):
            (tmp_path / f"{p}{i}.yaml").write_text(
                f"apiVersion: v1\nkind: Service\nmetadata: {{name: {p}-{i}}}\n"
                "spec: {type: NodePort, ports: [{port: 80}]}\n"
            )
    script = (
        'for i in $(seq 0 19); do "$0" -m svcnet --store "$1" apply -f "$2/$3$i.yaml" '
        "|| exit 1; done"
    )
    procs = [
        subprocess.Popen(["sh", "-c", script, sys.executable, str(store), str(tmp_path), p])
        for p in ("a", "b")
    ]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    lines = ok(store, "get", "svc").splitlines()[1:]
    assert len(lines) == 40
    assert len({line.split()[2] for line in lines}) == 40  # distinct ClusterIPs
    assert len({line.split()[4] for line in lines}) == 40  # distinct NodePorts


def test_corrupt_store(tmp_path: pathlib.Path) -> None:
    store = tmp_path / "s.db"
    store.write_text("garbage " * 200)
    line = fails(store, "get", "svc")
    assert line.startswith(f"error: store {store}: not a readable svcnet store")
    assert fails(store, "apply", "-f", DEMO).startswith(f"error: store {store}:")


def test_newer_store_format(store: pathlib.Path) -> None:
    with sqlite3.connect(store) as c:
        c.execute("UPDATE meta SET value = '99' WHERE key = 'format'")
    line = fails(store, "get", "svc")
    assert line == (
        f"error: store {store}: format version 99 is newer than this svcnet reads "
        f"({FORMAT_VERSION}); "
        "upgrade svcnet"
    )


def test_config(store: pathlib.Path, tmp_path: pathlib.Path) -> None:
    assert "nodePortRange: 30000-32767" in ok(store, "config")
    line = fails(store, "config", "--node-port-range", "31000-31100")
    assert "nodePort" in line and "31000-31100" in line
    out = ok(store, "config", "--masquerade-all", "--cluster-domain", "Example.ORG.")
    assert "masqueradeAll: true" in out and "clusterDomain: example.org" in out
    assert "masqueradeAll: true" in ok(store, "config")
    doc = tmp_path / "cfg.yaml"
    doc.write_text("config:\n  loadBalancerPool: [198.51.100.0/24]\n  masqueradeAll: false\n")
    # The demo's LB asks for 203.0.113.10: outside the new pool -> refused.
    assert "203.0.113.10" in fails(store, "config", "-f", str(doc))
    doc.write_text("config:\n  loadBalancerPool: [203.0.113.0/24]\n  masqueradeAll: false\n")
    out = ok(store, "config", "-f", str(doc))
    assert "203.0.113.0/24" in out and "masqueradeAll: false" in out
    assert "clusterDomain: example.org" in out  # not in the file: kept
    doc.write_text("config: {bogus: 1}\n")
    assert "unknown key(s) bogus" in fails(store, "config", "-f", str(doc))


def test_plan_diff_sync(store: pathlib.Path, tmp_path: pathlib.Path) -> None:
    plan = ok(store, "plan", "--node", "node-a")
    assert plan.startswith("plan for node node-a")
    assert "frontends: ClusterIP 10.96.0.10:80" in plan
    both = ok(store, "plan")
    assert "plan for node node-a" in both and "plan for node node-b" in both
    # diff reads a kernel's data plane back; memory's lives only in the process syncing
    memory = run(store, "diff", "--backend", "memory", "--node", "node-a")
    assert memory.returncode == 2 and "nothing to read back" in memory.stderr
    assert ok(store, "sync", "--backend", "memory") == (
        "node node-a: synced 3 services (memory)\nnode node-b: synced 3 services (memory)\n"
    )
    ok(store, "delete", "svc", "web")
    path = tmp_path / "np.yaml"
    path.write_text(NODEPORT)
    ok(store, "apply", "-f", str(path))
    plan_b = ok(store, "plan", "--node", "node-b")
    assert "service default/np " in plan_b and "service default/web " not in plan_b
    assert "error: Node nope not found" in fails(store, "plan", "--node", "nope")
    usage = run(store, "diff", "--backend", "nftables")
    assert usage.returncode == 2 and "--lab LAB or --host" in usage.stderr
    assert run(store, "diff", "--backend", "nope").returncode == 2


def test_trace(store: pathlib.Path) -> None:
    out = ok(store, "trace", "pod/default/client", "10.96.0.12:80")
    assert out.splitlines()[0] == "probe: pod 10.244.1.20 -> 10.96.0.12:80/TCP on node-a"
    assert "semantics: forward to {10.244.1.10:8080 p=1/3" in out
    assert "ClusterIP frontend of Service default/web-lb port http/TCP (IPv4)" in out
    out = ok(store, "trace", "198.51.100.7", "203.0.113.10:53/udp", "--node", "node-b",
             "--backend", "memory")  # fmt: skip
    assert "probe: external 198.51.100.7 -> 203.0.113.10:53/UDP on node-b" in out
    assert "memory: forward to {10.244.1.10:8053 masq p=1/3" in out
    assert "DISAGREES" not in out
    out = ok(store, "trace", "node/node-a", "10.96.0.99:80")
    assert "semantics: drop" in out
    assert "--node" in run(store, "trace", "1.2.3.4", "10.96.0.10:80").stderr
    assert fails(store, "trace", "pod/default/ghost", "10.96.0.10:80") == (
        "error: Pod default/ghost not found"
    )


def test_dns_reads_the_store(store: pathlib.Path) -> None:
    assert ok(store, "dns", "web.default.svc.cluster.local").split()[-1] == "10.96.0.10"
