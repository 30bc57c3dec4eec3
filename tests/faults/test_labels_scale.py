"""Labels at scale: frozen, hashable, O(1) lookups (issue 13, item 4). The time
of a 200,000-label round trip is a benchmark figure (bench/bench_faults.py), not
asserted here; this checks the behaviour the faster lookup must keep."""

from __future__ import annotations

import pickle

import attrs
import pytest

import svcnet
from svcnet.manifests import to_manifest
from svcnet.model import Labels


def test_lookup_index_is_not_part_of_equality_or_hash() -> None:
    a = Labels.of({"b": "2", "a": "1"})
    b = Labels.of([("a", "1"), ("b", "2")])
    assert a["b"] == "2" and "a" in a and "z" not in a  # a's index is built, b's not
    assert a == b and hash(a) == hash(b)
    assert repr(a) == "Labels({'a': '1', 'b': '2'})"
    assert a.get("z") is None and dict(a) == {"a": "1", "b": "2"} == a.as_dict()
    with pytest.raises(KeyError):
        a["z"]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        a.items_ = ()  # type: ignore[misc]
    back = pickle.loads(pickle.dumps(a))
    assert back == a and back["a"] == "1"


def test_repeated_keys_keep_the_first_as_before() -> None:
    labels = Labels((("k", "first"), ("k", "second")))
    assert labels["k"] == "first" and list(labels) == ["k", "k"]


def test_200000_labels_round_trip() -> None:
    n = 200_000
    doc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "big", "labels": {f"k{i}": f"v{i}" for i in range(n)}},
        "spec": {"selector": {f"s{i}": "x" for i in range(n)}, "ports": [{"port": 80}]},
    }
    (svc,) = svcnet.load([doc])
    manifest = to_manifest(svc)
    assert manifest["metadata"]["labels"] == doc["metadata"]["labels"]  # type: ignore[index]
    assert manifest["spec"]["selector"] == doc["spec"]["selector"]  # type: ignore[index]
    (back,) = svcnet.load([manifest])
    assert back == svc and hash(back) == hash(svc)
    assert back.labels["k123456"] == "v123456"
