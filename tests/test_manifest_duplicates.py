"""A key given twice in one mapping is refused, naming the file and the line (as
kubectl and the API server refuse it), on every reading path: YAML through the fast
constructor, YAML through PyYAML's constructor (a document with a float or a tag),
and JSON; ``svcnet apply`` changes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from svcnet import manifests
from svcnet.errors import ManifestError
from svcnet.store import Store

FAST = """apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
  selector: {app: other}
"""

# a float sends the document to PyYAML's own constructor
SLOW = """apiVersion: v1
kind: Pod
metadata:
  name: p
  annotations: {weight: 1.5}
  name: q
spec: {nodeName: node-a}
"""

JSON = '{"apiVersion": "v1", "kind": "Service",\n "metadata": {"name": "web", "name": "x"},\n "spec": {"ports": [{"port": 80}]}}\n'  # noqa: E501

NESTED_LIST = """apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports:
    - {port: 80, name: a}
    - port: 81
      name: b
      port: 82
"""


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [(FAST, 7, "selector"), (SLOW, 6, "name"), (JSON, 2, "name"), (NESTED_LIST, 9, "port")],
    ids=["yaml-fast", "yaml-pyyaml", "json", "in-a-list"],
)
def test_a_duplicate_key_is_refused_with_its_line(text: str, line: int, key: str) -> None:
    with pytest.raises(ManifestError) as e:
        manifests.load(text, filename="f.yaml")
    assert f"f.yaml:{line}:" in str(e.value), str(e.value)
    assert f"duplicate key '{key}'" in str(e.value), str(e.value)


def test_the_same_key_in_two_mappings_is_fine() -> None:
    text = "apiVersion: v1\nkind: Service\nmetadata: {name: web, labels: {name: x}}\n"
    text += "spec: {ports: [{name: a, port: 80}, {name: b, port: 81}]}\n"
    (svc,) = manifests.load(text, filename="f.yaml")
    assert [p.name for p in svc.ports] == ["a", "b"]  # type: ignore[union-attr]


def test_apply_refuses_and_changes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(FAST)
    store = tmp_path / "s.db"
    p = subprocess.run(
        [sys.executable, "-m", "svcnet", "--store", str(store), "apply", "-f", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 1
    assert f"{bad}:7:" in p.stderr and "duplicate key 'selector'" in p.stderr, p.stderr
    assert Store(str(store)).version() == 0
